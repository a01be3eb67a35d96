"""``vpa``: the Kubernetes Vertical Pod Autoscaler's memory recommendation.

Source: kubernetes/autoscaler, ``vertical-pod-autoscaler/pkg/recommender`` (``model/``,
``logic/estimator.go``, ``logic/recommender.go``, ``util/histogram.go``), default flags.

The recommender keeps, per container, the **peak** memory usage of each aggregation window
(``--memory-aggregation-interval`` = 24 h, ``--memory-aggregation-interval-count`` = 8 windows) in
a decaying histogram: a peak observed at time ``t`` weighs ``2^((t - now) / half_life)`` with
``--memory-histogram-decay-half-life`` = 24 h. Recommendations (every ``--recommender-interval``
= 1 min):

* target = p90 of the peaks, plus a 15 % safety margin (``recommendationMarginFraction``);
* lower bound = p50 and upper bound = p95 of the peaks, plus the same margin, times the
  confidence multipliers ``(1 + 0.001/days)^-2`` and ``(1 + 1/days)`` where ``days`` is how long
  the container has been observed;
* at least 250 MiB (``podMinMemoryMb``).

The histogram has exponential buckets (the first 10 MB wide, each next 5 % wider) and a
percentile returns the **end** of the bucket it falls in, so recommendations sit up to 5 % above
the exact percentile; this policy reproduces those buckets. After an OOM kill the recommender adds
a sample of ``max(used + 100 MiB, used * 1.2)`` to the current window, where ``used`` is the
larger of the container's request (here the guest's current target) and the window's usage peak.

wsrl specifics: a usage sample is taken at every snapshot (``usage_bytes``: ``memory.current``;
cAdvisor's working set, usage minus inactive file, is not in the snapshot, so the recommendation
is the same or a little higher than VPA's); the policy proposes the target recommendation at once
(the in-place update mode; the updater's eviction logic is not modelled), holding it between
recommender runs. **Window length**: a simulation of a few hours never leaves VPA's first 24 h
window, so the recommendation would just be the run's peak plus 15 %; ``window_s`` is a
parameter (default 24 h, the published value) for shorter runs, ``windows`` and
``half_life_s`` with it; the p90-of-peaks logic is unchanged. ``lower_bytes``, ``target_bytes``
and ``upper_bytes`` hold the last recommendation.
"""

from __future__ import annotations

import math

import numpy as np

from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.policies.common import TickClock, counter_delta, masked
from wsrl.units import MIB

DAY_S = 86_400.0


def bucket_end_bytes(value_bytes: np.ndarray, first_bucket_bytes: float, ratio: float) -> np.ndarray:
    """End of the VPA exponential-histogram bucket each value falls in (``GetBucketStart(bucket + 1)``).

    Bucket ``b`` starts at ``first * (ratio^b - 1) / (ratio - 1)``.
    """
    value = np.maximum(np.asarray(value_bytes, dtype=float), 0.0)
    bucket = np.floor(np.log(value * (ratio - 1.0) / first_bucket_bytes + 1.0) / math.log(ratio))
    bucket = np.where(value < first_bucket_bytes, 0.0, bucket)
    return first_bucket_bytes * (ratio ** (bucket + 1.0) - 1.0) / (ratio - 1.0)


def weighted_percentile(values: np.ndarray, weights: np.ndarray, percentile: float) -> np.ndarray:
    """Per row of ``[..., n]``, the first sorted value whose cumulative weight reaches ``percentile``.

    Entries of weight 0 are ignored; rows with no weight give 0 (an empty VPA histogram).
    """
    order = np.argsort(values, axis=-1)
    sorted_values = np.take_along_axis(values, order, axis=-1)
    cumulative = np.cumsum(np.take_along_axis(weights, order, axis=-1), axis=-1)
    total = cumulative[..., -1:]
    reached = cumulative >= percentile * total * (1.0 - 1e-12)
    first = np.argmax(reached & (np.take_along_axis(weights, order, axis=-1) > 0), axis=-1)
    value = np.take_along_axis(sorted_values, first[..., None], axis=-1)[..., 0]
    return np.where(total[..., 0] > 0, value, 0.0)


