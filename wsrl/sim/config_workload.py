"""Workload files (``envs/workloads/NAME.toml``): one guest's memory as a few page populations.

Each population has a type (anon or file), a size, an access interval and optional size/rate
patterns (:mod:`wsrl.sim.config_patterns`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AllowInfNan, Field, field_validator, model_validator

from wsrl.config_tools import StrictModel, read_toml, validate_file
from wsrl.sim.config_files import find_file, listing
from wsrl.sim.config_patterns import BurstsPattern, Pattern, SwitchingPattern
from wsrl.units import GIB, MIB


def _positive_seconds_or_never(value: Any) -> float:
    if isinstance(value, str):
        if value == "never":
            return math.inf
        raise ValueError(f'must be a positive number of seconds or "never" (got {value!r})')
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f'must be a positive number of seconds or "never" (got {type(value).__name__})')
    if not math.isfinite(value):
        raise ValueError(f'must be a finite number of seconds, or "never" (got {value})')
    if not value > 0:
        raise ValueError(f"must be > 0 (got {value})")
    return float(value)


class PopulationConfig(StrictModel):
    """One page population of a workload: anon or file pages touched at one per-page rate."""

    name: str = Field(min_length=1)
    type: Literal["anon", "file"]
    size_mib: float | None = Field(None, ge=0)
    size_gib: float | None = Field(None, ge=0)
    access_interval_s: Annotated[float, AllowInfNan(True)]
    """Seconds between touches of one page; ``"never"`` (infinity) for pages never touched."""
    access_order: Literal["independent", "sweep"] = "independent"
    """How the pages are touched: ``"independent"`` (each page at random times, on average once per
    interval: a key-value store's lookups) or ``"sweep"`` (every page once per interval, always in
    the same order: a garbage collector's mark, a periodic scan or checksum). A sweep that does not
    fit misses on every touch under LRU; see docs/simulator.md, "Access order"."""
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


class WorkloadConfig(StrictModel):
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
                params: tuple[Any, ...]
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


def load_workload(name_or_path: str | Path, *, base_dir: Path | None = None) -> WorkloadConfig:
    """Load a workload by file path (if it exists or ends with ``.toml``) or by name in ``envs/workloads``.

    ``base_dir`` is tried for a relative path that does not exist as given (a scenario passes its
    own folder). Raises :class:`wsrl.errors.ConfigError`.
    """
    path = find_file("workloads", name_or_path, base_dir)
    return validate_file(WorkloadConfig, read_toml(path), str(path))


def list_workloads() -> list[tuple[str, str]]:
    """``(name, description)`` of every workload in ``envs/workloads``, sorted by name."""
    return listing("workloads")
