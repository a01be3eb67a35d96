"""Fair allocation: turn proposals into sizes that fit the host, by shares and tiers, above floors.

Every policy runs through the same allocator, so every policy is fair by construction. Per host:

1. each proposal is clipped into ``[floor, provisioned]``;
2. if the clipped proposals fit in ``capacity - reserve`` they are granted as they are;
3. otherwise every guest first gets its floor, and what remains is water-filled over the part of
   each proposal above its floor: guest ``i`` gets ``min(ask_i, level * weight_i)`` with one
   ``level`` per host chosen so the host is exactly full (weighted max-min fairness).

Weights are ``shares * TIER_WEIGHTS[tier]`` in ``max-min`` mode. In ``idle-tax`` mode they follow
VMware ESX's idle memory tax (Waldspurger, OSDI 2002): a guest's shares count per page, with idle
pages costing ``k = 1 / (1 - tax)`` times an active one, so ``weight = shares * tier_weight /
(f + k (1 - f))`` where ``f`` is the guest's active fraction (working set / visible size). Idle
guests then give memory back first. If the floors alone exceed the host, guests get their floors
and the host is reported as over-committed (floors are a promise the allocator does not break).

A guest may also hold a *claim* (an open circuit breaker's protection, a size it was OOM-killed
at): claims are granted after the floors and before any other proposal, water-filled the same way
when they alone do not fit, so a protected guest is protected with memory taken from the others
and never with memory the host does not have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from wsrl.pipeline.snapshot import HostSnapshot

TIER_WEIGHTS = np.array([4.0, 2.0, 1.0])
"""Weight multiplier per SLO tier (gold, silver, bronze): a gold guest counts as four bronze ones."""
DEFAULT_IDLE_TAX = 0.75
"""ESX's default idle memory tax: an idle page costs as much as four active ones."""
_WATER_FILL_STEPS = 60


@dataclass
class Allocation:
    """What the allocator granted, and why it differs from the proposal (arrays ``[hosts, guests]``).

    Attributes:
        allotted_bytes: the granted guest-visible sizes.
        raised_to_floor: the proposal was below the guest's floor.
        capped_at_provisioned: the proposal was above what the guest was promised.
        squeezed: the host was full and the guest got less than its (clipped) proposal.
        floors_exceed_host: ``[hosts]``: the floors alone do not fit in capacity - reserve.
        raised_to_claim: the guest's claim (an open breaker, a remembered OOM) was above its
            proposal and raised its grant.

    """

    allotted_bytes: np.ndarray
    raised_to_floor: np.ndarray
    capped_at_provisioned: np.ndarray
    squeezed: np.ndarray
    floors_exceed_host: np.ndarray
    raised_to_claim: np.ndarray | None = None


