"""Train an agent from a config: SB3 PPO / SAC or sb3-contrib RecurrentPPO on the guest vector env.

``train(config, out_dir)`` builds a :class:`~wsrl.rl.vec_env.GuestVecEnv` over the config's inputs,
creates the algorithm with the config's hyperparameters and seed, and learns for ``timesteps``
guest-steps with a progress bar, TensorBoard logs (``out/tensorboard``), checkpoints
(``out/checkpoints``) and, every ``eval.every_timesteps``, an evaluation of the current policy on
the held-out inputs through the same evaluator ``wsrl eval`` uses (``out/evaluations.jsonl`` and
TensorBoard ``eval/...``). It writes ``out/model.zip`` (the SB3 checkpoint, for export and
fine-tuning only: production never loads it) and ``out/train.json`` (provenance: config, seed,
timesteps, wall time, git commit, library versions, throughput).

Reproducible under a seed: the env's episode seeds derive from the config seed, and SB3 seeds
torch, numpy and the action sampling from it (``torch.use_deterministic_algorithms`` is not forced;
on the CPU the same seed gives the same result).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, CheckpointCallback
from stable_baselines3.common.vec_env import VecEnv, VecMonitor

from wsrl.eval.runner import evaluate_policy
from wsrl.policies.learned import LearnedPolicy, RecurrentStateSpec
from wsrl.rl.config import AgentConfig
from wsrl.rl.parallel_vec_env import ParallelGuestVecEnv
from wsrl.rl.vec_env import GuestVecEnv

TRAIN_RECORD = "train.json"
MODEL_FILE = "model.zip"


def algorithm_class(name: str) -> type[BaseAlgorithm]:
    """The SB3 class of an algorithm name (``PPO``, ``SAC``, ``RecurrentPPO``)."""
    if name == "PPO":
        return PPO
    if name == "SAC":
        return SAC
    if name == "RecurrentPPO":
        from sb3_contrib import RecurrentPPO

        return RecurrentPPO
    raise ValueError(f"unknown algorithm {name!r}")


def default_policy_name(algorithm: str) -> str:
    """The SB3 policy class name used for an algorithm."""
    return "MlpLstmPolicy" if algorithm == "RecurrentPPO" else "MlpPolicy"


def torch_forward(model: BaseAlgorithm) -> Any:
    """A numpy forward for :class:`~wsrl.policies.learned.LearnedPolicy` from a live SB3 model.

    Feed-forward models map ``[N, F]`` observations to deterministic actions; recurrent ones take
    and return the per-guest LSTM state in the layout LearnedPolicy uses (``[layers, N, hidden]``).
    """
    if default_policy_name(type(model).__name__) == "MlpLstmPolicy":

        def recurrent(obs: np.ndarray, h: np.ndarray, c: np.ndarray, start: np.ndarray) -> Any:
            action, state = model.predict(
                obs, state=(h, c), episode_start=np.asarray(start, dtype=bool), deterministic=True
            )
            assert state is not None  # a recurrent model returns its next state
            h_out, c_out = state
            return action, h_out, c_out

        return recurrent

    def forward(obs: np.ndarray) -> np.ndarray:
        action, _ = model.predict(obs, deterministic=True)
        return np.asarray(action)

    return forward


def learned_policy_from_model(model: BaseAlgorithm, name: str = "learned") -> LearnedPolicy:
    """Wrap a live SB3 model as a pipeline policy (for evaluation while training)."""
    if default_policy_name(type(model).__name__) == "MlpLstmPolicy":
        lstm = cast(torch.nn.LSTM, model.policy.lstm_actor)  # MlpLstmPolicy's actor LSTM
        return LearnedPolicy(
            torch_forward(model),
            name=name,
            recurrent_state=RecurrentStateSpec(hidden_size=lstm.hidden_size, num_layers=lstm.num_layers),
        )
    return LearnedPolicy(torch_forward(model), name=name)


class HeldOutEvaluation(BaseCallback):
    """Every ``every_timesteps``, evaluate the current policy on held-out inputs and log the metrics."""

    def __init__(self, config: AgentConfig, out_dir: Path) -> None:
        super().__init__()
        self.config = config
        self.every = config.eval.every_timesteps
        self.path = out_dir / "evaluations.jsonl"
        self._next = self.every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next += self.every
            self.evaluate()
        return True

    def evaluate(self) -> dict[str, dict[str, float]]:
        """Run the held-out evaluation now; returns metrics per input."""
        results: dict[str, dict[str, float]] = {}
        for ref in self.config.eval.inputs:
            policy = learned_policy_from_model(self.model)
            result = evaluate_policy(policy, ref, self.config.eval.seed, self.config.eval_duration_s)
            results[str(ref)] = result.metrics
            label = ref.stem or str(ref)
            for name in ("memory_saved_frac", "violation_frac", "oom_events", "jain_fairness"):
                self.logger.record(f"eval/{label}/{name}", result.metrics[name])
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"timesteps": self.num_timesteps, "metrics": results}) + "\n")
        return results


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def make_env(config: AgentConfig) -> VecEnv:
    """The training vector env of a config: in-process, or split over ``env.workers`` processes."""
    kwargs: dict[str, Any] = {
        "hosts_per_input": config.env.hosts_per_input,
        "episode_steps": config.env.episode_steps,
        "seed": config.seed,
        "reward": config.reward,
        "info_reward_terms": False,  # nothing in training reads per-step terms; episode ends keep theirs
        "histogram_sources": config.env.histogram_sources,
        "control": config.env.control(),
    }
    if config.env.workers > 1:
        return ParallelGuestVecEnv(config.env.inputs, workers=config.env.workers, **kwargs)
    return GuestVecEnv(config.env.inputs, **kwargs)


def make_model(config: AgentConfig, env: VecEnv, tensorboard_dir: Path | None) -> BaseAlgorithm:
    """A fresh SB3 model for a config."""
    cls = algorithm_class(config.algorithm)
    policy_kwargs = dict(config.policy)
    return cls(
        default_policy_name(config.algorithm),
        env,
        seed=config.seed,
        device=config.device,
        tensorboard_log=str(tensorboard_dir) if tensorboard_dir else None,
        policy_kwargs=policy_kwargs or None,
        verbose=0,
        **config.hyperparameters,
    )


def train(
    config: AgentConfig,
    out_dir: str | Path,
    *,
    progress_bar: bool = True,
    init_model: BaseAlgorithm | None = None,
    init_path: str | Path | None = None,
) -> dict[str, Any]:
    """Train per ``config`` into ``out_dir``; returns the training record (also in ``train.json``).

    Args:
        config: a validated agent config.
        out_dir: where the model, logs, checkpoints and record go (created).
        progress_bar: show SB3's progress bar.
        init_model: continue from this model's weights (behaviour-cloning warm start, fine-tuning).
        init_path: where ``init_model`` was loaded from (recorded in ``train.json``).

    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # One thread: the networks are small, and on a shared 2-core machine a second OpenMP thread
    # made each tiny op 100x slower (spin-waiting for a busy core); measured in benchmarks/.
    torch.set_num_threads(1)
    started = time.monotonic()
    env = VecMonitor(make_env(config))
    model = make_model(config, env, out / "tensorboard")
    if init_model is not None:
        model.policy.load_state_dict(init_model.policy.state_dict())
    callbacks: list[BaseCallback] = [
        CheckpointCallback(
            save_freq=max(1, config.eval.every_timesteps // env.num_envs),
            save_path=str(out / "checkpoints"),
            name_prefix="model",
        )
    ]
    evaluation = HeldOutEvaluation(config, out) if config.eval.inputs else None
    if evaluation is not None:
        callbacks.append(evaluation)
    model.learn(
        total_timesteps=config.timesteps,
        callback=CallbackList(callbacks),
        progress_bar=progress_bar,
        tb_log_name=config.algorithm,
    )
    wall_s = time.monotonic() - started
    model.save(out / MODEL_FILE)
    final = evaluation.evaluate() if evaluation is not None else {}
    record = {
        "algorithm": config.algorithm,
        "config_path": config.path,
        "config": config.model_dump(mode="json"),
        "seed": config.seed,
        "timesteps": int(model.num_timesteps),
        "num_envs": env.num_envs,
        "wall_s": round(wall_s, 1),
        "env_steps_per_s": round(model.num_timesteps / wall_s, 1),
        "git_commit": _git_commit(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "stable_baselines3": __import__("stable_baselines3").__version__,
            "numpy": np.__version__,
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "final_eval": final,
        "init": str(init_path) if init_path is not None else None,
        # The training envs decide through the one control stack under the rails [env] names.
        "control": config.env.control().describe(),
    }
    tmp = out / (TRAIN_RECORD + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / TRAIN_RECORD)
    env.close()
    return record
