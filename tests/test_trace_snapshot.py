"""Trace replay (wsrl.inputs.replay): snapshots read back from a recorded trace give the
same observation rows, decisions and rewards as the live simulator snapshots they were recorded from."""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from wsrl.errors import WsrlError
from wsrl.inputs.ref import ScenarioInput
from wsrl.inputs.replay import read_trace_host, trace_host_names, trace_snapshots
from wsrl.inputs.setup import input_setup
from wsrl.inputs.simulated import snapshot_from_simulator
from wsrl.pipeline.observation import FEATURE_NAMES, ObservationBuilder
from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.policies import make_stack
from wsrl.rl.bc import record_decisions
from wsrl.rl.reward import RewardWeights, reward_terms
from wsrl.sim.build import build_setup
from wsrl.sim.config import load_scenario
from wsrl.sim.run import run_simulation
from wsrl.sim.simulator import Simulator
from wsrl.slo import PROMOTION_BUDGET_FRAC_PER_MIN
from wsrl.trace.reader import TraceReader
from wsrl.trace.writer import TraceWriter
from wsrl.units import PAGE_BYTES

REPO = Path(__file__).resolve().parents[1]
CLIENT = str(REPO / "envs" / "training" / "client.toml")
LAPTOP = str(REPO / "envs" / "scenarios" / "laptop.toml")

# Features computed from cumulative counters, which the trace stores as integers (refaults in whole
# pages, PSI stall in whole us): replayed values differ from the simulator's fractional ones by
# that quantisation. Everything else matches to float32 rounding.
COUNTER_FEATURES = (
    "refault_budget_log",
    "refault_budget_slow_log",
    "stall_log",
    "host_refault_budget_log",
)
COUNTER_COLUMNS = [FEATURE_NAMES.index(name) for name in COUNTER_FEATURES]
OTHER_COLUMNS = [k for k in range(len(FEATURE_NAMES)) if k not in COUNTER_COLUMNS]
FLOAT32_ATOL = 1e-5
STEP_S = 10.0
STALL_LOG_ATOL = (1e-6 / STEP_S) / (1e-6 * 6.0 * math.log(10.0))
"""PSI stall in whole us: a step's stall is off by at most 1 us, its fraction by 1e-6 / step, and
``stall_log = log10(max(stall, 1e-6)) / 6 + 1`` moves by at most that over (1e-6 * 6 ln 10): 0.0072
for 10 s steps (measured: 0.005 on the far-memory run, 1.5e-4 with every guest at its size)."""


def two_page_bound(snapshots: list[HostSnapshot]) -> np.ndarray:
    """``[times, hosts, guests]`` what two pages of refaults per step move ``refault_budget_log``.

    The trace rounds the anon and file refault counters to whole pages (each by at most half a
    page), so a replayed step's refaults are off by at most two pages; ``log1p`` moves by at most
    the ratio's change.
    """
    bounds = [np.zeros(snapshots[0].shape)]
    for before, after in itertools.pairwise(snapshots):
        dt_s = (after.time_ms - before.time_ms) / 1000.0
        budget = PROMOTION_BUDGET_FRAC_PER_MIN * np.maximum(after.working_set_bytes(), PAGE_BYTES)
        bounds.append(2 * PAGE_BYTES * (60.0 / dt_s) / budget)
    return np.stack(bounds)


def quantised(snapshot: HostSnapshot, sim: Simulator) -> HostSnapshot:
    """The live snapshot with its counters rounded exactly as wsrl.sim.record stores them."""
    model = sim.model
    return dataclasses.replace(
        snapshot,
        refault_total=np.rint(model.refault_anon_total) + np.rint(model.refault_file_total),
        psi_some_total_s=np.rint(model.psi_some_total_s * 1e6) / 1e6,
    )


def observation_rows(snapshots: list[HostSnapshot]) -> np.ndarray:
    """``[times, hosts, guests, F]`` from one builder fed the snapshots in order."""
    builder = ObservationBuilder()
    return np.stack([builder.reset(s) if i == 0 else builder.build(s) for i, s in enumerate(snapshots)])


def slot_order(replay_names: list[str], live_names: np.ndarray) -> list[int]:
    """For each replay slot, the live slot of the same guest."""
    live = [str(n) for n in live_names]
    return [live.index(name) for name in replay_names]


