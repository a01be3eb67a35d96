"""Issue 23's layout, short and live: three real Redis guests under ``wsrl run`` with far memory.

The short version of ``benchmarks/bench_layout_live.py`` (marker ``cgroup``; root, the v1 memory
controller, zram and Debian's ``redis-server`` from ``scripts/testbed.sh``; it fails, never
skips, when one is missing): about 200 MiB of keys per guest (busy reads all of its keys, mixed
15 k of 215 k, idle none) on a host of 0.45 GiB with 0.35 GiB promised each, 20 s of warm-up and
40 s measured. Ages up to 20 s (``referenced_max_age_s``) and far memory's threshold and period
scaled down with them, so that the policy acts within the minute. Asserted: the sampled limits
never add up to more than ``capacity - reserve`` (one page per guest of slack) while the runner is
in control, and the idle guest ends with a lower limit than the busy one.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bench_layout_live as bench

pytestmark = pytest.mark.timeout(180)


@pytest.mark.cgroup
def test_far_memory_keeps_the_limits_within_the_room_and_takes_from_idle(tmp_path: Path) -> None:
    missing = bench.problems()
    if missing:
        pytest.fail("the live layout needs the real kernel: " + "; ".join(missing), pytrace=False)
    layout = bench.SMALL
    with bench.own_zram(int(layout.zram_gib * bench.GIB)):
        result = bench.run_policy(layout, "far-memory", tmp_path, log=lambda line: None)
    host, guests = result["host"], result["guests"]
    assert host["runner_rc"] == 0 and host["controlled_samples"] >= layout.measured_s, host
    slack = bench.PAGE * len(layout.guests)
    assert host["max_sum_limits_bytes"] <= layout.room_bytes + slack, host
    assert all(g["histogram_source"] == "referenced" for g in guests.values()), guests
    last = result["samples"][-1]
    assert last["idle"]["limit"] < last["busy"]["limit"], (last, guests)
