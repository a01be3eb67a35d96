"""The control loop: snapshot -> policy -> fair allocation -> guard -> targets, for any backend."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsrl.pipeline.allocator import Allocation, Allocator
from wsrl.pipeline.guard import Guard, Guarded
from wsrl.pipeline.policy import Policy
from wsrl.pipeline.snapshot import HostSnapshot


@dataclass
class Decision:
    """One pass of the loop: what the policy proposed, what the allocator and guard made of it."""

    proposal_bytes: np.ndarray
    allocation: Allocation
    guarded: Guarded

    @property
    def target_bytes(self) -> np.ndarray:
        """``[hosts, guests]`` the sizes to apply."""
        return self.guarded.target_bytes


class ControlLoop:
    """Runs a policy through the shared allocator and guard.

    Args:
        policy: any :class:`~wsrl.pipeline.policy.Policy`.
        allocator: defaults to weighted max-min.
        guard: defaults to sizes within ``[floor, provisioned]`` and no rate limit.

    """

    def __init__(self, policy: Policy, *, allocator: Allocator | None = None, guard: Guard | None = None):
        self.policy = policy
        self.allocator = allocator or Allocator()
        self.guard = guard or Guard()

    def reset(self, snapshot: HostSnapshot) -> None:
        """Start over from ``snapshot``."""
        self.policy.reset(snapshot)

    def step(self, snapshot: HostSnapshot) -> Decision:
        """Decide the next targets for every guest of the snapshot."""
        proposal = np.asarray(self.policy.decide(snapshot), dtype=float)
        if proposal.shape != snapshot.shape:
            raise ValueError(
                f"policy {self.policy.name!r} proposed shape {proposal.shape}, expected {snapshot.shape}"
            )
        allocation = self.allocator.allocate(proposal, snapshot)
        guarded = self.guard.apply(allocation.allotted_bytes, snapshot)
        return Decision(proposal_bytes=proposal, allocation=allocation, guarded=guarded)
