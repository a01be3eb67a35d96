"""A natively batched SB3 ``VecEnv`` whose every slot is one guest: the env agents train on.

:class:`GuestVecEnv` steps any number of inputs (scenarios and traces, each a
:class:`~wsrl.rl.batch.HostBatch` of one or more hosts) in one numpy pass per input. Its slots are
the real guests of all batches, in order; each slot sees that guest's feature row (its host's
context included) and acts for that guest alone, so the trained network is one per-guest policy
with shared weights that runs on hosts of any size. A mix of inputs (2 to 64 guests per host)
trains one policy for all of them.

When a batch's episode ends, every slot of that batch is done at once: its ``info`` carries
``terminal_observation`` and ``TimeLimit.truncated`` (episodes end by the time limit only), plus
``episode`` (``r``, ``l``, ``t``) for SB3's logger and the episode's mean reward terms; the batch
restarts with the next seed of its own sequence and the returned observation is the new
episode's first. Every step's ``info`` also carries that guest's ``reward_terms`` (unless built
with ``info_reward_terms=False``, as training does).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from wsrl.inputs.ref import InputRef
from wsrl.inputs.setup import input_setup_with_hosts
from wsrl.pipeline.control import ControlSpec
from wsrl.rl.batch import HostBatch
from wsrl.rl.reward import REWARD_TERMS, RewardWeights
from wsrl.rl.spaces import guest_action_space, guest_observation_space
from wsrl.sim.arrays import with_histogram_sources


def episode_seed(base_seed: int, batch: int, episode: int) -> int:
    """The demand seed of one batch's episode: a pure function of the three numbers."""
    return int(np.random.default_rng([int(base_seed), int(batch), int(episode)]).integers(2**31 - 1))


@dataclasses.dataclass
class EpisodeEnd:
    """The end of one batch's episode: slots ``start:stop`` of the step it ended on."""

    start: int
    stop: int
    length: int
    elapsed_s: float
    returns: np.ndarray
    """``[stop - start]`` each slot's episode return."""
    term_means: dict[str, np.ndarray]
    """Each reward term's per-step mean over the episode, per slot."""
    terminal_obs: np.ndarray
    """``[stop - start, features]`` the episode's last observation (before the reset)."""


@dataclasses.dataclass
class StepArrays:
    """One vector-env step as arrays: what :func:`step_infos` turns into SB3's list of dicts."""

    obs: np.ndarray
    reward: np.ndarray
    done: np.ndarray
    terms: dict[str, np.ndarray]
    """Each reward term per slot."""
    ends: list[EpisodeEnd]

    def shifted(self, offset: int) -> StepArrays:
        """The same step with slot numbers moved by ``offset`` (a worker's share of a larger env)."""
        ends = [dataclasses.replace(e, start=e.start + offset, stop=e.stop + offset) for e in self.ends]
        return dataclasses.replace(self, ends=ends)


def step_infos(step: StepArrays, reward_terms: bool = True) -> list[dict[str, Any]]:
    """SB3's per-slot ``info`` dicts: reward terms, and at an episode's end its summary.

    ``reward_terms=False`` leaves the per-step terms out (episode ends keep their ``episode_terms``):
    at 4,096 guests the per-step dicts cost a third of the env's step, and training reads none.
    """
    if reward_terms:
        columns = [step.terms[name].tolist() for name in REWARD_TERMS]
        infos: list[dict[str, Any]] = [
            {"reward_terms": dict(zip(REWARD_TERMS, values, strict=True))}
            for values in zip(*columns, strict=True)
        ]
    else:
        infos = [{} for _ in range(len(step.reward))]
    for end in step.ends:
        for k in range(end.stop - end.start):
            info = infos[end.start + k]
            info["terminal_observation"] = end.terminal_obs[k]
            info["TimeLimit.truncated"] = True
            info["episode"] = {"r": float(end.returns[k]), "l": end.length, "t": end.elapsed_s}
            info["episode_terms"] = {name: float(end.term_means[name][k]) for name in REWARD_TERMS}
    return infos


