"""The fixed metrics every policy is judged on, recorded step by step from host snapshots.

Definitions, units and what "good" means are in ``docs/metrics.md``; they are fixed so that results
from different runs, policies and inputs stay comparable. In short, over all real guests:

* ``memory_saved_frac``: 1 - (time-integral of guest-visible size) / (time-integral of provisioned);
* ``violation_frac``: share of guest-intervals (60 s windows) breaking the guest's :class:`Slo`;
* ``oom_events``: OOM kills;
* ``stall_frac_p50`` / ``stall_frac_p99``: percentiles over guest-steps of the PSI "some" stall fraction;
* ``jain_fairness``: Jain's index of per-guest slowdown ``1 / (1 - mean stall fraction)``, per host,
  averaged over hosts;
* ``churn``: sum of ``|target change| / provisioned`` per guest-hour, averaged over guests;
* ``refaults_per_guest_hour``: refaulted pages per guest-hour;
* ``mean_allotted_frac``: per-guest time-mean of ``visible / provisioned``, averaged over guests.

:class:`MetricsRecorder` differences the snapshots' cumulative counters itself; every update is
vectorised over ``[hosts, guests]`` and its memory does not grow with the run's length.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from wsrl.inputs.simulated import exact_snapshot
from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.slo import Slo
from wsrl.units import PAGE_BYTES

METRIC_NAMES: tuple[str, ...] = (
    "memory_saved_frac",
    "violation_frac",
    "oom_events",
    "stall_frac_p50",
    "stall_frac_p99",
    "jain_fairness",
    "churn",
    "refaults_per_guest_hour",
    "mean_allotted_frac",
)
"""The scalar metrics of :class:`RunMetrics`, in table order."""

STALL_BIN_EDGES = np.concatenate([[0.0], 10.0 ** (np.arange(-600, 1) / 100.0)])
"""Upper edges of the stall-fraction bins the percentiles are read from: exactly 0, then
``(0, 1e-6]`` and 100 log-spaced bins per decade up to 1 (each 2.3 % wide)."""
MAX_MEAN_STALL_FRAC = 1.0 - 1e-6
"""Mean stall fractions are capped here before slowdown is computed (slowdown <= 1e6)."""


@dataclass
class RunMetrics:
    """The metrics of one run (see ``docs/metrics.md``); scalars are named in :data:`METRIC_NAMES`.

    Attributes:
        memory_saved_frac: 1 - integral of visible size / integral of provisioned size.
        violation_frac: share of guest-intervals that broke the SLO.
        oom_events: OOM kills.
        stall_frac_p50: median stall fraction over guest-steps.
        stall_frac_p99: 99th percentile stall fraction over guest-steps.
        jain_fairness: Jain's index of per-guest slowdown, per host, averaged over hosts.
        churn: provisioned fractions moved by target changes per guest-hour, averaged over guests.
        refaults_per_guest_hour: refaulted pages per guest-hour.
        mean_allotted_frac: per-guest mean of visible / provisioned, averaged over guests.
        guests: real guests measured.
        steps: control steps observed.
        duration_s: simulated or wall time observed, seconds.
        intervals: SLO intervals per guest.
        slo: the SLO the violations were checked against.
        per_guest: one dict per guest (keys in :data:`PER_GUEST_KEYS`).

    """

    memory_saved_frac: float
    violation_frac: float
    oom_events: int
    stall_frac_p50: float
    stall_frac_p99: float
    jain_fairness: float
    churn: float
    refaults_per_guest_hour: float
    mean_allotted_frac: float
    guests: int
    steps: int
    duration_s: float
    intervals: int
    slo: Slo
    per_guest: list[dict[str, Any]] = field(default_factory=list)

    def scalars(self) -> dict[str, float]:
        """The metrics of :data:`METRIC_NAMES` as a dict, in order."""
        return {name: getattr(self, name) for name in METRIC_NAMES}

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (scalars, run facts, the SLO and the per-guest breakdown)."""
        return asdict(self)


PER_GUEST_KEYS: tuple[str, ...] = (
    "name",
    "host",
    "provisioned_bytes",
    "mean_allotted_bytes",
    "memory_saved_frac",
    "violation_frac",
    "oom_events",
    "stall_frac_p99",
    "mean_stall_frac",
    "slowdown",
    "churn",
    "refaults_per_hour",
)
"""Keys of each :attr:`RunMetrics.per_guest` entry."""


