"""Behaviour cloning: record a reference policy's decisions, turn them into actions, fit a network.

Three steps, each usable alone:

1. :func:`record_decisions` runs a reference policy (``vpa``, ``far-memory``, ... or an exported
   learned policy) through the evaluator's simulation loop on scenarios or ``traces:DIR`` inputs and
   records every step as a trace with the decision in ``action_target_bytes`` and the policy's name
   in ``action_policy``. The static configuration goes into the manifest
   (:func:`wsrl.inputs.replay.static_meta`), so the trace replays exactly.
2. :func:`bc_dataset` replays recorded traces (:mod:`wsrl.inputs.replay`), builds the
   observation rows with the one :class:`~wsrl.pipeline.observation.ObservationBuilder` and maps
   each recorded target to the action that proposes it (:func:`target_to_action`).
3. :func:`behaviour_clone` fits an SB3 PPO or SAC policy's deterministic action to those actions
   (MSE, Adam), e.g. as a warm start for :func:`wsrl.rl.train.train` (``init_model=``).

**Which decision is recorded.** By default the policy's *request*: its proposal clipped into
``[floor, provisioned]`` (the allocator's first step), before the host's capacity is shared out.
A learned policy sits in the same slot of the control loop, so the request is what it must
imitate: on an overcommitted host (``envs/training/client.toml``) the allocator squeezes every
policy to the same full-host sizes and the applied targets hide the policy's own decision.
``record="applied"`` records the target the loop applied instead (what a real controller's trace
holds); the manifest's ``meta["decision"]`` says which.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from wsrl.errors import WsrlError
from wsrl.pipeline.action import (
    ACTION_DIM,
    MAX_HEADROOM_FRAC,
    cold_age_action_of_log,
    headroom_action,
)
from wsrl.pipeline.observation import FEATURE_COUNT, OBS_IDLE_MS, ObservationBuilder, cold_bytes_by_type
from wsrl.pipeline.snapshot import HostSnapshot

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

    from wsrl.inputs.ref import InputRef
    from wsrl.pipeline.control import ControlSpec
    from wsrl.pipeline.policy import Policy
    from wsrl.rl.reward import RewardWeights

DECISION_KINDS: tuple[str, ...] = ("proposal", "applied")
"""What :func:`record_decisions` can record as ``action_target_bytes``."""

_LOG_AGES = np.log(np.asarray(OBS_IDLE_MS, dtype=float))


# --- the inverse of the action mapping --------------------------------------------------------------


def target_to_action(target_bytes: np.ndarray, snapshot: HostSnapshot) -> np.ndarray:
    """``[hosts, guests, ACTION_DIM]`` actions whose proposal is closest to ``target_bytes``.

    The inverse of :func:`wsrl.pipeline.action.action_to_target_bytes`, one deterministic rule:
    the proposal is ``usage - cold(T) + headroom``, and ``usage - cold(T)`` grows with ``T``.

    * target at or above ``usage - cold(T_max)``: ``T = T_max`` (:data:`MAX_COLD_AGE_MS`,
      ``cold_age`` = +1) and the headroom that makes up the rest (``headroom`` = +1 when even the
      largest headroom falls short);
    * target between ``usage - cold(T_min)`` and ``usage - cold(T_max)``: no headroom
      (``headroom`` = -1) and the ``T`` where ``usage - cold(T)`` equals the target, interpolated in
      ``log T`` between the observation's idle ages exactly as the forward mapping does (where cold
      memory is flat over a range of ages, the largest such ``T``);
    * target below ``usage - cold(T_min)`` (:data:`MIN_COLD_AGE_MS`; unreachable): ``T = T_min``
      and no headroom, the smallest proposal.

    Both branches meet at ``(+1, -1)``, so the action is a continuous function of the target. The
    ``peak_keep`` floor is always off (-1): the two knobs above reach every target already.
    Padding slots and non-finite targets get zeros.

    Raises:
        ValueError: ``target_bytes`` is not shaped like the snapshot.

    """
    target = np.asarray(target_bytes, dtype=float)
    if target.shape != snapshot.shape:
        raise ValueError(f"target_bytes shape {target.shape}, expected {snapshot.shape}")
    mask = np.asarray(snapshot.mask, dtype=bool) & np.isfinite(target)
    target = np.nan_to_num(target)
    cold = cold_bytes_by_type(snapshot).sum(axis=2)  # [H, G, ages], non-increasing in age
    usage = np.maximum(np.nan_to_num(snapshot.usage_bytes), 0.0)
    provisioned = np.where(snapshot.mask, snapshot.provisioned_bytes, 0.0)
    kept = usage[..., None] - cold  # non-decreasing in age
    top = kept[..., -1]

    # Headroom branch: T = T_max.
    needed = np.divide(target - top, provisioned, out=np.zeros_like(target), where=provisioned > 0)

    # Cold-age branch: the largest segment k (ages k, k+1) with kept[k] <= target, then
    # interpolate inside it; below kept[0] the smallest age.
    ages = len(OBS_IDLE_MS)
    below = kept <= target[..., None]  # [H, G, ages]; monotone: True then False... except flats
    lower = np.where(below.any(axis=-1), ages - 1 - np.argmax(below[..., ::-1], axis=-1), 0)
    lower = np.clip(lower, 0, ages - 2)
    lo = np.take_along_axis(kept, lower[..., None], axis=-1)[..., 0]
    hi = np.take_along_axis(kept, (lower + 1)[..., None], axis=-1)[..., 0]
    rise = hi - lo
    frac = np.divide(target - lo, rise, out=np.ones_like(target), where=rise > 0)
    frac = np.clip(frac, 0.0, 1.0)
    log_age = _LOG_AGES[lower] + frac * (_LOG_AGES[lower + 1] - _LOG_AGES[lower])
    age_action = cold_age_action_of_log(log_age)

    above_top = target >= top
    action = np.stack(
        [
            np.where(above_top, 1.0, np.clip(age_action, -1.0, 1.0)),
            np.where(above_top, headroom_action(needed), -1.0),
            np.full(target.shape, -1.0),
        ],
        axis=-1,
    )
    return np.where(mask[..., None], action, 0.0)


def reachable_target_range(snapshot: HostSnapshot) -> tuple[np.ndarray, np.ndarray]:
    """``([hosts, guests], [hosts, guests])``: the smallest and largest proposal an action can make."""
    cold = cold_bytes_by_type(snapshot).sum(axis=2)
    usage = np.maximum(np.nan_to_num(snapshot.usage_bytes), 0.0)
    provisioned = np.where(snapshot.mask, snapshot.provisioned_bytes, 0.0)
    low = np.clip(usage - cold[..., 0], 0.0, provisioned)
    high = np.clip(usage - cold[..., -1] + MAX_HEADROOM_FRAC * provisioned, 0.0, provisioned)
    return low, high


# --- recording ---------------------------------------------------------------------------------------


def _input_label(ref: InputRef) -> str:
    """A file-name-safe label of an input."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", ref.stem or "input")


