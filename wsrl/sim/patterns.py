"""Vectorised evaluation of size and rate patterns (multiplicative factors >= 0).

A :class:`PatternSet` holds every pattern of every guest of a simulation. At build time the
patterns are grouped by *kind*; each kind keeps index arrays (which factor it drives, which guest
it belongs to) and parameter arrays. Evaluating a step is then one small batch of numpy operations
per kind, with no Python loop over guests or populations.

Factors live in one flat vector (the caller decides its layout, e.g. size factors then rate
factors). Entries no pattern drives stay 1. ``constant`` patterns are written once at reset.

Time 0 is the start of the simulation. ``diurnal`` patterns alone follow the clock: they see
``t + time_of_day_s``, hours since midnight UTC of the day the simulation starts.

Jitter (per guest, from the seed at reset) shifts phases so that copies of a workload differ:

- ``diurnal``: the peak moves by ``jitter * u * period`` with ``u`` uniform in [-1, 1] (so guests
  still share the day, as real fleets do);
- ``sawtooth``, ``phases``, ``ramp`` with ``restart_h``: the cycle starts at a uniformly random
  point of the cycle, and the cycle length is scaled by ``1 + jitter * u`` (a GC period or a
  build's length is not tied to the clock);
- ``bursts``, ``switching``: stochastic already; their state is drawn from the seed.

All populations of one guest draw the same per-guest numbers, so a guest's size and rate patterns
stay in step (its heap and its access rate peak together).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from wsrl.sim.config_patterns import (
    BurstsPattern,
    ConstantPattern,
    DiurnalPattern,
    Pattern,
    PhasesPattern,
    RampPattern,
    SawtoothPattern,
    SwitchingPattern,
)

HOUR_S = 3600.0


class _Kind(ABC):
    """One pattern kind: index arrays plus parameter arrays, evaluated in one batch."""

    def __init__(self, targets: np.ndarray, guests: np.ndarray) -> None:
        self.targets = targets
        self.guests = guests

    def reset(self, rng: np.random.Generator, draws: _GuestDraws) -> None:  # noqa: B027 (optional hook)
        """Draw jitter offsets and initial stochastic state (deterministic kinds have none)."""

    @abstractmethod
    def values(self, t_s: float, dt_s: float) -> np.ndarray:
        """Factor of every entry at ``t_s``."""


class _GuestDraws:
    """Per-guest random numbers for jitter, drawn once per reset (shared by a guest's patterns)."""

    def __init__(self, rng: np.random.Generator, jitter: np.ndarray) -> None:
        n = jitter.shape[0]
        self.jitter = jitter
        self.shift = rng.uniform(-1.0, 1.0, n) * jitter  # diurnal peak shift, fraction of the period
        self.stretch = 1.0 + rng.uniform(-1.0, 1.0, n) * jitter  # cycle-length factor
        self.phase = np.where(jitter > 0, rng.random(n), 0.0)  # where in the cycle a guest starts


class _Diurnal(_Kind):
    def __init__(
        self,
        targets: np.ndarray,
        guests: np.ndarray,
        pats: Sequence[DiurnalPattern],
        time_of_day_s: float = 0.0,
    ) -> None:
        super().__init__(targets, guests)
        self.amplitude = np.array([p.amplitude for p in pats])
        self.period_s = np.array([p.period_h * HOUR_S for p in pats])
        self.peak_s = np.array([p.peak_h * HOUR_S for p in pats])
        self.omega = 2.0 * math.pi / self.period_s
        self.time_of_day_s = time_of_day_s
        self.phi = self.omega * (time_of_day_s - self.peak_s)

    def reset(self, rng: np.random.Generator, draws: _GuestDraws) -> None:
        peak_s = self.peak_s + draws.shift[self.guests] * self.period_s
        self.phi = self.omega * (self.time_of_day_s - peak_s)

    def values(self, t_s: float, dt_s: float) -> np.ndarray:
        return 1.0 + self.amplitude * np.cos(self.omega * t_s + self.phi)


class _Sawtooth(_Kind):
    def __init__(self, targets: np.ndarray, guests: np.ndarray, pats: Sequence[SawtoothPattern]) -> None:
        super().__init__(targets, guests)
        self.low = np.array([p.low for p in pats])
        self.span = 1.0 - self.low
        self.period_s = np.array([p.period_s for p in pats])
        self.inv_period = 1.0 / self.period_s
        self.phase = np.zeros(len(pats))

    def reset(self, rng: np.random.Generator, draws: _GuestDraws) -> None:
        self.inv_period = 1.0 / (self.period_s * draws.stretch[self.guests])
        self.phase = draws.phase[self.guests]

    def values(self, t_s: float, dt_s: float) -> np.ndarray:
        return self.low + self.span * np.mod(t_s * self.inv_period + self.phase, 1.0)


class _Ramp(_Kind):
    def __init__(self, targets: np.ndarray, guests: np.ndarray, pats: Sequence[RampPattern]) -> None:
        super().__init__(targets, guests)
        self.per_s = np.array([p.per_hour / HOUR_S for p in pats])
        self.max_factor = np.array([p.max_factor for p in pats])
        self.restart_s = np.array([p.restart_h * HOUR_S if p.restart_h else math.inf for p in pats])
        self.cycle_s = self.restart_s.copy()
        self.offset_s = np.zeros(len(pats))

    def reset(self, rng: np.random.Generator, draws: _GuestDraws) -> None:
        finite = np.isfinite(self.restart_s)
        stretch = draws.stretch[self.guests]
        self.cycle_s = np.where(finite, self.restart_s * stretch, math.inf)
        self.offset_s = draws.phase[self.guests] * np.where(finite, self.cycle_s, 0.0)

    def values(self, t_s: float, dt_s: float) -> np.ndarray:
        age_s = np.mod(t_s + self.offset_s, self.cycle_s)
        return np.minimum(1.0 + self.per_s * age_s, self.max_factor)


class _Phases(_Kind):
    def __init__(self, targets: np.ndarray, guests: np.ndarray, pats: Sequence[PhasesPattern]) -> None:
        super().__init__(targets, guests)
        k = max(len(p.phases) for p in pats)
        n = len(pats)
        self.factors = np.ones((n, k))
        self.ends = np.full((n, k), math.inf)
        for i, p in enumerate(pats):
            self.factors[i, : len(p.phases)] = [ph.factor for ph in p.phases]
            self.ends[i, : len(p.phases)] = np.cumsum([ph.duration_s for ph in p.phases])
        # The cycle length is the last phase's end, bit for bit, so that a position in [0, total)
        # lies before that end and the phase index stays inside the row.
        self.total_s = np.array([self.ends[i, len(p.phases) - 1] for i, p in enumerate(pats)])
        self.scale = np.ones(n)
        self.offset_s = np.zeros(n)
        self.rows = np.arange(n)

    def reset(self, rng: np.random.Generator, draws: _GuestDraws) -> None:
        self.scale = draws.stretch[self.guests]
        self.offset_s = draws.phase[self.guests] * self.total_s

    def values(self, t_s: float, dt_s: float) -> np.ndarray:
        # Position inside the (unstretched) cycle: stretching scales time, not the phase table.
        # For t_s >= 0, np.mod is exact and below total_s (the last end): index < phases in the row.
        pos_s = np.mod(t_s / self.scale + self.offset_s, self.total_s)
        index = (pos_s[:, None] >= self.ends).sum(axis=1)
        return self.factors[self.rows, index]


def _units(guests: np.ndarray, groups: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Map entries to shared-state units, one per (guest, group); return (unit of entry, entry of unit)."""
    keys: dict[tuple[int, str], int] = {}
    unit = np.empty(len(groups), dtype=np.intp)
    first: list[int] = []
    for i, (g, grp) in enumerate(zip(guests.tolist(), groups, strict=True)):
        if (g, grp) not in keys:
            keys[(g, grp)] = len(first)
            first.append(i)
        unit[i] = keys[(g, grp)]
    return unit, np.array(first, dtype=np.intp)


class _Bursts(_Kind):
    """Poisson bursts; state: time left in the current burst per (guest, group)."""

    def __init__(self, targets: np.ndarray, guests: np.ndarray, pats: Sequence[BurstsPattern]) -> None:
        super().__init__(targets, guests)
        self.unit, first = _units(guests, [p.group for p in pats])
        self.rate_per_s = np.array([pats[i].per_hour / HOUR_S for i in first])
        self.duration_s = np.array([pats[i].duration_s for i in first])
        self.peak = np.array([p.peak for p in pats])
        self.left_s = np.zeros(len(first))
        self.rng = np.random.default_rng(0)

    def reset(self, rng: np.random.Generator, draws: _GuestDraws) -> None:
        self.rng = rng
        # Start near the stationary state: overlapping bursts merge, so a unit is in a burst when
        # an arrival fell within the last duration_s: probability 1 - exp(-rate * duration).
        n = self.left_s.shape[0]
        in_burst = rng.random(n) < -np.expm1(-self.rate_per_s * self.duration_s)
        self.left_s = np.where(in_burst, rng.random(n) * self.duration_s, 0.0)

    def values(self, t_s: float, dt_s: float) -> np.ndarray:
        n = self.left_s.shape[0]
        left = np.maximum(self.left_s - dt_s, 0.0)
        arrive = self.rng.random(n) < -np.expm1(-self.rate_per_s * dt_s)
        # An arrival falls uniformly inside the step; its burst has run for part of the step already.
        started_left = self.duration_s - self.rng.random(n) * dt_s
        self.left_s = np.where(arrive, np.maximum(left, started_left), left)
        return np.where(self.left_s[self.unit] > 0.0, self.peak, 1.0)


class _Switching(_Kind):
    """App switching; state: foreground slot and time left in it per (guest, group)."""

    def __init__(self, targets: np.ndarray, guests: np.ndarray, pats: Sequence[SwitchingPattern]) -> None:
        super().__init__(targets, guests)
        self.unit, first = _units(guests, [p.group for p in pats])
        self.slots = np.array([pats[i].slots for i in first])
        self.mean_dwell_s = np.array([pats[i].mean_dwell_s for i in first])
        self.slot = np.array([p.slot for p in pats])
        self.fg_factor = np.array([p.foreground for p in pats])
        self.bg_factor = np.array([p.background for p in pats])
        self.foreground = np.zeros(len(first), dtype=np.int64)
        self.left_s = np.zeros(len(first))
        self.rng = np.random.default_rng(0)

    def reset(self, rng: np.random.Generator, draws: _GuestDraws) -> None:
        self.rng = rng
        n = self.slots.shape[0]
        self.foreground = np.floor(rng.random(n) * self.slots).astype(np.int64)
        self.left_s = rng.exponential(self.mean_dwell_s)

    def values(self, t_s: float, dt_s: float) -> np.ndarray:
        self.left_s -= dt_s
        switch = np.flatnonzero(self.left_s <= 0.0)
        if switch.size:
            slots = self.slots[switch]
            # Move to one of the other slots, uniformly (stay put when there is only one).
            hop = 1 + np.floor(self.rng.random(switch.size) * (slots - 1)).astype(np.int64)
            hop = np.where(slots > 1, hop, 0)
            self.foreground[switch] = (self.foreground[switch] + hop) % slots
            self.left_s[switch] = self.rng.exponential(self.mean_dwell_s[switch])
        in_front = self.foreground[self.unit] == self.slot
        return np.where(in_front, self.fg_factor, self.bg_factor)


_KIND_CLASSES: dict[type, type[_Kind]] = {
    DiurnalPattern: _Diurnal,
    SawtoothPattern: _Sawtooth,
    RampPattern: _Ramp,
    PhasesPattern: _Phases,
    BurstsPattern: _Bursts,
    SwitchingPattern: _Switching,
}


class PatternSet:
    """Every pattern of a simulation, grouped by kind; writes factors into one flat vector.

    Args:
        n_factors: length of the factor vector.
        n_guests: number of guests (flat ``hosts * guests``) the ``guests`` indices refer to.
        entries: ``(factor index, guest index, pattern)`` triples; each factor index at most once.
        time_of_day_s: seconds since midnight UTC at simulation time 0 (diurnal patterns follow
            the clock; every other kind counts from time 0).

    """

    def __init__(
        self,
        n_factors: int,
        n_guests: int,
        entries: Sequence[tuple[int, int, Pattern]],
        *,
        time_of_day_s: float = 0.0,
    ) -> None:
        self.n_factors = n_factors
        self.n_guests = n_guests
        targets = [e[0] for e in entries]
        if len(set(targets)) != len(targets):
            raise ValueError("a factor is driven by more than one pattern")
        const = [(i, p) for i, _, p in entries if isinstance(p, ConstantPattern)]
        self._const_index = np.array([i for i, _ in const], dtype=np.intp)
        self._const_value = np.array([p.factor for _, p in const], dtype=np.float64)
        self._kinds: list[_Kind] = []
        for cls, kind_cls in _KIND_CLASSES.items():
            mine = [e for e in entries if isinstance(e[2], cls)]
            if mine:
                tgt = np.array([e[0] for e in mine], dtype=np.intp)
                gst = np.array([e[1] for e in mine], dtype=np.intp)
                pats = [e[2] for e in mine]
                if kind_cls is _Diurnal:
                    self._kinds.append(_Diurnal(tgt, gst, pats, time_of_day_s))  # type: ignore[arg-type]
                else:
                    self._kinds.append(kind_cls(tgt, gst, pats))  # type: ignore[call-arg]
        self.factors = np.ones(n_factors, dtype=np.float64)

    def reset(self, rng: np.random.Generator, jitter: np.ndarray) -> None:
        """Restart at time 0: draw jitter (``jitter`` per guest) and stochastic state from ``rng``."""
        self.factors = np.ones(self.n_factors, dtype=np.float64)
        self.factors[self._const_index] = self._const_value
        draws = _GuestDraws(rng, np.asarray(jitter, dtype=np.float64))
        streams = rng.spawn(len(self._kinds)) if self._kinds else []
        for kind, stream in zip(self._kinds, streams, strict=True):
            kind.reset(stream, draws)

    def evaluate(self, t_s: float, dt_s: float) -> np.ndarray:
        """Factors at ``t_s`` (the step of length ``dt_s`` ending there); the returned array is reused."""
        out = self.factors
        for kind in self._kinds:
            out[kind.targets] = kind.values(t_s, dt_s)
        return out
