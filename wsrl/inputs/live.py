"""Live readings as an input: each guest's reading, the operator's static half, one host's snapshot.

A live host's guests are read by their backends (:mod:`wsrl.backends`: memory cgroups, QEMU and
crosvm VMs, the simulator backend), each into a :class:`GuestReading`: guest-visible bytes and
cumulative counters at one instant. :func:`snapshot_from_readings` assembles one tick's readings
and the configured :class:`GuestSpec` of every guest into a
:class:`~wsrl.pipeline.snapshot.HostSnapshot` (one host, guests in config order), and
:class:`LiveHost` is the :class:`~wsrl.inputs.source.SnapshotSource` the production runner keeps:
it is handed each tick's readings (reading them, with deadlines, is the runner's I/O) and gives the
snapshot of the newest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from wsrl.histogram import DEFAULT_EDGES_MS, Histogram
from wsrl.pipeline.rails import GuestSignals
from wsrl.pipeline.snapshot import HostSnapshot


@dataclass
class GuestReading:
    """One guest's live state at one instant, in guest-visible bytes and cumulative counters.

    Attributes:
        name: the guest's configured name.
        time_ms: when it was read, ms since the UNIX epoch.
        visible_bytes: guest-visible memory now (memcg limit, RAM minus balloon).
        target_bytes: the target currently set on the actuator (NaN if unknown).
        usage_bytes: memory in use (``memory.current`` / ``usage_in_bytes``, or the VM's used RAM).
        histogram: the working-set histogram; ``None`` when the source has none this time. The
            backends the runner builds deliver it on the runner's edges (re-binned on their own
            threads); on other edges :func:`snapshot_from_readings` re-bins it.
        refault_total: cumulative refaults (promotions), pages.
        swap_bytes: bytes in swap (0 if unknown).
        psi_some_total_s: cumulative memory stall "some", seconds (NaN if unknown).
        psi_some_avg10: memory PSI "some" avg10, percent (NaN if unknown).
        oom_kills_total: cumulative OOM kills.
        balloon_stalled: a balloon did not reach its target.
        histogram_provisional: the histogram's source has not completed its first full cycle
            (:attr:`wsrl.pipeline.snapshot.HostSnapshot.hist_provisional`).
        histogram_horizon_ms: the oldest idle age the histogram's source tells apart, ms (``inf``:
            ages up to the runner's last edge; :attr:`wsrl.pipeline.snapshot.HostSnapshot.hist_horizon_ms`).
        self_reported: the pressure, refault and OOM figures come from the guest itself (a VM's
            balloon statistics or agent), not from the host's kernel: the circuit breaker believes
            them, but they protect the guest only within its share of the host
            (:func:`wsrl.pipeline.rails.breaker_rail`).
        source: which sources this reading came from, for the audit log.

    """

    name: str
    time_ms: int
    visible_bytes: float
    target_bytes: float = math.nan
    usage_bytes: float = math.nan
    histogram: Histogram | None = None
    refault_total: float = 0.0
    swap_bytes: float = 0.0
    psi_some_total_s: float = math.nan
    psi_some_avg10: float = math.nan
    oom_kills_total: int = 0
    balloon_stalled: bool = False
    histogram_provisional: bool = False
    histogram_horizon_ms: float = math.inf
    self_reported: bool = False
    source: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GuestSpec:
    """What the operator configured for one guest (the static half of a snapshot)."""

    name: str
    provisioned_bytes: float
    floor_bytes: float
    shares: float = 1000.0
    tier: int = 1


@dataclass
class ReadingArrays:
    """One tick's readings as ``[1, guests]`` arrays (NaN where a reading is missing), as read.

    The one conversion of readings into numbers: the runner's input checks judge these
    (:func:`wsrl.runner.safety.check_inputs`) and :func:`snapshot_from_readings` builds on them.
    """

    present: NDArray[np.bool_]
    time_ms: NDArray[np.float64]
    visible_bytes: NDArray[np.float64]
    target_bytes: NDArray[np.float64]
    usage_bytes: NDArray[np.float64]
    hist_total_bytes: NDArray[np.float64]
    refault_total: NDArray[np.float64]
    swap_bytes: NDArray[np.float64]
    psi_some_total_s: NDArray[np.float64]
    psi_some_avg10: NDArray[np.float64]
    oom_kills_total: NDArray[np.float64]
    balloon_stalled: NDArray[np.float64]
    histogram_provisional: NDArray[np.float64]
    histogram_horizon_ms: NDArray[np.float64]
    self_reported: NDArray[np.float64]

    @classmethod
    def from_readings(cls, readings: Sequence[GuestReading | None]) -> ReadingArrays:
        """Collect the readings' numbers (``None``: not present)."""
        n = len(readings)
        names = [name for name in cls.__dataclass_fields__ if name != "present"]
        arrays = {name: np.full((1, n), np.nan) for name in names}
        present = np.zeros((1, n), dtype=bool)
        for g, reading in enumerate(readings):
            if reading is None:
                continue
            present[0, g] = True
            for name in names:
                if name == "hist_total_bytes":
                    hist = reading.histogram
                    arrays[name][0, g] = 0.0 if hist is None else float(hist.total_bytes())
                else:
                    arrays[name][0, g] = float(getattr(reading, name))
        return cls(present=present, **arrays)

    def signals(self, valid: NDArray[np.bool_]) -> GuestSignals:
        """The circuit breaker's view of these readings, ``valid`` where they are trusted."""
        return GuestSignals(
            valid=valid & self.present,
            time_ms=self.time_ms,
            usage_bytes=self.usage_bytes,
            refault_total=self.refault_total,
            psi_some_avg10=self.psi_some_avg10,
            oom_kills_total=self.oom_kills_total,
            self_reported=self.self_reported == 1.0,
        )