def record_decisions(
    policy_name: str | Policy,
    inputs: Sequence[InputRef],
    duration_s: float,
    seed: int,
    out_dir: str | Path,
    *,
    record: Literal["proposal", "applied"] = "proposal",
    actor: str | Policy | None = None,
    control: ControlSpec | None = None,
) -> list[Path]:
    """Run a policy through the evaluator's loop on each input and record it as a trace with decisions.

    The loop is :func:`wsrl.eval.runner.evaluate_policy`'s (same setup, simulator and control stack:
    allocator and rails). Each step records the state the policy saw with the target the loop applied at it;
    a final row records the state after the last step (no decision), so a trace of ``n`` steps
    has ``n + 1`` samples per guest and ``n`` decisions.

    Args:
        policy_name: a registered policy name, an exported policy directory, or a policy object.
        inputs: the inputs (scenarios and traces).
        duration_s: simulated time per input, seconds (rounded up to whole steps).
        seed: the demand seed.
        out_dir: parent directory; input ``i`` goes to ``out_dir/<i>-<label>`` (a new trace).
        record: ``proposal`` (the policy's request, clipped into ``[floor, provisioned]``) or
            ``applied`` (the target after the allocator and rails); see the module docstring.
        actor: another policy that drives the simulation while ``policy_name`` only labels the
            states it visits (DAgger: the expert's decisions in the states the learner reaches,
            e.g. the overcommitted, refaulting states a perfect expert never gets into itself).
            ``None``: the recorded policy drives.
        control: allocator and rails (default: the production runner's defaults).

    Returns:
        The trace directories, in the order of ``inputs``.

    Raises:
        WsrlError: an unknown policy or input, or a trace directory that already holds samples.

    """
    from wsrl.eval.runner import policy_of
    from wsrl.inputs.replay import STATIC_META_KEY, static_meta
    from wsrl.inputs.setup import input_setup
    from wsrl.inputs.simulated import SimulatedHost
    from wsrl.policies import make_stack
    from wsrl.sim.record import step_table
    from wsrl.sim.simulator import Simulator
    from wsrl.trace.writer import TraceWriter, list_parts

    if not inputs:
        raise WsrlError("record_decisions: no inputs given")
    if record not in DECISION_KINDS:
        raise WsrlError(f"record_decisions: record={record!r}, choose from {', '.join(DECISION_KINDS)}")
    if not (duration_s > 0):
        raise WsrlError(f"record_decisions: duration_s must be > 0, got {duration_s}")
    out = Path(out_dir)
    written: list[Path] = []
    for index, ref in enumerate(inputs):
        policy = policy_of(policy_name) if isinstance(policy_name, str) else policy_name
        driver = None if actor is None else policy_of(actor) if isinstance(actor, str) else actor
        setup = input_setup(ref)
        directory = out / f"{index:02d}-{_input_label(ref)}"
        if directory.is_dir() and list_parts(directory):
            raise WsrlError(f"{directory}: already holds a trace; record into a new directory")
        sim = Simulator(setup)
        sim.reset(seed)
        host = SimulatedHost(sim)
        snapshot = host.snapshot()
        stack = make_stack(policy, control)
        stack.reset(snapshot)
        driving = stack if driver is None else make_stack(driver, control)
        if driver is not None:
            driving.reset(snapshot)
        steps = max(1, math.ceil(duration_s / sim.step_s))
        meta: dict[str, Any] = {
            **setup.meta,
            "scenario": setup.scenario,
            "seed": int(seed),
            "step_s": sim.step_s,
            "input": str(ref),
            "policy": policy.name,
            "actor": policy.name if driver is None else driver.name,
            "decision": record,
            STATIC_META_KEY: static_meta(setup),
        }
        with TraceWriter(
            directory,
            source="sim",
            description=f"decisions of policy {policy.name} on {ref}, seed {seed}",
            meta=meta,
            flush_rows=50_000,
        ) as writer:
            for _ in range(steps):
                decision = stack.step(snapshot)
                recorded = (
                    decision.target_bytes
                    if record == "applied"
                    else np.clip(decision.proposal_bytes, snapshot.floor_bytes, snapshot.provisioned_bytes)
                )
                writer.append_table(step_table(sim, action_target_bytes=recorded, action_policy=policy.name))
                sim.step(decision.target_bytes if driver is None else driving.step(snapshot).target_bytes)
                snapshot = host.snapshot()
            writer.append_table(step_table(sim))
        written.append(directory)
    return written