class MetricsRecorder:
    """Accumulates the metrics of a run from consecutive snapshots (vectorised over guests).

    Args:
        first: the state before the first control step (its counters are the baseline).
        slo: the SLO to check; the :class:`Slo` defaults if ``None``.

    Step ``k`` spans ``(t_{k-1}, t_k]`` between two snapshots' ``time_ms``; the sizes and working
    set a snapshot reports are taken to hold for the step that ends at it (the simulator reports
    the size it applied during the step), and counters are differenced against the previous
    snapshot (negative differences, a counter reset, count as zero). The guest mask must not change.

    """

    def __init__(self, first: HostSnapshot, slo: Slo | None = None) -> None:
        self.slo = slo or Slo()
        self._mask = np.asarray(first.mask, dtype=bool).copy()
        self._real = np.flatnonzero(self._mask.ravel())
        self._names = np.asarray(first.names).copy()
        self._host_names = list(first.host_names)
        self._start_ms = int(first.time_ms)
        shape = self._mask.shape
        zeros = np.zeros(shape)
        self._remember(first)
        self.steps = 0
        self.duration_s = 0.0
        self._visible_byte_s = zeros.copy()
        self._provisioned_byte_s = zeros.copy()
        self._refault_pages = zeros.copy()
        self._oom_kills = np.zeros(shape, dtype=np.int64)
        self._stall_s = zeros.copy()
        self._churn_frac = zeros.copy()
        self._violations = np.zeros(shape, dtype=np.int64)
        self._intervals = 0
        # The open SLO interval.
        self._window: int | None = None
        self._window_s = 0.0
        self._window_refault_pages = zeros.copy()
        self._window_ws_byte_s = zeros.copy()
        self._window_oom = np.zeros(shape, dtype=bool)
        # Stall fractions: per-guest counts in STALL_BIN_EDGES bins, plus exact extremes.
        self._stall_counts = np.zeros((self._mask.size, len(STALL_BIN_EDGES)), dtype=np.int32)
        self._stall_min = np.full(shape, np.inf)
        self._stall_max = np.full(shape, -np.inf)

    def _remember(self, snapshot: HostSnapshot) -> None:
        self._time_ms = int(snapshot.time_ms)
        self._target = np.array(snapshot.target_bytes, dtype=float)
        self._refault_total = np.array(snapshot.refault_total, dtype=float)
        self._psi_total_s = np.array(snapshot.psi_some_total_s, dtype=float)
        self._oom_total = np.array(snapshot.oom_kills_total, dtype=np.int64)

    def observe(self, snapshot: HostSnapshot) -> None:
        """Account for the step that ends at ``snapshot``."""
        if snapshot.mask.shape != self._mask.shape or not np.array_equal(snapshot.mask, self._mask):
            raise ValueError("the snapshot's guests (shape or mask) differ from the first snapshot's")
        dt_ms = int(snapshot.time_ms) - self._time_ms
        if dt_ms <= 0:
            raise ValueError(f"snapshot time must advance: {snapshot.time_ms} ms after {self._time_ms} ms")
        dt_s = dt_ms / 1000.0
        mask = self._mask
        provisioned = np.where(mask, snapshot.provisioned_bytes, 0.0)
        self._visible_byte_s += np.where(mask, snapshot.visible_bytes, 0.0) * dt_s
        self._provisioned_byte_s += provisioned * dt_s

        refaults = np.where(mask, np.maximum(snapshot.refault_total - self._refault_total, 0.0), 0.0)
        ooms = np.where(mask, np.maximum(snapshot.oom_kills_total - self._oom_total, 0), 0)
        stall_frac = np.where(
            mask, np.clip((snapshot.psi_some_total_s - self._psi_total_s) / dt_s, 0.0, 1.0), 0.0
        )
        moved = np.abs(snapshot.target_bytes - self._target)
        has_size = mask & (provisioned > 0)
        self._churn_frac += np.divide(moved, provisioned, out=np.zeros(mask.shape), where=has_size)
        self._refault_pages += refaults
        self._oom_kills += ooms
        self._stall_s += stall_frac * dt_s
        bins = np.searchsorted(STALL_BIN_EDGES, stall_frac.ravel()[self._real], side="left")
        self._stall_counts[self._real, bins] += 1
        np.minimum(self._stall_min, np.where(mask, stall_frac, np.inf), out=self._stall_min)
        np.maximum(self._stall_max, np.where(mask, stall_frac, -np.inf), out=self._stall_max)

        # SLO intervals: the step belongs to the interval its end falls in, (start + m I, start + (m+1) I].
        window = (int(snapshot.time_ms) - self._start_ms - 1) // self.slo.interval_ms
        if self._window is not None and window != self._window:
            self._violations += self._window_violations()
            self._intervals += 1
            self._window_s = 0.0
            self._window_refault_pages[:] = 0.0
            self._window_ws_byte_s[:] = 0.0
            self._window_oom[:] = False
        self._window = window
        self._window_s += dt_s
        self._window_refault_pages += refaults
        # The exact ages, whatever the guests' histogram sources show the policy (wsrl.sim.observed).
        working_set = exact_snapshot(snapshot).working_set_bytes(self.slo.working_set_window_ms)
        self._window_ws_byte_s += np.where(mask, working_set, 0.0) * dt_s
        self._window_oom |= ooms > 0

        self.steps += 1
        self.duration_s += dt_s
        self._remember(snapshot)

    def _window_violations(self) -> np.ndarray:
        """``[hosts, guests]`` 1 where the open interval breaks the SLO, else 0."""
        minutes = self._window_s / 60.0
        promoted_bytes_per_min = self._window_refault_pages * PAGE_BYTES / minutes
        working_set_bytes = self._window_ws_byte_s / self._window_s
        broken = promoted_bytes_per_min > self.slo.promotion_frac_per_min * working_set_bytes
        if self.slo.oom_violates:
            broken |= self._window_oom
        return (broken & self._mask).astype(np.int64)

    def result(self) -> RunMetrics:
        """The metrics so far (the open SLO interval counts as one, however short)."""
        if self.steps == 0:
            raise ValueError("no step observed: call observe() after each control step first")
        guests = len(self._real)
        if guests == 0:
            raise ValueError("the snapshots hold no guest (the mask is all False)")
        mask = self._mask
        violations = self._violations + self._window_violations()
        intervals = self._intervals + 1
        hours = self.duration_s / 3600.0

        provisioned = self._provisioned_byte_s / self.duration_s
        allotted = self._visible_byte_s / self.duration_s
        allotted_frac = np.divide(allotted, provisioned, out=np.ones(mask.shape), where=provisioned > 0)
        mean_stall = np.minimum(self._stall_s / self.duration_s, MAX_MEAN_STALL_FRAC)
        slowdown = np.where(mask, 1.0 / (1.0 - mean_stall), 0.0)
        churn = self._churn_frac / hours
        counts = self._stall_counts[self._real]
        real_min = self._stall_min[mask]
        real_max = self._stall_max[mask]
        stall_p99 = _quantile(counts, 0.99, real_min, real_max)
        everyone = counts.sum(axis=0)
        lowest, highest = np.array(real_min.min()), np.array(real_max.max())
        p50, p99 = (float(_quantile(everyone, q, lowest, highest)) for q in (0.5, 0.99))

        per_guest = []
        for index, (h, g) in enumerate(zip(*np.nonzero(mask), strict=True)):
            per_guest.append(
                {
                    "name": str(self._names[h, g]),
                    "host": self._host_names[h],
                    "provisioned_bytes": float(provisioned[h, g]),
                    "mean_allotted_bytes": float(allotted[h, g]),
                    "memory_saved_frac": float(1.0 - allotted_frac[h, g]),
                    "violation_frac": float(violations[h, g] / intervals),
                    "oom_events": int(self._oom_kills[h, g]),
                    "stall_frac_p99": float(stall_p99[index]),
                    "mean_stall_frac": float(mean_stall[h, g]),
                    "slowdown": float(slowdown[h, g]),
                    "churn": float(churn[h, g]),
                    "refaults_per_hour": float(self._refault_pages[h, g] / hours),
                }
            )
        provisioned_total = self._provisioned_byte_s[mask].sum()
        saved = 1.0 - self._visible_byte_s[mask].sum() / provisioned_total if provisioned_total > 0 else 0.0
        return RunMetrics(
            memory_saved_frac=float(saved),
            violation_frac=float(violations[mask].sum() / (intervals * guests)),
            oom_events=int(self._oom_kills[mask].sum()),
            stall_frac_p50=p50,
            stall_frac_p99=p99,
            jain_fairness=_jain_per_host(slowdown, mask),
            churn=float(churn[mask].mean()),
            refaults_per_guest_hour=float(self._refault_pages[mask].sum() / (guests * hours)),
            mean_allotted_frac=float(allotted_frac[mask].mean()),
            guests=guests,
            steps=self.steps,
            duration_s=self.duration_s,
            intervals=intervals,
            slo=self.slo,
            per_guest=per_guest,
        )


