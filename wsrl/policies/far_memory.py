"""``far-memory``: Google's software-defined far memory control plane, on wsrl's snapshots.

Source: A. Lagar-Cavilla et al., "Software-Defined Far Memory in Warehouse-Scale Computers",
ASPLOS 2019. kstaled ages pages; kreclaimd moves pages idle for longer than a per-job *cold age
threshold* ``T`` into zswap (far memory); an access to such a page *promotes* it back. The node
agent picks, per job, the lowest ``T`` (never under 120 s) whose *promotion rate* stays under the
SLO ``P = 0.2 %`` of the job's working set per minute (working set: memory touched within 120 s),
reading it off a promotion histogram (promotions by the page's idle age, so the rate at any
threshold can be looked up); it smooths the per-minute choice over the job's history (a
percentile whose parameters, with a start-up delay, its GP-bandit autotuner sets).

What a snapshot offers instead, and how the policy uses it (every ``control_period_s`` = 60 s):

* **Candidates**: the snapshot's histogram edges at or above ``min_threshold_s`` (120 s, 300 s,
  600 s, 30 min, 1 h on wsrl's canonical edges), plus "no threshold" (nothing reclaimed).
* **Promotion rate at a candidate, from the cold-age histogram.** In a steady state, the bytes that
  age past ``T`` per second equal the bytes older than ``T`` that get touched per second: exactly
  the promotions a threshold ``T`` would cause. That flux is the density of the age histogram at
  ``T``, and since pages only leave an age cohort (by being touched), the density is non-increasing
  in age: the bin just below ``T``, ``bytes in (T_prev, T] / (T - T_prev)``, bounds it from above
  (the bin above bounds it from below). The policy uses the upper bound: a conservative estimate
  of the promotion rate at every candidate whose ages are still resident (all candidates up to
  the current threshold; pages older than the current threshold are already in far memory).
* **Promotion rate observed**: refaults (pages faulted back in) over the last minute, in bytes,
  are the promotions at the current threshold.
* **Choice** (per guest, every period): the period's *best* threshold is the lowest candidate, at
  or below the current one, whose histogram estimate meets the SLO; if the observed rate broke
  the SLO instead (or the guest was OOM-killed), it is the candidate above the current one (the
  histogram cannot see ages beyond the current threshold, so one step). As in the paper, the
  threshold applied is a percentile (``history_percentile``, 98 by default: the paper's K is set
  by its autotuner and not published) of the best thresholds over the guest's whole history, but
  never below the period's best: a violation raises the threshold at once, and it comes back down
  only once violations are rare in the guest's history. The policy starts with no threshold
  (nothing reclaimed, the whole age distribution resident), so its first choice, after one minute,
  is read straight off a complete histogram. A guest whose histogram is provisional (its source's
  first cycle, :attr:`~wsrl.pipeline.snapshot.HostSnapshot.hist_provisional`) gets no choice until
  it is settled: ages its source has not seen yet would read as young, and the percentile would
  keep that choice for about 50 periods.
* **Target**: with a threshold, what the guest uses minus what is idle for longer than ``T``
  (``usage - cold_bytes(T)``: memory touched within ``T`` plus unevictable), recomputed at every
  snapshot as kreclaimd reclaims continuously, plus the bytes faulted back in since the previous
  snapshot: promoted pages return to memory (zswap does not cap the job's size), which a held
  wsrl target must allow explicitly (:mod:`wsrl.policies.common`). Without a threshold nothing is
  reclaimed and nothing limits the job, as in the paper: the guest gets its provisioned size; the
  same after an OOM kill, until the next snapshot.

Deviations: no promotion-age histogram (replaced by the flux bound plus the observed rate, above);
the bound is loose where bins are wide (the bin below 30 min spans 10-30 min), so thresholds come
out higher than an exact promotion histogram would give, the safe side of the SLO; the step up
after a violation is relative to the current threshold rather than read off a histogram; a wsrl
target is a size that stays in force, so while a threshold holds, ``usage - cold_bytes(T)`` also
takes the guest's free memory and a guest that then grows (a JVM heap between collections) pushes
out pages younger than ``T``, which kreclaimd never would: they come back as promotions, the SLO
check raises ``T`` and the percentile keeps it up; the working set includes the unevictable part
(:meth:`~wsrl.pipeline.snapshot.HostSnapshot.working_set_bytes`).
"""