def snapshot_from_readings(
    readings: Sequence[GuestReading | None],
    specs: Sequence[GuestSpec],
    *,
    host_name: str,
    capacity_bytes: float,
    reserve_bytes: float,
    interval_s: float,
    time_ms: int,
    edges_ms: Sequence[int] = DEFAULT_EDGES_MS,
) -> HostSnapshot:
    """One host's snapshot (``[1, guests]``) from live readings, in config order.

    A ``None`` reading (the guest could not be read) leaves its slot masked out, so the pipeline
    proposes nothing for it and the runner holds its last good target. A histogram on
    ``edges_ms`` is taken as it is (O(bins): what the runner's backends deliver, so a tick does no
    re-binning); one on other edges is re-binned here, in time linear in its bins. A reading
    without one contributes an empty histogram and its usage as unevictable memory (the
    conservative reading: nothing is known to be cold).
    """
    n = len(specs)
    if len(readings) != n:
        raise ValueError(f"{len(readings)} readings for {n} guests")
    edges = tuple(int(e) for e in edges_ms)
    arrays = ReadingArrays.from_readings(readings)
    mask = arrays.present
    hist = np.zeros((1, n, 2, len(edges) + 1))
    for g, reading in enumerate(readings):
        if reading is not None and reading.histogram is not None:
            rebinned = reading.histogram.rebin(edges)
            hist[0, g, 0] = rebinned.type_bytes("anon")
            hist[0, g, 1] = rebinned.type_bytes("file")
    resident = hist.sum(axis=(2, 3))
    usage = np.where(np.isfinite(arrays.usage_bytes), arrays.usage_bytes, resident)
    values = {
        "visible": arrays.visible_bytes,
        "target": np.where(np.isfinite(arrays.target_bytes), arrays.target_bytes, arrays.visible_bytes),
        "usage": np.maximum(usage, resident),
        "refault": arrays.refault_total,
        "swap": arrays.swap_bytes,
        "psi_total": np.where(np.isfinite(arrays.psi_some_total_s), arrays.psi_some_total_s, 0.0),
        "psi_avg10": np.where(np.isfinite(arrays.psi_some_avg10), arrays.psi_some_avg10, 0.0),
    }
    # A guest's count can be any float (2**63, -inf): clipped into int64 before the cast.
    ooms = np.where(mask, np.clip(np.nan_to_num(arrays.oom_kills_total), 0, 2**62), 0).astype(np.int64)
    stalled = mask & (np.nan_to_num(arrays.balloon_stalled) > 0)
    zero = np.zeros((1, n))
    return HostSnapshot(
        time_ms=int(time_ms),
        interval_s=float(interval_s),
        mask=mask,
        names=np.array([[s.name for s in specs]], dtype=object),
        host_names=[host_name],
        capacity_bytes=np.array([float(capacity_bytes)]),
        reserve_bytes=np.array([float(reserve_bytes)]),
        provisioned_bytes=np.where(mask, [[s.provisioned_bytes for s in specs]], 0.0),
        floor_bytes=np.where(mask, [[s.floor_bytes for s in specs]], 0.0),
        shares=np.array([[s.shares for s in specs]], dtype=float),
        tier=np.array([[s.tier for s in specs]], dtype=np.int64),
        visible_bytes=np.where(mask, values["visible"], zero),
        target_bytes=np.where(mask, values["target"], zero),
        usage_bytes=np.where(mask, values["usage"], zero),
        edges_ms=np.asarray(edges, dtype=np.int64),
        hist_bytes=hist,
        refault_total=np.where(mask, values["refault"], zero),
        swap_bytes=np.where(mask, values["swap"], zero),
        psi_some_total_s=np.where(mask, values["psi_total"], zero),
        psi_some_avg10=np.where(mask, values["psi_avg10"], zero),
        oom_kills_total=ooms,
        balloon_stalled=stalled,
        hist_provisional=mask & (np.nan_to_num(arrays.histogram_provisional) > 0),
        hist_horizon_ms=_horizons_ms(readings, arrays, mask),
    )


