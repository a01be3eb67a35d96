"""Export of trained agents to ONNX, the manifest checks, and learned policies in the runner.

Three tiny agents (PPO, SAC, RecurrentPPO) are really trained for a few hundred steps on the
per-guest vector env over the simulated ``laptop`` scenario, exported, and compared with
stable-baselines3's own deterministic ``predict`` on random and on real observations.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sb3_contrib import RecurrentPPO
from stable_baselines3 import PPO, SAC

from wsrl.cli import main
from wsrl.errors import WsrlError
from wsrl.eval.metrics import METRIC_NAMES
from wsrl.eval.runner import RunSpec, check_specs, run_one
from wsrl.inputs.ref import ScenarioInput
from wsrl.inputs.setup import input_setup
from wsrl.inputs.simulated import snapshot_from_simulator
from wsrl.pipeline.action import ACTION_DIM, action_to_target_bytes
from wsrl.pipeline.observation import FEATURE_COUNT, FEATURE_NAMES, OBS_SPEC_VERSION, ObservationBuilder
from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.policies.learned import LearnedPolicy, file_sha256, load_learned_policy
from wsrl.rl.export import export_policy
from wsrl.rl.spaces import guest_observation_space
from wsrl.rl.vec_env import GuestVecEnv
from wsrl.sim.simulator import Simulator

TOL = 1e-5
LAPTOP = ScenarioInput("laptop")
NET_ARCH = [32, 32]
LSTM_HIDDEN = 16
EPISODE_STEPS = 360
"""Longer than the training runs: an episode end inside a rollout makes RecurrentPPO step its LSTM
one time step at a time (seconds instead of a fraction of one)."""


def _train(algorithm: str, out: Path, *, with_algorithm_name: bool = True) -> Any:
    """Train a tiny agent on the real per-guest env and save it as a training run."""
    env = GuestVecEnv([LAPTOP], episode_steps=EPISODE_STEPS, seed=0)
    common: dict[str, Any] = {"seed": 0, "device": "cpu", "verbose": 0}
    started = time.monotonic()
    if algorithm == "PPO":
        model = PPO(
            "MlpPolicy",
            env,
            n_steps=64,
            batch_size=64,
            n_epochs=2,
            policy_kwargs={"net_arch": NET_ARCH},
            **common,
        )
        steps = 384
    elif algorithm == "SAC":
        model = SAC(
            "MlpPolicy",
            env,
            learning_starts=48,
            batch_size=32,
            policy_kwargs={"net_arch": NET_ARCH},
            **common,
        )
        steps = 192
    else:
        model = RecurrentPPO(
            "MlpLstmPolicy",
            env,
            n_steps=32,
            batch_size=48,
            n_epochs=2,
            policy_kwargs={"net_arch": [32], "lstm_hidden_size": LSTM_HIDDEN},
            **common,
        )
        steps = 192
    model.learn(steps)
    out.mkdir(parents=True)
    model.save(out / "model.zip")
    train = {
        "config": {"inputs": ["laptop"], "episode_steps": EPISODE_STEPS},
        "seed": 0,
        "timesteps": steps,
        "wall_time_s": round(time.monotonic() - started, 3),
        "git_commit": None,
    }
    if with_algorithm_name:
        train["algorithm"] = algorithm
    (out / "train.json").write_text(json.dumps(train))
    return model


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    """Per algorithm: (exported policy directory, the trained SB3 model)."""
    root = tmp_path_factory.mktemp("trained")
    result = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks on a shared machine: one thread is many times faster
    try:
        for algorithm in ("PPO", "SAC", "RecurrentPPO"):
            # SAC's train.json has no "algorithm": export must tell it from the checkpoint.
            model = _train(algorithm, root / algorithm, with_algorithm_name=algorithm != "SAC")
            # PPO is exported into its own run directory (the default), the others elsewhere.
            out = None if algorithm == "PPO" else root / f"{algorithm}-export"
            result[algorithm] = (export_policy(root / algorithm, out), model)
    finally:
        torch.set_num_threads(threads)
    return result


@pytest.fixture(scope="module")
def real_snapshots() -> list[HostSnapshot]:
    """Consecutive snapshots of the simulated laptop with every guest at its provisioned size."""
    sim = Simulator(input_setup(LAPTOP))
    sim.reset(0)
    snapshots = [snapshot_from_simulator(sim)]
    for _ in range(60):
        sim.step(snapshots[-1].provisioned_bytes)
        snapshots.append(snapshot_from_simulator(sim))
    return snapshots


@pytest.fixture(scope="module")
def real_obs(real_snapshots: list[HostSnapshot]) -> np.ndarray:
    """``[steps, guests, features]`` real observation rows of the laptop's guests."""
    builder = ObservationBuilder()
    rows = [builder.reset(real_snapshots[0])[real_snapshots[0].mask]]
    rows += [builder.build(s)[s.mask] for s in real_snapshots[1:]]
    return np.stack(rows)


