"""The safety rails: small, separately tested steps on ``[hosts, guests]`` target arrays.

:class:`~wsrl.pipeline.control.ControlStack` passes every decision through them, in this order, in
training, evaluation and production alike (``docs/architecture.md`` draws where they sit):

1. :func:`hold_rail`: a guest whose input is not trusted keeps its current target;
2. :func:`breaker_rail`: a guest whose :class:`CircuitBreaker` tripped (an OOM kill, a PSI spike, a
   refault spike) is deflated to its provisioned size at once and is not shrunk while the breaker is
   open;
3. :func:`oom_memory_rail`: a guest OOM-killed at some size is not shrunk back to that size (plus a
   margin) for a while (:class:`OomMemory`);
4. :func:`rate_rail`: shrink by at most a share of the provisioned size per second of control time;
   grow at once (or at a configured rate);
5. :func:`host_reserve_rail`: all targets of a host together leave its reserve free (only growth is
   trimmed);
6. :func:`floor_rail`: never below the floor, never above the provisioned size (last, so every value
   that leaves the rails is within ``[floor, provisioned]`` by construction).

Each rail returns a :class:`RailResult`: the new values, which guests it changed, and (lazily, only
when asked: the training env steps thousands of guests) why.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from wsrl.units import GIB, PAGE_BYTES

Array = NDArray[Any]
"""A ``[hosts, guests]`` array (float, bool or int)."""

OK, HOLD, FALLBACK = 0, 1, 2
"""Input states of a guest: trusted, held at its last target, handed to the fallback policy."""
STATE_NAMES: tuple[str, ...] = ("ok", "hold", "fallback")

Explain = Callable[[int, int], str]
"""``explain(host, guest)``: why a rail changed that guest's value."""


def gib_text(value: float) -> str:
    """A byte count as ``"1.234 GiB"`` (for reasons)."""
    return f"{value / GIB:.3f} GiB"


@dataclass
class RailResult:
    """What one rail did (arrays ``[hosts, guests]``).

    Attributes:
        rail: the rail's name (``floor``, ``rate``, ...).
        values: target bytes after the rail.
        changed: True where the rail changed the value (by more than half a byte).
        explain: ``explain(h, g)`` says why guest ``g`` of host ``h`` changed.

    """

    rail: str
    values: Array
    changed: Array
    explain: Explain

    @property
    def reasons(self) -> Array:
        """``[hosts, guests]`` reasons (``""`` where unchanged); built on demand."""
        reasons = np.full(self.values.shape, "", dtype=object)
        for h, g in zip(*np.nonzero(self.changed), strict=True):
            reasons[h, g] = self.explain(int(h), int(g))
        return reasons


def _result(rail: str, before: Array, after: Array, explain: Explain) -> RailResult:
    changed = np.abs(np.nan_to_num(after - before, nan=1.0)) > 0.5
    return RailResult(rail, after, changed, explain)


def _sized(template: str, sizes: Array) -> Explain:
    """``template`` with guest ``(h, g)``'s size in GiB in its ``{}``."""
    return lambda h, g: template.format(gib_text(float(sizes[h, g])))


def hold_rail(target_bytes: Array, current_bytes: Array, holding: Array) -> RailResult:
    """Keep the current target where ``holding`` (bad input, not yet handed to the fallback)."""
    after = np.where(holding, current_bytes, target_bytes)
    why = "input not trusted: holding the last good target"
    return _result("hold", target_bytes, after, lambda h, g: why)


def fair_share_bytes(
    provisioned_bytes: Array, capacity_bytes: Array | float, reserve_bytes: Array | float
) -> Array:
    """Each guest's share of its host's room: ``(capacity - reserve) x provisioned / sum of provisioned``.

    What an overcommitted host can give every guest at once in proportion to what it promised; on a
    host that is not overcommitted, at least the provisioned size. ``provisioned_bytes`` is 0 where
    no guest sits.
    """
    hosts = provisioned_bytes.shape[0]
    room = (np.broadcast_to(capacity_bytes, (hosts,)) - np.broadcast_to(reserve_bytes, (hosts,)))[:, None]
    promised = np.nan_to_num(provisioned_bytes)
    total = promised.sum(axis=1, keepdims=True)
    fair: Array = np.divide(
        np.maximum(room, 0.0) * promised, total, out=np.zeros_like(promised), where=total > 0
    )
    return fair


