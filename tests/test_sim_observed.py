"""The simulator's snapshot histogram at each guest's histogram source's resolution (wsrl.sim.observed)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from wsrl.errors import ConfigError
from wsrl.eval.runner import RunSpec, run_one
from wsrl.formats.memory_stat import memory_stat_histogram
from wsrl.formats.referenced import DEFAULT_CYCLE_S, DEFAULT_EDGES
from wsrl.histogram import ALL_NODES, DEFAULT_EDGES_MS, Histogram
from wsrl.inputs.ref import ScenarioInput
from wsrl.inputs.simulated import EXACT_HIST_KEY, exact_snapshot, snapshot_from_simulator
from wsrl.sim.arrays import (
    ACTUATOR_MEMCG,
    HISTOGRAM_EXACT,
    HISTOGRAM_LRU_GEN,
    HISTOGRAM_MEMORY_STAT,
    HISTOGRAM_REFERENCED,
    SimSetup,
    guest_arrays,
    host_arrays,
)
from wsrl.sim.build import build_setup
from wsrl.sim.config import load_scenario
from wsrl.sim.constant import ConstantDemand
from wsrl.sim.observed import REFERENCED_CYCLE_S, REFERENCED_EDGES_MS, rebin_matrix
from wsrl.sim.simulator import Simulator
from wsrl.units import GIB, MIB

ROOT = Path(__file__).resolve().parents[1]
SOURCES = (HISTOGRAM_EXACT, HISTOGRAM_LRU_GEN, HISTOGRAM_REFERENCED, HISTOGRAM_MEMORY_STAT)
# Per guest: an anon population touched every 30 s, a never-touched anon one, a file one every 600 s.
SIZES_BYTES = (512 * MIB, 1024 * MIB, 256 * MIB)
RATES_PER_S = (1 / 30, 0.0, 1 / 600)
IS_ANON = (True, True, False)


def known_sim() -> Simulator:
    """Four identical memcg guests on one host, one per source (exact, lru_gen, referenced, memory_stat)."""
    shape = (1, len(SOURCES), len(SIZES_BYTES))
    demand = ConstantDemand(
        np.broadcast_to(np.array(SIZES_BYTES, dtype=float), shape).copy(),
        np.broadcast_to(np.array(RATES_PER_S), shape).copy(),
        np.broadcast_to(np.array(IS_ANON), shape).copy(),
    )
    guests = guest_arrays(
        (1, len(SOURCES)),
        2 * GIB,
        actuator=ACTUATOR_MEMCG,
        histogram_source=np.array([SOURCES], dtype=np.int8),
    )
    setup = SimSetup("known", guests, host_arrays(1, 16 * GIB), demand, step_s=10.0)
    sim = Simulator(setup)
    sim.reset(0)
    return sim


def exact_bins(size_bytes: float, rate_per_s: float, edges_ms: tuple[int, ...]) -> np.ndarray:
    """A never-evicted population's bytes per age bin: size (e^-r lo - e^-r hi), open bin size e^-r last."""
    older = [size_bytes * math.exp(-rate_per_s * e / 1000) for e in (0, *edges_ms)]
    return np.array([older[k] - older[k + 1] for k in range(len(edges_ms))] + [older[-1]])