def _random_obs(count: int = 256, seed: int = 0) -> np.ndarray:
    space = guest_observation_space()
    space.seed(seed)
    return np.stack([space.sample() for _ in range(count)])


class _Recorder:
    """Wraps a network and keeps what it was given and what it returned."""

    def __init__(self, forward: Any) -> None:
        self.forward = forward
        self.calls: list[tuple[tuple[np.ndarray, ...], Any]] = []

    def __call__(self, *args: np.ndarray) -> Any:
        out = self.forward(*args)
        self.calls.append((tuple(np.array(a) for a in args), out))
        return out


# --- ONNX equals torch ------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["PPO", "SAC"])
def test_feedforward_onnx_matches_sb3_predict(algorithm: str, runs: dict, real_obs: np.ndarray) -> None:
    directory, model = runs[algorithm]
    forward = load_learned_policy(directory).forward
    real = real_obs.reshape(-1, FEATURE_COUNT)
    for obs in (_random_obs(), real, real[:1]):
        expected, _ = model.predict(obs, deterministic=True)
        actual = forward(obs)
        assert actual.shape == (len(obs), ACTION_DIM)
        np.testing.assert_allclose(actual, expected, atol=TOL, rtol=0)
    # A trained network, not a constant: actions vary over observations, inside [-1, 1].
    actions = forward(_random_obs())
    assert actions.std(axis=0).min() > 1e-3
    assert np.all(np.abs(actions) <= 1.0)


def test_ppo_export_clips_like_predict(runs: dict, tmp_path: Path) -> None:
    # Shift the trained mean out of range so that predict's clipping to [-1, 1] matters.
    trained = runs["PPO"][0]
    model = PPO.load(trained / "model.zip", device="cpu")
    with torch.no_grad():
        model.policy.action_net.bias += torch.tensor([1.0, -1.0, 1.0])
    run = tmp_path / "shifted"
    run.mkdir()
    model.save(run / "model.zip")
    shutil.copy(trained / "train.json", run / "train.json")
    forward = load_learned_policy(export_policy(run)).forward
    obs = _random_obs()
    expected, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(forward(obs), expected, atol=TOL, rtol=0)
    assert np.mean(expected[:, 0] == 1.0) > 0.25 and np.mean(expected[:, 1] == -1.0) > 0.25


