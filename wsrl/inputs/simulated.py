"""The simulator as an input: its hosts' state as a :class:`~wsrl.pipeline.snapshot.HostSnapshot`.

The snapshot's histograms are what each guest's histogram source would report on a real host
(:mod:`wsrl.sim.observed`); where that differs from the exact ages, the exact ones ride along in
``extra[EXACT_HIST_KEY]`` for the measurements that must not depend on the source (the metrics,
the reward): :func:`exact_snapshot`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from wsrl.pipeline.snapshot import HostSnapshot

if TYPE_CHECKING:
    from wsrl.sim.simulator import Simulator

EXACT_HIST_KEY = "exact_hist_bytes"
"""``extra`` key of the exact histograms when the snapshot's own are degraded to the guests' sources."""


class SimulatedHost:
    """The hosts of one simulator as a :class:`~wsrl.inputs.source.SnapshotSource`.

    The caller moves time (``sim.step(targets)``); :meth:`snapshot` reads the state it reached.
    """

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def snapshot(self) -> HostSnapshot:
        """The simulator's state now (:func:`snapshot_from_simulator`)."""
        return snapshot_from_simulator(self.sim)


def exact_snapshot(snapshot: HostSnapshot) -> HostSnapshot:
    """The snapshot with the simulator's exact histograms (itself when it carries no others)."""
    exact = snapshot.extra.get(EXACT_HIST_KEY)
    if exact is None:
        return snapshot
    return dataclasses.replace(snapshot, hist_bytes=np.asarray(exact), hist_horizon_ms=None)


def snapshot_from_simulator(sim: Simulator) -> HostSnapshot:
    """The simulator's state as a snapshot (the simulator itself in ``extra["simulator"]``).

    Histograms at each guest's source's resolution; the exact ones in ``extra[EXACT_HIST_KEY]``
    when they differ.
    """
    model = sim.model
    guests = sim.setup.guests
    hosts = sim.setup.hosts
    last = sim.last
    exact = sim.histograms()
    observed = sim.observed_histograms(exact)
    extra: dict[str, object] = {"simulator": sim}
    if observed is not exact:
        extra[EXACT_HIST_KEY] = exact
    return HostSnapshot(
        time_ms=sim.time_ms,
        interval_s=sim.step_s,
        mask=guests.mask,
        names=guests.names,
        host_names=list(hosts.names),
        capacity_bytes=hosts.capacity_bytes,
        reserve_bytes=hosts.reserve_bytes,
        provisioned_bytes=np.where(guests.mask, guests.provisioned_bytes, 0.0),
        floor_bytes=np.where(guests.mask, guests.floor_bytes, 0.0),
        shares=guests.shares,
        tier=guests.tier,
        visible_bytes=model.visible_bytes.copy(),
        target_bytes=model.target_bytes.copy(),
        usage_bytes=model.resident_bytes,
        edges_ms=sim.edges_ms,
        hist_bytes=observed,
        refault_total=model.refault_anon_total + model.refault_file_total,
        swap_bytes=model.swap_bytes,
        psi_some_total_s=model.psi_some_total_s.copy(),
        psi_some_avg10=model.psi_some_avg10.copy(),
        oom_kills_total=model.oom_kills_total.copy(),
        balloon_stalled=np.zeros(guests.shape, dtype=bool) if last is None else last.balloon_stalled.copy(),
        hist_horizon_ms=sim.observed.horizon_ms(),
        extra=extra,
    )