def breaker_rail(
    target_bytes: Array,
    current_bytes: Array,
    provisioned_bytes: Array,
    tripped: Array,
    is_open: Array,
    *,
    fair_bytes: Array | None = None,
) -> RailResult:
    """Deflate ``tripped`` guests; shrink no guest whose breaker is open (cooling down).

    Not shrinking during the cooldown breaks the loop operators complain about (OOM -> deflate ->
    the fallback squeezes the guest again on a full host -> OOM): the guest keeps what it was given
    until the cooldown ends, and the host-reserve rail trims the others' growth instead.

    Where ``fair_bytes`` is finite (:func:`fair_share_bytes`, for guests whose signals come from
    the guest itself: a VM's PSI and major faults) the protection stops at the guest's share: on
    an overcommitted host a tripped guest is deflated to at most its share, and an open breaker
    does not keep a guest above its share from being shrunk towards it at the rate rail's pace.
    ``inf`` (or no ``fair_bytes``): the host's kernel saw the trouble, the protection is whole.
    """
    protected = provisioned_bytes if fair_bytes is None else np.minimum(provisioned_bytes, fair_bytes)
    keep = np.where(tripped, protected, np.where(is_open, np.minimum(current_bytes, protected), -np.inf))
    after = np.maximum(target_bytes, keep)

    def explain(h: int, g: int) -> str:
        capped = fair_bytes is not None and protected[h, g] < provisioned_bytes[h, g]
        if tripped[h, g]:
            if capped:
                return f"circuit breaker tripped: deflated to the guest's share ({gib_text(protected[h, g])})"
            return "circuit breaker tripped: deflated to provisioned"
        if capped and current_bytes[h, g] > protected[h, g]:
            return f"circuit breaker open: not shrunk below the guest's share ({gib_text(protected[h, g])})"
        return "circuit breaker open: no shrinking until the cooldown ends"

    return _result("breaker", target_bytes, after, explain)


class OomMemory:
    """Per guest, the size below which it was OOM-killed, remembered for ``memory_s``.

    When a guest is OOM-killed while its target was ``S``, sizes up to ``S + margin_frac *
    provisioned`` are off limits until ``memory_s`` has passed (in control time; a new OOM raises
    the bar and restarts the clock). ``memory_s = 0`` remembers nothing. Kept in memory only: a
    restarted runner starts with no remembered OOMs (its audit log holds them).
    """

    def __init__(self, shape: tuple[int, int], *, memory_s: float, margin_frac: float) -> None:
        self.memory_ms = memory_s * 1000.0
        self.margin_frac = margin_frac
        self.min_bytes: Array = np.zeros(shape)
        self.until_ms: Array = np.full(shape, -np.inf)

    def update(self, oom: Array, size_bytes: Array, provisioned_bytes: Array, time_ms: float) -> Array:
        """Remember ``oom`` guests' ``size_bytes``; returns the ``[hosts, guests]`` sizes now off limits."""
        if self.memory_ms > 0 and oom.any():
            bar = np.minimum(size_bytes + self.margin_frac * provisioned_bytes, provisioned_bytes)
            active = time_ms < self.until_ms
            raised = np.where(active, np.maximum(self.min_bytes, bar), bar)
            remember = oom & np.isfinite(bar)
            self.min_bytes = np.where(remember, raised, self.min_bytes)
            self.until_ms = np.where(remember, time_ms + self.memory_ms, self.until_ms)
        return np.where(time_ms < self.until_ms, self.min_bytes, 0.0)


def oom_memory_rail(target_bytes: Array, min_bytes: Array) -> RailResult:
    """Raise targets to the size each guest last OOMed at plus a margin (:class:`OomMemory`)."""
    after = np.maximum(target_bytes, min_bytes)
    why = _sized("OOM-killed below {} recently: not shrunk that far again", min_bytes)
    return _result("oom_memory", target_bytes, after, why)