def test_referenced_and_memory_stat_bins_of_a_known_histogram() -> None:
    sim = known_sim()
    snapshot = snapshot_from_simulator(sim)
    hist = snapshot.hist_bytes[0]  # [guests, 2, bins] on the simulator's edges
    edges = DEFAULT_EDGES_MS
    anon = exact_bins(SIZES_BYTES[0], RATES_PER_S[0], edges) + exact_bins(SIZES_BYTES[1], 0.0, edges)
    file = exact_bins(SIZES_BYTES[2], RATES_PER_S[2], edges)
    # exact and lru_gen: the model's ages, bin by bin.
    for guest in (0, 1):
        assert hist[guest, 0] == pytest.approx(anon, rel=1e-5, abs=1024)
        assert hist[guest, 1] == pytest.approx(file, rel=1e-5, abs=1024)
    assert anon[-1] == pytest.approx(1024 * MIB)  # the never-touched GiB is in the open bin
    # referenced: the same bins up to 120 s; everything older is its open bin, which the runner's
    # re-binning puts in (120 s, 300 s]; the bins above are empty.
    assert DEFAULT_EDGES == (1_000, 2_000, 5_000, 10_000, 20_000, 40_000, 60_000, 120_000)
    assert REFERENCED_EDGES_MS == DEFAULT_EDGES and REFERENCED_CYCLE_S == DEFAULT_CYCLE_S == 120.0
    for row, exact in ((0, anon), (1, file)):
        expected = np.zeros(13)
        expected[:8] = exact[:8]
        expected[8] = exact[8:].sum()
        assert hist[2, row] == pytest.approx(expected, rel=1e-5, abs=1024)
    assert hist[2, 0, 8] == pytest.approx(1024 * MIB + 512 * MIB * math.exp(-4), rel=1e-5)
    assert hist[2, 1, 8] == pytest.approx(256 * MIB * math.exp(-0.2), rel=1e-5)
    # memory_stat: active bytes in (0, 1 s], inactive in the open bin above 1 s, re-binned to (1 s, 2 s].
    # anon: 1.5 GiB LRU, ratio int_sqrt(10 * 1) = 3, balanced inactive 384 MiB < 1 GiB idle past 1 h,
    # so inactive = 1 GiB (+ the 30 s population's share idle past 1 h: e^-120, nil), active 512 MiB.
    # file: 256 MiB LRU, ratio 1, balanced inactive 128 MiB > the 0.6 MiB idle past 1 h.
    assert hist[3, 0, 0] == pytest.approx(512 * MIB, rel=1e-5)
    assert hist[3, 0, 1] == pytest.approx(1024 * MIB, rel=1e-5)
    assert hist[3, 1, 0] == pytest.approx(128 * MIB, rel=1e-5)
    assert hist[3, 1, 1] == pytest.approx(128 * MIB, rel=1e-5)
    assert not hist[3, :, 2:].any()
    # The same bins as the cgroup backend's conversion of those memory.stat fields, re-binned by the runner.
    fields = {
        "active_anon": 512 * MIB,
        "inactive_anon": 1024 * MIB,
        "active_file": 128 * MIB,
        "inactive_file": 128 * MIB,
        "unevictable": 0,
    }
    backend = memory_stat_histogram("g", fields).rebin(DEFAULT_EDGES_MS)
    assert hist[3, 0] == pytest.approx(backend.type_bytes("anon").astype(float), rel=1e-5)
    assert hist[3, 1] == pytest.approx(backend.type_bytes("file").astype(float), rel=1e-5)
    # Only the snapshot's histogram is degraded: the exact one rides along, the counters are exact.
    exact = snapshot.extra[EXACT_HIST_KEY]
    assert isinstance(exact, np.ndarray)
    np.testing.assert_array_equal(exact, sim.histograms())
    np.testing.assert_array_equal(exact_snapshot(snapshot).hist_bytes, exact)
    np.testing.assert_array_equal(snapshot.usage_bytes, sim.model.resident_bytes)


def test_rebin_matrix_is_the_runners_rebin() -> None:
    rng = np.random.default_rng(3)
    source_edges = (1_000, 7_000, 120_000)
    rows = {"anon": [int(v) for v in rng.integers(0, 10**9, 4)], "file": [0, 5, 7, 11]}
    moved = Histogram("g", ALL_NODES, source_edges, rows).rebin(DEFAULT_EDGES_MS)
    matrix = rebin_matrix(source_edges, np.array(DEFAULT_EDGES_MS))
    for type_name, row in rows.items():
        assert np.array(row, dtype=float) @ matrix == pytest.approx(moved.type_bytes(type_name), abs=1.0)


def test_referenced_refreshes_once_per_cycle() -> None:
    sim = known_sim()
    first = sim.observed_histograms()[0, 2].copy()
    assert sim.observed.published_at_s == 0.0
    changes = []
    published = []
    for _ in range(25):  # 250 s: cycles end at 120 s and 240 s
        # Below the 1.75 GiB demand the limit evicts at once; lower again after 180 s.
        sim.step(np.full((1, 4), (1.4 if sim.time_s < 180 else 1.2) * GIB))
        observed = sim.observed_histograms()[0]
        exact_now = sim.histograms()[0]
        np.testing.assert_array_equal(observed[0], exact_now[0])  # exact follows every step
        published.append(sim.observed.published_at_s)
        if not np.array_equal(observed[2], first):
            changes.append(sim.time_s)
            first = observed[2].copy()
            # The new one is the state at the cycle's end, on the source's edges.
            source_bins = sim.model.histogram_bytes(np.asarray(REFERENCED_EDGES_MS))[0, 2]
            assert observed[2, :, :8] == pytest.approx(source_bins[:, :8])
            assert observed[2, :, 8] == pytest.approx(source_bins[:, 8])
            assert not observed[2, :, 9:].any()
        elif sim.time_s == 110:  # the limit evicted 400 MiB at once; the source still shows 1.75 GiB
            assert first.sum() == pytest.approx(1.75 * GIB, rel=1e-5)
            assert exact_now[2].sum() < 1.4 * GIB
    assert changes == [120.0, 240.0]
    assert published == [0.0] * 11 + [120.0] * 12 + [240.0] * 2