class SlotsShareOneEnv(VecEnv):
    """The VecEnv plumbing of an env whose slots are rows of arrays, not separate env objects.

    Attribute access, method calls and wrapper checks go to the vec env itself, once per selected
    slot (what SB3 expects back). Subclasses implement reset, stepping and close.
    """

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Attribute of the env behind each slot: the vec env itself."""
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute on the vec env (shared by all slots)."""
        setattr(self, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """Call a method of the vec env once per selected slot."""
        method = getattr(self, method_name)
        return [method(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        """No slot is wrapped by a gymnasium wrapper."""
        return [False for _ in self._get_indices(indices)]

    def _get_indices(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)


class GuestVecEnv(SlotsShareOneEnv):
    """One slot per real guest over several host batches (see the module docstring).

    Args:
        inputs: the inputs (scenarios and traces).
        hosts_per_input: hosts simulated per scenario input (trace inputs pack 16 guests per host).
        episode_steps: control steps per episode.
        seed: base seed; episode seeds derive from it, the batch index and the episode count.
        reward: reward weights.
        random_start: start episodes at a random offset into each input.
        batch_ids: the number of each input's batch in episode seeds (default ``0..len(inputs)-1``).
            :class:`~wsrl.rl.parallel_vec_env.ParallelGuestVecEnv` passes each worker's share of
            the global numbering, so splitting inputs over processes replays the same episodes.
        info_reward_terms: put each step's ``reward_terms`` in every slot's ``info`` (training
            turns this off for speed; episode ends always carry ``episode_terms``).
        histogram_sources: the histogram sources the hosts of every input read their guests
            through, in turn (:func:`~wsrl.sim.arrays.with_histogram_sources`; ``()``: each
            scenario's own).
        control: allocator and rails (default: :meth:`ControlSpec.for_training`, the production
            rails).

    """

    def __init__(
        self,
        inputs: Sequence[InputRef],
        *,
        hosts_per_input: int = 1,
        episode_steps: int = 360,
        seed: int = 0,
        reward: RewardWeights | None = None,
        random_start: bool = True,
        batch_ids: Sequence[int] | None = None,
        info_reward_terms: bool = True,
        histogram_sources: Sequence[str] = (),
        control: ControlSpec | None = None,
    ) -> None:
        if not inputs:
            raise ValueError("GuestVecEnv needs at least one input")
        self.inputs = list(inputs)
        self.info_reward_terms = info_reward_terms
        self.batch_ids = list(range(len(self.inputs))) if batch_ids is None else [int(b) for b in batch_ids]
        if len(self.batch_ids) != len(self.inputs):
            raise ValueError(f"{len(self.batch_ids)} batch ids for {len(self.inputs)} inputs")
        self.batches = [
            HostBatch(
                with_histogram_sources(input_setup_with_hosts(ref, hosts_per_input), histogram_sources),
                episode_steps=episode_steps,
                reward=reward,
                random_start=random_start,
                control=control,
            )
            for ref in self.inputs
        ]
        self._slots = [np.argwhere(b.mask) for b in self.batches]  # per batch: [n, 2] (host, guest)
        counts = [len(s) for s in self._slots]
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(int)
        self.base_seed = int(seed)
        self._episodes = [0] * len(self.batches)
        self._returns = np.zeros(int(self._offsets[-1]))
        self._term_sums = {name: np.zeros(int(self._offsets[-1])) for name in REWARD_TERMS}
        self._started = time.monotonic()
        self._actions: np.ndarray | None = None
        self.render_mode = None  # nothing to render; SB3 asks for the attribute
        super().__init__(int(self._offsets[-1]), guest_observation_space(), guest_action_space())

    # -- helpers ----------------------------------------------------------------------------------

    def _rows(self, index: int, array: np.ndarray) -> np.ndarray:
        """The real guests' rows of batch ``index``'s ``[hosts, guests, ...]`` array."""
        slots = self._slots[index]
        return array[slots[:, 0], slots[:, 1]]

    def _reset_batch(self, index: int) -> np.ndarray:
        seed = episode_seed(self.base_seed, self.batch_ids[index], self._episodes[index])
        self._episodes[index] += 1
        start, stop = self._offsets[index], self._offsets[index + 1]
        self._returns[start:stop] = 0.0
        for sums in self._term_sums.values():
            sums[start:stop] = 0.0
        return self._rows(index, self.batches[index].reset(seed))

    # -- VecEnv API -------------------------------------------------------------------------------

    def reset(self) -> np.ndarray:
        """Start a new episode in every batch; returns ``[num_envs, features]``."""
        if self._seeds and self._seeds[0] is not None:
            self.base_seed = int(self._seeds[0])
            self._episodes = [0] * len(self.batches)
        self._reset_seeds()
        self._reset_options()
        return np.concatenate([self._reset_batch(i) for i in range(len(self.batches))]).astype(np.float32)

    def step_async(self, actions: np.ndarray) -> None:
        """Remember the ``[num_envs, ACTION_DIM]`` actions for :meth:`step_wait`."""
        self._actions = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, -1)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Step every batch once; auto-resets batches whose episode ended."""
        if self._actions is None:
            raise RuntimeError("step_async must come before step_wait")
        step = self.step_arrays(self._actions)
        self._actions = None
        return step.obs, step.reward, step.done, step_infos(step, self.info_reward_terms)

    def step_arrays(self, actions: np.ndarray) -> StepArrays:
        """Step every batch once with ``[num_envs, ACTION_DIM]`` actions; everything as arrays.

        Batches whose episode ended are reset (their slots' ``obs`` is the new episode's first).
        """
        actions = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, -1)
        obs_parts, rewards, dones, ends = [], [], [], []
        term_parts: dict[str, list[np.ndarray]] = {name: [] for name in REWARD_TERMS}
        for index, batch in enumerate(self.batches):
            start, stop = self._offsets[index], self._offsets[index + 1]
            slots = self._slots[index]
            action = np.zeros((*batch.mask.shape, actions.shape[1]))
            action[slots[:, 0], slots[:, 1]] = actions[start:stop]
            result = batch.step(action)
            reward = self._rows(index, result.reward)
            obs = self._rows(index, result.obs)
            self._returns[start:stop] += reward
            for name in REWARD_TERMS:
                terms = self._rows(index, result.terms[name])
                self._term_sums[name][start:stop] += terms
                term_parts[name].append(terms)
            if result.done:
                length = batch.sim.steps
                ends.append(
                    EpisodeEnd(
                        start=int(start),
                        stop=int(stop),
                        length=int(length),
                        elapsed_s=round(time.monotonic() - self._started, 6),
                        returns=self._returns[start:stop].copy(),
                        term_means={n: self._term_sums[n][start:stop] / length for n in REWARD_TERMS},
                        terminal_obs=obs.astype(np.float32),
                    )
                )
                obs = self._reset_batch(index)
            obs_parts.append(obs)
            rewards.append(reward)
            dones.append(np.full(stop - start, result.done))
        return StepArrays(
            obs=np.concatenate(obs_parts).astype(np.float32),
            reward=np.concatenate(rewards).astype(np.float32),
            done=np.concatenate(dones),
            terms={name: np.concatenate(parts) for name, parts in term_parts.items()},
            ends=ends,
        )

    def close(self) -> None:
        """Nothing to release: everything lives in this process."""
