"""Pieces the reference policies share: clocks, counter deltas, regrowth and small array helpers.

Every policy keeps its state as arrays shaped like the snapshot (``[hosts, guests]``). Time is
shared by the whole batch (one ``time_ms`` per snapshot), so clocks are scalars.

**Regrowth under a held target.** Several published policies act through one-shot reclaim
(``memory.reclaim``, MGLRU eviction, kreclaimd): they push cold pages out and leave the workload
free to grow again. wsrl's actuators are sizes (a balloon target or a memcg limit) that stay in force
until the next decision, so a policy that held "what was left after the last reclaim" could never
grow again: every later reclaim is computed from a usage capped by the previous target, a ratchet
that only goes down. Those policies therefore raise a held target by the bytes the guest faulted
back in since the last snapshot (:func:`refault_bytes`): under one-shot reclaim those pages would
simply have come back and stayed. A guest that keeps touching more than its target refaults, and
its target grows by what it brought back; a guest that touches nothing new keeps its target.
Two more rules keep a held target from doing what a one-shot reclaim never does
(:func:`held_target`): where a balloon stalled (the guest could not give back all that was
asked, as ``memory.reclaim`` returns ``EAGAIN`` having reclaimed less) the held target is raised to
the size the guest actually reached, and after an OOM kill (which a reclaim cannot cause, but a
held size can) the guest is released to its provisioned size until the policy reclaims again.
"""

from __future__ import annotations

import math

import numpy as np

from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.units import PAGE_BYTES


def counter_delta(current: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Increase of a cumulative counter; a counter that went backwards (a reset) counts from zero."""
    current = np.asarray(current, dtype=float)
    delta: np.ndarray = np.where(current >= previous, current - previous, np.maximum(current, 0.0))
    return delta


def refault_bytes(snapshot: HostSnapshot, previous_refault_total: np.ndarray) -> np.ndarray:
    """``[hosts, guests]`` bytes faulted back in since ``previous_refault_total`` (pages)."""
    return counter_delta(snapshot.refault_total, previous_refault_total) * PAGE_BYTES


def oom_since(snapshot: HostSnapshot, previous_oom_total: np.ndarray) -> np.ndarray:
    """``[hosts, guests]`` True where an OOM kill happened since ``previous_oom_total``."""
    return snapshot.mask & (counter_delta(snapshot.oom_kills_total, previous_oom_total) > 0)


def held_target(
    snapshot: HostSnapshot, previous_bytes: np.ndarray, grown_bytes: np.ndarray, oom: np.ndarray
) -> np.ndarray:
    """A one-shot reclaimer's target between reclaims (module docstring): hold, plus what came back.

    ``previous_bytes`` raised by ``grown_bytes`` (refaulted since the last snapshot), and at least
    the guest-visible size where the balloon stalled; provisioned where ``oom``.
    """
    held = previous_bytes + grown_bytes
    held = np.where(snapshot.balloon_stalled, np.maximum(held, snapshot.visible_bytes), held)
    held = np.where(oom, snapshot.provisioned_bytes, held)
    target: np.ndarray = np.minimum(held, snapshot.provisioned_bytes)
    return target


def unevictable_bytes(snapshot: HostSnapshot) -> np.ndarray:
    """``[hosts, guests]`` memory in use that no histogram bin covers (kernel, mlocked pages)."""
    unevictable: np.ndarray = np.maximum(snapshot.usage_bytes - snapshot.resident_page_bytes(), 0.0)
    return unevictable


def page_floor(values: np.ndarray) -> np.ndarray:
    """Round byte counts down to whole 4 KiB pages (``memory.high`` is always a page multiple)."""
    return np.floor(np.asarray(values, dtype=float) / PAGE_BYTES) * PAGE_BYTES


def masked(snapshot: HostSnapshot, values: np.ndarray) -> np.ndarray:
    """``values`` where a guest sits, 0 in padding slots."""
    return np.where(snapshot.mask, values, 0.0)


MAX_CATCH_UP_TICKS = 3600
"""The most periods one :meth:`TickClock.advance` returns: a daemon that slept through a longer
gap (or a clock that jumped, which only a simulated clock may do unchecked) runs at most this many
ticks on waking, so a time far in the future costs bounded work."""


class TickClock:
    """Counts whole periods of ``period_s`` since a start time: a daemon's ``sleep(period)`` loop.

    ``advance(time_ms)`` returns how many periods ended since the previous call (0 when the call
    comes before the next period ends; several when snapshots are further apart than a period; at
    most :data:`MAX_CATCH_UP_TICKS`).

    Args:
        start_ms: time of the first tick's start (the snapshot :meth:`reset` saw).
        period_s: tick length in seconds.

    """

    def __init__(self, start_ms: int, period_s: float) -> None:
        if not period_s > 0:
            raise ValueError(f"tick period must be > 0 s, got {period_s}")
        self.start_ms = int(start_ms)
        self.period_ms = float(period_s) * 1000.0
        self.done = 0

    def advance(self, time_ms: int) -> int:
        """Number of ticks that ended between the previous call and ``time_ms``."""
        # The small epsilon keeps a 10 s interval at exactly 10 one-second ticks despite rounding.
        due = max(math.floor((int(time_ms) - self.start_ms) / self.period_ms + 1e-9), 0)
        ticks = max(due - self.done, 0)
        self.done = max(self.done, due)
        return min(ticks, MAX_CATCH_UP_TICKS)


def elapsed_s(previous_ms: int, snapshot: HostSnapshot) -> float:
    """Seconds from ``previous_ms`` to the snapshot (0 when it is the same or an earlier instant)."""
    return max((int(snapshot.time_ms) - int(previous_ms)) / 1000.0, 0.0)