class Allocator:
    """Weighted max-min fair allocation under host capacity (see the module docstring).

    Args:
        mode: ``max-min`` (weights = shares x tier weight) or ``idle-tax`` (ESX idle memory tax).
        idle_tax: the tax rate in ``idle-tax`` mode, in [0, 1).

    """

    def __init__(self, mode: Literal["max-min", "idle-tax"] = "max-min", idle_tax: float = DEFAULT_IDLE_TAX):
        if mode not in ("max-min", "idle-tax"):
            raise ValueError(f"allocator mode must be 'max-min' or 'idle-tax', got {mode!r}")
        if not 0.0 <= idle_tax < 1.0:
            raise ValueError(f"idle_tax must be in [0, 1), got {idle_tax}")
        self.mode = mode
        self.idle_tax = idle_tax

    def weights(self, snapshot: HostSnapshot) -> np.ndarray:
        """``[hosts, guests]`` allocation weights."""
        weight = snapshot.shares * TIER_WEIGHTS[np.clip(snapshot.tier, 0, len(TIER_WEIGHTS) - 1)]
        if self.mode == "idle-tax":
            k = 1.0 / (1.0 - self.idle_tax)
            active = np.divide(
                snapshot.working_set_bytes(),
                snapshot.visible_bytes,
                out=np.ones(snapshot.shape),
                where=snapshot.visible_bytes > 0,
            )
            active = np.clip(active, 0.0, 1.0)
            weight = weight / (active + k * (1.0 - active))
        return np.where(snapshot.mask, weight, 0.0)

    def allocate(
        self, proposal_bytes: np.ndarray, snapshot: HostSnapshot, claim_bytes: np.ndarray | None = None
    ) -> Allocation:
        """Grant sizes for ``proposal_bytes`` (``[hosts, guests]``) on the snapshot's hosts.

        ``claim_bytes`` (``[hosts, guests]``, 0 or NaN where none): sizes granted before any
        proposal above a floor (see the module docstring); a guest's grant is at least its claim
        wherever the host holds the claims.
        """
        mask = snapshot.mask
        floor = np.where(mask, np.minimum(snapshot.floor_bytes, snapshot.provisioned_bytes), 0.0)
        ceiling = np.where(mask, snapshot.provisioned_bytes, 0.0)
        # A NaN proposal holds the guest's current target (garbage never shrinks anyone); +-inf
        # clip to the ceiling and the floor like any other out-of-range proposal.
        held = np.where(np.isnan(proposal_bytes), snapshot.target_bytes, proposal_bytes)
        proposal = np.where(mask, held, 0.0)
        claim = floor
        if claim_bytes is not None:
            claim = np.where(mask, np.clip(np.nan_to_num(claim_bytes), floor, ceiling), 0.0)
        clipped = np.clip(proposal, floor, ceiling)
        asked = np.maximum(clipped, claim)
        available = (snapshot.capacity_bytes - snapshot.reserve_bytes)[:, None]
        floors_total = floor.sum(axis=1, keepdims=True)
        over = asked.sum(axis=1, keepdims=True) > available
        allotted = asked
        if over.any():
            weights = self.weights(snapshot)
            room = np.maximum(available - floors_total, 0.0)
            least = claim - floor
            claims_fit = least.sum(axis=1, keepdims=True) <= room
            extra = np.where(
                claims_fit,
                _water_fill(asked - floor, weights, room, least),
                _water_fill(least, weights, room),
            )
            allotted = np.where(over, floor + extra, asked)
        return Allocation(
            allotted_bytes=allotted,
            raised_to_floor=mask & (proposal < floor),
            capped_at_provisioned=mask & (proposal > ceiling),
            squeezed=mask & (allotted < asked * (1 - 1e-12)),
            floors_exceed_host=(floors_total > available)[:, 0],
            raised_to_claim=mask & (claim > clipped) & (allotted > clipped),
        )


def _water_fill(
    ask: np.ndarray, weight: np.ndarray, room: np.ndarray, least: np.ndarray | None = None
) -> np.ndarray:
    """Per row, ``min(ask, max(least, level * weight))`` with ``level`` such that the row sums to ``room``.

    Rows whose asks fit get their asks. Guests with zero weight get nothing beyond ``least`` (0 by
    default; ``least <= ask`` and the row's ``least`` must fit in its room). The level is found by
    bisection on a log scale, the same for every row, all rows at once.
    """
    least = np.zeros_like(ask) if least is None else least
    total = ask.sum(axis=1, keepdims=True)
    fits = total <= room
    positive = weight > 0
    ratio = np.divide(ask, weight, out=np.zeros_like(ask), where=positive)
    hi = np.maximum(ratio.max(axis=1, keepdims=True), 1e-300)
    lo = np.zeros_like(hi)
    for _ in range(_WATER_FILL_STEPS):
        mid = 0.5 * (lo + hi)
        filled = np.minimum(ask, np.maximum(least, mid * weight)).sum(axis=1, keepdims=True)
        too_much = filled > room
        hi = np.where(too_much, mid, hi)
        lo = np.where(too_much, lo, mid)
    level = lo * weight
    granted = np.minimum(ask, np.maximum(least, level))
    # Hand out the bisection's last crumbs in proportion to weight among guests on the level (below
    # their ask, above their least), so that the host is filled exactly.
    left = room - granted.sum(axis=1, keepdims=True)
    open_weight = np.where((granted < ask) & (level >= least), weight, 0.0)
    open_total = open_weight.sum(axis=1, keepdims=True)
    top_up = np.divide(left * open_weight, open_total, out=np.zeros_like(ask), where=open_total > 0)
    granted = np.minimum(ask, granted + np.maximum(top_up, 0.0))
    return np.where(fits, ask, granted)