def test_recurrent_onnx_matches_sb3_predict(runs: dict, real_obs: np.ndarray) -> None:
    directory, model = runs["RecurrentPPO"]
    forward = load_learned_policy(directory).forward
    count = 256
    state_shape = (1, count, LSTM_HIDDEN)
    h = c = np.zeros(state_shape, dtype=np.float32)
    sb3_state = None
    starts = [np.ones(count), np.zeros(count), (np.arange(count) % 3 == 0).astype(float)]
    for step, episode_start in enumerate(starts):
        obs = _random_obs(count, seed=step)
        expected, sb3_state = model.predict(
            obs, state=sb3_state, episode_start=episode_start, deterministic=True
        )
        actions, h, c = forward(obs, h, c, episode_start.astype(np.float32))
        np.testing.assert_allclose(actions, expected, atol=TOL, rtol=0)
        np.testing.assert_allclose(h, sb3_state[0], atol=TOL, rtol=0)
        np.testing.assert_allclose(c, sb3_state[1], atol=TOL, rtol=0)
    # Real observations, in time order, with the state carried across steps.
    guests = real_obs.shape[1]
    h = c = np.zeros((1, guests, LSTM_HIDDEN), dtype=np.float32)
    sb3_state = None
    for step, obs in enumerate(real_obs):
        start = np.full(guests, float(step == 0))
        expected, sb3_state = model.predict(obs, state=sb3_state, episode_start=start, deterministic=True)
        actions, h, c = forward(obs, h, c, start.astype(np.float32))
        np.testing.assert_allclose(actions, expected, atol=TOL, rtol=0)
    assert np.abs(h).max() > 1e-3  # the state really carries something


# --- LearnedPolicy ----------------------------------------------------------------------------


def test_learned_policy_scatters_real_guests_only(runs: dict, real_snapshots: list[HostSnapshot]) -> None:
    directory, model = runs["PPO"]
    loaded = load_learned_policy(directory)
    recorder = _Recorder(loaded.forward)
    policy = LearnedPolicy(recorder, name="ppo")
    first = real_snapshots[0]
    mask = first.mask.copy()
    mask[0, 1] = False  # slot 1 empty
    snapshot = dataclasses.replace(first, mask=mask)
    policy.reset(snapshot)
    target = policy.decide(snapshot)
    (obs,), actions = recorder.calls[0]
    assert obs.shape == (2, FEATURE_COUNT)
    np.testing.assert_array_equal(obs, ObservationBuilder().reset(snapshot)[mask])
    np.testing.assert_allclose(actions, model.predict(obs, deterministic=True)[0], atol=TOL, rtol=0)
    full = np.zeros((*snapshot.shape, ACTION_DIM))
    full[mask] = actions
    np.testing.assert_allclose(target, action_to_target_bytes(full, snapshot))
    assert target[0, 1] == 0.0
    assert np.all(target[mask] > 0.0)


@pytest.mark.parametrize("algorithm", ["SAC", "RecurrentPPO"])
def test_learned_policy_on_a_host_without_guests(
    algorithm: str, runs: dict, real_snapshots: list[HostSnapshot]
) -> None:
    # onnxruntime aborts the process on an empty batch: the network must not be called at all.
    policy = load_learned_policy(runs[algorithm][0])
    empty = dataclasses.replace(real_snapshots[0], mask=np.zeros_like(real_snapshots[0].mask))
    policy.reset(empty)
    np.testing.assert_array_equal(policy.decide(empty), np.zeros(empty.shape))
    assert np.all(policy.decide(real_snapshots[1])[real_snapshots[1].mask] > 0.0)


