"""The training reward: the evaluation metrics, per guest and per step, with weights from config.

Each term mirrors a metric of ``docs/metrics.md`` so that what the agent is paid for is what
``wsrl eval`` reports:

=============  ===============================================================================
``saved``      ``+ w * (1 - visible / provisioned)``: memory handed back (``memory_saved_frac``)
``violation``  ``- w`` when the step's refaults exceed the SLO budget (``violation_frac``)
``refault``    ``- w * min(refaults / budget, 10)``: a smooth signal below and above the budget
``oom``        ``- w`` per OOM kill (``oom_events``); weighted far above everything else
``churn``      ``- w * |target change| / provisioned`` (``churn``)
``unfairness`` ``- w * |slowdown - host mean slowdown|`` (what ``jain_fairness`` measures)
``asked``      ``+ w * (1 - proposal / provisioned)``: memory the policy *asked* to give back
``breaker``    ``- w`` when the step tripped the guest's circuit breaker (a refault, PSI or OOM spike
               the production rails answer by deflating the guest and handing it to the fallback)
``team``       ``w * (host mean of the terms above - this guest's sum of them)``, ``w`` in [0, 1]
=============  ===============================================================================

Why ``team``: each guest's terms pay it for its own outcome only, yet on a full host one guest's
outcome is made by the others' proposals: a web container that keeps idle pages it does not need
costs nothing in its own terms, while the bursting container that the allocator squeezes to make
room pays the violation. With ``team = w`` a guest's reward is ``(1 - w) * own + w * host mean``
(the cooperative reward of multi-agent RL), so giving room to a neighbour pays. On a host with room
the host mean moves with every guest's own terms, so nothing else changes. Off (0) by default.

Why ``breaker``: the stack trains under the production rails, and the breaker is a safety net a
policy can lean on: squeezed past what it touches, a guest refaults, the breaker deflates it at
once and keeps it on the fallback for the cooldown, so the violation lasts a step or two and the
savings before it were paid for. On a host each trip is an incident (and ten minutes of no
savings); the term makes it one for the learner too. Recorded traces carry no trips (0).

Why ``asked``: on an overcommitted host the allocator, not the policy, sets every guest's size while
proposals exceed capacity, so ``saved`` does not move when a policy asks for less, and a learner sees
no reason to ask below its share (what the oracle does). ``asked`` rewards the proposal itself; it
equals ``saved`` wherever the host has room. Off (0) by default; the shipped config sets it.

The budget is the default SLO's: refaults under 0.2 % of the working set per minute (the working
set read off the histogram at 120 s). A step is judged on its own refaults, which is stricter than
the metric's 60 s intervals (a minute breaks the SLO only if its steps do on average).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from wsrl.inputs.simulated import exact_snapshot
from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.slo import PROMOTION_BUDGET_FRAC_PER_MIN
from wsrl.units import PAGE_BYTES

REWARD_TERMS: tuple[str, ...] = (
    "saved",
    "violation",
    "refault",
    "oom",
    "churn",
    "unfairness",
    "asked",
    "breaker",
    "team",
)
"""Reward components, each reported per guest in ``info["reward_terms"]``."""


class RewardWeights(BaseModel):
    """Weights of the reward terms (``[reward]`` in an agent config)."""

    model_config = ConfigDict(extra="forbid")

    saved: float = Field(1.0, ge=0)
    violation: float = Field(2.0, ge=0)
    refault: float = Field(0.05, ge=0)
    oom: float = Field(20.0, ge=0)
    churn: float = Field(0.5, ge=0)
    unfairness: float = Field(1.0, ge=0)
    asked: float = Field(0.0, ge=0)
    breaker: float = Field(10.0, ge=0)
    team: float = Field(0.0, ge=0, le=1)


def reward_terms(
    before: HostSnapshot,
    after: HostSnapshot,
    weights: RewardWeights,
    proposal_bytes: np.ndarray | None = None,
    breaker_tripped: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Weighted reward terms of the step from ``before`` to ``after``, each ``[hosts, guests]``.

    ``proposal_bytes`` is what the policy proposed for the step (default: the target in force after
    it, for recorded traces that keep no proposal); ``breaker_tripped`` where the step tripped a
    guest's circuit breaker (default: none). Padding slots are 0 in every term. The reward
    is the sum of the terms.
    """
    mask = after.mask
    provisioned = np.where(mask, after.provisioned_bytes, 0.0)
    inv_prov = np.divide(1.0, provisioned, out=np.zeros(mask.shape), where=provisioned > 0)
    dt_s = max((int(after.time_ms) - int(before.time_ms)) / 1000.0, 1e-3)

    refaults = np.maximum(after.refault_total - before.refault_total, 0.0)
    # The exact ages, whatever the guests' histogram sources show the policy (wsrl.sim.observed).
    working_set = np.maximum(exact_snapshot(after).working_set_bytes(), PAGE_BYTES)
    ratio = refaults * PAGE_BYTES * (60.0 / dt_s) / (PROMOTION_BUDGET_FRAC_PER_MIN * working_set)
    ooms = np.maximum(after.oom_kills_total - before.oom_kills_total, 0).astype(float)
    asked = np.nan_to_num(after.target_bytes if proposal_bytes is None else proposal_bytes, nan=0.0)
    stall = np.clip((after.psi_some_total_s - before.psi_some_total_s) / dt_s, 0.0, 1.0 - 1e-6)
    slowdown = np.where(mask, 1.0 / (1.0 - stall), 0.0)
    guests = np.maximum(mask.sum(axis=1, keepdims=True), 1)
    mean_slowdown = slowdown.sum(axis=1, keepdims=True) / guests

    terms = {
        "saved": weights.saved * (1.0 - after.visible_bytes * inv_prov),
        "violation": -weights.violation * (ratio > 1.0),
        "refault": -weights.refault * np.minimum(ratio, 10.0),
        "oom": -weights.oom * ooms,
        "churn": -weights.churn * np.abs(after.target_bytes - before.target_bytes) * inv_prov,
        "unfairness": -weights.unfairness * np.abs(slowdown - mean_slowdown),
        "asked": weights.asked * (1.0 - np.clip(asked, 0.0, provisioned) * inv_prov),
        "breaker": -weights.breaker * (0.0 if breaker_tripped is None else breaker_tripped.astype(float)),
    }
    terms = {name: np.where(mask, value, 0.0) for name, value in terms.items()}
    own = sum(terms.values())
    host_mean = own.sum(axis=1, keepdims=True) / guests
    terms["team"] = np.where(mask, weights.team * (host_mean - own), 0.0)
    return terms
