"""The runner's safety rails: small, separately tested steps on ``[1, guests]`` arrays.

The pipeline (policy -> allocator -> guard) proposes targets; before anything reaches an actuator
the runner passes them through these rails, in this order (``docs/runner.md`` explains why):

1. :func:`check_inputs` / :class:`InputHealth`: a guest whose reading is missing, stale or
   malformed is held at its last target for ``hold_intervals`` ticks, then handed to the fallback
   policy (:func:`hold_rail` does the holding);
2. :class:`CircuitBreaker`: an OOM kill, a PSI spike or a refault spike deflates the guest to its
   provisioned size at once and keeps it on the fallback policy, never shrinking, for a cooldown
   (:func:`breaker_rail`);
3. :class:`OomMemory` / :func:`oom_memory_rail`: a guest that was OOM-killed at some size is never
   shrunk back to that size (plus a margin) for ``oom_memory_s``, so that the breaker's cooldown
   ending cannot lead the policy straight into the same OOM again;
4. :func:`rate_rail`: shrink by at most a share of the provisioned size per interval; grow at once
   (or at a configured rate);
5. :func:`host_reserve_rail`: the sum of all targets leaves the host's reserve free (growth is
   trimmed; nobody is shrunk faster than the rate rail allows);
6. :func:`floor_rail`: never below the floor, never above the provisioned size. Last, so that
   every value that leaves the rails is within ``[floor, provisioned]`` by construction.

Every rail returns a :class:`RailResult`: the new values, which guests it changed and why, so the
audit log can say what each rail did to each guest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from wsrl.backends.base import GuestReading
from wsrl.units import GIB, PAGE_BYTES

OK, HOLD, FALLBACK = 0, 1, 2
"""Input states of a guest (:class:`InputHealth`)."""
STATE_NAMES = ("ok", "hold", "fallback")


def _gib(value: float) -> str:
    return f"{value / GIB:.3f} GiB"


@dataclass
class RailResult:
    """What one rail did (arrays ``[1, guests]``).

    Attributes:
        rail: the rail's name (``floor``, ``rate``, ...).
        values: target bytes after the rail.
        changed: True where the rail changed the value.
        reasons: why, per guest (``""`` where unchanged).

    """

    rail: str
    values: np.ndarray
    changed: np.ndarray
    reasons: np.ndarray


def _per_guest(template: str, sizes: np.ndarray) -> np.ndarray:
    """``[1, guests]`` reasons: ``template`` with each guest's size (GiB) in its ``{}``."""
    return np.array([[template.format(_gib(s)) for s in sizes[0]]], dtype=object)


def _result(rail: str, before: np.ndarray, after: np.ndarray, why: np.ndarray) -> RailResult:
    changed = ~np.isclose(after, before, rtol=0.0, atol=0.5)
    reasons = np.where(changed, why, "").astype(object)
    return RailResult(rail, after, changed, reasons)


def hold_rail(target_bytes: np.ndarray, current_bytes: np.ndarray, holding: np.ndarray) -> RailResult:
    """Keep the current target where ``holding`` (bad input, not yet handed to the fallback)."""
    after = np.where(holding, current_bytes, target_bytes)
    why = np.full(target_bytes.shape, "input not trusted: holding the last good target", dtype=object)
    return _result("hold", target_bytes, after, why)


def breaker_rail(
    target_bytes: np.ndarray,
    current_bytes: np.ndarray,
    provisioned_bytes: np.ndarray,
    tripped: np.ndarray,
    is_open: np.ndarray,
) -> RailResult:
    """The circuit breaker's action: deflate ``tripped`` guests, shrink no guest while it is open.

    A guest that tripped this tick gets its provisioned size at once; a guest whose breaker is still
    open (cooling down) is not shrunk.

    Not shrinking during the cooldown breaks the loop operators complain about (OOM -> deflate ->
    the fallback squeezes the guest again on a full host -> OOM): the guest keeps what it was given
    until the cooldown ends, and the host-reserve rail trims the others' growth instead.
    """
    held = is_open & ~tripped & (target_bytes < current_bytes)
    after = np.where(tripped, provisioned_bytes, np.where(held, current_bytes, target_bytes))
    why = np.where(
        tripped,
        "circuit breaker tripped: deflated to provisioned",
        "circuit breaker open: no shrinking until the cooldown ends",
    ).astype(object)
    return _result("breaker", target_bytes, after, why)


