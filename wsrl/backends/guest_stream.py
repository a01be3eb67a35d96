r"""The host's reader of a guest's histogram stream: a background thread on QEMU's chardev socket.

A guest sends its working-set state over a virtio-serial port named ``org.wsrl.ws.0``, which QEMU
exposes on the host as a unix socket (``-chardev socket,id=ws0,path=PATH,server=on,wait=off
-device virtserialport,chardev=ws0,name=org.wsrl.ws.0``). :class:`GuestStreamReader` connects to
that socket, decodes what arrives with :class:`~wsrl.backends.stream_decoder.StreamDecoder` (the
wire format is :mod:`wsrl.agent.wire`) and keeps the latest histogram: framed ``lru_gen`` dumps
(what the minimal busybox guest writes) are parsed and merged here, histogram records (what the
guest agent writes) arrive already binned, and pressure records wake the controller.

**Which memcgs make the guest's histogram.** An ``lru_gen`` dump holds one block per (memcg,
NUMA node); each memcg's block holds only the pages charged to that memcg itself (not to its
children). The reader merges, with :func:`merge_lru_gen`, the memcgs its ``memcg`` setting
selects: ``None`` or ``"/"`` (the default) merges every memcg, i.e. all the guest's LRU pages; a
path ``"/a"`` merges ``/a`` and every memcg below it (``/a/b``, ...). Generations of different
memcgs have different ages: merging puts them on the union of their ages, conserving bytes, in
time linear in the dump (:func:`wsrl.histogram.merge_nodes`), and keeps at most
:data:`~wsrl.agent.bins.MAX_HISTOGRAM_BINS` bins.

**Bounded work per report.** What arrives is the guest's, so every size in it is capped: a frame's
and a record's bytes (the decoder), a dump's memcgs, nodes and generations
(:mod:`wsrl.agent.parse_lru_gen`), a record's bins (:data:`~wsrl.agent.bins.MAX_HISTOGRAM_BINS`).
A report over a cap is refused like a malformed one, with one logged line naming the guest and the
cap; the latest good histogram stays. Given ``edges_ms`` (the runner's bin edges), the reader
re-bins each histogram onto them as it arrives, on its own thread, so that a tick takes it as it is.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsrl.agent.bins import MAX_HISTOGRAM_BINS
from wsrl.agent.bins import select_memcgs as select_memcg_bins
from wsrl.agent.kernel_text import KernelTextError
from wsrl.agent.wire import DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_RECORD_BYTES, LRU_GEN_DUMP_NAMES
from wsrl.backends.base import Notify
from wsrl.backends.stream_decoder import Dump, HistogramRecord, PressureRecord, StreamDecoder, StreamUnit
from wsrl.errors import HistogramError, ParseError
from wsrl.formats import FormatOptions, parse_bytes, parse_error_from
from wsrl.histogram import ALL_NODES, Histogram, merge_nodes, validate_edges

log = logging.getLogger(__name__)

_RECV_BYTES = 65536


# -- lru_gen dumps to one histogram ------------------------------------------------------------


def select_memcgs(histograms: Sequence[Histogram], memcg: str | None) -> list[Histogram]:
    """The lru_gen histograms (one per memcg and node) that ``memcg`` selects.

    ``None`` or ``"/"``: all of them. A path: that memcg and every memcg below it (the rule is
    :func:`wsrl.agent.bins.select_memcgs`, the agent's).

    Raises:
        ParseError: no memcg in the dump matches ``memcg``.

    """
    try:
        return select_memcg_bins(histograms, memcg)
    except KernelTextError as exc:
        raise parse_error_from(exc) from None


def merge_lru_gen(histograms: Sequence[Histogram], memcg: str | None, guest: str) -> Histogram:
    """Merge the memcgs ``memcg`` selects (see :func:`select_memcgs`) into one histogram of ``guest``.

    The result is on the union of the generations' ages (at most :data:`MAX_HISTOGRAM_BINS` bins),
    node :data:`ALL_NODES`, and holds exactly the bytes of the selected blocks; the work is linear
    in the blocks. ``meta["memcgs"]`` lists the memcg paths merged.
    """
    chosen = select_memcgs(histograms, memcg)
    if not chosen:
        raise ParseError("lru_gen", "dump", "memcg", "the dump holds no memcg")
    merged = merge_nodes(chosen, node=ALL_NODES, max_bins=MAX_HISTOGRAM_BINS)
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
        edges_ms: bin edges every histogram is re-binned onto as it arrives (the runner's);
            ``None`` keeps each histogram on its source's edges.
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
        edges_ms: Sequence[int] | None = None,
        reconnect_delay_s: float = 0.5,
        recv_timeout_s: float = 0.2,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.guest = guest
        self.memcg = memcg
        self.edges_ms = None if edges_ms is None else validate_edges(edges_ms)
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
        return StreamDecoder(self._max_frame_bytes, self._max_record_bytes, name=self._label)

    @property
    def _label(self) -> str:
        """How log lines name this stream: the guest and its socket."""
        return f"{self.guest} ({self.socket_path})"

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
            log.error("guest stream %s: %s", self._label, message)
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
        if self.edges_ms is not None:
            histogram = histogram.rebin(self.edges_ms)  # here, on this thread: never in a tick
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
