"""Pieces every balloon VM backend shares (QEMU over QMP, crosvm over its control socket).

:class:`BalloonStallTracker` decides when a balloon stopped moving toward its target,
:class:`MonotonicCounter` reports a guest counter from the first value seen and across guest
reboots, :func:`page_aligned_target` rounds a target to whole balloon pages, :func:`stream_fields`
reads the latest histogram and PSI off a guest stream, and :func:`brief_repr` bounds what a
message quotes of an answer.
"""

from __future__ import annotations

import math
import reprlib
import time

from wsrl.backends.base import BackendError
from wsrl.backends.guest_stream import GuestStreamReader, StreamSample
from wsrl.units import MIB

BALLOON_PAGE_BYTES = 4096
"""The virtio balloon's page size (``VIRTIO_BALLOON_PFN_SHIFT`` 12), whatever the guest's page size."""

_BRIEF = reprlib.Repr()
_BRIEF.maxlevel, _BRIEF.maxstring, _BRIEF.maxother, _BRIEF.maxlong = 3, 60, 60, 40


def brief_repr(value: object) -> str:
    """A short repr of an answer for messages: bounded in length and depth, whatever ``value`` is."""
    try:
        return _BRIEF.repr(value)[:120]
    except Exception:  # a repr of a foreign object must never hide the real error
        return f"<{type(value).__name__}>"


class BalloonStallTracker:
    """Decides when a balloon has stopped moving toward its target.

    The balloon is stalled when, for ``stall_reads`` reads in a row, ``actual`` is further than
    ``tolerance_bytes`` from the target and no closer than the closest it has been since the
    target was set. A new target resets it.
    """

    def __init__(self, stall_reads: int = 3, tolerance_bytes: int = MIB) -> None:
        if stall_reads < 1:
            raise ValueError("stall_reads must be >= 1")
        self.stall_reads = stall_reads
        self.tolerance_bytes = tolerance_bytes
        self.target_bytes: int | None = None
        self._closest_bytes = math.inf
        self._reads_without_progress = 0

    def set_target(self, target_bytes: int) -> None:
        """A new target was set."""
        self.target_bytes = int(target_bytes)
        self._closest_bytes = math.inf
        self._reads_without_progress = 0

    def update(self, actual_bytes: int) -> bool:
        """Take one reading of ``actual``; return whether the balloon is stalled."""
        if self.target_bytes is None:
            return False
        distance = abs(int(actual_bytes) - self.target_bytes)
        if distance <= self.tolerance_bytes:
            self._closest_bytes = distance
            self._reads_without_progress = 0
            return False
        if distance < self._closest_bytes - BALLOON_PAGE_BYTES or math.isinf(self._closest_bytes):
            self._closest_bytes = distance
            self._reads_without_progress = 0
            return False
        self._reads_without_progress += 1
        return self._reads_without_progress >= self.stall_reads


class MonotonicCounter:
    """A cumulative guest counter reported from the first value seen, never falling.

    A value below the previous one (the guest rebooted and its counter restarted) is taken as a
    restart: the total goes on from where it was.
    """

    def __init__(self) -> None:
        self._offset: float | None = None
        self._last_raw = 0.0

    def update(self, raw: float) -> float:
        """Feed the guest's raw counter; return the total since the first value."""
        if self._offset is None:
            self._offset = -raw
        elif raw < self._last_raw:
            self._offset += self._last_raw  # restarted at 0: continue from the last total
        self._last_raw = raw
        return raw + self._offset

    @property
    def total(self) -> float:
        """The last total returned (0 before the first value)."""
        return 0.0 if self._offset is None else self._last_raw + self._offset


def page_aligned_target(name: str, target_bytes: int, ram_bytes: int) -> int:
    """``target_bytes`` rounded down to a balloon page and clamped to ``(0, ram_bytes]``."""
    if isinstance(target_bytes, bool) or not isinstance(target_bytes, int):
        raise BackendError(f"guest {name}: target must be an integer number of bytes, got {target_bytes!r}")
    if target_bytes < BALLOON_PAGE_BYTES:
        raise BackendError(
            f"guest {name}: target {target_bytes} bytes is below one {BALLOON_PAGE_BYTES}-byte balloon page"
        )
    aligned = target_bytes - target_bytes % BALLOON_PAGE_BYTES
    return min(aligned, ram_bytes - ram_bytes % BALLOON_PAGE_BYTES)


def stream_fields(
    stream: GuestStreamReader | None, max_age_s: float
) -> tuple[StreamSample | None, float, float, dict[str, str]]:
    """The latest fresh histogram sample and PSI (avg10 percent, total seconds) from a guest stream."""
    if stream is None:
        return None, math.nan, math.nan, {}
    now = time.monotonic()
    source: dict[str, str] = {}
    sample = stream.latest()
    if sample is None:
        source["histogram"] = f"guest stream {stream.socket_path}: nothing received yet"
    elif now - sample.received_at > max_age_s:
        source["histogram"] = (
            f"guest stream {stream.socket_path}: latest histogram is {now - sample.received_at:.0f} s old "
            f"(limit {max_age_s:g} s)"
        )
        sample = None
    else:
        source["histogram"] = (
            f"guest stream {sample.transport} {sample.source} seq={sample.seq} "
            f"age={now - sample.received_at:.1f}s"
        )
    avg10, total_s, psi_at = math.nan, math.nan, -math.inf
    if sample is not None and math.isfinite(sample.psi_some_avg10):
        avg10, psi_at = sample.psi_some_avg10, sample.received_at
        if sample.psi_some_total_us is not None:
            total_s = sample.psi_some_total_us / 1e6
    pressure = stream.latest_pressure()
    if pressure is not None and pressure.received_at > psi_at and now - pressure.received_at <= max_age_s:
        avg10, total_s = pressure.some_avg10, pressure.some_total_us / 1e6
        source["psi"] = f"guest agent pressure report seq={pressure.seq}"
    elif math.isfinite(avg10):
        source["psi"] = "guest agent histogram record"
    return sample, avg10, total_s, source
