"""Import the Bitbrains GWA-T-12 "Rnd" memory history into the trace store.

Source: the Grid Workloads Archive trace GWA-T-12 (Bitbrains), described in S. Shen, V. van Beek,
A. Iosup, "Statistical Characterization of Business-Critical Workloads Hosted in Cloud
Datacenters", CCGrid 2015. Its terms ask for research use with that citation and attribution to
Bitbrains.

Input: the Parquet file described in ``shared/data/bitbrains-rnd/README.md`` with columns
``vm`` (int), ``month``, ``ts`` (UNIX seconds), ``mem_prov_kb`` and ``mem_use_kb`` (KiB).

Mapping onto the trace schema:

* ``time_ms = ts * 1000`` (a ``ts`` outside the trace's time range, 1970 to the year 9999, is
  refused: it would wrap around); ``host`` is one label for the whole data set (which VMs shared a
  physical host is not in the data); ``guest = "vm<id>"``.
* ``provisioned_bytes = mem_prov_kb * 1024``; ``working_set_bytes = mem_use_kb * 1024``: "working
  set" here is VMware's sampled active-memory estimate, not resident memory and not a histogram.
  No histogram, page cache, refault or swap data exists in the source; those columns stay null.

Documented defects are cleaned or flagged, never silently dropped (see
:data:`wsrl.trace.schema.FLAG_DESCRIPTIONS`); the counts go to ``import-report.json``:

* several rows for one (VM, time) are merged into one: the row with a known provisioned size and
  the largest working set is kept (the conservative choice for a controller), flagged
  ``duplicate_ts`` or ``duplicate_ts_conflict``;
* zero provisioned memory becomes null (unknown), flagged ``zero_provisioned``;
* a working set above the provisioned size is kept as recorded, flagged;
* gaps of more than twice the usual interval (e.g. the day between months) are flagged on the
  sample after the gap;
* guest-level defects (mostly zero working set, often above provisioned, under 20 days covered)
  are flagged on every row of that guest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from wsrl.errors import ImportDataError, TraceError
from wsrl.trace.files import open_regular
from wsrl.trace.schema import MAX_TIME_MS, MIN_TIME_MS
from wsrl.trace.writer import TraceWriter, write_json_atomically

HOST_LABEL = "bitbrains-rnd"
KIB = 1024
MS_PER_S = 1000
SHORT_COVERAGE_S = 20 * 86_400
MOSTLY_ZERO_SHARE = 0.9
OFTEN_ABOVE_SHARE = 0.01
ROWS_PER_PART = 1_000_000
IMPORT_REPORT_NAME = "import-report.json"
SOURCE_COLUMNS = {"vm": "integer", "ts": "integer", "mem_prov_kb": "floating", "mem_use_kb": "floating"}

# Bit per row flag, in the order flags are listed in a row.
ROW_FLAGS = (
    "duplicate_ts",
    "duplicate_ts_conflict",
    "zero_provisioned",
    "usage_above_provisioned",
    "gap_before",
    "guest_mostly_zero",
    "guest_often_above_provisioned",
    "guest_short_coverage",
)


@dataclass
class ImportReport:
    """What an import read, wrote, merged and flagged."""

    source: str
    rows_read: int = 0
    rows_written: int = 0
    guests: int = 0
    duplicate_rows_merged: int = 0
    rows_flagged: dict[str, int] = field(default_factory=dict)
    guests_flagged: dict[str, list[str]] = field(default_factory=dict)
    sample_interval_s: int = 0

    def to_json_dict(self) -> dict[str, object]:
        """JSON form (as written to ``import-report.json``)."""
        return asdict(self)


def _load_columns(source: Path) -> dict[str, np.ndarray]:
    try:
        with open_regular(source) as handle:  # a FIFO or device is refused, never waited on
            table = pq.read_table(handle, columns=list(SOURCE_COLUMNS))
    except FileNotFoundError:
        raise ImportDataError(f"{source}: no such file") from None
    except TraceError as exc:
        raise ImportDataError(str(exc)) from None
    except (pa.ArrowInvalid, OSError, KeyError) as exc:
        raise ImportDataError(f"{source}: not a Bitbrains memory Parquet file: {exc}") from None
    columns = {}
    for name, kind in SOURCE_COLUMNS.items():
        arrow_type = table.schema.field(name).type
        ok = (
            pa.types.is_integer(arrow_type)
            if kind == "integer"
            else pa.types.is_floating(arrow_type) or pa.types.is_integer(arrow_type)
        )
        if not ok:
            raise ImportDataError(f"{source}: column {name}: expected {kind} values, found {arrow_type}")
        column = table.column(name)
        if column.null_count:
            raise ImportDataError(f"{source}: column {name}: {column.null_count} null value(s)")
        columns[name] = column.to_numpy()
    for name in ("mem_prov_kb", "mem_use_kb"):
        values = columns[name].astype(np.float64)
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ImportDataError(
                f"{source}: column {name}: {int(bad.sum())} negative or non-finite value(s), "
                f"first at row {row} ({values[row]})"
            )
        columns[name] = values
    ts = columns["ts"]
    outside = (ts < MIN_TIME_MS // MS_PER_S) | (ts > MAX_TIME_MS // MS_PER_S)
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise ImportDataError(
            f"{source}: column ts: {int(outside.sum())} UNIX time(s) before 1970 or after the year 9999, "
            f"first at row {row} ({int(ts[row])})"
        )
    return columns


def _time_window(ts: np.ndarray, start_s: int | None, end_s: int | None) -> np.ndarray:
    keep = np.ones(len(ts), dtype=bool)
    if start_s is not None:
        keep &= ts >= start_s
    if end_s is not None:
        keep &= ts < end_s
    return keep


def _merge_duplicates(
    vm: np.ndarray, ts: np.ndarray, prov: np.ndarray, use: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Order rows and pick one per (vm, ts). Returns (order of kept rows, duplicate mask, conflict mask)."""
    # Within a (vm, ts) group the last row after this sort has a known size and the largest use.
    order = np.lexsort((use, prov > 0, ts, vm))
    vm_s, ts_s, prov_s, use_s = vm[order], ts[order], prov[order], use[order]
    new_group = np.ones(len(order), dtype=bool)
    new_group[1:] = (vm_s[1:] != vm_s[:-1]) | (ts_s[1:] != ts_s[:-1])
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:], len(order)) - 1
    sizes = ends - starts + 1
    duplicate = sizes > 1
    conflict = np.zeros(len(starts), dtype=bool)
    if len(starts):
        conflict = (np.minimum.reduceat(prov_s, starts) != np.maximum.reduceat(prov_s, starts)) | (
            np.minimum.reduceat(use_s, starts) != np.maximum.reduceat(use_s, starts)
        )
    return order[ends], duplicate & ~conflict, duplicate & conflict


