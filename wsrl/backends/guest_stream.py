r"""The guest-to-host histogram stream: its wire format and the host's reader.

A guest sends its working-set state to the host over one byte stream: a virtio-serial port named
``org.wsrl.ws.0`` inside the guest, which QEMU exposes on the host as a unix socket
(``-chardev socket,id=ws0,path=PATH,server=on,wait=off -device virtserialport,chardev=ws0,
name=org.wsrl.ws.0``). :class:`GuestStreamReader` connects to that socket and keeps the latest
histogram. Two kinds of units travel on the stream, each starting at the beginning of a line.

**1. Framed raw dumps** (what the minimal busybox guest in ``tests/testbed/guest/init`` writes).
A frame is byte exact: a header line gives the length of the raw file contents that follow, then a
trailer line repeats the sequence number and the name::

    WSRL-DUMP v1 seq=SEQ name=NAME len=LEN uptime=SECONDS\n
    <LEN raw bytes, exactly as the guest kernel printed the file>
    WSRL-END seq=SEQ name=NAME\n

``SEQ`` is the guest's dump round (decimal), ``NAME`` the file dumped (``[A-Za-z0-9_.-]+``),
``LEN`` the body length in bytes, ``SECONDS`` the guest uptime (``/proc/uptime``, decimal with a
fraction). The header line is at most :data:`MAX_HEADER_BYTES` bytes. The body is not looked at
while framing, so it may hold any bytes. Dumps named ``lru_gen`` or ``lru_gen_full`` are parsed
with :mod:`wsrl.formats.lru_gen`; other names are counted and ignored. Both files list the same
generations, so once a connection has delivered a plain ``lru_gen`` dump, its ``lru_gen_full``
dumps are ignored too (one histogram per round).

**2. JSON-lines records** (what the Python guest agent, ``wsrl guest-agent``, writes): one JSON
object per line, UTF-8, ending in ``\n``, at most :data:`DEFAULT_MAX_RECORD_BYTES` bytes, the first
byte being ``{``. Every record has ``"v": 1`` (the wire version), ``"kind"``, ``"seq"`` (the
agent's record counter, an integer >= 0) and ``"time_ms"`` (the guest's wall clock, ms since the
UNIX epoch, an integer >= 0). A receiver ignores keys it does not know and records of a kind it
does not know (new optional keys and kinds keep ``v`` 1; a change of meaning takes a new ``v``).

* ``"kind": "histogram"``: the guest's working-set histogram::

      {"v": 1, "kind": "histogram", "seq": 7, "time_ms": 1767225600000, "source": "lru_gen",
       "memcg": "/", "edges_ms": [2000, 4000, 6000],
       "anon": [1024, 0, 4096, 0], "file": [8192, 0, 0, 0],
       "psi_some_avg10": 0.0, "psi_some_total_us": 123456}

  ``source`` is ``"lru_gen"`` (MGLRU generations) or ``"wsr"`` (the working-set reporting
  ``page_age`` file). ``edges_ms`` are the finite upper bounds of all bins but the last, strictly
  increasing integers >= 0; ``anon`` and ``file`` are BYTES per bin, ``len(edges_ms) + 1``
  integers in ``[0, 2^63)`` each, the last bin open-ended (idle longer than the last edge), the
  same bins as :class:`wsrl.histogram.Histogram`. ``memcg`` (optional, string or null) names what
  the agent merged (null or ``"/"``: the whole guest). ``psi_some_avg10`` (percent, a number >= 0)
  and ``psi_some_total_us`` (integer >= 0) are optional: the guest's ``/proc/pressure/memory``
  ``some`` line when the histogram was taken.

* ``"kind": "pressure"``: sent unprompted by the agent when memory pressure crosses its
  threshold (the host's reader calls ``notify("agent_report")`` on each)::

      {"v": 1, "kind": "pressure", "seq": 8, "time_ms": 1767225601000, "resource": "memory",
       "some_avg10": 31.5, "some_avg60": 8.2, "some_avg300": 1.9, "some_total_us": 9876543,
       "full_avg10": 12.0, "full_avg60": 3.1, "full_avg300": 0.7, "full_total_us": 4567890,
       "threshold_avg10": 10.0}

  ``resource`` is ``"memory"``; ``some_avg10`` (percent), ``some_total_us`` and
  ``threshold_avg10`` (the agent's threshold, percent) are required; the other ``some_*`` and
  ``full_*`` keys are optional (a kernel without a ``full`` line leaves them out).

**Resynchronisation.** A host that connects mid-stream, or a guest write cut short, leaves partial
units. The decoder skips bytes up to the next ``WSRL-DUMP v1`` header or the next line that starts
with ``{``, counting what it skips; a frame whose trailer does not match and a record that is not
valid JSON of the shape above are dropped, counted and logged.

**Bounded memory.** A frame whose header announces more than ``max_frame_bytes`` (default
:data:`DEFAULT_MAX_FRAME_BYTES`) and a record line longer than ``max_record_bytes`` are dropped
with a logged error: their bytes are discarded as they arrive, never buffered. The decoder's
buffer therefore never holds more than one frame (or line) under the cap plus one read.

**Which memcgs make the guest's histogram.** An ``lru_gen`` dump holds one block per (memcg,
NUMA node); each memcg's block holds only the pages charged to that memcg itself (not to its
children). The reader merges, with :func:`merge_lru_gen`, the memcgs its ``memcg`` setting
selects: ``None`` or ``"/"`` (the default) merges every memcg, i.e. all the guest's LRU pages; a
path ``"/a"`` merges ``/a`` and every memcg below it (``/a/b``, ...). Generations of different
memcgs have different ages: merging re-bins them onto the union of their ages, conserving bytes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsrl.backends.base import Notify
from wsrl.errors import HistogramError, ParseError
from wsrl.formats import FormatOptions, parse_bytes
from wsrl.histogram import ALL_NODES, ANON, FILE, MAX_BYTES, Histogram, merge_nodes

log = logging.getLogger(__name__)

SOURCE = "guest_stream"
WIRE_VERSION = 1
PORT_NAME = "org.wsrl.ws.0"
"""Name of the virtio-serial port the guest writes to."""

DUMP_MAGIC = b"WSRL-DUMP v1 "
MAX_HEADER_BYTES = 256
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024
"""Largest dump body accepted (an ``lru_gen_full`` dump of a busy guest is tens of kilobytes)."""
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024
"""Largest JSON-lines record accepted, newline included (a 32-bin histogram is about 2 KiB)."""
LRU_GEN_DUMP_NAMES: frozenset[str] = frozenset({"lru_gen", "lru_gen_full"})
HISTOGRAM_SOURCES: frozenset[str] = frozenset({"lru_gen", "wsr"})

_HEADER = re.compile(rb"WSRL-DUMP v1 seq=(\d+) name=([A-Za-z0-9_.-]+) len=(\d+) uptime=([0-9.]+)\n")
_RECV_BYTES = 65536


# -- units on the wire ------------------------------------------------------------------------


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


# -- encoding (the guest side) -----------------------------------------------------------------


def dump_trailer(seq: int, name: str) -> bytes:
    """The trailer line that closes frame ``seq`` of ``name``."""
    return b"WSRL-END seq=%d name=%s\n" % (seq, name.encode())


def encode_dump(seq: int, name: str, data: bytes, uptime_s: float = 0.0) -> bytes:
    """One framed dump, byte for byte as the busybox guest writes it."""
    header = b"WSRL-DUMP v1 seq=%d name=%s len=%d uptime=%.2f\n" % (seq, name.encode(), len(data), uptime_s)
    return header + data + dump_trailer(seq, name)


def _json_line(record: Mapping[str, Any]) -> bytes:
    line = json.dumps(record, separators=(",", ":"), allow_nan=False).encode() + b"\n"
    if len(line) > DEFAULT_MAX_RECORD_BYTES:
        raise ValueError(f"record of {len(line)} bytes exceeds {DEFAULT_MAX_RECORD_BYTES}")
    return line


def encode_histogram_record(
    histogram: Histogram,
    *,
    seq: int,
    time_ms: int,
    source: str,
    memcg: str | None = None,
    psi_some_avg10: float | None = None,
    psi_some_total_us: int | None = None,
) -> bytes:
    """One ``histogram`` JSON line for ``histogram`` (its anon and file bytes; other types are dropped)."""
    if source not in HISTOGRAM_SOURCES:
        raise ValueError(f"source must be one of {sorted(HISTOGRAM_SOURCES)}, got {source!r}")
    record: dict[str, Any] = {
        "v": WIRE_VERSION,
        "kind": "histogram",
        "seq": int(seq),
        "time_ms": int(time_ms),
        "source": source,
        "memcg": memcg,
        "edges_ms": [int(e) for e in histogram.edges_ms],
        "anon": [int(v) for v in histogram.type_bytes(ANON)],
        "file": [int(v) for v in histogram.type_bytes(FILE)],
    }
    if psi_some_avg10 is not None and math.isfinite(psi_some_avg10):
        record["psi_some_avg10"] = float(psi_some_avg10)
    if psi_some_total_us is not None:
        record["psi_some_total_us"] = int(psi_some_total_us)
    return _json_line(record)


def encode_pressure_record(
    *,
    seq: int,
    time_ms: int,
    some: Mapping[str, float],
    full: Mapping[str, float] | None,
    threshold_avg10: float,
) -> bytes:
    """One ``pressure`` JSON line from the parsed ``some`` / ``full`` lines of ``/proc/pressure/memory``.

    ``some`` and ``full`` map ``avg10``, ``avg60``, ``avg300`` (percent) and ``total`` (us).
    """
    record: dict[str, Any] = {
        "v": WIRE_VERSION,
        "kind": "pressure",
        "seq": int(seq),
        "time_ms": int(time_ms),
        "resource": "memory",
    }
    for prefix, values in (("some", some), ("full", full or {})):
        for key in ("avg10", "avg60", "avg300"):
            if key in values:
                record[f"{prefix}_{key}"] = float(values[key])
        if "total" in values:
            record[f"{prefix}_total_us"] = int(values["total"])
    record["threshold_avg10"] = float(threshold_avg10)
    return _json_line(record)


# -- decoding -----------------------------------------------------------------------------------


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
    if not 0 <= value <= MAX_BYTES:
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


def _get_int_list(obj: Mapping[str, Any], key: str, seq: object) -> tuple[int, ...]:
    value = obj.get(key)
    if not isinstance(value, list):
        raise _field_error(key, f"expected an array of integers, got {value!r:.40}", seq)
    out = []
    for index, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= MAX_BYTES:
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
    edges = _get_int_list(obj, "edges_ms", seq)
    anon = _get_int_list(obj, "anon", seq)
    file = _get_int_list(obj, "file", seq)
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

    """

    def __init__(
        self,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> None:
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
                log.error("guest stream: JSON record longer than %d bytes dropped", self._max_record_bytes)
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
            log.error("guest stream: bad record dropped: %s", exc)
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
        match = _HEADER.fullmatch(bytes(self._buf[: newline + 1]))
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
                "guest stream: frame seq=%d name=%s of %d bytes exceeds the %d-byte cap; dropped",
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


# -- lru_gen dumps to one histogram ------------------------------------------------------------


def select_memcgs(histograms: Sequence[Histogram], memcg: str | None) -> list[Histogram]:
    """The lru_gen histograms (one per memcg and node) that ``memcg`` selects.

    ``None`` or ``"/"``: all of them. A path: that memcg and every memcg below it.

    Raises:
        ParseError: no memcg in the dump matches ``memcg``.

    """
    if memcg is None or memcg.strip() in ("", "/"):
        return list(histograms)
    wanted = memcg.rstrip("/")
    chosen = [h for h in histograms if h.guest == wanted or h.guest.startswith(wanted + "/")]
    if not chosen:
        present = sorted({h.guest for h in histograms})
        raise ParseError("lru_gen", "dump", "memcg", f"no memcg {memcg!r} in the dump (memcgs: {present})")
    return chosen


def merge_lru_gen(histograms: Sequence[Histogram], memcg: str | None, guest: str) -> Histogram:
    """Merge the memcgs ``memcg`` selects (see :func:`select_memcgs`) into one histogram of ``guest``.

    The result is on the union of the generations' ages, node :data:`ALL_NODES`, and holds exactly
    the bytes of the selected blocks. ``meta["memcgs"]`` lists the memcg paths merged.
    """
    chosen = select_memcgs(histograms, memcg)
    if not chosen:
        raise ParseError("lru_gen", "dump", "memcg", "the dump holds no memcg")
    merged = merge_nodes(chosen, node=ALL_NODES)
    memcgs = ",".join(dict.fromkeys(h.guest for h in chosen))
    meta = {"source": "lru_gen", "memcgs": memcgs}
    rows = {t: merged.type_bytes(t) for t in merged.types}
    return Histogram(guest, ALL_NODES, merged.edges_ms, rows, meta)


# -- the reader ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamSample:
    """The latest histogram received from a guest.

    Attributes:
        histogram: the guest's histogram (guest = the reader's ``guest``, node ALL_NODES).
        received_ms: host wall clock when it arrived, ms since the epoch.
        received_at: host ``time.monotonic()`` when it arrived.
        count: how many histograms the reader has taken so far (1 for the first).
        transport: ``"dump"`` (a framed raw dump) or ``"agent"`` (a JSON-lines record).
        source: ``"lru_gen"`` or ``"wsr"``.
        seq: the guest's dump round or record counter.
        guest_time_ms: the guest's wall clock for agent records; ``None`` for dumps.
        guest_uptime_s: the guest's uptime for dumps; NaN for agent records.
        raw: the dump's bytes as the kernel printed them (``None`` for agent records).
        psi_some_avg10: memory PSI some avg10 the agent sent with the histogram (NaN if none).
        psi_some_total_us: memory PSI some total (us) the agent sent (``None`` if none).

    """

    histogram: Histogram
    received_ms: int
    received_at: float
    count: int
    transport: str
    source: str
    seq: int
    guest_time_ms: int | None = None
    guest_uptime_s: float = math.nan
    raw: bytes | None = None
    psi_some_avg10: float = math.nan
    psi_some_total_us: int | None = None


@dataclass
class StreamStats:
    """Counters of a :class:`GuestStreamReader` (for logs and tests)."""

    connects: int = 0
    disconnects: int = 0
    dumps: int = 0
    records: int = 0
    histograms: int = 0
    pressure_reports: int = 0
    ignored_dumps: int = 0
    parse_errors: int = 0
    bad_frames: int = 0
    bad_records: int = 0
    oversized: int = 0
    dropped_bytes: int = 0
    last_error: str = ""
    connected: bool = False
    errors_by_kind: dict[str, int] = field(default_factory=dict)


class GuestStreamReader:
    """Reads a guest's histogram stream from QEMU's chardev unix socket in a background thread.

    Connects to ``socket_path`` (QEMU is the server; it serves one client at a time), decodes
    framed dumps and JSON-lines records (see the module docstring), turns ``lru_gen`` dumps into
    one histogram with :func:`merge_lru_gen` and keeps the latest histogram with its time. A
    pressure record calls ``notify("agent_report")``. When the socket drops or cannot be reached,
    it reconnects every ``reconnect_delay_s`` until :meth:`close`. Every blocking call is bounded.

    Args:
        socket_path: the chardev's unix socket (``-chardev socket,path=...,server=on``).
        guest: name given to the histograms.
        memcg: which memcgs of an lru_gen dump make the histogram (``None``: all).
        page_size_bytes: the guest's page size (lru_gen prints pages).
        max_frame_bytes: cap on one dump's body; larger frames are dropped with a logged error.
        max_record_bytes: cap on one JSON line.
        reconnect_delay_s: pause between connection attempts.
        recv_timeout_s: how long one ``recv`` waits, which bounds how long :meth:`close` waits.

    """

    def __init__(
        self,
        socket_path: str | Path,
        *,
        guest: str = "vm",
        memcg: str | None = None,
        page_size_bytes: int = 4096,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        reconnect_delay_s: float = 0.5,
        recv_timeout_s: float = 0.2,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.guest = guest
        self.memcg = memcg
        self._options = FormatOptions(page_size_bytes=page_size_bytes)
        self._max_frame_bytes = max_frame_bytes
        self._max_record_bytes = max_record_bytes
        self._reconnect_delay_s = reconnect_delay_s
        self._recv_timeout_s = recv_timeout_s
        self._notify: Notify | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._latest: StreamSample | None = None
        self._pressure: PressureRecord | None = None
        self._sock: socket.socket | None = None
        self._stats = StreamStats()
        self._decoder = self._new_decoder()
        self._plain_lru_gen_seen = False

    def _new_decoder(self) -> StreamDecoder:
        return StreamDecoder(self._max_frame_bytes, self._max_record_bytes)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, notify: Notify | None = None) -> None:
        """Start the background thread (it connects, and reconnects, by itself)."""
        if self._thread is not None:
            raise RuntimeError(f"guest stream {self.socket_path} is already started")
        self._notify = notify
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"wsrl-guest-stream-{self.guest}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread and disconnect (never raises; waits at most a few recv timeouts)."""
        self._stop.set()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=max(2.0, 5 * self._recv_timeout_s))
        with self._cond:
            self._cond.notify_all()

    def __enter__(self) -> GuestStreamReader:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- what it has read ----------------------------------------------------------------------

    def latest(self) -> StreamSample | None:
        """The latest histogram received, or ``None`` before the first."""
        with self._cond:
            return self._latest

    def latest_pressure(self) -> PressureRecord | None:
        """The latest pressure record received, or ``None``."""
        with self._cond:
            return self._pressure

    def stats(self) -> StreamStats:
        """A copy of the reader's counters."""
        with self._cond:
            copy = StreamStats(**{k: v for k, v in vars(self._stats).items() if k != "errors_by_kind"})
            copy.errors_by_kind = dict(self._stats.errors_by_kind)
            return copy

    def wait_for_sample(self, after_count: int = 0, timeout_s: float = 10.0) -> StreamSample | None:
        """Wait until a histogram numbered above ``after_count`` arrives; ``None`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._latest is None or self._latest.count <= after_count:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    return None
                self._cond.wait(timeout=min(remaining, 0.5))
            return self._latest

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        announced_failure = False
        while not self._stop.is_set():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(max(self._recv_timeout_s, 1.0))
            try:
                sock.connect(str(self.socket_path))
            except OSError as exc:
                sock.close()
                self._note_error("connect", f"cannot connect to {self.socket_path}: {exc.strerror or exc}")
                if not announced_failure:
                    log.warning("guest stream %s: cannot connect: %s", self.socket_path, exc.strerror or exc)
                    announced_failure = True
                self._stop.wait(self._reconnect_delay_s)
                continue
            announced_failure = False
            sock.settimeout(self._recv_timeout_s)
            self._sock = sock
            with self._cond:
                self._stats.connects += 1
                self._stats.connected = True
            log.info("guest stream %s: connected", self.socket_path)
            try:
                self._read_until_closed(sock)
            finally:
                self._sock = None
                sock.close()
                self._decoder = self._new_decoder()  # a partial unit of the old connection is lost
                self._plain_lru_gen_seen = False
                with self._cond:
                    self._stats.connected = False
                    self._stats.disconnects += 1
            if not self._stop.is_set():
                self._stop.wait(self._reconnect_delay_s)

    def _read_until_closed(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                data = sock.recv(_RECV_BYTES)
            except TimeoutError:
                continue
            except OSError as exc:
                self._note_error("recv", f"read from {self.socket_path} failed: {exc.strerror or exc}")
                log.warning("guest stream %s: read failed: %s; reconnecting", self.socket_path, exc)
                return
            if not data:
                if not self._stop.is_set():
                    log.info("guest stream %s: closed by the other end; reconnecting", self.socket_path)
                return
            now = time.monotonic()
            units = self._decoder.feed(data, now)
            with self._cond:
                self._stats.bad_frames = self._decoder.bad_frames
                self._stats.bad_records = self._decoder.bad_records
                self._stats.oversized = self._decoder.oversized
                self._stats.dropped_bytes = self._decoder.dropped_bytes
            for unit in units:
                try:
                    self._take(unit, now)
                except Exception as exc:  # a bug turning a unit into a histogram must not stop the reader
                    self._note_error("take", f"{type(exc).__name__}: {exc}"[:300])
                    log.exception("guest stream %s: a received unit could not be used", self.socket_path)

    def _note_error(self, kind: str, message: str) -> None:
        with self._cond:
            self._stats.last_error = message
            self._stats.errors_by_kind[kind] = self._stats.errors_by_kind.get(kind, 0) + 1

    def _take(self, unit: StreamUnit, now: float) -> None:
        if isinstance(unit, Dump):
            self._take_dump(unit, now)
        elif isinstance(unit, HistogramRecord):
            with self._cond:
                self._stats.records += 1
            self._publish(
                unit.histogram(self.guest),
                now,
                transport="agent",
                source=unit.source,
                seq=unit.seq,
                guest_time_ms=unit.time_ms,
                psi_some_avg10=unit.psi_some_avg10,
                psi_some_total_us=unit.psi_some_total_us,
            )
        else:
            with self._cond:
                self._stats.records += 1
                self._stats.pressure_reports += 1
                self._pressure = unit
                self._cond.notify_all()
            log.info(
                "guest stream %s: pressure report some avg10=%.2f%% (threshold %.2f%%)",
                self.socket_path,
                unit.some_avg10,
                unit.threshold_avg10,
            )
            self._call_notify("agent_report")

    def _take_dump(self, dump: Dump, now: float) -> None:
        with self._cond:
            self._stats.dumps += 1
        if dump.name == "lru_gen":
            self._plain_lru_gen_seen = True
        if dump.name not in LRU_GEN_DUMP_NAMES or (dump.name == "lru_gen_full" and self._plain_lru_gen_seen):
            with self._cond:
                self._stats.ignored_dumps += 1
            log.debug("guest stream: dump %r ignored", dump.name)
            return
        try:
            histograms = parse_bytes("lru_gen", dump.data, self._options)
            merged = merge_lru_gen(histograms, self.memcg, self.guest)
        except (ParseError, HistogramError) as exc:
            message = f"dump seq={dump.seq} name={dump.name}: {exc}"
            self._note_error("parse", message)
            with self._cond:
                self._stats.parse_errors += 1
            log.error("guest stream %s: %s", self.socket_path, message)
            return
        merged.meta["dump"] = dump.name
        self._publish(
            merged,
            now,
            transport="dump",
            source="lru_gen",
            seq=dump.seq,
            guest_uptime_s=dump.uptime_s,
            raw=dump.data,
        )

    def _publish(self, histogram: Histogram, now: float, **details: Any) -> None:
        with self._cond:
            self._stats.histograms += 1
            self._latest = StreamSample(
                histogram=histogram,
                received_ms=int(time.time() * 1000),
                received_at=now,
                count=self._stats.histograms,
                **details,
            )
            self._cond.notify_all()

    def _call_notify(self, reason: str) -> None:
        notify = self._notify
        if notify is None:
            return
        try:
            notify(reason)
        except Exception:  # a failing callback must not kill the reader
            log.exception("guest stream %s: notify(%r) failed", self.socket_path, reason)
