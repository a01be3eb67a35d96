"""Turn a scenario into a :class:`wsrl.sim.arrays.SimSetup`: static arrays plus one demand source.

Units are SI throughout: bytes, seconds, bytes per second. Every host of a setup holds the same
guest list (``hosts`` replicates the scenario's host, e.g. for batched training); jitter, drawn
when the demand is reset with a seed (:meth:`wsrl.sim.simulator.Simulator.reset`), makes the
copies differ, and trace guests cycle through the trace's guests across copies and hosts.

The clock: simulation time 0 is ``SimSetup.start_time_ms``, the start of the replayed window of
the first trace entry of the scenario (in file order), or the UNIX epoch when there is none.
Every trace entry replays its own window from time 0 (its series count from its own window
start), so entries with different windows are not aligned on the wall clock: the clock is the
first entry's. Diurnal patterns of workload guests read the clock: their hours count from
midnight UTC of the day of ``start_time_ms``, so a replay that starts at 06:00 sees a workload's
14:00 peak eight hours in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsrl.errors import ConfigError, TraceError
from wsrl.sim import defaults
from wsrl.sim.arrays import (
    ACTUATOR_BALLOON,
    ACTUATOR_NAMES,
    HISTOGRAM_SOURCE_NAMES,
    KERNEL_NAMES,
    TIER_NAMES,
    GuestArrays,
    HostArrays,
    SimSetup,
)
from wsrl.sim.config_scenario import GuestConfig, ScenarioConfig, load_scenario
from wsrl.sim.config_workload import WorkloadConfig
from wsrl.sim.demand import CombinedDemand, WorkloadDemand
from wsrl.sim.trace_demand import POPULATIONS as TRACE_POPULATIONS
from wsrl.sim.trace_demand import TraceDemand, TraceModel, TraceSlot, TraceWindow, load_trace_window
from wsrl.units import GIB

DAY_MS = 86_400_000


@dataclass
class _Planned:
    """One guest slot of one host, before the arrays are filled."""

    entry: int
    name: str
    provisioned_bytes: float
    workload: str
    trace_key: str | None = None


def _trace_model(entry: GuestConfig) -> TraceModel:
    return TraceModel(
        hot_access_interval_s=entry.hot_access_interval_s,
        warm_access_interval_s=entry.warm_access_interval_s,
        cold_access_interval_s=entry.cold_access_interval_s,
        idle_fraction=entry.idle_fraction,
        warm_share=entry.warm_share,
    )


def _load_windows(scenario: ScenarioConfig, label: str) -> dict[int, TraceWindow]:
    windows: dict[int, TraceWindow] = {}
    for i, entry in enumerate(scenario.guest):
        if not entry.is_trace:
            continue
        try:
            windows[i] = load_trace_window(
                scenario.trace_dir_of(i),
                scenario.trace_guests_of(i),
                column=entry.trace_active_column,
                start=entry.trace_start,
                duration_s=entry.trace_duration_h * 3600.0 if entry.trace_duration_h else None,
                loop=entry.trace_loop,
            )
        except TraceError as exc:
            raise ConfigError(label, [(f"guest[{i}].trace", str(exc))]) from None
    return windows


def _plan_host(
    scenario: ScenarioConfig, host: int, windows: dict[int, TraceWindow], label: str
) -> list[_Planned]:
    planned: list[_Planned] = []
    for i, entry in enumerate(scenario.guest):
        count = scenario.guest_count(i)
        if not entry.is_trace:
            wl = scenario.workload_of(i).name
            for c in range(count):
                name = entry.name if count == 1 else f"{entry.name}-{c}"
                planned.append(_Planned(i, name, float(entry.provisioned_bytes or 0.0), wl))
            continue
        keys = scenario.trace_guests_of(i)
        seen: dict[str, int] = {}
        for c in range(count):
            key = keys[(host * count + c) % len(keys)]
            repeat = seen.get(key, 0)
            seen[key] = repeat + 1
            series = windows[i].series[key]
            prov = series.provisioned_bytes
            if prov is None:
                if entry.trace_fallback_provisioned_gib is None:
                    raise ConfigError(
                        label,
                        [
                            (
                                f"guest[{i}].trace_fallback_provisioned_gib",
                                f"trace guest {key} has no provisioned size in the window; set "
                                "trace_fallback_provisioned_gib",
                            )
                        ],
                    )
                prov = entry.trace_fallback_provisioned_gib * GIB
            if entry.floor_bytes > prov or entry.unevictable_bytes >= prov:
                raise ConfigError(
                    label,
                    [
                        (
                            f"guest[{i}]",
                            f"trace guest {key} is provisioned {prov / GIB:.3g} GiB: floor "
                            f"({entry.floor_bytes / GIB:.3g} GiB) must be <= and unevictable "
                            f"({entry.unevictable_mib:g} MiB) < that",
                        )
                    ],
                )
            safe_key = key.replace("/", ".")
            name = f"{entry.name}-{safe_key}" + (f"-{repeat}" if repeat else "")
            planned.append(_Planned(i, name, float(prov), f"trace:{entry.trace}:{key}", key))
    names = [p.name for p in planned]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(label, [("guest", f"guest names collide: {', '.join(dup)}")])
    return planned


def build_setup(scenario_config: ScenarioConfig | str | Path, *, hosts: int | None = None) -> SimSetup:
    """Build the arrays and the demand source of a scenario.

    Nothing random is drawn here: the demand's jitter and stochastic patterns come from the seed
    given to its ``reset`` (:meth:`wsrl.sim.simulator.Simulator.reset` does that).

    Args:
        scenario_config: a loaded scenario, or a name/path for :func:`wsrl.sim.config.load_scenario`.
        hosts: number of hosts (replicas of the scenario's host); default the scenario's ``count``.

    Raises:
        ConfigError: the scenario is inconsistent (for example a trace guest without a size).

    """
    scenario = (
        scenario_config if isinstance(scenario_config, ScenarioConfig) else load_scenario(scenario_config)
    )
    if not scenario.is_resolved:
        scenario.resolve()
    label = str(scenario.path) if scenario.path is not None else f"<scenario {scenario.name}>"
    n_hosts = hosts if hosts is not None else scenario.host.count
    if n_hosts < 1:
        raise ConfigError(label, [("hosts", f"must be >= 1 (got {n_hosts})")])
    windows = _load_windows(scenario, label)
    plans = [_plan_host(scenario, h, windows, label) for h in range(n_hosts)]
    n_guests = max(len(p) for p in plans)
    pops = max(
        [len(scenario.workload_of(i).population) for i, g in enumerate(scenario.guest) if not g.is_trace]
        + [TRACE_POPULATIONS if windows else 1]
    )
    shape = (n_hosts, n_guests)

    def full(value: float = 0.0, dtype: type = np.float64) -> np.ndarray:
        return np.full(shape, value, dtype=dtype)

    arrays = {
        k: full()
        for k in (
            "provisioned_bytes",
            "floor_bytes",
            "unevictable_bytes",
            "swap_capacity_bytes",
            "anon_fault_latency_s",
            "file_fault_latency_s",
            "inflate_bytes_per_s",
            "deflate_bytes_per_s",
            "shares",
            "oom_restart_s",
        )
    }
    mask = full(False, bool)
    names = np.full(shape, "", dtype=object)
    actuator = full(ACTUATOR_BALLOON, np.int8)
    deflate_on_oom = full(False, bool)
    histogram_source = full(0, np.int8)
    kernel = full(KERNEL_NAMES.index(defaults.KERNEL), np.int8)
    swappiness = full(defaults.SWAPPINESS)
    tier = full(TIER_NAMES.index(defaults.TIER), np.int8)
    grid: list[list[tuple[WorkloadConfig, float, float] | None]] = [[None] * n_guests for _ in range(n_hosts)]
    trace_slots: list[TraceSlot] = []
    workload_names: list[list[str]] = []
    for h, plan in enumerate(plans):
        workload_names.append([p.workload for p in plan] + [""] * (n_guests - len(plan)))
        for g, p in enumerate(plan):
            entry = scenario.guest[p.entry]
            mask[h, g] = True
            names[h, g] = p.name
            prov = p.provisioned_bytes
            arrays["provisioned_bytes"][h, g] = prov
            arrays["floor_bytes"][h, g] = entry.floor_bytes
            arrays["unevictable_bytes"][h, g] = entry.unevictable_bytes
            arrays["swap_capacity_bytes"][h, g] = entry.swap_bytes(prov)
            arrays["anon_fault_latency_s"][h, g] = entry.anon_latency_s
            arrays["file_fault_latency_s"][h, g] = entry.file_latency_s
            arrays["inflate_bytes_per_s"][h, g] = entry.inflate_bytes_per_s
            arrays["deflate_bytes_per_s"][h, g] = entry.deflate_bytes_per_s
            arrays["shares"][h, g] = entry.shares
            arrays["oom_restart_s"][h, g] = entry.oom_restart_s
            actuator[h, g] = ACTUATOR_NAMES.index(entry.actuator)
            deflate_on_oom[h, g] = entry.deflate_on_oom
            histogram_source[h, g] = HISTOGRAM_SOURCE_NAMES.index(scenario.histogram_source_of(p.entry))
            kernel_name, swappiness[h, g] = scenario.kernel_of(p.entry)
            kernel[h, g] = KERNEL_NAMES.index(kernel_name)
            tier[h, g] = TIER_NAMES.index(entry.tier)
            if p.trace_key is None:
                grid[h][g] = (scenario.workload_of(p.entry), entry.scale, entry.jitter)
            else:
                trace_slots.append(
                    TraceSlot(
                        guest=h * n_guests + g,
                        series=windows[p.entry].series[p.trace_key],
                        provisioned_bytes=prov,
                        unevictable_bytes=entry.unevictable_bytes,
                        model=_trace_model(entry),
                    )
                )
    # The clock (module docstring): the first trace entry's window start, else the epoch.
    start_ms = windows[min(windows)].start_ms if windows else 0
    base = WorkloadDemand.from_workloads(
        grid,
        populations=pops,
        time_of_day_s=(start_ms % DAY_MS) / 1000.0,
    )
    demand: WorkloadDemand | CombinedDemand = base
    if trace_slots:
        demand = CombinedDemand(base, [TraceDemand((n_hosts, n_guests, pops), trace_slots)])
    guests = GuestArrays(
        mask=mask,
        names=names,
        actuator=actuator,
        tier=tier,
        deflate_on_oom=deflate_on_oom,
        histogram_source=histogram_source,
        kernel=kernel,
        swappiness=swappiness,
        **arrays,
    )
    host_arrays = HostArrays(
        names=[f"host-{h}" for h in range(n_hosts)],
        capacity_bytes=np.full(n_hosts, scenario.host.capacity_bytes),
        reserve_bytes=np.full(n_hosts, scenario.host.reserve_bytes),
        swap_fault_latency_s=np.full(n_hosts, scenario.host.swap_latency_s),
    )
    meta: dict[str, object] = {
        "scenario_name": scenario.name,
        "scenario_path": str(scenario.path) if scenario.path is not None else None,
        "workloads": workload_names,
        "populations": pops,
    }
    if windows:
        meta["traces"] = {
            scenario.guest[i].name: {
                "directory": str(w.directory),
                "start_ms": w.start_ms,
                "length_s": w.length_s,
                "guests": list(w.series),
            }
            for i, w in windows.items()
        }
    return SimSetup(
        scenario=scenario.name,
        guests=guests,
        hosts=host_arrays,
        demand=demand,
        step_s=scenario.step_s,
        start_time_ms=start_ms,
        meta=meta,
    )
