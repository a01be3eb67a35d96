"""The lab's kernel plumbing: cgroup v1 memcgs (and their v2 twins), zram swap, kernel counters.

Everything the fidelity harness (:mod:`wsrl.lab.ladder`) creates on a real machine goes through
here: :class:`ZramSwap` hot-adds a zram device of the run's own, makes it swap and removes it
afterwards; :class:`RungGroups` makes one rung's memcg, sets its limit and snapshots its counters;
:class:`Cleanup` undoes all of it, newest first, whatever happens. :func:`check_machine` refuses
to start without root, the cgroup v1 memory controller and PSI. Needs root; imports nothing of the
simulator.
"""

from __future__ import annotations

import contextlib
import errno
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from wsrl.errors import WsrlError
from wsrl.lab.workload import HOST_PAGE_BYTES, filesystem_type
from wsrl.units import GIB

CGROUP_V1_MEMORY_ROOT = Path("/sys/fs/cgroup/memory")
CGROUP_V2_ROOT = Path("/sys/fs/cgroup/unified")
PSI_MEMORY_PATH = Path("/proc/pressure/memory")
ZRAM_CONTROL_PATH = Path("/sys/class/zram-control")
# One file per zram device a run added, holding its owner's "pid starttime".
ZRAM_OWNERS_DIR = Path("/run/wsrl/zram")
ZRAM_SIZE_BYTES = 1 * GIB
# Above any swap the host has of its own: the run's memcgs swap to the run's device first.
ZRAM_SWAP_PRIORITY = 32767
# memory.stat fields read at each snapshot (hierarchical totals), and their names in the output.
_STAT_FIELDS = {
    "total_workingset_refault_anon": "refault_anon",
    "total_workingset_refault_file": "refault_file",
    "total_pgmajfault": "pgmajfault",
    "total_pgfault": "pgfault",
    "total_swap": "swap_bytes",
    "total_rss": "rss_bytes",
    "total_cache": "cache_bytes",
    "total_active_anon": "active_anon_bytes",
    "total_inactive_anon": "inactive_anon_bytes",
    "total_active_file": "active_file_bytes",
    "total_inactive_file": "inactive_file_bytes",
}


class FidelitySetupError(WsrlError):
    """The machine lacks what the measurement needs (root, cgroup v1 memory, zram, PSI), or it is in use."""


# --------------------------------------------------------------------------------------------
# Small kernel-file helpers.


def _write(path: Path, value: str | int) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(str(value))


def _read_int(path: Path) -> int:
    return int(path.read_text(encoding="ascii").split()[0])


def read_flat_keyed(path: Path) -> dict[str, int]:
    """Parse a ``key value`` per line file (``memory.stat``, ``/proc/vmstat``, ``oom_control``)."""
    out: dict[str, int] = {}
    for line in path.read_text(encoding="ascii").splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


def read_psi_totals_us(path: Path) -> tuple[int, int]:
    """``some`` and ``full`` total stall microseconds of a PSI file."""
    totals = {"some": 0, "full": 0}
    for line in path.read_text(encoding="ascii").splitlines():
        kind, *fields = line.split()
        for field in fields:
            if field.startswith("total="):
                totals[kind] = int(field[len("total=") :])
    return totals["some"], totals["full"]


def proc_status_bytes(pid: int, field: str) -> int:
    """A size field of ``/proc/<pid>/status`` (``VmRSS``, ``RssAnon``, ...), in bytes.

    Raises:
        ValueError: the process has no such field.

    """
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no {field} in /proc/{pid}/status")


def active_swaps() -> list[str]:
    """Devices listed in ``/proc/swaps``."""
    lines = Path("/proc/swaps").read_text(encoding="ascii").splitlines()[1:]
    return [line.split()[0] for line in lines if line.strip()]


# --------------------------------------------------------------------------------------------
# Cleanup, swap and groups.


