"""The human table of a fidelity measurement: one line per rung (printed as the run goes)."""

from __future__ import annotations

import math
from typing import Any

from wsrl.units import MIB


def _fmt(value: float | None, width: int, decimals: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{'-':>{width}}"
    return f"{value:{width}.{decimals}f}"


TABLE_HEADER = (
    f"{'case':<16} {'rung':<18} {'limit MiB':>9} {'outcome':<10} {'anon rf/s':>9} {'file rf/s':>9} "
    f"{'anon rf/touch':>13} {'majflt/s':>9} {'psi some':>8} {'grp some':>8} {'grp full':>8} "
    f"{'busy':>6} {'oom':>3}  resident fraction"
)


def format_row(result: dict[str, Any]) -> str:
    """One line of the human table for a rung result."""
    w = result.get("window") or {}
    workload = result.get("workload") or {}
    resident = " ".join(
        f"{p['name']}:{_fmt(p.get('resident_fraction_mean'), 0, 2)}" for p in workload.get("populations", [])
    )
    limit = result.get("populations_limit_bytes")
    return (
        f"{result['case']:<16} {result['rung']['label']:<18} {_fmt(limit / MIB if limit else None, 9, 1)} "
        f"{result['outcome']:<10} {_fmt(w.get('refault_anon_per_s'), 9, 1)} "
        f"{_fmt(w.get('refault_file_per_s'), 9, 1)} {_fmt(w.get('anon_refaults_per_touch'), 13, 4)} "
        f"{_fmt(w.get('pgmajfault_per_s'), 9, 1)} {_fmt(w.get('psi_some_fraction'), 8, 4)} "
        f"{_fmt(w.get('group_psi_some_fraction'), 8, 4)} {_fmt(w.get('group_psi_full_fraction'), 8, 4)} "
        f"{_fmt(workload.get('busy_fraction'), 6, 3)} {result['oom_kills']:>3}  {resident}"
    )


def format_table(doc: dict[str, Any]) -> str:
    """The human table of a whole measurement document."""
    return "\n".join([TABLE_HEADER, *(format_row(r) for r in doc["results"])])
