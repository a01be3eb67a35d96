"""Importing the real Bitbrains history: defects cleaned or flagged, nothing dropped silently."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wsrl.errors import ImportDataError
from wsrl.trace import TraceReader
from wsrl.trace.bitbrains import ROW_FLAGS, import_bitbrains
from wsrl.trace.schema import FLAG_DESCRIPTIONS
from wsrl.trace.validate import validate_trace

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "envs" / "traces" / "bitbrains-sample"


def shared_bitbrains() -> Path:
    """The shared real data set; CI and developers have it beside the checkout."""
    path = Path(
        os.environ.get("WSRL_BITBRAINS", REPO.parent / "shared" / "data" / "bitbrains-rnd" / "memory.parquet")
    )
    assert path.is_file(), (
        f"the real Bitbrains data is needed at {path} (set WSRL_BITBRAINS to its memory.parquet)"
    )
    return path


def write_source(path: Path, rows: list[tuple[int, int, float, float]]) -> Path:
    vm, ts, prov, use = zip(*rows, strict=True)
    table = pa.table(
        {
            "vm": pa.array(vm, pa.int16()),
            "month": pa.array(["2013-7"] * len(rows)).dictionary_encode(),
            "ts": pa.array(ts, pa.int32()),
            "mem_prov_kb": pa.array(prov, pa.float32()),
            "mem_use_kb": pa.array(use, pa.float32()),
        }
    )
    pq.write_table(table, path)
    return path


def test_every_row_flag_is_documented() -> None:
    assert set(ROW_FLAGS) <= set(FLAG_DESCRIPTIONS)


def test_defects_are_merged_or_flagged(tmp_path: Path) -> None:
    day = 86_400
    rows = [
        # vm 1: clean, then an identical duplicate, a conflicting duplicate, a gap, usage > provisioned.
        (1, 0, 1000.0, 100.0),
        (1, 300, 1000.0, 100.0),
        (1, 300, 1000.0, 100.0),
        (1, 600, 1000.0, 200.0),
        (1, 600, 0.0, 0.0),
        (1, 600, 1000.0, 150.0),
        (1, 5000, 1000.0, 1200.0),
        # vm 2: zero provisioned, and mostly zero working set, and covering 21 days.
        (2, 0, 0.0, 0.0),
        *[(2, 300 * i, 2048.0, 0.0) for i in range(1, 30)],
        (2, 21 * day, 2048.0, 5.0),
    ]
    source = write_source(tmp_path / "memory.parquet", rows)
    report = import_bitbrains(source, tmp_path / "trace")
    assert report.rows_read == len(rows)
    assert report.duplicate_rows_merged == 3
    assert report.rows_written == len(rows) - 3
    assert validate_trace(tmp_path / "trace").ok

    table = TraceReader(tmp_path / "trace").read_table()
    by_key = {(r["guest"], r["time_ms"] // 1000): r for r in table.to_pylist()}
    vm1_flags = ["guest_often_above_provisioned", "guest_short_coverage"]  # 1 of 4 rows above
    vm2_flags = ["guest_mostly_zero", "guest_short_coverage"]  # 31 samples x 300 s < 20 days
    assert by_key[("vm1", 0)]["flags"] == vm1_flags
    assert by_key[("vm1", 300)]["flags"] == ["duplicate_ts", *vm1_flags]
    conflict = by_key[("vm1", 600)]
    assert conflict["flags"] == ["duplicate_ts_conflict", *vm1_flags]
    assert conflict["working_set_bytes"] == 200 * 1024  # the known-size row with the largest use
    assert conflict["provisioned_bytes"] == 1000 * 1024
    assert by_key[("vm1", 5000)]["flags"] == ["usage_above_provisioned", "gap_before", *vm1_flags]
    zero = by_key[("vm2", 0)]
    assert zero["provisioned_bytes"] is None
    assert zero["flags"] == ["zero_provisioned", *vm2_flags]
    assert by_key[("vm2", 300)]["flags"] == vm2_flags
    assert by_key[("vm2", 21 * day)]["flags"] == ["gap_before", *vm2_flags]
    assert report.guests_flagged["guest_often_above_provisioned"] == ["vm1"]
    assert report.guests_flagged["guest_mostly_zero"] == ["vm2"]
    assert report.guests_flagged["guest_short_coverage"] == ["vm1", "vm2"]
    assert report.rows_flagged["zero_provisioned"] == 1
    assert (tmp_path / "trace" / "import-report.json").is_file()


def test_bad_sources_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ImportDataError, match="no such file"):
        import_bitbrains(tmp_path / "missing.parquet", tmp_path / "t")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(ImportDataError, match="not a Bitbrains memory Parquet file"):
        import_bitbrains(tmp_path / "junk.parquet", tmp_path / "t")
    negative = write_source(tmp_path / "neg.parquet", [(1, 0, 10.0, -1.0)])
    with pytest.raises(ImportDataError, match="column mem_use_kb: 1 negative or non-finite value"):
        import_bitbrains(negative, tmp_path / "t")
    wrong = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"vm": [1], "ts": ["x"], "mem_prov_kb": [1.0], "mem_use_kb": [1.0]}), wrong)
    with pytest.raises(ImportDataError, match="column ts: expected integer"):
        import_bitbrains(wrong, tmp_path / "t")
    ok = write_source(tmp_path / "ok.parquet", [(1, 0, 10.0, 1.0)])
    with pytest.raises(ImportDataError, match="no rows match"):
        import_bitbrains(ok, tmp_path / "t", vms=[99])


def test_bundled_subset_is_a_valid_real_trace() -> None:
    reader = TraceReader(BUNDLED)
    summary = reader.summary()
    assert summary.guests == 8 and summary.hosts == 1
    assert summary.end_ms - summary.start_ms > 2.9 * 86_400_000
    assert validate_trace(BUNDLED).ok
    flags = {f for row in reader.read_table(["flags"]).column("flags").to_pylist() for f in row or []}
    assert {"duplicate_ts", "duplicate_ts_conflict", "zero_provisioned"} <= flags


def test_real_vm_subset_matches_the_source_exactly(tmp_path: Path) -> None:
    source = shared_bitbrains()
    report = import_bitbrains(source, tmp_path / "t", vms=[1, 20])
    raw = pq.read_table(source, filters=[("vm", "in", [1, 20])])
    assert report.rows_read == raw.num_rows
    table = TraceReader(tmp_path / "t").read_table()
    assert table.num_rows == report.rows_written
    vm1 = raw.filter(pa.compute.equal(raw["vm"], 1))
    ours = table.filter(pa.compute.equal(table["guest"], "vm1"))
    assert ours.num_rows == len(np.unique(vm1["ts"].to_numpy()))
    expected = np.rint(vm1.sort_by("ts")["mem_use_kb"].to_numpy().astype(np.float64) * 1024).astype(np.int64)
    if ours.num_rows == vm1.num_rows:  # vm 1 has no duplicate timestamps: values carry over exactly
        assert (ours["working_set_bytes"].to_numpy() == expected).all()
    assert validate_trace(tmp_path / "t").ok


def test_whole_shared_file_imports_with_all_397_vms(tmp_path: Path) -> None:
    report = import_bitbrains(shared_bitbrains(), tmp_path / "all")
    assert report.guests == 397
    assert report.rows_read == 9_968_414
    assert report.rows_written + report.duplicate_rows_merged == report.rows_read
    summary = TraceReader(tmp_path / "all").summary()
    assert summary.guests == 397 and summary.samples == report.rows_written
