"""Record live ticks into the trace store, so that every host the runner controls yields history.

One row per guest per tick, through the crash-safe :class:`~wsrl.trace.writer.TraceWriter` (whole
Parquet parts, flushed every ``flush_rows`` rows or ``flush_interval_s``; a crash loses at most the
unflushed rows; a part that cannot be written keeps its rows buffered for the next flush). The
decision columns say what the runner set: ``action_target_bytes`` is the
target applied at this sample (null when nothing was applied: held, dry run, unchanged, failed)
and ``action_policy`` the policy whose decision it was.

Live readings carry one refault counter (anon and file together); it is stored in
``refault_file_total`` with ``refault_anon_total`` null, and every consumer sums the two columns
(nulls as 0). A reading whose time did not advance (a stale source) is not recorded again: the
store keys rows by (host, guest, time).

The trace directory, and every folder and symlink on the way to it, must be this user's or root's
(:func:`wsrl.security.make_trusted_directory`): nobody else may plant files the runner writes
through.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wsrl.errors import WsrlError
from wsrl.inputs.live import GuestReading, GuestSpec
from wsrl.security import UntrustedFileError, make_trusted_directory
from wsrl.trace.record import GuestSample
from wsrl.trace.writer import TraceWriter


def _int(value: float) -> int | None:
    return round(value) if math.isfinite(value) and value >= 0 else None


def _float(value: float) -> float | None:
    return float(value) if math.isfinite(value) and value >= 0 else None


def _horizon_ms(value: float) -> int | None:
    """A reading's histogram horizon for the trace: ``None`` where its source dates every bin."""
    return round(value) if math.isfinite(value) and value > 0 else None


class TraceRecorder:
    """Append each tick's readings and decisions to a trace directory.

    Args:
        directory: the trace directory (created, or appended to; refused when someone else could
            write it or a folder on the way).
        host: the host label of every row.
        specs: the guests, in config order.
        meta: manifest extras (config path, policy names).
        flush_rows: rows buffered before a part is written.
        flush_interval_s: seconds between parts at most.

    """

    def __init__(
        self,
        directory: str | Path,
        *,
        host: str,
        specs: Sequence[GuestSpec],
        meta: dict[str, Any],
        flush_rows: int,
        flush_interval_s: float,
    ) -> None:
        self.host = host
        self.specs = list(specs)
        try:
            real = make_trusted_directory(directory, "trace directory")
        except UntrustedFileError as exc:
            raise WsrlError(f"record.dir: {exc}") from None
        self.writer = TraceWriter(
            real,
            source="runner",
            description=f"wsrl run on host {host}",
            meta=meta,
            flush_rows=flush_rows,
            flush_interval_s=flush_interval_s,
        )
        self._last_time_ms: list[int | None] = [None] * len(self.specs)
        self._last_oom: list[int | None] = [None] * len(self.specs)

    def record(
        self,
        readings: Sequence[GuestReading | None],
        actions_bytes: Sequence[int | None],
        policies: Sequence[str | None],
    ) -> list[bool]:
        """Append one row per guest whose reading is new; returns which guests were recorded.

        Every new row of the tick is buffered before the writer may flush, so a part that cannot
        be written (a full disk) loses none of them: they stay buffered and the next flush
        retries them.

        Raises:
            TraceError: the flush failed (every row of this tick is buffered all the same).

        """
        recorded = []
        samples = []
        for g, reading in enumerate(readings):
            last = self._last_time_ms[g]
            if reading is None or (last is not None and reading.time_ms <= last):
                recorded.append(False)
                continue
            self._last_time_ms[g] = int(reading.time_ms)
            samples.append(self._sample(g, reading, actions_bytes[g], policies[g]))
            recorded.append(True)
        self.writer.append_many(samples)
        return recorded

    def _sample(self, g: int, reading: GuestReading, action: int | None, policy: str | None) -> GuestSample:
        events = []
        previous_oom = self._last_oom[g]
        if previous_oom is not None and reading.oom_kills_total > previous_oom:
            events.append("oom")
        self._last_oom[g] = int(reading.oom_kills_total)
        if reading.balloon_stalled:
            events.append("balloon_stall")
        psi_total = reading.psi_some_total_s
        return GuestSample(
            time_ms=int(reading.time_ms),
            host=self.host,
            guest=self.specs[g].name,
            histogram=reading.histogram,
            hist_horizon_ms=_horizon_ms(reading.histogram_horizon_ms),
            provisioned_bytes=int(self.specs[g].provisioned_bytes),
            visible_bytes=_int(reading.visible_bytes),
            target_bytes=_int(reading.target_bytes),
            usage_bytes=_int(reading.usage_bytes),
            refault_file_total=_int(reading.refault_total),
            swap_bytes=_int(reading.swap_bytes),
            psi_some_avg10=_float(reading.psi_some_avg10),
            psi_some_total_us=_int(psi_total * 1e6) if math.isfinite(psi_total) else None,
            oom_kills_total=max(int(reading.oom_kills_total), 0),
            events=events,
            action_target_bytes=action,
            action_policy=policy if action is not None else None,
        )

    def close(self) -> None:
        """Flush and release the trace."""
        self.writer.close()