def _horizons_ms(
    readings: Sequence[GuestReading | None], arrays: ReadingArrays, mask: NDArray[np.bool_]
) -> NDArray[np.float64] | None:
    """``[1, guests]`` each histogram's horizon, ms (``inf``: none; ``None``: no guest has one).

    A guest's claim is only believed where it is a positive number and its histogram is there.
    """
    has_histogram = np.array([[r is not None and r.histogram is not None for r in readings]])
    horizon = arrays.histogram_horizon_ms
    with np.errstate(invalid="ignore"):
        known = mask & has_histogram & np.isfinite(horizon) & (horizon > 0)
    if not known.any():
        return None
    result: NDArray[np.float64] = np.where(known, horizon, np.inf)
    return result


class LiveHost:
    """One live host's guests as a :class:`~wsrl.inputs.source.SnapshotSource` (the runner's input).

    Args:
        specs: every configured guest, in config order.
        host_name: the host's name.
        capacity_bytes: the host's memory.
        reserve_bytes: memory the host keeps for itself.
        interval_s: the configured control interval: the snapshot's ``interval_s`` until two ticks
            give the real one.
        edges_ms: the histogram bin edges every reading is re-binned onto.

    """

    def __init__(
        self,
        specs: Sequence[GuestSpec],
        *,
        host_name: str,
        capacity_bytes: float,
        reserve_bytes: float,
        interval_s: float,
        edges_ms: Sequence[int] = DEFAULT_EDGES_MS,
    ) -> None:
        self.specs = list(specs)
        self.host_name = host_name
        self.capacity_bytes = float(capacity_bytes)
        self.reserve_bytes = float(reserve_bytes)
        self.interval_s = float(interval_s)
        self.edges_ms = tuple(int(e) for e in edges_ms)
        self.readings: list[GuestReading | None] = [None] * len(self.specs)
        """The newest tick's readings (``None``: that guest is masked out)."""
        self.time_ms: int | None = None
        """The newest tick's time, ms since the UNIX epoch."""
        self._interval_now_s = self.interval_s

    def observe(self, readings: Sequence[GuestReading | None], time_ms: int) -> None:
        """Take a tick's readings; the snapshot's interval is the time since the previous tick's.

        A tick at or before the previous one (a clock stepped back) keeps the configured interval.
        """
        if len(readings) != len(self.specs):
            raise ValueError(f"{len(readings)} readings for {len(self.specs)} guests")
        previous = self.time_ms
        self._interval_now_s = self.interval_s
        if previous is not None and time_ms > previous:
            self._interval_now_s = (time_ms - previous) / 1000.0
        self.readings = list(readings)
        self.time_ms = int(time_ms)

    def snapshot(self) -> HostSnapshot:
        """The ``[1, guests]`` snapshot of the newest readings (:func:`snapshot_from_readings`).

        Raises:
            ValueError: no readings were observed yet.

        """
        if self.time_ms is None:
            raise ValueError(f"host {self.host_name!r}: no readings observed yet")
        return snapshot_from_readings(
            self.readings,
            self.specs,
            host_name=self.host_name,
            capacity_bytes=self.capacity_bytes,
            reserve_bytes=self.reserve_bytes,
            interval_s=self._interval_now_s,
            time_ms=self.time_ms,
            edges_ms=self.edges_ms,
        )
