"""Distillation: fit a trained network to a teacher's *actions*, in the states a policy reaches.

Behaviour cloning (:mod:`wsrl.rl.bc`) records a teacher's target sizes and maps each back to the
one action that proposes it, with the ``peak_keep`` floor off. That is the only way to clone a
policy that thinks in sizes (vpa, the oracle), but it loses how a learned policy reached its size:
a build VM held through its idle phase by ``peak_keep`` comes back as ``headroom`` on a cooled
histogram, which the student then misses. A teacher that works in action space
(:class:`wsrl.policies.teacher.RefinedTeacher`: a trained network's own actions, capped by two
rules) can hand over its actions directly, and a student initialised from that same network only
has to learn the caps.

:func:`collect_teacher_actions` runs the teacher through the evaluator's loop on each input and
collects ``(observation row, action)`` pairs from the one observation builder every backend uses.
With ``actor``, another policy (the student, exported) drives the hosts and the teacher only
labels the states it reaches (DAgger, Ross et al., AISTATS 2011), so that the student learns what
the teacher does where the student's own small errors lead. :func:`distill` does both rounds and
fits the network (MSE, :func:`wsrl.rl.bc.behaviour_clone`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from wsrl.inputs.ref import InputRef
from wsrl.inputs.setup import input_setup
from wsrl.pipeline.action import ACTION_DIM
from wsrl.pipeline.observation import FEATURE_COUNT
from wsrl.pipeline.policy import Policy
from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.policies.teacher import RefinedTeacher
from wsrl.sim.arrays import with_histogram_sources

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm


class _Labeller:
    """Drives with ``actor`` while ``teacher`` sees every snapshot and records what it would do."""

    def __init__(self, teacher: RefinedTeacher, actor: Policy) -> None:
        self.teacher = teacher
        self.actor = actor
        self.name = actor.name

    def reset(self, snapshot: HostSnapshot) -> None:
        self.teacher.reset(snapshot)
        self.actor.reset(snapshot)

    def decide(self, snapshot: HostSnapshot) -> np.ndarray:
        self.teacher.decide(snapshot)
        return self.actor.decide(snapshot)


class _Collecting:
    """Wraps a policy whose ``decide`` leaves ``last_rows``/``last_actions``, keeping every pair."""

    def __init__(self, policy: RefinedTeacher | _Labeller) -> None:
        self.policy = policy
        self.name = policy.name
        self.rows: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []

    def _teacher(self) -> RefinedTeacher:
        return self.policy.teacher if isinstance(self.policy, _Labeller) else self.policy

    def reset(self, snapshot: HostSnapshot) -> None:
        self.policy.reset(snapshot)

    def decide(self, snapshot: HostSnapshot) -> np.ndarray:
        target = self.policy.decide(snapshot)
        teacher = self._teacher()
        self.rows.append(teacher.last_rows)
        self.actions.append(teacher.last_actions)
        return target


def collect_teacher_actions(
    make_teacher: Callable[[], RefinedTeacher],
    inputs: Sequence[InputRef],
    duration_s: float,
    seed: int,
    actor: Callable[[], Policy] | None = None,
    histogram_sources: Sequence[str] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """``(rows [N, FEATURE_COUNT], actions [N, ACTION_DIM])`` of a teacher on every input.

    Each input runs for ``duration_s`` with ``seed`` through :func:`wsrl.eval.runner.evaluate_setup`
    (the evaluator's simulator and control stack), once per histogram source in
    ``histogram_sources`` (:func:`~wsrl.sim.arrays.with_histogram_sources`: guests whose scenario
    names a source keep it, and a run that would repeat another is left out; ``()``: each
    scenario's own). ``make_teacher`` and ``actor`` build a fresh policy per run; with ``actor``
    that policy drives and the teacher only labels.
    """
    from wsrl.eval.runner import evaluate_setup

    rows: list[np.ndarray] = []
    actions: list[np.ndarray] = []
    for ref in inputs:
        base = input_setup(ref)
        setups = [with_histogram_sources(base, [source]) for source in histogram_sources] or [base]
        seen: list[np.ndarray] = []
        for setup in setups:
            chosen = setup.guests.histogram_source
            sources = np.asarray(0 if chosen is None else chosen)
            if any(np.array_equal(sources, other) for other in seen):
                continue
            seen.append(sources)
            teacher = make_teacher()
            collecting = _Collecting(teacher if actor is None else _Labeller(teacher, actor()))
            evaluate_setup(collecting, setup, str(ref), seed, duration_s)
            rows += collecting.rows
            actions += collecting.actions
    if not rows:
        return np.zeros((0, FEATURE_COUNT), np.float32), np.zeros((0, ACTION_DIM), np.float32)
    return np.concatenate(rows), np.concatenate(actions)


@dataclass
class DistillResult:
    """What :func:`distill` collected and how well the network fits it.

    ``final_mse`` compares the network's clipped deterministic actions with the teacher's own on
    every sample; ``epoch_mse`` is the training loss against the :func:`labels` (past the bounds).
    """

    samples: int
    dagger_samples: int
    final_mse: float
    epoch_mse: list[float]


BOUND_MARGIN = 0.2
"""How far past a bound of ``[-1, 1]`` a teacher's action at that bound is fitted (see :func:`labels`)."""


def labels(actions: np.ndarray, margin: float = BOUND_MARGIN) -> np.ndarray:
    """Regression targets for a teacher's actions: those at a bound moved ``margin`` past it.

    The exported network's output is clipped to ``[-1, 1]``, so an action at a bound only needs the
    network's output to be at or past it. Fitted to the bound itself, the output lands a little
    inside half the time, and inside is not harmless: ``cold_age`` just under +1 is a threshold
    just under 2 h, which hands back pages a replayed Bitbrains VM touches every two hours (it
    broke the SLO on held-out VMs that the teacher kept whole, docs/learning.md). Past the bound,
    the clip returns exactly the teacher's action.
    """
    actions = np.asarray(actions, dtype=np.float32)
    high = actions >= 1.0 - 1e-6
    low = actions <= -1.0 + 1e-6
    return np.where(high, 1.0 + margin, np.where(low, -1.0 - margin, actions)).astype(np.float32)


def distill(
    model: BaseAlgorithm,
    make_teacher: Callable[[], RefinedTeacher],
    inputs: Sequence[InputRef],
    duration_s: float,
    seed: int,
    *,
    epochs: int = 10,
    dagger: bool = False,
    margin: float = BOUND_MARGIN,
    histogram_sources: Sequence[str] = (),
) -> DistillResult:
    """Fit ``model`` (in place) to the teacher's actions on ``inputs``; optionally one DAgger round.

    Round 1 collects the teacher's own trajectories (``seed``; each input once per histogram source
    in ``histogram_sources``, as :func:`collect_teacher_actions` says) and fits. With ``dagger``, the fitted
    network then drives the same inputs (``seed + 1``, new episodes) while the teacher labels the
    states it reaches, and the network is fitted again, from the weights it started with, on both
    rounds' samples.
    """
    from wsrl.rl.bc import behaviour_clone
    from wsrl.rl.train import learned_policy_from_model

    start_state = copy.deepcopy(model.policy.state_dict())
    rows, actions = collect_teacher_actions(
        make_teacher, inputs, duration_s, seed, histogram_sources=histogram_sources
    )
    fit = behaviour_clone(model, rows, labels(actions, margin), epochs=epochs, seed=seed)
    dagger_samples = 0
    if dagger:

        def student() -> Policy:
            return learned_policy_from_model(model, "student")

        more_rows, more_actions = collect_teacher_actions(
            make_teacher, inputs, duration_s, seed + 1, student, histogram_sources
        )
        dagger_samples = len(more_rows)
        rows = np.concatenate([rows, more_rows])
        actions = np.concatenate([actions, more_actions])
        model.policy.load_state_dict(start_state)
        fit = behaviour_clone(model, rows, labels(actions, margin), epochs=epochs, seed=seed)
    predicted, _ = model.predict(rows, deterministic=True)  # clipped, as exported
    final_mse = float(np.mean((np.asarray(predicted, dtype=np.float64) - actions) ** 2))
    return DistillResult(
        samples=len(rows), dagger_samples=dagger_samples, final_mse=final_mse, epoch_mse=fit.epoch_mse
    )
