"""A learned policy (ONNX + manifest, written by ``wsrl export``) controlling simulated guests via the runner.

The network is a freshly initialised PPO actor on wsrl's per-guest spaces, exported with
:func:`wsrl.rl.export.export_policy`: the runner only needs a valid exported policy, not a good one.
Torch is used here to make the file; the runner itself loads it with onnxruntime alone.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from stable_baselines3 import PPO
from test_runner_support import audit_records, config_data, make_config

from wsrl.errors import WsrlError
from wsrl.inputs.ref import ScenarioInput
from wsrl.rl.export import export_policy
from wsrl.rl.vec_env import GuestVecEnv
from wsrl.runner.config import runner_config_from_dict
from wsrl.runner.daemon import Runner


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported (untrained) PPO policy directory named ``tiny-ppo``."""
    root = tmp_path_factory.mktemp("learned")
    run = root / "tiny-ppo"
    run.mkdir()
    env = GuestVecEnv([ScenarioInput("laptop")], episode_steps=32, seed=0)
    model = PPO(
        "MlpPolicy", env, n_steps=16, batch_size=16, policy_kwargs={"net_arch": [8]}, seed=0, device="cpu"
    )
    model.save(run / "model.zip")
    (run / "train.json").write_text(json.dumps({"algorithm": "PPO", "seed": 0, "timesteps": 0}))
    return export_policy(run)


def test_learned_policy_controls_sim_guests_through_the_rails(tmp_path: Path, exported: Path) -> None:
    shutil.copytree(exported, tmp_path / "policy")
    config = make_config(tmp_path, policy="policy", breaker={"enabled": False})  # relative to the config
    runner = Runner(config)
    runner.start()
    outcomes = [runner.tick() for _ in range(30)]
    runner.shutdown()
    assert runner.primary.policy.name == "tiny-ppo"
    specs = {s.name: s for s in runner.specs}
    applied = 0
    for outcome in outcomes:
        assert outcome.record["policy"] == "tiny-ppo" and not outcome.record["policy_errors"]
        for guest in outcome.record["guests"]:
            assert guest["source"] == "tiny-ppo"
            assert guest["decision"]["proposal_bytes"] is not None
            spec = specs[guest["name"]]
            assert spec.floor_bytes <= guest["target_bytes"] <= spec.provisioned_bytes
            applied += guest["applied"]
    assert applied > 0
    assert len(audit_records(tmp_path)) == 30


def test_learned_policy_in_shadow_mode_is_logged_while_the_fallback_acts(
    tmp_path: Path, exported: Path
) -> None:
    runner = Runner(make_config(tmp_path, policy=str(exported), record=False), mode="shadow")
    runner.start()
    outcomes = [runner.tick() for _ in range(5)]
    runner.shutdown()
    for outcome in outcomes:
        for guest in outcome.record["guests"]:
            assert guest["source"] == "static"
            assert guest["shadow"]["policy"] == "tiny-ppo"
            assert guest["shadow"]["decision"]["allotted_bytes"] is not None


def test_tampered_model_is_refused_at_start(tmp_path: Path, exported: Path) -> None:
    policy = tmp_path / "policy"
    shutil.copytree(exported, policy)
    with (policy / "model.onnx").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(WsrlError, match="sha256"):
        Runner(make_config(tmp_path, policy="policy", record=False))


def test_replaced_policy_is_reloaded_and_a_corrupt_one_refused(tmp_path: Path, exported: Path) -> None:
    policy_dir = tmp_path / "policy"
    shutil.copytree(exported, policy_dir)
    model = policy_dir / "model.onnx"
    good = model.read_bytes()
    config = make_config(tmp_path, policy="policy", breaker={"enabled": False}, record=False)
    runner = Runner(config)
    runner.start()
    runner.tick()
    first = runner.primary

    model.write_bytes(good[: len(good) // 2] + b"\x00garbage")  # a corrupt (half-written) replacement
    corrupt = runner.tick()
    assert runner.primary is first  # refused: the verified policy keeps running
    for guest in corrupt.record["guests"]:
        assert guest["source"] == "tiny-ppo" and guest["decision"] is not None
    runner.tick()  # unchanged files are not read again
    reloads = audit_records(tmp_path, "policy_reload")
    assert len(reloads) == 1
    assert not reloads[0]["loaded"] and reloads[0]["kept"] == "tiny-ppo"
    assert "sha256" in reloads[0]["error"] and str(model) in reloads[0]["error"]

    tmp = policy_dir / "model.onnx.new"
    tmp.write_bytes(good)
    tmp.replace(model)  # the fixed file, put in place atomically
    fixed = runner.tick()
    runner.shutdown()
    reloads = audit_records(tmp_path, "policy_reload")
    assert len(reloads) == 2 and reloads[1]["loaded"] and reloads[1]["error"] is None
    assert runner.primary is not first and runner.primary.policy.name == "tiny-ppo"
    assert all(g["source"] == "tiny-ppo" and g["decision"] for g in fixed.record["guests"])


def test_reload_can_be_turned_off(tmp_path: Path, exported: Path) -> None:
    shutil.copytree(exported, tmp_path / "policy")
    data = config_data(tmp_path, policy="policy", record=False)
    data["policy"]["reload"] = False
    runner = Runner(runner_config_from_dict(data, base_dir=tmp_path, label="host.toml"))
    assert runner.reloader is None
    runner.close()
