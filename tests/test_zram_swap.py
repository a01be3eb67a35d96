"""The lab's zram swap on the real kernel: a device of its own, the host's own swap left alone.

A host often runs zram swap of its own (Fedora's zram-generator, Debian's zram-tools make
``zram0`` swap at boot); a run that needed ``zram0`` free failed there, and one killed with
SIGKILL left its device on for every later run. These tests make both situations for real: a
foreign zram swap device made without the lab, and a lab owner killed mid-run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from wsrl.lab.kernel import (
    ZRAM_CONTROL_PATH,
    ZRAM_OWNERS_DIR,
    ZramSwap,
    active_swaps,
    release_orphaned_zram,
    zram_swap,
)
from wsrl.units import MIB

pytestmark = pytest.mark.cgroup


def _require_zram() -> None:
    if os.geteuid() != 0 or not (ZRAM_CONTROL_PATH / "hot_add").exists():
        pytest.fail("zram tests need root and the zram module (/sys/class/zram-control)", pytrace=False)


@pytest.fixture
def foreign_swap() -> Iterator[str]:
    """A zram swap device made the way a host's own is: hot-added and swapped on, no owner file."""
    _require_zram()
    number = int((ZRAM_CONTROL_PATH / "hot_add").read_text())
    device = f"zram{number}"
    try:
        Path(f"/sys/block/{device}/disksize").write_text(str(64 * MIB))
        subprocess.run(["mkswap", f"/dev/{device}"], check=True, capture_output=True)
        subprocess.run(["swapon", "-p", "5", f"/dev/{device}"], check=True, capture_output=True)
        yield f"/dev/{device}"
    finally:
        if f"/dev/{device}" in active_swaps():
            subprocess.run(["swapoff", f"/dev/{device}"], check=False)
        Path(f"/sys/block/{device}/reset").write_text("1")
        (ZRAM_CONTROL_PATH / "hot_remove").write_text(str(number))


def test_a_run_beside_the_hosts_own_zram_swap_uses_and_removes_a_device_of_its_own(
    foreign_swap: str,
) -> None:
    with zram_swap(64 * MIB) as zram:
        assert zram.dev_path != foreign_swap
        assert zram.dev_path in active_swaps()
        assert foreign_swap in active_swaps()
        assert (ZRAM_OWNERS_DIR / Path(zram.dev_path).name).read_text().split()[0] == str(os.getpid())
        own = zram.dev_path
    assert own not in active_swaps()
    assert not Path("/sys/block", Path(own).name).exists()
    assert not (ZRAM_OWNERS_DIR / Path(own).name).exists()
    assert foreign_swap in active_swaps(), "the host's own swap was touched"
    assert release_orphaned_zram() == []  # a device without an owner file is never the lab's to take


def test_two_runs_at_once_each_get_their_own_device() -> None:
    _require_zram()
    with zram_swap(32 * MIB) as first, zram_swap(32 * MIB) as second:
        assert first.dev_path != second.dev_path
        assert {first.dev_path, second.dev_path} <= set(active_swaps())


_KILLED_OWNER = """
import sys, time
from wsrl.lab.kernel import ZramSwap
zram = ZramSwap(size_bytes=32 << 20)
zram.check_free()
zram.start()
print(zram.dev_path, flush=True)
time.sleep(600)
"""


def test_a_device_left_by_a_killed_run_is_released_by_the_next_run() -> None:
    _require_zram()
    owner = subprocess.Popen(
        [sys.executable, "-c", _KILLED_OWNER],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    assert owner.stdout is not None
    left = owner.stdout.readline().strip()
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    try:
        assert left in active_swaps(), "the killed run's device should still be on"
        others = [d for d in active_swaps() if d != left]
        later = ZramSwap(size_bytes=32 * MIB)
        later.check_free()
        later.start()  # releases the orphan before adding its own (which may reuse its number)
        try:
            assert active_swaps() == [*others, later.dev_path]
            assert sorted(p.name for p in ZRAM_OWNERS_DIR.iterdir()) == [Path(later.dev_path).name]
            owner_pid = (ZRAM_OWNERS_DIR / Path(later.dev_path).name).read_text().split()[0]
            assert owner_pid == str(os.getpid())
        finally:
            later.stop()
        assert active_swaps() == others
    finally:
        release_orphaned_zram()  # whatever the assertions found, leave nothing behind