def rate_rail(
    target_bytes: Array,
    current_bytes: Array,
    provisioned_bytes: Array,
    *,
    elapsed_s: float,
    max_shrink_frac_per_s: float | None,
    max_growth_frac_per_s: float | None = None,
    exempt: Array | None = None,
) -> RailResult:
    """Bound how far a target moves from the current one in ``elapsed_s`` seconds of control time.

    Shrink by at most ``max_shrink_frac_per_s * elapsed_s`` of the provisioned size; grow by at most
    ``max_growth_frac_per_s * elapsed_s`` of it (``None``: unbounded). ``exempt`` guests (a tripped
    breaker) grow freely. Per time, not per decision: deciding more often never shrinks faster.
    """
    after = target_bytes
    step_down: Array = np.zeros(target_bytes.shape)
    if max_shrink_frac_per_s is not None:
        step_down = max_shrink_frac_per_s * elapsed_s * provisioned_bytes
        after = np.maximum(after, current_bytes - step_down)
    grows_too_fast: Array = np.zeros(target_bytes.shape, dtype=bool)
    step_up: Array = np.zeros(target_bytes.shape)
    if max_growth_frac_per_s is not None:
        step_up = max_growth_frac_per_s * elapsed_s * provisioned_bytes
        highest = current_bytes + step_up
        grows_too_fast = after > highest
        if exempt is not None:
            grows_too_fast &= ~exempt
        after = np.where(grows_too_fast, highest, after)

    def explain(h: int, g: int) -> str:
        if grows_too_fast[h, g]:
            step = gib_text(step_up[h, g])
            return f"growth limited to {max_growth_frac_per_s:g} of provisioned per s ({step})"
        return (
            f"shrink limited to {max_shrink_frac_per_s:g} of provisioned per s "
            f"({gib_text(step_down[h, g])} in {elapsed_s:g} s)"
        )

    return _result("rate", target_bytes, after, explain)


def host_reserve_rail(
    target_bytes: Array,
    current_bytes: Array,
    capacity_bytes: Array | float,
    reserve_bytes: Array | float,
    *,
    floor_bytes: Array | float = 0.0,
    granted_bytes: Array | None = None,
    exempt: Array | None = None,
    fair_bytes: Array | None = None,
    fixed: Array | None = None,
) -> RailResult:
    """Per host, make all targets together leave ``reserve_bytes`` of ``capacity_bytes`` free.

    The limits in force never add up to more than capacity - reserve, whatever the policy and the
    breakers did. What goes, in order, until the host fits (each step in proportion among the
    guests it applies to):

    1. growth (the part of a target above the current one) of guests nothing protects;
    2. the protected growth of ``exempt`` guests (an open breaker, a remembered OOM) whose
       ``fair_bytes`` is finite (:func:`fair_share_bytes`: the guest reported its trouble itself,
       as a VM does; protected only within that share, the rest went in step 1);
    3. the protected growth of the other ``exempt`` guests (the host's kernel saw the trouble);
    4. only if the limits in force already exceeded the room (a start on an overcommitted host, a
       capacity lowered): the unprotected guests' targets above their ``granted_bytes`` (what the
       allocator gave them; the rate rail held them above it), at once: the rate rail's pace
       yields to the host's capacity;
    5. then the unprotected guests' targets above their floors;
    6. then the exempt guests' targets above their floors.

    Growth that only brings a guest up to its floor is never trimmed.

    A protected guest therefore grows only into room the others free: the allocator gives it
    priority (:meth:`~wsrl.pipeline.allocator.Allocator.allocate`'s ``claim_bytes``), the others
    shrink towards their smaller grants at the rate rail's pace, and this rail hands the guest what
    they have freed. Floors are never cut (floors that alone exceed the room are the operator's
    promise; the allocator reports them). ``fixed`` guests (held: nothing is set on them this
    step) keep their target and count as they are. ``capacity_bytes`` and ``reserve_bytes`` are
    per host (``[hosts]``) or one number for every host.
    """
    hosts = target_bytes.shape[0]
    room = (np.broadcast_to(capacity_bytes, (hosts,)) - np.broadcast_to(reserve_bytes, (hosts,)))[:, None]
    floor = np.broadcast_to(floor_bytes, target_bytes.shape)
    # The floor rail comes after this one: count every target as it will leave the rails.
    total = np.nansum(np.maximum(target_bytes, floor), axis=1, keepdims=True)
    over = total > room
    if not over.any():
        return _result("host_reserve", target_bytes, target_bytes.copy(), lambda h, g: "")
    exempt = np.zeros(target_bytes.shape, dtype=bool) if exempt is None else exempt
    current = np.nan_to_num(current_bytes)
    # Growth up to the floor is the floor, and floors are never cut: a guest found below its floor
    # (a limit someone else lowered, a VM that claims to hold nothing) is raised to it at once and
    # the others pay (steps 4-6), or the floor rail would raise it after this rail and overfill.
    growth = np.nan_to_num(np.maximum(target_bytes - np.maximum(current, floor), 0.0))
    protected = np.zeros_like(growth)
    if exempt.any():
        protected = growth
        if fair_bytes is not None:
            protected = np.clip(fair_bytes - current, 0.0, growth)
        protected = np.where(exempt, protected, 0.0)
    shared = np.isfinite(fair_bytes) if fair_bytes is not None else np.zeros(exempt.shape, dtype=bool)
    kept = np.nan_to_num(target_bytes) - growth  # what is left once every growth went
    above_floor = np.maximum(kept - floor, 0.0)
    granted = floor if granted_bytes is None else np.maximum(np.nan_to_num(granted_bytes), floor)
    lag = np.minimum(np.maximum(kept - granted, 0.0), above_floor)
    layers: list[Array] = [
        growth - protected,
        np.where(shared, protected, 0.0),
        np.where(shared, 0.0, protected),
        np.where(exempt, 0.0, lag),
        np.where(exempt, 0.0, above_floor - lag),
        np.where(exempt, above_floor, 0.0),
    ]
    if fixed is not None:
        layers = [np.where(fixed, 0.0, layer) for layer in layers]
    excess = np.maximum(total - room, 0.0)
    after = target_bytes.copy()
    for trimmable in layers:
        trimmable_total = trimmable.sum(axis=1, keepdims=True)
        cut = np.divide(excess, trimmable_total, out=np.zeros_like(total), where=trimmable_total > 0)
        cut = np.minimum(cut, 1.0)
        after = np.where(over, after - trimmable * cut, after)
        excess = np.maximum(excess - trimmable_total * cut, 0.0)

    def explain(h: int, g: int) -> str:
        sums = (
            f"targets would total {gib_text(float(total[h, 0]))}, "
            f"over capacity - reserve ({gib_text(float(room[h, 0]))})"
        )
        if after[h, g] < min(target_bytes[h, g], current[h, g]):
            return f"shrunk at once: {sums}; the rate rail yields to the host's capacity"
        if exempt[h, g]:
            within = " within the guest's share" if shared[h, g] else ""
            return f"protected growth{within} trimmed to the room the others have freed: {sums}"
        return f"growth trimmed: {sums}"

    return _result("host_reserve", target_bytes, after, explain)


