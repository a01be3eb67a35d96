"""The simulator as an input: its hosts' state as a :class:`~wsrl.pipeline.snapshot.HostSnapshot`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from wsrl.pipeline.snapshot import HostSnapshot

if TYPE_CHECKING:
    from wsrl.sim.simulator import Simulator


class SimulatedHost:
    """The hosts of one simulator as a :class:`~wsrl.inputs.source.SnapshotSource`.

    The caller moves time (``sim.step(targets)``); :meth:`snapshot` reads the state it reached.
    """

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def snapshot(self) -> HostSnapshot:
        """The simulator's state now (:func:`snapshot_from_simulator`)."""
        return snapshot_from_simulator(self.sim)


def snapshot_from_simulator(sim: Simulator) -> HostSnapshot:
    """The simulator's state as a snapshot (the simulator itself in ``extra["simulator"]``)."""
    model = sim.model
    guests = sim.setup.guests
    hosts = sim.setup.hosts
    last = sim.last
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
        hist_bytes=sim.histograms(),
        refault_total=model.refault_anon_total + model.refault_file_total,
        swap_bytes=model.swap_bytes,
        psi_some_total_s=model.psi_some_total_s.copy(),
        psi_some_avg10=model.psi_some_avg10.copy(),
        oom_kills_total=model.oom_kills_total.copy(),
        balloon_stalled=np.zeros(guests.shape, dtype=bool) if last is None else last.balloon_stalled.copy(),
        extra={"simulator": sim},
    )
