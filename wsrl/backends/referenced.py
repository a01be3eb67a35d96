"""Working-set ages from page-table accessed bits, on any Linux kernel: :class:`ReferencedSampler`.

Every kernel keeps an accessed ("young") bit in each page-table entry. Writing ``1`` to
``/proc/PID/clear_refs`` clears the bits of every anon and file mapping of a process (and the
pages' ``PG_referenced`` flags); ``Referenced:`` in ``/proc/PID/smaps`` (per mapping) or
``/proc/PID/smaps_rollup`` (the whole process) then counts the resident bytes touched since. So
the bytes referenced within ``t`` after a clear are the working set at window ``t``, and reading
them at a list of windows gives the cumulative age curve: bin ``(e[k-1], e[k]]`` holds the bytes
first seen referenced between the reads at ``e[k-1]`` and ``e[k]``, and the open-ended bin
``(e[-1], +inf)`` the resident bytes not referenced by the last read: idle for longer than the
longest age the source reports.

**One cycle** (on the sampler's own thread, never the runner's tick): list the group's processes
(``cgroup.procs`` of the group and every group below it), clear each one's bits, then at each read
edge ``e`` (``edges_ms``, measured from the start of the clear sweep) read every process's counters
again in the same order, so that each process's window is ``e`` give or take the difference of
two sweeps' speeds (the largest difference is kept as ``window_skew_ms``). When the last edge is
read the cycle's histogram is published and the next cycle starts ``cycle_s`` after this one
started (a cycle longer than the last edge leaves the bits alone in between, which halves the
interference with the kernel's own aging at the cost of fresher histograms; see
``docs/referenced-source.md``). Before the first cycle completes, the histogram of the edges read
so far is published: its open-ended bin starts at the last edge read, which is what is known.

**Anon and file apart** (``detail``): ``"smaps"`` (default) reads ``/proc/PID/smaps`` and splits
each mapping's ``Referenced`` by its own ``Anonymous`` share of ``Rss`` (exact for private anon
mappings and for file mappings without copy-on-write pages, proportional within a file mapping
that has some); ``"rollup"`` reads the one-block ``smaps_rollup`` and splits by the whole process's
anon share: cheaper text, coarser split. A process whose ``smaps`` exceeds
:data:`MAX_SMAPS_BYTES` is read through ``smaps_rollup`` instead. Shared memory (``shmem``, tmpfs,
``MAP_SHARED|MAP_ANONYMOUS``) and file pages are ``file``; shared pages are counted once per
process that maps them (the caller scales the histogram down to the group's LRU sizes).

**Processes that come and go.** Processes are listed again at every read: a process that joined
after the clear has all its resident pages referenced (it touched them since it started), which
puts them at ages up to the first edge it was seen at (young: the conservative side); a process
that exits during a cycle is dropped (its memory is gone); a process that vanishes between being
listed and being read (``ENOENT``, ``ESRCH``) is skipped for that read. An edge at which a
process was not read takes the value of its next read (younger, never older); after its last
read, its unreferenced bytes are put just above the last edge it was read at.

**Bounded cost per read.** At most ``max_processes`` processes per read (the first listed), each
read of a process at most :data:`MAX_SMAPS_BYTES`, and one sweep of reads at most
``read_deadline_s``: processes not read by then are left to the next read (the rule above). Each
breach is recorded in :attr:`ReferencedSampler.problem` (the backend puts it in the reading's
``source``, so the audit log's ``inputs.source.histogram_problem`` shows it on every tick) and
logged once per cycle at WARNING.

**Privilege.** Clearing another process's bits and reading its ``smaps`` need root with
``CAP_SYS_PTRACE`` for processes of other users (``smaps`` is read under ``PTRACE_MODE_READ``)
and ``CAP_DAC_OVERRIDE`` for their ``clear_refs`` (mode 0200, owned by the process's user). A
process that refuses both is left out (``EACCES``/``EPERM`` counted in :attr:`problem`); when no
process could be cleared at all the published histogram is ``None`` and :attr:`problem` says why.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

# The defaults live one layer down so that the simulator degrades its histograms with the same ones.
from wsrl.formats.referenced import DEFAULT_CYCLE_S, DEFAULT_EDGES
from wsrl.histogram import ALL_NODES, Histogram, validate_edges

log = logging.getLogger(__name__)

ReferencedDetail = Literal["smaps", "rollup"]

DEFAULT_MAX_PROCESSES = 4096
DEFAULT_READ_DEADLINE_S = 5.0
MAX_SMAPS_BYTES = 8 * 1024 * 1024
"""Most bytes of one process's ``smaps`` read (about 8,000 mappings); beyond, ``smaps_rollup``."""
MAX_ROLLUP_BYTES = 64 * 1024
PROC_ROOT = Path("/proc")
_GONE = (errno.ENOENT, errno.ESRCH)
_DENIED = (errno.EACCES, errno.EPERM)


