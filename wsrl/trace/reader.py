"""Read traces: Arrow tables for vectorised consumers, samples in time order per host for the rest."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from wsrl.errors import TraceError
from wsrl.trace.record import GuestSample
from wsrl.trace.schema import TRACE_SCHEMA
from wsrl.trace.writer import list_parts, read_manifest

SORT_KEYS = [("host", "ascending"), ("time_ms", "ascending"), ("guest", "ascending")]


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
            return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()

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

    Only committed parts are read; a ``.tmp`` part left by a killed writer is ignored.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise TraceError(f"{self.directory}: no such trace directory")
        self.manifest = read_manifest(self.directory)
        self.part_paths = list_parts(self.directory)

    def _dataset(self) -> ds.Dataset:
        try:
            return ds.dataset([str(p) for p in self.part_paths], schema=TRACE_SCHEMA, format="parquet")
        except (pa.ArrowInvalid, OSError) as exc:
            raise TraceError(f"{self.directory}: unreadable part: {exc}") from None

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
        try:
            table = self._dataset().to_table(columns=wanted, filter=condition)
        except (pa.ArrowInvalid, OSError) as exc:
            raise TraceError(f"{self.directory}: unreadable part: {exc}") from None
        if sort:
            table = table.sort_by(SORT_KEYS)
            if columns is not None:
                table = table.select(list(columns))
        return table

    def hosts(self) -> list[str]:
        """Host names in the trace, sorted."""
        table = self.read_table(["host"], sort=False)
        return sorted(pc.unique(table.column("host")).to_pylist())

    def iter_samples(self, host: str | None = None, batch_rows: int = 65_536) -> Iterator[GuestSample]:
        """Every sample, host by host, in time order (guests in name order within a time)."""
        for host_name in [host] if host is not None else self.hosts():
            table = self.read_table(hosts=[host_name])
            for batch in table.to_batches(max_chunksize=batch_rows):
                for row in batch.to_pylist():
                    yield GuestSample.from_row(row)

    def iter_host_steps(self, host: str | None = None) -> Iterator[tuple[str, int, list[GuestSample]]]:
        """``(host, time_ms, samples of every guest at that time)`` in time order per host."""
        current: tuple[str, int] | None = None
        group: list[GuestSample] = []
        for sample in self.iter_samples(host):
            key = (sample.host, sample.time_ms)
            if key != current and group:
                yield (*current, group)  # type: ignore[misc]
                group = []
            current = key
            group.append(sample)
        if group:
            yield (*current, group)  # type: ignore[misc]

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