def assert_rows_match(live: np.ndarray, replayed: np.ndarray, page_bound: np.ndarray | None = None) -> None:
    """Features within float32 rounding; counter features within their quantisation if bounded."""
    diff = np.abs(live - replayed)
    worst = diff.reshape(-1, diff.shape[-1]).max(axis=0)
    for column in OTHER_COLUMNS if page_bound is not None else range(len(FEATURE_NAMES)):
        assert worst[column] <= FLOAT32_ATOL, f"{FEATURE_NAMES[column]} differs by {worst[column]}"
    if page_bound is None:
        return
    own = diff[..., FEATURE_NAMES.index("refault_budget_log")]
    assert (own <= page_bound + FLOAT32_ATOL).all(), "refault_budget_log beyond two pages per step"
    for name in ("refault_budget_slow_log", "host_refault_budget_log"):
        assert worst[FEATURE_NAMES.index(name)] <= page_bound.max() + FLOAT32_ATOL, name
    assert worst[FEATURE_NAMES.index("stall_log")] <= STALL_LOG_ATOL


def test_wsrl_sim_trace_replays_the_live_observations(tmp_path: Path) -> None:
    # Record exactly as `wsrl sim --out` does, then re-run the same deterministic simulation live.
    setup = build_setup(load_scenario(CLIENT))
    seed, steps = 3, 180
    run_simulation(setup, steps * setup.step_s, seed=seed, out=tmp_path / "trace")
    sim = Simulator(setup)
    sim.reset(seed)
    provisioned = np.where(setup.guests.mask, setup.guests.provisioned_bytes, 0.0)
    live, live_quantised = [], []
    for _ in range(steps):
        sim.step(provisioned)
        snapshot = snapshot_from_simulator(sim)
        live.append(snapshot)
        live_quantised.append(quantised(snapshot, sim))

    replay = read_trace_host(tmp_path / "trace")
    assert replay.static_source == "scenario"  # floors, shares, tiers, host size from the scenario
    assert len(replay) == steps and replay.mask.all()
    snapshots = list(replay.snapshots())
    order = slot_order(replay.guest_names, setup.guests.names[0])
    for mine, theirs in zip(snapshots, live, strict=True):
        assert mine.time_ms == theirs.time_ms and mine.interval_s == theirs.interval_s
        np.testing.assert_allclose(mine.hist_bytes[0], theirs.hist_bytes[0][order], atol=0.5)
        np.testing.assert_array_equal(mine.floor_bytes[0], theirs.floor_bytes[0][order])
        np.testing.assert_array_equal(mine.tier[0], theirs.tier[0][order])
        assert mine.capacity_bytes[0] == theirs.capacity_bytes[0]
        assert mine.reserve_bytes[0] == theirs.reserve_bytes[0]
    replayed = observation_rows(snapshots)[:, 0]
    assert_rows_match(observation_rows(live_quantised)[:, 0][:, order], replayed)
    bound = two_page_bound(live)[:, 0][:, order]
    assert_rows_match(observation_rows(live)[:, 0][:, order], replayed, bound)


