"""A workload process with known page populations, for measuring the real kernel.

Each population is a set of pages of one type, touched at a known rate:

- ``anon``: a private anonymous mapping (``MAP_PRIVATE | MAP_ANONYMOUS``, transparent huge pages
  off so that every page is reclaimed and refaulted on its own). A touch *writes* one byte of the
  page, so an evicted page really went to swap and really comes back from it.
- ``file``: a file on a real disk filesystem (never tmpfs, whose pages are swap-backed), mapped
  read-only. A touch reads one byte of the page. Its page cache is charged to the memcg of the
  process that reads it first, so the fill phase drops the file's cached pages and reads it back.

Every mapping is ``madvise(MADV_RANDOM)``: no fault-around and no swap or file readahead, so one
fault brings one page, as the simulator's per-page model assumes.

Patterns, both at the aggregate rate of ``pages / access_interval_s`` touches per second:

- ``random``: each touch picks a page uniformly at random (the independent reference model: each
  page is touched as a Poisson process of rate ``1 / access_interval_s``);
- ``loop``: the touches sweep the pages in order, cyclically, each page once per interval (the
  case where LRU thrashes once the population does not fit).

Phases: *fill* (every page written, or read, once), *warm-up* (the pattern runs, not measured, so
the LRU lists order the pages by their use), *measured* (the pattern runs; the result reports it).
Page contents are incompressible (a random page repeated), so zram swap stores full pages.

Phase lengths default to :func:`steady_state_timing` of the populations (the one rule the harness
uses too): a warm-up of :data:`WARMUP_INTERVALS` times the longest access interval, so that nearly
every page has been touched by the pattern since the fill and the kernel's LRU has settled, and a
window of at least :data:`MIN_WINDOW_S` seconds and :data:`MIN_WINDOW_TOUCHES` touches of every
population, the slowest included.

Run standalone: ``python -m wsrl.lab.workload --spec JSON`` prints one JSON line, the
result, on stdout (progress on stderr). With ``--control`` (used by
:mod:`wsrl.lab.ladder`) every event goes to stdout as a JSON line, the process waits for
a ``go`` line on stdin before it allocates, and for stdin to close before it exits, so that the
harness can set the memory limit first and read the counters while the memory is still held.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import mmap
import os
import re
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from wsrl.errors import WsrlError
from wsrl.units import MIB

HOST_PAGE_BYTES = mmap.PAGESIZE
"""The running kernel's page size: what the workload maps, touches and counts in (the model's unit
is :data:`wsrl.units.PAGE_BYTES`; the two agree on x86-64 and 4 KiB arm64 kernels)."""
POPULATION_TYPES = ("anon", "file")
PATTERNS = ("random", "loop")
WARMUP_INTERVALS = 2.0
"""Default warm-up, in access intervals of the slowest population: after it, all but
``exp(-2)`` (14 %) of that population's pages have been touched by the pattern since the fill."""
MIN_WINDOW_S = 10.0
"""Default measured window: at least this long ..."""
MIN_WINDOW_TOUCHES = 100
"""... and long enough for this many touches of every population's pages in aggregate."""
DEFAULT_TICK_S = 0.005
# Fill and file-creation chunk: small enough that reclaim keeps pace with a bulk fill.
CHUNK_BYTES = 4 * MIB
# How often the measured phase samples each population's residency (mincore).
RESIDENCY_SAMPLE_S = 0.5
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Filesystems whose pages are not ordinary page cache backed by storage.
_NOT_DISK_FS = frozenset({"tmpfs", "ramfs", "devtmpfs", "hugetlbfs", "proc", "sysfs", "overlay"})


class WorkloadSpecError(WsrlError):
    """A workload specification is malformed or asks for something impossible."""


