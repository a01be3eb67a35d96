"""The trace store's schema: one row per guest per sample, versioned.

A trace is a directory (see :mod:`wsrl.trace.writer` for the layout) of Parquet part files that all
carry this schema. Every column but ``time_ms``, ``host`` and ``guest`` may be null: real sources
know different things (the Bitbrains history has no histogram, a memcg has no balloon). Null means
"not known", never zero. ``docs/trace-format.md`` is generated from the descriptions below.

Counters (``*_total``) are cumulative as the source reports them; a consumer differences them.
Byte columns are bytes, times are ms since the UNIX epoch (UTC), durations are ms or us as named.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 2
"""Bumped whenever a column is added, removed or changes meaning; readers refuse newer versions.

Older versions are read: a column added since (:data:`COLUMN_SINCE_VERSION`) reads as null.
Version 2 added ``hist_horizon_ms``."""

MIN_TIME_MS = 0
"""Earliest sample time a trace holds: the UNIX epoch."""
MAX_TIME_MS = 253_402_300_799_999
"""Latest sample time a trace holds: 9999-12-31T23:59:59.999Z, the last instant a date shows.

Importers refuse times outside ``[MIN_TIME_MS, MAX_TIME_MS]`` (a source's seconds times 1000 would
otherwise wrap around int64) and ``wsrl trace validate`` reports them."""

FORMAT_NAME = "wsrl-trace"
SCHEMA_VERSION_KEY = b"wsrl.schema_version"

# Data-quality flags a row may carry (importers flag defects instead of dropping rows).
FLAG_DESCRIPTIONS: dict[str, str] = {
    "duplicate_ts": "the source had several rows for this guest and time; they were identical "
    "and one was kept",
    "duplicate_ts_conflict": "the source had several differing rows for this guest and time; the "
    "row with a known provisioned size and the largest working set was kept",
    "zero_provisioned": "the source reported 0 provisioned memory; provisioned_bytes is null",
    "usage_above_provisioned": "the source's usage or working set exceeds its provisioned size",
    "gap_before": "more than twice the usual sampling interval passed since this guest's previous sample",
    "guest_mostly_zero": "over 90 % of this guest's samples report zero working set",
    "guest_often_above_provisioned": "over 1 % of this guest's samples report a working set above "
    "the provisioned size",
    "guest_short_coverage": "this guest's samples cover under 20 days",
}


def _field(name: str, type_: pa.DataType, description: str, *, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={b"description": description.encode()})


BYTES_LIST = pa.list_(pa.int64())

TRACE_FIELDS: tuple[pa.Field, ...] = (
    _field("time_ms", pa.int64(), "sample time, ms since the UNIX epoch (UTC)", nullable=False),
    _field("host", pa.string(), "host the guest ran on (or the recording's host label)", nullable=False),
    _field("guest", pa.string(), "guest name: a VM name or a memcg path", nullable=False),
    _field(
        "hist_edges_ms",
        BYTES_LIST,
        "working-set histogram: finite upper bounds of its bins in ms (the last bin is open-ended); "
        "null when the source has no histogram. NUMA nodes are merged.",
    ),
    _field("hist_anon_bytes", BYTES_LIST, "histogram: anonymous bytes per bin (len = edges + 1)"),
    _field("hist_file_bytes", BYTES_LIST, "histogram: file-backed bytes per bin (len = edges + 1)"),
    _field(
        "hist_extra_bytes",
        pa.map_(pa.string(), BYTES_LIST),
        "histogram: bytes per bin of further memory types the source reported, by type name",
    ),
    _field(
        "hist_horizon_ms",
        pa.int64(),
        "histogram: the oldest idle age its source tells apart, ms: bytes in the bins past it are idle "
        "at least this long, their true ages unknown (the `referenced` source's last window); null "
        "when the source dates every bin (since schema version 2)",
    ),
    _field("provisioned_bytes", pa.int64(), "memory the guest was promised (VM RAM, memcg ceiling)"),
    _field("visible_bytes", pa.int64(), "guest-visible size now (RAM minus balloon; memcg limit)"),
    _field("target_bytes", pa.int64(), "guest-visible size requested: balloon target or memcg limit"),
    _field("usage_bytes", pa.int64(), "memory in use as the source counts it (memory.current, RSS)"),
    _field(
        "working_set_bytes",
        pa.int64(),
        "an external working-set estimate when the source gives one instead of a histogram "
        "(Bitbrains: VMware's sampled active memory)",
    ),
    _field("refault_anon_total", pa.int64(), "cumulative anon refaults (workingset_refault_anon)"),
    _field("refault_file_total", pa.int64(), "cumulative file refaults (workingset_refault_file)"),
    _field("major_faults_total", pa.int64(), "cumulative major page faults"),
    _field("swap_bytes", pa.int64(), "bytes of the guest in swap now"),
    _field("swap_in_total", pa.int64(), "cumulative pages swapped in"),
    _field("swap_out_total", pa.int64(), "cumulative pages swapped out"),
    _field("psi_some_avg10", pa.float64(), "memory PSI 'some' avg10, percent"),
    _field("psi_full_avg10", pa.float64(), "memory PSI 'full' avg10, percent"),
    _field("psi_some_total_us", pa.int64(), "cumulative memory PSI 'some' stall, us"),
    _field("psi_full_total_us", pa.int64(), "cumulative memory PSI 'full' stall, us"),
    _field("oom_kills_total", pa.int64(), "cumulative OOM kills inside the guest"),
    _field("events", pa.list_(pa.string()), "events since the previous sample (oom, balloon_stall, ...)"),
    _field("action_target_bytes", pa.int64(), "the target a controller set at this sample, if any"),
    _field("action_policy", pa.string(), "name of the policy that took the action"),
    _field("flags", pa.list_(pa.string()), "data-quality flags (see FLAG_DESCRIPTIONS)"),
)

COLUMN_SINCE_VERSION: dict[str, int] = {"hist_horizon_ms": 2}
"""Columns added after version 1, with the version that added them (older parts lack them)."""

TRACE_SCHEMA = pa.schema(TRACE_FIELDS, metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode()})
COLUMN_NAMES: tuple[str, ...] = tuple(f.name for f in TRACE_FIELDS)
REQUIRED_COLUMNS: tuple[str, ...] = ("time_ms", "host", "guest")
HISTOGRAM_COLUMNS: tuple[str, ...] = (
    "hist_edges_ms",
    "hist_anon_bytes",
    "hist_file_bytes",
    "hist_extra_bytes",
    "hist_horizon_ms",
)
NON_NEGATIVE_COLUMNS: tuple[str, ...] = tuple(
    f.name for f in TRACE_FIELDS if f.type in (pa.int64(), pa.float64()) and f.name not in ("time_ms",)
)


def conform(table: pa.Table) -> pa.Table:
    """Return ``table`` with exactly the trace columns, in order: missing ones null, types cast.

    Raises:
        KeyError: a column that is not part of the schema, or a required column missing.
        pyarrow.ArrowInvalid: a column cannot be cast to its schema type.

    """
    unknown = [name for name in table.column_names if name not in COLUMN_NAMES]
    if unknown:
        raise KeyError(f"not trace columns: {unknown}")
    missing_required = [name for name in REQUIRED_COLUMNS if name not in table.column_names]
    if missing_required:
        raise KeyError(f"required trace columns missing: {missing_required}")
    columns = []
    for field in TRACE_FIELDS:
        if field.name in table.column_names:
            column = table.column(field.name)
            if column.type != field.type:
                column = column.cast(field.type)
        else:
            column = pa.nulls(table.num_rows, type=field.type)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=TRACE_SCHEMA)


def schema_of_version(version: int) -> pa.Schema:
    """The columns a part written at schema ``version`` holds (1 to :data:`SCHEMA_VERSION`)."""
    fields_then = [f for f in TRACE_FIELDS if COLUMN_SINCE_VERSION.get(f.name, 1) <= version]
    return pa.schema(fields_then, metadata={SCHEMA_VERSION_KEY: str(version).encode()})


def schema_markdown() -> str:
    """The schema as a Markdown table (for docs/trace-format.md)."""
    lines = ["| column | type | null | meaning |", "| --- | --- | --- | --- |"]
    for field in TRACE_FIELDS:
        description = field.metadata[b"description"].decode()
        lines.append(
            f"| `{field.name}` | `{field.type}` | {'yes' if field.nullable else 'no'} | {description} |"
        )
    return "\n".join(lines)
