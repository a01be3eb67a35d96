"""Characteristic-time solver for LRU under the independent reference model (Che's approximation).

A page touched as a Poisson process of rate ``r`` is idle longer than ``T`` with probability
``exp(-r T)``. An LRU list that holds ``C`` bytes keeps exactly the pages idle for less than a
characteristic time ``T*`` with ``sum_p size_p * (1 - exp(-r_p T*)) = C`` (Che, Tung and Wang,
IEEE JSAC 20(7), 2002; Fricker, Robert and Roberts, ITC 24, 2012 show why it is accurate far
beyond its original assumptions). Everything idle longer than ``T*`` is evicted; accesses to
evicted pages are refaults.

A population may instead be touched as a cyclic **sweep** (a garbage collector's mark, a scan
loop, a periodic checksum): every page once per period ``1/r``, always in the same order. Its
pages' idle ages are then uniform on ``[0, 1/r)``, so the share idle longer than ``T`` is
``max(1 - r T, 0)`` instead of ``exp(-r T)``: the renewal form of Che's approximation for a
deterministic reuse time (Martina, Garetto and Leonardi, INFOCOM 2014). The solver takes that
survival per population (``sweep``); what it means for refaults is the model's business
(:mod:`wsrl.sim.model`).

The solver works on rows of a 2-D array (one row per guest or per host), all rows at once: the
bytes older than ``T`` are convex and decreasing in ``T``, so a Newton iteration guarded by a
bisection bracket converges for every row with no per-row Python code.
"""

from __future__ import annotations

import numpy as np

# Bracket for the characteristic time, seconds. Below 1 ms nothing in a guest is that hot; above
# ~30 years nothing is that cold. Outside it, the solution is clamped to the bracket's end.
MIN_T_S = 1e-3
MAX_T_S = 1e9
_LOG_MIN = float(np.log(MIN_T_S))
_LOG_MAX = float(np.log(MAX_T_S))
# Convergence: resident bytes within this relative error of the capacity or within one 4 KiB page,
# or the log-bracket narrower than LOG_TOLERANCE. The evicted bytes are then rescaled to fill the
# capacity exactly; the tolerance only bounds how far the split between populations can be off.
RELATIVE_TOLERANCE = 1e-6
ABSOLUTE_TOLERANCE_BYTES = 4096.0
LOG_TOLERANCE = 1e-9
MAX_ITERATIONS = 80
# Bisection can only have closed the bracket after this many iterations (it halves a 30-wide
# log-bracket per iteration at best); checking earlier is wasted work.
NARROW_CHECK_AFTER = 8


_ONES: dict[int, np.ndarray] = {}


def population_sum(values: np.ndarray) -> np.ndarray:
    """Sum over the last (populations) axis.

    A matrix-vector product with ones: numpy's reductions over a short last axis cost several
    times more than BLAS here, and this is the simulator's hottest operation.
    """
    width = values.shape[-1]
    ones = _ONES.get(width)
    if ones is None:
        ones = _ONES.setdefault(width, np.ones(width))
    return values @ ones


def resident_bytes_at(
    size_bytes: np.ndarray, rate_per_s: np.ndarray, t_s: np.ndarray, sweep: np.ndarray | None = None
) -> np.ndarray:
    """Bytes idle for less than ``t_s`` (one value per row): ``sum size * (1 - survival(rate * t))``."""
    rate_times_t = rate_per_s * t_s[:, None]
    touched = -np.expm1(-rate_times_t)  # precise where r t is tiny
    if sweep is not None:
        touched = np.where(sweep, np.minimum(rate_times_t, 1.0), touched)
    return population_sum(size_bytes * touched)


def survival(rate_times_t: np.ndarray, sweep: np.ndarray | None = None) -> np.ndarray:
    """Share of a population's pages idle longer than ``t``, given ``rate * t``.

    ``exp(-r t)`` for independent references; ``max(1 - r t, 0)`` where ``sweep`` is set.
    """
    independent = np.exp(-rate_times_t)
    if sweep is None:
        return independent
    result: np.ndarray = np.where(sweep, np.maximum(1.0 - rate_times_t, 0.0), independent)
    return result


