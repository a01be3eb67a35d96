"""Training from agent configs: the CLI, artefacts, reproducibility under a seed, every algorithm's
config, bad configs, and seeds on Ray Tune."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from wsrl.errors import WsrlError
from wsrl.rl.config import load_agent_config
from wsrl.rl.train import algorithm_class, train
from wsrl.rl.tune import parse_grid, trial_configs, tune

REPO = Path(__file__).resolve().parent.parent
SMALL_INPUTS = ["laptop", "../envs/training/pair.toml"]


def small_config(tmp_path: Path, agent: str = "ppo", **top: object) -> Path:
    """A copy of agents/AGENT.toml on small inputs, written next to the repo's agents/ folder layout."""
    data = tomllib.loads((REPO / "agents" / f"{agent}.toml").read_text())
    data["env"]["inputs"] = [
        str((REPO / "agents" / ref).resolve()) if "/" in ref else ref for ref in SMALL_INPUTS
    ]
    data["env"]["episode_steps"] = 20
    data["eval"] = {"inputs": ["laptop"], "every_timesteps": 100, "duration": "10m"}
    data["timesteps"] = 200
    hp = data["hyperparameters"]
    if agent == "sac":
        hp.update(learning_starts=20, batch_size=32, buffer_size=2000, gradient_steps=1)
    else:
        hp.update(n_steps=20, batch_size=50)
    data.update(top)
    path = tmp_path / f"{agent}.toml"
    path.write_text(_to_toml(data))
    return path


def _to_toml(data: dict) -> str:
    def value(v: object) -> str:
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, body in data.items():
        if isinstance(body, dict):
            lines.append(f"[{section}]")
            lines += [f"{k} = {value(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


def wsrl_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wsrl", *args], capture_output=True, text=True, cwd=REPO, timeout=300
    )


def test_train_cli_writes_model_logs_checkpoints_and_provenance(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = wsrl_cli("train", "--config", str(small_config(tmp_path)), "--out", str(out), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "held-out laptop: saved" in done.stdout
    assert (out / "model.zip").is_file()
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert list((out / "checkpoints").glob("model_*_steps.zip"))
    evaluations = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    assert len(evaluations) >= 2 and "laptop" in evaluations[0]["metrics"]
    record = json.loads((out / "train.json").read_text())
    assert record["algorithm"] == "PPO" and record["seed"] == 0 and record["timesteps"] >= 200
    assert record["config"]["env"]["episode_steps"] == 20 and record["wall_s"] > 0
    assert record["versions"]["torch"] == torch.__version__
    assert set(record["final_eval"]["laptop"]) >= {"memory_saved_frac", "violation_frac", "oom_events"}


def test_training_is_reproducible_under_a_seed(tmp_path: Path) -> None:
    def weights(seed: int, name: str) -> list[torch.Tensor]:
        config = load_agent_config(small_config(tmp_path, seed=seed))
        config.eval.inputs = []
        train(config, tmp_path / name, progress_bar=False)
        model = algorithm_class("PPO").load(tmp_path / name / "model.zip", device="cpu")
        return [p.detach().clone() for p in model.policy.parameters()]

    first, again, other = weights(3, "a"), weights(3, "b"), weights(4, "c")
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(first, other, strict=True))


def test_env_workers_change_speed_not_weights(tmp_path: Path) -> None:
    """`wsrl train --workers 2` (the env split over two processes) trains the very same weights."""
    path = small_config(tmp_path, seed=5)
    config = load_agent_config(path)
    config.eval.inputs = []
    train(config, tmp_path / "local", progress_bar=False)
    result = wsrl_cli(
        "train", "--config", str(path), "--out", str(tmp_path / "split"), "--workers", "2", "--no-progress"
    )
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "split" / "train.json").read_text())
    assert record["config"]["env"]["workers"] == 2
    local = algorithm_class("PPO").load(tmp_path / "local" / "model.zip", device="cpu")
    split = algorithm_class("PPO").load(tmp_path / "split" / "model.zip", device="cpu")
    for x, y in zip(local.policy.parameters(), split.policy.parameters(), strict=True):
        assert torch.equal(x, y)


def test_env_rails_none_trains_under_the_clamp_only(tmp_path: Path) -> None:
    """`[env] rails = "none"`: the first stage of a curriculum shrinks at once; production at its rate."""
    import numpy as np

    from wsrl.pipeline.control import ControlSpec
    from wsrl.rl.train import make_env

    config = load_agent_config(small_config(tmp_path))
    assert config.env.rails == "production" and config.env.control() == ControlSpec.for_training()
    shrunk = {}
    for rails in ("production", "none"):
        config.env.rails = rails  # type: ignore[assignment]
        env = make_env(config)
        env.reset()
        batch = env.batches[0]  # type: ignore[attr-defined]
        assert batch.stack.spec == config.env.control()
        batch.step(np.zeros((*batch.snapshot.shape, 3)))  # the first step also fits the host's capacity
        before = batch.snapshot
        step = batch.step(np.full((*before.shape, 3), -1.0))
        provisioned = before.provisioned_bytes[before.mask]
        shrunk[rails] = ((before.target_bytes - step.decision.target_bytes)[before.mask] / provisioned).max()
        env.close()
    allowance = ControlSpec().max_shrink_frac_per_s * 10.0  # one 10 s step
    assert shrunk["production"] <= allowance + 1e-6
    assert shrunk["none"] > 2 * allowance
    bad = small_config(tmp_path)
    bad.write_text(bad.read_text().replace("[env]\n", '[env]\nrails = "some"\n'))
    with pytest.raises(WsrlError, match="rails"):
        load_agent_config(bad)


