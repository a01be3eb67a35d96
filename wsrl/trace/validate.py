"""Check a trace directory against the schema and the rules the schema cannot express.

A damaged part (unreadable, another schema, invalid data) is a problem in the report, never an
exception: the other parts are still checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from wsrl.errors import TraceError
from wsrl.trace.files import open_regular
from wsrl.trace.schema import (
    FLAG_DESCRIPTIONS,
    MAX_TIME_MS,
    MIN_TIME_MS,
    NON_NEGATIVE_COLUMNS,
    SCHEMA_VERSION_KEY,
    conform,
    schema_of_version,
)
from wsrl.trace.writer import list_parts, read_manifest

ARROW_ERRORS: tuple[type[BaseException], ...] = (pa.ArrowException, OSError, ValueError)
"""What pyarrow raises for a file it cannot read (``ValueError`` covers invalid UTF-8 in strings)."""
MAX_EXAMPLES = 5
"""Row numbers named per problem (the count is always complete)."""


@dataclass
class ValidationReport:
    """Problems make a trace invalid; warnings are worth knowing but do not."""

    directory: Path
    parts_checked: int = 0
    rows_checked: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when there are no problems."""
        return not self.problems


def _rows(mask: np.ndarray) -> str:
    where = np.flatnonzero(mask)
    shown = ", ".join(str(int(i)) for i in where[:MAX_EXAMPLES])
    more = f" and {len(where) - MAX_EXAMPLES} more" if len(where) > MAX_EXAMPLES else ""
    return f"{len(where)} row(s) (rows {shown}{more})"


def _check_part(path: Path, version: int, report: ValidationReport) -> pa.Table | None:
    where = path.name
    try:
        with open_regular(path) as handle:  # a FIFO or device is a problem, never waited on
            parquet = pq.ParquetFile(handle)
            table = parquet.read()
        table.validate(full=True)  # offsets, lengths, UTF-8 of every string
    except TraceError as exc:
        report.problems.append(f"{where}: {str(exc).removeprefix(f'{path}: ')}")
        return None
    except ARROW_ERRORS as exc:
        report.problems.append(f"{where}: unreadable Parquet: {' '.join(str(exc).split())[:300]}")
        return None
    expected_schema = schema_of_version(version)
    part_version = (parquet.schema_arrow.metadata or {}).get(SCHEMA_VERSION_KEY)
    if part_version is None:
        report.problems.append(f"{where}: no {SCHEMA_VERSION_KEY.decode()} in the file metadata")
    elif part_version != expected_schema.metadata[SCHEMA_VERSION_KEY]:
        shown = part_version.decode("utf-8", "replace")[:40]
        report.problems.append(f"{where}: schema version {shown!r} differs from the manifest's ({version})")
    if table.schema.remove_metadata() != expected_schema.remove_metadata():
        expected = {f.name: f.type for f in expected_schema}
        actual = {f.name: f.type for f in table.schema}
        missing = sorted(set(expected) - set(actual))
        extra = sorted(set(actual) - set(expected))
        wrong = sorted(n for n in set(expected) & set(actual) if expected[n] != actual[n])
        report.problems.append(
            f"{where}: schema differs: missing {missing}, unexpected {extra}, wrong type {wrong}"
        )
        return None
    _check_rows(where, conform(table), report)  # columns added since the part's version: null
    report.rows_checked += table.num_rows
    return table.select(["host", "guest", "time_ms"])


def _check_rows(where: str, table: pa.Table, report: ValidationReport) -> None:
    for name in ("time_ms", "host", "guest"):
        nulls = table.column(name).is_null().to_numpy(zero_copy_only=False)
        if nulls.any():
            report.problems.append(f"{where}: column {name}: null in {_rows(nulls)}")
    time_ms = table.column("time_ms")
    outside = (
        pc.or_(pc.less(time_ms, MIN_TIME_MS), pc.greater(time_ms, MAX_TIME_MS))
        .fill_null(False)
        .to_numpy(zero_copy_only=False)
    )
    if outside.any():
        report.problems.append(
            f"{where}: column time_ms: out of range (before 1970 or after the year 9999) in {_rows(outside)}"
        )
    for name in ("host", "guest"):
        empty = (
            pc.equal(pc.utf8_length(table.column(name)), 0).fill_null(False).to_numpy(zero_copy_only=False)
        )
        if empty.any():
            report.problems.append(f"{where}: column {name}: empty string in {_rows(empty)}")
    for name in NON_NEGATIVE_COLUMNS:
        negative = pc.less(table.column(name), 0).fill_null(False).to_numpy(zero_copy_only=False)
        if negative.any():
            report.problems.append(f"{where}: column {name}: negative value in {_rows(negative)}")
    _check_histograms(where, table, report)
    flags = pc.unique(pc.list_flatten(table.column("flags"))).to_pylist()
    unknown = sorted((f for f in flags if f not in FLAG_DESCRIPTIONS), key=lambda f: (f is None, f or ""))
    if unknown:
        report.warnings.append(f"{where}: column flags: unknown flag(s) {unknown}")