def write_scenario(tmp_path: Path, name: str, head: str, guest_key: str = "") -> Path:
    text = (ROOT / "envs" / "scenarios" / "laptop.toml").read_text()
    if guest_key:
        text = text.replace("[[guest]]\n", f"[[guest]]\n{guest_key}\n")
    path = tmp_path / f"{name}.toml"
    path.write_text(head + "\n" + text)
    return path


def test_exact_is_unchanged_and_metrics_use_the_exact_state(tmp_path: Path) -> None:
    plain = ScenarioInput("laptop")
    explicit = ScenarioInput(str(write_scenario(tmp_path, "explicit", 'histogram_source = "exact"')))
    lru_gen = ScenarioInput(str(write_scenario(tmp_path, "lru", "", 'histogram_source = "lru_gen"')))
    stat = ScenarioInput(str(write_scenario(tmp_path, "stat", 'histogram_source = "memory_stat"')))
    for policy in ("static", "far-memory"):
        base = run_one(RunSpec(policy, plain, seed=1, duration_s=1200)).metrics
        assert run_one(RunSpec(policy, explicit, seed=1, duration_s=1200)).metrics == base
        assert run_one(RunSpec(policy, lru_gen, seed=1, duration_s=1200)).metrics == base
        degraded = run_one(RunSpec(policy, stat, seed=1, duration_s=1200)).metrics
        if policy == "static":  # sizes ignore histograms; metrics read the exact ages: the same run
            assert degraded == base
        else:  # far-memory reads the histogram it is given: memory_stat shows it only 1 s ages
            assert degraded != base
    # No key and "exact": the snapshot holds the simulator's own array and nothing else.
    sim = Simulator(build_setup("laptop"))
    sim.reset(0)
    snapshot = snapshot_from_simulator(sim)
    np.testing.assert_array_equal(snapshot.hist_bytes, sim.histograms())
    assert EXACT_HIST_KEY not in snapshot.extra


def test_scenario_and_guest_keys(tmp_path: Path) -> None:
    path = write_scenario(tmp_path, "mixed", 'histogram_source = "referenced"')
    text = path.read_text().replace(
        'name = "android"\n', 'name = "android"\nhistogram_source = "memory_stat"\n'
    )
    path.write_text(text)
    scenario = load_scenario(path)
    assert [scenario.histogram_source_of(i) for i in range(3)] == ["referenced", "memory_stat", "referenced"]
    setup = build_setup(scenario)
    assert setup.guests.histogram_source is not None
    expected = [HISTOGRAM_REFERENCED, HISTOGRAM_MEMORY_STAT, HISTOGRAM_REFERENCED]
    assert setup.guests.histogram_source[0].tolist() == expected


@pytest.mark.parametrize(
    ("head", "guest_key", "field"),
    [
        ("", 'histogram_source = "damon"', "guest[0].histogram_source"),
        ('histogram_source = "approximate"', "", "histogram_source"),
    ],
)
def test_bad_histogram_source_names_the_field(tmp_path: Path, head: str, guest_key: str, field: str) -> None:
    path = write_scenario(tmp_path, "bad", head, guest_key)
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    message = str(info.value)
    assert f"{field}:" in message and "bad.toml" in message
    assert "'exact'" in message and "'memory_stat'" in message


def test_idle_beside_busy_training_input() -> None:
    path = ROOT / "envs" / "training" / "idle-beside-busy.toml"
    setup = build_setup(load_scenario(path))
    guests = setup.guests
    assert guests.names[0].tolist() == ["busy", "mixed", "idle"]
    assert guests.histogram_source is not None
    sources = [HISTOGRAM_LRU_GEN, HISTOGRAM_REFERENCED, HISTOGRAM_MEMORY_STAT]
    assert guests.histogram_source[0].tolist() == sources
    usable_bytes = setup.hosts.capacity_bytes[0] - setup.hosts.reserve_bytes[0]
    assert guests.provisioned_bytes[0].sum() == 24 * GIB and usable_bytes == 13 * GIB


