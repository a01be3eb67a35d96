"""Characteristic-time solver for LRU under the independent reference model (Che's approximation).

A page touched as a Poisson process of rate ``r`` is idle longer than ``T`` with probability
``exp(-r T)``. An LRU list that holds ``C`` bytes keeps exactly the pages idle for less than a
characteristic time ``T*`` with ``sum_p size_p * (1 - exp(-r_p T*)) = C`` (Che, Tung and Wang,
IEEE JSAC 20(7), 2002; Fricker, Robert and Roberts, ITC 24, 2012 show why it is accurate far
beyond its original assumptions). Everything idle longer than ``T*`` is evicted; accesses to
evicted pages are refaults.

The solver works on rows of a 2-D array (one row per guest or per host), all rows at once: the
resident bytes are monotone in ``T``, so a Newton iteration guarded by a bisection bracket
converges for every row with no per-row Python code.
"""

from __future__ import annotations

import numpy as np

# Bracket for the characteristic time, seconds. Below 1 ms nothing in a guest is that hot; above
# ~30 years nothing is that cold. Outside it, the solution is clamped to the bracket's end.
MIN_T_S = 1e-3
MAX_T_S = 1e9
_LOG_MIN = float(np.log(MIN_T_S))
_LOG_MAX = float(np.log(MAX_T_S))
# Convergence: resident bytes within this relative error of the capacity or within one 4 KiB page
# (finer than memory is managed), or the log-bracket narrower than LOG_TOLERANCE.
RELATIVE_TOLERANCE = 1e-7
ABSOLUTE_TOLERANCE_BYTES = 4096.0
LOG_TOLERANCE = 1e-9
MAX_ITERATIONS = 80


def resident_bytes_at(size_bytes: np.ndarray, rate_per_s: np.ndarray, t_s: np.ndarray) -> np.ndarray:
    """Bytes idle for less than ``t_s`` (one value per row): ``sum size * (1 - exp(-rate * t))``."""
    return (size_bytes * -np.expm1(-rate_per_s * t_s[:, None])).sum(axis=1)


def solve_characteristic_time(
    size_bytes: np.ndarray,
    rate_per_s: np.ndarray,
    capacity_bytes: np.ndarray,
    guess_s: np.ndarray | None = None,
    kept_fraction: np.ndarray | None = None,
) -> np.ndarray:
    """The ``T*`` per row at which the pages idle for less than it fill ``capacity_bytes``.

    A good ``guess_s`` (the previous step's ``T*``) makes it converge in two or three iterations.

    Args:
        size_bytes: ``[rows, populations]`` population sizes.
        rate_per_s: ``[rows, populations]`` per-page access rates (0 = never touched).
        capacity_bytes: ``[rows]`` what the LRU may hold.
        guess_s: optional ``[rows]`` starting points (non-finite entries are ignored).
        kept_fraction: optional ``[rows, populations]`` fractions ``q`` of each population that
            are already gone below this LRU: a population then holds
            ``size * (1 - max(exp(-rate T), q))``. The host's LRU over guests' resident pages
            uses it; a guest's own LRU leaves it out (``q = 0``).

    Returns:
        ``[rows]`` characteristic times in seconds: ``inf`` where every touched page fits (the
        untouched, rate-0 pages are then the only ones evicted), :data:`MIN_T_S` where even the
        hottest millisecond does not fit.

    """
    rows = size_bytes.shape[0]
    touched = rate_per_s > 0
    if kept_fraction is None:
        touched_bytes = np.where(touched, size_bytes, 0.0).sum(axis=1)
    else:
        touched_bytes = np.where(touched, size_bytes * (1.0 - kept_fraction), 0.0).sum(axis=1)
    result = np.full(rows, np.inf)
    todo = np.flatnonzero(capacity_bytes < touched_bytes)
    if todo.size == 0:
        return result
    size = size_bytes[todo]
    rate = rate_per_s[todo]
    gone = None if kept_fraction is None else kept_fraction[todo]
    # The solve works on the bytes that must be older than T*: everything that is not resident.
    target = size.sum(axis=1) - capacity_bytes[todo]
    tolerance = np.maximum(capacity_bytes[todo] * RELATIVE_TOLERANCE, ABSOLUTE_TOLERANCE_BYTES)
    middle = 0.5 * (_LOG_MIN + _LOG_MAX)
    if guess_s is None:
        u = np.full(todo.size, middle)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.log(np.asarray(guess_s, dtype=float)[todo])
        u = np.where(np.isfinite(u), np.clip(u, _LOG_MIN, _LOG_MAX), middle)
    lo = np.full(todo.size, _LOG_MIN)
    hi = np.full(todo.size, _LOG_MAX)
    result[todo] = np.exp(_newton_bisect(size, rate, gone, target, tolerance, u, lo, hi))
    return result