# --- the dataset ---------------------------------------------------------------------------------------


@dataclass
class GuestTrajectory:
    """One guest's run of consecutive samples on one host of a trace.

    Attributes:
        trace: the trace directory.
        host: the host.
        guest: the guest.
        time_ms: ``[T + 1]`` sample times.
        observations: ``[T + 1, FEATURE_COUNT]`` the guest's observation rows.
        actions: ``[T, ACTION_DIM]`` the recorded decisions as actions (:func:`target_to_action`).
        target_bytes: ``[T]`` the recorded decisions.
        rewards: ``[T]`` the per-guest reward of each step (:func:`wsrl.rl.reward.reward_terms`).
        policy: the recorded policy's name.
        reward_terms: ``[T]`` each weighted reward term of each step, by name.

    """

    trace: str
    host: str
    guest: str
    time_ms: np.ndarray
    observations: np.ndarray
    actions: np.ndarray
    target_bytes: np.ndarray
    rewards: np.ndarray
    policy: str | None = None
    reward_terms: dict[str, np.ndarray] = field(default_factory=dict)


def guest_trajectories(
    trace_dir: str | Path, *, reward_weights: RewardWeights | None = None
) -> list[GuestTrajectory]:
    """Every guest's trajectories in a trace recorded with decisions, host by host, guests in name order.

    A guest's samples split into one trajectory per run of consecutive samples it is present in
    (a gapless recording: one per guest). Observations come from one ObservationBuilder fed every
    snapshot of the host in order; every sample of a trajectory but its last must carry a decision.

    Raises:
        WsrlError: not a trace, a sample the replay cannot use, no decisions at all, or a decision
            missing inside a trajectory (one line naming the trace, guest and time).

    """
    from wsrl.inputs.replay import read_trace_host, trace_host_names
    from wsrl.rl.reward import RewardWeights, reward_terms

    weights = reward_weights if reward_weights is not None else RewardWeights()
    trajectories: list[GuestTrajectory] = []
    for host in trace_host_names(trace_dir):
        replay = read_trace_host(trace_dir, host)
        builder = ObservationBuilder()
        times = len(replay)
        slots = len(replay.guest_names)
        obs = np.zeros((times, slots, FEATURE_COUNT), dtype=np.float32)
        actions = np.zeros((times, slots, ACTION_DIM))
        targets = np.full((times, slots), np.nan)
        term_names: list[str] = []
        terms = np.zeros((0,))
        previous: HostSnapshot | None = None
        for t, snapshot in enumerate(replay.snapshots()):
            obs[t] = (builder.reset(snapshot) if t == 0 else builder.build(snapshot))[0]
            recorded = np.asarray(snapshot.extra["action_target_bytes"], dtype=float)
            targets[t] = recorded[0]
            actions[t] = target_to_action(recorded, snapshot)[0]
            if previous is not None:
                step_terms = reward_terms(previous, snapshot, weights)
                if not term_names:
                    term_names = list(step_terms)
                    terms = np.zeros((len(term_names), times, slots))
                for k, name in enumerate(term_names):
                    terms[k, t - 1] = step_terms[name][0]
            previous = snapshot
        present = replay.present
        for g, guest in enumerate(replay.guest_names):
            rows = np.flatnonzero(present[:, g])
            if rows.size == 0:
                continue
            runs = np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1)
            for run in runs:
                if run.size < 2:
                    continue
                steps = run[:-1]
                undecided = steps[~np.isfinite(targets[steps, g])]
                if undecided.size:
                    raise WsrlError(
                        f"{replay.directory}: guest {guest!r} of host {host!r} has no action_target_bytes "
                        f"at time_ms {int(replay.times_ms[undecided[0]])} (record with record_decisions)"
                    )
                trajectories.append(
                    GuestTrajectory(
                        trace=str(replay.directory),
                        host=host,
                        guest=guest,
                        time_ms=replay.times_ms[run].copy(),
                        observations=obs[run, g].copy(),
                        actions=actions[steps, g].astype(np.float32),
                        target_bytes=targets[steps, g].copy(),
                        rewards=terms[:, steps, g].sum(axis=0) if term_names else np.zeros(steps.size),
                        policy=replay.action_policy[int(steps[0])],
                        reward_terms={name: terms[k, steps, g].copy() for k, name in enumerate(term_names)},
                    )
                )
    return trajectories


