"""``wsrl/LiveHost-v0``: real guests (cgroups, QEMU VMs, or the simulator backend) as a gymnasium env.

The env wraps the production runner (:class:`wsrl.runner.daemon.Runner`) built from a runner config
(``host.toml``): the same backends and control stack (allocator and safety rails: floors, bounded
shrink, host reserve, stale-input holds, the circuit breaker and its fallback), always on. An agent can
therefore be evaluated or fine-tuned on real guests without being able to do anything the runner
would not let a policy do. Every step is audited like a runner tick.

One step:

1. the action (per guest, :data:`~wsrl.pipeline.action.ACTION_NAMES`) becomes proposals with
   :func:`~wsrl.pipeline.action.action_to_target_bytes`, mapped on a fresh reading of the host
   (the runner's tick reads the guests, then decides: the knobs apply to the newest histogram);
2. the runner passes them through the allocator and every rail and applies the result;
3. the env waits until ``interval_s`` has passed since the previous step (real time; off with
   ``pace=False`` for a simulated clock), reads the host again and returns the observation of that
   reading, built by the same :class:`~wsrl.pipeline.observation.ObservationBuilder` as everywhere.

Spaces and reward are those of ``wsrl/Overcommit-v0`` (:mod:`wsrl.rl.envs`): observation
``Dict(guests=Box(G, F), mask=MultiBinary(G))`` with ``G`` the configured guests (a guest that cannot
be read is masked out), action ``Box(G, ACTION_DIM)``, reward the mean per-guest reward of
:mod:`wsrl.rl.reward`. ``info`` carries the reward terms, the applied targets and what the rails did.
Episodes end by the time limit. :meth:`LiveHostEnv.close` leaves the guests as the config's
``safety.on_exit`` says.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from wsrl.backends.base import GuestBackend
from wsrl.pipeline.action import ACTION_DIM, action_to_target_bytes
from wsrl.pipeline.observation import FEATURE_COUNT, ObservationBuilder
from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.rl.reward import REWARD_TERMS, RewardWeights, reward_terms
from wsrl.rl.spaces import OBS_HIGH, OBS_LOW
from wsrl.runner.config import RunnerConfig, load_runner_config
from wsrl.runner.daemon import Runner


class _AgentProposal:
    """The runner's policy slot: maps the agent's pending action on the snapshot the tick read."""

    name = "agent"

    def __init__(self, builder: ObservationBuilder) -> None:
        self.builder = builder
        self.action: np.ndarray | None = None

    def reset(self, snapshot: HostSnapshot) -> None:
        """Nothing to forget: the env owns the history."""

    def decide(self, snapshot: HostSnapshot) -> np.ndarray:
        if self.action is None:
            return np.full(snapshot.shape, np.nan)  # no action yet: the allocator holds every guest
        return action_to_target_bytes(self.action, snapshot, self.builder.working_set_peak_bytes)


class LiveHostEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """Live guests behind the runner's rails (see the module docstring).

    Args:
        config: a runner config (``host.toml`` path or a validated :class:`RunnerConfig`).
        episode_steps: steps per episode.
        reward: reward weights.
        pace: wait ``host.interval_s`` of real time between steps (off for a simulated clock).
        backends: backends to use instead of building them from the config (tests, embedding).

    """

    metadata = {"render_modes": []}  # noqa: RUF012 (gymnasium's convention)

    def __init__(
        self,
        config: str | Path | RunnerConfig,
        *,
        episode_steps: int = 360,
        reward: RewardWeights | dict[str, float] | None = None,
        pace: bool = True,
        backends: list[GuestBackend] | None = None,
    ) -> None:
        self.config = config if isinstance(config, RunnerConfig) else load_runner_config(config)
        self.episode_steps = int(episode_steps)
        self.weights = reward if isinstance(reward, RewardWeights) else RewardWeights(**(reward or {}))
        self.pace = pace
        self.builder = ObservationBuilder()
        self._proposal = _AgentProposal(self.builder)
        self.runner = Runner(self.config, backends=backends, policy=self._proposal)
        self.max_guests = len(self.runner.specs)
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
        self._snapshot: HostSnapshot | None = None
        self._steps = 0
        self._last_step_s = -np.inf

    def _observation(self, obs: np.ndarray, snapshot: HostSnapshot) -> dict[str, np.ndarray]:
        return {"guests": obs[0].astype(np.float32), "mask": snapshot.mask[0].astype(np.int8)}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start (or continue) on the live host: read it and return the first observation."""
        super().reset(seed=seed)
        self.runner.start()
        self._proposal.action = None
        self._snapshot = self.runner.observe()
        self._steps = 0
        self._last_step_s = time.monotonic()
        obs = self.builder.reset(self._snapshot)
        return self._observation(obs, self._snapshot), {"time_ms": self._snapshot.time_ms}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Apply one action through the runner's rails, wait one interval, observe."""
        if self._snapshot is None:
            raise RuntimeError("reset() the env before stepping it")
        self._proposal.action = np.asarray(action, dtype=np.float64).reshape(1, self.max_guests, ACTION_DIM)
        outcome = self.runner.tick()
        if self.pace:
            wait_s = self._last_step_s + self.config.host.interval_s - time.monotonic()
            if wait_s > 0:
                time.sleep(wait_s)
        self._last_step_s = time.monotonic()
        before, after = self._snapshot, self.runner.observe()
        tripped = np.array([[bool(g["breaker"]["tripped"]) for g in outcome.record["guests"]]])
        terms = reward_terms(before, after, self.weights, breaker_tripped=tripped)
        self._snapshot = after
        obs = self.builder.build(after)
        mask = after.mask[0] & before.mask[0]
        guests = max(int(mask.sum()), 1)
        reward = float(sum(t[0][mask].sum() for t in terms.values()) / guests)
        self._steps += 1
        info = {
            "reward_terms": {name: float(terms[name][0][mask].sum() / guests) for name in REWARD_TERMS},
            "target_bytes": np.asarray(outcome.target_bytes, dtype=float),
            "outcomes": list(outcome.outcomes),
            "tick": outcome.tick,
        }
        return self._observation(obs, after), reward, False, self._steps >= self.episode_steps, info

    def close(self) -> None:
        """Leave the guests as ``safety.on_exit`` says and release the backends."""
        self.runner.shutdown()
