"""Observations: what a learned policy sees of each guest, computed one way for every backend.

The :class:`ObservationBuilder` turns a :class:`~wsrl.pipeline.snapshot.HostSnapshot` into a
``[hosts, guests, features]`` float32 array. Training environments, trace evaluation and the
production runner all call it, so a policy never sees different numbers in production than it
learned from. It depends only on numpy (the runner does not import torch).

Every feature is scale-free (a share of the guest's provisioned size, a ratio to the SLO budget, a
bounded log), so one policy serves a 2 GiB container and a 64 GiB VM, and histograms from any source
(simulator, MGLRU, WSR, DAMON) are read at the same fixed idle ages through the histogram module's
one cold-memory rule. Each guest's row also carries its host's context (free memory, overcommit,
the guest's relative share), so a per-guest network with shared weights runs unchanged on hosts of
1 to 64 guests. Rows of masked-out guests are all zero.

The builder keeps a little state (the previous counters and slow moving averages), so it must be
:meth:`~ObservationBuilder.reset` at the start of each episode or run and then fed every snapshot
in order.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from wsrl.histogram import cold_weights
from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.slo import PROMOTION_BUDGET_FRAC_PER_MIN, WORKING_SET_WINDOW_MS
from wsrl.units import GIB, PAGE_BYTES

OBS_SPEC_VERSION = 3
"""Bumped whenever a feature is added, removed or computed differently (checked by manifests)."""

OBS_IDLE_MS: tuple[int, ...] = (
    10_000,
    30_000,
    60_000,
    120_000,
    300_000,
    600_000,
    1_800_000,
    3_600_000,
    7_200_000,
)
"""Idle ages at which cold anon and cold file memory are read off the histogram."""

SLOW_EMA_S = 300.0
"""Time constant of the slow refault and OOM averages, seconds."""

VIOLATION_EMA_S = 3_600.0
"""Time constant of the share of recent intervals over the refault budget, seconds: an hour of
memory, so a policy can tell a guest that keeps breaking the SLO when squeezed from one that does
not, across the phases of its workload."""

PEAK_DECAY_S: tuple[float, ...] = (1_800.0, 7_200.0)
"""Time constants of the decaying working-set peaks, seconds: a peak's excess over the current
working set shrinks by ``exp(-dt / tau)`` per interval, so the feature remembers recent bursts (what
VPA's peak windows remember) without keeping a window of samples."""

MAX_GUESTS_SCALE = 64
"""Guest counts are scaled by this (the largest host a policy is trained for)."""

TIER_COUNT = 3

FEATURE_NAMES: tuple[str, ...] = (
    *(f"cold_anon_frac_{ms // 1000}s" for ms in OBS_IDLE_MS),
    *(f"cold_file_frac_{ms // 1000}s" for ms in OBS_IDLE_MS),
    "resident_frac",
    "usage_frac",
    "working_set_frac",
    *(f"working_set_peak_{int(tau // 60)}m_frac" for tau in PEAK_DECAY_S),
    "visible_frac",
    "target_frac",
    "floor_frac",
    "swap_frac",
    "refault_budget_log",
    "refault_budget_slow_log",
    "over_budget_share_1h",
    "stall_log",
    "psi_avg10_frac",
    "oom_now",
    "oom_slow",
    "balloon_stalled",
    "tier_gold",
    "tier_silver",
    "tier_bronze",
    "provisioned_log2_gib",
    "relative_share",
    "host_free_frac",
    "host_overcommit",
    "host_guests_frac",
    "host_refault_budget_log",
)
"""Names of the feature columns, in order (part of the exported model's manifest)."""

FEATURE_COUNT = len(FEATURE_NAMES)


@functools.lru_cache(maxsize=16)
def _cold_matrix(edges_ms: tuple[int, ...]) -> np.ndarray:
    """``[bins, idle ages]`` weights: histogram bytes @ matrix = cold bytes at each of OBS_IDLE_MS."""
    return np.stack([cold_weights(edges_ms, ms) for ms in OBS_IDLE_MS], axis=1)


def cold_bytes_by_type(snapshot: HostSnapshot) -> np.ndarray:
    """``[hosts, guests, 2, len(OBS_IDLE_MS)]`` resident bytes (anon, file) idle longer than each age.

    The histogram module's rule, except past a guest's histogram horizon
    (:attr:`~wsrl.pipeline.snapshot.HostSnapshot.hist_horizon_ms`, the oldest age its source tells
    apart): the bytes idle longer than the horizon ``h`` are spread log-uniformly over ``[h, H]``
    (``H`` the last finite edge), so the cold memory at ``T`` is their share
    ``log(H / T) / log(H / h)``. The histogram rule would count them young at every age past the
    bin they were re-binned into (a ``referenced`` source's whole open bin as 120-300 s old): the
    coldest bytes the source knows of would be kept by every threshold above 300 s, and a policy
    that keeps memory touched within 10 minutes on exact ages would keep everything on that source.
    The spread keeps ``T = h`` meaning "all of them" and ``T >= H`` meaning "none of them", as on
    exact ages, with no knowledge of where in between they lie.
    """
    hist = np.nan_to_num(np.asarray(snapshot.hist_bytes, dtype=float), nan=0.0, posinf=0.0)
    edges = tuple(int(e) for e in snapshot.edges_ms)
    result: np.ndarray = hist @ _cold_matrix(edges)
    horizon = snapshot.histogram_horizon_ms()
    last_edge_ms = float(edges[-1]) if edges else math.inf
    limited = np.isfinite(horizon) & (horizon > 0) & (horizon < last_edge_ms)
    if not limited.any():
        return result
    idle = np.asarray(OBS_IDLE_MS, dtype=float)
    for h_ms in np.unique(horizon[limited]):
        at = limited & (horizon == h_ms)
        beyond = hist[at] @ cold_weights(edges, int(h_ms))  # [guests here, 2]: idle past the horizon
        share = np.clip(np.log(last_edge_ms / idle) / math.log(last_edge_ms / h_ms), 0.0, 1.0)
        spread = beyond[..., None] * share
        result[at] = np.where(idle >= h_ms, spread, result[at])
    return result


def _log_ratio(ratio: np.ndarray) -> np.ndarray:
    """``log1p`` of a non-negative ratio, capped so garbage cannot blow up a network input."""
    result: np.ndarray = np.log1p(np.clip(ratio, 0.0, 1e6))
    return result


class ObservationBuilder:
    """Computes per-guest feature rows (:data:`FEATURE_NAMES`) from snapshots (see the module docstring)."""

    def __init__(self) -> None:
        self.idle_ms = OBS_IDLE_MS
        self._prev: HostSnapshot | None = None
        self._refault_slow: np.ndarray | None = None
        self._oom_slow: np.ndarray | None = None
        self._ws_peaks: list[np.ndarray] | None = None
        self._peaks_seeded: np.ndarray | None = None
        self._over_budget: np.ndarray | None = None

    def reset(self, snapshot: HostSnapshot) -> np.ndarray:
        """Forget history and return the first observation (rates read as zero)."""
        self._prev = None
        self._refault_slow = np.zeros(snapshot.shape)
        self._oom_slow = np.zeros(snapshot.shape)
        self._ws_peaks = None
        self._peaks_seeded = None
        self._over_budget = None
        return self.build(snapshot)

    @property
    def working_set_peak_bytes(self) -> np.ndarray | None:
        """``[hosts, guests]`` the slowest-decaying working-set peak as of the last built snapshot.

        The ``peak_keep`` action of :mod:`wsrl.pipeline.action` is read against it.
        """
        return None if self._ws_peaks is None else self._ws_peaks[-1]

    def _update_peaks(self, working_set: np.ndarray, settled: np.ndarray, dt_s: float) -> None:
        """Raise and decay the working-set peaks; a provisional histogram's working set is not kept.

        A guest whose histogram is provisional (its source's first cycle: every byte not yet seen
        idle counts as young, so the working set reads as the whole usage) holds the peaks it has;
        until its first settled histogram its peaks follow the current estimate without memory,
        and that first settled histogram starts them afresh. Otherwise a runner's first minutes
        would make every guest's peak its whole usage for hours.
        """
        if self._ws_peaks is None or self._peaks_seeded is None:
            self._ws_peaks = [working_set.copy() for _ in PEAK_DECAY_S]
            self._peaks_seeded = settled.copy()
            return
        seeded = self._peaks_seeded
        for k, tau in enumerate(PEAK_DECAY_S):
            excess = np.maximum(self._ws_peaks[k] - working_set, 0.0) * math.exp(-dt_s / tau)
            kept = np.where(settled, working_set + excess, self._ws_peaks[k])
            self._ws_peaks[k] = np.where(seeded, kept, working_set)
        self._peaks_seeded |= settled

    def build(self, snapshot: HostSnapshot) -> np.ndarray:
        """``[hosts, guests, features]`` float32 observation of ``snapshot``; updates the history."""
        if self._refault_slow is None or self._refault_slow.shape != snapshot.shape:
            self._refault_slow = np.zeros(snapshot.shape)
            self._oom_slow = np.zeros(snapshot.shape)
            self._ws_peaks = None
            self._peaks_seeded = None
            self._over_budget = None
            self._prev = None
        assert self._oom_slow is not None
        mask = snapshot.mask
        provisioned = np.where(mask, snapshot.provisioned_bytes, 0.0)
        inv_prov = np.divide(1.0, provisioned, out=np.zeros(mask.shape), where=provisioned > 0)

        cold = cold_bytes_by_type(snapshot)  # [H, G, 2, ages]
        hist = np.nan_to_num(np.asarray(snapshot.hist_bytes, dtype=float), nan=0.0, posinf=0.0)
        resident = hist.sum(axis=(2, 3))
        usage = np.maximum(np.nan_to_num(snapshot.usage_bytes), 0.0)
        unevictable = np.maximum(usage - resident, 0.0)
        ws_col = self.idle_ms.index(WORKING_SET_WINDOW_MS)
        working_set = resident - cold[..., ws_col].sum(axis=2) + unevictable

        dt_s = max(float(snapshot.interval_s), 1e-3)
        prev = self._prev
        if prev is None or prev.shape != snapshot.shape:
            refaults = np.zeros(mask.shape)
            stall_frac = np.zeros(mask.shape)
            ooms = np.zeros(mask.shape)
        else:
            dt_s = max((int(snapshot.time_ms) - int(prev.time_ms)) / 1000.0, 1e-3)
            refaults = np.maximum(np.nan_to_num(snapshot.refault_total - prev.refault_total), 0.0)
            stall_frac = np.clip(
                np.nan_to_num(snapshot.psi_some_total_s - prev.psi_some_total_s) / dt_s, 0.0, 1.0
            )
            ooms = np.maximum(snapshot.oom_kills_total - prev.oom_kills_total, 0).astype(float)
        budget_bytes_per_min = PROMOTION_BUDGET_FRAC_PER_MIN * np.maximum(working_set, PAGE_BYTES)
        refault_ratio = refaults * PAGE_BYTES * (60.0 / dt_s) / budget_bytes_per_min
        decay = math.exp(-dt_s / SLOW_EMA_S)
        self._refault_slow = decay * self._refault_slow + (1.0 - decay) * refault_ratio
        self._oom_slow = decay * self._oom_slow + (1.0 - decay) * (ooms > 0)
        hour_decay = math.exp(-dt_s / VIOLATION_EMA_S)
        over = (refault_ratio > 1.0).astype(float)
        if self._over_budget is None:
            self._over_budget = np.zeros(mask.shape)
        elif prev is not None:
            self._over_budget = hour_decay * self._over_budget + (1.0 - hour_decay) * over
        self._update_peaks(working_set, ~snapshot.histogram_provisional(), dt_s)
        assert self._ws_peaks is not None

        guests = mask.sum(axis=1, keepdims=True).astype(float)
        usable = snapshot.usable_bytes()[:, None]
        visible = np.where(mask, np.nan_to_num(snapshot.visible_bytes), 0.0)
        host_free = (usable[:, 0] - visible.sum(axis=1))[:, None] / usable
        overcommit = snapshot.overcommit()[:, None]
        shares = np.where(mask, snapshot.shares, 0.0).astype(float)
        mean_share = shares.sum(axis=1, keepdims=True) / np.maximum(guests, 1.0)
        relative_share = np.divide(shares, mean_share, out=np.zeros(mask.shape), where=mean_share > 0)
        host_refault = (_log_ratio(refault_ratio) * mask).sum(axis=1, keepdims=True) / np.maximum(guests, 1.0)
        tier = np.asarray(snapshot.tier)
        ones = np.ones(mask.shape)

        columns = [
            *(cold[..., 0, k] * inv_prov for k in range(len(self.idle_ms))),
            *(cold[..., 1, k] * inv_prov for k in range(len(self.idle_ms))),
            resident * inv_prov,
            usage * inv_prov,
            working_set * inv_prov,
            *(peak * inv_prov for peak in self._ws_peaks),
            visible * inv_prov,
            np.nan_to_num(snapshot.target_bytes) * inv_prov,
            np.nan_to_num(snapshot.floor_bytes) * inv_prov,
            np.nan_to_num(snapshot.swap_bytes) * inv_prov,
            _log_ratio(refault_ratio),
            _log_ratio(self._refault_slow),
            self._over_budget,
            np.log10(np.maximum(stall_frac, 1e-6)) / 6.0 + 1.0,
            np.clip(np.nan_to_num(snapshot.psi_some_avg10), 0.0, 100.0) / 100.0,
            (ooms > 0).astype(float),
            self._oom_slow,
            np.asarray(snapshot.balloon_stalled, dtype=float),
            (tier == 0).astype(float),
            (tier == 1).astype(float),
            (tier >= 2).astype(float),
            np.log2(np.maximum(provisioned, 1.0) / GIB) / 6.0,
            relative_share,
            np.clip(host_free, -1.0, 1.0) * ones,
            np.clip(overcommit, 0.0, 8.0) * ones,
            guests / MAX_GUESTS_SCALE * ones,
            host_refault * ones,
        ]
        obs = np.stack(columns, axis=-1)
        obs = np.clip(np.nan_to_num(obs, nan=0.0, posinf=0.0, neginf=0.0), -10.0, 10.0)
        obs[~mask] = 0.0
        self._prev = snapshot
        result: np.ndarray = obs.astype(np.float32)
        return result
