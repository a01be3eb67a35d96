"""Real-kernel fixtures for cgroup tests: v1 memcgs, zram swap, and a memory-hungry child process.

Everything here creates real kernel state and undoes it in ``finally`` blocks: groups are removed
after their processes are killed, the zram device is swapped off and reset, child processes are
killed by pid. Each test's zram device is its own (hot-added, :class:`wsrl.lab.kernel.ZramSwap`), so
the host's own zram swap, the kernel lab's run and other tests never contend for one.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from wsrl.lab.kernel import (
    CGROUP_V1_MEMORY_ROOT,
    FidelitySetupError,
    ZramSwap,
    proc_status_bytes,
    rmdir_retry,
)
from wsrl.lab.kernel import zram_swap as lab_zram_swap
from wsrl.units import GIB

TEST_PARENT = CGROUP_V1_MEMORY_ROOT / f"wsrl-test-backend-{os.getpid()}"


def require_v1_memcg() -> None:
    """Fail (never skip) unless root and the cgroup v1 memory controller are available."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not root")
    if not (CGROUP_V1_MEMORY_ROOT / "memory.limit_in_bytes").exists():
        problems.append(f"no cgroup v1 memory controller at {CGROUP_V1_MEMORY_ROOT}")
    if problems:
        pytest.fail("cgroup backend tests need the real kernel: " + "; ".join(problems), pytrace=False)


@contextlib.contextmanager
def zram_swap(size_bytes: int = 1 * GIB) -> Iterator[ZramSwap]:
    """A zram swap device of the test's own while the block runs; fails clearly without zram."""
    try:
        with lab_zram_swap(size_bytes) as zram:
            yield zram
    except FidelitySetupError as exc:
        pytest.fail(f"zram swap for the test: {exc}", pytrace=False)


@contextlib.contextmanager
def v1_memcg(name: str) -> Iterator[Path]:
    """A fresh v1 memcg ``wsrl-test-backend-<pid>/<name>``, removed afterwards.

    Yields the group's path; callers must stop the processes they put in it (:class:`Hog` does).
    """
    require_v1_memcg()
    made_parent = False
    if not TEST_PARENT.exists():
        TEST_PARENT.mkdir()
        made_parent = True
    group = TEST_PARENT / name
    try:
        group.mkdir()
        try:
            yield group
        finally:
            rmdir_retry(group)
    finally:
        if made_parent:
            rmdir_retry(TEST_PARENT)


_HOG_SCRIPT = r"""
import mmap, select, sys, time
PAGE = mmap.PAGESIZE
PERIOD_S = float(sys.argv[2])
CHUNKS = 20
maps = []
def alloc(mib):
    m = mmap.mmap(-1, mib << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_NOHUGEPAGE)
    for off in range(0, len(m), PAGE):  # distinct content per page: zram cannot dedupe it away
        m[off:off + 8] = (off // PAGE + 1).to_bytes(8, "little")
    maps.append(m)
alloc(int(sys.argv[1]))
print("ready", flush=True)
while True:  # sweep every page once per PERIOD_S, in CHUNKS paced steps: swapped-out pages refault
    start = time.monotonic()
    pages = [(m, off) for m in maps for off in range(8, len(m), PAGE)]
    for c in range(CHUNKS):
        for m, off in pages[c * len(pages) // CHUNKS : (c + 1) * len(pages) // CHUNKS]:
            m[off] = (m[off] + 1) & 0xFF
        wait = start + PERIOD_S * (c + 1) / CHUNKS - time.monotonic()
        if select.select([sys.stdin], [], [], max(0.0, wait))[0]:
            line = sys.stdin.readline().split()
            if not line or line[0] == "exit":
                sys.exit(0)
            alloc(int(line[1]))
            print("grown", flush=True)
            break
"""


class Hog:
    """A Python child in a memcg that maps ``mib`` MiB of private anon and sweeps it forever.

    Every page is touched once per ``period_s`` (spread over the period, like a working set in
    use). A tight loop instead would touch pages faster than reclaim can age them, and the v1
    kernel then refuses any limit below the usage (``EBUSY``), swap or not.

    The child joins the group between fork and exec, so all it allocates is charged there.
    Commands over stdin: ``grow N`` maps and fills N more MiB, ``exit`` ends it.
    """

    def __init__(self, group: Path, mib: int, period_s: float = 1.0) -> None:
        self.group = group
        procs = group / "cgroup.procs"

        def join() -> None:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))

        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOG_SCRIPT, str(mib), str(period_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=join,
        )

    def expect(self, line: str, timeout_s: float = 30.0) -> bool:
        """Wait for ``line`` on the child's stdout; False if it died first."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        if not ready:
            raise AssertionError(f"hog sent no {line!r} within {timeout_s} s")
        got = self.proc.stdout.readline().decode().strip()
        if got == "":
            return False
        assert got == line, got
        return True

    def send(self, command: str) -> None:
        """Write one command line to the child."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    def alive(self) -> bool:
        """Whether the child is still running."""
        return self.proc.poll() is None

    def rss_anon_bytes(self) -> int:
        """``RssAnon`` of the child, from ``/proc/<pid>/status``."""
        return proc_status_bytes(self.proc.pid, "RssAnon")

    def stop(self) -> None:
        """Kill the child (by its pid) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


@contextlib.contextmanager
def hog(group: Path, mib: int) -> Iterator[Hog]:
    """A started :class:`Hog` that has filled its memory; killed afterwards."""
    child = Hog(group, mib)
    try:
        assert child.expect("ready"), "hog died while filling its memory"
        yield child
    finally:
        child.stop()
