"""The input layer (wsrl.inputs): typed references parsed once, and one snapshot interface.

Parsing: every text form, its round trip, relative resolution and the errors. Sources: a simulated
host, a trace recorded from it and replayed, and the live readings of the simulator backend give
the same :class:`HostSnapshot` for the same state, field by field (to what each storage keeps).
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest

from wsrl.backends.sim import SimBackend, SimWorld
from wsrl.errors import ConfigError, WsrlError
from wsrl.eval.runner import RunSpec
from wsrl.inputs.live import GuestSpec, LiveHost
from wsrl.inputs.ref import ScenarioInput, TraceInput, parse_input, trace_input
from wsrl.inputs.replay import read_trace_host
from wsrl.inputs.setup import input_setup, trace_guest_names, trace_host_setup
from wsrl.inputs.simulated import SimulatedHost
from wsrl.inputs.source import SnapshotSource
from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.rl.config import AgentConfig, load_agent_config
from wsrl.sim.run import run_simulation
from wsrl.sim.simulator import Simulator

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "envs" / "traces" / "bitbrains-sample"
CLIENT = str(REPO / "envs" / "training" / "client.toml")

# --- references ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("laptop", ScenarioInput("laptop")),
        ("envs/training/pair.toml", ScenarioInput("envs/training/pair.toml")),
        ("pair.toml", ScenarioInput("pair.toml")),
        ("/abs/x.toml", ScenarioInput("/abs/x.toml")),
        ("traces:envs/traces/bitbrains-sample", TraceInput(Path("envs/traces/bitbrains-sample"))),
        ("traces:/data/bitbrains/holdout", TraceInput(Path("/data/bitbrains/holdout"))),
    ],
)
def test_parse_gives_the_typed_input_and_str_gives_the_text_back(text: str, expected: object) -> None:
    ref = parse_input(text)
    assert ref == expected
    assert str(ref) == text
    assert parse_input(str(ref)) == ref
    assert pickle.loads(pickle.dumps(ref)) == ref  # the process pool and Ray get refs whole
    assert hash(ref) == hash(expected)  # setups are cached per ref


def test_scenario_names_and_paths() -> None:
    assert not ScenarioInput("laptop").is_path
    assert ScenarioInput("envs/x").is_path and ScenarioInput("x.toml").is_path
    assert ScenarioInput("envs/training/pair.toml").stem == "pair"
    assert TraceInput(Path("out/bitbrains/holdout")).stem == "holdout"
    assert TraceInput("out/x") == TraceInput(Path("out/x"))  # a str directory becomes a Path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("traces:", "no trace directory after 'traces:'"),
        ("traces:  ", "no trace directory"),
        ("trace:out/x", "unknown kind 'trace'"),
        ("live:host.toml", "unknown kind 'live'"),
    ],
)
def test_bad_references_name_the_input(text: str, message: str) -> None:
    with pytest.raises(WsrlError, match=message) as info:
        parse_input(text)
    assert repr(text) in str(info.value) and "\n" not in str(info.value)


def test_a_non_text_reference_is_refused() -> None:
    with pytest.raises(WsrlError, match="not text"):
        parse_input(3)  # type: ignore[arg-type]


def test_relative_paths_resolve_against_the_base_folder(tmp_path: Path) -> None:
    base = tmp_path / "agents"
    assert parse_input("traces:../out/train", base) == TraceInput((tmp_path / "out" / "train").resolve())
    assert parse_input("../envs/x.toml", base) == ScenarioInput(str((tmp_path / "envs" / "x.toml").resolve()))
    assert parse_input("laptop", base) == ScenarioInput("laptop")  # a bundled name stays a name
    assert parse_input("traces:/abs/t", base) == TraceInput(Path("/abs/t"))
    assert parse_input("/abs/x.toml", base) == ScenarioInput("/abs/x.toml")
    # Resolving twice changes nothing (a dumped config loads back the same).
    once = parse_input("traces:../out/train", base)
    assert once.resolved(tmp_path / "elsewhere") == once


def test_trace_input_takes_a_directory_or_its_text_form() -> None:
    assert trace_input("traces:out/t") == trace_input("out/t") == trace_input(Path("out/t"))
    ref = TraceInput(Path("out/t"))
    assert trace_input(ref) is ref
    with pytest.raises(WsrlError, match="no directory"):
        trace_input("")


def test_run_specs_carry_typed_inputs_and_results_their_text() -> None:
    spec = RunSpec("static", parse_input("traces:envs/traces/bitbrains-sample"), 0, 60.0)
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert str(spec.input) == "traces:envs/traces/bitbrains-sample"


def test_agent_configs_parse_inputs_once_and_write_them_back_as_text(tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    file = agents / "tiny.toml"
    file.write_text(
        'algorithm = "PPO"\ntimesteps = 10\n[env]\n'
        'inputs = ["laptop", "../envs/x.toml", "traces:../out/train"]\n'
        '[eval]\ninputs = ["traces:/abs/holdout"]\n'
    )
    config = load_agent_config(file)
    assert config.env.inputs == [
        ScenarioInput("laptop"),
        ScenarioInput(str((tmp_path / "envs" / "x.toml").resolve())),
        TraceInput((tmp_path / "out" / "train").resolve()),
    ]
    assert config.eval.inputs == [TraceInput(Path("/abs/holdout"))]
    dumped = config.model_dump(mode="json")
    assert dumped["env"]["inputs"] == [str(ref) for ref in config.env.inputs]
    assert AgentConfig.model_validate(config.model_dump()).env.inputs == config.env.inputs
    file.write_text('algorithm = "PPO"\ntimesteps = 10\n[env]\ninputs = ["laptop", "traces:"]\n')
    with pytest.raises(ConfigError, match=r"env\.inputs.*no trace directory"):
        load_agent_config(file)


# --- setups --------------------------------------------------------------------------------------


def test_trace_setups_replay_the_traces_guests() -> None:
    names = trace_guest_names(SAMPLE)
    everything = input_setup(TraceInput(SAMPLE))
    assert int(everything.guests.mask.sum()) == len(names)
    capacity = np.where(everything.guests.mask, everything.guests.provisioned_bytes, 0.0).sum(axis=1)
    np.testing.assert_array_equal(everything.hosts.capacity_bytes, capacity)
    two = trace_host_setup(SAMPLE, names[:2])
    assert two.guests.mask.shape[0] == 1 and int(two.guests.mask.sum()) == 2


# --- one interface, the same snapshot --------------------------------------------------------------

ARRAY_FIELDS = [
    f.name
    for f in dataclasses.fields(HostSnapshot)
    if f.name not in ("time_ms", "interval_s", "host_names", "extra", "hist_provisional", "hist_horizon_ms")
]
STORED_AS_INTEGERS = {
    # What the trace (and the live readings' integer histograms) keep: bytes and pages as integers,
    # stall as whole microseconds.
    "hist_bytes": 0.5,
    "refault_total": 1.0,  # anon and file pages, each rounded
    "psi_some_total_s": 1e-6,
    "usage_bytes": 0.5,
    "visible_bytes": 0.5,
    "target_bytes": 0.5,
    "provisioned_bytes": 0.5,
    "swap_bytes": 0.5,
}


LIVE_TOLERANCES = {
    "hist_bytes": 0.5,  # the simulator backend reports whole bytes per bin
    "usage_bytes": 64.0,  # usage is at least the (rounded) histogram's resident bytes
}


def assert_same_snapshot(
    mine: HostSnapshot, theirs: HostSnapshot, order: list[int], tolerances: dict[str, float]
) -> None:
    """Every array field of ``mine`` equals ``theirs`` (its slots in ``order``), within ``tolerances``."""
    for name in ARRAY_FIELDS:
        ours = np.asarray(getattr(mine, name))
        other = np.asarray(getattr(theirs, name))
        if name in ("capacity_bytes", "reserve_bytes"):
            other = other[:1]  # [hosts]
        elif name != "edges_ms":
            other = other[:1][:, order]  # [hosts, guests, ...]
        assert ours.shape == other.shape, name
        if other.dtype == object or ours.dtype == object or other.dtype == bool:
            assert (ours == other).all(), name
        else:
            np.testing.assert_allclose(ours, other, rtol=0, atol=tolerances.get(name, 0.0), err_msg=name)
    assert mine.host_names == theirs.host_names[:1]
    # None (simulation, replay) and all False (live readings of settled sources) say the same.
    assert (mine.histogram_provisional() == theirs.histogram_provisional()[:1][:, order]).all()
    assert (mine.histogram_horizon_ms() == theirs.histogram_horizon_ms()[:1][:, order]).all()


def test_every_source_implements_the_one_interface(tmp_path: Path) -> None:
    sim = Simulator(input_setup(ScenarioInput("laptop")))
    sim.reset(0)
    run_simulation(input_setup(ScenarioInput(CLIENT)), 30.0, seed=0, out=tmp_path / "trace")
    spec = GuestSpec("g", 1.0, 0.0)
    live = LiveHost([spec], host_name="h", capacity_bytes=2.0, reserve_bytes=0.0, interval_s=10.0)
    for source in (SimulatedHost(sim), read_trace_host(tmp_path / "trace"), live):
        assert isinstance(source, SnapshotSource)


def test_a_replayed_recording_is_the_simulated_host_it_was_recorded_from(tmp_path: Path) -> None:
    setup = input_setup(ScenarioInput(CLIENT))
    seed, steps = 5, 30
    run_simulation(setup, steps * setup.step_s, seed=seed, out=tmp_path / "trace")
    sim = Simulator(setup)
    sim.reset(seed)
    simulated = SimulatedHost(sim)
    provisioned = np.where(setup.guests.mask, setup.guests.provisioned_bytes, 0.0)
    replay = read_trace_host(tmp_path / "trace")
    assert replay.static_source == "scenario" and len(replay) == steps
    order = [[str(n) for n in setup.guests.names[0]].index(name) for name in replay.guest_names]
    for t in range(steps):
        sim.step(provisioned)
        mine, theirs = replay.snapshot(), simulated.snapshot()
        assert (mine.time_ms, mine.interval_s) == (theirs.time_ms, theirs.interval_s)
        assert_same_snapshot(mine, theirs, order, STORED_AS_INTEGERS)
        assert replay.advance() == (t < steps - 1)
    assert replay.position == steps - 1
    # snapshots() replays from the first sample through the same cursor.
    again = list(replay.snapshots())
    assert len(again) == steps and replay.position == steps - 1
    np.testing.assert_array_equal(again[3].hist_bytes, replay.snapshot_at(3).hist_bytes)


def test_live_readings_of_the_simulator_backend_are_the_simulated_host(tmp_path: Path) -> None:
    world = SimWorld("laptop", seed=2, seconds_per_tick=30.0, wall_clock=lambda: 1_700_000_000.0)
    backends = [SimBackend(name, world) for name in world.guest_names]
    sim = world.sim
    setup = sim.setup
    slots = [world.index_of(name) for name in world.guest_names]
    specs = [
        GuestSpec(
            name,
            provisioned_bytes=float(setup.guests.provisioned_bytes[0, g]),
            floor_bytes=float(setup.guests.floor_bytes[0, g]),
            shares=float(setup.guests.shares[0, g]),
            tier=int(setup.guests.tier[0, g]),
        )
        for name, g in zip(world.guest_names, slots, strict=True)
    ]
    live = LiveHost(
        specs,
        host_name=str(setup.hosts.names[0]),
        capacity_bytes=float(setup.hosts.capacity_bytes[0]),
        reserve_bytes=float(setup.hosts.reserve_bytes[0]),
        interval_s=10.0,
        edges_ms=[int(e) for e in sim.edges_ms],
    )
    with pytest.raises(ValueError, match="no readings"):
        live.snapshot()
    simulated = SimulatedHost(sim)
    previous_ms = None
    for _ in range(4):
        readings = [b.read() for b in backends]  # the first read of a tick advances the world
        time_ms = max(r.time_ms for r in readings)
        live.observe(readings, time_ms)
        mine, theirs = live.snapshot(), simulated.snapshot()
        assert mine.time_ms - world.anchor_ms == theirs.time_ms - setup.start_time_ms
        assert mine.interval_s == (10.0 if previous_ms is None else (time_ms - previous_ms) / 1000.0)
        assert_same_snapshot(mine, theirs, slots, LIVE_TOLERANCES)
        previous_ms = time_ms
        for backend, g in zip(backends, slots, strict=True):  # squeeze a little: counters move
            backend.apply(int(0.7 * float(sim.model.visible_bytes[0, g])))
    assert previous_ms is not None
    # A tick stamped before the previous one (a clock stepped back) keeps the configured interval.
    live.observe(readings, previous_ms - 5_000)
    assert live.snapshot().interval_s == 10.0


def test_live_readings_carry_each_histograms_horizon() -> None:
    """A live source that cannot date bytes past some age (the ``referenced`` sampler's last window)
    says so per reading; the snapshot carries it where a histogram came with it, and a guest with
    no horizon (or a nonsense one) reads as exact ages up to the last edge."""
    from wsrl.histogram import ALL_NODES, DEFAULT_EDGES_MS, Histogram
    from wsrl.inputs.live import GuestReading, snapshot_from_readings

    def reading(name: str, horizon_ms: float, histogram: bool = True) -> GuestReading:
        rows = {"anon": [0] * (len(DEFAULT_EDGES_MS) + 1), "file": [0] * (len(DEFAULT_EDGES_MS) + 1)}
        rows["anon"][-1] = 1 << 20
        hist = Histogram(name, ALL_NODES, DEFAULT_EDGES_MS, rows) if histogram else None
        return GuestReading(
            name=name, time_ms=1, visible_bytes=2.0**30, histogram=hist, histogram_horizon_ms=horizon_ms
        )

    specs = [GuestSpec(name, 2.0**30, 0.0) for name in "abcde"]
    readings = [
        reading("a", 120_000.0),
        reading("b", float("inf")),
        reading("c", float("nan")),
        reading("d", -5.0),
        reading("e", 60_000.0, histogram=False),
    ]
    kwargs = {
        "host_name": "h",
        "capacity_bytes": 2.0**32,
        "reserve_bytes": 0.0,
        "interval_s": 5.0,
        "time_ms": 1,
    }
    snapshot = snapshot_from_readings(readings, specs, **kwargs)  # type: ignore[arg-type]
    assert snapshot.histogram_horizon_ms()[0].tolist() == [120_000.0] + [float("inf")] * 4
    exact = snapshot_from_readings([reading(s.name, float("inf")) for s in specs], specs, **kwargs)  # type: ignore[arg-type]
    assert exact.hist_horizon_ms is None