@dataclass(frozen=True)
class ReferencedSettings:
    """When and what a :class:`ReferencedSampler` reads (see the module docstring).

    Args:
        edges_ms: the windows read after each clear, ms, strictly increasing; the last is the
            longest age reported (older bytes are in the open-ended bin).
        cycle_s: time from one clear to the next, s (at least the last edge).
        detail: ``"smaps"`` (per-mapping anon/file split) or ``"rollup"`` (per process).
        max_processes: most processes read per sweep.
        read_deadline_s: longest one sweep of reads (or the clear sweep) may take, s.

    """

    edges_ms: tuple[int, ...] = DEFAULT_EDGES
    cycle_s: float = DEFAULT_CYCLE_S
    detail: ReferencedDetail = "smaps"
    max_processes: int = DEFAULT_MAX_PROCESSES
    read_deadline_s: float = DEFAULT_READ_DEADLINE_S

    def __post_init__(self) -> None:
        edges = validate_edges(self.edges_ms)
        if not edges or edges[0] <= 0:
            raise ValueError("referenced edges_ms: needs at least one edge, all above 0 ms")
        object.__setattr__(self, "edges_ms", edges)
        if not self.cycle_s * 1000 >= edges[-1]:
            raise ValueError(
                f"referenced cycle_s={self.cycle_s:g}: must be at least the last edge "
                f"({edges[-1] / 1000:g} s)"
            )
        if self.detail not in ("smaps", "rollup"):
            raise ValueError(f"referenced detail={self.detail!r}: choose 'smaps' or 'rollup'")
        if self.max_processes < 1:
            raise ValueError(f"referenced max_processes={self.max_processes}: must be at least 1")
        if not self.read_deadline_s > 0:
            raise ValueError(f"referenced read_deadline_s={self.read_deadline_s}: must be above 0")


@dataclass
class ProcessCounts:
    """One process's bytes at one read: referenced anon and file, resident anon and file."""

    ref_anon: int = 0
    ref_file: int = 0
    rss_anon: int = 0
    rss_file: int = 0

    def add_block(self, rss_kib: int, anon_kib: int, ref_kib: int) -> None:
        """Add one mapping (or a rollup): its ``Referenced`` split by its anon share of ``Rss``."""
        if rss_kib <= 0:
            return
        anon_kib = min(anon_kib, rss_kib)
        ref_kib = min(ref_kib, rss_kib)
        ref_anon = ref_kib * anon_kib // rss_kib
        self.ref_anon += ref_anon * 1024
        self.ref_file += (ref_kib - ref_anon) * 1024
        self.rss_anon += anon_kib * 1024
        self.rss_file += (rss_kib - anon_kib) * 1024


