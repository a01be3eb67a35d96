"""Workload and scenario files: TOML, validated by pydantic, with errors that name file and key.

A *workload* (``envs/workloads/NAME.toml``) describes one guest's memory as a few page
populations, each with a size, an access interval and optional size/rate patterns
(:mod:`wsrl.sim.patterns`). A *scenario* (``envs/scenarios/NAME.toml``) puts guests on a host:
which workload (or which recorded trace) each guest runs, how big it is provisioned, its swap,
actuator, tier and so on. :func:`wsrl.sim.build.build_setup` turns a scenario into arrays.

Every error a file can cause is a :class:`wsrl.errors.ConfigError` whose message names the file
and the dotted key path (``envs/scenarios/x.toml: guest[2].provisioned_gib: must be > 0``);
unknown keys are errors so that typos do not pass silently.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

import wsrl
from wsrl.errors import ConfigError

MIB = 1024**2
GIB = 1024**3
MAX_GUESTS_PER_HOST = 64
"""A host holds at most this many guests (the ``dense`` scenario uses exactly 64)."""

ENVS_ENV_VAR = "WSRL_ENVS"

PATTERN_KINDS = ("constant", "diurnal", "sawtooth", "ramp", "phases", "bursts", "switching")

# Default anon refault latency by swap kind, microseconds (zram from domain-facts; ssd/hdd typical).
ANON_LATENCY_US_BY_SWAP = {"none": 0.0, "zram": 6.0, "ssd": 100.0, "hdd": 5000.0}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------------
# Patterns (multiplicative factors >= 0 on a population's size or access rate)
# --------------------------------------------------------------------------------------------


class ConstantPattern(_Strict):
    """A fixed factor."""

    kind: Literal["constant"]
    factor: float = Field(1.0, ge=0)


class DiurnalPattern(_Strict):
    """Daily cycle: ``1 + amplitude * cos(2π (t_h - peak_h) / period_h)``."""

    kind: Literal["diurnal"]
    amplitude: float = Field(ge=0, lt=1)
    period_h: float = Field(24.0, gt=0)
    peak_h: float = Field(14.0, ge=0)


class SawtoothPattern(_Strict):
    """Growth then drop (JVM heap between collections): linear ``low -> 1`` over ``period_s``."""

    kind: Literal["sawtooth"]
    low: float = Field(gt=0, le=1)
    period_s: float = Field(gt=0)


class RampPattern(_Strict):
    """Leak: ``min(1 + per_hour * hours, max_factor)``; back to 1 every ``restart_h`` if set."""

    kind: Literal["ramp"]
    per_hour: float = Field(ge=0)
    max_factor: float = Field(ge=1)
    restart_h: float | None = Field(None, gt=0)


class Phase(_Strict):
    """One phase of a :class:`PhasesPattern`."""

    duration_s: float = Field(gt=0)
    factor: float = Field(ge=0)


class PhasesPattern(_Strict):
    """A cycle of phases (batch job, compile): each lasts ``duration_s`` at its ``factor``."""

    kind: Literal["phases"]
    phases: list[Phase] = Field(min_length=1, max_length=64)


class BurstsPattern(_Strict):
    """Poisson bursts: ``per_hour`` arrivals, each ``duration_s`` long at factor ``peak`` (else 1).

    Populations of one guest with the same ``group`` share one burst state (they burst together).
    """

    kind: Literal["bursts"]
    per_hour: float = Field(gt=0)
    duration_s: float = Field(gt=0)
    peak: float = Field(ge=0)
    group: str = "bursts"


class SwitchingPattern(_Strict):
    """App switching: of ``slots`` apps in ``group`` one is in the foreground at a time.

    The foreground app changes after an exponential dwell of mean ``mean_dwell_s``; this
    population (app ``slot``) gets ``foreground`` when it is in front and ``background`` otherwise.
    """

    kind: Literal["switching"]
    group: str = "apps"
    slot: int = Field(ge=0)
    slots: int = Field(ge=1, le=256)
    mean_dwell_s: float = Field(gt=0)
    foreground: float = Field(1.0, ge=0)
    background: float = Field(ge=0)

    @model_validator(mode="after")
    def _slot_in_range(self) -> SwitchingPattern:
        if self.slot >= self.slots:
            raise ValueError(f"slot {self.slot} must be < slots ({self.slots})")
        return self


Pattern = Annotated[
    ConstantPattern
    | DiurnalPattern
    | SawtoothPattern
    | RampPattern
    | PhasesPattern
    | BurstsPattern
    | SwitchingPattern,
    Field(discriminator="kind"),
]


# --------------------------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------------------------


def _positive_seconds_or_never(value: Any) -> float:
    if isinstance(value, str):
        if value == "never":
            return math.inf
        raise ValueError(f'must be a positive number of seconds or "never" (got {value!r})')
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f'must be a positive number of seconds or "never" (got {type(value).__name__})')
    if not value > 0 or math.isnan(value):
        raise ValueError(f"must be > 0 (got {value})")
    return float(value)


class PopulationConfig(_Strict):
    """One page population of a workload: anon or file pages touched at one per-page rate."""

    name: str = Field(min_length=1)
    type: Literal["anon", "file"]
    size_mib: float | None = Field(None, ge=0)
    size_gib: float | None = Field(None, ge=0)
    access_interval_s: float
    size_pattern: Pattern | None = None
    rate_pattern: Pattern | None = None

    @field_validator("access_interval_s", mode="before")
    @classmethod
    def _check_interval(cls, value: Any) -> float:
        return _positive_seconds_or_never(value)

    @model_validator(mode="after")
    def _one_size(self) -> PopulationConfig:
        if (self.size_mib is None) == (self.size_gib is None):
            raise ValueError("give exactly one of size_mib and size_gib")
        return self

    @property
    def size_bytes(self) -> float:
        """Base size in bytes (before patterns, scale and jitter)."""
        return self.size_mib * MIB if self.size_mib is not None else self.size_gib * GIB  # type: ignore[operator]

    @property
    def rate_per_s(self) -> float:
        """Base per-page access rate in 1/s (0 for ``"never"``)."""
        return 0.0 if math.isinf(self.access_interval_s) else 1.0 / self.access_interval_s


class WorkloadConfig(_Strict):
    """A workload file: a named set of page populations with the source of its shape."""

    name: str = Field(min_length=1)
    description: str
    source: str
    population: list[PopulationConfig] = Field(min_length=1, max_length=32)

    @model_validator(mode="after")
    def _consistent(self) -> WorkloadConfig:
        names = [p.name for p in self.population]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"population names must be unique (repeated: {', '.join(dup)})")
        # Patterns that share stochastic state must agree on the parameters of that state.
        shared: dict[tuple[str, str], tuple[Any, ...]] = {}
        for pop in self.population:
            for pat in (pop.size_pattern, pop.rate_pattern):
                if isinstance(pat, SwitchingPattern):
                    key, params = ("switching", pat.group), (pat.slots, pat.mean_dwell_s)
                elif isinstance(pat, BurstsPattern):
                    key, params = ("bursts", pat.group), (pat.per_hour, pat.duration_s)
                else:
                    continue
                if shared.setdefault(key, params) != params:
                    what = "slots and mean_dwell_s" if key[0] == "switching" else "per_hour and duration_s"
                    raise ValueError(f"{key[0]} group {key[1]!r}: every population must use the same {what}")
        return self

    @property
    def base_bytes(self) -> float:
        """Sum of the populations' base sizes."""
        return sum(p.size_bytes for p in self.population)


