"""The host's decoder of the guest stream: bytes in, framed dumps and JSON-lines records out.

The wire format is :mod:`wsrl.agent.wire`. :class:`StreamDecoder` is fed bytes as they arrive and
returns complete units (:class:`Dump`, :class:`HistogramRecord`, :class:`PressureRecord`);
:func:`parse_record` checks one JSON line against the record shapes strictly.

**Resynchronisation.** A host that connects mid-stream, or a guest write cut short, leaves partial
units. The decoder skips bytes up to the next ``WSRL-DUMP v1`` header or the next line that starts
with ``{``, counting what it skips; a frame whose trailer does not match and a record that is not
valid JSON of the shape above are dropped, counted and logged.

**Bounded memory.** A frame whose header announces more than ``max_frame_bytes`` (default
:data:`DEFAULT_MAX_FRAME_BYTES`) and a record line longer than ``max_record_bytes`` are dropped
with a logged error: their bytes are discarded as they arrive, never buffered. The decoder's
buffer therefore never holds more than one frame (or line) under the cap plus one read.

**Bounded work.** A histogram record has at most :data:`~wsrl.agent.bins.MAX_HISTOGRAM_BINS` bins:
a longer array is refused (a bad record naming the cap) before its values are looked at.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wsrl.agent.bins import MAX_HISTOGRAM_BINS
from wsrl.agent.wire import (
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_RECORD_BYTES,
    DUMP_HEADER,
    DUMP_MAGIC,
    HISTOGRAM_SOURCES,
    MAX_HEADER_BYTES,
    MAX_WIRE_INT,
    WIRE_VERSION,
    dump_trailer,
)
from wsrl.errors import HistogramError, ParseError
from wsrl.histogram import ALL_NODES, ANON, FILE, Histogram

log = logging.getLogger(__name__)

SOURCE = "guest_stream"
"""The source named in the decoder's :class:`~wsrl.errors.ParseError` messages."""


@dataclass(frozen=True)
class Dump:
    """One framed raw dump read from the guest.

    Attributes:
        seq: the guest's dump round (the same for every file dumped in one round).
        name: the file dumped (``lru_gen``, ``lru_gen_full``).
        uptime_s: guest uptime when the dump was taken.
        data: the file's bytes, exactly as the kernel printed them.
        received_at: host ``time.monotonic()`` when the frame was complete.

    """

    seq: int
    name: str
    uptime_s: float
    data: bytes
    received_at: float


@dataclass(frozen=True)
class HistogramRecord:
    """A ``"kind": "histogram"`` record (see the module docstring).

    Attributes:
        seq: the agent's record counter.
        time_ms: guest wall clock when the histogram was taken, ms since the epoch.
        source: ``"lru_gen"`` or ``"wsr"``.
        edges_ms: finite bin upper bounds.
        anon_bytes: anon bytes per bin (``len(edges_ms) + 1``).
        file_bytes: file bytes per bin.
        memcg: what the agent merged (``None``: the whole guest).
        psi_some_avg10: memory PSI ``some`` avg10 (percent), NaN when absent.
        psi_some_total_us: memory PSI ``some`` total (us), ``None`` when absent.
        received_at: host ``time.monotonic()`` when the line was complete.

    """

    seq: int
    time_ms: int
    source: str
    edges_ms: tuple[int, ...]
    anon_bytes: tuple[int, ...]
    file_bytes: tuple[int, ...]
    memcg: str | None = None
    psi_some_avg10: float = math.nan
    psi_some_total_us: int | None = None
    received_at: float = 0.0

    def histogram(self, guest: str) -> Histogram:
        """The record's bins as a :class:`Histogram` of ``guest`` (node :data:`ALL_NODES`)."""
        meta = {"source": self.source, "transport": "agent"}
        if self.memcg is not None:
            meta["memcg"] = self.memcg
        return Histogram(
            guest, ALL_NODES, self.edges_ms, {ANON: self.anon_bytes, FILE: self.file_bytes}, meta
        )


@dataclass(frozen=True)
class PressureRecord:
    """A ``"kind": "pressure"`` record: the guest's ``/proc/pressure/memory`` when it crossed a threshold.

    Averages are percent; totals are microseconds; NaN / ``None`` where the record left them out.
    """

    seq: int
    time_ms: int
    some_avg10: float
    some_total_us: int
    threshold_avg10: float
    some_avg60: float = math.nan
    some_avg300: float = math.nan
    full_avg10: float = math.nan
    full_avg60: float = math.nan
    full_avg300: float = math.nan
    full_total_us: int | None = None
    resource: str = "memory"
    received_at: float = 0.0