@dataclass(frozen=True)
class PopulationSpec:
    """One population of pages with a common type, access interval and pattern."""

    name: str
    type: Literal["anon", "file"]
    size_bytes: int
    access_interval_s: float
    pattern: Literal["random", "loop"] = "random"

    @property
    def pages(self) -> int:
        """Number of pages (the size rounded up to whole pages)."""
        return -(-self.size_bytes // HOST_PAGE_BYTES)

    @property
    def rate_pages_per_s(self) -> float:
        """Aggregate touch rate over the whole population, touches per second."""
        return self.pages / self.access_interval_s


def steady_state_timing(populations: Sequence[PopulationSpec]) -> tuple[float, float]:
    """Default ``(warmup_s, duration_s)`` for these populations: long enough for a steady state.

    The warm-up is :data:`WARMUP_INTERVALS` times the longest access interval (random or loop: a
    loop then sweeps twice); the window is the longer of :data:`MIN_WINDOW_S` and the time every
    population, the slowest included, takes for :data:`MIN_WINDOW_TOUCHES` touches in aggregate.
    """
    if not populations:
        raise WorkloadSpecError("steady_state_timing: no populations")
    warmup_s = WARMUP_INTERVALS * max(p.access_interval_s for p in populations)
    duration_s = max(MIN_WINDOW_S, *(MIN_WINDOW_TOUCHES / p.rate_pages_per_s for p in populations))
    return warmup_s, duration_s


@dataclass(frozen=True)
class WorkloadSpec:
    """The populations and the phase lengths of one workload run.

    :func:`steady_state_timing` gives the default phase lengths (:func:`parse_spec` uses it where
    the spec names none, and so does the harness).
    """

    populations: tuple[PopulationSpec, ...]
    warmup_s: float
    duration_s: float
    file_dir: str | None = None
    seed: int = 0
    tick_s: float = DEFAULT_TICK_S

    def to_json(self) -> dict[str, Any]:
        """The spec as a JSON-ready dict that :func:`parse_spec` reads back."""
        doc = asdict(self)
        doc["populations"] = [asdict(p) for p in self.populations]
        return doc

    @property
    def total_bytes(self) -> int:
        """Bytes of all populations, in whole pages."""
        return sum(p.pages for p in self.populations) * HOST_PAGE_BYTES

    def bytes_of(self, kind: str) -> int:
        """Bytes of the populations of one type (``anon`` or ``file``), in whole pages."""
        return sum(p.pages for p in self.populations if p.type == kind) * HOST_PAGE_BYTES


def _number(obj: dict[str, Any], key: str, where: str, default: float | None = None) -> float:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise WorkloadSpecError(f"{where}: {key!r} must be a finite number, got {value!r}")
    return float(value)


def parse_population(obj: Any, where: str) -> PopulationSpec:
    """Validate one population object of a spec."""
    if not isinstance(obj, dict):
        raise WorkloadSpecError(f"{where}: a population must be a JSON object, got {type(obj).__name__}")
    unknown = set(obj) - {"name", "type", "size_bytes", "access_interval_s", "pattern"}
    if unknown:
        raise WorkloadSpecError(f"{where}: unknown population field(s): {', '.join(sorted(unknown))}")
    name = obj.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise WorkloadSpecError(f"{where}: 'name' must be 1-64 characters of [A-Za-z0-9_-], got {name!r}")
    kind = obj.get("type")
    if kind not in POPULATION_TYPES:
        raise WorkloadSpecError(f"{where}: 'type' must be one of {POPULATION_TYPES}, got {kind!r}")
    size = obj.get("size_bytes")
    if isinstance(size, bool) or not isinstance(size, int) or size < HOST_PAGE_BYTES:
        raise WorkloadSpecError(
            f"{where}: 'size_bytes' must be an integer of at least one page ({HOST_PAGE_BYTES}), got {size!r}"
        )
    interval_s = _number(obj, "access_interval_s", where)
    if interval_s <= 0:
        raise WorkloadSpecError(f"{where}: 'access_interval_s' must be > 0, got {interval_s}")
    pattern = obj.get("pattern", "random")
    if pattern not in PATTERNS:
        raise WorkloadSpecError(f"{where}: 'pattern' must be one of {PATTERNS}, got {pattern!r}")
    return PopulationSpec(name, kind, size, interval_s, pattern)


def parse_spec(obj: Any) -> WorkloadSpec:
    """Validate a workload spec (a dict as loaded from JSON) and return it typed.

    Raises:
        WorkloadSpecError: a field is missing, unknown or out of range.

    """
    if not isinstance(obj, dict):
        raise WorkloadSpecError(f"spec: must be a JSON object, got {type(obj).__name__}")
    unknown = set(obj) - {"populations", "warmup_s", "duration_s", "file_dir", "seed", "tick_s"}
    if unknown:
        raise WorkloadSpecError(f"spec: unknown field(s): {', '.join(sorted(unknown))}")
    raw = obj.get("populations")
    if not isinstance(raw, list) or not raw:
        raise WorkloadSpecError("spec: 'populations' must be a non-empty list")
    pops = tuple(parse_population(p, f"spec: populations[{i}]") for i, p in enumerate(raw))
    names = [p.name for p in pops]
    if len(set(names)) != len(names):
        raise WorkloadSpecError(f"spec: population names must be unique, got {names}")
    default_warmup_s, default_duration_s = steady_state_timing(pops)
    warmup_s = _number(obj, "warmup_s", "spec", default_warmup_s)
    duration_s = _number(obj, "duration_s", "spec", default_duration_s)
    tick_s = _number(obj, "tick_s", "spec", DEFAULT_TICK_S)
    if warmup_s < 0 or duration_s <= 0 or not 0 < tick_s <= 1:
        raise WorkloadSpecError(
            "spec: need warmup_s >= 0, duration_s > 0, 0 < tick_s <= 1; "
            f"got {warmup_s}, {duration_s}, {tick_s}"
        )
    seed = obj.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise WorkloadSpecError(f"spec: 'seed' must be a non-negative integer, got {seed!r}")
    file_dir = obj.get("file_dir")
    if file_dir is not None and not isinstance(file_dir, str):
        raise WorkloadSpecError(f"spec: 'file_dir' must be a path string, got {file_dir!r}")
    if any(p.type == "file" for p in pops):
        if file_dir is None:
            raise WorkloadSpecError(
                "spec: a 'file' population needs 'file_dir' (a directory on a disk filesystem)"
            )
        check_disk_dir(Path(file_dir))
    return WorkloadSpec(pops, warmup_s, duration_s, file_dir, seed, tick_s)


def filesystem_type(path: Path) -> str:
    """The type of the filesystem that holds ``path`` (from ``/proc/self/mountinfo``)."""
    target = os.path.realpath(path)
    best, best_type = "", "unknown"
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            mount_point = left.split()[4].replace("\\040", " ")
            inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) >= len(best):
                best, best_type = mount_point, right.split()[0]
    return best_type


