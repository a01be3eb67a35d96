"""The guest agent: runs INSIDE a VM and streams its working-set histogram to the host.

Every ``interval_s`` the agent reads the guest kernel's working-set source, turns it into one
histogram with wsrl's parsers and writes a ``histogram`` JSON-lines record (the wire format of
:mod:`wsrl.agent.wire`) to the virtio-serial port named ``org.wsrl.ws.0``. Between
histograms it polls ``/proc/pressure/memory`` every ``pressure_poll_s`` and, when ``some avg10``
rises to ``pressure_threshold`` percent or above, sends a ``pressure`` record at once (the host's
reader wakes its controller with it); it sends the next one only after pressure has fallen below
the threshold again.

Sources:

* ``lru_gen`` (default): MGLRU's ``/sys/kernel/debug/lru_gen`` (debugfs mounted, MGLRU enabled:
  ``echo y > /sys/kernel/mm/lru_gen/enabled``), parsed by :mod:`wsrl.agent.parse_lru_gen`; the memcgs
  ``memcg`` selects are merged by :func:`~wsrl.agent.bins.merge_lru_gen_bins` (default: all,
  i.e. the whole guest). MGLRU creates generations only when it ages, and it ages only under
  reclaim, so an idle guest's histogram would be one ever-older generation: every
  ``age_every`` rounds (default 1) the agent ages each (memcg, node) by one generation, writing
  ``+ MEMCG_ID NODE MAX_SEQ 1 1`` to the same file, as the busybox test guest does. The bins'
  edges are then the generations' ages, about one interval apart. ``age_every`` 0 never ages.
* ``wsr``: a working-set reporting kernel's ``memory.workingset.page_age`` (or a node's
  ``workingset_report/page_age``), parsed by :mod:`wsrl.agent.parse_wsr`, NUMA nodes merged. Reading it
  ages by itself.

The port is found by name (``/sys/class/virtio-ports/*/name``; the device is ``/dev/<entry>``)
unless ``port`` gives a path. Writes never block for long: the port is opened non-blocking and a
record that cannot be written within ``write_timeout_s`` (the host is not reading) is dropped and
logged; a port that fails (``EIO``, unplugged) is reopened on the next record.

The agent runs on the standard library alone (a minimal guest has nothing but python3): it
imports only the wire format (:mod:`wsrl.agent.wire`) and the agent's own standard-library parsers
and bins, which the host's :mod:`wsrl.formats` and :mod:`wsrl.histogram` are built on too.
"""

from __future__ import annotations

import logging
import math
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from wsrl.agent.bins import MAX_HISTOGRAM_BINS, Bins, merge_bins, merge_lru_gen_bins
from wsrl.agent.kernel_text import MAX_INPUT_BYTES, KernelTextError
from wsrl.agent.parse_lru_gen import parse_lru_gen
from wsrl.agent.parse_wsr import parse_wsr
from wsrl.agent.wire import PORT_NAME, encode_histogram_record, encode_pressure_record

log = logging.getLogger(__name__)

DEFAULT_LRU_GEN_PATH = Path("/sys/kernel/debug/lru_gen")
DEFAULT_PRESSURE_PATH = Path("/proc/pressure/memory")
VIRTIO_PORTS_DIR = Path("/sys/class/virtio-ports")


class AgentError(Exception):
    """The agent cannot run (no port, unreadable source): one line naming the file.

    Not a :class:`wsrl.errors.WsrlError` (the agent imports nothing of the host's packages);
    ``wsrl guest-agent`` reports it as one.
    """


