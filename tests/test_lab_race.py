"""The reclaim-race lab (`python -m wsrl.lab.race`) on the real kernel: a real memcg, a real zram.

Needs root, the cgroup v1 memory controller and the zram module; fails, never skips, without them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from wsrl.lab.kernel import CGROUP_V1_MEMORY_ROOT, active_swaps
from wsrl.lab.race import summary

pytestmark = [pytest.mark.cgroup, pytest.mark.timeout(180)]
RACE = [sys.executable, "-m", "wsrl.lab.race", "--repeats", "1"]


def test_a_fast_allocation_into_a_limit_with_room_in_swap_survives_and_is_recorded(tmp_path: Path) -> None:
    # 256 MiB, well above the allocating interpreter's own footprint: a limit of 64 MiB (128 MiB
    # allocated) was once OOM-killed in the full suite, the corner docs/fidelity.md describes.
    swaps_before = active_swaps()
    out = tmp_path / "race.json"
    done = subprocess.run(
        [*RACE, "--out", str(out), "--total-mib", "512", "--limits", "0.5", "--chunks-mib", "64"],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    assert document["schema"] == "wsrl.fidelity.race/1" and document["zram"]["size_bytes"] == 1024 * 2**20
    full, paced = document["trials"]
    for trial in (full, paced):
        assert not trial["oom_killed"] and trial["exit_code"] == 0 and trial["alloc_s"] > 0
        assert trial["max_usage_mib"] == pytest.approx(256, abs=0.5)  # held at the limit...
        assert trial["memsw_max_usage_mib"] > 512  # ...with the rest of the 512 MiB in swap
    assert (full["chunk_mib"], full["pause_s"]) == (64, 0.0) and paced["pause_s"] > 0
    assert "| 0.50 | full speed | 0 of 1 |" in done.stdout and summary(document) in done.stdout
    # Nothing is left behind: no group, no swap device.
    assert not list(CGROUP_V1_MEMORY_ROOT.glob("wsrl-race-*")) and active_swaps() == swaps_before


def test_bad_arguments_are_refused_with_the_option_named(tmp_path: Path) -> None:
    done = subprocess.run(
        [*RACE, "--out", str(tmp_path / "x.json"), "--limits", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        done.returncode == 2 and "limits must be in (0, 1]" in done.stderr and "Traceback" not in done.stderr
    )
