"""Gymnasium environments over one simulated host: ``wsrl/Overcommit-v0`` and ``wsrl/TraceReplay-v0``.

Both are one :class:`~wsrl.rl.batch.HostBatch` of a single host seen whole:

* observation: ``Dict(guests=Box(-10, 10, (max_guests, FEATURE_COUNT)), mask=MultiBinary(max_guests))``,
  one feature row per guest slot (:data:`wsrl.pipeline.observation.FEATURE_NAMES`), zero rows and a
  0 mask where no guest sits;
* action: ``Box(-1, 1, (max_guests, ACTION_DIM))``, per guest the cold-age threshold and headroom of
  :mod:`wsrl.pipeline.action` (rows of empty slots are ignored);
* reward: the mean over the host's guests of the per-guest reward of :mod:`wsrl.rl.reward`;
  ``info["reward_terms"]`` holds each term's host mean, ``info["guest_reward_terms"]`` the
  per-guest arrays, ``info["target_bytes"]`` what was applied after the allocator and guard;
* episodes end by the time limit (``truncated``), never ``terminated``.

``Overcommit-v0`` simulates a scenario (name or TOML path); ``TraceReplay-v0`` replays recorded
guests (a trace directory in the trace store format, the real Bitbrains history first) with their
consequences computed counterfactually by the simulator. Training uses the batched
:class:`~wsrl.rl.vec_env.GuestVecEnv`, which runs the same batches with one slot per guest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from wsrl.inputs.ref import ScenarioInput, TraceInput, trace_input
from wsrl.inputs.setup import input_setup_with_hosts, trace_guest_names, trace_host_setup
from wsrl.pipeline.action import ACTION_DIM
from wsrl.pipeline.observation import FEATURE_COUNT
from wsrl.rl.batch import HostBatch
from wsrl.rl.reward import REWARD_TERMS, RewardWeights
from wsrl.rl.spaces import OBS_HIGH, OBS_LOW
from wsrl.sim.arrays import SimSetup

DEFAULT_EPISODE_STEPS = 360
"""One simulated hour at the scenarios' 10 s step."""


class HostEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """One host of a setup as a gymnasium env (see the module docstring).

    Args:
        setup: a one-host simulation setup.
        episode_steps: control steps per episode.
        reward: reward weights (defaults of :class:`~wsrl.rl.reward.RewardWeights`).
        random_start: start episodes at a random offset into the input.

    """

    metadata = {"render_modes": []}  # noqa: RUF012 (gymnasium's convention)

    def __init__(
        self,
        setup: SimSetup,
        *,
        episode_steps: int = DEFAULT_EPISODE_STEPS,
        reward: RewardWeights | dict[str, float] | None = None,
        random_start: bool = True,
    ) -> None:
        if setup.guests.mask.shape[0] != 1:
            raise ValueError(f"HostEnv simulates one host; the setup has {setup.guests.mask.shape[0]}")
        weights = reward if isinstance(reward, RewardWeights) else RewardWeights(**(reward or {}))
        self.batch = HostBatch(setup, episode_steps=episode_steps, reward=weights, random_start=random_start)
        self.max_guests = int(setup.guests.mask.shape[1])
        # gymnasium types a Dict space's samples as dict[str, Space]; they are dicts of arrays.
        self.observation_space = cast(
            spaces.Space[dict[str, np.ndarray]],
            spaces.Dict(
                {
                    "guests": spaces.Box(OBS_LOW, OBS_HIGH, (self.max_guests, FEATURE_COUNT), np.float32),
                    "mask": spaces.MultiBinary(self.max_guests),
                }
            ),
        )
        self.action_space = spaces.Box(-1.0, 1.0, (self.max_guests, ACTION_DIM), np.float32)
        self._mask = setup.guests.mask[0].astype(np.int8)

    def _observation(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        return {"guests": obs[0].astype(np.float32), "mask": self._mask.copy()}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode; the demand seed is drawn from the env's generator (seeded by ``seed``)."""
        super().reset(seed=seed)
        demand_seed = int(self.np_random.integers(2**31 - 1))
        obs = self.batch.reset(demand_seed)
        info = {"demand_seed": demand_seed, "start_offset_s": self.batch.demand.offset_s}
        return self._observation(obs), info

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Apply one action to every guest for one control step."""
        action = np.asarray(action, dtype=np.float64).reshape(1, self.max_guests, ACTION_DIM)
        result = self.batch.step(action)
        mask = self.batch.mask[0]
        guests = max(int(mask.sum()), 1)
        reward = float(result.reward[0][mask].sum() / guests)
        info = {
            "reward_terms": {
                name: float(result.terms[name][0][mask].sum() / guests) for name in REWARD_TERMS
            },
            "guest_reward_terms": {name: result.terms[name][0].copy() for name in REWARD_TERMS},
            "target_bytes": result.decision.target_bytes[0].copy(),
        }
        return self._observation(result.obs), reward, False, result.done, info


class OvercommitEnv(HostEnv):
    """``wsrl/Overcommit-v0``: one simulated host of a scenario.

    Args:
        scenario: a bundled scenario name (``wsrl scenario list``) or a scenario TOML path.
        **kwargs: see :class:`HostEnv`.

    """

    def __init__(self, scenario: str | Path | ScenarioInput = "datacenter", **kwargs: Any) -> None:
        ref = scenario if isinstance(scenario, ScenarioInput) else ScenarioInput(str(scenario))
        self.scenario = str(ref)
        super().__init__(input_setup_with_hosts(ref, hosts=1), **kwargs)


class TraceReplayEnv(HostEnv):
    """``wsrl/TraceReplay-v0``: recorded guests replayed on one host (capacity = their provisioned sum).

    Args:
        traces: a trace directory (or ``traces:DIR``, or a :class:`~wsrl.inputs.ref.TraceInput`).
        guests: which trace guests to replay (default: the first ``max_guests``).
        max_guests: at most this many guests on the host.
        **kwargs: see :class:`HostEnv`.

    """

    def __init__(
        self,
        traces: str | Path | TraceInput,
        guests: list[str] | None = None,
        max_guests: int = 16,
        **kwargs: Any,
    ) -> None:
        directory = trace_input(traces).directory.resolve()
        chosen = list(guests) if guests else trace_guest_names(directory)[:max_guests]
        self.traces = str(directory)
        self.guest_names = chosen
        super().__init__(trace_host_setup(directory, chosen), **kwargs)