class OomMemory:
    """Per guest, the size below which it was OOM-killed, remembered for ``memory_s``.

    When a guest is OOM-killed while its target was ``S``, sizes up to ``S + margin_frac *
    provisioned`` are off limits until ``memory_s`` has passed (in reading time; a new OOM raises
    the bar and restarts the clock). ``memory_s = 0`` remembers nothing.

    The runner keeps this in memory only: a restarted runner starts with no remembered OOMs (the
    audit log holds them).
    """

    def __init__(self, guests: int, *, memory_s: float, margin_frac: float) -> None:
        self.memory_ms = memory_s * 1000.0
        self.margin_frac = margin_frac
        self.min_bytes = np.zeros((1, guests))
        self.until_ms = np.full((1, guests), -np.inf)

    def update(
        self, oom: np.ndarray, size_bytes: np.ndarray, provisioned_bytes: np.ndarray, time_ms: float
    ) -> np.ndarray:
        """Remember ``oom`` guests' ``size_bytes``; returns the ``[1, guests]`` sizes now off limits."""
        if self.memory_ms > 0:
            bar = np.minimum(size_bytes + self.margin_frac * provisioned_bytes, provisioned_bytes)
            active = time_ms < self.until_ms
            raised = np.where(active, np.maximum(self.min_bytes, bar), bar)
            remember = oom & np.isfinite(bar)
            self.min_bytes = np.where(remember, raised, self.min_bytes)
            self.until_ms = np.where(remember, time_ms + self.memory_ms, self.until_ms)
        return np.where(time_ms < self.until_ms, self.min_bytes, 0.0)


def oom_memory_rail(target_bytes: np.ndarray, min_bytes: np.ndarray) -> RailResult:
    """Raise targets to the size each guest last OOMed at plus a margin (:class:`OomMemory`)."""
    after = np.maximum(target_bytes, min_bytes)
    why = _per_guest("OOM-killed below {} recently: not shrunk that far again", min_bytes)
    return _result("oom_memory", target_bytes, after, why)


def rate_rail(
    target_bytes: np.ndarray,
    current_bytes: np.ndarray,
    provisioned_bytes: np.ndarray,
    *,
    max_shrink_frac: float,
    max_growth_frac: float | None = None,
    exempt: np.ndarray | None = None,
) -> RailResult:
    """Bound how far a target moves from the current one in one interval.

    Shrink by at most ``max_shrink_frac`` of the provisioned size; grow by at most
    ``max_growth_frac`` of it (``None``: at once). ``exempt`` guests (a tripped breaker) grow freely.
    """
    step_down = max_shrink_frac * provisioned_bytes
    lowest = current_bytes - step_down
    after = np.maximum(target_bytes, lowest)
    why = _per_guest(f"shrink limited to {max_shrink_frac:g} of provisioned ({{}}) per interval", step_down)
    if max_growth_frac is not None:
        step_up = max_growth_frac * provisioned_bytes
        highest = current_bytes + step_up
        grows_too_fast = after > highest
        if exempt is not None:
            grows_too_fast &= ~exempt
        after = np.where(grows_too_fast, highest, after)
        growth_why = _per_guest(
            f"growth limited to {max_growth_frac:g} of provisioned ({{}}) per interval", step_up
        )
        why = np.where(grows_too_fast, growth_why, why)
    return _result("rate", target_bytes, after, why)


def host_reserve_rail(
    target_bytes: np.ndarray,
    current_bytes: np.ndarray,
    capacity_bytes: float,
    reserve_bytes: float,
    *,
    exempt: np.ndarray | None = None,
) -> RailResult:
    """Trim growth so that all targets together leave ``reserve_bytes`` of the host free.

    Only growth (the part of a target above the current one) is trimmed, in proportion, and never
    below zero: this rail never shrinks a guest (shrinking fast is what the rate rail prevents).
    ``exempt`` guests (a tripped breaker: an OOM is certain harm) keep their growth. When even the
    current targets exceed the room, every trimmable growth goes to zero.
    """
    room = capacity_bytes - reserve_bytes
    total = float(target_bytes.sum())
    if total <= room:
        unchanged = np.full(target_bytes.shape, "", dtype=object)
        return _result("host_reserve", target_bytes, target_bytes.copy(), unchanged)
    exempt = np.zeros(target_bytes.shape, dtype=bool) if exempt is None else exempt
    growth = np.maximum(target_bytes - current_bytes, 0.0)
    trimmable = np.where(exempt, 0.0, growth)
    excess = total - room
    share = min(excess / trimmable.sum(), 1.0) if trimmable.sum() > 0 else 0.0
    after = target_bytes - trimmable * share
    why = np.full(
        target_bytes.shape,
        f"growth trimmed: targets would total {_gib(total)}, over capacity - reserve ({_gib(room)})",
        dtype=object,
    )
    return _result("host_reserve", target_bytes, after, why)