@dataclass(frozen=True)
class AgentConfig:
    """How the guest agent runs (see the module docstring).

    Attributes:
        port: the port device to write to; ``None`` finds it by ``port_name``.
        port_name: the virtio-serial port's name.
        interval_s: seconds between histogram records.
        source: ``"lru_gen"`` or ``"wsr"``.
        lru_gen_path: MGLRU's debugfs file (read, and written to age).
        wsr_path: the ``page_age`` file, for ``source="wsr"``.
        memcg: memcgs of the lru_gen dump to merge (``None``: all).
        pressure_path: the PSI file polled for pressure reports.
        pressure_threshold: ``some avg10`` percent at which a pressure record is sent.
        pressure_poll_s: seconds between PSI polls.
        age_every: age MGLRU every this many rounds (0: never).
        age_path: where aging commands are written (default: ``lru_gen_path``).
        count: stop after this many histogram records (0: run until stopped).
        page_size_bytes: the guest's page size (lru_gen prints pages).
        write_timeout_s: longest wait for the port to take one record.
        virtio_ports_dir: where the ports are listed by name.
        dev_dir: where the port devices are.

    """

    port: Path | None = None
    port_name: str = PORT_NAME
    interval_s: float = 2.0
    source: Literal["lru_gen", "wsr"] = "lru_gen"
    lru_gen_path: Path = DEFAULT_LRU_GEN_PATH
    wsr_path: Path | None = None
    memcg: str | None = None
    pressure_path: Path = DEFAULT_PRESSURE_PATH
    pressure_threshold: float = 10.0
    pressure_poll_s: float = 1.0
    age_every: int = 1
    age_path: Path | None = None
    count: int = 0
    page_size_bytes: int = os.sysconf("SC_PAGE_SIZE")
    write_timeout_s: float = 5.0
    virtio_ports_dir: Path = VIRTIO_PORTS_DIR
    dev_dir: Path = Path("/dev")

    def check(self) -> None:
        """Raise :class:`AgentError` for settings that cannot work."""
        if not self.interval_s > 0:
            raise AgentError(f"--interval-s must be > 0, got {self.interval_s}")
        if not self.pressure_poll_s > 0:
            raise AgentError(f"--pressure-poll-s must be > 0, got {self.pressure_poll_s}")
        if not math.isfinite(self.pressure_threshold) or self.pressure_threshold < 0:
            raise AgentError(f"--pressure-threshold must be a percentage >= 0, got {self.pressure_threshold}")
        if self.age_every < 0 or self.count < 0:
            raise AgentError("--age-every and --count must be >= 0")
        if self.source == "wsr" and self.wsr_path is None:
            raise AgentError("--source wsr needs --wsr-file (a memory.workingset.page_age file)")
        if self.source not in ("lru_gen", "wsr"):
            raise AgentError(f"--source must be lru_gen or wsr, got {self.source!r}")


# -- finding and writing the port --------------------------------------------------------------


def find_port(
    name: str = PORT_NAME, ports_dir: Path = VIRTIO_PORTS_DIR, dev_dir: Path = Path("/dev")
) -> Path:
    """The device of the virtio-serial port called ``name`` (``/dev/vportNpM``).

    Raises:
        AgentError: no port of that name (is ``virtio_console`` loaded? is the port configured?).

    """
    try:
        entries = sorted(ports_dir.iterdir())
    except OSError as exc:
        raise AgentError(
            f"{ports_dir}: cannot list virtio-serial ports ({exc.strerror or exc}); is virtio_console loaded?"
        ) from None
    for entry in entries:
        try:
            port_name = (entry / "name").read_text().strip()
        except OSError:
            continue
        if port_name == name:
            return dev_dir / entry.name
    raise AgentError(f"{ports_dir}: no virtio-serial port named {name!r} (pass --port PATH to name a device)")