StreamUnit = Dump | HistogramRecord | PressureRecord


def _field_error(field_name: str, reason: str, seq: object = None) -> ParseError:
    where = "record" if seq is None else f"record seq={seq}"
    return ParseError(SOURCE, where, field_name, reason)


def _get_int(obj: Mapping[str, Any], key: str, seq: object, *, required: bool = True) -> int | None:
    if key not in obj:
        if required:
            raise _field_error(key, "missing", seq)
        return None
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise _field_error(key, f"expected an integer, got {value!r:.40}", seq)
    if not 0 <= value <= MAX_WIRE_INT:
        raise _field_error(key, f"{value} is out of range [0, 2^63)", seq)
    return value


def _get_float(obj: Mapping[str, Any], key: str, seq: object, *, required: bool = True) -> float:
    if key not in obj:
        if required:
            raise _field_error(key, "missing", seq)
        return math.nan
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _field_error(key, f"expected a finite number, got {value!r:.40}", seq)
    if value < 0:
        raise _field_error(key, f"{value} is negative", seq)
    return float(value)


def _get_int_list(obj: Mapping[str, Any], key: str, seq: object, max_items: int) -> tuple[int, ...]:
    value = obj.get(key)
    if not isinstance(value, list):
        raise _field_error(key, f"expected an array of integers, got {value!r:.40}", seq)
    if len(value) > max_items:
        raise _field_error(
            key, f"{len(value)} values: over the cap of {MAX_HISTOGRAM_BINS} bins per histogram", seq
        )
    out = []
    for index, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= MAX_WIRE_INT:
            raise _field_error(f"{key}[{index}]", f"expected an integer in [0, 2^63), got {item!r:.40}", seq)
        out.append(item)
    return tuple(out)


def parse_record(line: bytes, received_at: float = 0.0) -> HistogramRecord | PressureRecord | None:
    """Parse one JSON-lines record (without or with its newline).

    Returns:
        The record, or ``None`` for a v1 record of a kind this reader does not know.

    Raises:
        ParseError: the line is not a v1 record of the shape in the module docstring.

    """
    try:
        obj = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _field_error("text", f"not UTF-8 (byte {exc.start})") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, too deep, an int of > 4300 digits
        raise _field_error("JSON", str(exc)[:120]) from None
    if not isinstance(obj, dict):
        raise _field_error("JSON", "expected an object")
    if obj.get("v") != WIRE_VERSION or isinstance(obj.get("v"), bool):
        raise _field_error("v", f"unsupported wire version {obj.get('v')!r:.20} (this reader speaks 1)")
    seq = _get_int(obj, "seq", None)
    time_ms = _get_int(obj, "time_ms", seq)
    assert seq is not None and time_ms is not None
    kind = obj.get("kind")
    if kind == "histogram":
        return _parse_histogram_record(obj, seq, time_ms, received_at)
    if kind == "pressure":
        return _parse_pressure_record(obj, seq, time_ms, received_at)
    if not isinstance(kind, str):
        raise _field_error("kind", f"expected a string, got {kind!r:.40}", seq)
    return None


def _parse_histogram_record(
    obj: dict[str, Any], seq: int, time_ms: int, received_at: float
) -> HistogramRecord:
    source = obj.get("source")
    if source not in HISTOGRAM_SOURCES:
        raise _field_error("source", f"expected one of {sorted(HISTOGRAM_SOURCES)}, got {source!r:.40}", seq)
    memcg = obj.get("memcg")
    if memcg is not None and not isinstance(memcg, str):
        raise _field_error("memcg", f"expected a string or null, got {memcg!r:.40}", seq)
    edges = _get_int_list(obj, "edges_ms", seq, MAX_HISTOGRAM_BINS - 1)
    anon = _get_int_list(obj, "anon", seq, MAX_HISTOGRAM_BINS)
    file = _get_int_list(obj, "file", seq, MAX_HISTOGRAM_BINS)
    for key, values in (("anon", anon), ("file", file)):
        if len(values) != len(edges) + 1:
            raise _field_error(
                key, f"{len(values)} bins for {len(edges)} edges (expected {len(edges) + 1})", seq
            )
    record = HistogramRecord(
        seq=seq,
        time_ms=time_ms,
        source=str(source),
        edges_ms=edges,
        anon_bytes=anon,
        file_bytes=file,
        memcg=memcg,
        psi_some_avg10=_get_float(obj, "psi_some_avg10", seq, required=False),
        psi_some_total_us=_get_int(obj, "psi_some_total_us", seq, required=False),
        received_at=received_at,
    )
    try:  # edges strictly increasing, byte total below 2^63
        record.histogram("check")
    except HistogramError as exc:
        raise _field_error("edges_ms", str(exc), seq) from None
    return record


