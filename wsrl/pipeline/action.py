"""Actions: how a learned policy's per-guest outputs become target sizes, one way for every backend.

A learned policy outputs :data:`ACTION_DIM` numbers in ``[-1, 1]`` per guest:

``cold_age``
    the cold-age threshold ``T``, log-uniform from :data:`MIN_COLD_AGE_MS` (10 s) at -1 to
    :data:`MAX_COLD_AGE_MS` (2 h) at +1 (about 270 s at 0). Past the histogram's last finite edge
    (1 h for wsrl's canonical edges) nothing counts as cold, so the top of the range means "keep
    everything resident": the only safe choice for memory touched hourly;
``headroom``
    spare room on top of what was touched within ``T``, ``MAX_HEADROOM_FRAC * ((a + 1) / 2)^2`` of
    the provisioned size (0 at -1, an eighth of the maximum at 0);
``peak_keep``
    a floor at a share ``k = MAX_PEAK_KEEP * (a + 1) / 2`` (0 to 1.25) of the guest's recent
    working-set peak (the observation builder's slowest decaying peak, 2 h): the knob that lets a
    policy hold room for a guest that was bigger a while ago and will be again (a build between
    compiles, a bursty service), as VPA's peak windows do.

The proposal is ``max(usage - cold(T), k * peak) + headroom``: the guest keeps everything it touched
within ``T`` (and its unevictable memory), or a share of its recent peak if that is more, plus room
to grow: the far-memory policy's shape (Lagar-Cavilla et al., ASPLOS 2019) with a VPA-style peak
floor, every knob chosen per guest and per interval by the policy instead of by a fixed rule.
Anchoring on the histogram makes the action scale-free and self-correcting: pages that come back
are young again, so a squeezed guest's proposal grows by itself. Cold memory at ``T`` is
interpolated linearly in ``log T`` between the observation's idle ages
(:data:`wsrl.pipeline.observation.OBS_IDLE_MS`), whose first and last equal the range ends. The
control stack's allocator and rails then fit the proposals to the host and the floors, as for
every policy.
"""

from __future__ import annotations

import numpy as np

from wsrl.pipeline.observation import OBS_IDLE_MS, cold_bytes_by_type
from wsrl.pipeline.snapshot import HostSnapshot

ACTION_NAMES: tuple[str, ...] = ("cold_age", "headroom", "peak_keep")
"""Per-guest action components, in order."""
ACTION_DIM = len(ACTION_NAMES)
MIN_COLD_AGE_MS = OBS_IDLE_MS[0]
MAX_COLD_AGE_MS = OBS_IDLE_MS[-1]
MAX_HEADROOM_FRAC = 0.5
"""Largest headroom, as a share of the provisioned size."""
MAX_PEAK_KEEP = 1.25
"""Largest ``peak_keep`` share of the recent working-set peak."""

_LOG_AGES = np.log(np.asarray(OBS_IDLE_MS, dtype=float))


def cold_age_ms(action: np.ndarray) -> np.ndarray:
    """The cold-age threshold, ms, for ``cold_age`` actions in ``[-1, 1]`` (clipped)."""
    a = np.clip(np.nan_to_num(np.asarray(action, dtype=float)), -1.0, 1.0)
    result: np.ndarray = np.exp(_LOG_AGES[0] + (a + 1.0) / 2.0 * (_LOG_AGES[-1] - _LOG_AGES[0]))
    return result


def headroom_frac(action: np.ndarray) -> np.ndarray:
    """Headroom as a share of the provisioned size for ``headroom`` actions in ``[-1, 1]`` (clipped)."""
    a = np.clip(np.nan_to_num(np.asarray(action, dtype=float)), -1.0, 1.0)
    result: np.ndarray = MAX_HEADROOM_FRAC * ((a + 1.0) / 2.0) ** 2
    return result


def cold_age_action(age_ms: np.ndarray) -> np.ndarray:
    """The ``cold_age`` action for thresholds in ms: the inverse of :func:`cold_age_ms`.

    Clipped into the range's ends; ``inf`` (no threshold: nothing is cold) gives ``+1``.
    """
    age = np.nan_to_num(np.asarray(age_ms, dtype=float), nan=MAX_COLD_AGE_MS, posinf=MAX_COLD_AGE_MS)
    return cold_age_action_of_log(np.log(np.clip(age, MIN_COLD_AGE_MS, MAX_COLD_AGE_MS)))


def cold_age_action_of_log(log_age_ms: np.ndarray) -> np.ndarray:
    """The ``cold_age`` action for natural logs of thresholds in ms (not clipped)."""
    result: np.ndarray = (
        2.0 * (np.asarray(log_age_ms, dtype=float) - _LOG_AGES[0]) / (_LOG_AGES[-1] - _LOG_AGES[0]) - 1.0
    )
    return result


