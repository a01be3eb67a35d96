"""The runner's input health: which readings it trusts, and when a decision is too old to apply.

The rails themselves (hold, breaker, OOM memory, rate, host reserve, floor) are part of the one
control stack (:mod:`wsrl.pipeline.rails`, :class:`wsrl.pipeline.control.ControlStack`), shared with
training and evaluation. What stays here needs live readings and the runner's clocks:

1. :func:`check_inputs`: a reading that is missing, stale or malformed is not trusted;
2. :class:`InputHealth`: a guest with untrusted input is held at its last target for
   ``hold_intervals`` ticks (state ``HOLD``), then handed to the fallback policy (``FALLBACK``);
3. :meth:`~wsrl.inputs.live.ReadingArrays.signals`: the trusted readings' counters as the circuit
   breaker's signals;
4. :func:`expiry_reason`: a decision whose inputs are older than ``decision_expiry_s`` is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsrl.inputs.live import ReadingArrays
from wsrl.pipeline.rails import FALLBACK, HOLD, OK

__all__ = [
    "FALLBACK",
    "HOLD",
    "OK",
    "InputHealth",
    "InputVerdict",
    "check_inputs",
    "expiry_reason",
]


# --------------------------------------------------------------------------------------------
# Inputs: missing, stale, malformed
# --------------------------------------------------------------------------------------------


@dataclass
class InputVerdict:
    """Which readings the runner trusts (arrays ``[1, guests]``)."""

    missing: np.ndarray
    stale: np.ndarray
    malformed: np.ndarray
    reasons: np.ndarray
    stepped_back: np.ndarray | None = None
    """Good readings whose clock was stepped back: they start a new time line."""

    @property
    def bad(self) -> np.ndarray:
        """Missing, stale or malformed."""
        result: np.ndarray = self.missing | self.stale | self.malformed
        return result

    @property
    def usable(self) -> np.ndarray:
        """Present and well-formed (perhaps stale): may enter the snapshot."""
        result: np.ndarray = ~self.missing & ~self.malformed
        return result


def check_inputs(
    inputs: ReadingArrays,
    *,
    previous_time_ms: np.ndarray,
    now_ms: float,
    stale_after_s: float,
    provisioned_bytes: np.ndarray,
    usage_factor: float = 2.0,
    clock_skew_s: float = 30.0,
) -> InputVerdict:
    """Sort readings into missing, stale and malformed, with a reason for each.

    Malformed: a size that is NaN, infinite or negative where a number is required (visible size,
    refault counter), a negative usage, target, PSI or OOM count, PSI above 100 %, or usage or
    histogram bytes above ``usage_factor`` times the provisioned size, or a time more than
    ``clock_skew_s`` ahead of ``now_ms`` (a source whose clock jumped forward: trusting it would make
    every later, correct reading look older than it). Stale: the reading's time did not advance since
    the previous one (the source returned the same sample again), or it is older than
    ``stale_after_s``.

    Clock steps: a reading more than ``clock_skew_s`` behind the previous one but not old by
    ``now_ms`` is a clock that was stepped back (the host's, with the runner's own): it starts a new
    time line (``stepped_back``) instead of being held as stale until the clock catches up. Unknown
    values (NaN usage, target or PSI) are not malformed: sources that do not know them say so with NaN.
    """
    missing = ~inputs.present
    limit = usage_factor * provisioned_bytes
    checks: list[tuple[np.ndarray, str]] = [
        (~np.isfinite(inputs.visible_bytes) | (inputs.visible_bytes < 0), "visible size is not a size"),
        (~np.isfinite(inputs.refault_total) | (inputs.refault_total < 0), "refault counter is not a count"),
        (np.isinf(inputs.usage_bytes) | (inputs.usage_bytes < 0), "usage is not a size"),
        (np.isinf(inputs.target_bytes) | (inputs.target_bytes < 0), "target is not a size"),
        (inputs.usage_bytes > limit, f"usage above {usage_factor:g}x provisioned"),
        (inputs.hist_total_bytes > limit, f"histogram holds more than {usage_factor:g}x provisioned"),
        ((inputs.psi_some_avg10 < 0) | (inputs.psi_some_avg10 > 100), "PSI avg10 outside 0-100 %"),
        (inputs.oom_kills_total < 0, "OOM count is negative"),
        (~np.isfinite(inputs.time_ms) | (inputs.time_ms <= 0), "time is not a time"),
        (
            inputs.time_ms > now_ms + clock_skew_s * 1000.0,
            f"time is over {clock_skew_s:g} s ahead of the host clock",
        ),
    ]
    n = inputs.present.shape[1]
    reasons = np.full((1, n), "", dtype=object)
    malformed = np.zeros((1, n), dtype=bool)
    with np.errstate(invalid="ignore"):
        for failed, why in checks:
            hit = inputs.present & failed & ~malformed
            reasons = np.where(hit, f"malformed: {why}", reasons)
            malformed |= hit
        age_s = (now_ms - inputs.time_ms) / 1000.0
        old = age_s > stale_after_s
        stepped_back = (inputs.time_ms < previous_time_ms - clock_skew_s * 1000.0) & ~old
        repeated = (inputs.time_ms <= previous_time_ms) & ~stepped_back
    ok = inputs.present & ~malformed
    stepped_back &= ok
    stale = ok & (repeated | old)
    limit_s = f"{stale_after_s:g} s"
    reasons = np.where(ok & repeated, "stale: the reading's time did not advance", reasons)
    reasons = np.where(
        ok & old & ~repeated,
        np.array([[f"stale: reading is {a:.0f} s old (> {limit_s})" for a in np.nan_to_num(age_s[0])]]),
        reasons,
    )
    reasons = np.where(missing, "missing: the guest could not be read", reasons)
    return InputVerdict(
        missing=missing,
        stale=stale,
        malformed=malformed,
        reasons=reasons.astype(object),
        stepped_back=stepped_back,
    )


class InputHealth:
    """Per guest: how many ticks in a row its input was bad, and what the runner does about it.

    ``OK`` while the input is good; ``HOLD`` (keep the last good target) for the first
    ``hold_intervals`` bad ticks; ``FALLBACK`` (the fallback policy decides) after that. One good
    reading returns the guest to ``OK``.
    """

    def __init__(self, guests: int, hold_intervals: int) -> None:
        self.hold_intervals = int(hold_intervals)
        self.bad_ticks = np.zeros((1, guests), dtype=np.int64)

    def update(self, bad: np.ndarray) -> np.ndarray:
        """Count this tick; returns the ``[1, guests]`` states (``OK``, ``HOLD``, ``FALLBACK``)."""
        self.bad_ticks = np.where(bad, self.bad_ticks + 1, 0)
        held = np.where(self.bad_ticks <= self.hold_intervals, HOLD, FALLBACK)
        return np.where(self.bad_ticks == 0, OK, held)


# --------------------------------------------------------------------------------------------
# Decision expiry
# --------------------------------------------------------------------------------------------


def expiry_reason(decided_s: float, now_s: float, expiry_s: float) -> str | None:
    """Why a decision taken at ``decided_s`` (monotonic) may no longer be applied at ``now_s``, if so."""
    age_s = now_s - decided_s
    if age_s > expiry_s:
        return f"decision expired: inputs {age_s:.3f} s old > decision_expiry_s {expiry_s:g} s"
    return None