class VpaPolicy:
    """VPA's memory recommender per guest (see the module docstring).

    Args:
        window_s: aggregation window length (24 h).
        windows: windows kept (8).
        half_life_s: decay half-life of a window's peak (24 h).
        target_percentile: percentile of the peaks for the target (0.9).
        lower_percentile: for the lower bound (0.5).
        upper_percentile: for the upper bound (0.95).
        margin_fraction: safety margin on every recommendation (0.15).
        oom_bump_ratio: OOM sample = used times this (1.2) ...
        oom_min_bump_bytes: ... or used plus this (100 MiB), whichever is larger.
        min_bytes: smallest recommendation (250 MiB).
        recommend_every_s: recommender interval (60 s).
        bucket_first_bytes: first histogram bucket size (1e7 bytes).
        bucket_ratio: bucket growth ratio (1.05).

    """

    name = "vpa"

    def __init__(
        self,
        *,
        window_s: float = DAY_S,
        windows: int = 8,
        half_life_s: float = DAY_S,
        target_percentile: float = 0.9,
        lower_percentile: float = 0.5,
        upper_percentile: float = 0.95,
        margin_fraction: float = 0.15,
        oom_bump_ratio: float = 1.2,
        oom_min_bump_bytes: float = 100 * MIB,
        min_bytes: float = 250 * MIB,
        recommend_every_s: float = 60.0,
        bucket_first_bytes: float = 1e7,
        bucket_ratio: float = 1.05,
    ) -> None:
        if not (window_s > 0 and half_life_s > 0 and recommend_every_s > 0 and windows >= 1):
            raise ValueError("window_s, half_life_s, recommend_every_s must be > 0 and windows >= 1")
        for p in (target_percentile, lower_percentile, upper_percentile):
            if not 0 < p <= 1:
                raise ValueError(f"percentiles must be in (0, 1], got {p}")
        if not (bucket_first_bytes > 0 and bucket_ratio > 1):
            raise ValueError("bucket_first_bytes must be > 0 and bucket_ratio > 1")
        self.window_s = float(window_s)
        self.windows = int(windows)
        self.half_life_s = float(half_life_s)
        self.target_percentile = float(target_percentile)
        self.lower_percentile = float(lower_percentile)
        self.upper_percentile = float(upper_percentile)
        self.margin_fraction = float(margin_fraction)
        self.oom_bump_ratio = float(oom_bump_ratio)
        self.oom_min_bump_bytes = float(oom_min_bump_bytes)
        self.min_bytes = float(min_bytes)
        self.recommend_every_s = float(recommend_every_s)
        self.bucket_first_bytes = float(bucket_first_bytes)
        self.bucket_ratio = float(bucket_ratio)
        self.target_bytes: np.ndarray | None = None

    def reset(self, snapshot: HostSnapshot) -> None:
        """Empty history; the snapshot is the first sample and the first recommendation follows it."""
        shape = snapshot.shape
        self._start_ms = int(snapshot.time_ms)
        self._window = 0
        self.peak_bytes = np.zeros((*shape, self.windows))  # per window: max(usage peak, OOM peak)
        self.peak_time_ms = np.zeros((*shape, self.windows))
        self._has_peak = np.zeros((*shape, self.windows), dtype=bool)
        self._usage_peak = np.zeros(shape)  # current window, usage only (VPA's memoryPeak)
        self._last_oom = np.asarray(snapshot.oom_kills_total, dtype=float).copy()
        self._clock = TickClock(snapshot.time_ms, self.recommend_every_s)
        self.target_bytes = None
        self._sample(snapshot)
        self._recommend(snapshot)

    def _advance_window(self, time_ms: int) -> int:
        window = math.floor((time_ms - self._start_ms) / (self.window_s * 1000.0) + 1e-9)
        for w in range(max(self._window + 1, window - self.windows + 1), window + 1):
            slot = w % self.windows
            self.peak_bytes[..., slot] = 0.0
            self._has_peak[..., slot] = False
        if window != self._window:
            self._usage_peak = np.zeros_like(self._usage_peak)
            self._window = window
        return window % self.windows

    def _sample(self, snapshot: HostSnapshot) -> None:
        slot = self._advance_window(snapshot.time_ms)
        usage = np.where(snapshot.mask, snapshot.usage_bytes, 0.0)
        self._usage_peak = np.maximum(self._usage_peak, usage)
        oom = snapshot.mask & (counter_delta(snapshot.oom_kills_total, self._last_oom) > 0)
        self._last_oom = np.asarray(snapshot.oom_kills_total, dtype=float).copy()
        used = np.maximum(snapshot.target_bytes, self._usage_peak)
        needed = np.maximum(used + self.oom_min_bump_bytes, used * self.oom_bump_ratio)
        sample = np.where(oom, np.maximum(usage, needed), usage)
        higher = snapshot.mask & (~self._has_peak[..., slot] | (sample > self.peak_bytes[..., slot]))
        self.peak_bytes[..., slot] = np.where(higher, sample, self.peak_bytes[..., slot])
        self.peak_time_ms[..., slot] = np.where(higher, snapshot.time_ms, self.peak_time_ms[..., slot])
        self._has_peak[..., slot] |= snapshot.mask

    def _recommend(self, snapshot: HostSnapshot) -> None:
        age_s = (snapshot.time_ms - self.peak_time_ms) / 1000.0
        weights = np.where(self._has_peak, np.exp2(-age_s / self.half_life_s), 0.0)
        margin = 1.0 + self.margin_fraction
        days = max((snapshot.time_ms - self._start_ms) / 1000.0 / DAY_S, 1e-9)

        def estimate(percentile: float) -> np.ndarray:
            value = weighted_percentile(self.peak_bytes, weights, percentile)
            return bucket_end_bytes(value, self.bucket_first_bytes, self.bucket_ratio) * margin

        self.target_bytes = masked(snapshot, np.maximum(estimate(self.target_percentile), self.min_bytes))
        lower = estimate(self.lower_percentile) * (1.0 + 0.001 / days) ** -2
        self.lower_bytes = masked(snapshot, np.maximum(lower, self.min_bytes))
        upper = estimate(self.upper_percentile) * (1.0 + 1.0 / days)
        self.upper_bytes = masked(snapshot, np.maximum(upper, self.min_bytes))

    def decide(self, snapshot: HostSnapshot) -> np.ndarray:
        """Record the usage (and any OOM); recommend again once a recommender interval has passed."""
        if self.target_bytes is None:
            self.reset(snapshot)
        else:
            self._sample(snapshot)
            if self._clock.advance(snapshot.time_ms):
                self._recommend(snapshot)
        assert self.target_bytes is not None
        return self.target_bytes.copy()