class PortWriter:
    """Writes whole records to the port without blocking for long; reopens a failed port."""

    def __init__(self, path: Path, timeout_s: float) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._fd: int | None = None
        self.dropped_records = 0
        self.written_records = 0

    def _open(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
            except OSError as exc:
                raise AgentError(f"{self.path}: cannot open the port: {exc.strerror or exc}") from None
        return self._fd

    def write(self, record: bytes) -> bool:
        """Write one record; return False (and log) when it was dropped."""
        try:
            fd = self._open()
        except AgentError as exc:
            self.dropped_records += 1
            log.error("%s; record dropped", exc)
            return False
        view = memoryview(record)
        deadline = time.monotonic() + self.timeout_s
        try:
            while view:
                try:
                    written = os.write(fd, view)
                    view = view[written:]
                    continue
                except BlockingIOError:
                    pass
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.dropped_records += 1
                    sent = len(record) - len(view)
                    log.error(
                        "%s: the host took %d of %d bytes within %g s; record dropped",
                        self.path,
                        sent,
                        len(record),
                        self.timeout_s,
                    )
                    return False
                select.select([], [fd], [], min(remaining, 0.5))
        except OSError as exc:
            self.dropped_records += 1
            log.error("%s: write failed (%s); record dropped, the port will be reopened", self.path, exc)
            self.close()
            return False
        self.written_records += 1
        return True

    def close(self) -> None:
        """Close the port (never raises)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError as exc:
                log.debug("closing %s: %s", self.path, exc)


# -- sources ------------------------------------------------------------------------------------


def read_limited(path: Path) -> bytes:
    """Read a kernel file (at most :data:`~wsrl.agent.kernel_text.MAX_INPUT_BYTES`); AgentError naming it."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise AgentError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise AgentError(f"{path}: larger than {MAX_INPUT_BYTES} bytes")
    return data


def read_psi(path: Path) -> dict[str, dict[str, float]]:
    """Parse a PSI file: ``{"some": {"avg10": .., "avg60": .., "avg300": .., "total": ..}, "full": ...}``.

    Averages are percent, ``total`` microseconds.

    Raises:
        AgentError: unreadable, or a line not of the form ``some|full avg10=F avg60=F avg300=F total=N``.

    """
    text = read_limited(path).decode("ascii", "replace")
    result: dict[str, dict[str, float]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        kind = fields[0]
        values: dict[str, float] = {}
        for item in fields[1:]:
            key, sep, raw = item.partition("=")
            try:
                value = float(raw) if sep else math.nan
            except ValueError:
                value = math.nan
            if not math.isfinite(value) or value < 0:
                raise AgentError(f"{path}: line {number}: field {key!r}: {item!r} is not KEY=NUMBER")
            values[key] = value
        if kind not in ("some", "full") or not {"avg10", "avg60", "avg300", "total"} <= set(values):
            raise AgentError(
                f"{path}: line {number}: expected 'some|full avg10= avg60= avg300= total=', got {line!r}"
            )
        result[kind] = values
    if "some" not in result:
        raise AgentError(f"{path}: no 'some' line")
    return result


def lru_gen_max_seqs(text: str) -> list[tuple[str, int, int]]:
    """``(memcg id, node, youngest generation's seq)`` of every block of an lru_gen dump, in order.

    Only called on a dump :mod:`wsrl.agent.parse_lru_gen` has accepted, so the layout is known good.
    """
    blocks: dict[tuple[str, int], int] = {}
    memcg_id: str | None = None
    node: int | None = None
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "memcg":
            memcg_id, node = fields[1], None
        elif fields[0] == "node":
            node = int(fields[1])
        elif (
            memcg_id is not None
            and node is not None
            and len(fields) >= 4
            and fields[0].isdigit()
            and fields[1].isdigit()
        ):
            # a generation line: "seq age anon file" (lru_gen_full's tier lines carry suffixes)
            blocks[(memcg_id, node)] = max(blocks.get((memcg_id, node), 0), int(fields[0]))
    return [(m, n, seq) for (m, n), seq in blocks.items()]


class HistogramSource:
    """Reads the configured kernel source and returns the guest's histogram."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.rounds = 0
        self.aging_failures = 0

    @property
    def path(self) -> Path:
        """The file read."""
        if self.config.source == "wsr":
            assert self.config.wsr_path is not None
            return self.config.wsr_path
        return self.config.lru_gen_path

    def read(self) -> Bins:
        """One histogram of the whole (selected) guest. Raises AgentError naming the file."""
        data = read_limited(self.path)
        self.rounds += 1
        try:
            if self.config.source == "wsr":
                merged = merge_bins(parse_wsr(data, "guest"), "guest", max_bins=MAX_HISTOGRAM_BINS)
            else:
                histograms = parse_lru_gen(data, self.config.page_size_bytes)
                merged = merge_lru_gen_bins(histograms, self.config.memcg, "guest")
        except KernelTextError as exc:
            raise AgentError(f"{self.path}: {exc}") from None
        if (
            self.config.source == "lru_gen"
            and self.config.age_every
            and self.rounds % self.config.age_every == 0
        ):
            self._age(data.decode("utf-8", "replace"))
        return merged

    def _age(self, text: str) -> None:
        """Write one ``+ memcg node max_seq 1 1`` command per block (one write each, as the kernel wants)."""
        target = self.config.age_path or self.config.lru_gen_path
        try:
            fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError as exc:
            self.aging_failures += 1
            log.error("%s: cannot open to age MGLRU: %s", target, exc.strerror or exc)
            return
        failed = 0
        try:
            for memcg_id, node, seq in lru_gen_max_seqs(text):
                try:
                    os.write(fd, f"+ {memcg_id} {node} {seq} 1 1\n".encode())
                except OSError as exc:  # EINVAL: the memcg aged or left since the dump
                    failed += 1
                    log.debug("aging memcg %s node %d: %s", memcg_id, node, exc)
        finally:
            os.close(fd)
        if failed:
            self.aging_failures += failed
            log.info("aging: %d command(s) refused (memcgs changed since the dump)", failed)


# -- the loop -----------------------------------------------------------------------------------


@dataclass
class AgentStats:
    """What a run of the agent did."""

    histograms_sent: int = 0
    pressure_sent: int = 0
    records_dropped: int = 0
    source_errors: int = 0


class GuestAgent:
    """The agent's loop (see the module docstring). :meth:`run` returns after ``count`` histograms."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        config.check()
        self.config = config
        self.port = config.port or find_port(config.port_name, config.virtio_ports_dir, config.dev_dir)
        self.writer = PortWriter(self.port, config.write_timeout_s)
        self.source = HistogramSource(config)
        self.stats = AgentStats()
        self._clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self._stop = threading.Event()
        self._seq = 0
        self._above = False
        self._psi_ok = True

    def stop(self) -> None:
        """Ask :meth:`run` to return (from another thread or a signal handler)."""
        self._stop.set()

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _send(self, record: bytes) -> None:
        if not self.writer.write(record):
            self.stats.records_dropped += 1

    def _psi(self) -> dict[str, dict[str, float]] | None:
        try:
            psi = read_psi(self.config.pressure_path)
        except AgentError as exc:
            if self._psi_ok:
                log.warning("%s; no pressure reports until it reads again", exc)
                self._psi_ok = False
            return None
        self._psi_ok = True
        return psi

    def poll_pressure(self) -> bool:
        """Read PSI once; send a pressure record if ``some avg10`` just reached the threshold."""
        psi = self._psi()
        if psi is None:
            return False
        avg10 = psi["some"]["avg10"]
        if avg10 < self.config.pressure_threshold:
            self._above = False
            return False
        if self._above:
            return False
        self._above = True
        record = encode_pressure_record(
            seq=self._next_seq(),
            time_ms=self._clock_ms(),
            some=psi["some"],
            full=psi.get("full"),
            threshold_avg10=self.config.pressure_threshold,
        )
        self._send(record)
        self.stats.pressure_sent += 1
        log.info(
            "memory pressure some avg10=%.2f%% >= %.2f%%: reported", avg10, self.config.pressure_threshold
        )
        return True

    def send_histogram(self) -> bool:
        """Read the source once and send its histogram; False when the source failed this round."""
        try:
            histogram = self.source.read()
        except AgentError as exc:
            self.stats.source_errors += 1
            log.error("%s; round skipped", exc)
            return False
        psi = self._psi()
        some = psi["some"] if psi is not None else {}
        record = encode_histogram_record(
            histogram,
            seq=self._next_seq(),
            time_ms=self._clock_ms(),
            source=self.config.source,
            memcg=self.config.memcg if self.config.source == "lru_gen" else None,
            psi_some_avg10=some.get("avg10"),
            psi_some_total_us=int(some["total"]) if "total" in some else None,
        )
        self._send(record)
        self.stats.histograms_sent += 1
        return True

    def run(self) -> AgentStats:
        """Send histograms every ``interval_s`` and pressure reports as they happen."""
        config = self.config
        read_limited(self.source.path)  # fail at once, naming the file, when the source is missing
        log.info(
            "guest agent: %s -> %s every %g s, pressure threshold %g%%",
            self.source.path,
            self.port,
            config.interval_s,
            config.pressure_threshold,
        )
        next_histogram = next_pressure = time.monotonic()
        rounds = 0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_pressure:
                    self.poll_pressure()
                    next_pressure = max(next_pressure + config.pressure_poll_s, now)
                if now >= next_histogram:
                    self.send_histogram()
                    rounds += 1
                    if config.count and rounds >= config.count:
                        break
                    next_histogram += config.interval_s
                    if next_histogram < now:  # fell behind (a slow read): do not burst to catch up
                        next_histogram = now + config.interval_s
                self._stop.wait(max(min(next_histogram, next_pressure) - time.monotonic(), 0.0))
        finally:
            self.writer.close()
        self.stats.records_dropped = self.writer.dropped_records
        return self.stats


def run_agent(config: AgentConfig) -> AgentStats:
    """Run the agent until ``config.count`` histograms were sent (forever for 0) or interrupted."""
    agent = GuestAgent(config)
    try:
        return agent.run()
    except KeyboardInterrupt:
        return agent.stats
