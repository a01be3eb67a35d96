"""Export a trained agent to ONNX plus a manifest, the only form production loads.

:func:`export_policy` reads a training run's directory (``model.zip``, saved by stable-baselines3,
and ``train.json``, its provenance), wraps the *deterministic* actor as a small torch module and
writes ``model.onnx`` and ``manifest.json`` (:mod:`wsrl.policies.learned` checks and loads them with
onnxruntime; no torch, no pickle at run time). What is exported, per algorithm:

``PPO`` (``MlpPolicy``)
    features extractor -> ``mlp_extractor.forward_actor`` -> ``action_net`` (the Gaussian's mean),
    clipped to ``[-1, 1]``: what ``model.predict(obs, deterministic=True)`` returns.
``SAC`` (``MlpPolicy``)
    features extractor -> ``latent_pi`` -> ``mu`` -> ``tanh`` (the squashed Gaussian's mode).
``RecurrentPPO`` (``MlpLstmPolicy``)
    features extractor -> one step of ``lstm_actor`` -> ``forward_actor`` -> ``action_net`` ->
    clip. The LSTM state is explicit: inputs ``h`` and ``c`` (``[layers, batch, hidden]``) and
    ``episode_start`` (``[batch]``; where it is 1 the incoming state is read as zeros, as in
    sb3-contrib), outputs ``h_out`` and ``c_out``. Only the actor's LSTM is exported.

The guest axis is dynamic (named ``batch``), so one graph serves any number of guests. Files are
written atomically (a temporary file renamed into place), the manifest last: a reader never finds
a manifest next to a half-written model, and an old manifest next to a new model fails its SHA-256
check.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

import wsrl
from wsrl.errors import WsrlError
from wsrl.pipeline.action import ACTION_DIM, ACTION_NAMES
from wsrl.pipeline.observation import FEATURE_COUNT, FEATURE_NAMES, OBS_SPEC_VERSION
from wsrl.policies.learned import (
    ACTION_HIGH,
    ACTION_LOW,
    BATCH_DIM,
    MANIFEST_FILE,
    MANIFEST_FORMAT_VERSION,
    MODEL_FILE,
    RecurrentStateSpec,
    expected_io,
    file_sha256,
)

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

ONNX_OPSET = 17
MODEL_ZIP = "model.zip"
TRAIN_JSON = "train.json"
ALGORITHMS: tuple[str, ...] = ("PPO", "SAC", "RecurrentPPO")
"""Algorithms whose actors can be exported."""

_POLICY_MODULES = {
    "stable_baselines3.common.policies": "PPO",
    "stable_baselines3.ppo.policies": "PPO",
    "stable_baselines3.sac.policies": "SAC",
    "sb3_contrib.common.recurrent.policies": "RecurrentPPO",
    "sb3_contrib.ppo_recurrent.policies": "RecurrentPPO",
}
"""Where each algorithm's policy class lives (read from the checkpoint's JSON, not unpickled)."""


class PpoActor(nn.Module):
    """Deterministic PPO actor: the Gaussian's mean, clipped to the action range."""

    def __init__(self, policy: Any) -> None:
        super().__init__()
        self.features_extractor = policy.pi_features_extractor
        self.mlp_extractor = policy.mlp_extractor
        self.action_net = policy.action_net

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``[batch, features]`` -> ``[batch, actions]``."""
        latent = self.mlp_extractor.forward_actor(self.features_extractor(obs.float()))
        return torch.clamp(self.action_net(latent), ACTION_LOW, ACTION_HIGH)


class SacActor(nn.Module):
    """Deterministic SAC actor: ``tanh`` of the Gaussian's mean."""

    def __init__(self, policy: Any) -> None:
        super().__init__()
        actor = policy.actor
        self.features_extractor = actor.features_extractor
        self.latent_pi = actor.latent_pi
        self.mu = actor.mu

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``[batch, features]`` -> ``[batch, actions]``."""
        return torch.tanh(self.mu(self.latent_pi(self.features_extractor(obs.float()))))


class RecurrentPpoActor(nn.Module):
    """Deterministic RecurrentPPO actor, one step with explicit LSTM state (module docstring)."""

    def __init__(self, policy: Any) -> None:
        super().__init__()
        self.features_extractor = policy.pi_features_extractor
        self.lstm = policy.lstm_actor
        self.mlp_extractor = policy.mlp_extractor
        self.action_net = policy.action_net

    def forward(
        self, obs: torch.Tensor, h: torch.Tensor, c: torch.Tensor, episode_start: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``obs [batch, F], h, c [layers, batch, hidden], episode_start [batch]`` -> action, h, c."""
        keep = (1.0 - episode_start).view(1, -1, 1)
        features = self.features_extractor(obs.float())
        out, (h_out, c_out) = self.lstm(features.unsqueeze(0), (keep * h, keep * c))
        latent = self.mlp_extractor.forward_actor(out.squeeze(0))
        return torch.clamp(self.action_net(latent), ACTION_LOW, ACTION_HIGH), h_out, c_out