def floor_rail(target_bytes: Array, floor_bytes: Array, provisioned_bytes: Array) -> RailResult:
    """Clamp into ``[floor, provisioned]`` (NaN counts as the provisioned size: the safe side)."""
    nan = np.isnan(target_bytes)
    safe = np.where(nan, provisioned_bytes, target_bytes)
    after = np.clip(safe, floor_bytes, provisioned_bytes)

    def explain(h: int, g: int) -> str:
        if nan[h, g]:
            return "not a number: set to provisioned"
        if safe[h, g] < floor_bytes[h, g]:
            return f"raised to the floor ({gib_text(float(floor_bytes[h, g]))})"
        return f"capped at provisioned ({gib_text(float(provisioned_bytes[h, g]))})"

    return _result("floor", np.where(nan, -1.0, target_bytes), after, explain)


def page_rail(
    target_bytes: Array, floor_bytes: Array, provisioned_bytes: Array, room_bytes: Array | None = None
) -> Array:
    """Targets in whole pages, still within ``[floor, provisioned]`` (what an actuator sets).

    Rounded up, except on hosts where that would total more than ``room_bytes`` (``[hosts, 1]``:
    capacity - reserve; ``None``: no such host): there rounded down.
    """

    def clamp(rounded: Array) -> Array:
        return np.maximum(np.minimum(rounded, np.floor(provisioned_bytes)), np.ceil(floor_bytes))

    result = clamp(np.ceil(target_bytes / PAGE_BYTES) * PAGE_BYTES)
    if room_bytes is not None:
        over = np.nansum(result, axis=1, keepdims=True) > room_bytes
        if over.any():
            result = np.where(over, clamp(np.floor(target_bytes / PAGE_BYTES) * PAGE_BYTES), result)
    return result


