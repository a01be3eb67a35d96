"""Patterns, workload demand and trace-driven demand: factors, determinism, trace fidelity, calibration."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from wsrl.sim.build import build_setup
from wsrl.sim.config import (
    BurstsPattern,
    ConstantPattern,
    DiurnalPattern,
    Phase,
    PhasesPattern,
    RampPattern,
    SawtoothPattern,
    SwitchingPattern,
    envs_dir,
    load_scenario,
    scenario_from_dict,
)
from wsrl.sim.demand import CombinedDemand, WorkloadDemand
from wsrl.sim.patterns import PatternSet
from wsrl.sim.trace_demand import TraceDemand
from wsrl.trace.reader import TraceReader
from wsrl.units import GIB, MIB

TRACE = envs_dir() / "traces" / "bitbrains-sample"
SCENARIOS = sorted(p.stem for p in (envs_dir() / "scenarios").glob("*.toml"))
HOUR = 3600.0


def factors_of(pattern: object, times: list[float], *, jitter: float = 0.0, seed: int = 0) -> np.ndarray:
    ps = PatternSet(1, 1, [(0, 0, pattern)])  # type: ignore[list-item]
    ps.reset(np.random.default_rng(seed), np.array([jitter]))
    out = []
    prev = 0.0
    for t in times:
        out.append(ps.evaluate(t, t - prev)[0])
        prev = t
    return np.array(out)


# --- deterministic patterns ------------------------------------------------------------------


def test_constant() -> None:
    np.testing.assert_allclose(factors_of(ConstantPattern(kind="constant", factor=0.3), [1, 1e5]), 0.3)


def test_diurnal_peak_and_trough() -> None:
    pat = DiurnalPattern(kind="diurnal", amplitude=0.4, peak_h=14)
    f = factors_of(pat, [2 * HOUR, 8 * HOUR, 14 * HOUR, 20 * HOUR, 38 * HOUR])
    np.testing.assert_allclose(f, [0.6, 1.0, 1.4, 1.0, 1.4], atol=1e-12)
    day = factors_of(pat, list(np.arange(1, 86400, 60.0)))
    assert np.argmax(day) * 60 + 1 == pytest.approx(14 * HOUR, abs=60)


def test_sawtooth_grows_then_drops() -> None:
    pat = SawtoothPattern(kind="sawtooth", low=0.4, period_s=300)
    f = factors_of(pat, [0.0, 150.0, 299.999, 300.0, 450.0, 600.0])
    np.testing.assert_allclose(f, [0.4, 0.7, 1.0, 0.4, 0.7, 0.4], atol=1e-4)


def test_phases_cycle() -> None:
    pat = PhasesPattern(
        kind="phases",
        phases=[
            Phase(duration_s=100, factor=0.1),
            Phase(duration_s=50, factor=1.0),
            Phase(duration_s=10, factor=0.5),
        ],
    )
    f = factors_of(pat, [0, 99, 100, 149, 150, 159, 160, 260, 320])
    np.testing.assert_allclose(f, [0.1, 0.1, 1.0, 1.0, 0.5, 0.5, 0.1, 1.0, 0.1])


def test_ramp_grows_caps_and_restarts() -> None:
    pat = RampPattern(kind="ramp", per_hour=0.5, max_factor=2.0, restart_h=4)
    f = factors_of(pat, [0, 1 * HOUR, 2 * HOUR, 3 * HOUR, 4 * HOUR, 5 * HOUR])
    np.testing.assert_allclose(f, [1.0, 1.5, 2.0, 2.0, 1.0, 1.5])
    forever = RampPattern(kind="ramp", per_hour=0.1, max_factor=10.0)
    np.testing.assert_allclose(factors_of(forever, [10 * HOUR, 50 * HOUR, 200 * HOUR]), [2.0, 6.0, 10.0])


def test_jitter_shifts_phases_but_keeps_range() -> None:
    pat = SawtoothPattern(kind="sawtooth", low=0.5, period_s=100)
    times = list(np.arange(1, 1000, 7.0))
    a = factors_of(pat, times, jitter=0.2, seed=1)
    b = factors_of(pat, times, jitter=0.2, seed=2)
    assert not np.allclose(a, b)
    assert a.min() >= 0.5 and a.max() <= 1.0
    np.testing.assert_array_equal(a, factors_of(pat, times, jitter=0.2, seed=1))
    diurnal = DiurnalPattern(kind="diurnal", amplitude=0.5, peak_h=12)
    day = factors_of(diurnal, list(np.arange(0, 86400, 60.0)), jitter=0.1, seed=5)
    peak_s = np.argmax(day) * 60.0
    assert abs(peak_s - 12 * HOUR) <= 0.1 * 86400 + 60


# --- stochastic patterns ---------------------------------------------------------------------


def run_demand(
    demand: WorkloadDemand | CombinedDemand, seed: int, steps: int, dt: float = 10.0
) -> np.ndarray:
    demand.reset(seed)
    sizes = []
    rates = []
    for k in range(1, steps + 1):
        size, rate = demand.at(k * dt, dt)
        sizes.append(size.copy())
        rates.append(rate.copy())
    return np.stack([np.stack(sizes), np.stack(rates)])


@pytest.mark.parametrize("workload", ["bursty-spikes", "android-app-switching"])
def test_stochastic_patterns_deterministic_under_seed(workload: str) -> None:
    scenario = scenario_from_dict(
        {
            "name": "t",
            "description": "d",
            "host": {"capacity_gib": 64},
            "guest": [{"name": "g", "workload": workload, "count": 8, "provisioned_gib": 8, "jitter": 0.0}],
        }
    )
    demand = build_setup(scenario, hosts=2).demand
    a = run_demand(demand, 7, 2000)  # type: ignore[arg-type]
    b = run_demand(demand, 7, 2000)  # type: ignore[arg-type]
    c = run_demand(demand, 8, 2000)  # type: ignore[arg-type]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # Copies of one workload differ (their stochastic states are independent).
    assert not np.array_equal(a[:, :, 0, 0], a[:, :, 0, 1])


def test_bursts_fraction_and_shared_group() -> None:
    pats = [
        (0, 0, BurstsPattern(kind="bursts", per_hour=6, duration_s=300, peak=4.0, group="x")),
        (1, 0, BurstsPattern(kind="bursts", per_hour=6, duration_s=300, peak=2.0, group="x")),
    ]
    ps = PatternSet(2, 1, pats)
    ps.reset(np.random.default_rng(3), np.zeros(1))
    f = np.array([ps.evaluate(k * 10.0, 10.0).copy() for k in range(1, 200_001)])
    in_burst = f[:, 0] == 4.0
    # The two populations of the group burst together.
    np.testing.assert_array_equal(in_burst, f[:, 1] == 2.0)
    assert set(np.unique(f[:, 0])) == {1.0, 4.0}
    # Overlapping Poisson bursts: covered fraction 1 - exp(-rate * duration).
    assert in_burst.mean() == pytest.approx(1 - np.exp(-6 / 3600 * 300), abs=0.03)


def test_switching_one_foreground_per_group() -> None:
    pats = [
        (k, g, SwitchingPattern(kind="switching", slot=k % 3, slots=3, mean_dwell_s=60, background=0.0))
        for g in range(4)
        for k in range(3 * g, 3 * g + 3)
    ]
    ps = PatternSet(12, 4, pats)
    ps.reset(np.random.default_rng(0), np.zeros(4))
    fronts = []
    for k in range(1, 5001):
        f = ps.evaluate(k * 10.0, 10.0).reshape(4, 3)
        np.testing.assert_array_equal(f.sum(axis=1), 1.0)
        fronts.append(f.argmax(axis=1))
    fronts_arr = np.array(fronts)
    switches = (np.diff(fronts_arr, axis=0) != 0).mean()
    # Dwell 60 s at 10 s steps: a switch in about 1 - exp(-10/60) of the steps.
    assert switches == pytest.approx(1 - np.exp(-10 / 60), abs=0.03)
    assert all(len(np.unique(fronts_arr[:, g])) == 3 for g in range(4))


# --- workload demand -------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_no_negative_sizes_or_rates(name: str) -> None:
    setup = build_setup(name)
    demand = setup.demand
    demand.reset(11)
    for t in np.arange(10.0, 2 * 86400, 97.0):
        size, rate = demand.at(float(t), 97.0)
        assert size.dtype == np.float64 and rate.dtype == np.float64
        assert size.shape == demand.pop_is_anon.shape == rate.shape
        assert np.isfinite(size).all() and np.isfinite(rate).all()
        assert (size >= 0).all() and (rate >= 0).all()


def test_workload_demand_base_values_without_jitter() -> None:
    scenario = scenario_from_dict(
        {
            "name": "t",
            "description": "d",
            "host": {"capacity_gib": 64},
            "guest": [
                {"name": "c", "workload": "cache-cold-tail", "provisioned_gib": 32, "scale": 2, "jitter": 0},
                {"name": "l", "workload": "memory-leak", "provisioned_gib": 8, "jitter": 0},
            ],
        }
    )
    setup = build_setup(scenario)
    setup.demand.reset(0)
    size, rate = setup.demand.at(3600.0, 10.0)
    assert size.shape == (1, 2, 6)
    np.testing.assert_allclose(size[0, 0], 4 * GIB)
    np.testing.assert_allclose(rate[0, 0], 1 / np.array([1, 6, 36, 216, 1296, 7200]))
    assert setup.demand.pop_is_anon[0, 0].all()
    # memory-leak: 3 populations then padding; leaked grows 25 %/h; "never" is rate 0.
    np.testing.assert_allclose(size[0, 1, :3], [2 * GIB, 1.25 * GIB, 1 * GIB])
    np.testing.assert_array_equal(size[0, 1, 3:], 0.0)
    assert rate[0, 1, 1] == 0.0
    np.testing.assert_array_equal(setup.demand.pop_is_anon[0, 1], [True, True, False, False, False, False])


def seeded_demand_at(name: str, seed: int, t_s: float) -> np.ndarray:
    """Sizes at ``t_s`` of a fresh setup of scenario ``name`` whose demand is reset with ``seed``."""
    demand = build_setup(name).demand
    demand.reset(seed)
    return demand.at(t_s, 10.0)[0]


def test_jitter_makes_copies_differ_and_is_seeded() -> None:
    setup = build_setup("datacenter")
    setup.demand.reset(1)
    names = setup.guests.names[0].tolist()
    w0, w1 = names.index("web-0"), names.index("web-1")
    size, _ = setup.demand.at(10.0, 10.0)
    assert not np.allclose(size[0, w0], size[0, w1])
    total = size[0, w0].sum()
    assert 0.8 * 10.5 * GIB < total < 1.3 * 10.5 * 1.3 * GIB
    np.testing.assert_array_equal(size, seeded_demand_at("datacenter", 1, 10.0))
    assert not np.array_equal(size, seeded_demand_at("datacenter", 2, 10.0))


# --- calibration (analytic, independent reference model) -------------------------------------


def cold_fraction(setup: object, threshold_s: float, times: np.ndarray) -> float:
    """Bytes idle longer than ``threshold_s`` over resident bytes, guests at provisioned size."""
    demand = setup.demand  # type: ignore[attr-defined]
    demand.reset(0)
    fractions = []
    prev = 0.0
    for t in times:
        size, rate = demand.at(float(t), float(t - prev))
        prev = float(t)
        fractions.append((size * np.exp(-threshold_s * rate)).sum() / size.sum())
    return float(np.mean(fractions))


def test_datacenter_cold_fraction_matches_google_far_memory() -> None:
    setup = build_setup("datacenter")
    times = np.arange(300.0, 86400.0 + 1, 300.0)
    fractions = [cold_fraction(setup, th, times) for th in (60.0, 120.0, 600.0, 3600.0)]
    assert 0.25 <= fractions[1] <= 0.40, fractions
    assert all(a > b for a, b in itertools.pairwise(fractions)), fractions


# --- trace-driven demand ---------------------------------------------------------------------


def bitbrains_scenario(**extra: object) -> dict[str, object]:
    guest = {"name": "bb", "trace": str(TRACE), "trace_fallback_provisioned_gib": 4, **extra}
    return {"name": "t", "description": "d", "host": {"capacity_gib": 32}, "guest": [guest]}


def test_trace_demand_matches_trace_at_sample_times() -> None:
    setup = build_setup(scenario_from_dict(bitbrains_scenario()))
    demand = setup.demand
    assert isinstance(demand, CombinedDemand)
    trace = demand.overlays[0]
    assert isinstance(trace, TraceDemand)
    start_ms = setup.start_time_ms
    table = TraceReader(TRACE).read_table(["time_ms", "guest", "working_set_bytes", "provisioned_bytes"])
    names = setup.guests.names[0].tolist()
    assert names == [f"bb-vm{n}" for n in (1, 2, 20, 24, 38, 127, 154, 200)]
    checked = 0
    for g, name in enumerate(names):
        rows = table.filter(pc.equal(table.column("guest"), name.removeprefix("bb-")))
        times = (np.array(rows.column("time_ms").to_pylist()) - start_ms) / 1000.0
        ws = np.array(rows.column("working_set_bytes").to_pylist(), dtype=float)
        prov_known = [p for p in rows.column("provisioned_bytes").to_pylist() if p is not None]
        prov = max(prov_known) if prov_known else 4 * GIB
        assert setup.guests.provisioned_bytes[0, g] == prov
        room = prov - 64 * MIB
        # Samples 14 s apart hold different values: check samples with a distinct neighbourhood.
        for t, w in list(zip(times, ws, strict=True))[:: max(1, len(times) // 40)]:
            if np.sum(np.abs(times - t) < 30) > 1:
                continue
            size, rate = demand.at(float(t), 10.0)
            assert size[0, g, 0] == pytest.approx(min(w, room), rel=1e-9, abs=1.0)
            rest = room - min(w, room)
            assert size[0, g, 1] == pytest.approx(0.5 * 0.3 * rest, rel=1e-9, abs=1.0)
            assert size[0, g, 2] == pytest.approx(0.5 * 0.7 * rest, rel=1e-9, abs=1.0)
            np.testing.assert_allclose(rate[0, g], [1 / 20, 1 / 600, 1 / 3600])
            checked += 1
    assert checked > 200
    np.testing.assert_array_equal(demand.pop_is_anon[0, 0], [True, False, True])


def test_trace_demand_interpolates_linearly() -> None:
    setup = build_setup(scenario_from_dict(bitbrains_scenario(trace_guests=["vm1"])))
    table = TraceReader(TRACE).read_table(["time_ms", "working_set_bytes"], guests=["vm1"])
    t = (np.array(table.column("time_ms").to_pylist()) - setup.start_time_ms) / 1000.0
    ws = np.array(table.column("working_set_bytes").to_pylist(), dtype=float)
    mid = 0.25 * t[10] + 0.75 * t[11]
    size, _ = setup.demand.at(float(mid), 10.0)
    assert size[0, 0, 0] == pytest.approx(0.25 * ws[10] + 0.75 * ws[11], rel=1e-9)
    # Before the window's first sample and after its last, the nearest sample holds.
    end = float(t[-1]) + 10 * 86400
    assert setup.demand.at(end, 10.0)[0][0, 0, 0] == pytest.approx(ws[-1])


def test_trace_start_and_loop() -> None:
    base = build_setup(scenario_from_dict(bitbrains_scenario(trace_guests=["vm1"])))
    shifted = build_setup(
        scenario_from_dict(bitbrains_scenario(trace_guests=["vm1"], trace_start="6h", trace_duration_h=12))
    )
    assert shifted.start_time_ms == base.start_time_ms + 6 * 3600 * 1000
    for t in (100.0, 5000.0, 30000.0):
        a = base.demand.at(t + 6 * HOUR, 10.0)[0][0, 0, 0]
        b = shifted.demand.at(t, 10.0)[0][0, 0, 0]
        assert a == pytest.approx(b)
    looped = build_setup(
        scenario_from_dict(bitbrains_scenario(trace_guests=["vm1"], trace_duration_h=12, trace_loop=True))
    )
    for t in (100.0, 5000.0, 30000.0):
        a = looped.demand.at(t, 10.0)[0][0, 0, 0]
        b = looped.demand.at(t + 12 * HOUR, 10.0)[0][0, 0, 0]
        assert a == pytest.approx(b)


def test_trace_guests_cycle_across_copies_and_hosts() -> None:
    setup = build_setup(
        scenario_from_dict(bitbrains_scenario(trace_guests=["vm1", "vm2", "vm20"], count=5)), hosts=2
    )
    names = setup.guests.names
    assert names[0].tolist() == ["bb-vm1", "bb-vm2", "bb-vm20", "bb-vm1-1", "bb-vm2-1"]
    assert names[1].tolist() == ["bb-vm20", "bb-vm1", "bb-vm2", "bb-vm20-1", "bb-vm1-1"]
    size, _ = setup.demand.at(1000.0, 10.0)
    np.testing.assert_array_equal(size[0, 0], size[0, 3])
    np.testing.assert_array_equal(size[0, 0], size[1, 1])


def test_trace_active_clipped_to_provisioned() -> None:
    # vm154 reports active memory above its provisioned size at times.
    setup = build_setup(scenario_from_dict(bitbrains_scenario(trace_guests=["vm154"])))
    prov = setup.guests.provisioned_bytes[0, 0]
    peak = max(setup.demand.at(float(t), 60.0)[0][0, 0].sum() for t in np.arange(60.0, 3 * 86400, 60.0))
    assert peak <= prov - 64 * MIB + 1.0


def test_mixed_scenario_combines_sources(tmp_path: Path) -> None:
    data = bitbrains_scenario(trace_guests=["vm1", "vm127"])
    data["guest"] = [
        {"name": "cache", "workload": "cache-cold-tail", "provisioned_gib": 16, "jitter": 0},
        *data["guest"],  # type: ignore[misc]
    ]
    setup = build_setup(scenario_from_dict(data))
    assert setup.guests.names[0].tolist() == ["cache", "bb-vm1", "bb-vm127"]
    size, rate = setup.demand.at(600.0, 10.0)
    assert size.shape == (1, 3, 6)
    np.testing.assert_allclose(size[0, 0], 2 * GIB)
    np.testing.assert_array_equal(size[0, 1:, 3:], 0.0)
    assert (size[0, 1:, 0] > 0).all()
    np.testing.assert_allclose(rate[0, 1, :3], [1 / 20, 1 / 600, 1 / 3600])
    assert setup.meta["workloads"][0][0] == "cache-cold-tail"
    assert str(setup.meta["workloads"][0][1]).startswith("trace:") and setup.meta["traces"]


def test_bitbrains_replay_scenario() -> None:
    scenario = load_scenario("bitbrains-replay")
    setup = build_setup(scenario)
    assert setup.guests.shape == (1, 8)
    vm38 = setup.guests.names[0].tolist().index("bb-vm38")
    assert setup.guests.provisioned_bytes[0, vm38] == 4 * GIB
    assert setup.start_time_ms == 1373846423000


def test_looping_trace_bridges_the_lap_linearly() -> None:
    setup = build_setup(
        scenario_from_dict(bitbrains_scenario(trace_guests=["vm1"], trace_duration_h=12, trace_loop=True))
    )
    trace = setup.demand.overlays[0]  # type: ignore[attr-defined]
    assert isinstance(trace, TraceDemand)
    series = trace.series[0]
    first_t, last_t, period = float(series.times_s[0]), float(series.times_s[-1]), series.period_s
    assert period == 12 * HOUR and last_t < period
    once = build_setup(scenario_from_dict(bitbrains_scenario(trace_guests=["vm1"], trace_duration_h=12)))
    assert once.demand.overlays[0].series[0].times_s[-1] == last_t  # type: ignore[attr-defined]
    a_first, a_last = float(series.active_bytes[0]), float(series.active_bytes[-1])
    assert a_first != a_last
    gap = first_t + period - last_t
    for lap in (0, 3):
        at_last = trace.active_at(lap * period + last_t)[0]
        assert at_last == pytest.approx(a_last)
        quarter = trace.active_at(lap * period + last_t + 0.25 * gap)[0]
        assert quarter == pytest.approx(0.75 * a_last + 0.25 * a_first, rel=1e-9)
        assert trace.active_at((lap + 1) * period + first_t)[0] == pytest.approx(a_first)


def test_mixed_trace_windows_each_start_at_time_zero() -> None:
    """Every trace entry replays its own window from time 0; the clock is the first entry's window."""
    one = build_setup(scenario_from_dict(bitbrains_scenario(trace_guests=["vm1"])))
    data = bitbrains_scenario(trace_guests=["vm1"], trace_start="6h")
    late = dict(data["guest"][0])  # type: ignore[index]
    data["guest"] = [late, {**late, "name": "early", "trace_start": 0}]
    mixed = build_setup(scenario_from_dict(data))
    assert mixed.start_time_ms == one.start_time_ms + 6 * 3600 * 1000  # the first entry's, not the earliest
    traces = mixed.meta["traces"]
    assert traces["bb"]["start_ms"] == mixed.start_time_ms  # type: ignore[index]
    assert traces["early"]["start_ms"] == one.start_time_ms  # type: ignore[index]
    for t in (100.0, 5000.0, 30000.0):
        size = mixed.demand.at(t, 10.0)[0]
        assert size[0, 0, 0] == pytest.approx(one.demand.at(t + 6 * HOUR, 10.0)[0][0, 0, 0])
        assert size[0, 1, 0] == pytest.approx(one.demand.at(t, 10.0)[0][0, 0, 0])