def cold_age_action_reclaiming(snapshot: HostSnapshot, cold_bytes: np.ndarray) -> np.ndarray:
    """``[hosts, guests]`` the highest ``cold_age`` action that counts at least ``cold_bytes`` cold.

    The inverse of :func:`action_to_target_bytes`' cold reading: the largest threshold ``T`` whose
    cold memory on ``snapshot`` (interpolated as there) is at least ``cold_bytes``; ``+1`` where
    ``cold_bytes`` is 0 or not finite (keep everything), ``-1`` where even the lowest threshold
    counts less. A teacher that knows how much memory should go uses it to say so in the terms a
    student that sees ``snapshot`` acts in (:class:`wsrl.policies.teacher.RefinedTeacher`).
    """
    cold = cold_bytes_by_type(snapshot).sum(axis=2)  # [H, G, ages], non-increasing in age
    wanted = np.asarray(cold_bytes, dtype=float)[..., None]
    enough = cold >= wanted - 1.0  # within a byte: float sums
    count = enough.sum(axis=-1)  # non-increasing: the first `count` ages count enough
    last = np.clip(count - 1, 0, len(OBS_IDLE_MS) - 2)
    c_lo = np.take_along_axis(cold, last[..., None], axis=-1)[..., 0]
    c_hi = np.take_along_axis(cold, (last + 1)[..., None], axis=-1)[..., 0]
    drop = c_lo - c_hi
    share = np.divide(c_lo - wanted[..., 0], drop, out=np.zeros_like(drop), where=drop > 0)
    log_age = _LOG_AGES[last] + np.clip(share, 0.0, 1.0) * (_LOG_AGES[last + 1] - _LOG_AGES[last])
    action = cold_age_action_of_log(log_age)
    keep_all = ~np.isfinite(wanted[..., 0]) | (wanted[..., 0] <= 0) | (count == len(OBS_IDLE_MS))
    result: np.ndarray = np.where(keep_all, 1.0, np.where(count == 0, -1.0, action))
    return result


def headroom_action(frac: np.ndarray) -> np.ndarray:
    """The ``headroom`` action for shares of the provisioned size: the inverse of :func:`headroom_frac`."""
    share = np.clip(np.nan_to_num(np.asarray(frac, dtype=float)), 0.0, MAX_HEADROOM_FRAC)
    result: np.ndarray = 2.0 * np.sqrt(share / MAX_HEADROOM_FRAC) - 1.0
    return result


def peak_keep_share(action: np.ndarray) -> np.ndarray:
    """Share of the recent working-set peak kept for ``peak_keep`` actions in ``[-1, 1]`` (clipped)."""
    a = np.clip(np.nan_to_num(np.asarray(action, dtype=float)), -1.0, 1.0)
    result: np.ndarray = MAX_PEAK_KEEP * (a + 1.0) / 2.0
    return result


def action_to_target_bytes(
    action: np.ndarray, snapshot: HostSnapshot, working_set_peak_bytes: np.ndarray | None = None
) -> np.ndarray:
    """``[hosts, guests]`` proposed target bytes for ``[hosts, guests, ACTION_DIM]`` actions.

    ``working_set_peak_bytes`` is the observation builder's
    :attr:`~wsrl.pipeline.observation.ObservationBuilder.working_set_peak_bytes` after it built the
    observation of ``snapshot``; without it (``None``) the ``peak_keep`` floor is off. Padding slots
    get 0. Non-finite actions are read as 0 (the middle of each range).
    """
    action = np.asarray(action, dtype=float)
    if action.shape != (*snapshot.shape, ACTION_DIM):
        raise ValueError(f"action shape {action.shape}, expected {(*snapshot.shape, ACTION_DIM)}")
    log_age = np.log(cold_age_ms(action[..., 0]))
    cold = cold_bytes_by_type(snapshot).sum(axis=2)
    # Linear interpolation in log age between the two neighbouring observation ages.
    upper = np.clip(np.searchsorted(_LOG_AGES, log_age, side="right"), 1, len(_LOG_AGES) - 1)
    lo_age, hi_age = _LOG_AGES[upper - 1], _LOG_AGES[upper]
    share = np.clip((log_age - lo_age) / (hi_age - lo_age), 0.0, 1.0)
    lo_cold = np.take_along_axis(cold, (upper - 1)[..., None], axis=-1)[..., 0]
    hi_cold = np.take_along_axis(cold, upper[..., None], axis=-1)[..., 0]
    cold_at_t = lo_cold + share * (hi_cold - lo_cold)
    usage = np.maximum(np.nan_to_num(snapshot.usage_bytes), 0.0)
    provisioned = np.where(snapshot.mask, snapshot.provisioned_bytes, 0.0)
    kept = usage - cold_at_t
    if working_set_peak_bytes is not None:
        peak = np.maximum(np.nan_to_num(np.asarray(working_set_peak_bytes, dtype=float)), 0.0)
        kept = np.maximum(kept, peak_keep_share(action[..., 2]) * peak)
    proposal = kept + headroom_frac(action[..., 1]) * provisioned
    return np.where(snapshot.mask, np.clip(proposal, 0.0, provisioned), 0.0)