@pytest.mark.parametrize("agent", ["sac", "recurrent_ppo"])
def test_every_agent_config_trains(tmp_path: Path, agent: str) -> None:
    config = load_agent_config(small_config(tmp_path, agent))
    record = train(config, tmp_path / agent, progress_bar=False)
    assert record["algorithm"] == {"sac": "SAC", "recurrent_ppo": "RecurrentPPO"}[agent]
    assert record["timesteps"] >= 200
    assert record["final_eval"]["laptop"]["oom_events"] >= 0


@pytest.mark.parametrize("agent", ["ppo", "sac", "recurrent_ppo"])
def test_shipped_agent_configs_validate(agent: str) -> None:
    config = load_agent_config(REPO / "agents" / f"{agent}.toml")
    assert config.timesteps >= 1_000_000
    trained_on = [str(ref) for ref in config.env.inputs]
    assert any(ref.startswith("traces:") and ref.endswith("out/bitbrains/train") for ref in trained_on)
    # Held out: no training input is a standard-suite scenario.
    assert not {"datacenter", "laptop", "dense"} & set(trained_on)


def test_bad_configs_name_the_key_and_exit_2(tmp_path: Path) -> None:
    bad = small_config(tmp_path)
    bad.write_text(bad.read_text().replace("[hyperparameters]", "bogus = 1\n[hyperparameters]", 1))
    done = wsrl_cli("train", "--config", str(bad), "--out", str(tmp_path / "x"))
    assert done.returncode == 2 and "bogus" in done.stderr and "Traceback" not in done.stderr
    missing = small_config(tmp_path)
    text = missing.read_text().replace('"laptop", ', '"traces:/nonexistent/bitbrains/train", ', 1)
    missing.write_text(text)
    done = wsrl_cli("train", "--config", str(missing), "--out", str(tmp_path / "y"))
    assert done.returncode == 2 and "make bitbrains-split" in done.stderr
    done = wsrl_cli("train", "--config", str(tmp_path / "none.toml"), "--out", str(tmp_path / "z"))
    assert done.returncode == 2 and "none.toml" in done.stderr


def test_tune_grid_parsing_and_trials() -> None:
    grid = parse_grid(["hyperparameters.learning_rate=1e-4,3e-4", "reward.oom=10,40"])
    assert grid == {"hyperparameters.learning_rate": [1e-4, 3e-4], "reward.oom": [10, 40]}
    base = load_agent_config(REPO / "agents" / "ppo.toml")
    configs = trial_configs(base, 2, grid)
    assert len(configs) == 8 and {c.seed for c in configs} == {0, 1}
    assert {c.reward.oom for c in configs} == {10.0, 40.0}
    with pytest.raises(WsrlError, match=r"SECTION\.KEY"):
        parse_grid(["learning_rate=1"])


def test_tune_runs_seeds_on_ray(tmp_path: Path) -> None:
    config = load_agent_config(small_config(tmp_path, timesteps=100))
    config.eval.every_timesteps = 10_000
    rows = tune(config, tmp_path / "tune", seeds=2)
    assert sorted(row["seed"] for row in rows) == [0, 1]
    assert all("laptop/memory_saved_frac" in row["metrics"] for row in rows)
    assert (tmp_path / "tune" / "tune.json").is_file()


