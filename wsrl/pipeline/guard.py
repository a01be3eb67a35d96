"""The safety guard: the last step before an actuator, bounding how fast sizes move.

Evaluation runs policies with the guard's defaults (sizes within ``[floor, provisioned]``, no rate
limit), so each policy is judged as published; the production runner configures the rails an
operator wants (issue 6 adds staleness checks, circuit breakers and fallbacks on top).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsrl.pipeline.snapshot import HostSnapshot


@dataclass
class Guarded:
    """Targets after the guard, and which ones it changed (arrays ``[hosts, guests]``)."""

    target_bytes: np.ndarray
    shrink_limited: np.ndarray
    growth_limited: np.ndarray


class Guard:
    """Bound shrinking and growth per second, relative to the current target.

    Args:
        max_shrink_frac_per_s: at most this fraction of the provisioned size given back per
            second (``None``: unbounded).
        max_growth_frac_per_s: at most this fraction of the provisioned size added per second
            (``None``: unbounded; growing fast is the safe direction).

    """

    def __init__(
        self, max_shrink_frac_per_s: float | None = None, max_growth_frac_per_s: float | None = None
    ) -> None:
        limits = {"max_shrink_frac_per_s": max_shrink_frac_per_s}
        limits["max_growth_frac_per_s"] = max_growth_frac_per_s
        for name, value in limits.items():
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None, got {value}")
        self.max_shrink_frac_per_s = max_shrink_frac_per_s
        self.max_growth_frac_per_s = max_growth_frac_per_s

    def apply(self, allotted_bytes: np.ndarray, snapshot: HostSnapshot) -> Guarded:
        """Bound the move from the snapshot's current targets to ``allotted_bytes``."""
        current = snapshot.target_bytes
        target = allotted_bytes.copy()
        shrink_limited = np.zeros(snapshot.shape, dtype=bool)
        growth_limited = np.zeros(snapshot.shape, dtype=bool)
        if self.max_shrink_frac_per_s is not None:
            lowest = current - self.max_shrink_frac_per_s * snapshot.interval_s * snapshot.provisioned_bytes
            shrink_limited = snapshot.mask & (target < lowest)
            target = np.maximum(target, lowest)
        if self.max_growth_frac_per_s is not None:
            highest = current + self.max_growth_frac_per_s * snapshot.interval_s * snapshot.provisioned_bytes
            growth_limited = snapshot.mask & (target > highest)
            target = np.minimum(target, highest)
        target = np.clip(target, snapshot.floor_bytes, snapshot.provisioned_bytes)
        return Guarded(
            target_bytes=np.where(snapshot.mask, target, 0.0),
            shrink_limited=shrink_limited,
            growth_limited=growth_limited,
        )