def test_diurnal_patterns_follow_the_clock_of_a_trace_window() -> None:
    """Diurnal hours count from midnight UTC of start_time_ms: a replay from 06:00 is 6 h into the day."""
    web = {"name": "web", "workload": "web-diurnal", "provisioned_gib": 16, "jitter": 0}
    alone = build_setup(
        scenario_from_dict({"name": "w", "description": "d", "host": {"capacity_gib": 64}, "guest": [web]})
    )
    assert alone.start_time_ms == 0
    data = bitbrains_scenario(trace_guests=["vm1"], trace_start="2013-07-15T06:00:00")
    data["guest"] = [web, *data["guest"]]  # type: ignore[misc]
    mixed = build_setup(scenario_from_dict(data))
    assert mixed.start_time_ms == 1373868000000  # 2013-07-15 06:00 UTC
    alone.demand.reset(4)
    mixed.demand.reset(4)
    for t in (0.0, 600.0, 8 * HOUR, 20 * HOUR):
        expected = alone.demand.at(t + 6 * HOUR, 10.0)
        got = mixed.demand.at(t, 10.0)
        np.testing.assert_allclose(got[0][0, 0, :5], expected[0][0, 0], rtol=1e-12)
        np.testing.assert_allclose(got[1][0, 0, :5], expected[1][0, 0], rtol=1e-12)
    # Peak at 14:00 UTC: 8 h into this replay.
    day = [mixed.demand.at(float(t), 60.0)[0][0, 0, 0] for t in np.arange(0.0, 86400.0, 60.0)]
    assert int(np.argmax(day)) * 60.0 == pytest.approx(8 * HOUR, abs=60)
