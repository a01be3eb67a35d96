"""One guest at one sample time: the typed view of a trace row."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from wsrl.histogram import ALL_NODES, Histogram


@dataclass
class GuestSample:
    """One row of a trace. Column meanings are in :mod:`wsrl.trace.schema`; ``None`` = unknown."""

    time_ms: int
    host: str
    guest: str
    histogram: Histogram | None = None
    hist_horizon_ms: int | None = None
    provisioned_bytes: int | None = None
    visible_bytes: int | None = None
    target_bytes: int | None = None
    usage_bytes: int | None = None
    working_set_bytes: int | None = None
    refault_anon_total: int | None = None
    refault_file_total: int | None = None
    major_faults_total: int | None = None
    swap_bytes: int | None = None
    swap_in_total: int | None = None
    swap_out_total: int | None = None
    psi_some_avg10: float | None = None
    psi_full_avg10: float | None = None
    psi_some_total_us: int | None = None
    psi_full_total_us: int | None = None
    oom_kills_total: int | None = None
    events: list[str] = field(default_factory=list)
    action_target_bytes: int | None = None
    action_policy: str | None = None
    flags: list[str] = field(default_factory=list)

    def to_row(self) -> dict[str, Any]:
        """The row as the writer stores it (histogram split into its list columns)."""
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "histogram"}
        if self.histogram is None:
            row.update(hist_edges_ms=None, hist_anon_bytes=None, hist_file_bytes=None, hist_extra_bytes=None)
        else:
            h = self.histogram
            row["hist_edges_ms"] = list(h.edges_ms)
            row["hist_anon_bytes"] = [int(v) for v in h.anon_bytes]
            row["hist_file_bytes"] = [int(v) for v in h.file_bytes]
            extras = [(t, [int(v) for v in h.type_bytes(t)]) for t in h.types[2:]]
            row["hist_extra_bytes"] = extras or None
        row["events"] = list(self.events) or None
        row["flags"] = list(self.flags) or None
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> GuestSample:
        """Inverse of :meth:`to_row` (accepts a row from ``pyarrow.Table.to_pylist``)."""
        values = dict(row)
        edges = values.pop("hist_edges_ms")
        anon = values.pop("hist_anon_bytes")
        file = values.pop("hist_file_bytes")
        extras = values.pop("hist_extra_bytes")
        histogram = None
        if edges is not None:
            rows: dict[str, list[int]] = {"anon": anon, "file": file}
            rows.update(dict(extras or []))
            histogram = Histogram(values["guest"], ALL_NODES, edges, rows)
        values["events"] = list(values.get("events") or [])
        values["flags"] = list(values.get("flags") or [])
        return cls(histogram=histogram, **values)