def _check_histograms(where: str, table: pa.Table, report: ValidationReport) -> None:
    edges = table.column("hist_edges_ms")
    has_edges = edges.is_valid().to_numpy(zero_copy_only=False)
    for name in ("hist_anon_bytes", "hist_file_bytes"):
        column = table.column(name)
        mismatch = has_edges != column.is_valid().to_numpy(zero_copy_only=False)
        if mismatch.any():
            report.problems.append(
                f"{where}: column {name}: present without hist_edges_ms or the reverse in {_rows(mismatch)}"
            )
        lengths = pc.list_value_length(column).fill_null(-1).to_numpy(zero_copy_only=False)
        expected = pc.list_value_length(edges).fill_null(-2).to_numpy(zero_copy_only=False) + 1
        wrong = has_edges & (lengths != expected)
        if wrong.any():
            report.problems.append(
                f"{where}: column {name}: not len(hist_edges_ms) + 1 bins in {_rows(wrong)}"
            )
        flat = pc.list_flatten(column).to_numpy(zero_copy_only=False)
        if flat.size and (np.asarray(flat, dtype=np.float64) < 0).any():
            parents = pc.list_parent_indices(column).to_numpy(zero_copy_only=False)
            bad = np.zeros(table.num_rows, dtype=bool)
            bad[parents[np.asarray(flat, dtype=np.float64) < 0]] = True
            report.problems.append(f"{where}: column {name}: negative bytes in {_rows(bad)}")
    if has_edges.any():
        flat_edges = pc.list_flatten(edges).fill_null(-1).to_numpy(zero_copy_only=False)  # null: not an edge
        parents = pc.list_parent_indices(edges).to_numpy(zero_copy_only=False)
        bad = np.zeros(table.num_rows, dtype=bool)
        bad[parents[flat_edges < 0]] = True
        same_row = parents[1:] == parents[:-1]
        bad[parents[1:][same_row & (flat_edges[1:] <= flat_edges[:-1])]] = True
        if bad.any():
            report.problems.append(
                f"{where}: column hist_edges_ms: negative or not strictly increasing in {_rows(bad)}"
            )
    extras = table.column("hist_extra_bytes")
    if extras.null_count < table.num_rows:
        expected = pc.list_value_length(edges).fill_null(-2).to_numpy(zero_copy_only=False) + 1
        for row, entry in enumerate(extras.to_pylist()):
            for type_name, values in entry or []:
                if (
                    not has_edges[row]
                    or len(values or []) != expected[row]
                    or any(v is None or v < 0 for v in values or [])
                ):
                    report.problems.append(
                        f"{where}: column hist_extra_bytes: type {type_name!r} malformed in row {row}"
                    )


def validate_trace(directory: str | Path) -> ValidationReport:
    """Validate every part of a trace; raises :class:`TraceError` only if it is not a trace at all."""
    directory = Path(directory)
    if not directory.is_dir():
        raise TraceError(f"{directory}: no such trace directory")
    report = ValidationReport(directory)
    version = int(read_manifest(directory)["schema_version"])
    for leftover in sorted(directory.glob("part-*.parquet.tmp")):
        report.warnings.append(
            f"{leftover.name}: incomplete part from an interrupted writer; it held no committed samples"
        )
    keys = []
    for path in list_parts(directory):
        key_table = _check_part(path, version, report)
        report.parts_checked += 1
        if key_table is not None:
            keys.append(key_table)
    if keys:
        _check_duplicates(pa.concat_tables(keys), report)
    return report


def _check_duplicates(keys: pa.Table, report: ValidationReport) -> None:
    counts = keys.group_by(["host", "guest", "time_ms"]).aggregate([([], "count_all")])
    duplicated = counts.filter(pc.greater(counts.column("count_all"), 1))
    if duplicated.num_rows:
        first = duplicated.slice(0, MAX_EXAMPLES).to_pylist()
        shown = "; ".join(f"{r['host']}/{r['guest']} at {r['time_ms']} ({r['count_all']}x)" for r in first)
        report.problems.append(
            f"{duplicated.num_rows} (host, guest, time_ms) key(s) occur more than once: {shown}"
        )