def _newton_bisect(
    size: np.ndarray,
    rate: np.ndarray,
    gone: np.ndarray | None,
    target: np.ndarray,
    tolerance: np.ndarray,
    u: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
) -> np.ndarray:
    """Solve ``older(u) = target`` for ``u = log T`` on every row; ``older`` falls as ``u`` grows.

    Newton steps that leave the bracket ``[lo, hi]`` known to hold the root become bisection
    steps. Converged rows drop out, but the arrays are compacted only once more than half have
    converged: on small batches fancy indexing costs as much as an iteration.
    """
    solution = u.copy()
    rows = np.arange(u.size)
    for _ in range(MAX_ITERATIONS):
        rt = rate * np.exp(u)[:, None]
        survival = np.exp(-rt)
        if gone is None:
            older_pop = size * survival
            slope = (older_pop * rt).sum(axis=1)
        else:
            older_pop = size * np.maximum(survival, gone)
            slope = (size * survival * rt * (survival > gone)).sum(axis=1)
        excess = target - older_pop.sum(axis=1)  # > 0: too little is older than u: T* < u
        below = excess > 0
        hi = np.where(below, u, hi)
        lo = np.where(below, lo, u)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            newton = u - excess / slope
        # Stop on the side that fits (resident <= capacity, excess <= 0) within the tolerance, or
        # when the bracket has closed: then take its fitting end.
        narrow = hi - lo < LOG_TOLERANCE
        done = ((excess <= 0) & (excess >= -tolerance)) | narrow
        answer = np.where(narrow & below, lo, u)
        u = np.where(done, answer, np.where((newton > lo) & (newton < hi), newton, 0.5 * (lo + hi)))
        if done.all():
            break
        if 2 * done.sum() > done.size:
            solution[rows[done]] = u[done]
            keep = ~done
            rows, size, rate = rows[keep], size[keep], rate[keep]
            target, tolerance = target[keep], tolerance[keep]
            gone = None if gone is None else gone[keep]
            u, lo, hi = u[keep], lo[keep], hi[keep]
    solution[rows] = u
    return solution


def evicted_bytes_at(
    size_bytes: np.ndarray, rate_per_s: np.ndarray, t_s: np.ndarray, capacity_bytes: np.ndarray
) -> np.ndarray:
    """Per-population bytes evicted when the LRU keeps what is idle for less than ``t_s``.

    Touched populations lose ``size * exp(-rate * t)``. Untouched (rate-0) populations are the
    oldest of all: where ``t_s`` is finite all of them goes; where it is infinite they share, in
    proportion to their sizes, whatever overflow remains, so that exactly ``capacity_bytes`` stays.
    """
    finite_t = np.where(np.isfinite(t_s), t_s, MAX_T_S * 1e3)
    evicted = size_bytes * np.exp(-rate_per_s * finite_t[:, None])
    unbounded = np.flatnonzero(~np.isfinite(t_s))
    if unbounded.size:
        size, rate = size_bytes[unbounded], rate_per_s[unbounded]
        untouched = np.where(rate > 0, 0.0, size)
        untouched_total = untouched.sum(axis=1)
        overflow = size.sum(axis=1) - capacity_bytes[unbounded]
        share = np.divide(
            np.clip(overflow, 0.0, untouched_total),
            untouched_total,
            out=np.zeros_like(untouched_total),
            where=untouched_total > 0,
        )
        evicted[unbounded] = untouched * share[:, None]
    return evicted