def _flag_lists(bits: np.ndarray) -> pa.Array:
    """Turn a per-row bit mask over :data:`ROW_FLAGS` into a ``list<string>`` column (null if none)."""
    counts = np.zeros(len(bits), dtype=np.int64)
    for bit in range(len(ROW_FLAGS)):
        counts += (bits >> bit) & 1
    offsets = np.zeros(len(bits) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    values = np.empty(int(offsets[-1]), dtype=np.int32)
    for bit in range(len(ROW_FLAGS)):
        rows = np.flatnonzero((bits >> bit) & 1)
        lower = bits[rows] & ((1 << bit) - 1)
        rank = np.zeros(len(rows), dtype=np.int64)
        for lower_bit in range(bit):
            rank += (lower >> lower_bit) & 1
        values[offsets[rows] + rank] = bit
    names = pa.array(ROW_FLAGS, type=pa.string()).take(pa.array(values))
    mask = pa.array(counts == 0)
    return pa.ListArray.from_arrays(pa.array(offsets), names, mask=mask)


def import_bitbrains(
    source: str | Path,
    out: str | Path,
    *,
    vms: Sequence[int] | None = None,
    start_s: int | None = None,
    end_s: int | None = None,
    host: str = HOST_LABEL,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Import the Bitbrains memory Parquet file at ``source`` into a new trace at ``out``.

    Args:
        source: the data set's ``memory.parquet``.
        out: trace directory to create (must be empty or new).
        vms: import only these VM ids.
        start_s: import samples at or after this UNIX time (s).
        end_s: import samples before this UNIX time (s).
        host: host label written on every row.
        progress: called as ``progress(rows_done, rows_total)`` while writing.

    Raises:
        ImportDataError: the source is missing, malformed, or the selection is empty.
        TraceError: ``out`` cannot be written.

    """
    source = Path(source)
    columns = _load_columns(source)
    if vms is not None:
        chosen = np.isin(columns["vm"], np.asarray(list(vms)))
        columns = {name: values[chosen] for name, values in columns.items()}
    # Guest-level flags and gaps describe a VM in the whole data set, so the time window is
    # applied only after they are computed.
    in_window = _time_window(columns["ts"], start_s, end_s)
    report = ImportReport(source=str(source), rows_read=int(in_window.sum()))
    if report.rows_read == 0:
        raise ImportDataError(f"{source}: no rows match the selection (vms, start, end)")
    vm, ts, prov, use = (
        columns["vm"].astype(np.int64),
        columns["ts"].astype(np.int64),
        columns["mem_prov_kb"],
        columns["mem_use_kb"],
    )
    kept, duplicate, conflict = _merge_duplicates(vm, ts, prov, use)
    vm, ts, prov, use = vm[kept], ts[kept], prov[kept], use[kept]

    bits = np.zeros(len(vm), dtype=np.int64)

    def flag(name: str, mask: np.ndarray) -> None:
        nonlocal bits
        bits |= mask.astype(np.int64) << ROW_FLAGS.index(name)

    flag("duplicate_ts", duplicate)
    flag("duplicate_ts_conflict", conflict)
    zero_provisioned = prov == 0
    flag("zero_provisioned", zero_provisioned)
    flag("usage_above_provisioned", (use > prov) & ~zero_provisioned)

    same_vm = vm[1:] == vm[:-1]
    steps = np.diff(ts)[same_vm]
    interval_s = int(np.median(steps)) if steps.size else 300
    report.sample_interval_s = interval_s
    gap = np.zeros(len(vm), dtype=bool)
    gap[1:] = same_vm & (np.diff(ts) > 2 * interval_s)
    flag("gap_before", gap)

    guest_ids, guest_start = np.unique(vm, return_index=True)
    guest_rows = np.diff(np.append(guest_start, len(vm)))
    guest_of_row = np.repeat(np.arange(len(guest_ids)), guest_rows)
    zero_share = np.bincount(guest_of_row, weights=(use == 0)) / guest_rows
    above_share = np.bincount(guest_of_row, weights=((use > prov) & ~zero_provisioned)) / guest_rows
    covered_s = guest_rows * interval_s
    for name, guest_mask in (
        ("guest_mostly_zero", zero_share > MOSTLY_ZERO_SHARE),
        ("guest_often_above_provisioned", above_share > OFTEN_ABOVE_SHARE),
        ("guest_short_coverage", covered_s < SHORT_COVERAGE_S),
    ):
        flag(name, guest_mask[guest_of_row])
        report.guests_flagged[name] = [f"vm{int(v)}" for v in guest_ids[guest_mask]]
    window = _time_window(ts, start_s, end_s)
    report.duplicate_rows_merged = report.rows_read - int(window.sum())
    ts, prov, use, bits, guest_of_row = (
        ts[window],
        prov[window],
        use[window],
        bits[window],
        guest_of_row[window],
    )
    zero_provisioned = zero_provisioned[window]
    present = np.unique(guest_of_row)
    present_names = {f"vm{int(guest_ids[i])}" for i in present}
    report.guests_flagged = {
        name: [g for g in names if g in present_names] for name, names in report.guests_flagged.items()
    }
    report.rows_flagged = {name: int(((bits >> i) & 1).sum()) for i, name in enumerate(ROW_FLAGS)}
    report.guests = len(present)

    guest_names = pa.array([f"vm{int(v)}" for v in guest_ids], type=pa.string())
    table = pa.table(
        {
            "time_ms": pa.array(ts * MS_PER_S, type=pa.int64()),
            "host": pa.array([host], type=pa.string()).take(pa.array(np.zeros(len(ts), dtype=np.int32))),
            "guest": guest_names.take(pa.array(guest_of_row.astype(np.int32))),
            "provisioned_bytes": pa.array(np.rint(prov * KIB).astype(np.int64), mask=zero_provisioned),
            "working_set_bytes": pa.array(np.rint(use * KIB).astype(np.int64)),
            "flags": _flag_lists(bits),
        }
    )
    meta = {
        "dataset": "Bitbrains GWA-T-12 Rnd (Shen, van Beek, Iosup, CCGrid 2015)",
        "working_set_bytes": "VMware sampled active-memory estimate",
        "imported_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "selection": {"vms": list(vms) if vms is not None else None, "start_s": start_s, "end_s": end_s},
    }
    with TraceWriter(
        out,
        source="import:bitbrains",
        description=f"imported from {source.name}",
        meta=meta,
        flush_rows=ROWS_PER_PART,
    ) as writer:
        for begin in range(0, table.num_rows, ROWS_PER_PART):
            writer.append_table(table.slice(begin, ROWS_PER_PART))
            if progress is not None:
                progress(min(begin + ROWS_PER_PART, table.num_rows), table.num_rows)
        writer.flush()
        report.rows_written = writer.rows_written
    write_json_atomically(Path(out) / IMPORT_REPORT_NAME, report.to_json_dict())
    return report
