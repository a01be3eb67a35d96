"""The trace keys of a scenario's guest entries: ``trace_start``, the trace directory, the trace guests.

Kept apart from the replay itself (:mod:`wsrl.sim.trace_demand`) so that a scenario is fully
checked when it loads without building anything.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from wsrl.errors import ConfigError
from wsrl.sim.config_files import repo_root
from wsrl.units import parse_duration_s


def parse_trace_start(value: str | float | datetime | date) -> tuple[str, float]:
    """Parse ``trace_start``: ``("abs", epoch_ms)`` for a date/time, ``("offset", seconds)`` otherwise.

    A number of seconds >= 0 or a duration string (``"6h"``, ``"1h30m"``, ``"90 m"``, ``"1w"``:
    :func:`wsrl.units.parse_duration_s`) is an offset from the first sample of the selected trace
    guests; an ISO date or date-time (naive means UTC) is an absolute start.

    Raises:
        ValueError: none of those (negative, infinite or NaN numbers included).

    """
    if isinstance(value, bool):
        raise ValueError("must be an ISO date/time or an offset (got a boolean)")
    if isinstance(value, int | float):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"an offset must be a finite number of seconds >= 0 (got {value})")
        return "offset", float(value)
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return "abs", moment.timestamp() * 1000.0
    if isinstance(value, date):
        return "abs", datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp() * 1000.0
    try:
        return "offset", parse_duration_s(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is neither an ISO date/time (2013-07-15T06:00) nor a positive offset "
            "(3600, 90s, 6h, 1h30m, 2d)"
        ) from None
    return parse_trace_start(moment)


def resolve_trace_dir(ref: str, base_dir: Path | None) -> Path:
    """The trace directory ``ref`` names, relative to ``base_dir`` (the scenario folder), else to the repo."""
    ref_path = Path(ref)
    candidates = [ref_path] if ref_path.is_absolute() else []
    if not ref_path.is_absolute():
        if base_dir is not None:
            candidates.append(base_dir / ref_path)
        candidates.append(repo_root() / ref_path)
    for cand in candidates:
        if cand.is_dir():
            return cand.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise ConfigError("<scenario>", [("trace", f"no such trace directory {ref!r} (tried {tried})")])


def select_trace_guests(trace_dir: Path, wanted: str | list[str]) -> list[str]:
    """Keys of the trace guests to replay: ``guest``, or ``host/guest`` where a name is on several hosts."""
    from wsrl.errors import TraceError
    from wsrl.trace.reader import TraceReader  # pyarrow: only when a scenario has trace guests

    try:
        table = TraceReader(trace_dir).read_table(["host", "guest"], sort=False)
    except TraceError as exc:
        raise ConfigError("<scenario>", [("trace", str(exc))]) from None
    pairs = sorted(set(zip(table.column("host").to_pylist(), table.column("guest").to_pylist(), strict=True)))
    if not pairs:
        raise ConfigError("<scenario>", [("trace", f"{trace_dir}: the trace holds no samples")])
    guest_hosts: dict[str, list[str]] = {}
    for host, guest in pairs:
        guest_hosts.setdefault(guest, []).append(host)
    keys = sorted((g if len(guest_hosts[g]) == 1 else f"{h}/{g}" for h, g in pairs), key=_natural_key)
    if wanted == "all":
        return keys
    unknown = [w for w in wanted if w not in keys]
    if unknown:
        raise ConfigError(
            "<scenario>",
            [("trace_guests", f"not in the trace: {', '.join(unknown)} (available: {', '.join(keys)})")],
        )
    if len(set(wanted)) != len(wanted):
        raise ConfigError("<scenario>", [("trace_guests", "names must be unique")])
    return list(wanted)


def _natural_key(name: str) -> list[Any]:
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name)]