def test_training_hosts_take_the_sources_in_turn() -> None:
    """``[env] histogram_sources``: host h reads through sources[h % n] wherever the scenario left
    the source open; a guest whose scenario names one keeps it; the observations differ."""
    from wsrl.rl.vec_env import GuestVecEnv
    from wsrl.sim.arrays import HISTOGRAM_SOURCE_NAMES, with_histogram_sources

    setup = build_setup(load_scenario("laptop"), hosts=3)
    spread = with_histogram_sources(setup, ["referenced", "memory_stat"])
    assert spread.guests.histogram_source is not None
    names = [[HISTOGRAM_SOURCE_NAMES[i] for i in row] for row in spread.guests.histogram_source]
    assert names == [["referenced"] * 3, ["memory_stat"] * 3, ["referenced"] * 3]
    assert with_histogram_sources(setup, []) is setup
    own = build_setup(load_scenario(str(ROOT / "envs/training/idle-beside-busy.toml")), hosts=2)
    kept = with_histogram_sources(own, ["memory_stat"])
    np.testing.assert_array_equal(
        kept.guests.histogram_source[own.guests.histogram_source != HISTOGRAM_EXACT],
        own.guests.histogram_source[own.guests.histogram_source != HISTOGRAM_EXACT],
    )
    with pytest.raises(ValueError, match="unknown histogram source"):
        with_histogram_sources(setup, ["page_idle"])
    exact = GuestVecEnv([ScenarioInput("laptop")], hosts_per_input=2, episode_steps=20, random_start=False)
    coarse = GuestVecEnv(
        [ScenarioInput("laptop")],
        hosts_per_input=2,
        episode_steps=20,
        random_start=False,
        histogram_sources=["memory_stat"],
    )
    zeros = np.zeros((exact.num_envs, *exact.action_space.shape), dtype=np.float32)
    for env in (exact, coarse):
        env.reset()
        for _ in range(3):
            env.step(zeros)
    obs_exact = exact.step(zeros)[0]
    obs_coarse = coarse.step(zeros)[0]
    assert obs_exact.shape == obs_coarse.shape and not np.allclose(obs_exact, obs_coarse)
    exact.close()
    coarse.close()


def test_a_bad_training_source_names_the_key(tmp_path: Path) -> None:
    from wsrl.errors import WsrlError
    from wsrl.rl.config import load_agent_config

    config = tmp_path / "agent.toml"
    config.write_text(
        'algorithm = "PPO"\ntimesteps = 10\n[env]\ninputs = ["laptop"]\n'
        'histogram_sources = ["exact", "pagemap"]\n',
        encoding="utf-8",
    )
    with pytest.raises(WsrlError, match=r"env\.histogram_sources\[1\]: must be 'exact'"):
        load_agent_config(config)


def test_a_referenced_guest_says_its_horizon_and_its_open_bin_is_read_log_uniformly() -> None:
    """Past the ``referenced`` source's 120 s horizon the ages are unknown: the learned policies'
    cold reading spreads those bytes log-uniformly up to the last edge (1 h) instead of counting
    them young at every threshold past the (120 s, 300 s] bin the runner re-bins them into."""
    from wsrl.histogram import cold_weights
    from wsrl.pipeline.observation import OBS_IDLE_MS, cold_bytes_by_type

    snapshot = snapshot_from_simulator(known_sim())
    horizon = snapshot.histogram_horizon_ms()
    assert horizon[0].tolist() == [math.inf, math.inf, 120_000.0, math.inf]
    assert exact_snapshot(snapshot).hist_horizon_ms is None
    cold = cold_bytes_by_type(snapshot)[0]  # [guests, 2, ages]
    weights = np.stack([cold_weights(DEFAULT_EDGES_MS, ms) for ms in OBS_IDLE_MS], axis=1)
    rule = snapshot.hist_bytes[0] @ weights
    for guest in (0, 1, 3):  # exact ages, lru_gen, memory_stat: the histogram rule as it was
        np.testing.assert_allclose(cold[guest], rule[guest])
    open_bin = snapshot.hist_bytes[0, 2, :, 8]  # [2]: the referenced guest's bytes idle past 120 s
    for k, idle_ms in enumerate(OBS_IDLE_MS):
        if idle_ms < 120_000:
            np.testing.assert_allclose(cold[2, :, k], rule[2, :, k])
        else:
            share = max(0.0, math.log(3_600_000 / idle_ms) / math.log(30))
            np.testing.assert_allclose(cold[2, :, k], open_bin * share, rtol=1e-9, atol=1.0)
    assert (np.diff(cold[2], axis=-1) <= 1.0).all()  # still non-increasing in age
    # The never-touched GiB: 0.53 of it counts cold at 10 minutes (the rule said none).
    assert cold[2, 0, OBS_IDLE_MS.index(600_000)] > 0.5 * GIB and rule[2, 0, OBS_IDLE_MS.index(600_000)] == 0
