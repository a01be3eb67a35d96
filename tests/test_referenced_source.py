"""The ``referenced`` histogram source (page-table accessed bits), against ground truth on this kernel.

Real-kernel tests (marker ``cgroup``; root, the v1 memory controller, Debian's ``redis-server``
from ``scripts/testbed.sh``; they fail, never skip, when one is missing):

* a program with a known access pattern (some memory read every 0.25 s, some swept once per 8 s,
  the rest never after loading) in a real memcg: every bin within 10 % of its known size, on a
  short cycle (edges 1, 4, 9 s) so the test takes about 15 s;
* the same kind of program under the production runner with the default schedule (edges up to
  120 s): the audit's ``cold_120s_bytes`` is the never-touched memory, within 10 % (about 2 min);
* a real Redis whose hot key range is read in a loop: the cold bytes reported are at least 80 % of
  the cold keys' share of its RSS.

The rest runs on crafted ``/proc`` trees: the per-mapping anon/file split, processes that vanish
or join during a cycle, the cost caps and the refusals, ``auto``'s choice, and the config keys.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cgroup_fixtures import TEST_PARENT, v1_memcg
from test_runner_support import cgroup_config

from wsrl.backends.cgroup import CgroupBackend, choose_histogram_source
from wsrl.backends.referenced import (
    ProcessCounts,
    ReferencedSampler,
    ReferencedSettings,
    cgroup_pids,
    parse_smaps,
)
from wsrl.errors import ConfigError
from wsrl.inputs.live import GuestReading
from wsrl.lab.kernel import proc_status_bytes
from wsrl.runner.config import runner_config_from_dict
from wsrl.runner.daemon import Runner
from wsrl.units import MIB

pytestmark = pytest.mark.timeout(300)

# ------------------------------------------------------------------------------------------------
# A program with a known access pattern.

_PATTERN_SCRIPT = r"""
import mmap, sys, time
PAGE = mmap.PAGESIZE
hot_mib, tick_s, warm_mib, warm_period_s, cold_mib = (
    int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))
def region(mib):
    m = mmap.mmap(-1, max(mib, 1) << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_NOHUGEPAGE)  # 4 KiB accessed bits: a 2 MiB page would be one bit
    for off in range(0, len(m), PAGE):
        m[off] = 1
    return m