# --------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------


class HostConfig(_Strict):
    """The physical host every guest of the scenario shares."""

    capacity_gib: float = Field(gt=0)
    reserve_gib: float = Field(0.0, ge=0)
    swap_latency_us: float = Field(200.0, gt=0)
    count: int = Field(1, ge=1, le=100_000)

    @model_validator(mode="after")
    def _reserve_below_capacity(self) -> HostConfig:
        if self.reserve_gib >= self.capacity_gib:
            raise ValueError(f"reserve_gib ({self.reserve_gib}) must be < capacity_gib ({self.capacity_gib})")
        return self


WORKLOAD_ONLY_KEYS = ("provisioned_gib", "provisioned_mib", "scale", "jitter")
TRACE_ONLY_KEYS = (
    "trace_guests",
    "trace_start",
    "trace_duration_h",
    "trace_loop",
    "trace_active_column",
    "trace_fallback_provisioned_gib",
    "hot_access_interval_s",
    "warm_access_interval_s",
    "cold_access_interval_s",
    "idle_fraction",
    "warm_share",
)


class GuestConfig(_Strict):
    """A ``[[guest]]`` entry: ``count`` guests running one workload, or replaying trace guests."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.]+(-[A-Za-z0-9_.]+)*$", max_length=64)
    workload: str | None = None
    trace: str | None = None
    count: int | None = Field(None, ge=1, le=MAX_GUESTS_PER_HOST)
    provisioned_gib: float | None = Field(None, gt=0)
    provisioned_mib: float | None = Field(None, gt=0)
    floor_gib: float | None = Field(None, ge=0)
    floor_mib: float | None = Field(None, ge=0)
    unevictable_mib: float = Field(64.0, ge=0)
    shares: float = Field(1000.0, gt=0)
    tier: Literal["gold", "silver", "bronze"] = "silver"
    actuator: Literal["balloon", "memcg"] = "balloon"
    swap: Literal["none", "zram", "ssd", "hdd"] = "zram"
    swap_gib: float | None = Field(None, ge=0)
    file_latency_us: float = Field(100.0, gt=0)
    anon_latency_us: float | None = Field(None, gt=0)
    inflate_mib_per_s: float = Field(256.0, gt=0)
    deflate_mib_per_s: float = Field(1024.0, gt=0)
    oom_restart_s: float = Field(60.0, ge=0)
    scale: float = Field(1.0, gt=0)
    jitter: float = Field(0.1, ge=0, le=0.5)
    # Trace-driven guests (see wsrl.sim.trace_demand for what is assumed).
    trace_guests: Literal["all"] | list[str] = "all"
    trace_start: str | float | datetime | date | None = None
    trace_duration_h: float | None = Field(None, gt=0)
    trace_loop: bool = False
    trace_active_column: Literal["working_set_bytes", "usage_bytes"] = "working_set_bytes"
    trace_fallback_provisioned_gib: float | None = Field(None, gt=0)
    hot_access_interval_s: float = Field(20.0, gt=0)
    warm_access_interval_s: float = Field(600.0, gt=0)
    cold_access_interval_s: float = Field(3600.0, gt=0)
    idle_fraction: float = Field(0.5, ge=0, le=1)
    warm_share: float = Field(0.3, ge=0, le=1)

    @model_validator(mode="after")
    def _consistent(self) -> GuestConfig:
        if (self.workload is None) == (self.trace is None):
            raise ValueError("give exactly one of workload and trace")
        if self.provisioned_gib is not None and self.provisioned_mib is not None:
            raise ValueError("give at most one of provisioned_gib and provisioned_mib")
        if self.floor_gib is not None and self.floor_mib is not None:
            raise ValueError("give at most one of floor_gib and floor_mib")
        if self.trace is not None:
            wrong = [k for k in WORKLOAD_ONLY_KEYS if k in self.model_fields_set]
            if wrong:
                raise ValueError(
                    f"{', '.join(wrong)}: only for workload guests (a trace guest's provisioned size comes "
                    "from the trace; use trace_fallback_provisioned_gib for guests whose trace lacks one)"
                )
        else:
            wrong = [k for k in TRACE_ONLY_KEYS if k in self.model_fields_set]
            if wrong:
                raise ValueError(f"{', '.join(wrong)}: only for trace guests")
            if self.provisioned_bytes is None:
                raise ValueError("a workload guest needs provisioned_gib or provisioned_mib")
        if self.swap == "none" and self.swap_gib:
            raise ValueError('swap_gib > 0 needs a swap kind other than "none"')
        prov = self.provisioned_bytes
        if prov is not None:
            if self.floor_bytes > prov:
                raise ValueError(
                    f"floor ({self.floor_bytes / GIB:g} GiB) must be <= provisioned ({prov / GIB:g} GiB)"
                )
            if self.unevictable_bytes >= prov:
                raise ValueError(
                    f"unevictable_mib ({self.unevictable_mib:g}) must be < provisioned ({prov / MIB:g} MiB)"
                )
        if isinstance(self.trace_start, str):
            parse_trace_start(self.trace_start)  # raises ValueError with a clear message
        return self

    @property
    def is_trace(self) -> bool:
        """True for a trace-driven guest."""
        return self.trace is not None

    @property
    def provisioned_bytes(self) -> float | None:
        """Provisioned size in bytes (None for trace guests: it comes from the trace)."""
        if self.provisioned_gib is not None:
            return self.provisioned_gib * GIB
        if self.provisioned_mib is not None:
            return self.provisioned_mib * MIB
        return None

    @property
    def floor_bytes(self) -> float:
        """Floor in bytes (0 by default)."""
        if self.floor_gib is not None:
            return self.floor_gib * GIB
        return (self.floor_mib or 0.0) * MIB

    @property
    def unevictable_bytes(self) -> float:
        """Always-resident memory in bytes."""
        return self.unevictable_mib * MIB

    @property
    def anon_latency_s(self) -> float:
        """Anon refault latency: the override, else the default of the swap kind (0 without swap)."""
        us = self.anon_latency_us if self.anon_latency_us is not None else ANON_LATENCY_US_BY_SWAP[self.swap]
        return us * 1e-6

    def swap_bytes(self, provisioned_bytes: float) -> float:
        """Swap capacity: ``swap_gib`` if given, else 25 % of provisioned; 0 without swap."""
        if self.swap == "none":
            return 0.0
        return self.swap_gib * GIB if self.swap_gib is not None else 0.25 * provisioned_bytes


class ScenarioConfig(_Strict):
    """A scenario file: one host model and the guests on it."""

    name: str = Field(min_length=1)
    description: str
    step_s: float = Field(10.0, gt=0)
    host: HostConfig
    guest: list[GuestConfig] = Field(min_length=1)

    _path: Path | None = PrivateAttr(default=None)
    _base_dir: Path | None = PrivateAttr(default=None)
    _workloads: dict[int, WorkloadConfig] = PrivateAttr(default_factory=dict)
    _trace_dirs: dict[int, Path] = PrivateAttr(default_factory=dict)
    _trace_guest_names: dict[int, list[str]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> ScenarioConfig:
        names = [g.name for g in self.guest]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"guest names must be unique (repeated: {', '.join(dup)})")
        known = sum(g.count or 1 for g in self.guest if not (g.is_trace and g.count is None))
        if known > MAX_GUESTS_PER_HOST:
            raise ValueError(f"{known} guests per host; at most {MAX_GUESTS_PER_HOST} allowed")
        return self

    @property
    def path(self) -> Path | None:
        """The file the scenario was loaded from (None when built in code)."""
        return self._path

    def workload_of(self, index: int) -> WorkloadConfig:
        """The resolved workload of guest entry ``index`` (after :meth:`resolve`)."""
        return self._workloads[index]

    def trace_dir_of(self, index: int) -> Path:
        """The resolved trace directory of guest entry ``index`` (after :meth:`resolve`)."""
        return self._trace_dirs[index]

    def trace_guests_of(self, index: int) -> list[str]:
        """The trace guests (``guest`` or ``host/guest`` keys) entry ``index`` replays, in order."""
        return self._trace_guest_names[index]

    def guest_count(self, index: int) -> int:
        """Guests per host that entry ``index`` makes (trace guests default to one per trace guest)."""
        entry = self.guest[index]
        if entry.count is not None:
            return entry.count
        return len(self._trace_guest_names[index]) if entry.is_trace else 1

    def resolve(self) -> ScenarioConfig:
        """Load the workloads and check the traces the guests name; return self.

        Relative paths are taken relative to the scenario file (when there is one), else to the
        repository root. Raises :class:`ConfigError` naming the guest key that is wrong.
        """
        label = str(self._path) if self._path is not None else "<scenario>"
        base = self._base_dir if self._base_dir is not None else self._path.parent if self._path else None
        problems: list[tuple[str, str]] = []
        for i, entry in enumerate(self.guest):
            if entry.workload is not None:
                try:
                    self._workloads[i] = load_workload(entry.workload, base_dir=base)
                except ConfigError as exc:
                    problems.append((f"guest[{i}].workload", str(exc)))
                    continue
                wl = self._workloads[i]
                need = wl.base_bytes * entry.scale + entry.unevictable_bytes
                prov = entry.provisioned_bytes or 0.0
                if need > prov:
                    problems.append(
                        (
                            f"guest[{i}].provisioned_gib",
                            f"workload {wl.name!r} needs {need / GIB:.3g} GiB at its base size "
                            f"(x scale {entry.scale:g}, + unevictable) but the guest is provisioned "
                            f"{prov / GIB:.3g} GiB",
                        )
                    )
            else:
                try:
                    self._trace_dirs[i] = resolve_trace_dir(entry.trace or "", base)
                    self._trace_guest_names[i] = _select_trace_guests(self._trace_dirs[i], entry.trace_guests)
                except ConfigError as exc:
                    problems.append((f"guest[{i}].{exc.problems[0][0] or 'trace'}", exc.problems[0][1]))
        if problems:
            raise ConfigError(label, problems)
        total = sum(self.guest_count(i) for i in range(len(self.guest)))
        if total > MAX_GUESTS_PER_HOST:
            raise ConfigError(
                label, [("guest", f"{total} guests per host; at most {MAX_GUESTS_PER_HOST} allowed")]
            )
        return self


# --------------------------------------------------------------------------------------------
# Trace helpers (kept here so a scenario is fully checked when it loads)
# --------------------------------------------------------------------------------------------

_OFFSET_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_OFFSET_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_trace_start(value: str | float | datetime | date) -> tuple[str, float]:
    """Parse ``trace_start``: ``("abs", epoch_ms)`` for a date/time, ``("offset", seconds)`` otherwise.

    A number or a string like ``"6h"``/``"2d"``/``"90m"``/``"30s"`` is an offset from the first
    sample of the trace; an ISO date or date-time (naive means UTC) is an absolute start.
    """
    from datetime import UTC

    if isinstance(value, bool):
        raise ValueError("trace_start must be an ISO date/time or an offset")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"trace_start offset must be >= 0 (got {value})")
        return "offset", float(value)
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return "abs", moment.timestamp() * 1000.0
    if isinstance(value, date):
        return "abs", datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp() * 1000.0
    match = _OFFSET_RE.match(value)
    if match:
        return "offset", float(match.group(1)) * _OFFSET_UNIT_S[match.group(2)]
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"trace_start {value!r} is neither an ISO date/time (2013-07-15T06:00) nor an offset (6h, 3600)"
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


def _select_trace_guests(trace_dir: Path, wanted: str | list[str]) -> list[str]:
    """Keys of the trace guests to replay: ``guest``, or ``host/guest`` where a name is on several hosts."""
    from wsrl.errors import TraceError
    from wsrl.trace.reader import TraceReader

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


# --------------------------------------------------------------------------------------------
# Loading: files, names, error formatting
# --------------------------------------------------------------------------------------------


def envs_dir() -> Path:
    """The ``envs`` directory: ``$WSRL_ENVS`` if set, else ``envs/`` next to the package."""
    override = os.environ.get(ENVS_ENV_VAR)
    if override:
        return Path(override)
    return Path(wsrl.__file__).resolve().parent.parent / "envs"


def repo_root() -> Path:
    """The folder holding ``envs`` (relative trace paths fall back to it)."""
    return envs_dir().parent


_ALL_KEYS: set[str] = set()
for _model in (
    ConstantPattern,
    DiurnalPattern,
    SawtoothPattern,
    RampPattern,
    Phase,
    PhasesPattern,
    BurstsPattern,
    SwitchingPattern,
    PopulationConfig,
    WorkloadConfig,
    HostConfig,
    GuestConfig,
    ScenarioConfig,
):
    _ALL_KEYS.update(_model.model_fields)

_TYPE_WORDS = {
    "float_type": "a number",
    "float_parsing": "a number",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "model_type": "a table",
    "dict_type": "a table",
    "model_attributes_type": "a table",
}

_BOUNDS = {
    "greater_than": (">", "gt"),
    "greater_than_equal": (">=", "ge"),
    "less_than": ("<", "lt"),
    "less_than_equal": ("<=", "le"),
}


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    prev: Any = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(prev, str) and prev.endswith("_pattern") and part in PATTERN_KINDS:
            pass  # the discriminator tag pydantic puts in the path
        elif "[" in str(part) or "," in str(part):
            pass  # union member labels such as "list[str]"
        else:
            out += f".{part}" if out else str(part)
        prev = part
    return out


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _format_error(err: dict[str, Any]) -> tuple[str, str]:
    loc = _format_loc(tuple(err["loc"]))
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        close = difflib.get_close_matches(key, sorted(_ALL_KEYS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return loc, f"unknown key{hint}"
    if kind == "missing":
        return loc, "required key missing"
    if kind in _TYPE_WORDS:
        return loc, f"must be {_TYPE_WORDS[kind]} (got {_describe(err.get('input'))})"
    if kind in _BOUNDS:
        op, key = _BOUNDS[kind]
        return loc, f"must be {op} {ctx.get(key)} (got {_describe(err.get('input'))})"
    if kind == "union_tag_invalid":
        return loc, f"unknown kind {ctx.get('tag')!r} (one of {', '.join(PATTERN_KINDS)})"
    if kind == "union_tag_not_found":
        return loc, f"needs a kind (one of {', '.join(PATTERN_KINDS)})"
    msg = str(err.get("msg", ""))
    msg = msg.removeprefix("Value error, ").replace("Input should be", "must be")
    return loc, msg


def validation_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """Turn a pydantic error into ``(dotted key path, reason)`` pairs, one per distinct problem."""
    seen: list[tuple[str, str]] = []
    for err in exc.errors():
        item = _format_error(err)  # type: ignore[arg-type]
        if item not in seen:
            seen.append(item)
    return seen


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [("", f"cannot read: {exc.strerror or exc}")]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        match = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        if match:
            reason = msg[: match.start()].strip()
            raise ConfigError(
                str(path), [(f"line {match.group(1)}, column {match.group(2)}", f"TOML syntax: {reason}")]
            ) from None
        raise ConfigError(str(path), [("", f"TOML syntax: {msg}")]) from None


def _available(kind: str) -> list[str]:
    folder = envs_dir() / kind
    return sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []


def _find(kind: str, name_or_path: str | Path, base_dir: Path | None) -> Path:
    ref = Path(name_or_path)
    if not ref.is_absolute() and base_dir is not None and (base_dir / ref).is_file():
        return base_dir / ref
    if ref.exists() or str(name_or_path).endswith(".toml"):
        if not ref.is_file():
            raise ConfigError(str(ref), [("", "no such file")])
        return ref
    candidate = envs_dir() / kind / f"{name_or_path}.toml"
    if candidate.is_file():
        return candidate
    names = _available(kind)
    listing = ", ".join(names) if names else f"none in {envs_dir() / kind}"
    singular = kind.rstrip("s")
    raise ConfigError(str(name_or_path), [("", f"unknown {singular} name (available: {listing})")])


def load_workload(name_or_path: str | Path, *, base_dir: Path | None = None) -> WorkloadConfig:
    """Load a workload by file path (if it exists or ends with ``.toml``) or by name in ``envs/workloads``.

    ``base_dir`` is tried for a relative path that does not exist as given (a scenario passes its
    own folder). Raises :class:`ConfigError`.
    """
    path = _find("workloads", name_or_path, base_dir)
    data = _read_toml(path)
    try:
        return WorkloadConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(str(path), validation_problems(exc)) from None


def load_scenario(name_or_path: str | Path) -> ScenarioConfig:
    """Load a scenario by path or by name in ``envs/scenarios``, with its workloads and traces checked.

    Raises :class:`ConfigError`.
    """
    path = _find("scenarios", name_or_path, None)
    data = _read_toml(path)
    try:
        scenario = ScenarioConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(str(path), validation_problems(exc)) from None
    scenario._path = path
    try:
        return scenario.resolve()
    except ConfigError as exc:
        raise ConfigError(str(path), exc.problems) from None


def scenario_from_dict(
    data: dict[str, Any], *, base_dir: Path | None = None, label: str = "<scenario>"
) -> ScenarioConfig:
    """Validate and resolve a scenario given as a dict (tests, generated configs).

    ``base_dir`` plays the part of the scenario file's folder for relative paths.
    """
    try:
        scenario = ScenarioConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(label, validation_problems(exc)) from None
    scenario._base_dir = base_dir
    try:
        return scenario.resolve()
    except ConfigError as exc:
        raise ConfigError(label, exc.problems) from None


def _listing(kind: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name in _available(kind):
        path = envs_dir() / kind / f"{name}.toml"
        try:
            description = str(_read_toml(path).get("description", ""))
        except ConfigError as exc:
            description = f"(unreadable: {exc})"
        out.append((name, description))
    return out


def list_workloads() -> list[tuple[str, str]]:
    """``(name, description)`` of every workload in ``envs/workloads``, sorted by name."""
    return _listing("workloads")


def list_scenarios() -> list[tuple[str, str]]:
    """``(name, description)`` of every scenario in ``envs/scenarios``, sorted by name."""
    return _listing("scenarios")
