"""The fidelity harness against the real kernel: a real cgroup v1 memcg and real zram swap.

Runs ``python -m wsrl.lab.measure --quick`` (about 25 s) and checks that what it measured
is physically sensible. It needs root, the cgroup v1 memory controller and the zram module: when any is
missing it fails, never skips. The timing rules of the full ladder are checked without the kernel.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from wsrl.lab.kernel import CGROUP_V1_MEMORY_ROOT, active_swaps
from wsrl.lab.ladder import QUICK_DURATION_S, QUICK_WARMUP_S, Case, default_cases, quick_cases, sweep_cases
from wsrl.lab.workload import (
    PopulationSpec,
    WorkloadSpecError,
    parse_spec,
    steady_state_timing,
)
from wsrl.units import MIB

pytestmark = [pytest.mark.cgroup, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 90


def _require_kernel() -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append("not root")
    if not (CGROUP_V1_MEMORY_ROOT / "memory.limit_in_bytes").exists():
        problems.append(f"no cgroup v1 memory controller at {CGROUP_V1_MEMORY_ROOT}")
    if not Path("/sys/class/zram-control/hot_add").exists():
        problems.append("no zram module (/sys/class/zram-control/hot_add)")
    if not Path("/proc/pressure/memory").exists():
        problems.append("no PSI (/proc/pressure/memory)")
    if problems:
        pytest.fail("fidelity measurement needs the real kernel: " + "; ".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    _require_kernel()
    out = tmp_path_factory.mktemp("fidelity") / "quick.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsrl.lab.measure", "--quick", "--out", str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:  # SIGTERM first: the harness cleans up on it
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, f"measure --quick failed ({proc.returncode}):\n{stderr}"
    doc = json.loads(out.read_text())
    doc["_stderr"] = stderr
    return doc


def _rung(doc: dict[str, Any], case: str, label: str) -> dict[str, Any]:
    for result in doc["results"]:
        if result["case"] == case and result["rung"]["label"] == label:
            return result
    raise AssertionError(
        f"no rung {case} {label} in {[(r['case'], r['rung']['label']) for r in doc['results']]}"
    )


def test_quick_run_is_quick_and_describes_the_machine(quick: dict[str, Any]) -> None:
    assert quick["elapsed_s"] < 40, quick["_stderr"]
    machine = quick["machine"]
    assert machine["page_size_bytes"] == os.sysconf("SC_PAGE_SIZE")
    assert machine["kernel_release"] == os.uname().release
    assert re.fullmatch(r"/dev/zram\d+", machine["zram"]["device"]), machine["zram"]
    assert quick["cleanup_errors"] == []


def test_no_refaults_when_the_limit_is_above_demand(quick: dict[str, Any]) -> None:
    rung = _rung(quick, "quick-hot-cold", "1.2xdemand")
    assert rung["outcome"] == "ok"
    window = rung["window"]
    touches = window["anon_touches"]
    assert touches > 10_000  # the workload really ran at its rate
    assert window["refault_anon"] + window["refault_file"] <= max(10, touches // 10_000), window
    assert window["oom_kill"] == 0
    assert rung["end_of_window"]["swap_bytes"] == 0


def test_anon_refaults_appear_below_demand_and_grow_as_the_limit_shrinks(quick: dict[str, Any]) -> None:
    above = _rung(quick, "quick-hot-cold", "1.2xdemand")["window"]
    mid = _rung(quick, "quick-hot-cold", "0.75xdemand")
    low = _rung(quick, "quick-hot-cold", "0.5xdemand")
    assert mid["outcome"] == low["outcome"] == "ok"
    mid_rate = mid["window"]["refault_anon_per_s"]
    low_rate = low["window"]["refault_anon_per_s"]
    assert mid_rate > 50 * max(above["refault_anon_per_s"], 1.0), (above, mid["window"])
    assert low_rate > 1.1 * mid_rate, (mid_rate, low_rate)
    # Refaulted anon came back from swap: the memcg holds swap and the limit was hit.
    assert low["end_of_window"]["swap_bytes"] > mid["end_of_window"]["swap_bytes"] > 0
    assert low["failcnt"] > 0
    # The cold population lost more of its pages at the lower limit.
    cold = {
        label: next(p for p in r["workload"]["populations"] if p["name"] == "cold")["resident_fraction_mean"]
        for label, r in (("mid", mid), ("low", low))
    }
    assert cold["low"] < cold["mid"] < 0.95, cold


def test_swap_lets_anon_survive_and_no_swap_means_oom(quick: dict[str, Any]) -> None:
    with_swap = _rung(quick, "quick-oom", "0.5xanon")
    assert with_swap["outcome"] == "ok"
    assert with_swap["oom_kills"] == 0
    assert with_swap["window"]["refault_anon_per_s"] > 0
    without = _rung(quick, "quick-oom", "0.5xanon-noswap")
    assert without["outcome"] == "oom_killed", without
    assert without["oom_kills"] >= 1
    assert without["returncode"] == -signal.SIGKILL
    assert without["died_in_phase"] == "fill"
    assert without["window"] is None


def test_everything_created_is_gone(quick: dict[str, Any]) -> None:
    assert not Path(quick["cgroup_v1_parent"]).exists()
    if quick["cgroup_v2_parent"]:
        assert not Path(quick["cgroup_v2_parent"]).exists()
    device = quick["machine"]["zram"]["device"]  # the run's own, hot-added and removed again
    assert device not in active_swaps()
    assert not Path("/sys/block", Path(device).name).exists()
    assert not Path("/run/wsrl/zram", Path(device).name).exists()
    assert not Path(quick["work_dir"]).exists()


def test_bad_specs_are_user_errors() -> None:
    good = {"name": "a", "type": "anon", "size_bytes": 1 << 20, "access_interval_s": 1.0}
    parse_spec({"populations": [good]})
    bad_cases = [
        {"populations": []},
        {"populations": [{**good, "type": "shmem"}]},
        {"populations": [{**good, "pattern": "zipf"}]},
        {"populations": [{**good, "access_interval_s": 0}]},
        {"populations": [{**good, "size_bytes": 10}]},
        {"populations": [good, good]},
        {"populations": [{**good, "type": "file"}]},  # no file_dir
        {"populations": [{**good, "type": "file"}], "file_dir": "/dev/shm"},  # tmpfs
        {"populations": [good], "bogus": 1},
    ]
    for spec in bad_cases:
        with pytest.raises(WorkloadSpecError):
            parse_spec(spec)


def test_workload_cli_reports_a_bad_spec_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "wsrl.lab.workload", "--spec", '{"populations": 3}'],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("wsrl: error: spec:")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("cases", [default_cases, sweep_cases], ids=["default", "sweeps"])
def test_ladders_run_long_enough_for_a_steady_state(cases: Callable[[], list[Case]]) -> None:
    planned_s = 0.0
    for case in cases():
        warmup_s, duration_s = case.timing()
        longest_random_s = max(
            (p.access_interval_s for p in case.populations if p.pattern == "random"), default=0.0
        )
        assert warmup_s >= 2 * max(p.access_interval_s for p in case.populations), case.name
        assert warmup_s >= 2 * longest_random_s, case.name
        assert duration_s >= 10.0, case.name
        for pop in case.populations:
            assert pop.rate_pages_per_s * duration_s >= 100, (case.name, pop.name)
        planned_s += (warmup_s + duration_s) * len(case.rungs)
    # `make fidelity` stays within about a quarter of an hour (OOM rungs end early, so less).
    assert planned_s < 16 * 60, planned_s


def test_timing_is_computed_per_case_from_its_populations() -> None:
    slow = PopulationSpec("slow", "anon", 8 * MIB, 30.0)
    fast = PopulationSpec("fast", "anon", 8 * MIB, 1.0)
    assert steady_state_timing([fast]) == (2.0, 10.0)
    assert steady_state_timing([fast, slow]) == (60.0, 10.0)
    tiny = PopulationSpec("tiny", "anon", 4 * 4096, 2.0)  # 4 pages: 2 touches/s
    assert steady_state_timing([tiny]) == (4.0, 50.0)  # 100 touches take 50 s
    # One source of truth: a spec that names no phase lengths gets the same timing.
    spec = parse_spec(
        {"populations": [{"name": "slow", "type": "anon", "size_bytes": 8 * MIB, "access_interval_s": 30.0}]}
    )
    assert (spec.warmup_s, spec.duration_s) == steady_state_timing([slow])
    for case in quick_cases():
        assert case.timing() == (QUICK_WARMUP_S, QUICK_DURATION_S)
