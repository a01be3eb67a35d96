"""Workload and scenario files: TOML, validated by pydantic, with errors that name file and key.

A *workload* (``envs/workloads/NAME.toml``) describes one guest's memory as a few page
populations, each with a size, an access interval and optional size/rate patterns
(:mod:`wsrl.sim.patterns`). A *scenario* (``envs/scenarios/NAME.toml``) puts guests on a host:
which workload (or which recorded trace) each guest runs, how big it is provisioned, its swap,
actuator, tier and so on. :func:`wsrl.sim.build.build_setup` turns a scenario into arrays.

Every error a file can cause is a :class:`wsrl.errors.ConfigError` whose message names the file
and the dotted key path (``envs/scenarios/x.toml: guest[2].provisioned_gib: must be > 0``);
unknown keys are errors so that typos do not pass silently.

This module is the import point; the parts live in :mod:`~wsrl.sim.config_patterns` (pattern
parameters), :mod:`~wsrl.sim.config_workload` (workload files), :mod:`~wsrl.sim.config_scenario`
(scenario files), :mod:`~wsrl.sim.config_trace` (the trace keys of a guest entry) and
:mod:`~wsrl.sim.config_files` (finding files by name); reading TOML and error messages are
:mod:`wsrl.config_tools`.
"""

from __future__ import annotations

from wsrl.errors import ConfigError
from wsrl.sim.config_files import ENVS_ENV_VAR, envs_dir, repo_root
from wsrl.sim.config_patterns import (
    PATTERN_KINDS,
    BurstsPattern,
    ConstantPattern,
    DiurnalPattern,
    Pattern,
    Phase,
    PhasesPattern,
    RampPattern,
    SawtoothPattern,
    SwitchingPattern,
)
from wsrl.sim.config_scenario import (
    MAX_GUESTS_PER_HOST,
    TRACE_ONLY_KEYS,
    WORKLOAD_ONLY_KEYS,
    GuestConfig,
    HostConfig,
    ScenarioConfig,
    list_scenarios,
    load_scenario,
    scenario_from_dict,
)
from wsrl.sim.config_trace import parse_trace_start, resolve_trace_dir
from wsrl.sim.config_workload import PopulationConfig, WorkloadConfig, list_workloads, load_workload

__all__ = [
    "ENVS_ENV_VAR",
    "MAX_GUESTS_PER_HOST",
    "PATTERN_KINDS",
    "TRACE_ONLY_KEYS",
    "WORKLOAD_ONLY_KEYS",
    "BurstsPattern",
    "ConfigError",
    "ConstantPattern",
    "DiurnalPattern",
    "GuestConfig",
    "HostConfig",
    "Pattern",
    "Phase",
    "PhasesPattern",
    "PopulationConfig",
    "RampPattern",
    "SawtoothPattern",
    "ScenarioConfig",
    "SwitchingPattern",
    "WorkloadConfig",
    "envs_dir",
    "list_scenarios",
    "list_workloads",
    "load_scenario",
    "load_workload",
    "parse_trace_start",
    "repo_root",
    "resolve_trace_dir",
    "scenario_from_dict",
]
