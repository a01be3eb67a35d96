"""``wsrl fit``: page populations fitted to a trace's histograms replay the recorded guests.

The round trip of issue 17, item 5: simulate known guests, record them, fit, and drive the
original and the fitted guests under the same tighter limits: the refaults agree.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from wsrl.inputs.ref import ScenarioInput
from wsrl.inputs.setup import input_setup
from wsrl.inputs.simulated import snapshot_from_simulator
from wsrl.sim.build import build_setup
from wsrl.sim.config import load_scenario
from wsrl.sim.fit import fit_trace, nnls, write_fitted
from wsrl.sim.run import run_simulation
from wsrl.sim.simulator import Simulator
from wsrl.trace.reader import TraceReader
from wsrl.trace.writer import TraceWriter
from wsrl.units import GIB

ORIGINAL = """
name = "fit-round-trip"
description = "Three known guests for the fit's round trip."
step_s = 10

[host]
capacity_gib = 40
reserve_gib = 0

[[guest]]
name = "cache"
workload = "cache-cold-tail"
provisioned_gib = 14
swap_gib = 16
jitter = 0

[[guest]]
name = "mixed"
workload = "mixed-ten-minutes"
provisioned_gib = 8
swap_gib = 16
jitter = 0

[[guest]]
name = "idle"
workload = "idle-resident"
provisioned_gib = 8
swap_gib = 16
jitter = 0
"""


def test_nnls_meets_the_optimality_conditions() -> None:
    """Lawson-Hanson's answer is non-negative, and no coordinate can lower the residual: the
    gradient is zero on the positive ones and does not point into the feasible set elsewhere;
    on a tiny problem it is the best of every support."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        matrix = rng.random((8, 5))
        target = rng.random(8) - 0.3
        x = nnls(matrix, target)
        gradient = matrix.T @ (target - matrix @ x)
        assert (x >= 0).all()
        assert np.allclose(gradient[x > 0], 0.0, atol=1e-8)
        assert (gradient[x == 0] <= 1e-8).all()
        best = min(
            np.linalg.norm(
                matrix[:, list(s)] @ np.linalg.lstsq(matrix[:, list(s)], target, rcond=None)[0] - target
            )
            for k in range(1, 6)
            for s in itertools.combinations(range(5), k)
            if (np.linalg.lstsq(matrix[:, list(s)], target, rcond=None)[0] >= 0).all()
        )
        assert np.linalg.norm(matrix @ x - target) <= best + 1e-9


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The original scenario and the fitted one, from a 2 h recording at provisioned sizes."""
    root = tmp_path_factory.mktemp("fit")
    original = root / "original.toml"
    original.write_text(ORIGINAL, encoding="utf-8")
    run_simulation(build_setup(load_scenario(str(original))), 2 * 3600, seed=0, out=root / "trace")
    scenario = write_fitted(fit_trace(root / "trace"), root / "fitted", trace=str(root / "trace"))
    return original, scenario


def _refaults_per_s(scenario: Path, limits_gib: dict[str, float]) -> dict[str, float]:
    """Every guest held at its limit for 2 h: refaults per second over the last 1.5 h."""
    sim = Simulator(input_setup(ScenarioInput(str(scenario))))
    sim.reset(0)
    names = list(snapshot_from_simulator(sim).names[0])
    target = np.array([[limits_gib[n] * GIB for n in names]])
    first = None
    for step in range(720):
        sim.step(target)
        if step == 180:
            first = snapshot_from_simulator(sim)
    assert first is not None
    last = snapshot_from_simulator(sim)
    seconds = (last.time_ms - first.time_ms) / 1000.0
    return dict(zip(names, (last.refault_total - first.refault_total)[0] / seconds, strict=True))


@pytest.mark.parametrize(
    ("limits", "tolerance"),
    [
        ({"cache": 8.0, "mixed": 4.0, "idle": 2.0}, {"cache": 0.05, "mixed": 0.15}),
        ({"cache": 5.0, "mixed": 2.0, "idle": 1.0}, {"cache": 0.05, "mixed": 0.15}),
    ],
)
def test_fitted_guests_refault_like_the_recorded_ones(
    fitted: tuple[Path, Path], limits: dict[str, float], tolerance: dict[str, float]
) -> None:
    """Under limits the recording never saw, the fitted guests refault like the originals: the
    independent cache within 5 %, the guest with a 10-minute sweep within 15 % (well below its
    sweep's cliff; near it a fit may split one sweep into two of neighbouring periods), and the
    idle guest, whose idle memory is never touched, not at all."""
    original, scenario = fitted
    want = _refaults_per_s(original, limits)
    got = _refaults_per_s(scenario, limits)
    for name, frac in tolerance.items():
        assert want[name] > 100 and math.isclose(got[name], want[name], rel_tol=frac), (name, got, want)
    assert got["idle"] < 1.0 and want["idle"] < 1.0


def test_fitted_histograms_match_the_recording(fitted: tuple[Path, Path]) -> None:
    """At provisioned sizes the fitted guests' cold bytes at every canonical age are the originals'
    within 2 % of each guest's memory; within 6 % for the guest with a 10-minute sweep, whose
    uniform ages the dictionary's sweeps (periods 8 per decade) place 7 % of the bytes off."""
    original, scenario = fitted

    def cold(path: Path) -> dict[str, np.ndarray]:
        sim = Simulator(input_setup(ScenarioInput(str(path))))
        sim.reset(0)
        for _ in range(60):
            sim.step(np.where(sim.mask, sim.setup.guests.provisioned_bytes, 0.0))
        snapshot = snapshot_from_simulator(sim)
        ages = [int(e) for e in snapshot.edges_ms]
        curves = np.stack([snapshot.cold_bytes(a) for a in ages], axis=-1)[0]
        return {n: curves[i] / snapshot.usage_bytes[0, i] for i, n in enumerate(snapshot.names[0])}

    want, got = cold(original), cold(scenario)
    trace = scenario.parent.parent / "trace"
    assert {g.samples for g in fit_trace(trace, skip_s=3600)} == {360}  # the first hour left out
    for name, tolerance in (("cache", 0.02), ("idle", 0.02), ("mixed", 0.06)):
        assert np.abs(got[name] - want[name]).max() < tolerance, (name, got[name], want[name])


def test_fit_command_writes_a_scenario_and_refuses_what_it_cannot_fit(tmp_path: Path) -> None:
    """``wsrl fit`` writes workloads and a loadable scenario; a trace without histograms and a
    non-empty output folder get one line and exit 2."""
    original = tmp_path / "original.toml"
    original.write_text(ORIGINAL, encoding="utf-8")
    run_simulation(build_setup(load_scenario(str(original))), 600, seed=0, out=tmp_path / "trace")
    fit = [sys.executable, "-m", "wsrl", "fit", str(tmp_path / "trace")]
    result = subprocess.run(
        [*fit, "--out", str(tmp_path / "fitted"), "--json"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["scenario"] == str(tmp_path / "fitted" / "scenario.toml")
    config = load_scenario(str(tmp_path / "fitted" / "scenario.toml"))
    assert sorted(g.name for g in config.guest) == ["cache", "idle", "mixed"] and config.kernel == "mglru"
    again = subprocess.run([*fit, "--out", str(tmp_path / "fitted")], capture_output=True, text=True)
    assert again.returncode == 2 and "not empty" in again.stderr and "Traceback" not in again.stderr
    # memcgs recorded on a host kernel without MGLRU replay with its file-first reclaim.
    classic = subprocess.run(
        [*fit, "--out", str(tmp_path / "classic"), "--kernel", "classic"], capture_output=True, text=True
    )
    assert classic.returncode == 0, classic.stderr
    assert load_scenario(str(tmp_path / "classic" / "scenario.toml")).kernel == "classic"
    bad = subprocess.run(
        [*fit, "--out", str(tmp_path / "x"), "--kernel", "lru"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "option --kernel: 'lru' is not one of mglru, classic" in bad.stderr
    # The same samples without histograms (what a Bitbrains import holds): nothing to fit.
    table = TraceReader(tmp_path / "trace").read_table()
    for column in ("hist_edges_ms", "hist_anon_bytes", "hist_file_bytes"):
        index = table.schema.get_field_index(column)
        table = table.set_column(
            index, table.schema.field(index), pa.nulls(len(table), table.schema.field(index).type)
        )
    with TraceWriter(tmp_path / "bare", source="test") as writer:
        writer.append_table(table)
    bare = [sys.executable, "-m", "wsrl", "fit", str(tmp_path / "bare"), "--out", str(tmp_path / "none")]
    none = subprocess.run(bare, capture_output=True, text=True)
    assert none.returncode == 2 and "no guest has a working-set histogram" in none.stderr, none.stderr


def test_a_recording_through_the_referenced_source_is_fitted_up_to_its_horizon(tmp_path: Path) -> None:
    """Recorded through the `referenced` source (ages up to 120 s, then one open bin that the
    recording re-bins into (120 s, 300 s]), the trace says where its ages stop (schema 2's
    ``hist_horizon_ms``): the fit reads the bytes past it as older than 120 s, not as a
    population touched every few minutes, and replay hands the horizon to the policies."""
    from wsrl.inputs.replay import read_trace_host

    scenario = tmp_path / "referenced.toml"
    scenario.write_text(ORIGINAL.replace("step_s = 10\n", 'step_s = 10\nhistogram_source = "referenced"\n'))
    run_simulation(build_setup(load_scenario(str(scenario))), 3600, seed=0, out=tmp_path / "trace")
    table = TraceReader(tmp_path / "trace").read_table()
    assert set(table.column("hist_horizon_ms").to_pylist()) == {120_000}
    replay = read_trace_host(tmp_path / "trace")
    assert np.all(replay.snapshot_at(5).hist_horizon_ms == 120_000)

    fitted = {g.guest: g for g in fit_trace(tmp_path / "trace", skip_s=300)}

    def share(guest: str, low_s: float, high_s: float) -> float:
        pops = fitted[guest].populations
        inside = sum(p.size_bytes for p in pops if low_s <= p.access_interval_s <= high_s)
        return inside / sum(p.size_bytes for p in pops)

    assert all(g.residual_frac < 0.01 for g in fitted.values()), fitted
    # The idle guest's memory, untouched since it was loaded, is fitted as never touched...
    assert share("idle", math.inf, math.inf) > 0.95
    # ...and the guest swept every 10 minutes by populations touched every 5-20 minutes: the share
    # of its bytes seen within 120 s tells the period even though older ages are not told apart.
    assert share("mixed", 300.0, 1200.0) > 0.8

    # Without the horizon (a version-1 recording), the same histograms misplace the idle guest.
    index = table.schema.get_field_index("hist_horizon_ms")
    bare = table.set_column(index, table.schema.field(index), pa.nulls(len(table), pa.int64()))
    with TraceWriter(tmp_path / "bare", source="test") as writer:
        writer.append_table(bare)
    blind = {g.guest: g for g in fit_trace(tmp_path / "bare", skip_s=300)}
    assert blind["idle"].residual_frac > 0.3, blind["idle"].residual_frac  # read as a 5-minute sweep
    assert not any(math.isinf(p.access_interval_s) for p in blind["idle"].populations)
