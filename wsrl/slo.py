"""The service-level objective every guest is held to: defined here, once, for every layer.

The defaults are Google's far-memory target (Lagar-Cavilla et al., ASPLOS 2019): promotions
(refaults) under 0.2 % of the working set per minute, the working set being the memory touched
within 120 s. The evaluator checks it per interval (:mod:`wsrl.eval.metrics`), the observation
builder scales refault features by its budget, and the ``far-memory`` and ``oracle`` policies plan
against it. This module imports only the standard library, so every layer may use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WORKING_SET_WINDOW_MS = 120_000
"""Memory touched within this window is the working set (Google far memory, ASPLOS'19)."""

PROMOTION_BUDGET_FRAC_PER_MIN = 0.002
"""The largest refault (promotion) rate allowed, as a share of the working set per minute
(0.002 = 0.2 %/min)."""

SLO_INTERVAL_S = 60.0
"""Length of one SLO interval, seconds: the budget is per minute, so it is checked per minute."""


@dataclass(frozen=True)
class Slo:
    """A guest's service-level objective, checked per interval (see the module docstring).

    Attributes:
        promotion_frac_per_min: the largest refault rate allowed, as a share of the working set
            per minute (0.002 = 0.2 %/min).
        working_set_window_ms: memory touched within this window is the working set (read off the
            histogram, plus unevictable memory).
        interval_s: the length of an SLO interval, seconds.
        oom_violates: an OOM kill in an interval breaks the SLO.

    """

    promotion_frac_per_min: float = PROMOTION_BUDGET_FRAC_PER_MIN
    working_set_window_ms: int = WORKING_SET_WINDOW_MS
    interval_s: float = SLO_INTERVAL_S
    oom_violates: bool = True

    def __post_init__(self) -> None:
        if not (self.promotion_frac_per_min >= 0 and math.isfinite(self.promotion_frac_per_min)):
            raise ValueError(
                f"promotion_frac_per_min must be finite and >= 0, got {self.promotion_frac_per_min}"
            )
        if not self.working_set_window_ms > 0:
            raise ValueError(f"working_set_window_ms must be > 0, got {self.working_set_window_ms}")
        if not (self.interval_s >= 0.001 and math.isfinite(self.interval_s)):
            raise ValueError(f"interval_s must be finite and >= 0.001, got {self.interval_s}")

    @property
    def interval_ms(self) -> int:
        """The interval in whole milliseconds."""
        return round(self.interval_s * 1000.0)


DEFAULT_SLO = Slo()
"""The default SLO (the module docstring's numbers)."""