class Cleanup:
    """A LIFO stack of undo actions, run once each, whatever happens.

    Actions are run by :meth:`run_all` (from a ``finally``) and, as a last resort, at interpreter
    exit. A failing action is recorded and the others still run.
    """

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], None]]] = []
        self.errors: list[str] = []

    def push(self, what: str, action: Callable[[], None]) -> Callable[[], None]:
        """Register ``action``; return it, for :meth:`run_now`."""
        self._actions.append((what, action))
        return action

    def run_now(self, action: Callable[[], None]) -> None:
        """Run one registered action now and forget it."""
        for i, (what, registered) in enumerate(self._actions):
            if registered is action:
                del self._actions[i]
                self._run(what, action)
                return

    def _run(self, what: str, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as exc:
            self.errors.append(f"{what}: {type(exc).__name__}: {exc}")

    def run_all(self) -> None:
        """Run every pending action, newest first."""
        while self._actions:
            what, action = self._actions.pop()
            self._run(what, action)


class ZramSwap:
    """A zram swap device of the run's own, for the duration of the run.

    The device is hot-added through ``/sys/class/zram-control`` rather than taken from the
    machine: a host's own zram swap (``zram0`` under Fedora's zram-generator, Debian's
    zram-tools) is never touched, and runs on one machine need no turn-taking. :meth:`stop` swaps
    it off, resets it and hot-removes it. Every device a run adds is recorded under
    :data:`ZRAM_OWNERS_DIR` with its owner's pid and start time; a device whose owner died without
    cleaning up (SIGKILL, a lost machine session) is released by the next run's :meth:`start`.
    """

    def __init__(self, size_bytes: int = ZRAM_SIZE_BYTES) -> None:
        self.size_bytes = size_bytes
        self.device: str | None = None

    @property
    def dev_path(self) -> str:
        """``/dev/zramN`` of the added device (``/dev/zram?`` before :meth:`start`)."""
        return f"/dev/{self.device or 'zram?'}"

    @property
    def sys_path(self) -> Path:
        """``/sys/block/zramN`` of the added device."""
        if self.device is None:
            raise FidelitySetupError("the zram device is not added yet (call start())")
        return Path("/sys/block") / self.device

    def check_free(self) -> None:
        """Fail unless zram devices can be added and the swap tools are installed."""
        if not (ZRAM_CONTROL_PATH / "hot_add").exists():
            subprocess.run(["modprobe", "zram"], capture_output=True, check=False, timeout=60)
        if not (ZRAM_CONTROL_PATH / "hot_add").exists():
            raise FidelitySetupError(
                f"{ZRAM_CONTROL_PATH}/hot_add does not exist: this kernel has no zram module "
                "(modprobe zram; CONFIG_ZRAM)"
            )
        for tool in ("mkswap", "swapon", "swapoff"):
            if shutil.which(tool) is None:
                raise FidelitySetupError(f"{tool!r} is not on PATH (util-linux)")

    def start(self) -> None:
        """Release orphaned devices, add one, size it, make it swap and turn it on."""
        release_orphaned_zram()
        try:
            number = int((ZRAM_CONTROL_PATH / "hot_add").read_text(encoding="ascii"))
        except OSError as exc:
            raise FidelitySetupError(f"cannot add a zram device: {exc.strerror}") from exc
        self.device = f"zram{number}"  # from here on, stop() must undo it
        ZRAM_OWNERS_DIR.mkdir(parents=True, exist_ok=True)
        (ZRAM_OWNERS_DIR / self.device).write_text(_owner_tag(os.getpid()) or "", encoding="ascii")
        _write(self.sys_path / "disksize", self.size_bytes)
        _run_tool(["mkswap", self.dev_path])
        _run_tool(["swapon", "-p", str(ZRAM_SWAP_PRIORITY), self.dev_path])

    def stop(self) -> None:
        """Swap off, reset and remove the device, only if this object added it."""
        if self.device is None:
            return
        device, self.device = self.device, None
        _release_zram(device)

    def info(self) -> dict[str, Any]:
        """Device, compression algorithm and size, for the output."""
        algorithm = (self.sys_path / "comp_algorithm").read_text(encoding="ascii").split()
        chosen = next((a.strip("[]") for a in algorithm if a.startswith("[")), None)
        return {"device": self.dev_path, "size_bytes": self.size_bytes, "comp_algorithm": chosen}


@contextlib.contextmanager
def zram_swap(size_bytes: int = ZRAM_SIZE_BYTES) -> Iterator[ZramSwap]:
    """A :class:`ZramSwap` on while the block runs, removed afterwards whatever happens."""
    zram = ZramSwap(size_bytes=size_bytes)
    zram.check_free()
    try:
        zram.start()
        yield zram
    finally:
        zram.stop()


def _owner_tag(pid: int) -> str | None:
    """``pid starttime`` of a live process (``None`` when it is gone): a pid alone can be reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    return f"{pid} {stat.rpartition(')')[2].split()[19]}"


def _release_zram(device: str) -> None:
    """Swap off, reset and hot-remove ``device``; forget its owner file."""
    dev_path, sys_path = f"/dev/{device}", Path("/sys/block") / device
    if dev_path in active_swaps():
        _run_tool(["swapoff", dev_path])
    if sys_path.is_dir():
        _write(sys_path / "reset", 1)
        _write(ZRAM_CONTROL_PATH / "hot_remove", device.removeprefix("zram"))
    (ZRAM_OWNERS_DIR / device).unlink(missing_ok=True)


def release_orphaned_zram() -> list[str]:
    """Release the devices added by runs that died without cleaning up; return their names."""
    released = []
    for owner_file in sorted(ZRAM_OWNERS_DIR.glob("zram*")) if ZRAM_OWNERS_DIR.is_dir() else []:
        try:
            tag = owner_file.read_text(encoding="ascii").strip()
        except OSError:
            continue
        pid = int(tag.split()[0]) if tag.split() and tag.split()[0].isdigit() else -1
        if pid > 0 and _owner_tag(pid) == tag:
            continue  # its owner is still running
        _release_zram(owner_file.name)
        released.append(owner_file.name)
    return released


def _run_tool(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    if done.returncode != 0:
        raise FidelitySetupError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")


def rmdir_retry(path: Path, timeout_s: float = 10.0) -> None:
    """``rmdir`` a cgroup, retrying while it is still busy (a task just exited)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class RungGroups:
    """The v1 memcg of one rung (and its v2 twin, for per-group PSI, where available)."""

    def __init__(self, v1_parent: Path, v2_parent: Path | None, name: str) -> None:
        self.v1 = v1_parent / name
        self.v2 = v2_parent / name if v2_parent is not None else None
        self.swap_control = "none"

    def create(self) -> None:
        """Make the groups."""
        self.v1.mkdir()
        if self.v2 is not None:
            self.v2.mkdir()

    def join(self) -> None:
        """Move the calling process into the groups (run in the child between fork and exec)."""
        pid = str(os.getpid())
        _write(self.v1 / "cgroup.procs", pid)
        if self.v2 is not None:
            _write(self.v2 / "cgroup.procs", pid)

    def set_limit(self, limit_bytes: int, swap: bool) -> None:
        """Set the memory limit; without swap, also cap memory+swap at the same value."""
        _write(self.v1 / "memory.limit_in_bytes", limit_bytes)
        if swap:
            self.swap_control = "allowed"
            return
        memsw = self.v1 / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            _write(memsw, limit_bytes)
            self.swap_control = "memsw_limit"
        else:  # no swap accounting: memcg swappiness 0 keeps its anon out of swap
            _write(self.v1 / "memory.swappiness", 0)
            self.swap_control = "swappiness_0"

    def usage_bytes(self) -> int:
        """Current ``memory.usage_in_bytes``."""
        return _read_int(self.v1 / "memory.usage_in_bytes")

    def snapshot(self) -> dict[str, float]:
        """Every counter the rung reports, read now."""
        stat = read_flat_keyed(self.v1 / "memory.stat")
        snap: dict[str, float] = {"t_s": time.monotonic()}
        for field, key in _STAT_FIELDS.items():
            snap[key] = stat.get(field, 0)
        snap["usage_bytes"] = _read_int(self.v1 / "memory.usage_in_bytes")
        snap["max_usage_bytes"] = _read_int(self.v1 / "memory.max_usage_in_bytes")
        snap["failcnt"] = _read_int(self.v1 / "memory.failcnt")
        memsw_failcnt = self.v1 / "memory.memsw.failcnt"
        snap["memsw_failcnt"] = _read_int(memsw_failcnt) if memsw_failcnt.exists() else 0
        snap["oom_kill"] = read_flat_keyed(self.v1 / "memory.oom_control").get("oom_kill", 0)
        vmstat = read_flat_keyed(Path("/proc/vmstat"))
        snap["sys_pswpin"] = vmstat.get("pswpin", 0)
        snap["sys_pswpout"] = vmstat.get("pswpout", 0)
        snap["psi_some_us"], snap["psi_full_us"] = read_psi_totals_us(PSI_MEMORY_PATH)
        if self.v2 is not None:
            snap["group_psi_some_us"], snap["group_psi_full_us"] = read_psi_totals_us(
                self.v2 / "memory.pressure"
            )
        return snap

    def remove(self) -> None:
        """Remove the groups (their tasks must have exited)."""
        if self.v2 is not None:
            rmdir_retry(self.v2)
        rmdir_retry(self.v1)


# --------------------------------------------------------------------------------------------
# The machine.


def check_machine() -> None:
    """Fail with a clear message unless root, cgroup v1 memory and PSI are available."""
    if os.geteuid() != 0:
        raise FidelitySetupError("must run as root (it creates memcgs and turns on zram swap)")
    if not (CGROUP_V1_MEMORY_ROOT / "memory.limit_in_bytes").exists():
        raise FidelitySetupError(
            f"no cgroup v1 memory controller at {CGROUP_V1_MEMORY_ROOT} (memory.limit_in_bytes missing)"
        )
    if not (CGROUP_V1_MEMORY_ROOT / "memory.stat").exists():
        raise FidelitySetupError(f"{CGROUP_V1_MEMORY_ROOT}/memory.stat missing")
    if not PSI_MEMORY_PATH.exists():
        raise FidelitySetupError(
            f"{PSI_MEMORY_PATH} missing: the kernel has no PSI (or psi=0 on the command line)"
        )


def machine_info(zram: ZramSwap, file_dir: Path) -> dict[str, Any]:
    """Kernel and memory-management settings the measurement depends on."""

    def text(path: str) -> str | None:
        try:
            return Path(path).read_text(encoding="ascii").strip()
        except OSError:
            return None

    meminfo: dict[str, int] = {}
    for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
        key, _, value = line.partition(":")
        meminfo[key] = int(value.split()[0]) * 1024 if value.split() else 0
    thp = text("/sys/kernel/mm/transparent_hugepage/enabled")
    return {
        "kernel_release": platform.release(),
        "kernel_version": platform.version(),
        "machine": platform.machine(),
        "page_size_bytes": HOST_PAGE_BYTES,
        "cpus": os.cpu_count(),
        "mem_total_bytes": meminfo.get("MemTotal"),
        "cgroup_v1_memory": str(CGROUP_V1_MEMORY_ROOT),
        "cgroup_v2_psi": (CGROUP_V2_ROOT / "cgroup.procs").exists(),
        "zram": zram.info(),
        "other_swap_devices": [d for d in active_swaps() if d != zram.dev_path],
        "vm_swappiness": int(text("/proc/sys/vm/swappiness") or -1),
        "vm_page_cluster": int(text("/proc/sys/vm/page-cluster") or -1),
        "transparent_hugepage": thp,
        "mglru": Path("/sys/kernel/mm/lru_gen/enabled").exists(),
        "file_dir_fs": filesystem_type(file_dir),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
