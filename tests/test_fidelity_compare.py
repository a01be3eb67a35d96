"""The simulator's predictions against the recorded real-kernel ladder (docs/fidelity-measured.json).

The measurement itself needs root, a memory cgroup and zram (tests/test_fidelity_measure.py runs
a short ladder for real); this test holds the model to what the full recorded ladder showed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wsrl.errors import WsrlError
from wsrl.sim.arrays import KERNEL_CLASSIC, KERNEL_MGLRU
from wsrl.sim.fidelity.compare import BEGIN_MARKER, compare, main, markdown_table, predict_rung

REPO = Path(__file__).resolve().parents[1]
MEASURED = REPO / "docs" / "fidelity-measured.json"
# docs/fidelity.md states this number ("within 0.10"): keep the two in step.
RESIDENCY_TOLERANCE = 0.10
# Rungs whose random anon populations the model's residency claim covers (anon only, no loop).
RANDOM_ANON_CASES = ("anon-hot-cold", "anon-oom")
# Rungs where the predicted anon refault rate is within 15 % of the measured one.
AGREEING_ANON_RUNGS = {
    ("anon-hot-cold", "0.9xdemand"),
    ("anon-hot-cold", "0.6xdemand"),
    ("anon-oom", "0.5xanon"),
}


@pytest.fixture(scope="module")
def measured():
    return json.loads(MEASURED.read_text())


@pytest.fixture(scope="module")
def rows(measured):
    return compare(measured)


def test_oom_is_predicted_exactly_where_the_kernel_killed(rows):
    assert any(row.measured_oom for row in rows)
    for row in rows:
        assert row.predicted_oom == row.measured_oom, (row.case, row.rung)


def test_no_refaults_above_demand(rows):
    checked = 0
    for row in rows:
        if row.rung.startswith("1.2x"):
            assert row.measured_anon_refaults_per_s == 0 and row.predicted_anon_refaults_per_s == 0, row.case
            assert not row.measured_file_refaults_per_s and not row.predicted_file_refaults_per_s, row.case
            checked += 1
    assert checked == 3  # anon-hot-cold, anon-file, anon-loop


def test_che_predicts_which_random_access_pages_stay_resident(rows):
    checked = 0
    for row in rows:
        if row.case in RANDOM_ANON_CASES and not row.measured_oom:
            for name, predicted in row.predicted_resident_fraction.items():
                measured = row.measured_resident_fraction[name]
                assert predicted == pytest.approx(measured, abs=RESIDENCY_TOLERANCE), (row.rung, name)
                checked += 1
    assert checked == 13  # anon-hot-cold: 6 rungs x 2 populations; anon-oom: 1 rung with swap


def test_doc_states_the_residency_tolerance_the_test_enforces():
    doc = (REPO / "docs" / "fidelity.md").read_text()
    assert f"within {RESIDENCY_TOLERANCE:.2f}" in doc


def test_predicted_refaults_grow_as_the_limit_shrinks(rows):
    for case in ("anon-hot-cold", "anon-file", "anon-loop"):
        ladder = [r for r in rows if r.case == case and r.swap and not r.measured_oom]
        ladder.sort(key=lambda r: -r.limit_mib)
        totals = [
            (r.predicted_anon_refaults_per_s or 0) + (r.predicted_file_refaults_per_s or 0) for r in ladder
        ]
        assert totals == sorted(totals) and totals[-1] > 0, case


def test_anon_stall_matches_measured_psi_where_refaults_agree(rows):
    checked = 0
    for row in rows:
        if (row.case, row.rung) in AGREEING_ANON_RUNGS:
            assert row.measured_file_refaults_per_s is None, row.case  # anon only
            assert row.predicted_anon_refaults_per_s == pytest.approx(
                row.measured_anon_refaults_per_s, rel=0.15
            ), (row.case, row.rung)
            assert row.predicted_stall == pytest.approx(row.measured_psi_some, rel=0.2), (row.case, row.rung)
            checked += 1
    assert checked == len(AGREEING_ANON_RUNGS)


def test_a_sweep_that_does_not_fit_misses_on_every_touch_as_the_kernel_does(rows):
    """anon-loop: the lab's cyclic sweep, passed to the model as a sweep (it was read as random).

    The kernel refaulted the whole sweep at every rung below demand (12,315-12,328/s against a
    touch rate of 12,288 pages/s); independent references predicted 1,229-6,758/s. Stall stays
    within the issue's 30 % (the model's constant per-refault latency; issue 17, item 4).
    """
    below = [
        r
        for r in rows
        if r.case == "anon-loop" and r.swap and r.rung != "1.2xdemand" and r.rung != "1xdemand"
    ]
    assert len(below) == 4
    for row in below:
        assert row.patterns == ["loop"]
        assert row.predicted_anon_refaults_per_s == pytest.approx(row.measured_anon_refaults_per_s, rel=0.05)
        assert row.predicted_stall == pytest.approx(row.measured_psi_some, rel=0.3), row.rung
    fits = [r for r in rows if r.case == "anon-loop" and r.rung in ("1.2xdemand", "1xdemand")]
    assert [r.predicted_anon_refaults_per_s for r in fits] == [0.0, 0.0]
    assert all(r.measured_anon_refaults_per_s < 10 for r in fits)


def test_prediction_is_the_steady_state_whatever_the_warmup_and_step(measured, rows):
    """For constant demand the model settles at once (compare.py's claim): one LRU in its first
    step; a classic kernel's anon/file balance (cases with file pages) within its measured warm-up,
    to within 3 % whatever the step."""
    zram_bytes = int(measured["settings"]["zram_size_bytes"])
    kernel = KERNEL_MGLRU if measured["machine"]["mglru"] else KERNEL_CLASSIC
    checked = 0
    for result, row in zip(measured["results"], rows, strict=True):
        if row.measured_oom:
            continue
        settled = 1e-6 if row.predicted_file_refaults_per_s is None else 0.03
        short_window = {**result, "window": {**result["window"], "wall_s": 2.5}}
        for variant in (
            predict_rung(result, zram_bytes, warmup_steps=0, kernel=kernel),
            predict_rung(result, zram_bytes, warmup_steps=20, kernel=kernel),
            predict_rung(short_window, zram_bytes, kernel=kernel),
        ):
            for field in (
                "predicted_anon_refaults_per_s",
                "predicted_file_refaults_per_s",
                "predicted_stall",
            ):
                expected = getattr(row, field)
                got = getattr(variant, field)
                where = (row.case, row.rung, field)
                if expected is None:  # no file population
                    assert got is None, where
                else:
                    assert got == pytest.approx(expected, rel=settled, abs=1e-9), where
            assert variant.predicted_resident_fraction == pytest.approx(
                row.predicted_resident_fraction, abs=0.01
            )
        checked += 1
    assert checked == 19  # every rung that was not OOM-killed


DEMAND_BELOW = ("0.9xdemand", "0.75xdemand", "0.6xdemand", "0.45xdemand")


def test_the_classic_kernel_reclaims_file_pages_as_this_host_did():
    """anon-file on this host (no MGLRU, swappiness 60): reclaim goes to file pages first until
    their refaults cost as much as anon's (get_scan_count). Every rung below demand within 30 %
    for both refault rates, and each population's residency within 0.15; one recency for both
    types (the MGLRU model) predicted 3-40x too few file refaults at 0.9x-0.75x."""
    measured = json.loads(MEASURED.read_text())
    zram_bytes = int(measured["settings"]["zram_size_bytes"])
    assert measured["machine"]["mglru"] is False and measured["machine"]["vm_swappiness"] == 60
    checked = 0
    for result in measured["results"]:
        if result["case"] != "anon-file" or result["rung"]["label"] not in DEMAND_BELOW:
            continue
        classic = predict_rung(result, zram_bytes, kernel=KERNEL_CLASSIC, swappiness=60)
        one_lru = predict_rung(result, zram_bytes, kernel=KERNEL_MGLRU)
        window = result["window"]
        for field, key in (
            ("predicted_anon_refaults_per_s", "refault_anon_per_s"),
            ("predicted_file_refaults_per_s", "refault_file_per_s"),
        ):
            assert getattr(classic, field) == pytest.approx(window[key], rel=0.30), (result["rung"], field)
        for name, fraction in classic.predicted_resident_fraction.items():
            assert fraction == pytest.approx(classic.measured_resident_fraction[name], abs=0.15), name
        assert one_lru.predicted_file_refaults_per_s < classic.predicted_file_refaults_per_s
        checked += 1
    assert checked == 4


def test_table_and_doc_markers(tmp_path, rows):
    table = markdown_table(rows)
    assert table.count("\n") == len(rows) + 1
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{BEGIN_MARKER}\nstale rows\n<!-- fidelity-table:end -->\noutro\n")
    main([str(MEASURED), "--doc", str(doc)])
    text = doc.read_text()
    assert "stale rows" not in text and "anon-hot-cold" in text and text.endswith("outro\n")
    # A second table in the same doc, between its own markers; the first is left as it is.
    doc.write_text(text + "<!-- sweep-table:begin -->\nold\n<!-- sweep-table:end -->\n")
    main([str(SWEEPS_MEASURED), "--doc", str(doc), "--marker", "sweep-table"])
    both = doc.read_text()
    assert both.startswith(text) and "old" not in both.split("sweep-table:begin")[1]
    assert "file-loop" in both.split("sweep-table:begin")[1]


def test_not_a_measurement_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(WsrlError):
        compare({"schema": "something else"})
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(SystemExit) as exit_info:
        main([str(bad)])
    assert exit_info.value.code == 2 and "bad.json" in capsys.readouterr().err


SWEEPS_MEASURED = REPO / "docs" / "fidelity-sweeps-measured.json"


def test_sweeps_beside_other_pages_deep_below_demand_and_the_safe_side_near_it():
    """docs/fidelity-sweeps-measured.json (issue 17): the sweep model against the kernel.

    At 0.75x-0.45x of demand the file scan refaults on every touch (within 1 %) and the anon
    sweep beside hot pages is within 25 %. At 0.9x the kernel protects part of the sweep
    (refault-distance activation; not modelled): the model predicts more refaults there, never
    fewer, the safe side for a policy.
    """
    rows = compare(json.loads(SWEEPS_MEASURED.read_text()))
    deep = ("0.75xdemand", "0.6xdemand", "0.45xdemand")
    for row in rows:
        if row.case == "file-loop" and row.rung in deep:
            assert row.predicted_file_refaults_per_s == pytest.approx(
                row.measured_file_refaults_per_s, rel=0.01
            )
        if row.case == "anon-loop-beside-hot" and row.rung in deep:
            assert row.predicted_anon_refaults_per_s == pytest.approx(
                row.measured_anon_refaults_per_s, rel=0.25
            )
        if row.rung == "0.9xdemand":
            measured = (row.measured_anon_refaults_per_s or 0) + (row.measured_file_refaults_per_s or 0)
            predicted = (row.predicted_anon_refaults_per_s or 0) + (row.predicted_file_refaults_per_s or 0)
            assert predicted >= measured > 0, row.case
        if row.rung in ("1.2xdemand", "1xdemand"):
            assert (row.predicted_anon_refaults_per_s or 0) + (row.predicted_file_refaults_per_s or 0) == 0.0
    assert {row.case for row in rows} == {"anon-loop-beside-hot", "file-loop"}