def bc_dataset(trace_dirs: Sequence[str | Path]) -> tuple[np.ndarray, np.ndarray]:
    """``(obs [N, FEATURE_COUNT] float32, actions [N, ACTION_DIM] float32)`` from recorded decisions.

    Every sample with a recorded decision becomes one pair: its observation row (one
    ObservationBuilder per host, fed in time order) and :func:`target_to_action` of the decision.

    Raises:
        WsrlError: a trace cannot be replayed, or the traces hold no decisions at all.

    """
    from wsrl.inputs.replay import read_trace_host, trace_host_names

    obs_parts: list[np.ndarray] = []
    action_parts: list[np.ndarray] = []
    for trace_dir in trace_dirs:
        for host in trace_host_names(trace_dir):
            builder = ObservationBuilder()
            for t, snapshot in enumerate(read_trace_host(trace_dir, host).snapshots()):
                obs = builder.reset(snapshot) if t == 0 else builder.build(snapshot)
                recorded = np.asarray(snapshot.extra["action_target_bytes"], dtype=float)
                decided = np.asarray(snapshot.mask, dtype=bool) & np.isfinite(recorded)
                if decided.any():
                    obs_parts.append(obs[decided])
                    action_parts.append(target_to_action(recorded, snapshot)[decided])
    if not obs_parts:
        names = ", ".join(str(d) for d in trace_dirs) or "(none)"
        raise WsrlError(f"{names}: no sample has action_target_bytes; record traces with record_decisions")
    return (
        np.concatenate(obs_parts).astype(np.float32),
        np.concatenate(action_parts).astype(np.float32),
    )


