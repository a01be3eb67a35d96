"""Real-kernel fixtures for cgroup tests: v1 memcgs, zram swap, and a memory-hungry child process.

Everything here creates real kernel state and undoes it in ``finally`` blocks: groups are removed
after their processes are killed, the zram device is swapped off and reset, child processes are
killed by pid. The zram device is shared with the kernel lab, :mod:`wsrl.lab.measure` (whose test runs
``measure --quick``); :func:`zram_swap` takes an exclusive ``flock`` on :data:`ZRAM_LOCK_PATH` and
waits for the device to be free, so two runs on one machine take turns instead of failing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wsrl.lab.kernel import CGROUP_V1_MEMORY_ROOT, ZramSwap, active_swaps, proc_status_bytes, rmdir_retry
from wsrl.units import GIB

ZRAM_LOCK_PATH = Path("/run/lock/wsrl-zram0.lock")
ZRAM_WAIT_S = 90.0
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


def _zram_free(zram: ZramSwap) -> bool:
    disksize = int((zram.sys_path / "disksize").read_text().split()[0])
    return disksize == 0 and zram.dev_path not in active_swaps()


@contextlib.contextmanager
def zram_swap(size_bytes: int = 1 * GIB, wait_s: float = ZRAM_WAIT_S) -> Iterator[ZramSwap]:
    """zram0 as swap while the block runs; fails with a clear message if it stays busy."""
    zram = ZramSwap(size_bytes=size_bytes)
    if not zram.sys_path.is_dir():
        pytest.fail(f"{zram.sys_path} missing: this kernel has no zram device", pytrace=False)
    ZRAM_LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    with open(ZRAM_LOCK_PATH, "a+") as lock:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    pytest.fail(
                        f"{ZRAM_LOCK_PATH} held by another test for over {wait_s:.0f} s", pytrace=False
                    )
                time.sleep(0.2)
        try:
            # The fidelity harness takes zram0 without the lock: wait for it to let go.
            while not _zram_free(zram):
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"{zram.dev_path} is busy (swap on or disksize set) for over {wait_s:.0f} s: "
                        "another test or the fidelity harness holds it",
                        pytrace=False,
                    )
                time.sleep(0.5)
            zram.check_free()
            try:
                zram.start()
                yield zram
            finally:
                zram.stop()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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