def test_bc_warm_start_then_fine_tune_from_the_cli(tmp_path: Path) -> None:
    config = small_config(tmp_path)
    bc_out = tmp_path / "bc"
    done = wsrl_cli(
        "bc",
        "--config",
        str(config),
        "--out",
        str(bc_out),
        "--policy",
        "vpa",
        "--duration",
        "20m",
        "--epochs",
        "40",
    )
    assert done.returncode == 0, done.stderr
    record = json.loads((bc_out / "bc.json").read_text())
    assert record["policy"] == "vpa" and record["samples"] > 100 and record["final_mse"] < 0.05
    cloned = algorithm_class("PPO").load(bc_out / "model.zip", device="cpu")
    tuned_out = tmp_path / "tuned"
    done = wsrl_cli(
        "train",
        "--config",
        str(config),
        "--init",
        str(bc_out / "model.zip"),
        "--out",
        str(tuned_out),
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    tuned = algorithm_class("PPO").load(tuned_out / "model.zip", device="cpu")
    # Fine-tuning started from the clone: the weights moved, but only a little in 200 steps.
    start = torch.cat([p.detach().flatten() for p in cloned.policy.parameters()])
    end = torch.cat([p.detach().flatten() for p in tuned.policy.parameters()])
    fresh = algorithm_class("PPO").load(tmp_path / "bc" / "model.zip", device="cpu")
    assert not torch.equal(start, end)
    assert float((end - start).norm()) < 0.5 * float(start.norm())
    assert torch.equal(start, torch.cat([p.detach().flatten() for p in fresh.policy.parameters()]))

    # DAgger: the fine-tuned policy drives, the budget oracle labels its states, cloned with vpa's.
    assert wsrl_cli("export", str(tuned_out)).returncode == 0
    earlier = sorted((bc_out / "decisions").iterdir())
    dagger_args = ["--policy", "oracle", "--actor", str(tuned_out), "--duration", "20m", "--epochs", "2"]
    traces = [arg for trace in earlier for arg in ("--traces", str(trace))]
    done = wsrl_cli("bc", "--config", str(config), "--out", str(tmp_path / "dagger"), *dagger_args, *traces)
    assert done.returncode == 0, done.stderr
    dagger = json.loads((tmp_path / "dagger" / "bc.json").read_text())
    assert dagger["actor"] == str(tuned_out) and dagger["policy"] == "oracle"
    assert dagger["traces"][len(earlier) :] == [str(t) for t in earlier]
    assert dagger["samples"] > record["samples"]  # the new states and the earlier ones

    done = wsrl_cli(
        "bc", "--config", str(REPO / "agents" / "recurrent_ppo.toml"), "--out", str(tmp_path / "r")
    )
    assert done.returncode == 2 and "RecurrentPPO" in done.stderr


def test_distill_refines_a_trained_run_from_the_cli(tmp_path: Path) -> None:
    config = small_config(tmp_path)
    base = tmp_path / "base"
    assert wsrl_cli("train", "--config", str(config), "--out", str(base), "--no-progress").returncode == 0
    refined = tmp_path / "refined"
    args = ["distill", "--config", str(config), "--base", str(base), "--out", str(refined)]
    done = wsrl_cli(*args)
    assert done.returncode == 2 and "manifest.json" in done.stderr  # not exported yet: one line
    assert "Traceback" not in done.stderr
    assert wsrl_cli("export", str(base)).returncode == 0
    done = wsrl_cli(*args, "--duration", "10m", "--epochs", "2", "--dagger")
    assert done.returncode == 0, done.stderr
    record = json.loads((refined / "train.json").read_text())
    base_record = json.loads((base / "train.json").read_text())
    assert {k: v for k, v in record.items() if k != "distill"} == base_record  # the base's provenance
    distilled = record["distill"]
    assert distilled["base"] == str(base) and distilled["dagger"] is True
    assert distilled["teacher"] == {"name": "refined", "overcommit_min": 1.1, "burst_headroom_frac": 0.17}
    assert distilled["samples"] == 2 * distilled["dagger_samples"] > 0
    assert distilled["final_mse"] < 0.1
    assert wsrl_cli("export", str(refined)).returncode == 0  # ready for the runner
    manifest = json.loads((refined / "manifest.json").read_text())
    assert manifest["provenance"]["train"]["distill"]["samples"] == distilled["samples"]
    # A refined run refined again (a new teacher rule on the shipped network): both stay on record.
    again = tmp_path / "again"
    done = wsrl_cli(
        "distill",
        "--config",
        str(config),
        "--base",
        str(refined),
        "--out",
        str(again),
        "--duration",
        "10m",
        "--epochs",
        "1",
    )
    assert done.returncode == 0, done.stderr
    chained = json.loads((again / "train.json").read_text())["distill"]
    assert chained["base"] == str(refined) and chained["previous"] == distilled

    done = wsrl_cli(*args[:2], str(small_config(tmp_path, "sac")), *args[3:])
    assert done.returncode == 2 and "PPO" in done.stderr
    done = wsrl_cli(*args, "--burst-headroom", "0.9")
    assert done.returncode == 2 and "burst_headroom_frac" in done.stderr


def test_refine_config_has_the_ppo_network_and_every_ppo_input() -> None:
    """wsrl distill loads agents/ppo.toml's weights into agents/ppo-refine.toml's network."""
    ppo = load_agent_config(REPO / "agents" / "ppo.toml")
    refine = load_agent_config(REPO / "agents" / "ppo-refine.toml")
    assert refine.algorithm == ppo.algorithm == "PPO"
    assert refine.policy == ppo.policy
    assert set(ppo.env.inputs) < set(refine.env.inputs)
    assert any(str(ref).endswith("dense-containers.toml") for ref in refine.env.inputs)