def check_disk_dir(path: Path) -> None:
    """Fail unless ``path`` is an existing directory on a disk-backed filesystem (not tmpfs)."""
    if not path.is_dir():
        raise WorkloadSpecError(f"spec: file_dir {str(path)!r} is not an existing directory")
    fs_type = filesystem_type(path)
    if fs_type in _NOT_DISK_FS:
        raise WorkloadSpecError(
            f"spec: file_dir {str(path)!r} is on {fs_type}, not a disk filesystem: its pages would not be "
            "file page cache backed by storage"
        )


def file_path(spec: WorkloadSpec, pop: PopulationSpec) -> Path:
    """Where the backing file of a ``file`` population lives."""
    if spec.file_dir is None:
        raise WorkloadSpecError(f"population {pop.name!r}: a file population needs 'file_dir'")
    return Path(spec.file_dir) / f"wsrl-fidelity-{pop.name}.dat"


def random_page(seed: int) -> np.ndarray:
    """One page of incompressible bytes, the content every page of a population repeats."""
    return np.random.default_rng(seed).integers(0, 256, HOST_PAGE_BYTES, dtype=np.uint8)


def ensure_file(path: Path, size_bytes: int, seed: int = 0) -> None:
    """Create ``path`` with ``size_bytes`` (whole pages) of incompressible content, on disk.

    A file of the right size is kept as it is. The data is fsynced, so its page cache is clean and
    :func:`drop_file_cache` can evict it.
    """
    pages = -(-size_bytes // HOST_PAGE_BYTES)
    want = pages * HOST_PAGE_BYTES
    if path.exists() and path.stat().st_size == want:
        return
    chunk = np.tile(random_page(seed), CHUNK_BYTES // HOST_PAGE_BYTES).tobytes()
    with open(path, "wb") as f:
        left = want
        while left > 0:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n
        f.flush()
        os.fsync(f.fileno())


def drop_file_cache(path: Path) -> None:
    """Evict the (clean) cached pages of one file, whoever they are charged to."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
_libc.mincore.restype = ctypes.c_int


class _LivePopulation:
    """A mapped population and its touch cursor."""

    def __init__(self, spec: WorkloadSpec, pop: PopulationSpec, index: int) -> None:
        self.pop = pop
        self.pages = pop.pages
        self.rate_pages_per_s = pop.rate_pages_per_s
        self.rng = np.random.default_rng([spec.seed, index])
        self.content = random_page(spec.seed * 1000 + index)
        size = self.pages * HOST_PAGE_BYTES
        self.path: Path | None = None
        if pop.type == "anon":
            self.mm = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
            self.mm.madvise(mmap.MADV_NOHUGEPAGE)
        else:
            self.path = file_path(spec, pop)
            ensure_file(self.path, size, spec.seed * 1000 + index)
            fd = os.open(self.path, os.O_RDONLY)
            try:
                self.mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
            finally:
                os.close(fd)
        self.mm.madvise(mmap.MADV_RANDOM)
        self.arr = np.frombuffer(self.mm, dtype=np.uint8)
        self.cursor = 0
        self.stamp = 1
        self.sink = 0
        self.seen = np.zeros(self.pages, dtype=bool)
        self.residency_vec = np.zeros(self.pages, dtype=np.uint8)
        self.resident_samples: list[float] = []

    def sample_residency(self) -> None:
        """Record the fraction of the population's pages in memory now (``mincore``).

        For anon that is pages not swapped out; for a file, pages in the page cache.
        """
        rc = _libc.mincore(
            ctypes.c_void_p(self.arr.ctypes.data),
            ctypes.c_size_t(self.pages * HOST_PAGE_BYTES),
            self.residency_vec.ctypes.data_as(ctypes.c_void_p),
        )
        if rc != 0:
            raise OSError(ctypes.get_errno(), f"mincore: {os.strerror(ctypes.get_errno())}")
        self.resident_samples.append(float(np.count_nonzero(self.residency_vec & 1)) / self.pages)

    def fill(self) -> None:
        """Write (anon) or read into the page cache (file) every page once."""
        if self.path is None:
            per_chunk = CHUNK_BYTES // HOST_PAGE_BYTES
            for first in range(0, self.pages, per_chunk):
                last = min(first + per_chunk, self.pages)
                view = self.arr[first * HOST_PAGE_BYTES : last * HOST_PAGE_BYTES].reshape(-1, HOST_PAGE_BYTES)
                view[:] = self.content
            return
        # Drop whatever is cached (maybe charged to another memcg) and read it back, charged here.
        drop_file_cache(self.path)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            offset = 0
            while True:
                data = os.pread(fd, CHUNK_BYTES, offset)
                if not data:
                    break
                offset += len(data)
        finally:
            os.close(fd)

    def touch(self, n: int, record: bool) -> None:
        """Touch ``n`` pages with the population's pattern."""
        if self.pop.pattern == "random":
            idx = self.rng.integers(0, self.pages, n)
        else:
            idx = (self.cursor + np.arange(n, dtype=np.int64)) % self.pages
            self.cursor = int((self.cursor + n) % self.pages)
        offsets = idx * HOST_PAGE_BYTES
        if self.path is None:
            self.arr[offsets] = self.stamp
            self.stamp = self.stamp % 255 + 1
        else:
            self.sink ^= int(self.arr[offsets].sum())
        if record:
            self.seen[idx] = True

    def close(self) -> None:
        """Unmap (the numpy view must go first)."""
        del self.arr
        self.mm.close()


@dataclass
class _PhaseResult:
    elapsed_s: float
    touches: list[int]
    busy_s: float
    majflt: int
    minflt: int
    cpu_s: float


def _run_phase(
    lives: Sequence[_LivePopulation], duration_s: float, tick_s: float, record: bool
) -> _PhaseResult:
    """Touch every population at its rate for ``duration_s``, catching up after a stall."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    done = [0] * len(lives)
    busy_s = 0.0
    start = time.monotonic()
    next_sample_s = RESIDENCY_SAMPLE_S / 2
    while True:
        now = time.monotonic()
        elapsed = now - start
        if elapsed >= duration_s:
            break
        if record and elapsed >= next_sample_s:
            for live in lives:
                live.sample_residency()
            next_sample_s += RESIDENCY_SAMPLE_S
            now = time.monotonic()
        for i, live in enumerate(lives):
            target = int(live.rate_pages_per_s * elapsed)
            if target > done[i]:
                live.touch(target - done[i], record)
                done[i] = target
        after_touch = time.monotonic()
        busy_s += after_touch - now
        pause = tick_s - (after_touch - now)
        if pause > 0:
            time.sleep(min(pause, max(0.0, duration_s - (after_touch - start))))
    # Top up to exactly the phase's length, so the touches match rate * duration.
    for i, live in enumerate(lives):
        target = int(live.rate_pages_per_s * duration_s)
        if target > done[i]:
            live.touch(target - done[i], record)
            done[i] = target
    elapsed = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return _PhaseResult(
        elapsed, done, busy_s, after.ru_majflt - before.ru_majflt, after.ru_minflt - before.ru_minflt, cpu_s
    )


class _Emitter:
    """Writes events: all to stdout under control, else progress to stderr and the result to stdout."""

    def __init__(self, control: bool) -> None:
        self.control = control

    def __call__(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields}, sort_keys=True)
        stream = sys.stdout if self.control or event == "result" else sys.stderr
        print(line, file=stream, flush=True)


def run(spec: WorkloadSpec, control: bool = False) -> dict[str, Any]:
    """Allocate, fill, warm up and measure; return (and emit) the result.

    Args:
        spec: the populations and phase lengths.
        control: wait for ``go`` on stdin before allocating and for stdin to close at the end.

    Returns:
        The result document also printed as the ``result`` event.

    """
    emit = _Emitter(control)
    emit("ready", pid=os.getpid(), page_size_bytes=HOST_PAGE_BYTES)
    if control:
        line = sys.stdin.readline()
        if line.strip() != "go":
            raise WorkloadSpecError(f"control: expected 'go' on stdin, got {line.strip()!r}")
    fill_start = time.monotonic()
    lives = [_LivePopulation(spec, pop, i) for i, pop in enumerate(spec.populations)]
    for live in lives:
        live.fill()
    fill_s = time.monotonic() - fill_start
    emit("filled", fill_s=fill_s)
    warm = _run_phase(lives, spec.warmup_s, spec.tick_s, record=False)
    emit("measure_start", warmup_elapsed_s=warm.elapsed_s)
    measured = _run_phase(lives, spec.duration_s, spec.tick_s, record=True)
    populations = []
    for live, touches in zip(lives, measured.touches, strict=True):
        populations.append(
            {
                "name": live.pop.name,
                "type": live.pop.type,
                "pattern": live.pop.pattern,
                "pages": live.pages,
                "target_rate_pages_per_s": live.rate_pages_per_s,
                "touches": touches,
                "achieved_rate_pages_per_s": touches / measured.elapsed_s,
                "distinct_pages_touched": int(live.seen.sum()),
                "resident_fraction_mean": float(np.mean(live.resident_samples))
                if live.resident_samples
                else None,
                "resident_fraction_samples": len(live.resident_samples),
            }
        )
    result = {
        "pid": os.getpid(),
        "fill_s": fill_s,
        "warmup_s": warm.elapsed_s,
        "measured_s": measured.elapsed_s,
        "busy_s": measured.busy_s,
        "busy_fraction": measured.busy_s / measured.elapsed_s,
        "cpu_s": measured.cpu_s,
        "majflt": measured.majflt,
        "minflt": measured.minflt,
        "warmup_majflt": warm.majflt,
        "populations": populations,
    }
    emit("result", **result)
    if control:
        sys.stdin.read()
    for live in lives:
        live.close()
    return result


def load_spec_argument(text: str) -> WorkloadSpec:
    """Parse ``--spec``: JSON text, or ``@PATH`` of a JSON file."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise WorkloadSpecError(f"spec: cannot read {text[1:]!r}: {exc.strerror}") from exc
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkloadSpecError(f"spec: not valid JSON: {exc}") from exc
    return parse_spec(obj)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m wsrl.lab.workload --spec JSON [--control]``."""
    parser = argparse.ArgumentParser(prog="python -m wsrl.lab.workload", description=__doc__.split("\n")[0])
    parser.add_argument("--spec", required=True, help="workload spec as JSON text, or @PATH of a JSON file")
    parser.add_argument("--control", action="store_true", help="harness protocol on stdin/stdout")
    args = parser.parse_args(argv)
    try:
        run(load_spec_argument(args.spec), control=args.control)
    except WsrlError as exc:
        print(f"wsrl: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