def _parse_pressure_record(obj: dict[str, Any], seq: int, time_ms: int, received_at: float) -> PressureRecord:
    resource = obj.get("resource", "memory")
    if resource != "memory":
        raise _field_error("resource", f"expected 'memory', got {resource!r:.40}", seq)
    some_total = _get_int(obj, "some_total_us", seq)
    assert some_total is not None
    return PressureRecord(
        seq=seq,
        time_ms=time_ms,
        some_avg10=_get_float(obj, "some_avg10", seq),
        some_total_us=some_total,
        threshold_avg10=_get_float(obj, "threshold_avg10", seq),
        some_avg60=_get_float(obj, "some_avg60", seq, required=False),
        some_avg300=_get_float(obj, "some_avg300", seq, required=False),
        full_avg10=_get_float(obj, "full_avg10", seq, required=False),
        full_avg60=_get_float(obj, "full_avg60", seq, required=False),
        full_avg300=_get_float(obj, "full_avg300", seq, required=False),
        full_total_us=_get_int(obj, "full_total_us", seq, required=False),
        received_at=received_at,
    )


class StreamDecoder:
    """Incremental decoder of the stream: :meth:`feed` it bytes as they arrive, get complete units.

    Args:
        max_frame_bytes: largest dump body kept; a larger frame is discarded as it arrives.
        max_record_bytes: longest JSON line kept (newline included); a longer one is discarded.
        name: names the stream (its guest) in log lines.

    """

    def __init__(
        self,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        *,
        name: str = "",
    ) -> None:
        self.name = name
        self._buf = bytearray()
        self._max_frame_bytes = max_frame_bytes
        self._max_record_bytes = max_record_bytes
        self._line_scanned = 0
        """Bytes at the front of the buffer known to hold no newline (a record line in progress)."""
        self._discard_remaining = 0
        self._discard_line = False
        self._at_line_start = True
        """Whether the last byte taken off the stream was a newline: only there does ``{`` begin a
        record. A property of the stream, not of how it was cut into reads (a read that ends in
        noise leaves the next read mid-line)."""
        self.dropped_bytes = 0
        """Bytes skipped: partial units, noise, and the bodies of oversized frames and lines."""
        self.bad_frames = 0
        """Frames dropped for a malformed header, an oversize length or a wrong trailer."""
        self.bad_records = 0
        """JSON lines dropped as malformed or oversized."""
        self.oversized = 0
        """Frames and lines dropped for exceeding their size cap (also counted as bad)."""

    @property
    def buffered_bytes(self) -> int:
        """Bytes held waiting for the rest of a unit."""
        return len(self._buf)

    @property
    def max_buffered_bytes(self) -> int:
        """Most bytes :attr:`buffered_bytes` can be once :meth:`feed` returns.

        A partial unit is all that stays buffered: a frame (header and trailer lines of at most
        :data:`MAX_HEADER_BYTES` each around at most ``max_frame_bytes``), a record line shorter
        than ``max_record_bytes``, or a few bytes that may begin a header. While :meth:`feed` runs
        the buffer holds at most this plus the bytes being fed.
        """
        return max(self._max_frame_bytes + 2 * MAX_HEADER_BYTES, self._max_record_bytes)

    def feed(self, data: bytes, now: float) -> list[StreamUnit]:
        """Add ``data`` received at host time ``now``; return the units it completed, in order."""
        self._buf += data
        units: list[StreamUnit] = []
        while True:
            unit = self._next_unit(now)
            if unit is None:
                return units
            if unit is not _NOTHING:
                units.append(unit)  # type: ignore[arg-type]

    def _consume(self, count: int) -> None:
        """Remove ``count`` bytes from the front of the buffer."""
        if count:
            self._at_line_start = self._buf[count - 1] == ord("\n")
        del self._buf[:count]
        self._line_scanned = 0

    def _skip(self, count: int) -> None:
        self._consume(count)
        self.dropped_bytes += count

    def _reject_frame(self) -> None:
        """Drop one byte of a bad frame's magic so the search moves on to the next unit."""
        self.bad_frames += 1
        self._skip(1)

    def _next_unit(self, now: float) -> object | None:
        """One unit off the buffer.

        Returns :data:`_NOTHING` when bytes were consumed without completing a unit, ``None`` when
        more bytes are needed.
        """
        if self._discard_remaining:
            count = min(len(self._buf), self._discard_remaining)
            self._skip(count)
            self._discard_remaining -= count
            return _NOTHING if count and not self._discard_remaining else None
        if self._discard_line:
            newline = self._buf.find(b"\n")
            if newline < 0:
                self._skip(len(self._buf))
                return None
            self._skip(newline + 1)
            self._discard_line = False
            return _NOTHING
        if not self._buf:
            return None
        if self._buf[0] == ord("{") and self._at_line_start:
            return self._next_record(now)
        if self._buf.startswith(DUMP_MAGIC):
            return self._next_frame(now)
        if DUMP_MAGIC.startswith(bytes(self._buf[: len(DUMP_MAGIC)])):
            return None  # the start of a header: wait for the rest
        return self._resync()

    def _resync(self) -> object | None:
        """Skip to the next header or line starting with ``{``, keeping a tail that may begin one."""
        starts = [i for i in (self._buf.find(DUMP_MAGIC, 1), self._buf.find(b"\n{")) if i >= 0]
        if starts:
            start = min(starts)
            self._skip(start + 1 if self._buf[start] == ord("\n") else start)
            return _NOTHING
        keep = 1 if self._buf.endswith(b"\n") else 0
        for length in range(min(len(DUMP_MAGIC) - 1, len(self._buf)), keep, -1):
            if self._buf.endswith(DUMP_MAGIC[:length]):
                keep = length
                break
        self._skip(len(self._buf) - keep)
        return None

    def _next_record(self, now: float) -> object | None:
        # Search only the bytes not searched before: a line trickling in byte by byte stays linear.
        newline = self._buf.find(b"\n", self._line_scanned, self._max_record_bytes)
        if newline < 0:
            self._line_scanned = min(len(self._buf), self._max_record_bytes)
            if len(self._buf) >= self._max_record_bytes:
                self.bad_records += 1
                self.oversized += 1
                log.error(
                    "guest stream %s: JSON record longer than %d bytes dropped",
                    self.name,
                    self._max_record_bytes,
                )
                self._discard_line = True
                self._skip(len(self._buf))
                return _NOTHING
            return None
        line = bytes(self._buf[:newline]).rstrip(b"\r")
        self._consume(newline + 1)
        try:
            record = parse_record(line, received_at=now)
        except ParseError as exc:
            self.bad_records += 1
            log.error("guest stream %s: bad record dropped: %s", self.name, exc)
            return _NOTHING
        if record is None:
            log.debug("guest stream: record of an unknown kind ignored")
            return _NOTHING
        return record

    def _next_frame(self, now: float) -> object | None:
        newline = self._buf.find(b"\n", 0, MAX_HEADER_BYTES)
        if newline < 0:
            if len(self._buf) >= MAX_HEADER_BYTES:
                self._reject_frame()
                return _NOTHING
            return None
        match = DUMP_HEADER.fullmatch(bytes(self._buf[: newline + 1]))
        if match is None:
            self._reject_frame()
            return _NOTHING
        seq, name = int(match.group(1)), match.group(2).decode()
        length = int(match.group(3))
        try:
            uptime_s = float(match.group(4))
        except ValueError:  # "uptime=." or "uptime=1.2.3": digits and dots that are no number
            self._reject_frame()
            return _NOTHING
        closing = dump_trailer(seq, name)
        body_start = newline + 1
        if length > self._max_frame_bytes:
            self.bad_frames += 1
            self.oversized += 1
            log.error(
                "guest stream %s: frame seq=%d name=%s of %d bytes exceeds the %d-byte cap; dropped",
                self.name,
                seq,
                name,
                length,
                self._max_frame_bytes,
            )
            self._skip(body_start)
            self._discard_remaining = length + len(closing)
            return _NOTHING
        end = body_start + length + len(closing)
        if len(self._buf) < end:
            return None
        if bytes(self._buf[body_start + length : end]) != closing:
            self._reject_frame()
            return _NOTHING
        dump = Dump(
            seq=seq,
            name=name,
            uptime_s=uptime_s,
            data=bytes(self._buf[body_start : body_start + length]),
            received_at=now,
        )
        self._consume(end)
        return dump


_NOTHING = object()