@dataclass
class RailLog:
    """Per guest, the rails that changed its target and why (the audit log's ``rails`` field)."""

    entries: dict[tuple[int, int], list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, before: Array, result: RailResult) -> Array:
        """Record ``result`` against the values it started from; returns its values."""
        for h, g in zip(*np.nonzero(result.changed), strict=True):
            self.entries.setdefault((int(h), int(g)), []).append(
                {
                    "rail": result.rail,
                    "from_bytes": _json_bytes(float(before[h, g])),
                    "to_bytes": _json_bytes(float(result.values[h, g])),
                    "reason": result.explain(int(h), int(g)),
                }
            )
        return result.values

    def of(self, guest: int, host: int = 0) -> list[dict[str, Any]]:
        """The entries of one guest (in rail order)."""
        return self.entries.get((host, guest), [])

    def rails_of(self, guest: int, host: int = 0) -> list[str]:
        """Names of the rails that changed one guest."""
        return [entry["rail"] for entry in self.of(guest, host)]


def _json_bytes(value: float) -> int | None:
    return round(value) if math.isfinite(value) else None


# --------------------------------------------------------------------------------------------
# Circuit breaker
# --------------------------------------------------------------------------------------------


@dataclass
class GuestSignals:
    """What the circuit breaker watches, per guest (arrays ``[hosts, guests]``).

    Attributes:
        valid: the signal may be trusted this step (a fresh, well-formed reading).
        time_ms: when each guest was read (refault rates are per guest's own clock).
        usage_bytes: memory in use.
        refault_total: cumulative refaults, pages.
        psi_some_avg10: memory PSI "some" avg10, percent.
        oom_kills_total: cumulative OOM kills.
        self_reported: these figures come from the guest itself, not the host's kernel (``None``:
            none do): a breaker they trip protects the guest only within its share of the host.

    """

    valid: Array
    time_ms: Array
    usage_bytes: Array
    refault_total: Array
    psi_some_avg10: Array
    oom_kills_total: Array
    self_reported: Array | None = None


@dataclass
class BreakerUpdate:
    """One step of the breaker (arrays ``[hosts, guests]``).

    Attributes:
        tripped: tripped this step (deflate now).
        open: open (tripped now or cooling down): the fallback policy decides.
        closed: the cooldown ended this step: back to the configured policy.
        refault_pages_per_s: refault rate since the previous valid signal (NaN where unknown).
        oom: new OOM kills seen this step (whether or not they tripped the breaker).
        psi_some_avg10: the PSI the step saw (for reasons).
        refault_frac_per_min: refaulted bytes per minute over usage, averaged over the breaker's
            refault window (what trips it; for reasons).
        limits: the breaker's thresholds (for reasons).

    """

    tripped: Array
    open: Array
    closed: Array
    refault_pages_per_s: Array
    oom: Array
    cause: Array
    """Why each guest tripped: 0 none, 1 OOM, 2 PSI, 3 refaults."""
    psi_some_avg10: Array
    refault_frac_per_min: Array
    limits: tuple[float | None, float | None] = (None, None)

    def reason(self, h: int, g: int) -> str:
        """Why guest ``(h, g)`` tripped or closed this step (``""``: neither)."""
        psi_limit, refault_limit = self.limits
        cause = int(self.cause[h, g])
        if cause == 1:
            return "OOM kill"
        if cause == 2:
            return f"PSI some avg10 {self.psi_some_avg10[h, g]:.1f} % > {psi_limit:g} %"
        if cause == 3:
            return (
                f"refaults {self.refault_frac_per_min[h, g]:.1%} of usage per minute "
                f"(averaged over the refault window) > {refault_limit:.1%}"
            )
        if self.closed[h, g]:
            return "cooldown over: back to the configured policy"
        return ""

    @property
    def reasons(self) -> Array:
        """``[hosts, guests]`` reasons (built on demand)."""
        reasons = np.full(self.tripped.shape, "", dtype=object)
        for h, g in zip(*np.nonzero(self.tripped | self.closed), strict=True):
            reasons[h, g] = self.reason(int(h), int(g))
        return reasons