def solve_characteristic_time(
    size_bytes: np.ndarray,
    rate_per_s: np.ndarray,
    capacity_bytes: np.ndarray,
    guess_s: np.ndarray | None = None,
    kept_fraction: np.ndarray | None = None,
    sweep: np.ndarray | None = None,
) -> np.ndarray:
    """The characteristic time alone; see :func:`solve_lru`."""
    return solve_lru(size_bytes, rate_per_s, capacity_bytes, guess_s, kept_fraction, sweep)[0]


def solve_lru(
    size_bytes: np.ndarray,
    rate_per_s: np.ndarray,
    capacity_bytes: np.ndarray,
    guess_s: np.ndarray | None = None,
    kept_fraction: np.ndarray | None = None,
    sweep: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``T*`` per row at which the pages idle for less than it fill ``capacity_bytes``.

    A good ``guess_s`` (the previous step's ``T*``) makes it converge in two or three iterations.

    Args:
        size_bytes: ``[rows, populations]`` population sizes.
        rate_per_s: ``[rows, populations]`` per-page access rates (0 = never touched).
        capacity_bytes: ``[rows]`` what the LRU may hold.
        guess_s: optional ``[rows]`` starting points, clamped into the solver's bracket.
        kept_fraction: optional ``[rows, populations]`` fractions ``q`` of each population that
            are already gone below this LRU: a population then holds
            ``size * (1 - max(exp(-rate T), q))``. The host's LRU over guests' resident pages
            uses it; a guest's own LRU leaves it out (``q = 0``).
        sweep: optional bool ``[rows, populations]``: populations touched as a cyclic sweep
            (:func:`survival`); ``None`` (the fast path) when there are none.

    Returns:
        ``[rows]`` characteristic times in seconds: ``inf`` where every touched page fits (the
        untouched, rate-0 pages are then the only ones evicted), ``0`` where not even the pages
        touched within :data:`MIN_T_S` fit (the LRU then keeps nothing); and ``[rows,
        populations]`` the bytes of each population idle for longer than that time, counting the
        ``kept_fraction`` part as gone: what the LRU evicts, plus what was gone before.

    """
    rows = size_bytes.shape[0]
    if sweep is not None and not (sweep & (rate_per_s > 0)).any():
        sweep = None
    touched = rate_per_s > 0
    # Bytes this LRU holds per population: all of it, or what is left above ``kept_fraction``.
    present = size_bytes if kept_fraction is None else size_bytes * (1.0 - kept_fraction)
    touched_bytes = population_sum(np.where(touched, present, 0.0))
    result = np.full(rows, np.inf)
    older = np.empty(size_bytes.shape)
    unbounded = capacity_bytes >= touched_bytes
    if unbounded.any():
        where = np.flatnonzero(unbounded)
        older[where] = (size_bytes[where] - present[where]) + _untouched_share(
            present[where], touched[where], capacity_bytes[where]
        )
    todo = np.flatnonzero(~unbounded)
    if todo.size == 0:
        return result, older
    # Most calls solve every row: then a slice (a view) replaces fancy indexing (a copy).
    pick: slice | np.ndarray = slice(None) if todo.size == rows else todo
    # Rows that cannot even hold what was touched within MIN_T_S keep nothing: T* = 0. What is
    # touched within MIN_T_S is at most sum(size * rate) * MIN_T_S, so only rows with less room
    # than that need the exact check.
    candidates = capacity_bytes[pick] < population_sum(size_bytes[pick] * rate_per_s[pick]) * MIN_T_S
    if candidates.any():
        positions = np.flatnonzero(candidates)
        picked = todo[positions]
        quickest = survival(rate_per_s[picked] * MIN_T_S, None if sweep is None else sweep[picked])
        if kept_fraction is not None:
            quickest = np.maximum(quickest, kept_fraction[picked])
        hopeless = population_sum(size_bytes[picked] * (1.0 - quickest)) >= capacity_bytes[picked]
        if hopeless.any():
            result[picked[hopeless]] = 0.0
            older[picked[hopeless]] = size_bytes[picked[hopeless]]
            keep = np.ones(todo.size, dtype=bool)
            keep[positions[hopeless]] = False
            todo = todo[keep]
            if todo.size == 0:
                return result, older
            pick = todo
    size = size_bytes[pick]
    rate = rate_per_s[pick]
    gone = None if kept_fraction is None else kept_fraction[pick]
    swept = None if sweep is None else sweep[pick]
    capacity = capacity_bytes[pick]
    # The solve works on the bytes that must be older than T*: everything that is not resident.
    target = population_sum(size) - capacity
    tolerance = np.maximum(capacity * RELATIVE_TOLERANCE, ABSOLUTE_TOLERANCE_BYTES)
    if guess_s is None:
        u = np.full(todo.size, 0.5 * (_LOG_MIN + _LOG_MAX))
    else:
        # An infinite guess (the row fitted last time) starts at the bracket's top, from where
        # one Newton step lands below the root; a zero, negative or NaN one at its bottom.
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.fmin(np.fmax(np.log(np.asarray(guess_s, dtype=float)[pick]), _LOG_MIN), _LOG_MAX)
    lo = np.full(todo.size, _LOG_MIN)
    hi = np.full(todo.size, _LOG_MAX)
    u, older_todo = _newton_bisect(size, rate, gone, target, tolerance, u, lo, hi, swept)
    # Within the tolerance of T*, spread the last few bytes over the populations in proportion
    # to what they lose at T*, so that exactly ``capacity`` stays resident.
    # Untouched pages are all older than any T*: only the touched ones are rescaled (scaling the
    # untouched up would be clipped at their size and leave the capacity missed).
    touched_todo = rate > 0
    untouched_older = population_sum(np.where(touched_todo, 0.0, older_todo))
    movable = population_sum(older_todo) - untouched_older
    scale = np.divide(target - untouched_older, movable, out=np.ones_like(target), where=movable > 0)
    older[pick] = np.minimum(np.where(touched_todo, older_todo * scale[:, None], older_todo), size)
    result[pick] = np.exp(u)
    return result, older


def _newton_bisect(
    size: np.ndarray,
    rate: np.ndarray,
    gone: np.ndarray | None,
    target: np.ndarray,
    tolerance: np.ndarray,
    u: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    sweep: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Solve ``older(u) = target`` for ``u = log T`` on every row; ``older`` falls as ``u`` grows.

    Newton steps (taken in ``T``) that leave the bracket ``[lo, hi]`` known to hold the root
    become bisection steps. Converged rows drop out, but the arrays are compacted only once more
    than half have converged: on small batches fancy indexing costs as much as an iteration.
    Returns ``u`` and, per population, the bytes older than ``exp(u)``.
    """
    solution = u.copy()
    older_solution = np.empty_like(size)
    rows = np.arange(u.size)
    neg_rate = -rate
    multiply = np.multiply
    ones = np.ones(size.shape[1])
    # Step lengths one and two iterations ago (sweeps only): a Newton step is taken only if it is
    # at most half the step before last (Brent's safeguard against cycling).
    step_last = np.full(u.size, np.inf)
    step_before = step_last.copy()
    # One errstate for the whole loop: numpy's context manager costs as much as a small ufunc.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for iteration in range(MAX_ITERATIONS):
            minus_rt = multiply(neg_rate, np.exp(u)[:, None])
            surviving = np.exp(minus_rt)
            if sweep is not None:
                surviving = np.where(sweep, np.maximum(1.0 + minus_rt, 0.0), surviving)
            older_pop = multiply(size, surviving if gone is None else np.maximum(surviving, gone))
            older_total = older_pop @ ones
            excess = target - older_total  # > 0: too little is older than u: T* < u
            below = excess > 0
            hi = np.where(below, u, hi)
            lo = np.where(below, lo, u)
            # Stop within the tolerance on either side (the caller's bytes are rescaled to hit
            # the capacity exactly), or when the bracket has closed: then take its fitting end.
            done = np.abs(excess) <= tolerance
            if iteration >= NARROW_CHECK_AFTER:
                narrow = hi - lo < LOG_TOLERANCE
                moved = narrow & below
                if moved.any():  # the answer is the bracket's fitting end, not where we stand
                    u = np.where(moved, lo, u)
                    moved_gone = None if gone is None else gone[moved]
                    moved_sweep = None if sweep is None else sweep[moved]
                    older_pop[moved] = _older(size[moved], neg_rate[moved], moved_gone, u[moved], moved_sweep)
                done |= narrow
            if done.all():
                break
            # Newton on log(older) as a function of T. log(older) is convex in T (a log-sum of
            # exponentials), so from below the root Newton never overshoots it and from above one
            # step lands below; for a single population it is exact in one step, where Newton on
            # older itself crawls 1/rate seconds per step through the exponential's tail.
            # ``slope`` is T d(older)/dT (negative). Sweeps need a safeguard (below).
            if sweep is None and gone is None:
                slope = multiply(older_pop, minus_rt) @ ones
            else:
                d_share = surviving * minus_rt
                if sweep is not None:
                    d_share = np.where(sweep, minus_rt * (surviving > 0), d_share)
                if gone is not None:
                    d_share = d_share * (surviving > gone)
                slope = (size * d_share) @ ones
            newton = u + np.log1p(-np.log(older_total / target) * older_total / slope)
            if sweep is None:
                inside = (newton >= lo) & (newton <= hi)
            else:
                # A sweep's older bytes fall linearly in T up to its period and are 0 after it, so
                # log(older) has kinks and is not convex: Newton can overshoot, or cycle between
                # the bracket's two ends. Newton on older itself (convex in T) is tried next, and
                # only a step strictly inside the bracket and at most half the step before last
                # is taken; otherwise bisection.
                inside = (newton > lo) & (newton < hi)
                if not inside.all():
                    linear = u + np.log1p((target - older_total) / slope)
                    newton = np.where(inside, newton, linear)
                    inside = (newton > lo) & (newton < hi)
                inside &= np.abs(newton - u) <= 0.5 * step_before
            newton = np.where(inside, newton, 0.5 * (lo + hi))
            if sweep is not None:
                step_before, step_last = step_last, np.abs(newton - u)
            u = np.where(done, u, newton)
            if 2 * np.count_nonzero(done) > done.size:
                solution[rows[done]] = u[done]
                older_solution[rows[done]] = older_pop[done]
                keep = ~done
                rows, size, neg_rate = rows[keep], size[keep], neg_rate[keep]
                target, tolerance = target[keep], tolerance[keep]
                gone = None if gone is None else gone[keep]
                sweep = None if sweep is None else sweep[keep]
                u, lo, hi = u[keep], lo[keep], hi[keep]
                step_last, step_before = step_last[keep], step_before[keep]
        else:  # out of iterations: u moved after older_pop was computed
            older_pop = _older(size, neg_rate, gone, u, sweep)
    solution[rows] = u
    older_solution[rows] = older_pop
    return solution, older_solution


def _older(
    size: np.ndarray, neg_rate: np.ndarray, gone: np.ndarray | None, u: np.ndarray, sweep: np.ndarray | None
) -> np.ndarray:
    """Bytes of each population idle for longer than ``exp(u)``."""
    surviving = survival(-neg_rate * np.exp(u)[:, None], sweep)
    return size * (surviving if gone is None else np.maximum(surviving, gone))


def _untouched_share(
    present_bytes: np.ndarray, touched: np.ndarray, capacity_bytes: np.ndarray
) -> np.ndarray:
    """Evicted bytes where every touched page fits: untouched pages share the overflow by size.

    Untouched (rate-0) pages are the oldest of all, so they go first, in proportion to their sizes,
    until exactly ``capacity_bytes`` stays.
    """
    untouched = np.where(touched, 0.0, present_bytes)
    untouched_total = population_sum(untouched)
    overflow = population_sum(present_bytes) - capacity_bytes
    share = np.divide(
        np.minimum(np.maximum(overflow, 0.0), untouched_total),
        untouched_total,
        out=np.zeros_like(untouched_total),
        where=untouched_total > 0,
    )
    return untouched * share[:, None]