def parse_smaps(data: bytes) -> ProcessCounts:
    """The counts of an ``smaps`` or ``smaps_rollup`` text (kB fields ``Rss``, ``Anonymous``, ``Referenced``).

    Each mapping (a header line is any line whose first field is not ``Key:``) is split on its own;
    a rollup is one block.
    """
    counts = ProcessCounts()
    rss = anon = ref = 0
    for line in data.split(b"\n"):
        key, sep, rest = line.partition(b":")
        if not sep or b" " in key:  # a mapping's header line ("7f..-7f.. rw-p ...") or blank
            counts.add_block(rss, anon, ref)
            rss = anon = ref = 0
            continue
        if key == b"Rss" or key == b"Anonymous" or key == b"Referenced":
            fields = rest.split()
            value = int(fields[0]) if fields and fields[0].isdigit() else 0
            if key == b"Rss":
                rss = value
            elif key == b"Anonymous":
                anon = value
            else:
                ref = value
    counts.add_block(rss, anon, ref)
    return counts


@dataclass
class _Sweep:
    """What one sweep (the clear, or one edge's reads) did."""

    done: dict[int, float] = field(default_factory=dict)  # pid -> monotonic time of its clear/read
    listed: set[int] = field(default_factory=set)  # the group's processes when the sweep began
    gone: int = 0
    denied: int = 0
    oversized: int = 0
    left_over: int = 0  # past the deadline or the process cap
    seconds: float = 0.0


@dataclass(frozen=True)
class SampledHistogram:
    """A published histogram, when its cycle started and completed (wall ms), and whether it is whole."""

    histogram: Histogram | None
    started_ms: int
    completed_ms: int
    complete: bool