def test_recurrent_learned_policy_carries_state_per_guest(
    runs: dict, real_snapshots: list[HostSnapshot]
) -> None:
    directory, model = runs["RecurrentPPO"]
    loaded = load_learned_policy(directory)
    recorder = _Recorder(loaded.forward)
    policy = LearnedPolicy(recorder, name="rppo", recurrent_state=loaded.recurrent_state)
    # Guest 1 leaves for steps 3-4 and comes back at step 5: a new episode for it alone.
    snapshots = []
    for step, snapshot in enumerate(real_snapshots[:8]):
        mask = snapshot.mask.copy()
        mask[0, 1] = step not in (3, 4)
        snapshots.append(dataclasses.replace(snapshot, mask=mask))
    for repeat in range(2):  # reset really forgets: the second pass repeats the first
        policy.reset(snapshots[0])
        for snapshot in snapshots:
            policy.decide(snapshot)
        if repeat == 0:
            first_pass = [out[0] for _, out in recorder.calls]
            recorder.calls.clear()
    for first, (_, out) in zip(first_pass, recorder.calls, strict=True):
        np.testing.assert_array_equal(first, out[0])
    starts = [args[3].tolist() for args, _ in recorder.calls]
    assert starts[0] == [1.0, 1.0, 1.0]
    assert starts[1] == [0.0, 0.0, 0.0]
    assert starts[3] == [0.0, 0.0]
    assert starts[5] == [0.0, 1.0, 0.0]
    # SB3 stepped over the same sequence, with per-slot state kept the same way, acts the same.
    h = np.zeros((1, 3, LSTM_HIDDEN), dtype=np.float32)
    c = np.zeros_like(h)
    started = np.zeros(3, dtype=bool)
    for (args, out), snapshot in zip(recorder.calls, snapshots, strict=True):
        mask = snapshot.mask[0]
        episode_start = (~started[mask]).astype(np.float32)
        np.testing.assert_array_equal(args[3], episode_start)
        expected, (h_new, c_new) = model.predict(
            args[0], state=(h[:, mask], c[:, mask]), episode_start=episode_start, deterministic=True
        )
        np.testing.assert_allclose(out[0], expected, atol=TOL, rtol=0)
        h[:, mask], c[:, mask] = h_new, c_new
        h[:, ~mask], c[:, ~mask] = 0.0, 0.0
        started = mask.copy()


# --- manifest checks --------------------------------------------------------------------------


def _copy(directory: Path, tmp_path: Path, name: str = "copy") -> Path:
    target = tmp_path / name
    shutil.copytree(directory, target)
    return target


def _edit_manifest(directory: Path, **changes: Any) -> None:
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def _load_error(directory: Path) -> str:
    with pytest.raises(WsrlError) as info:
        load_learned_policy(directory)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_manifest_content(runs: dict) -> None:
    for algorithm, (directory, _) in runs.items():
        manifest = json.loads((directory / "manifest.json").read_text())
        assert manifest["format_version"] == 1
        assert manifest["obs_spec_version"] == OBS_SPEC_VERSION
        assert manifest["feature_names"] == list(FEATURE_NAMES)
        assert manifest["onnx"]["sha256"] == file_sha256(directory / "model.onnx")
        assert manifest["onnx"]["opset"] >= 17
        assert manifest["provenance"]["algorithm"] == algorithm
        assert manifest["provenance"]["train"]["timesteps"] > 0
        assert manifest["provenance"]["wsrl_version"]
        recurrent = {"hidden_size": LSTM_HIDDEN, "num_layers": 1} if algorithm == "RecurrentPPO" else None
        assert manifest["recurrent"] == recurrent
    # Written atomically: no temporary files left behind.
    assert sorted(p.name for p in runs["SAC"][0].iterdir()) == ["manifest.json", "model.onnx"]