from __future__ import annotations

import numpy as np

from wsrl.histogram import cold_weights
from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.policies.common import elapsed_s, masked, oom_since, refault_bytes
from wsrl.slo import PROMOTION_BUDGET_FRAC_PER_MIN, SLO_INTERVAL_S, WORKING_SET_WINDOW_MS

MS_PER_MIN = 60_000.0


class FarMemoryPolicy:
    """Per-guest cold age threshold under a promotion-rate SLO (see the module docstring).

    Args:
        promotion_slo_frac_per_min: allowed promotions per minute as a fraction of the working
            set (``P``; default the SLO's budget, 0.002, :mod:`wsrl.slo`).
        min_threshold_s: lowest cold age threshold (default the working-set window, 120 s).
        control_period_s: how often the threshold is chosen (default the SLO interval, 60 s).
        history_percentile: the percentile of the guest's per-period best thresholds applied
            (the paper's K; 98).
        working_set_window_ms: the working-set window the SLO is relative to (120 s).

    Attributes:
        threshold_ms: ``[hosts, guests]`` current cold age threshold, ms (``inf``: no reclaim).
        promotion_frac_per_min: ``[hosts, guests]`` promotion rate observed over the last control
            period, as a fraction of the working set per minute (NaN before the first period).

    """

    name = "far-memory"

    def __init__(
        self,
        *,
        promotion_slo_frac_per_min: float = PROMOTION_BUDGET_FRAC_PER_MIN,
        min_threshold_s: float = WORKING_SET_WINDOW_MS / 1000.0,
        control_period_s: float = SLO_INTERVAL_S,
        history_percentile: float = 98.0,
        working_set_window_ms: int = WORKING_SET_WINDOW_MS,
    ) -> None:
        if not promotion_slo_frac_per_min > 0 or not control_period_s > 0:
            raise ValueError("promotion_slo_frac_per_min and control_period_s must be > 0")
        if min_threshold_s < 0 or not 0 <= history_percentile <= 100 or working_set_window_ms <= 0:
            raise ValueError(
                "min_threshold_s >= 0, history_percentile in [0, 100], working_set_window_ms > 0"
            )
        self.promotion_slo_frac_per_min = float(promotion_slo_frac_per_min)
        self.min_threshold_s = float(min_threshold_s)
        self.control_period_s = float(control_period_s)
        self.history_percentile = float(history_percentile)
        self.working_set_window_ms = int(working_set_window_ms)
        self._index: np.ndarray | None = None

    def _set_candidates(self, snapshot: HostSnapshot) -> None:
        edges = [int(e) for e in snapshot.edges_ms]
        self._edges = edges
        self._candidate_bins = [i for i, e in enumerate(edges) if e >= self.min_threshold_s * 1000.0]
        finite = [float(edges[i]) for i in self._candidate_bins]
        self.candidates_ms = np.array([*finite, np.inf])
        # Cold weights per candidate: cold bytes at T_j = hist . weights[j] (the snapshot's rule).
        self._cold_weights = np.stack(
            [cold_weights(edges, int(edges[i])) for i in self._candidate_bins] + [np.zeros(len(edges) + 1)]
        )

    def reset(self, snapshot: HostSnapshot) -> None:
        """No threshold yet (nothing reclaimed); the first choice comes after one control period."""
        self._set_candidates(snapshot)
        n = len(self.candidates_ms)
        self._index = np.full(snapshot.shape, n - 1, dtype=np.int64)
        self._history = np.zeros((*snapshot.shape, n), dtype=np.int64)  # best-threshold counts
        self._oom = np.zeros(snapshot.shape, dtype=bool)
        self._promoted_bytes = np.zeros(snapshot.shape)
        self._period_s = 0.0
        self._last_refault = np.asarray(snapshot.refault_total, dtype=float).copy()
        self._last_oom = np.asarray(snapshot.oom_kills_total, dtype=float).copy()
        self._last_ms = int(snapshot.time_ms)
        self.promotion_frac_per_min = np.full(snapshot.shape, np.nan)

    @property
    def threshold_ms(self) -> np.ndarray:
        """``[hosts, guests]`` current cold age threshold in ms (``inf`` where nothing is reclaimed)."""
        if self._index is None:
            raise RuntimeError("far-memory policy used before reset()")
        threshold: np.ndarray = self.candidates_ms[self._index]
        return threshold

    def estimated_promotion_bytes_per_min(self, snapshot: HostSnapshot) -> np.ndarray:
        """``[hosts, guests, candidates]`` histogram upper bound on promotions per minute at each candidate.

        The density of the bin that ends at the candidate (0 for "no threshold"). Valid for
        candidates at or below the guest's current threshold, whose ages are still resident.
        """
        bins = snapshot.hist_bytes.sum(axis=2)  # anon + file, [H, G, bins]
        lower = [0, *self._edges]
        rates = [bins[..., i] / (self._edges[i] - lower[i]) * MS_PER_MIN for i in self._candidate_bins]
        return np.stack([*rates, np.zeros(snapshot.shape)], axis=-1)

    def decide(self, snapshot: HostSnapshot) -> np.ndarray:
        """Choose thresholds every control period; target memory touched within them."""
        if self._index is None or [int(e) for e in snapshot.edges_ms] != self._edges:
            self.reset(snapshot)
        assert self._index is not None
        grown = refault_bytes(snapshot, self._last_refault)
        oom = oom_since(snapshot, self._last_oom)
        self._last_refault = np.asarray(snapshot.refault_total, dtype=float).copy()
        self._last_oom = np.asarray(snapshot.oom_kills_total, dtype=float).copy()
        self._promoted_bytes += grown
        self._oom |= oom
        self._period_s += elapsed_s(self._last_ms, snapshot)
        self._last_ms = int(snapshot.time_ms)
        if self._period_s >= self.control_period_s - 1e-9:
            self._choose(snapshot)
        hist = snapshot.hist_bytes.sum(axis=2)  # [H, G, bins]
        weights = self._cold_weights[self._index]  # [H, G, bins]
        cold = (hist * weights).sum(axis=-1)
        reclaiming = np.isfinite(self.candidates_ms[self._index]) & ~oom
        target = np.where(reclaiming, snapshot.usage_bytes - cold + grown, snapshot.provisioned_bytes)
        return masked(snapshot, np.minimum(np.maximum(target, 0.0), snapshot.provisioned_bytes))

    def _choose(self, snapshot: HostSnapshot) -> None:
        """One control period's choice of threshold for every guest."""
        assert self._index is not None
        working_set = np.maximum(snapshot.working_set_bytes(self.working_set_window_ms), 1.0)
        budget_per_min = self.promotion_slo_frac_per_min * working_set
        observed_per_min = self._promoted_bytes / self._period_s * 60.0
        self.promotion_frac_per_min = np.where(snapshot.mask, observed_per_min / working_set, np.nan)
        last = len(self.candidates_ms) - 1
        estimate = self.estimated_promotion_bytes_per_min(snapshot)
        positions = np.arange(last + 1)
        meets = (estimate <= budget_per_min[..., None]) & (positions <= self._index[..., None])
        lowest_ok = np.where(meets.any(axis=-1), meets.argmax(axis=-1), self._index)
        violated = (observed_per_min > budget_per_min) | self._oom
        best = np.where(violated, np.minimum(self._index + 1, last), lowest_ok)
        best = np.where(snapshot.mask, best, last)
        # A provisional histogram (its source's first cycle) has not seen any age past its last
        # read: no choice is made from it and none enters the history (the paper's start-up delay).
        choosing = ~snapshot.histogram_provisional()
        self._history += (positions == best[..., None]) & choosing[..., None]
        # K-th percentile of the history: the first candidate whose cumulative count reaches K %.
        cumulative = np.cumsum(self._history, axis=-1)
        reach = cumulative >= self.history_percentile / 100.0 * cumulative[..., -1:] * (1.0 - 1e-12)
        smoothed = reach.argmax(axis=-1)
        self._index = np.where(choosing, np.maximum(smoothed, best), self._index)
        self._oom = np.zeros(snapshot.shape, dtype=bool)
        self._promoted_bytes = np.zeros(snapshot.shape)
        self._period_s = 0.0