class ReferencedSampler:
    """Clears and reads accessed bits for one group's processes on a background thread.

    Args:
        guest: the guest's name (histograms, errors, thread name).
        list_pids: the group's processes now (called at every sweep; may raise OSError).
        settings: edges, cycle, detail and caps.
        proc_root: ``/proc`` (tests give a crafted tree).
        wall_clock: wall time in s (histogram stamps).
        monotonic: monotonic time in s (schedule, deadlines).

    """

    def __init__(
        self,
        guest: str,
        list_pids: Callable[[], Sequence[int]],
        settings: ReferencedSettings | None = None,
        *,
        proc_root: str | Path = PROC_ROOT,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.guest = guest
        self.list_pids = list_pids
        self.settings = settings or ReferencedSettings()
        self.proc_root = Path(proc_root)
        self._wall = wall_clock
        self._mono = monotonic
        self._lock = threading.Lock()
        self._latest: SampledHistogram | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.problem: str | None = None
        """Why the latest cycle's histogram is partial, missing or cost more than allowed (else None)."""
        self.cycles = 0
        """Completed cycles."""
        self.last_cycle_cost_s: dict[str, float] = {}
        """The latest completed cycle's thread CPU and wall seconds (``clear_cpu_s``, ``read_cpu_s``, ...)."""

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the sampling thread (no-op when it runs)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"wsrl-referenced-{self.guest}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread (it ends at its next wait, or after the process it is reading)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    @property
    def running(self) -> bool:
        """Whether the sampling thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def latest(self) -> SampledHistogram | None:
        """The latest published histogram (a completed cycle's, or the first cycle's so far)."""
        with self._lock:
            return self._latest

    def _run(self) -> None:
        while not self._stop.is_set():
            started = self._mono()
            try:
                self.run_cycle()
            except Exception as exc:  # never let the thread die silently: say why and retry
                self.problem = f"referenced sampler failed: {type(exc).__name__}: {exc}"
                log.warning("guest %s: %s", self.guest, self.problem)
            wait_s = started + self.settings.cycle_s - self._mono()
            if self._stop.wait(max(wait_s, 0.05)):
                return

    # -- one cycle ----------------------------------------------------------------------------------

    def run_cycle(self) -> SampledHistogram | None:
        """Clear, read at every edge, publish; returns what was published last (None when stopped)."""
        settings = self.settings
        cpu0 = time.thread_time()
        started_ms = int(self._wall() * 1000)
        clear = self._sweep(self._clear_one)
        clear_cpu_s = time.thread_time() - cpu0
        problems = self._sweep_problems("clear", clear)
        if not clear.done:
            why = "no process could be cleared"
            if clear.denied:
                why += (
                    f" ({clear.denied} refused: clearing and reading other users' processes needs "
                    "root with CAP_SYS_PTRACE and CAP_DAC_OVERRIDE)"
                )
            self._publish(None, started_ms, complete=True, problems=[why, *problems])
            return self.latest()
        t0 = min(clear.done.values())
        reads: list[dict[int, ProcessCounts]] = []
        skew_ms = 0.0
        read_cpu_s = 0.0
        result: SampledHistogram | None = None
        for k, edge_ms in enumerate(settings.edges_ms):
            if self._stop.wait(max(0.0, t0 + edge_ms / 1000 - self._mono())):
                return None
            counts: dict[int, ProcessCounts] = {}
            cpu1 = time.thread_time()
            sweep = self._sweep(lambda pid, c=counts: self._read_one(pid, c))  # type: ignore[misc]
            read_cpu_s += time.thread_time() - cpu1
            problems += self._sweep_problems(f"read at {edge_ms / 1000:g} s", sweep)
            for pid, read_at in sweep.done.items():
                if pid in clear.done:
                    skew_ms = max(skew_ms, abs((read_at - clear.done[pid]) * 1000 - edge_ms))
            reads.append(counts)
            last = k == len(settings.edges_ms) - 1
            if last or self.cycles == 0:
                histogram = self.histogram_of(reads, keep=sweep.listed)
                histogram.meta["window_skew_ms"] = str(round(skew_ms))
                self._publish(histogram, started_ms, complete=last, problems=problems)
                result = self.latest()
        self.cycles += 1
        self.last_cycle_cost_s = {
            "clear_cpu_s": clear_cpu_s,
            "clear_wall_s": clear.seconds,
            "read_cpu_s": read_cpu_s,
            "reads": float(len(reads)),
        }
        return result

    def _publish(
        self, histogram: Histogram | None, started_ms: int, *, complete: bool, problems: list[str]
    ) -> None:
        problem = "; ".join(problems) if problems else None
        if problem is not None and complete and problem != self.problem:
            log.warning("guest %s: referenced source: %s", self.guest, problem)
        with self._lock:
            self.problem = problem
            self._latest = SampledHistogram(histogram, started_ms, int(self._wall() * 1000), complete)

    def _sweep(self, one: Callable[[int], None]) -> _Sweep:
        """Call ``one(pid)`` for the group's processes, within the process cap and the deadline."""
        sweep = _Sweep()
        begin = self._mono()
        try:
            pids = list(self.list_pids())
        except OSError as exc:
            raise RuntimeError(f"cannot list the group's processes: {exc}") from exc
        sweep.listed = set(pids)
        cap = self.settings.max_processes
        if len(pids) > cap:
            sweep.left_over += len(pids) - cap
            pids = pids[:cap]
        deadline = begin + self.settings.read_deadline_s
        for i, pid in enumerate(pids):
            if self._stop.is_set():
                break
            if self._mono() > deadline:
                sweep.left_over += len(pids) - i
                break
            try:
                one(pid)
                sweep.done[pid] = self._mono()
            except _OversizedError:
                sweep.oversized += 1
                sweep.done[pid] = self._mono()
            except OSError as exc:
                if exc.errno in _GONE:
                    sweep.gone += 1
                    sweep.listed.discard(pid)
                elif exc.errno in _DENIED:
                    sweep.denied += 1
                else:
                    raise
        sweep.seconds = self._mono() - begin
        return sweep

    def _sweep_problems(self, what: str, sweep: _Sweep) -> list[str]:
        found = []
        if sweep.left_over:
            found.append(
                f"{what}: {sweep.left_over} processes not read (cost cap: at most "
                f"{self.settings.max_processes} processes and {self.settings.read_deadline_s:g} s per read)"
            )
        if sweep.denied:
            found.append(f"{what}: {sweep.denied} processes refused access (EACCES/EPERM)")
        if sweep.oversized:
            found.append(
                f"{what}: {sweep.oversized} processes with smaps over {MAX_SMAPS_BYTES} bytes read as rollups"
            )
        return found

    def _clear_one(self, pid: int) -> None:
        fd = os.open(self.proc_root / str(pid) / "clear_refs", os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            os.write(fd, b"1")
        finally:
            os.close(fd)

    def _read_one(self, pid: int, counts: dict[int, ProcessCounts]) -> None:
        base = self.proc_root / str(pid)
        if self.settings.detail == "smaps":
            data = _read_capped(base / "smaps", MAX_SMAPS_BYTES)
            if data is not None:
                counts[pid] = parse_smaps(data)
                return
        data = _read_capped(base / "smaps_rollup", MAX_ROLLUP_BYTES)
        if data is None:
            raise OSError(errno.EFBIG, "smaps_rollup too large")
        counts[pid] = parse_smaps(data)
        if self.settings.detail == "smaps":
            raise _OversizedError

    # -- the histogram ------------------------------------------------------------------------------

    def histogram_of(
        self, reads: Sequence[dict[int, ProcessCounts]], keep: set[int] | None = None
    ) -> Histogram:
        """The age histogram of a cycle's reads so far (one dict per edge read, pid -> counts).

        Only the processes in ``keep`` count (those still in the group at the latest read: one that
        exited or left took its memory with it); ``None`` keeps every process read.

        Per process, the cumulative referenced bytes at each edge are its reading there, or at its
        next reading when it was not read at that edge, made non-decreasing and capped at its
        resident bytes at its last reading; bytes not referenced by its last reading go just above
        that edge (the open-ended bin when that is the last edge of the cycle).
        """
        edges = self.settings.edges_ms[: len(reads)]
        n = len(edges)
        rows = {"anon": [0] * (n + 1), "file": [0] * (n + 1)}
        pids: set[int] = set().union(*(r.keys() for r in reads)) if reads else set()
        for pid in pids if keep is None else pids & keep:
            seen = [k for k in range(n) if pid in reads[k]]
            last = seen[-1]
            final = reads[last][pid]
            for type_name, resident in (("anon", final.rss_anon), ("file", final.rss_file)):
                row = rows[type_name]
                previous = 0
                for k in range(last + 1):
                    nxt = next(j for j in seen if j >= k)
                    c = reads[nxt][pid]
                    value = c.ref_anon if type_name == "anon" else c.ref_file
                    cumulative = min(max(previous, value), resident)
                    row[k] += cumulative - previous
                    previous = cumulative
                row[last + 1] += resident - previous
        return Histogram(self.guest, ALL_NODES, edges, rows, {"source": "referenced"})


class _OversizedError(Exception):
    """A process's ``smaps`` exceeded its cap; it was read through ``smaps_rollup``."""


def _read_capped(path: Path, cap_bytes: int) -> bytes | None:
    """At most ``cap_bytes`` of a proc file; ``None`` when it is longer. OSError as raised."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{path}: not a regular file")
        chunks: list[bytes] = []
        total = 0
        while total <= cap_bytes:
            chunk = os.read(fd, 256 * 1024)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            total += len(chunk)
        return None
    finally:
        os.close(fd)


def cgroup_pids(group: Path, read: Callable[[Path], bytes], max_groups: int = 16_384) -> list[int]:
    """The processes of ``group`` and every group below it (``cgroup.procs``), in listing order.

    Subgroups are walked breadth first without following symlinks, at most ``max_groups`` of them;
    a subgroup removed during the walk is skipped.
    """
    pids: list[int] = []
    seen: set[int] = set()
    queue = [group]
    visited = 0
    while queue and visited < max_groups:
        directory = queue.pop(0)
        visited += 1
        try:
            data = read(directory / "cgroup.procs")
        except FileNotFoundError:
            if directory == group:
                raise
            continue
        for token in data.split():
            if token.isdigit():
                pid = int(token)
                if pid not in seen:
                    seen.add(pid)
                    pids.append(pid)
        try:
            with os.scandir(directory) as entries:
                queue.extend(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            continue
    return pids
