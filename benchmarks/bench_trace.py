"""Trace store throughput on the real Bitbrains history: import, read, iterate, validate.

Run with ``make bench`` (or ``python benchmarks/bench_trace.py [memory.parquet]``). Figures are
printed as rows per second and as ratios against a baseline measured in the same process: a plain
``pyarrow.parquet.read_table`` of the source file, the floor any Parquet-based importer pays.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from wsrl.trace import TraceReader
from wsrl.trace.bitbrains import import_bitbrains
from wsrl.trace.validate import validate_trace

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "bitbrains-rnd" / "memory.parquet"
ITERATE_GUESTS = 20


def timed(label: str, action):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - start
    print(f"  {label:<34} {seconds:8.2f} s", flush=True)
    return result, seconds


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE
    if not source.is_file():
        sys.exit(f"bench_trace: no Bitbrains data at {source} (pass the memory.parquet path)")
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "bitbrains"
        print(f"source: {source}")
        raw, baseline_s = timed("baseline: pyarrow read_table", lambda: pq.read_table(source))
        report, import_s = timed("wsrl trace import bitbrains", lambda: import_bitbrains(source, out))
        reader = TraceReader(out)
        summary, summary_s = timed("trace info (summary)", reader.summary)
        table, read_s = timed("read_table, sorted", reader.read_table)
        guests = sorted(set(table.column("guest").to_pylist()))[:ITERATE_GUESTS]
        subset = reader.read_table(guests=guests)

        def iterate() -> int:
            count = 0
            for _ in TraceReader(out).iter_samples():
                count += 1
                if count >= subset.num_rows:
                    break
            return count

        iterated, iterate_s = timed(f"iter_samples (first {subset.num_rows:,} rows)", iterate)
        validation, validate_s = timed("validate", lambda: validate_trace(out))
    assert summary.guests == 397 or source != DEFAULT_SOURCE, summary
    rows = report.rows_written
    figures: dict[str, float | int | bool] = {
        "source_rows": report.rows_read,
        "trace_rows": rows,
        "guests": summary.guests,
        "import_s": round(import_s, 2),
        "import_rows_per_s": round(report.rows_read / import_s),
        "import_vs_raw_read_ratio": round(import_s / baseline_s, 1),
        "read_sorted_rows_per_s": round(rows / read_s),
        "read_vs_raw_read_ratio": round(read_s / baseline_s, 1),
        "summary_s": round(summary_s, 2),
        "iter_samples_rows_per_s": round(iterated / iterate_s),
        "validate_rows_per_s": round(rows / validate_s),
        "valid": validation.ok,
    }
    print(json.dumps(figures, indent=2))
    del raw


if __name__ == "__main__":
    main()
