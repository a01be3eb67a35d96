"""What every live backend implements: read one guest's state, apply one target, relax on exit.

A live host is a set of guests, each behind a :class:`GuestBackend` (a memory cgroup, a QEMU VM over
QMP, a crosvm VM, a simulated guest). The runner reads every backend into a :class:`GuestReading`,
assembles the readings into a :class:`~wsrl.pipeline.snapshot.HostSnapshot` with
:func:`snapshot_from_readings` (one host, guests in config order), runs the shared pipeline, and
hands each guest its target through :meth:`GuestBackend.apply`. Sizes are guest-visible bytes
everywhere: a balloon backend converts to and from balloon sizes itself.

Backends may also push: a QMP ``BALLOON_CHANGE`` event, a guest agent reporting pressure unprompted.
They do so by calling the ``notify`` callback given to :meth:`GuestBackend.start`, which wakes the
runner before its next tick.

Errors: a backend raises :class:`BackendError` (one line, naming the guest and what failed) for
anything it cannot read or apply; the runner keeps serving the other guests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from wsrl.errors import WsrlError
from wsrl.histogram import DEFAULT_EDGES_MS, Histogram
from wsrl.pipeline.snapshot import HostSnapshot

Notify = Callable[[str], None]
"""Called by a backend with a reason (``"balloon_change"``, ``"agent_report"`` ...) to wake the runner."""


class BackendError(WsrlError):
    """A live source or actuator failed (unreachable, malformed, refused)."""


@dataclass
class GuestReading:
    """One guest's live state at one instant, in guest-visible bytes and cumulative counters.

    Attributes:
        name: the guest's configured name.
        time_ms: when it was read, ms since the UNIX epoch.
        visible_bytes: guest-visible memory now (memcg limit, RAM minus balloon).
        target_bytes: the target currently set on the actuator (NaN if unknown).
        usage_bytes: memory in use (``memory.current`` / ``usage_in_bytes``, or the VM's used RAM).
        histogram: the working-set histogram, any bin edges (re-binned onto canonical edges by
            :func:`snapshot_from_readings`); ``None`` when the source has none this time.
        refault_total: cumulative refaults (promotions), pages.
        swap_bytes: bytes in swap (0 if unknown).
        psi_some_total_s: cumulative memory stall "some", seconds (NaN if unknown).
        psi_some_avg10: memory PSI "some" avg10, percent (NaN if unknown).
        oom_kills_total: cumulative OOM kills.
        balloon_stalled: a balloon did not reach its target.
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
    source: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class GuestBackend(Protocol):
    """One guest's source and actuator."""

    name: str

    def start(self, notify: Notify) -> None:
        """Connect; keep ``notify`` to wake the runner on pushed reports."""
        ...

    def read(self) -> GuestReading:
        """The guest's state now. Raises :class:`BackendError`."""
        ...

    def apply(self, target_bytes: int) -> None:
        """Set the guest-visible target. Raises :class:`BackendError`."""
        ...

    def relax(self, target_bytes: int | None) -> None:
        """Leave the guest in a safe state (the configured exit size, or no limit when ``None``)."""
        ...

    def close(self) -> None:
        """Disconnect and release resources (never raises)."""
        ...


@dataclass(frozen=True)
class GuestSpec:
    """What the operator configured for one guest (the static half of a snapshot)."""

    name: str
    provisioned_bytes: float
    floor_bytes: float
    shares: float = 1000.0
    tier: int = 1


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
    proposes nothing for it and the runner holds its last good target. Histograms are re-binned
    onto ``edges_ms``; a reading without one contributes an empty histogram and its usage as
    unevictable memory (the conservative reading: nothing is known to be cold).
    """
    n = len(specs)
    if len(readings) != n:
        raise ValueError(f"{len(readings)} readings for {n} guests")
    edges = tuple(int(e) for e in edges_ms)
    hist = np.zeros((1, n, 2, len(edges) + 1))
    mask = np.zeros((1, n), dtype=bool)
    values = {
        key: np.full((1, n), np.nan)
        for key in ("visible", "target", "usage", "refault", "swap", "psi_total", "psi_avg10")
    }
    ooms = np.zeros((1, n), dtype=np.int64)
    stalled = np.zeros((1, n), dtype=bool)
    for g, reading in enumerate(readings):
        if reading is None:
            continue
        mask[0, g] = True
        if reading.histogram is not None:
            rebinned = reading.histogram.rebin(edges)
            hist[0, g, 0] = rebinned.type_bytes("anon")
            hist[0, g, 1] = rebinned.type_bytes("file")
        resident = float(hist[0, g].sum())
        usage = reading.usage_bytes if math.isfinite(reading.usage_bytes) else resident
        values["visible"][0, g] = reading.visible_bytes
        values["target"][0, g] = (
            reading.target_bytes if math.isfinite(reading.target_bytes) else reading.visible_bytes
        )
        values["usage"][0, g] = max(usage, resident)
        values["refault"][0, g] = reading.refault_total
        values["swap"][0, g] = reading.swap_bytes
        values["psi_total"][0, g] = (
            reading.psi_some_total_s if math.isfinite(reading.psi_some_total_s) else 0.0
        )
        values["psi_avg10"][0, g] = reading.psi_some_avg10 if math.isfinite(reading.psi_some_avg10) else 0.0
        ooms[0, g] = reading.oom_kills_total
        stalled[0, g] = reading.balloon_stalled
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
    )


def _finite_or_zero(value: float) -> float:
    return value if math.isfinite(value) else 0.0
