"""The trace store: schema, writer, reader, validator, and survival of a SIGKILLed writer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wsrl.errors import TraceError
from wsrl.histogram import Histogram
from wsrl.trace import SCHEMA_VERSION, TRACE_SCHEMA, GuestSample, TraceReader, TraceWriter
from wsrl.trace.schema import FLAG_DESCRIPTIONS, schema_markdown
from wsrl.trace.validate import validate_trace

REPO = Path(__file__).resolve().parents[1]


def sample(time_ms: int, guest: str, host: str = "h1", **columns: object) -> GuestSample:
    return GuestSample(time_ms=time_ms, host=host, guest=guest, **columns)  # type: ignore[arg-type]


def test_round_trip_of_every_column(tmp_path: Path) -> None:
    histogram = Histogram("vm-a", 0, [1000, 20000], {"anon": [1, 2, 3], "file": [4, 5, 6], "slab": [7, 8, 9]})
    original = sample(
        5000,
        "vm-a",
        histogram=histogram,
        hist_horizon_ms=120_000,
        provisioned_bytes=8 << 30,
        visible_bytes=6 << 30,
        target_bytes=6 << 30,
        usage_bytes=5 << 30,
        working_set_bytes=1 << 30,
        refault_anon_total=10,
        refault_file_total=11,
        major_faults_total=12,
        swap_bytes=13,
        swap_in_total=14,
        swap_out_total=15,
        psi_some_avg10=0.5,
        psi_full_avg10=0.25,
        psi_some_total_us=16,
        psi_full_total_us=17,
        oom_kills_total=1,
        events=["oom"],
        action_target_bytes=5 << 30,
        action_policy="senpai",
        flags=["gap_before"],
    )
    with TraceWriter(tmp_path / "t", source="test") as writer:
        writer.append(original)
    [read] = list(TraceReader(tmp_path / "t").iter_samples())
    assert read.histogram is not None
    assert read.histogram.totals_by_type() == histogram.totals_by_type()
    assert read.histogram.edges_ms == histogram.edges_ms
    read.histogram = original.histogram = None
    assert read == original


def test_reader_yields_time_order_per_host_across_parts(tmp_path: Path) -> None:
    with TraceWriter(tmp_path / "t", flush_rows=3) as writer:
        for time_ms in (40, 10, 30, 20, 0):  # out of order, across several parts
            for host in ("h2", "h1"):
                for guest in ("b", "a"):
                    writer.append(sample(time_ms, guest, host, usage_bytes=time_ms))
    reader = TraceReader(tmp_path / "t")
    assert len(reader.part_paths) > 3
    steps = list(reader.iter_host_steps())
    assert [(h, t) for h, t, _ in steps] == [(h, t) for h in ("h1", "h2") for t in (0, 10, 20, 30, 40)]
    assert all([s.guest for s in group] == ["a", "b"] for _, _, group in steps)
    assert [s.time_ms for s in reader.iter_samples("h2")] == [0, 0, 10, 10, 20, 20, 30, 30, 40, 40]
    summary = reader.summary()
    assert (summary.hosts, summary.guests, summary.samples) == (2, 4, 20)
    assert (summary.start_ms, summary.end_ms) == (0, 40)
    assert reader.read_table(["time_ms"], hosts=["h1"], start_ms=10, end_ms=30).column(
        "time_ms"
    ).to_pylist() == [
        10,
        10,
        20,
        20,
    ]


def test_reopened_writer_appends_and_only_one_writer_at_a_time(tmp_path: Path) -> None:
    with TraceWriter(tmp_path / "t") as first:
        first.append(sample(0, "a"))
        with pytest.raises(TraceError, match="another writer"):
            TraceWriter(tmp_path / "t")
    with TraceWriter(tmp_path / "t") as second:
        second.append(sample(1, "a"))
    reader = TraceReader(tmp_path / "t")
    assert [p.name for p in reader.part_paths] == ["part-000000.parquet", "part-000001.parquet"]
    assert [s.time_ms for s in reader.iter_samples()] == [0, 1]


def test_time_based_flush(tmp_path: Path) -> None:
    writer = TraceWriter(tmp_path / "t", flush_rows=10**6, flush_interval_s=0.0)
    writer.append(sample(0, "a"))
    assert writer.buffered_rows == 0 and writer.parts_written == 1
    writer.close()


def test_writer_refuses_a_directory_that_is_not_a_trace(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(TraceError, match="not empty and not a trace"):
        TraceWriter(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_reader_refuses_newer_schema_versions(tmp_path: Path) -> None:
    with TraceWriter(tmp_path / "t") as writer:
        writer.append(sample(0, "a"))
    manifest_path = tmp_path / "t" / "trace.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["schema_version"] = SCHEMA_VERSION + 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(TraceError, match="newer than this wsrl reads"):
        TraceReader(tmp_path / "t")


def test_version_1_traces_read_and_validate_with_later_columns_null(tmp_path: Path) -> None:
    # The bundled Bitbrains slice was written at schema version 1, before hist_horizon_ms.
    bundled = REPO / "envs" / "traces" / "bitbrains-sample"
    assert json.loads((bundled / "trace.json").read_text())["schema_version"] == 1
    table = TraceReader(bundled).read_table()
    assert table.schema.names == TRACE_SCHEMA.names
    assert table.column("hist_horizon_ms").null_count == table.num_rows > 0
    report = validate_trace(bundled)
    assert report.ok and report.rows_checked == table.num_rows, report.problems
    # A version-1 part in a version-2 trace is named, not read as if it were either.
    with TraceWriter(tmp_path / "t") as writer:
        writer.append(sample(0, "a", hist_horizon_ms=120_000))
    part = next(bundled.glob("part-*.parquet"))
    (tmp_path / "t" / "part-000001.parquet").write_bytes(part.read_bytes())
    problems = validate_trace(tmp_path / "t").problems
    assert any(
        "part-000001.parquet: schema version '1' differs from the manifest's (2)" in p for p in problems
    )


def test_invalid_samples_are_refused_with_the_column_named(tmp_path: Path) -> None:
    with TraceWriter(tmp_path / "t") as writer:
        writer.append(sample(0, "a", usage_bytes="lots"))  # type: ignore[arg-type]
        with pytest.raises(TraceError, match="does not match the trace schema"):
            writer.flush()


def write_raw_part(directory: Path, name: str, rows: dict[str, list]) -> None:
    columns = {field.name: rows.get(field.name, [None] * len(rows["time_ms"])) for field in TRACE_SCHEMA}
    pq.write_table(pa.Table.from_pydict(columns, schema=TRACE_SCHEMA), directory / name)


def test_validator_finds_each_kind_of_problem(tmp_path: Path) -> None:
    directory = tmp_path / "t"
    with TraceWriter(directory) as writer:
        writer.append(sample(0, "a", usage_bytes=1))
    assert validate_trace(directory).ok
    write_raw_part(
        directory,
        "part-000001.parquet",
        {
            "time_ms": [0, 5, 6, 7],
            "host": ["h1", "h1", "h1", ""],
            "guest": ["a", "b", "b", "c"],
            "usage_bytes": [1, -5, 1, 1],
            "hist_edges_ms": [None, [10, 5], [10], None],
            "hist_anon_bytes": [None, [1, 2, 3], [1], None],
            "hist_file_bytes": [None, [1, 2, 3], [1, 1], None],
            "flags": [None, ["made_up"], None, None],
        },
    )
    (directory / "part-000002.parquet.tmp").write_bytes(b"PAR1 torn")
    report = validate_trace(directory)
    text = "\n".join(report.problems)
    assert not report.ok
    assert "column usage_bytes: negative value in 1 row(s) (rows 1)" in text
    assert "column host: empty string in 1 row(s) (rows 3)" in text
    assert "hist_edges_ms: negative or not strictly increasing in 1 row(s) (rows 1)" in text
    assert "column hist_anon_bytes: not len(hist_edges_ms) + 1 bins in 1 row(s) (rows 2)" in text
    assert "h1/a at 0 (2x)" in text
    assert any("unknown flag(s) ['made_up']" in w for w in report.warnings)
    assert any("part-000002.parquet.tmp: incomplete part" in w for w in report.warnings)


def test_schema_is_documented() -> None:
    markdown = schema_markdown()
    for field in TRACE_SCHEMA:
        assert f"`{field.name}`" in markdown
    docs = (REPO / "docs" / "trace-format.md").read_text()
    assert markdown in docs, (
        "docs/trace-format.md is out of date: regenerate its table from schema_markdown()"
    )
    for flag in FLAG_DESCRIPTIONS:
        assert f"`{flag}`" in docs


CHILD = textwrap.dedent(
    """
    import sys
    from wsrl.histogram import Histogram
    from wsrl.trace import GuestSample, TraceWriter

    writer = TraceWriter(sys.argv[1], source="crash-test", flush_rows=int(sys.argv[2]))
    time_ms = 0
    while True:
        for guest in range(8):
            h = Histogram(f"g{guest}", 0, [1000, 20000], {"anon": [time_ms, guest, 7], "file": [1, 2, 3]})
            row = GuestSample(time_ms=time_ms, host="h", guest=f"g{guest}", histogram=h, usage_bytes=time_ms)
            writer.append(row)
            if writer.buffered_rows == 0:
                print(writer.rows_written, flush=True)
        time_ms += 1000
    """
)


def test_sigkilled_writer_loses_nothing_before_the_last_flush(tmp_path: Path) -> None:
    directory = tmp_path / "trace"
    flush_rows = 4000
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(directory), str(flush_rows)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    acknowledged = 0
    deadline = time.monotonic() + 60
    try:
        while acknowledged < 5 * flush_rows and time.monotonic() < deadline:
            line = child.stdout.readline()  # type: ignore[union-attr]
            assert line, "writer died before it was killed"
            acknowledged = int(line)
        # Kill it while it is busy buffering or writing the next part.
        time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    assert acknowledged >= 5 * flush_rows

    report = validate_trace(directory)
    assert report.ok, report.problems
    reader = TraceReader(directory)
    samples = list(reader.iter_samples())
    assert len(samples) >= acknowledged
    assert len(samples) % flush_rows == 0  # whole parts only, never a torn one
    expected_times = sorted({i // 8 * 1000 for i in range(len(samples))})
    assert sorted({s.time_ms for s in samples}) == expected_times
    for s in samples:
        assert s.usage_bytes == s.time_ms
        assert s.histogram is not None and list(s.histogram.anon_bytes) == [s.time_ms, int(s.guest[1:]), 7]

    # A restarted recorder appends after what survived.
    with TraceWriter(directory) as writer:
        writer.append(sample(10**9, "g0", host="h"))
    assert TraceReader(directory).summary().samples == len(samples) + 1