hot, warm, cold = region(hot_mib), region(warm_mib), region(cold_mib)
chunks = max(1, round(warm_period_s / tick_s))
warm_pages = len(warm) // PAGE
print("ready", flush=True)
tick, start = 0, time.monotonic()
while True:  # every tick: read all of hot and the next 1/chunks of warm; cold is never read again
    s = 0
    for off in range(0, len(hot), PAGE):
        s += hot[off]
    c = tick % chunks
    for page in range(c * warm_pages // chunks, (c + 1) * warm_pages // chunks):
        s += warm[page * PAGE]
    tick += 1
    time.sleep(max(0.0, start + tick * tick_s - time.monotonic()))
"""


@contextlib.contextmanager
def known_pattern(
    group: Path, hot_mib: int, tick_s: float, warm_mib: int, warm_period_s: float, cold_mib: int
) -> Iterator[subprocess.Popen[bytes]]:
    """The pattern program, started inside ``group`` (it joins between fork and exec); killed after."""

    def join() -> None:
        with open(group / "cgroup.procs", "w") as f:
            f.write(str(os.getpid()))

    args = [str(hot_mib), str(tick_s), str(warm_mib), str(warm_period_s), str(cold_mib)]
    proc = subprocess.Popen(
        [sys.executable, "-c", _PATTERN_SCRIPT, *args], stdout=subprocess.PIPE, preexec_fn=join
    )
    try:
        assert proc.stdout is not None
        assert select.select([proc.stdout], [], [], 60)[0], "pattern program not ready in 60 s"
        assert proc.stdout.readline().strip() == b"ready"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def _one_cycle(name: str, group: Path, settings: ReferencedSettings) -> GuestReading:
    """A ``referenced`` backend on ``group``, read once its first cycle is complete; closed after."""
    backend = CgroupBackend(
        name, group.relative_to(TEST_PARENT.parent), histogram_source="referenced", referenced=settings
    )
    assert backend.histogram_source == "referenced" and backend.histogram_source_reason == "configured"
    backend.start(lambda reason: None)
    try:
        first = backend.read()  # before the first edge: the fallback, provisional
        assert first.histogram_provisional and first.source["histogram_fallback"] == "memory_stat", first
        assert first.histogram_horizon_ms == math.inf  # the LRU lists' two bins tell no idle age
        _wait_complete(backend, 30.0)
        reading = backend.read()
        assert not reading.histogram_provisional, reading.source
        # Older than the last window read: one open bin, whatever the age (the snapshot says so).
        assert reading.histogram_horizon_ms == settings.edges_ms[-1]
        assert reading.source["histogram_horizon_s"] == f"{settings.edges_ms[-1] / 1000:g}"  # audited
        return reading
    finally:
        backend.close()
        assert backend.sampler is not None and not backend.sampler.running


def _wait_complete(backend: CgroupBackend, timeout_s: float) -> None:
    assert backend.sampler is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        latest = backend.sampler.latest()
        if latest is not None and latest.complete:
            return
        time.sleep(0.2)
    raise AssertionError(f"no complete cycle within {timeout_s} s: {backend.sampler.problem}")


def _within(got: float, want: float, frac: float = 0.10) -> bool:
    return abs(got - want) <= frac * want


@pytest.mark.cgroup
def test_known_pattern_every_bin_within_ten_percent() -> None:
    """hot 48 MiB read every 0.25 s, warm 128 MiB swept once per 8 s, cold 192 MiB never read.

    Windows 1, 4 and 9 s after a clear: the bytes referenced within 1 s are hot + 1/8 of warm,
    within 4 s 4/8 of warm more... so the bins are (0, 1 s] 64, (1, 4 s] 48, (4, 9 s] 64 MiB and
    the open-ended bin the 192 cold MiB (plus the interpreter's own idle pages, a few MiB).
    """
    settings = ReferencedSettings(edges_ms=(1000, 4000, 9000), cycle_s=10.0)
    with v1_memcg("referenced") as group, known_pattern(group, 48, 0.25, 128, 8.0, 192):
        reading = _one_cycle("pattern", group, settings)
    histogram = reading.histogram
    assert histogram is not None and histogram.edges_ms == (1000, 4000, 9000)
    assert reading.source["histogram"] == "referenced" and "histogram_problem" not in reading.source
    anon = [b / MIB for b in histogram.type_bytes("anon")]
    expected = [48 + 128 / 8, 128 * 3 / 8, 128 * 4 / 8, 192]
    assert all(_within(got, want) for got, want in zip(anon, expected, strict=True)), (anon, expected)
    assert _within(histogram.cold_bytes(9000) / MIB, 192)  # the never-read memory is cold at 9 s
    assert histogram.total_bytes() <= reading.usage_bytes


@pytest.mark.cgroup
def test_runner_reports_the_cold_memory_at_120_s(tmp_path: Path) -> None:
    """``wsrl run``'s runner, defaults (``auto`` picks ``referenced`` here; edges up to 120 s): the
    audit's ``cold_120s_bytes`` is the never-read 160 MiB within 10 %, the warm memory (swept once
    per 30 s) is in the working set, and the start record and first log line say which source."""
    from wsrl.runner.command import start_line

    with v1_memcg("referenced-runner") as group, known_pattern(group, 32, 0.5, 96, 30.0, 160):
        config = cgroup_config(
            tmp_path, group, name="pattern", provisioned_gib=1.0, policy="static", safety={"floor_gib": 0.25}
        )
        assert config.guest[0].backend.histogram_source == "auto"  # type: ignore[union-attr]
        with Runner(config, mode="dry-run") as runner:
            line = start_line(config, "dry-run")
            runner.start()
            deadline = time.monotonic() + 150
            cold: list[int | None] = []
            while time.monotonic() < deadline:
                runner.tick()
                record = [r for r in _audit(tmp_path) if r["kind"] == "tick"][-1]
                inputs = record["guests"][0]["inputs"]
                cold.append(inputs["cold_120s_bytes"])
                if "histogram_age_s" in inputs["source"] and "histogram_partial" not in inputs["source"]:
                    break
                time.sleep(5.0)
            runner.shutdown()
    assert "pattern (cgroup): histogram referenced (auto: no memory.workingset.page_age" in line, line
    start = next(r for r in _audit(tmp_path) if r["kind"] == "start")
    assert start["guests"][0]["histogram_source"] == "referenced"
    assert inputs["source"]["histogram"] == "referenced", inputs
    assert all(c == 0 for c in cold[:-1]), cold  # nothing is known to be 120 s old before a cycle ends
    assert _within(inputs["cold_120s_bytes"] / MIB, 160), inputs
    assert inputs["working_set_bytes"] / MIB >= 32 + 96, inputs


def _audit(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------------
# A real Redis with a known hot key range.


class _Redis:
    """``redis-server`` on a unix socket in a memcg (no persistence), and a tiny RESP client."""

    def __init__(self, group: Path, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server not installed: run scripts/testbed.sh (make testbed)", pytrace=False)
        self.socket_path = directory / "redis.sock"

        def join() -> None:
            with open(group / "cgroup.procs", "w") as f:
                f.write(str(os.getpid()))

        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--unixsocket", str(self.socket_path), "--save", "", "--appendonly", "no",
             "--enable-debug-command", "yes", "--dir", str(directory), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=join,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self.socket_path.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError("redis-server did not open its socket")
            time.sleep(0.05)

    def connect(self) -> socket.socket:
        client = socket.socket(socket.AF_UNIX)
        client.connect(str(self.socket_path))
        return client

    def rss_bytes(self) -> int:
        return proc_status_bytes(self.proc.pid, "VmRSS")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


def _command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def _read_hot_keys(redis: _Redis, hot_keys: int, stop: threading.Event) -> None:
    """GET every hot key (``key:0`` .. ``key:<hot_keys - 1>``) in pipelined batches, until stopped."""
    with redis.connect() as client, client.makefile("rb") as replies:
        while not stop.is_set():
            for first in range(0, hot_keys, 1000):
                keys = range(first, min(first + 1000, hot_keys))
                client.sendall(b"".join(_command(b"GET", b"key:%d" % k) for k in keys))
                for _ in keys:
                    replies.readline()  # $<len>
                    replies.readline()  # the value
            stop.wait(0.1)


@pytest.mark.cgroup
def test_real_redis_cold_keys_are_reported_cold() -> None:
    """200,000 keys of 1,000 bytes; the first 20,000 are read in a loop, the rest never after loading.
    The bytes not referenced within 10 s must be at least 80 % of the cold keys' share of the RSS."""
    keys, hot_keys = 200_000, 20_000
    stop = threading.Event()
    with v1_memcg("referenced-redis") as group, tempfile.TemporaryDirectory(prefix="wsrl-redis-") as scratch:
        redis = _Redis(group, Path(scratch))
        try:
            with redis.connect() as client:
                client.sendall(_command(b"DEBUG", b"POPULATE", b"%d" % keys, b"key", b"1000"))
                client.settimeout(60)
                assert client.recv(64).startswith(b"+OK"), "DEBUG POPULATE failed"
            rss = redis.rss_bytes()
            reader = threading.Thread(target=_read_hot_keys, args=(redis, hot_keys, stop), daemon=True)
            reader.start()
            settings = ReferencedSettings(edges_ms=(1000, 5000, 10_000), cycle_s=11.0)
            try:
                reading = _one_cycle("redis", group, settings)
            finally:
                stop.set()
                reader.join(10)
        finally:
            redis.stop()
    histogram = reading.histogram
    assert histogram is not None
    cold_share = rss * (keys - hot_keys) / keys
    cold = histogram.cold_bytes(10_000)
    assert cold >= 0.8 * cold_share, (
        cold / MIB,
        cold_share / MIB,
        [b / MIB for b in histogram.type_bytes("anon")],
    )
    assert histogram.total_bytes() - cold >= hot_keys * 1000  # the hot keys are in the working set


# ------------------------------------------------------------------------------------------------
# Crafted /proc trees.


_SMAPS = b"""\
55d0c0000000-55d0c0100000 r-xp 00000000 08:01 1234 /usr/bin/prog
Size:               1024 kB
Rss:                 400 kB
Anonymous:             0 kB
Referenced:          100 kB
VmFlags: rd ex mr mw me dw
7f0000000000-7f0000400000 rw-p 00000000 00:00 0
Size:               4096 kB
Rss:                2000 kB
Anonymous:          2000 kB
Referenced:          500 kB
7f1000000000-7f1000100000 rw-p 00000000 08:01 99 /data/file
Rss:                 100 kB
Anonymous:            40 kB
Referenced:           50 kB
"""


def test_smaps_splits_referenced_bytes_per_mapping() -> None:
    counts = parse_smaps(_SMAPS)
    # file mapping: 100 kB referenced, all file; anon: 500 kB; mixed: 50 kB split 40/100 anon -> 20/30
    assert counts == ProcessCounts(
        ref_anon=520 * 1024, ref_file=130 * 1024, rss_anon=2040 * 1024, rss_file=460 * 1024
    )
    rollup = parse_smaps(
        b"00400000-7fff rw-p 0 0:0 0 [rollup]\nRss: 100 kB\nAnonymous: 50 kB\nReferenced: 10 kB\n"
    )
    assert rollup == ProcessCounts(
        ref_anon=5 * 1024, ref_file=5 * 1024, rss_anon=50 * 1024, rss_file=50 * 1024
    )


class _FakeProc:
    """A crafted ``/proc``: ``set(pid, rss_kib, anon_kib, ref_kib)`` writes its smaps; cleared pids logged."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pids: list[int] = []

    def set(self, pid: int, rss_kib: int, anon_kib: int, ref_kib: int) -> None:
        directory = self.root / str(pid)
        directory.mkdir(exist_ok=True)
        (directory / "clear_refs").touch()
        text = (
            f"1000-2000 rw-p 0 0:0 0\nRss: {rss_kib} kB\nAnonymous: {anon_kib} kB\nReferenced: {ref_kib} kB\n"
        )
        (directory / "smaps").write_text(text)
        (directory / "smaps_rollup").write_text(text)
        if pid not in self.pids:
            self.pids.append(pid)

    def remove(self, pid: int) -> None:
        shutil.rmtree(self.root / str(pid))


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _sampler(proc: _FakeProc, clock: _Clock, **settings: Any) -> ReferencedSampler:
    sampler = ReferencedSampler(
        "g",
        lambda: list(proc.pids),
        ReferencedSettings(**{"edges_ms": (1000, 2000, 4000), "cycle_s": 4.0, **settings}),
        proc_root=proc.root,
        wall_clock=clock,
        monotonic=clock,
    )
    sampler._stop.wait = lambda timeout=None: _advance(clock, timeout)  # type: ignore[method-assign]
    return sampler


def _advance(clock: _Clock, seconds: float | None) -> bool:
    clock.now += seconds or 0.0
    return False


def test_cycle_histogram_from_reads_with_processes_joining_and_leaving(tmp_path: Path) -> None:
    """Edges 1, 2, 4 s. pid 1 (anon): 100 KiB referenced by 1 s, 300 by 2 s, 600 by 4 s, 1000 resident.
    pid 2 (file) leaves the group after the first read (dropped); pid 3 joins before the last read
    (all its pages touched since it started: young)."""
    proc, clock = _FakeProc(tmp_path), _Clock()
    proc.set(1, 1000, 1000, 1000)
    proc.set(2, 500, 0, 500)
    sampler = _sampler(proc, clock)
    steps = iter([1, 2, 3])
    original = sampler._sweep

    def sweep(one: Any) -> Any:
        if one != sampler._clear_one:  # an edge's reads: the process tree as it is by then
            step = next(steps)
            if step == 1:
                proc.set(1, 1000, 1000, 100)
                proc.set(2, 500, 0, 70)
            elif step == 2:
                proc.set(1, 1000, 1000, 300)
                proc.remove(2)
                proc.pids.remove(2)
            else:
                proc.set(1, 1000, 1000, 600)
                proc.set(3, 40, 40, 40)
        return original(one)

    sampler._sweep = sweep  # type: ignore[method-assign]
    published = sampler.run_cycle()
    assert published is not None and published.complete and published.histogram is not None
    histogram = published.histogram
    assert histogram.edges_ms == (1000, 2000, 4000)
    assert list(histogram.type_bytes("anon")) == [k * 1024 for k in (100 + 40, 200, 300, 400)]
    assert list(histogram.type_bytes("file")) == [0, 0, 0, 0]  # pid 2 left: its memory is not counted
    assert sampler.problem is None and sampler.cycles == 1


def test_vanished_processes_are_skipped_and_caps_are_audited(tmp_path: Path) -> None:
    proc, clock = _FakeProc(tmp_path), _Clock()
    for pid in (1, 2, 3):
        proc.set(pid, 100, 100, 10)
    proc.pids.append(99)  # listed in cgroup.procs, exited before being cleared or read (ENOENT)
    sampler = _sampler(proc, clock, max_processes=2)
    published = sampler.run_cycle()
    assert published is not None and published.histogram is not None
    assert published.histogram.total_bytes() == 2 * 100 * 1024  # pids 1 and 2; 3 and 99 past the cap
    assert sampler.problem is not None and "not read (cost cap: at most 2 processes" in sampler.problem


def test_a_read_past_its_deadline_leaves_the_rest_young(tmp_path: Path) -> None:
    proc, clock = _FakeProc(tmp_path), _Clock()
    for pid in (1, 2):
        proc.set(pid, 100, 100, 0)
    sampler = _sampler(proc, clock, read_deadline_s=0.5)
    reads = {"n": 0}
    original = sampler._read_one

    def slow_read(pid: int, counts: dict[int, ProcessCounts]) -> None:
        reads["n"] += 1
        if reads["n"] == 3:  # the 2 s edge's first read: the clock jumps past its deadline during it
            clock.now += 1.0
        original(pid, counts)

    sampler._read_one = slow_read  # type: ignore[method-assign]
    published = sampler.run_cycle()
    assert published is not None and published.histogram is not None
    assert "read at 2 s: 1 processes not read" in (sampler.problem or ""), sampler.problem
    # pid 2 was not read at 2 s: it takes its 4 s read (0 referenced): still all open-ended
    assert list(published.histogram.type_bytes("anon")) == [0, 0, 0, 200 * 1024]


def test_no_clearable_process_publishes_no_histogram_and_says_why(tmp_path: Path) -> None:
    proc, clock = _FakeProc(tmp_path), _Clock()
    proc.set(1, 100, 100, 10)
    sampler = _sampler(proc, clock)

    def refuse(pid: int) -> None:
        raise PermissionError(13, "Permission denied")

    sampler._clear_one = refuse  # type: ignore[method-assign]
    published = sampler.run_cycle()
    assert published is not None and published.histogram is None
    assert "CAP_SYS_PTRACE" in (sampler.problem or ""), sampler.problem


def test_cgroup_pids_walks_subgroups_and_tolerates_removed_ones(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "cgroup.procs").write_text("1\n2\n")
    (tmp_path / "a" / "cgroup.procs").write_text("3\n2\n")
    assert cgroup_pids(tmp_path, Path.read_bytes) == [1, 2, 3]  # a/b has no cgroup.procs: removed
    with pytest.raises(FileNotFoundError):
        cgroup_pids(tmp_path / "a" / "b", Path.read_bytes)


def test_auto_picks_wsr_then_lru_gen_then_referenced(tmp_path: Path) -> None:
    group = tmp_path / "g"
    group.mkdir()
    enabled, dump = tmp_path / "enabled", tmp_path / "lru_gen"
    source, why = choose_histogram_source(group, dump, enabled)
    assert source == "referenced" and "no MGLRU" in why
    enabled.write_text("0x0000\n")
    assert choose_histogram_source(group, dump, enabled)[0] == "referenced"
    enabled.write_text("0x0007\n")
    assert "not readable" in choose_histogram_source(group, dump, enabled)[1]
    dump.write_text("")
    assert choose_histogram_source(group, dump, enabled)[0] == "lru_gen"
    (group / "memory.workingset.page_age").write_text("")
    assert choose_histogram_source(group, dump, enabled)[0] == "wsr"


def test_this_kernel_auto_is_referenced() -> None:
    """The development host has neither WSR nor MGLRU (docs/testbed.md)."""
    assert (
        choose_histogram_source(Path("/sys/fs/cgroup/memory"), Path("/sys/kernel/debug/lru_gen"))[0]
        == "referenced"
    )


def test_settings_refuse_bad_schedules() -> None:
    with pytest.raises(ValueError, match="cycle_s=1: must be at least the last edge"):
        ReferencedSettings(edges_ms=(1000, 2000), cycle_s=1.0)
    with pytest.raises(ValueError, match="above 0 ms"):
        ReferencedSettings(edges_ms=(0, 1000), cycle_s=2.0)


def _config(tmp_path: Path, backend: dict[str, Any]) -> Any:
    data = {
        "host": {"name": "h", "capacity_gib": 2},
        "policy": {"name_or_path": "static"},
        "audit": {"path": str(tmp_path / "audit.jsonl")},
        "guest": [
            {"name": "web", "provisioned_gib": 1, "backend": {"kind": "cgroup", "path": "web", **backend}}
        ],
    }
    return runner_config_from_dict(data, base_dir=tmp_path, label="host.toml")


def test_config_defaults_and_one_line_errors(tmp_path: Path) -> None:
    table = _config(tmp_path, {}).guest[0].backend
    assert table.histogram_source == "auto"
    assert table.referenced_read_edges_ms() == (1000, 2000, 5000, 10_000, 20_000, 40_000, 60_000, 120_000)
    table = (
        _config(tmp_path, {"referenced_max_age_s": 30, "referenced_edges_ms": [500, 10_000, 60_000]})
        .guest[0]
        .backend
    )
    assert table.referenced_read_edges_ms() == (500, 10_000, 30_000)
    for backend, key in [
        ({"referenced_cycle_s": 60}, "guest[0].backend.referenced_cycle_s"),
        ({"referenced_edges_ms": [2000, 1000]}, "guest[0].backend.referenced_edges_ms"),
        ({"referenced_detail": "pagemap"}, "guest[0].backend.referenced_detail"),
        ({"referenced_max_processes": 0}, "guest[0].backend.referenced_max_processes"),
    ]:
        with pytest.raises(ConfigError) as info:
            _config(tmp_path, backend)
        message = str(info.value)
        assert key in message and "\n" not in message.strip(), message
