r"""The guest-to-host histogram stream's wire format: constants, limits and encoders of both ends.

A guest sends its working-set state to the host over one byte stream: a virtio-serial port named
``org.wsrl.ws.0`` inside the guest, which QEMU exposes on the host as a unix socket
(``-chardev socket,id=ws0,path=PATH,server=on,wait=off -device virtserialport,chardev=ws0,
name=org.wsrl.ws.0``). Two kinds of units travel on the stream, each starting at the beginning of
a line.

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
with :mod:`wsrl.agent.parse_lru_gen`; other names are counted and ignored. Both files list the same
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
  same bins as :class:`wsrl.histogram.Histogram`, at most
  :data:`~wsrl.agent.bins.MAX_HISTOGRAM_BINS` of them (a record with more is refused; the agent
  merges onto at most that many). ``memcg`` (optional, string or null) names what the agent merged
  (null or ``"/"``: the whole guest). ``psi_some_avg10`` (percent, a number >= 0) and
  ``psi_some_total_us`` (integer >= 0) are optional: the guest's ``/proc/pressure/memory``
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

The guest agent (:mod:`wsrl.agent.guest_agent`) writes records with :func:`encode_histogram_record`
and :func:`encode_pressure_record`; the host decodes the stream with
:class:`wsrl.backends.stream_decoder.StreamDecoder` (resynchronisation, size caps, strict record
checks) and reads it with :class:`wsrl.backends.guest_stream.GuestStreamReader`. Standard library
only: this module is the whole of what the guest and the host share on the wire.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

WIRE_VERSION = 1
PORT_NAME = "org.wsrl.ws.0"
"""Name of the virtio-serial port the guest writes to."""

DUMP_MAGIC = b"WSRL-DUMP v1 "
MAX_HEADER_BYTES = 256
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024
"""Largest dump body accepted (an ``lru_gen_full`` dump of a busy guest is tens of kilobytes)."""
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024
"""Largest JSON-lines record accepted, newline included (a 32-bin histogram is about 2 KiB)."""
MAX_WIRE_INT = 2**63 - 1
"""Largest integer a record may carry (counts, times and byte counts are below 2^63)."""
LRU_GEN_DUMP_NAMES: frozenset[str] = frozenset({"lru_gen", "lru_gen_full"})
HISTOGRAM_SOURCES: frozenset[str] = frozenset({"lru_gen", "wsr"})

DUMP_HEADER = re.compile(rb"WSRL-DUMP v1 seq=(\d+) name=([A-Za-z0-9_.-]+) len=(\d+) uptime=([0-9.]+)\n")
"""A frame's header line; groups: seq, name, len, uptime."""


class BinnedBytes(Protocol):
    """What a histogram record is made from: finite bin edges and bytes per bin of a memory type.

    Both :class:`wsrl.histogram.Histogram` and the agent's :class:`wsrl.agent.bins.Bins` are.
    """

    @property
    def edges_ms(self) -> Sequence[int]:
        """Finite upper bounds of all bins but the last, ms."""
        ...

    def type_bytes(self, type_name: str) -> Sequence[Any]:
        """Bytes per bin of ``type_name``."""
        ...


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
    histogram: BinnedBytes,
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
        "anon": [int(v) for v in histogram.type_bytes("anon")],
        "file": [int(v) for v in histogram.type_bytes("file")],
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