def _read_train_json(trained_dir: Path) -> dict[str, Any]:
    path = trained_dir / TRAIN_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WsrlError(f"{path}: missing (the run's provenance is exported with the model)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WsrlError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise WsrlError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise WsrlError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _normalized(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def detect_algorithm(trained_dir: Path, train: dict[str, Any]) -> str:
    """The algorithm (one of :data:`ALGORITHMS`): ``train.json``'s ``algorithm``, else the checkpoint's.

    The checkpoint's policy class is read from the JSON inside ``model.zip`` (its module name);
    nothing is unpickled to decide.
    """
    named = train.get("algorithm")
    if named is not None:
        by_key = {_normalized(a): a for a in ALGORITHMS}
        algorithm = by_key.get(_normalized(str(named)))
        if algorithm is None:
            raise WsrlError(
                f"{trained_dir / TRAIN_JSON}: field 'algorithm' is {named!r}; "
                f"export supports {', '.join(ALGORITHMS)}"
            )
        return algorithm
    zip_path = trained_dir / MODEL_ZIP
    try:
        with zipfile.ZipFile(zip_path) as archive:
            data = json.loads(archive.read("data"))
        module = data["policy_class"]["__module__"]
    except (OSError, KeyError, TypeError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise WsrlError(f"{zip_path}: cannot tell the algorithm (no policy_class in 'data'): {exc}") from None
    algorithm = _POLICY_MODULES.get(module)
    if algorithm is None:
        raise WsrlError(f"{zip_path}: policy class from {module!r}; export supports {', '.join(ALGORITHMS)}")
    return algorithm


def _load_model(zip_path: Path, algorithm: str) -> Any:
    Algo: type[BaseAlgorithm]  # noqa: N806 (a class, named as imported below)
    if algorithm == "PPO":
        from stable_baselines3 import PPO as Algo  # noqa: N811
    elif algorithm == "SAC":
        from stable_baselines3 import SAC as Algo  # noqa: N811
    else:
        from sb3_contrib import RecurrentPPO as Algo
    # Schedules are pickled closures; they are not needed to act, so they are not unpickled.
    custom = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0}
    load_errors = (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError, zipfile.BadZipFile)
    try:
        return Algo.load(str(zip_path), device="cpu", custom_objects=custom)
    except load_errors as exc:
        raise WsrlError(f"{zip_path}: cannot load as {algorithm}: {type(exc).__name__}: {exc}") from None


def _check_spaces(model: Any, zip_path: Path) -> None:
    """The checkpoint must use wsrl's per-guest spaces (:mod:`wsrl.rl.spaces`)."""
    obs_shape = tuple(getattr(model.observation_space, "shape", ()) or ())
    if obs_shape != (FEATURE_COUNT,):
        raise WsrlError(f"{zip_path}: observation space shape {obs_shape}, wsrl's is {(FEATURE_COUNT,)}")
    space = model.action_space
    act_shape = tuple(getattr(space, "shape", ()) or ())
    if act_shape != (ACTION_DIM,):
        raise WsrlError(f"{zip_path}: action space shape {act_shape}, wsrl's is {(ACTION_DIM,)}")
    if not (np.all(space.low == ACTION_LOW) and np.all(space.high == ACTION_HIGH)):
        raise WsrlError(f"{zip_path}: action space bounds {space.low}..{space.high}, wsrl's are -1..1")


def actor_module(model: Any, algorithm: str) -> tuple[nn.Module, RecurrentStateSpec | None]:
    """The deterministic actor of a loaded SB3 model as a torch module (and its LSTM state spec)."""
    policy = model.policy
    policy.set_training_mode(False)
    if algorithm == "SAC":
        return SacActor(policy).eval(), None
    if getattr(policy, "squash_output", False):
        raise WsrlError(f"{algorithm} policies with squash_output=True are not supported by export")
    if algorithm == "PPO":
        return PpoActor(policy).eval(), None
    lstm = policy.lstm_actor
    if lstm.batch_first or lstm.bidirectional or lstm.proj_size:
        raise WsrlError("RecurrentPPO export supports plain LSTMs (no batch_first, bidirectional, proj_size)")
    spec = RecurrentStateSpec(hidden_size=lstm.hidden_size, num_layers=lstm.num_layers)
    return RecurrentPpoActor(policy).eval(), spec


def _export_onnx(module: nn.Module, recurrent: RecurrentStateSpec | None, path: Path) -> None:
    """``torch.onnx.export`` with a dynamic guest axis (TorchScript exporter: no onnxscript needed)."""
    batch = 3  # any size: the axis is exported as dynamic
    obs = torch.zeros(batch, FEATURE_COUNT)
    inputs, outputs = expected_io(recurrent)
    if recurrent is None:
        args: tuple[torch.Tensor, ...] = (obs,)
    else:
        state = torch.zeros(recurrent.num_layers, batch, recurrent.hidden_size)
        args = (obs, state, state.clone(), torch.zeros(batch))
    dynamic_axes = {spec["name"]: {spec["shape"].index(BATCH_DIM): BATCH_DIM} for spec in (*inputs, *outputs)}
    with warnings.catch_warnings():
        # The legacy exporter is deprecated, and nn.LSTM's shape checks warn while traced.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=[spec["name"] for spec in inputs],
            output_names=[spec["name"] for spec in outputs],
            dynamic_axes=dynamic_axes,
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def _write_atomic(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place."""
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def export_policy(trained_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Export a training run to ``model.onnx`` + ``manifest.json``; returns the output directory.

    Args:
        trained_dir: a training run: ``model.zip`` (stable-baselines3) and ``train.json``.
        out_dir: where to write; defaults to ``trained_dir`` itself.

    Raises:
        WsrlError: the run is missing, unreadable, of an unsupported algorithm, or not trained on
            wsrl's per-guest spaces.

    """
    trained_dir = Path(trained_dir)
    if not trained_dir.is_dir():
        raise WsrlError(f"{trained_dir}: not a directory (a training run holds {MODEL_ZIP} and {TRAIN_JSON})")
    zip_path = trained_dir / MODEL_ZIP
    if not zip_path.is_file():
        raise WsrlError(f"{zip_path}: missing (a training run holds {MODEL_ZIP} and {TRAIN_JSON})")
    train = _read_train_json(trained_dir)
    algorithm = detect_algorithm(trained_dir, train)
    model = _load_model(zip_path, algorithm)
    _check_spaces(model, zip_path)
    module, recurrent = actor_module(model, algorithm)

    out = Path(out_dir) if out_dir is not None else trained_dir
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WsrlError(f"{out}: cannot create: {exc.strerror or exc}") from None
    model_path = out / MODEL_FILE
    manifest_path = out / MANIFEST_FILE
    # A stale manifest must never describe the model being replaced; it goes first.
    manifest_path.unlink(missing_ok=True)
    _write_atomic(model_path, lambda tmp: _export_onnx(module, recurrent, tmp))
    inputs, outputs = expected_io(recurrent)
    import stable_baselines3

    manifest = {
        "format_version": MANIFEST_FORMAT_VERSION,
        "name": trained_dir.resolve().name,
        "obs_spec_version": OBS_SPEC_VERSION,
        "feature_names": list(FEATURE_NAMES),
        "action_names": list(ACTION_NAMES),
        "action_low": ACTION_LOW,
        "action_high": ACTION_HIGH,
        "recurrent": None
        if recurrent is None
        else {"hidden_size": recurrent.hidden_size, "num_layers": recurrent.num_layers},
        "onnx": {
            "file": MODEL_FILE,
            "sha256": file_sha256(model_path),
            "inputs": inputs,
            "outputs": outputs,
            "opset": ONNX_OPSET,
        },
        "provenance": {
            "algorithm": algorithm,
            "train": train,
            "model_zip_sha256": file_sha256(zip_path),
            "exported_at_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "wsrl_version": wsrl.__version__,
            "torch_version": torch.__version__,
            "stable_baselines3_version": stable_baselines3.__version__,
        },
    }
    text = json.dumps(manifest, indent=2) + "\n"
    _write_atomic(manifest_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return out
