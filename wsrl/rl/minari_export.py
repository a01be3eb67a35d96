"""Export recorded decisions as a Minari dataset, for offline RL libraries.

:func:`export_minari` turns a trace recorded with decisions (:func:`wsrl.rl.bc.record_decisions`,
or any trace with ``action_target_bytes``) into a local Minari dataset with the per-guest spaces
every wsrl agent uses (:mod:`wsrl.rl.spaces`). Each guest's trajectory is one episode
(:func:`wsrl.rl.bc.guest_trajectories`; a guest absent for a while gives one episode per stretch
it was present, in host then guest name order):

* ``observations``: ``[T + 1, FEATURE_COUNT]`` the guest's observation rows, from one
  :class:`~wsrl.pipeline.observation.ObservationBuilder` fed the host's replayed snapshots in order;
* ``actions``: ``[T, ACTION_DIM]`` :func:`~wsrl.rl.bc.target_to_action` of the recorded decisions;
* ``rewards``: ``[T]`` the guest's reward of each step, the sum of
  :func:`~wsrl.rl.reward.reward_terms` with the given weights (the defaults of an agent config);
* ``terminations`` all False, ``truncations`` True at the last step (episodes end by the time limit);
* ``infos["time_ms"]``: ``[T + 1]`` sample times; each episode's ``options`` name its trace, host
  and guest.

Datasets are written in Minari's ``arrow`` format (pyarrow is a wsrl dependency; ``hdf5`` would
need h5py) under ``$MINARI_DATASETS_PATH`` (Minari's default ``~/.minari/datasets`` when unset) or
the ``out`` directory given, and load back with ``minari.load_dataset(dataset_id)`` with
``MINARI_DATASETS_PATH`` pointing at that directory.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from wsrl.errors import WsrlError
from wsrl.rl.reward import RewardWeights

MINARI_PATH_ENV = "MINARI_DATASETS_PATH"
DATA_FORMAT = "arrow"


@contextlib.contextmanager
def datasets_root(out: str | Path | None) -> Iterator[None]:
    """Point Minari at ``out`` (when given) for the duration of the block."""
    if out is None:
        yield
        return
    previous = os.environ.get(MINARI_PATH_ENV)
    os.environ[MINARI_PATH_ENV] = str(Path(out).resolve())
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(MINARI_PATH_ENV, None)
        else:
            os.environ[MINARI_PATH_ENV] = previous


def _weights(reward_weights: RewardWeights | Mapping[str, float] | None) -> RewardWeights:
    if reward_weights is None:
        return RewardWeights()
    if isinstance(reward_weights, RewardWeights):
        return reward_weights
    try:
        return RewardWeights(**dict(reward_weights))
    except (TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()
        raise WsrlError(f"reward weights: {first[-1] if first else exc}") from None


INSTALL_HINT = "pip install 'wsrl[train]' (or pip install minari)"
"""How to install what a Minari export needs."""


@contextlib.contextmanager
def _install_hint() -> Iterator[None]:
    """Turn a missing module of the Minari export into one line naming it and how to install it."""
    try:
        yield
    except ImportError as exc:
        missing = exc.name or "minari"
        raise WsrlError(
            f"trace export-minari needs {missing}, which is not installed: {INSTALL_HINT}"
        ) from None


def import_minari() -> Any:
    """The ``minari`` module.

    Raises:
        WsrlError: minari (or a module it needs) is not installed; names how to install it.

    """
    with _install_hint():
        import minari

        return minari


def export_minari(
    trace_dir: str | Path,
    dataset_id: str,
    reward_weights: RewardWeights | Mapping[str, float] | None = None,
    *,
    out: str | Path | None = None,
    description: str | None = None,
) -> Path:
    """Write a trace's recorded decisions as Minari dataset ``dataset_id``; returns its directory.

    Args:
        trace_dir: a trace recorded with decisions (``action_target_bytes``).
        dataset_id: Minari id, ``(namespace/)name-vN``.
        reward_weights: reward weights (an agent config's ``[reward]``); defaults when ``None``.
        out: datasets root directory (default: ``$MINARI_DATASETS_PATH``, else Minari's default).
        description: the dataset's description (default: names the trace and the policy).

    Raises:
        WsrlError: the trace cannot be replayed or holds no decisions, the id is malformed, a
            dataset with that id exists already under the root, or minari is not installed.

    """
    minari = import_minari()
    with _install_hint():
        from minari.data_collector import EpisodeBuffer
        from minari.dataset.minari_dataset import parse_dataset_id
        from minari.storage import get_dataset_path

        from wsrl.rl.bc import guest_trajectories
        from wsrl.rl.spaces import guest_action_space, guest_observation_space

    try:
        parse_dataset_id(dataset_id)
    except (ValueError, TypeError):
        raise WsrlError(
            f"dataset id {dataset_id!r}: expected (namespace/)name-vN, for example wsrl/client-vpa-v0"
        ) from None
    weights = _weights(reward_weights)
    trajectories = guest_trajectories(trace_dir, reward_weights=weights)
    if not trajectories:
        raise WsrlError(f"{trace_dir}: no guest has two consecutive samples with a decision to export")
    buffers = []
    for index, trajectory in enumerate(trajectories):
        steps = trajectory.actions.shape[0]
        truncations = np.zeros(steps, dtype=bool)
        truncations[-1] = True
        buffers.append(
            EpisodeBuffer(
                id=index,
                options={
                    "trace": trajectory.trace,
                    "host": trajectory.host,
                    "guest": trajectory.guest,
                    "policy": trajectory.policy,
                },
                observations=trajectory.observations.astype(np.float32),
                actions=trajectory.actions.astype(np.float32),
                rewards=trajectory.rewards.astype(np.float64),
                terminations=np.zeros(steps, dtype=bool),
                truncations=truncations,
                # A list, not a 1-D array: minari 0.5's arrow storage cannot decode 1-D info arrays.
                infos={"time_ms": [int(t) for t in trajectory.time_ms]},
            )
        )
    policies = sorted({t.policy for t in trajectories if t.policy})
    who = ", ".join(policies) or "a controller"

    with datasets_root(out):
        path = get_dataset_path(dataset_id)
        if path.exists():
            raise WsrlError(
                f"{path}: a Minari dataset {dataset_id!r} exists already; choose another id or version"
            )
        with warnings.catch_warnings():
            # minari nags about optional metadata (author, code_permalink, env_spec) wsrl has no value for.
            warnings.filterwarnings("ignore", category=UserWarning, module=r"minari\.")
            minari.create_dataset_from_buffers(
                dataset_id=dataset_id,
                buffer=buffers,
                observation_space=guest_observation_space(),
                action_space=guest_action_space(),
                algorithm_name=", ".join(policies) or None,
                description=description or f"wsrl: per-guest decisions of {who} recorded in {trace_dir}",
                data_format=DATA_FORMAT,
            )
    return Path(path)


def dataset_summary(dataset: Any) -> dict[str, Any]:
    """Episode and step counts of a loaded Minari dataset (for the command line)."""
    return {"episodes": int(dataset.total_episodes), "steps": int(dataset.total_steps)}