def test_policy_trace_replays_observations_decisions_and_rewards(tmp_path: Path) -> None:
    # A policy that squeezes guests: refaults, stall, balloon events and moving targets.
    seed, steps = 1, 180
    (trace,) = record_decisions("far-memory", [ScenarioInput(LAPTOP)], steps * 10.0, seed, tmp_path)
    setup = input_setup(ScenarioInput(LAPTOP))
    sim = Simulator(setup)
    sim.reset(seed)
    snapshot = snapshot_from_simulator(sim)
    loop = make_stack("far-memory")  # record_decisions' stack: the default rails
    loop.reset(snapshot)
    live, live_quantised, requests = [snapshot], [quantised(snapshot, sim)], []
    for _ in range(steps):
        decision = loop.step(snapshot)
        requests.append(np.clip(decision.proposal_bytes, snapshot.floor_bytes, snapshot.provisioned_bytes))
        sim.step(decision.target_bytes)
        snapshot = snapshot_from_simulator(sim)
        live.append(snapshot)
        live_quantised.append(quantised(snapshot, sim))

    replay = read_trace_host(trace)
    assert replay.static_source == "manifest"
    assert len(replay) == steps + 1
    snapshots = list(replay.snapshots())
    order = slot_order(replay.guest_names, setup.guests.names[0])
    assert snapshots[-1].refault_total.sum() > 0, "no refaults: the counter features are not exercised"
    for t, mine in enumerate(snapshots):
        recorded = mine.extra["action_target_bytes"][0]
        if t < steps:
            np.testing.assert_allclose(recorded, requests[t][0][order], atol=0.5)
            assert mine.extra["action_policy"] == "far-memory"
        else:
            assert np.isnan(recorded).all()  # the final state carries no decision
        np.testing.assert_array_equal(mine.balloon_stalled[0], live[t].balloon_stalled[0][order])
        np.testing.assert_allclose(mine.target_bytes[0], live[t].target_bytes[0][order], atol=0.5)
    replayed = observation_rows(snapshots)[:, 0]
    assert_rows_match(observation_rows(live_quantised)[:, 0][:, order], replayed)
    bound = two_page_bound(live)[:, 0][:, order]
    assert_rows_match(observation_rows(live)[:, 0][:, order], replayed, bound)

    weights = RewardWeights()
    for t in range(steps):
        mine = reward_terms(snapshots[t], snapshots[t + 1], weights)
        theirs = reward_terms(live_quantised[t], live_quantised[t + 1], weights)
        for name, value in mine.items():
            np.testing.assert_allclose(value[0], theirs[name][0][order], atol=1e-6, err_msg=name)


def _rewrite(source: Path, target: Path, keep: pa.Array | None = None, **nulls: bool) -> Path:
    """Copy a trace, keeping the rows where ``keep`` is True and nulling the named columns."""
    reader = TraceReader(source)
    table = reader.read_table()
    if keep is not None:
        table = table.filter(keep)
    for name in nulls:
        index = table.column_names.index(name)
        table = table.set_column(index, name, pa.nulls(table.num_rows, table.schema.field(name).type))
    with TraceWriter(target, source="test", meta=reader.manifest.get("meta", {})) as writer:
        writer.append_table(table)
    return target


@pytest.fixture(scope="module")
def laptop_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    laptop = ScenarioInput(LAPTOP)
    (trace,) = record_decisions("far-memory", [laptop], 300.0, 0, tmp_path_factory.mktemp("laptop"))
    return trace


def test_missing_guests_are_masked_with_counters_held(laptop_trace: Path, tmp_path: Path) -> None:
    full = read_trace_host(laptop_trace)
    table = TraceReader(laptop_trace).read_table(["time_ms", "guest"])
    times = np.asarray(table.column("time_ms").to_pylist())
    guests = np.asarray(table.column("guest").to_pylist())
    first, second = full.guest_names[0], full.guest_names[1]
    gap = (times >= full.times_ms[5]) & (times <= full.times_ms[9]) & (guests == first)
    late = (times < full.times_ms[3]) & (guests == second)
    trace = _rewrite(laptop_trace, tmp_path / "gappy", keep=pa.array(~(gap | late)))

    masked = read_trace_host(trace)
    assert masked.guest_names == full.guest_names and len(masked) == len(full)
    g1, g2 = 0, 1
    assert not masked.mask[5:10, g1].any() and masked.mask[:5, g1].all() and masked.mask[10:, g1].all()
    assert not masked.mask[:3, g2].any() and masked.mask[3:, g2].all()
    builder = ObservationBuilder()
    snapshots = list(masked.snapshots())
    rows = np.stack([builder.reset(s) if i == 0 else builder.build(s) for i, s in enumerate(snapshots)])[:, 0]
    assert not rows[5:10, g1].any()  # masked rows are zero
    assert not rows[:3, g2].any()
    # Counters are held through the gap (so the first sample after it differences against the last
    # one before it) and back-filled before a guest's first sample (no jump from 0).
    refault = np.stack([s.refault_total[0] for s in snapshots])
    np.testing.assert_array_equal(refault[5:10, g1], np.full(5, refault[4, g1]))
    np.testing.assert_array_equal(refault[10:, g1], full.columns["refault_total"][10:, g1])
    np.testing.assert_array_equal(refault[:3, g2], np.full(3, full.columns["refault_total"][3, g2]))
    np.testing.assert_array_equal(refault[:, 2], full.columns["refault_total"][:, 2])
    # The untouched guest's rows do not change (its host context does: fewer guests reported).
    host_columns = [FEATURE_NAMES.index(n) for n in FEATURE_NAMES if n.startswith("host_")]
    host_columns.append(FEATURE_NAMES.index("relative_share"))
    own = [k for k in range(len(FEATURE_NAMES)) if k not in host_columns]
    reference = observation_rows(list(full.snapshots()))[:, 0]
    np.testing.assert_allclose(rows[:, 2][:, own], reference[:, 2][:, own], atol=FLOAT32_ATOL)

    held = read_trace_host(trace, missing="hold")
    assert held.mask[5:10, g1].all() and not held.present[5:10, g1].any()
    assert not held.mask[:3, g2].any()  # before its first sample a guest is not held
    for t in range(5, 10):
        snapshot = held.snapshot_at(t)
        np.testing.assert_array_equal(snapshot.usage_bytes[0, g1], full.columns["usage_bytes"][4, g1])
        np.testing.assert_array_equal(snapshot.hist_bytes[0, g1], full.columns["hist_bytes"][4, g1])
        assert np.isnan(snapshot.extra["action_target_bytes"][0, g1])  # decisions are not repeated
        assert not snapshot.balloon_stalled[0, g1]