# --- fitting -------------------------------------------------------------------------------------------


def deterministic_action(model: BaseAlgorithm, obs: Any) -> Any:
    """The torch tensor of an SB3 PPO or SAC policy's deterministic action for ``[N, F]`` observations.

    PPO: the Gaussian's mean (what ``predict(deterministic=True)`` returns before clipping). SAC:
    the actor's squashed mean (``tanh``). Differentiable, for :func:`behaviour_clone`.

    Raises:
        WsrlError: another algorithm (recurrent policies need sequences: not supported).

    """
    import torch
    from stable_baselines3 import PPO, SAC

    if isinstance(model, SAC):
        return model.policy.actor(obs, deterministic=True)
    if isinstance(model, PPO):
        distribution = model.policy.get_distribution(obs).distribution
        assert isinstance(distribution, torch.distributions.Normal), type(distribution)  # a Box action
        return distribution.mean
    raise WsrlError(
        f"behaviour cloning supports PPO and SAC models, not {type(model).__name__} (recurrent policies "
        "need whole sequences)"
    )


@dataclass
class CloneResult:
    """What :func:`behaviour_clone` did: per-epoch training MSE and the final MSE on all samples."""

    epoch_mse: list[float]
    final_mse: float
    samples: int


def behaviour_clone(
    model: BaseAlgorithm,
    obs: np.ndarray,
    actions: np.ndarray,
    epochs: int = 50,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
) -> CloneResult:
    """Fit ``model``'s deterministic action to ``actions`` (MSE, Adam), in place.

    Trains the parameters the deterministic action depends on (PPO: the shared feature extractor
    and the actor; SAC: the actor), in ``model.policy``'s training mode, on its device. Targets are
    the actions in ``[-1, 1]``; PPO's unclipped mean is fitted directly (deterministic actions are
    clipped to the action space afterwards).

    Args:
        model: an SB3 PPO or SAC model with :func:`wsrl.rl.spaces` per-guest spaces.
        obs: ``[N, FEATURE_COUNT]`` observations.
        actions: ``[N, ACTION_DIM]`` target actions.
        epochs: passes over the data.
        batch_size: samples per gradient step.
        lr: Adam learning rate.
        seed: shuffling and torch seed.

    Raises:
        WsrlError: the model's algorithm is not supported, or the arrays do not fit the spaces.

    """
    import torch

    obs = np.asarray(obs, dtype=np.float32)
    actions = np.asarray(actions, dtype=np.float32)
    if obs.ndim != 2 or obs.shape[1] != FEATURE_COUNT:
        raise WsrlError(f"behaviour_clone: obs shape {obs.shape}, expected [N, {FEATURE_COUNT}]")
    if actions.shape != (obs.shape[0], ACTION_DIM):
        raise WsrlError(
            f"behaviour_clone: actions shape {actions.shape}, expected [{obs.shape[0]}, {ACTION_DIM}]"
        )
    if obs.shape[0] == 0:
        raise WsrlError("behaviour_clone: no samples")
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise WsrlError(
            f"behaviour_clone: epochs {epochs}, batch_size {batch_size} and lr {lr} must be positive"
        )
    deterministic_action(model, model.policy.obs_to_tensor(obs[:1])[0])  # checks the algorithm
    device = model.policy.device
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    obs_t = torch.as_tensor(obs, device=device)
    act_t = torch.as_tensor(actions, device=device)
    from stable_baselines3 import SAC

    trained = model.policy.actor if isinstance(model, SAC) else model.policy
    parameters = list(trained.parameters())
    optimizer = torch.optim.Adam(parameters, lr=lr)
    model.policy.set_training_mode(True)
    history: list[float] = []
    n = obs.shape[0]
    for _ in range(epochs):
        order = torch.as_tensor(rng.permutation(n), device=device)
        total = 0.0
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            predicted = deterministic_action(model, obs_t[index])
            loss = torch.nn.functional.mse_loss(predicted, act_t[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * index.numel()
        history.append(total / n)
    model.policy.set_training_mode(False)
    with torch.no_grad():
        predicted = deterministic_action(model, obs_t).clamp(-1.0, 1.0)
        final = float(torch.nn.functional.mse_loss(predicted, act_t))
    return CloneResult(epoch_mse=history, final_mse=final, samples=n)
