"""The simulator's predictions against the recorded real-kernel ladder (docs/fidelity-measured.json).

The measurement itself needs root, a memory cgroup and zram (tests/test_fidelity_measure.py runs
a short ladder for real); this test holds the model to what the full recorded ladder showed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wsrl.errors import WsrlError
from wsrl.sim.fidelity.compare import BEGIN_MARKER, compare, main, markdown_table

MEASURED = Path(__file__).resolve().parents[1] / "docs" / "fidelity-measured.json"


@pytest.fixture(scope="module")
def rows():
    return compare(json.loads(MEASURED.read_text()))


def test_oom_is_predicted_exactly_where_the_kernel_killed(rows):
    assert any(row.measured_oom for row in rows)
    for row in rows:
        assert row.predicted_oom == row.measured_oom, (row.case, row.rung)


def test_no_refaults_above_demand(rows):
    for row in rows:
        if row.rung.startswith("1.2x"):
            assert row.measured_anon_refaults_per_s == 0 and row.predicted_anon_refaults_per_s == 0


def test_che_predicts_which_random_access_pages_stay_resident(rows):
    checked = 0
    for row in rows:
        if row.case == "anon-hot-cold" and not row.measured_oom:
            for name, predicted in row.predicted_resident_fraction.items():
                measured = row.measured_resident_fraction[name]
                assert predicted == pytest.approx(measured, abs=0.08), (row.rung, name)
                checked += 1
    assert checked >= 10


def test_predicted_refaults_grow_as_the_limit_shrinks(rows):
    for case in ("anon-hot-cold", "anon-file", "anon-loop"):
        ladder = [r for r in rows if r.case == case and r.swap and not r.measured_oom]
        ladder.sort(key=lambda r: -r.limit_mib)
        totals = [
            (r.predicted_anon_refaults_per_s or 0) + (r.predicted_file_refaults_per_s or 0) for r in ladder
        ]
        assert totals == sorted(totals) and totals[-1] > 0, case


def test_anon_stall_matches_measured_psi_where_refaults_agree(rows):
    for row in rows:
        if row.case == "anon-hot-cold" and row.rung in ("0.6xdemand", "0.45xdemand"):
            assert row.predicted_stall == pytest.approx(row.measured_psi_some, rel=0.3)


def test_table_and_doc_markers(tmp_path, rows):
    table = markdown_table(rows)
    assert table.count("\n") == len(rows) + 1
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{BEGIN_MARKER}\nstale rows\n<!-- fidelity-table:end -->\noutro\n")
    main([str(MEASURED), "--doc", str(doc)])
    text = doc.read_text()
    assert "stale rows" not in text and "anon-hot-cold" in text and text.endswith("outro\n")


def test_not_a_measurement_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(WsrlError):
        compare({"schema": "something else"})
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(SystemExit) as exit_info:
        main([str(bad)])
    assert exit_info.value.code == 2 and "bad.json" in capsys.readouterr().err