def test_defaults_when_the_trace_has_no_static_configuration(laptop_trace: Path, tmp_path: Path) -> None:
    reader = TraceReader(laptop_trace)
    table = reader.read_table()
    with TraceWriter(tmp_path / "bare", source="test", meta={"step_s": 10.0}) as writer:
        writer.append_table(table)
    replay = read_trace_host(tmp_path / "bare")
    assert replay.static_source == "defaults"
    snapshot = replay.snapshot_at(0)
    assert snapshot.capacity_bytes[0] == pytest.approx(replay.columns["provisioned_bytes"].sum(axis=1).max())
    assert snapshot.reserve_bytes[0] == 0.0 and not snapshot.floor_bytes.any()
    assert snapshot.interval_s == 10.0
    # The sim's own snapshots and the defaults differ only in the static features.
    rows = observation_rows([replay.snapshot_at(t) for t in range(len(replay))])
    assert rows.shape == (len(replay), 1, len(replay.guest_names), len(FEATURE_NAMES))
    assert np.isfinite(rows).all()


def test_trace_replay_errors_name_the_problem(laptop_trace: Path, tmp_path: Path) -> None:
    with pytest.raises(WsrlError, match="no host 'nope'"):
        read_trace_host(laptop_trace, "nope")
    with pytest.raises(WsrlError, match="missing="):
        read_trace_host(laptop_trace, missing="drop")  # type: ignore[arg-type]
    with pytest.raises(WsrlError, match="no such trace directory"):
        read_trace_host(tmp_path / "absent")
    no_hist = _rewrite(laptop_trace, tmp_path / "nohist", hist_edges_ms=True)
    with pytest.raises(WsrlError, match=r"column 'hist_edges_ms' is null for guest .* at time_ms"):
        read_trace_host(no_hist)
    # Null optional columns fall back: visible -> target; counters held.
    sparse = _rewrite(laptop_trace, tmp_path / "sparse", visible_bytes=True, psi_some_total_us=True)
    replay = read_trace_host(sparse)
    np.testing.assert_array_equal(replay.columns["visible_bytes"], replay.columns["target_bytes"])
    assert not replay.columns["psi_some_total_s"].any()

    # Two hosts: one must be named.
    two = build_setup(load_scenario(LAPTOP), hosts=2)
    run_simulation(two, 30.0, seed=0, out=tmp_path / "two")
    assert trace_host_names(tmp_path / "two") == ["host-0", "host-1"]
    with pytest.raises(WsrlError, match="has 2 hosts"):
        read_trace_host(tmp_path / "two")
    snapshots = list(trace_snapshots(tmp_path / "two", "host-1"))
    assert len(snapshots) == math.ceil(30.0 / two.step_s)
    assert snapshots[0].host_names == ["host-1"] and snapshots[0].shape == (1, int(two.guests.mask[1].sum()))