def floor_rail(
    target_bytes: np.ndarray, floor_bytes: np.ndarray, provisioned_bytes: np.ndarray
) -> RailResult:
    """Clamp into ``[floor, provisioned]`` (NaN counts as the provisioned size: the safe side)."""
    safe = np.where(np.isnan(target_bytes), provisioned_bytes, target_bytes)
    after = np.clip(safe, floor_bytes, provisioned_bytes)
    why = np.where(
        safe < floor_bytes,
        _per_guest("raised to the floor ({})", floor_bytes),
        _per_guest("capped at provisioned ({})", provisioned_bytes),
    )
    why = np.where(np.isnan(target_bytes), "not a number: set to provisioned", why)
    changed_before = np.where(np.isnan(target_bytes), -1.0, target_bytes)
    return _result("floor", changed_before, after, why)


class RailLog:
    """Per guest, the list of rails that changed its target and why (for the audit log)."""

    def __init__(self, guests: int) -> None:
        self.entries: list[list[dict[str, Any]]] = [[] for _ in range(guests)]

    def add(self, before: np.ndarray, result: RailResult) -> np.ndarray:
        """Record ``result`` against the values it started from; returns its values."""
        for g in np.flatnonzero(result.changed[0]):
            self.entries[g].append(
                {
                    "rail": result.rail,
                    "from_bytes": _json_bytes(before[0, g]),
                    "to_bytes": _json_bytes(result.values[0, g]),
                    "reason": str(result.reasons[0, g]),
                }
            )
        return result.values

    def rails_of(self, guest: int) -> list[str]:
        """Names of the rails that changed ``guest``."""
        return [entry["rail"] for entry in self.entries[guest]]


def _json_bytes(value: float) -> int | None:
    return round(value) if math.isfinite(value) else None


# --------------------------------------------------------------------------------------------
# Inputs: missing, stale, malformed
# --------------------------------------------------------------------------------------------


@dataclass
class InputArrays:
    """The numbers of one tick's readings as ``[1, guests]`` arrays (NaN where a reading is missing)."""

    present: np.ndarray
    time_ms: np.ndarray
    visible_bytes: np.ndarray
    target_bytes: np.ndarray
    usage_bytes: np.ndarray
    hist_total_bytes: np.ndarray
    refault_total: np.ndarray
    psi_some_avg10: np.ndarray
    oom_kills_total: np.ndarray

    @classmethod
    def from_readings(cls, readings: Sequence[GuestReading | None]) -> InputArrays:
        """Collect the readings' numbers (``None``: not present)."""
        n = len(readings)
        arrays = {name: np.full((1, n), np.nan) for name in cls.__dataclass_fields__ if name != "present"}
        present = np.zeros((1, n), dtype=bool)
        for g, reading in enumerate(readings):
            if reading is None:
                continue
            present[0, g] = True
            arrays["time_ms"][0, g] = reading.time_ms
            arrays["visible_bytes"][0, g] = reading.visible_bytes
            arrays["target_bytes"][0, g] = reading.target_bytes
            arrays["usage_bytes"][0, g] = reading.usage_bytes
            hist = reading.histogram
            arrays["hist_total_bytes"][0, g] = 0.0 if hist is None else float(hist.total_bytes())
            arrays["refault_total"][0, g] = reading.refault_total
            arrays["psi_some_avg10"][0, g] = reading.psi_some_avg10
            arrays["oom_kills_total"][0, g] = reading.oom_kills_total
        return cls(present=present, **arrays)


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
        return self.missing | self.stale | self.malformed

    @property
    def usable(self) -> np.ndarray:
        """Present and well-formed (perhaps stale): may enter the snapshot."""
        return ~self.missing & ~self.malformed