def test_tampered_model_is_rejected(runs: dict, tmp_path: Path) -> None:
    directory = _copy(runs["PPO"][0], tmp_path)
    data = bytearray((directory / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (directory / "model.onnx").write_bytes(bytes(data))
    message = _load_error(directory)
    assert "model.onnx" in message and "sha256" in message


def test_wrong_feature_list_is_rejected(runs: dict, tmp_path: Path) -> None:
    directory = _copy(runs["PPO"][0], tmp_path, "swapped")
    names = list(FEATURE_NAMES)
    names[2], names[3] = names[3], names[2]
    _edit_manifest(directory, feature_names=names)
    message = _load_error(directory)
    assert "manifest.json" in message and "feature_names" in message and "position 2" in message
    directory = _copy(runs["PPO"][0], tmp_path, "short")
    _edit_manifest(directory, feature_names=list(FEATURE_NAMES[:-1]))
    assert "feature_names" in _load_error(directory)


def test_bad_versions_are_rejected(runs: dict, tmp_path: Path) -> None:
    directory = _copy(runs["SAC"][0], tmp_path, "format")
    _edit_manifest(directory, format_version=99)
    message = _load_error(directory)
    assert "manifest.json" in message and "format_version" in message and "99" in message
    directory = _copy(runs["SAC"][0], tmp_path, "obs")
    _edit_manifest(directory, obs_spec_version=OBS_SPEC_VERSION + 1)
    assert "obs_spec_version" in _load_error(directory)
    directory = _copy(runs["SAC"][0], tmp_path, "actions")
    _edit_manifest(directory, action_names=["cold_age"])
    assert "action_names" in _load_error(directory)


def test_graph_that_disagrees_with_manifest_is_rejected(runs: dict, tmp_path: Path) -> None:
    # A recurrent graph behind a feed-forward manifest (with a matching sha256).
    directory = _copy(runs["PPO"][0], tmp_path)
    shutil.copy(runs["RecurrentPPO"][0] / "model.onnx", directory / "model.onnx")
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["onnx"]["sha256"] = file_sha256(directory / "model.onnx")
    (directory / "manifest.json").write_text(json.dumps(manifest))
    message = _load_error(directory)
    assert "onnx.inputs" in message and "model.onnx" in message


def test_training_run_without_export_is_not_loaded(tmp_path: Path, runs: dict) -> None:
    directory = tmp_path / "run"
    directory.mkdir()
    shutil.copy(runs["PPO"][0] / "model.zip", directory / "model.zip")
    message = _load_error(directory)
    assert "manifest.json" in message and "wsrl export" in message


# --- runner and CLI ---------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["PPO", "SAC", "RecurrentPPO"])
def test_exported_policy_runs_in_the_runner(algorithm: str, runs: dict) -> None:
    directory = str(runs[algorithm][0])
    spec = RunSpec(directory, LAPTOP, 0, 600)
    check_specs([spec])
    result = run_one(spec)
    assert result.policy == directory
    assert set(result.metrics) == set(METRIC_NAMES)
    assert all(np.isfinite(v) for v in result.metrics.values())
    assert len(result.per_guest) == 3


def test_runner_rejects_paths_that_are_not_exported_policies(tmp_path: Path) -> None:
    with pytest.raises(WsrlError, match="no such directory; a policy is a registered name"):
        check_specs([RunSpec(str(tmp_path / "missing"), LAPTOP, 0, 60)])
    with pytest.raises(WsrlError, match=r"not an exported policy: no manifest\.json"):
        check_specs([RunSpec(str(tmp_path), LAPTOP, 0, 60)])
    with pytest.raises(WsrlError, match="unknown policy 'nonsense'"):
        check_specs([RunSpec("nonsense", LAPTOP, 0, 60)])
    check_specs([RunSpec("static", LAPTOP, 0, 60)])


def test_cli_export(runs: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trained = runs["PPO"][0]
    out = tmp_path / "cli-out"
    main(["export", str(trained), "--out", str(out)])
    assert "exported" in capsys.readouterr().out
    assert load_learned_policy(out).name == trained.name
    with pytest.raises(SystemExit) as info:
        main(["export", str(tmp_path / "missing")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("wsrl: error: ") and "missing" in err and err.count("\n") == 1


def test_learned_policy_runs_without_torch(runs: dict) -> None:
    code = (
        "import sys\n"
        "import wsrl.policies.learned, wsrl.eval.runner, wsrl.cli\n"
        "from wsrl.eval.runner import RunSpec, run_one\n"
        "from wsrl.inputs.ref import ScenarioInput\n"
        f"result = run_one(RunSpec({str(runs['RecurrentPPO'][0])!r}, ScenarioInput('laptop'), 0, 120))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert result.metrics and all(v == v for v in result.metrics.values())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    done = subprocess.run(
        [sys.executable, "-c", "import wsrl.policies.learned, sys; assert 'torch' not in sys.modules"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