class CircuitBreaker:
    """Trip a guest on an OOM kill, a PSI spike or a refault spike; keep it open for a cooldown.

    Args:
        shape: ``(hosts, guests)``.
        on_oom: any new OOM kill trips.
        psi_some_avg10_pct: PSI "some" avg10 above this trips (``None``: off).
        refault_frac_per_min: refaulted bytes per minute above this share of usage trips (``None``: off).
        refault_window_s: the time constant of the exponential average the refault rate is judged
            by (PSI's avg60 is such an average over 60 s): a sustained rate of ``r`` trips after
            ``-window x ln(1 - limit / r)`` seconds, a burst of ``d`` seconds only if it is more
            than ``limit / (1 - exp(-d / window))``.
        cooldown_s: how long the breaker stays open after the last trip, in control time.
        enabled: ``False`` never trips (still measures refault rates for the audit log).

    """

    def __init__(
        self,
        shape: tuple[int, int],
        *,
        on_oom: bool = True,
        psi_some_avg10_pct: float | None = 60.0,
        refault_frac_per_min: float | None = 0.1,
        refault_window_s: float = 60.0,
        cooldown_s: float = 600.0,
        enabled: bool = True,
    ) -> None:
        self.on_oom = on_oom
        self.psi_some_avg10_pct = psi_some_avg10_pct
        self.refault_frac_per_min = refault_frac_per_min
        self.refault_window_s = refault_window_s
        self._avg_frac_per_min: Array = np.zeros(shape)
        self.cooldown_ms = cooldown_s * 1000.0
        self.enabled = enabled
        self.open_until_ms: Array = np.full(shape, -np.inf)
        self._was_open: Array = np.zeros(shape, dtype=bool)
        self._prev_time_ms: Array = np.full(shape, np.nan)
        self._prev_refault: Array = np.full(shape, np.nan)
        self._prev_oom: Array = np.full(shape, np.nan)

    def update(self, signals: GuestSignals, time_ms: float) -> BreakerUpdate:
        """Look at this step's valid signals; ``time_ms`` is the control clock (the snapshot's)."""
        valid = signals.valid
        with np.errstate(invalid="ignore", divide="ignore"):
            dt_s = (signals.time_ms - self._prev_time_ms) / 1000.0
            refault_delta = signals.refault_total - self._prev_refault
            has_delta = valid & (dt_s > 0) & (refault_delta >= 0)
            pages_per_s = np.where(has_delta, refault_delta / dt_s, np.nan)
            rated = has_delta & (signals.usage_bytes > 0)
            step_frac_per_min = np.where(rated, pages_per_s * PAGE_BYTES * 60.0 / signals.usage_bytes, np.nan)
            # Judged over a window, not one step: an exponential average over the steps' own
            # lengths (a 5 s burst weighs 5 s, however often the guest was read).
            decay = np.exp(-np.where(rated, dt_s, 0.0) / self.refault_window_s)
            averaged = decay * self._avg_frac_per_min + (1.0 - decay) * step_frac_per_min
            self._avg_frac_per_min = np.where(rated, averaged, self._avg_frac_per_min)
            frac_per_min = np.where(rated, self._avg_frac_per_min, np.nan)
            oom = valid & (signals.oom_kills_total > self._prev_oom)
        cause = np.zeros(valid.shape, dtype=np.int8)
        if self.enabled:
            if self.on_oom:
                cause = np.where(oom, 1, cause)
            if self.psi_some_avg10_pct is not None:
                with np.errstate(invalid="ignore"):
                    spike = valid & (signals.psi_some_avg10 > self.psi_some_avg10_pct)
                cause = np.where(spike & (cause == 0), 2, cause)
            if self.refault_frac_per_min is not None:
                # The average takes a window to fall again after the trip: it trips a closed
                # breaker only (while open, the guest is protected already).
                with np.errstate(invalid="ignore"):
                    spike = (frac_per_min > self.refault_frac_per_min) & ~(time_ms < self.open_until_ms)
                cause = np.where(spike & (cause == 0), 3, cause)
        tripped = cause > 0
        self.open_until_ms = np.where(tripped, time_ms + self.cooldown_ms, self.open_until_ms)
        is_open = tripped | (time_ms < self.open_until_ms)
        closed = self._was_open & ~is_open
        self._was_open = is_open
        self._prev_time_ms = np.where(valid, signals.time_ms, self._prev_time_ms)
        self._prev_refault = np.where(valid, signals.refault_total, self._prev_refault)
        self._prev_oom = np.where(valid, signals.oom_kills_total, self._prev_oom)
        return BreakerUpdate(
            tripped=tripped,
            open=is_open,
            closed=closed,
            refault_pages_per_s=pages_per_s,
            oom=oom,
            cause=cause,
            psi_some_avg10=signals.psi_some_avg10,
            refault_frac_per_min=frac_per_min,
            limits=(self.psi_some_avg10_pct, self.refault_frac_per_min),
        )