def jain_index(values: np.ndarray) -> float:
    """Jain's fairness index ``(sum x)^2 / (n sum x^2)``: 1 when all are equal, ``1/n`` at worst."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("Jain's index of no values")
    square_sum = float((x * x).sum())
    return 1.0 if square_sum == 0 else float(x.sum() ** 2 / (x.size * square_sum))


def _jain_per_host(slowdown: np.ndarray, mask: np.ndarray) -> float:
    """Jain's index of each host's guests' slowdowns, averaged over hosts with a guest."""
    n = mask.sum(axis=1)
    has = n > 0
    x = np.where(mask, slowdown, 0.0)
    index = x.sum(axis=1) ** 2 / np.maximum(n * (x * x).sum(axis=1), 1e-300)
    return float(index[has].mean())


def _quantile(counts: np.ndarray, q: float, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Nearest-rank ``q``-quantile of binned stall fractions, per row of ``counts`` (``[..., bins]``).

    The smallest bin upper edge with at least ``ceil(q n)`` of the ``n`` values at or below it,
    clipped into the exact ``[low, high]`` range seen: never below the true nearest-rank quantile,
    at most one bin width (2.3 %) above it, and exact where all values are equal or 0.
    """
    cumulative = np.cumsum(counts, axis=-1)
    total = cumulative[..., -1:]
    rank = np.maximum(np.ceil(q * total - 1e-9), 1)
    upper = STALL_BIN_EDGES[np.argmax(cumulative >= rank, axis=-1)]
    return np.clip(upper, low, high)