def check_inputs(
    inputs: InputArrays,
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
# Circuit breaker
# --------------------------------------------------------------------------------------------


@dataclass
class BreakerUpdate:
    """One tick of the breaker (arrays ``[1, guests]``)."""

    tripped: np.ndarray
    """Tripped this tick (deflate now)."""
    open: np.ndarray
    """Open (tripped now or cooling down): the fallback policy decides."""
    closed: np.ndarray
    """The cooldown ended this tick: back to the configured policy."""
    reasons: np.ndarray
    refault_pages_per_s: np.ndarray
    """Refault rate since the previous valid reading (NaN where unknown), for the audit log."""
    oom: np.ndarray | None = None
    """New OOM kills seen this tick (whether or not they tripped the breaker)."""


class CircuitBreaker:
    """Trip a guest on an OOM kill, a PSI spike or a refault spike; keep it open for a cooldown.

    Args:
        guests: number of guests.
        on_oom: any new OOM kill trips.
        psi_some_avg10_pct: PSI "some" avg10 above this trips (``None``: off).
        refault_frac_per_min: refaulted bytes per minute above this share of usage trips (``None``: off).
        cooldown_s: how long the breaker stays open after the last trip, in reading time.
        enabled: ``False`` never trips (still measures refault rates for the audit log).

    """

    def __init__(
        self,
        guests: int,
        *,
        on_oom: bool = True,
        psi_some_avg10_pct: float | None = 60.0,
        refault_frac_per_min: float | None = 0.1,
        cooldown_s: float = 600.0,
        enabled: bool = True,
    ) -> None:
        self.on_oom = on_oom
        self.psi_some_avg10_pct = psi_some_avg10_pct
        self.refault_frac_per_min = refault_frac_per_min
        self.cooldown_ms = cooldown_s * 1000.0
        self.enabled = enabled
        shape = (1, guests)
        self.open_until_ms = np.full(shape, -np.inf)
        self._was_open = np.zeros(shape, dtype=bool)
        self._prev_time_ms = np.full(shape, np.nan)
        self._prev_refault = np.full(shape, np.nan)
        self._prev_oom = np.full(shape, np.nan)

    def update(self, inputs: InputArrays, valid: np.ndarray, time_ms: float) -> BreakerUpdate:
        """Look at this tick's ``valid`` readings; ``time_ms`` is the control clock (the snapshot's)."""
        n = valid.shape[1]
        with np.errstate(invalid="ignore", divide="ignore"):
            dt_s = (inputs.time_ms - self._prev_time_ms) / 1000.0
            refault_delta = inputs.refault_total - self._prev_refault
            has_delta = valid & (dt_s > 0) & (refault_delta >= 0)
            pages_per_s = np.where(has_delta, refault_delta / dt_s, np.nan)
            frac_per_min = np.where(
                has_delta & (inputs.usage_bytes > 0),
                pages_per_s * PAGE_BYTES * 60.0 / inputs.usage_bytes,
                np.nan,
            )
            oom = valid & (inputs.oom_kills_total > self._prev_oom)
        reasons = np.full((1, n), "", dtype=object)
        tripped = np.zeros((1, n), dtype=bool)
        if self.enabled:
            if self.on_oom:
                reasons = np.where(oom, "OOM kill", reasons)
                tripped |= oom
            if self.psi_some_avg10_pct is not None:
                spike = valid & (inputs.psi_some_avg10 > self.psi_some_avg10_pct) & ~tripped
                limit = f"{self.psi_some_avg10_pct:g} %"
                why = [f"PSI some avg10 {p:.1f} % > {limit}" for p in inputs.psi_some_avg10[0]]
                reasons = np.where(spike, np.array([why], dtype=object), reasons)
                tripped |= spike
            if self.refault_frac_per_min is not None:
                spike = (frac_per_min > self.refault_frac_per_min) & ~tripped
                limit = f"{self.refault_frac_per_min:.1%}"
                why = [f"refaults {f:.1%} of usage per minute > {limit}" for f in frac_per_min[0]]
                reasons = np.where(spike, np.array([why], dtype=object), reasons)
                tripped |= spike
        self.open_until_ms = np.where(tripped, time_ms + self.cooldown_ms, self.open_until_ms)
        is_open = tripped | (time_ms < self.open_until_ms)
        closed = self._was_open & ~is_open
        reasons = np.where(closed, "cooldown over: back to the configured policy", reasons)
        self._was_open = is_open
        self._prev_time_ms = np.where(valid, inputs.time_ms, self._prev_time_ms)
        self._prev_refault = np.where(valid, inputs.refault_total, self._prev_refault)
        self._prev_oom = np.where(valid, inputs.oom_kills_total, self._prev_oom)
        return BreakerUpdate(
            tripped=tripped,
            open=is_open,
            closed=closed,
            reasons=reasons,
            refault_pages_per_s=pages_per_s,
            oom=oom,
        )


# --------------------------------------------------------------------------------------------
# Decision expiry
# --------------------------------------------------------------------------------------------


def expiry_reason(decided_s: float, now_s: float, expiry_s: float) -> str | None:
    """Why a decision taken at ``decided_s`` (monotonic) may no longer be applied at ``now_s``, if so."""
    age_s = now_s - decided_s
    if age_s > expiry_s:
        return f"decision expired: inputs {age_s:.3f} s old > decision_expiry_s {expiry_s:g} s"
    return None
