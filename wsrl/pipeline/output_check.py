"""The policy's output check: a proposal that looks wrong is not acted on.

A learned model can fail without raising: a corrupted weight file, a numeric blow-up or an input
far outside what it was trained on gives NaN, a negative size or a sudden leap. SOL (Wang et al.,
ASPLOS 2022) makes the point for learned resource controllers: assess the model's outputs online and
fall back to a safe policy while they look wrong. :class:`OutputCheck` does this per guest, every
step, in the one control stack (:mod:`wsrl.pipeline.control`), so training, evaluation and
production judge outputs alike:

* a proposal that is not finite, or negative, is rejected;
* a proposal more than ``max_jump_frac`` of the guest's provisioned size below the policy's
  previous proposal for it is rejected until the next proposal confirms it (is not that far below
  it): a single wild output never shrinks a guest, a real change of mind acts one step late, and
  the rate rail then paces it. A jump up acts at once: growing is the safe direction, and the host
  reserve bounds it.

A rejected guest is decided by the fallback policy for that step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsrl.pipeline.rails import Array
from wsrl.pipeline.snapshot import HostSnapshot

OK, NOT_FINITE, NEGATIVE, JUMP = 0, 1, 2, 3
"""Why a proposal was rejected (:attr:`OutputVerdict.cause`)."""


@dataclass
class OutputVerdict:
    """One step's check (arrays ``[hosts, guests]``).

    Attributes:
        cause: :data:`OK`, :data:`NOT_FINITE`, :data:`NEGATIVE` or :data:`JUMP` per guest.
        jump_frac: how far each proposal fell below the previous one, as a share of provisioned
            (negative: it rose; NaN where there is no previous proposal).
        max_jump_frac: the check's bound (``None``: no jump check).

    """

    cause: Array
    jump_frac: Array
    max_jump_frac: float | None

    @property
    def rejected(self) -> Array:
        """Guests whose proposal is not acted on this step."""
        rejected: Array = self.cause != OK
        return rejected

    def reason(self, h: int, g: int) -> str:
        """Why guest ``(h, g)`` was rejected (``""``: it was not)."""
        cause = int(self.cause[h, g])
        if cause == NOT_FINITE:
            return "proposal is not a finite number"
        if cause == NEGATIVE:
            return "proposal is negative"
        if cause == JUMP:
            return (
                f"proposal fell {self.jump_frac[h, g]:.0%} of provisioned below the previous one "
                f"(> {self.max_jump_frac:.0%}): acted on when the next one confirms it"
            )
        return ""

    def summary(self, policy_name: str) -> str | None:
        """One line for the step's errors (``None``: nothing rejected)."""
        rejected = np.argwhere(self.rejected)
        if len(rejected) == 0:
            return None
        h, g = (int(i) for i in rejected[0])
        more = f" and {len(rejected) - 1} more" if len(rejected) > 1 else ""
        reason = self.reason(h, g)
        return f"policy {policy_name!r} output rejected for guest {g}{more}: {reason}; the fallback decides"


class OutputCheck:
    """Checks a policy's proposals step after step (see the module docstring).

    Args:
        max_jump_frac: the largest fall between consecutive proposals, as a share of provisioned,
            acted on without confirmation (``None``: only non-finite and negative proposals are
            rejected).

    """

    def __init__(self, max_jump_frac: float | None) -> None:
        self.max_jump_frac = max_jump_frac
        self._previous_frac: Array | None = None

    def reset(self) -> None:
        """Forget the previous proposals (a new episode, or a new policy)."""
        self._previous_frac = None

    def check(self, proposal_bytes: Array, snapshot: HostSnapshot) -> OutputVerdict:
        """Judge ``proposal_bytes`` (``[hosts, guests]``) for the guests of ``snapshot``."""
        mask = np.asarray(snapshot.mask, dtype=bool)
        proposal = np.asarray(proposal_bytes, dtype=float)
        finite = np.isfinite(proposal)
        cause = np.where(mask & ~finite, NOT_FINITE, OK)
        with np.errstate(invalid="ignore"):
            cause = np.where(mask & finite & (proposal < 0), NEGATIVE, cause)
        jump_frac = np.full(mask.shape, np.nan)
        if self.max_jump_frac is not None:
            provisioned = np.asarray(snapshot.provisioned_bytes, dtype=float)
            with np.errstate(invalid="ignore", divide="ignore"):
                frac = np.where(mask & finite & (provisioned > 0), proposal / provisioned, np.nan)
            previous = self._previous_frac
            if previous is None or previous.shape != frac.shape:
                previous = np.full(frac.shape, np.nan)
            jump_frac = previous - frac
            with np.errstate(invalid="ignore"):
                cause = np.where((cause == OK) & (jump_frac > self.max_jump_frac), JUMP, cause)
            # Every finite output is remembered, a rejected jump too: the next one may confirm it.
            self._previous_frac = np.where(np.isfinite(frac), frac, previous)
        return OutputVerdict(
            cause=cause.astype(np.int8), jump_frac=jump_frac, max_jump_frac=self.max_jump_frac
        )
