"""One batch of simulated hosts driven through the shared control pipeline: the engine of every env.

A :class:`HostBatch` owns one :class:`~wsrl.sim.simulator.Simulator` (any number of hosts of one
scenario or trace), the one :class:`~wsrl.pipeline.control.ControlStack` (allocator, fallback and
every rail) that evaluation and production use, and one
:class:`~wsrl.pipeline.observation.ObservationBuilder`. Its step takes ``[hosts, guests,
ACTION_DIM]`` actions, turns them into proposals with
:func:`~wsrl.pipeline.action.action_to_target_bytes`, lets the stack make them fit and pass the rails,
steps the simulator once for all hosts, and returns the new observation and reward terms, all as
arrays in one numpy pass. The gymnasium envs and the SB3 vector env are views over batches.

Episodes start at a random offset into the input (:class:`ShiftedDemand`): a random phase of the
day for scenarios, a random point of the replayed window for traces, so a 1-hour episode does not
always see the same hour.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from wsrl.inputs.simulated import SimulatedHost
from wsrl.pipeline.action import action_to_target_bytes
from wsrl.pipeline.control import ControlSpec, StackDecision
from wsrl.pipeline.observation import ObservationBuilder
from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.policies import make_stack
from wsrl.rl.reward import RewardWeights, reward_terms
from wsrl.sim.arrays import DemandSource, SimSetup
from wsrl.sim.simulator import Simulator

SCENARIO_PHASE_S = 86_400.0
"""Scenario episodes start at a random time within the first day (every diurnal phase)."""


class ShiftedDemand:
    """A demand source played from ``offset_s`` on: run time ``t`` is source time ``t + offset_s``."""

    def __init__(self, source: DemandSource) -> None:
        self.source = source
        self.pop_is_anon = source.pop_is_anon
        self.offset_s = 0.0

    def reset(self, seed: int) -> None:
        """Restart the source with ``seed`` (the offset stays as set)."""
        self.source.reset(seed)

    def at(self, t_s: float, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
        """The source's demand at ``t_s + offset_s``."""
        return self.source.at(t_s + self.offset_s, dt_s)


def max_start_s(setup: SimSetup, episode_s: float) -> float:
    """The latest episode start that keeps an episode inside the input's data.

    Traces: their shortest replayed window minus the episode. Scenarios: one day.
    """
    traces = setup.meta.get("traces")
    if isinstance(traces, dict) and traces:
        shortest = min(float(t["length_s"]) for t in traces.values())
        return max(shortest - episode_s, 0.0)
    return SCENARIO_PHASE_S


class _Proposal:
    """The policy slot of the control stack: hands on whatever proposal was set for this step."""

    name = "learned"

    def __init__(self) -> None:
        self.proposal_bytes: np.ndarray | None = None

    def reset(self, snapshot: HostSnapshot) -> None:
        self.proposal_bytes = None

    def decide(self, snapshot: HostSnapshot) -> np.ndarray:
        assert self.proposal_bytes is not None, "set proposal_bytes before stepping the loop"
        return self.proposal_bytes


@dataclasses.dataclass
class BatchStep:
    """What one step of a batch produced (arrays ``[hosts, guests, ...]``)."""

    obs: np.ndarray
    reward: np.ndarray
    terms: dict[str, np.ndarray]
    decision: StackDecision
    done: bool


class HostBatch:
    """Hosts of one input, stepped together (see the module docstring).

    Args:
        setup: the input's simulation setup (it is not modified; its demand is wrapped).
        episode_steps: control steps per episode.
        reward: reward weights.
        random_start: start episodes at a random offset (otherwise at time 0).
        control: allocator and rails (default: :meth:`ControlSpec.for_training`, the production
            rails).

    """

    def __init__(
        self,
        setup: SimSetup,
        *,
        episode_steps: int,
        reward: RewardWeights | None = None,
        random_start: bool = True,
        control: ControlSpec | None = None,
    ) -> None:
        if episode_steps < 1:
            raise ValueError(f"episode_steps must be >= 1, got {episode_steps}")
        self.demand = ShiftedDemand(setup.demand)
        self.setup = dataclasses.replace(setup, demand=self.demand)
        self.sim = Simulator(self.setup)
        self.host = SimulatedHost(self.sim)
        self.episode_steps = int(episode_steps)
        self.reward_weights = reward or RewardWeights()
        self.random_start = random_start
        self.max_start_s = max_start_s(setup, self.episode_steps * self.sim.step_s)
        self._policy = _Proposal()
        self.stack = make_stack(self._policy, control or ControlSpec.for_training())
        self.builder = ObservationBuilder()
        self.snapshot: HostSnapshot | None = None

    @property
    def mask(self) -> np.ndarray:
        """``[hosts, guests]`` real guest slots."""
        return self.sim.mask

    def reset(self, seed: int) -> np.ndarray:
        """Start an episode with ``seed`` (demand and start offset); returns the first observation."""
        if self.random_start and self.max_start_s > 0:
            start_rng = np.random.default_rng([int(seed), 0x5157])
            step_s = self.sim.step_s
            self.demand.offset_s = math.floor(start_rng.uniform(0.0, self.max_start_s) / step_s) * step_s
        else:
            self.demand.offset_s = 0.0
        self.sim.reset(seed)
        self.snapshot = self.host.snapshot()
        self.stack.reset(self.snapshot)
        return self.builder.reset(self.snapshot)

    def step(self, action: np.ndarray) -> BatchStep:
        """Apply ``[hosts, guests, ACTION_DIM]`` actions for one control step."""
        before = self.snapshot
        if before is None:
            raise RuntimeError("reset() the batch before stepping it")
        self._policy.proposal_bytes = action_to_target_bytes(
            action, before, self.builder.working_set_peak_bytes
        )
        decision = self.stack.step(before)
        self.sim.step(decision.target_bytes)
        after = self.host.snapshot()
        terms = reward_terms(
            before, after, self.reward_weights, decision.proposal_bytes, decision.breaker.tripped
        )
        self.snapshot = after
        obs = self.builder.build(after)
        reward = sum(terms.values())
        return BatchStep(
            obs=obs,
            reward=np.asarray(reward),
            terms=terms,
            decision=decision,
            done=self.sim.steps >= self.episode_steps,
        )
