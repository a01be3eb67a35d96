"""Read traces: Arrow tables for vectorised consumers, samples in time order per host for the rest.

A damaged part (truncated, bytes flipped, empty, another schema, invalid UTF-8) never escapes as
anything but :class:`~wsrl.errors.TraceError` naming the part. With ``skip_bad_parts=True`` the
reader instead leaves such parts out, lists them in :attr:`TraceReader.bad_parts`, and reads every
intact part: what a crash or a full disk damaged costs that part only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from wsrl.errors import TraceError, WsrlError
from wsrl.trace.files import open_regular
from wsrl.trace.record import GuestSample
from wsrl.trace.schema import MAX_TIME_MS, MIN_TIME_MS, REQUIRED_COLUMNS, TRACE_SCHEMA
from wsrl.trace.writer import list_parts, read_manifest

SORT_KEYS = [("host", "ascending"), ("time_ms", "ascending"), ("guest", "ascending")]
ARROW_ERRORS: tuple[type[BaseException], ...] = (pa.ArrowException, OSError, ValueError)
"""What pyarrow raises for a file it cannot read (``ValueError`` covers invalid UTF-8 in strings)."""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def part_problem(path: Path) -> str | None:
    """Why a part file cannot be read as part of a trace, from its footer alone (``None``: it can).

    It must be a regular file (a FIFO or device is refused without being read, never waited
    on); the footer must parse and the schema must hold the required columns; every column the
    trace schema knows must have the schema's type (unknown columns are ignored by the reader).
    """
    try:
        with open_regular(path) as handle:
            schema = pq.read_schema(handle)
    except TraceError as exc:
        return str(exc).removeprefix(f"{path}: ")
    except ARROW_ERRORS as exc:
        return f"unreadable Parquet: {_one_line(exc)}"
    names = schema.names
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    wrong = sorted(
        {f.name for f in schema if f.name in TRACE_SCHEMA.names and f.type != TRACE_SCHEMA.field(f.name).type}
    )
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if missing or wrong or duplicated:
        return f"schema differs: missing required {missing}, wrong type {wrong}, repeated {duplicated}"
    return None


@dataclass(frozen=True)
class TraceSummary:
    """What a trace holds, as ``wsrl trace info`` reports it."""

    hosts: int
    guests: int
    samples: int
    start_ms: int | None
    end_ms: int | None
    parts: int
    schema_version: int
    source: str
    columns_with_data: tuple[str, ...]

    def to_json_dict(self) -> dict[str, Any]:
        """JSON form; ``start``/``end`` are ISO-8601 UTC, ``*_ms`` the raw epoch ms."""
        from datetime import UTC, datetime

        def iso(ms: int | None) -> str | None:
            if ms is None or not MIN_TIME_MS <= ms <= MAX_TIME_MS:  # out of range: validate says so
                return None
            return datetime.fromtimestamp(ms / 1000, UTC).isoformat()

        return {
            "hosts": self.hosts,
            "guests": self.guests,
            "samples": self.samples,
            "start": iso(self.start_ms),
            "end": iso(self.end_ms),
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "parts": self.parts,
            "schema_version": self.schema_version,
            "source": self.source,
            "columns_with_data": list(self.columns_with_data),
        }


class TraceReader:
    """Read a trace directory written by :class:`wsrl.trace.writer.TraceWriter`.

    Only committed parts are read; a ``.tmp`` part left by a killed writer is ignored. Every
    part's footer and schema are checked when the reader is made (:func:`part_problem`), and its
    data when it is read (decoding, full Arrow validation: offsets, UTF-8).

    Args:
        directory: the trace directory.
        skip_bad_parts: leave damaged parts out (listed in :attr:`bad_parts`) instead of raising.

    Raises:
        TraceError: not a trace, or (without ``skip_bad_parts``) a damaged part, named.

    """

    def __init__(self, directory: str | Path, *, skip_bad_parts: bool = False) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise TraceError(f"{self.directory}: no such trace directory")
        self.manifest = read_manifest(self.directory)
        self.skip_bad_parts = skip_bad_parts
        self.bad_parts: list[tuple[Path, str]] = []
        """Parts left out with ``skip_bad_parts``, each with why (grows as reads find damage)."""
        self.part_paths: list[Path] = []
        for path in list_parts(self.directory):
            problem = part_problem(path)
            if problem is None:
                self.part_paths.append(path)
            else:
                self._bad_part(path, problem)

    def _bad_part(self, path: Path, problem: str) -> None:
        if not self.skip_bad_parts:
            raise TraceError(f"{path}: {problem}")
        self.bad_parts.append((path, problem))
        if path in self.part_paths:
            self.part_paths.remove(path)

    def _scan(self, paths: Sequence[Path], columns: list[str] | None, condition: Any) -> pa.Table:
        """Read and fully validate ``paths`` as one table; raises what pyarrow raises (or ValueError)."""
        dataset = ds.dataset([str(p) for p in paths], schema=TRACE_SCHEMA, format="parquet")
        table = dataset.to_table(columns=columns, filter=condition)
        table.validate(full=True)
        for name in REQUIRED_COLUMNS:
            if name in table.column_names and table.column(name).null_count:
                raise ValueError(f"column {name}: {table.column(name).null_count} null value(s)")
        return table

    def _read(self, columns: list[str] | None, condition: Any) -> pa.Table:
        """All parts as one table; on damage, part by part to name (or skip) the damaged ones."""
        try:
            return self._scan(self.part_paths, columns, condition)
        except ARROW_ERRORS as exc:
            combined_error = exc
        known_bad = len(self.bad_parts)
        tables = []
        for path in list(self.part_paths):
            try:
                tables.append(self._scan([path], columns, condition))
            except ARROW_ERRORS as exc:
                self._bad_part(path, f"unreadable part: {_one_line(exc)}")
        if len(self.bad_parts) == known_bad:  # every part reads alone: not a damaged part
            raise TraceError(f"{self.directory}: unreadable: {_one_line(combined_error)}")
        if not tables:
            return TRACE_SCHEMA.empty_table().select(columns if columns is not None else TRACE_SCHEMA.names)
        return pa.concat_tables(tables)

    def read_table(
        self,
        columns: Sequence[str] | None = None,
        *,
        hosts: Sequence[str] | None = None,
        guests: Sequence[str] | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        sort: bool = True,
    ) -> pa.Table:
        """Samples as one Arrow table, sorted by host, time, guest (unless ``sort=False``).

        ``start_ms`` is inclusive, ``end_ms`` exclusive.
        """
        unknown = [c for c in columns or [] if c not in TRACE_SCHEMA.names]
        if unknown:
            raise TraceError(f"{self.directory}: not trace columns: {unknown}")
        if not self.part_paths:
            return TRACE_SCHEMA.empty_table().select(list(columns) if columns else TRACE_SCHEMA.names)
        condition = None
        for clause in (
            pc.field("host").isin(list(hosts)) if hosts is not None else None,
            pc.field("guest").isin(list(guests)) if guests is not None else None,
            pc.field("time_ms") >= start_ms if start_ms is not None else None,
            pc.field("time_ms") < end_ms if end_ms is not None else None,
        ):
            if clause is not None:
                condition = clause if condition is None else condition & clause
        wanted = list(columns) if columns is not None else None
        if wanted is not None and sort:
            wanted = list(dict.fromkeys([*wanted, "host", "time_ms", "guest"]))
        table = self._read(wanted, condition)
        if sort:
            table = table.sort_by(SORT_KEYS)
            if columns is not None:
                table = table.select(list(columns))
        return table

    def hosts(self) -> list[str]:
        """Host names in the trace, sorted."""
        table = self.read_table(["host"], sort=False)
        return sorted(pc.drop_null(pc.unique(table.column("host"))).to_pylist())

    def iter_samples(self, host: str | None = None, batch_rows: int = 65_536) -> Iterator[GuestSample]:
        """Every sample, host by host, in time order (guests in name order within a time)."""
        for host_name in [host] if host is not None else self.hosts():
            table = self.read_table(hosts=[host_name])
            for batch in table.to_batches(max_chunksize=batch_rows):
                for row in batch.to_pylist():
                    try:
                        sample = GuestSample.from_row(row)
                    except (WsrlError, TypeError, ValueError) as exc:  # a histogram its columns cannot make
                        where = f"host {row.get('host')!r} guest {row.get('guest')!r} at {row.get('time_ms')}"
                        raise TraceError(f"{self.directory}: sample of {where}: {_one_line(exc)}") from None
                    yield sample

    def iter_host_steps(self, host: str | None = None) -> Iterator[tuple[str, int, list[GuestSample]]]:
        """``(host, time_ms, samples of every guest at that time)`` in time order per host."""
        current: tuple[str, int] | None = None
        group: list[GuestSample] = []
        for sample in self.iter_samples(host):
            key = (sample.host, sample.time_ms)
            if key != current and group:
                assert current is not None  # set with the group's first sample
                yield (*current, group)
                group = []
            current = key
            group.append(sample)
        if group:
            assert current is not None
            yield (*current, group)

    def summary(self) -> TraceSummary:
        """Counts and time range."""
        table = self.read_table(sort=False)
        samples = table.num_rows
        start = end = None
        if samples:
            bounds = pc.min_max(table.column("time_ms")).as_py()
            start, end = bounds["min"], bounds["max"]
        host_guest = pc.binary_join_element_wise(table.column("host"), table.column("guest"), "\x00")
        with_data = [name for name in table.column_names if table.column(name).null_count < samples]
        return TraceSummary(
            hosts=len(pc.unique(table.column("host"))) if samples else 0,
            guests=len(pc.unique(host_guest)) if samples else 0,
            samples=samples,
            start_ms=start,
            end_ms=end,
            parts=len(self.part_paths),
            schema_version=int(self.manifest["schema_version"]),
            source=str(self.manifest.get("source", "unknown")),
            columns_with_data=tuple(with_data),
        )
