"""``oracle``: knows the future demand; the upper bound on savings within the SLO (simulation only).

**What it proposes.** For each guest, the smallest size whose refaults stay under a share
(``budget_share``, default 0.7) of the SLO's promotion budget (:class:`wsrl.slo.Slo`:
0.2 % of the working set per minute), with no OOM. It spends the budget on the coldest pages:
under the simulator's LRU (Che's approximation, :mod:`wsrl.sim.che`) a size leaves resident exactly
the pages touched within a characteristic time ``T``; a population of ``s`` bytes touched at rate
``r`` per page then keeps ``s e^{-r T}`` bytes evicted and refaults ``r s e^{-r T}`` bytes per
second; the working set (resident pages touched within 120 s, plus unevictable) is
``sum s (1 - max(e^{-120 r}, e^{-r T})) + unevictable``. The refault rate falls and the budget
grows with ``T``, so a bisection on ``log T`` (:func:`slo_page_bytes`: every guest of many steps
at once, 30 halvings, no Python loop over guests) finds the smallest ``T`` within the budget; the
size is the bytes resident at that ``T`` plus the unevictable part. Swap is finite: where the anon
evicted at ``T`` would overflow it, anon stays at the ``T`` that fills swap exactly and only file
pages go further (the simulator's two-LRU regime), and the size never falls below unevictable plus
the anon that swap cannot take (no OOM). ``budget_share=0`` is ``oracle-zero``
(:class:`ZeroRefaultOraclePolicy`): next-step demand plus unevictable, no refault at all.

**Refaults still to come.** Pages evicted now come back when touched later, possibly much later:
an Android app sent to the background is cheap to evict until the user switches back to it, then
its pages all come back within seconds; a build's outputs, touched once an hour, trickle back
through the idle phase whose working set (hence budget) is ten times smaller. So each
population's refault rate is not its current access rate ``r_n`` but ``max(r_n, W_n F_n)``,
with ``F_n`` the largest, over the next ``horizon_s`` (2 h), of the rate at which today's evicted
bytes come back at step ``n + j`` (the share still evicted after the touches of the steps in
between, times the chance of a touch at step ``n + j``, per second) divided by that step's
working set ``W`` (pages touched within 120 s, all taken as resident). One backward pass
computes it: ``F_n = max(c_{n+1} / W_{n+1}, e^{-r_{n+1} dt} F_{n+1})``. For a population whose
rate and guest's working set never change it is ``r_n``. Without it (``horizon_s`` of one step) an
oracle breaks the SLO in about 30 % of the minutes of such guests (tested).

**Why 0.7 of the budget.** The prediction is the simulator's own equilibrium, but not every
detail of a step: evicted pages drain at the access rate of the step they come back in,
populations grow and shrink within a step, a guest's pages may be held evicted by the choices of
different past steps at once, the working set is read off histogram bins, and the SLO is judged
per minute on the interval's mean working set. Measured over 6 h on every bundled input
(``datacenter``, ``dense``, ``bitbrains-replay`` and the leaderboard's Bitbrains sample; seeds
0-2): shares up to 0.8 keep ``violation_frac`` at exactly 0, 0.9 lets about 0.2 % of the build
guests' minutes through on ``datacenter``, 1.0 about 8 % of all. 0.7 keeps one step of margin
and costs 0.2 points of savings against 0.8. On ``laptop`` the host cannot hold its three guests
at the sizes the SLO needs during a build (14 GiB for about 15), so the allocator squeezes the
bronze build guest and it breaks the SLO whatever the oracle proposes (as ``oracle-zero`` does).

**Balloons and OOM restarts.** A balloon can only deflate at its finite speed, so for balloon
guests the oracle looks ``lookahead_steps`` ahead and proposes
``max_k (need_{t+k} - (k - 1) * deflate_per_step)``: just enough that the balloon can still keep
up with every coming peak. memcg limits act at once and need only the next step. A workload killed
by an OOM (never by the oracle's sizes, but possibly by floors or the host's capacity) comes back
over ``oom_restart_s``; its anon sizes are scaled by that ramp before its size is solved. Floors,
the host's capacity (the allocator) and host swap can still cost refaults the oracle cannot avoid.

**Peeking without disturbing the run.** Demand sources draw random numbers (bursts, app switches)
as they are stepped, so calling the simulator's own source would change the run. The oracle steps
a ``copy.deepcopy`` of the source instead (its random generators included) through the same calls
the simulator makes (``at(n * step_s, step_s)`` for step ``n``): the copy then yields exactly the
demand the simulator will see. The copy is taken once and re-taken when the simulator was reset,
replaced, or stepped in a way the copy cannot follow (its step counter went backwards or the
demand it predicted is not what came). Sizes are solved in blocks of ``horizon_s``: the copy runs
two horizons ahead, one backward pass gives the block's refault rates and one bisection its
sizes, so a 6 h ``datacenter`` run spends about a second in the oracle.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from wsrl.errors import WsrlError
from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.policies.common import masked
from wsrl.sim.arrays import ACTUATOR_BALLOON, DemandSource
from wsrl.sim.che import MAX_T_S, MIN_T_S, population_sum, solve_characteristic_time, survival
from wsrl.sim.simulator import Simulator
from wsrl.slo import DEFAULT_SLO
from wsrl.units import PAGE_BYTES

DEFAULT_BUDGET_SHARE = 0.7
"""Share of the SLO's promotion budget the oracle plans to spend (see the module docstring)."""
DEFAULT_HORIZON_S = 7200.0
"""How far ahead evicted pages are counted as coming back: two hours (see the module docstring)."""
BISECTION_ITERATIONS = 30
"""Halvings of the ``log T`` bracket (``[MIN_T_S, MAX_T_S]``, 27.6 wide): ``T`` to 3e-8 relative."""
_LOG_MIN_T = float(np.log(MIN_T_S))
_LOG_MAX_T = float(np.log(MAX_T_S))


def simulator_of(snapshot: HostSnapshot, policy: str = "oracle") -> Simulator:
    """The simulator behind a snapshot; :class:`WsrlError` when the snapshot comes from elsewhere."""
    sim = snapshot.extra.get("simulator")
    if not isinstance(sim, Simulator):
        raise WsrlError(
            f"policy {policy!r} needs the simulator in snapshot.extra['simulator'] (it reads future "
            "demand, so it runs only in simulation); this snapshot has none "
            f"(extra keys: {sorted(snapshot.extra) or 'none'})"
        )
    return sim


def slo_page_bytes(
    size_bytes: np.ndarray,
    rate_per_s: np.ndarray,
    refault_rate_per_s: np.ndarray,
    is_anon: np.ndarray,
    swap_bytes: np.ndarray,
    unevictable_bytes: np.ndarray,
    budget_per_s: float,
    working_set_window_s: float,
    iterations: int = BISECTION_ITERATIONS,
    is_sweep: np.ndarray | None = None,
) -> np.ndarray:
    """The fewest resident page bytes per row whose refaults stay within the promotion budget.

    The LRU keeps the pages touched within ``T`` (anon at least within the ``T`` where swap is
    full); refaults cost ``sum refault_rate * size * e^{-rate T}`` bytes per second, allowed up
    to ``budget_per_s`` times the working set at ``T``. Solved by bisection on ``log T`` for every
    row at once (see the module docstring).

    Args:
        size_bytes: ``[rows, populations]`` population sizes.
        rate_per_s: ``[rows, populations]`` per-page access rates (what the LRU orders pages by).
        refault_rate_per_s: ``[rows, populations]`` rates at which evicted bytes come back.
        is_anon: ``[rows, populations]`` anon populations (the rest is file).
        swap_bytes: ``[rows]`` swap capacity: at most this much anon can be evicted.
        unevictable_bytes: ``[rows]`` unevictable memory (part of the working set).
        budget_per_s: refault bytes per second allowed per byte of working set.
        working_set_window_s: pages touched within this window are the working set.
        iterations: bisection steps.
        is_sweep: optional ``[rows, populations]`` populations touched as a cyclic sweep: their
            resident share at ``T`` is ``min(rate T, 1)`` and, while it is below 1, every touch
            misses (:mod:`wsrl.sim.che`, :mod:`wsrl.sim.model`).

    Returns:
        ``[rows]`` page bytes to keep resident (excluding unevictable), at least the anon that
        swap cannot take.

    """
    anon = is_anon.astype(float)
    anon_total = population_sum(size_bytes * anon)
    stuck = np.maximum(anon_total - swap_bytes, 0.0)
    # The characteristic time below which evicted anon would overflow swap.
    swap_full_s = np.zeros(anon_total.shape)
    bound = stuck > 0
    if bound.any():
        solved = solve_characteristic_time(
            size_bytes[bound] * anon[bound],
            rate_per_s[bound],
            stuck[bound],
            sweep=None if is_sweep is None else is_sweep[bound],
        )
        swap_full_s[bound] = np.minimum(solved, MAX_T_S)
    anon_floor_s = swap_full_s[:, None] * anon  # 0 for file populations
    in_window = survival(rate_per_s * working_set_window_s, is_sweep)
    weighted = refault_rate_per_s * size_bytes

    def older_and_missed(t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Share of each population older than ``t_s``, and the share of its touches that miss."""
        rate_t = rate_per_s * np.maximum(t_s[:, None], anon_floor_s)
        older = survival(rate_t, is_sweep)
        missed = older if is_sweep is None else np.where(is_sweep, (rate_t < 1.0).astype(float), older)
        return older, missed

    lo = np.full(anon_total.shape, _LOG_MIN_T)
    hi = np.full(anon_total.shape, _LOG_MAX_T)
    with np.errstate(over="ignore"):
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            older, missed = older_and_missed(np.exp(mid))
            refault = population_sum(weighted * missed)
            resident_in_window = size_bytes * (1.0 - np.maximum(in_window, older))
            working_set = population_sum(resident_in_window) + unevictable_bytes
            fits = refault <= budget_per_s * working_set
            hi = np.where(fits, mid, hi)
            lo = np.where(fits, lo, mid)
        older, _ = older_and_missed(np.exp(hi))
    # Anon keeps at least what swap cannot take (untouched anon, evicted first, may overflow it).
    resident = population_sum(size_bytes * (1.0 - older) * anon)
    file_resident = population_sum(size_bytes * (1.0 - older) * (1.0 - anon))
    kept: np.ndarray = np.maximum(resident, stuck) + file_resident
    return kept


class OraclePolicy:
    """Propose the smallest sizes that spend a share of the SLO budget (see the module docstring).

    Args:
        budget_share: share of the SLO's promotion budget to plan for; 0 keeps every page
            (next-step demand plus unevictable: no refault at all).
        lookahead_steps: steps of future demand a balloon guest is prepared for.
        horizon_s: how far ahead pages evicted now are counted as coming back, seconds.
        margin_bytes: slack added to every proposal (one page: guards against float rounding).
        promotion_frac_per_min: the SLO's promotion budget, a share of the working set per minute.
        working_set_window_ms: the SLO's working-set window.

    """

    name = "oracle"

    def __init__(
        self,
        *,
        budget_share: float = DEFAULT_BUDGET_SHARE,
        lookahead_steps: int = 30,
        horizon_s: float = DEFAULT_HORIZON_S,
        margin_bytes: float = PAGE_BYTES,
        promotion_frac_per_min: float = DEFAULT_SLO.promotion_frac_per_min,
        working_set_window_ms: int = DEFAULT_SLO.working_set_window_ms,
    ) -> None:
        if lookahead_steps < 1 or not horizon_s > 0 or margin_bytes < 0:
            raise ValueError("lookahead_steps must be >= 1, horizon_s > 0 and margin_bytes >= 0")
        if not 0.0 <= budget_share <= 1.0:
            raise ValueError(f"budget_share must be in [0, 1], got {budget_share}")
        if not promotion_frac_per_min >= 0 or not working_set_window_ms > 0:
            raise ValueError("promotion_frac_per_min must be >= 0 and working_set_window_ms > 0")
        self.budget_share = float(budget_share)
        self.lookahead_steps = int(lookahead_steps)
        self.horizon_s = float(horizon_s)
        self.margin_bytes = float(margin_bytes)
        self.promotion_frac_per_min = float(promotion_frac_per_min)
        self.working_set_window_ms = int(working_set_window_ms)
        self._sim: Simulator | None = None

    @property
    def _zero(self) -> bool:
        """Whether this oracle keeps every page (no refault budget to spend)."""
        return self.budget_share * self.promotion_frac_per_min == 0.0

    def reset(self, snapshot: HostSnapshot) -> None:
        """Copy the simulator's demand source as it is now."""
        self._sync(simulator_of(snapshot, self.name))

    def _sync(self, sim: Simulator) -> None:
        self._sim = sim
        self._seed = sim.seed
        self._shadow: DemandSource = copy.deepcopy(sim.setup.demand)
        self._produced = sim.steps
        self._seen = sim.steps
        self._horizon_steps = max(1, math.ceil(self.horizon_s / sim.step_s))
        self._solved = sim.steps  # needs are known for steps up to this one
        self._kept_from = sim.steps  # steps before this one are forgotten
        self._sizes: dict[int, np.ndarray] = {}
        self._rates: dict[int, np.ndarray] = {}
        self._refault_rates: dict[int, np.ndarray] = {}
        self._needs: dict[int, np.ndarray] = {}

    def _advance(self, sim: Simulator, last_step: int) -> None:
        """Step the copy of the demand up to ``last_step``; forget steps already past."""
        now = sim.steps
        while self._produced < last_step:
            self._produced += 1
            size, rate = self._shadow.at(self._produced * sim.step_s, sim.step_s)
            if self._produced > now:
                self._sizes[self._produced] = np.array(size, dtype=float)
                self._rates[self._produced] = np.array(rate, dtype=float)
        for old in range(self._kept_from, now):
            for store in (self._sizes, self._rates, self._refault_rates, self._needs):
                store.pop(old, None)
        self._kept_from = max(self._kept_from, now)

    def _agrees(self, sim: Simulator) -> bool:
        """Whether the demand the copy predicted for the current step is what the simulator has.

        Compared on file populations, which OOM kills and restarts leave alone; a mismatch means
        the simulator was reset or stepped in a way the copy did not follow.
        """
        predicted = self._sizes.get(sim.steps)
        if predicted is None:
            return True
        files = ~sim.model.pop_is_anon
        return bool(np.allclose(predicted[files], sim.model.size_bytes[files], rtol=1e-12, atol=0.0))

    def decide(self, snapshot: HostSnapshot) -> np.ndarray:
        """The smallest sizes within the refault budget over the next interval(s)."""
        sim = simulator_of(snapshot, self.name)
        if sim is not self._sim or sim.seed != self._seed or sim.steps < self._seen or not self._agrees(sim):
            self._sync(sim)
        self._seen = sim.steps
        guests = sim.setup.guests
        model = sim.model
        is_balloon = guests.actuator == ACTUATOR_BALLOON
        steps = self.lookahead_steps if is_balloon[guests.mask].any() else 1
        now = sim.steps
        future = range(now + 1, now + steps + 1)
        if self._zero:
            self._advance(sim, now + steps)
        while self._solved < now + steps and not self._zero:
            self._solve_block(sim)
        sizes = np.stack([self._sizes[n] for n in future])
        # The OOM restart ramp: a killed workload's anon comes back over oom_restart_s (the model
        # scales anon sizes by the ramp before anything else).
        k = np.arange(1, steps + 1)[:, None, None]
        ramping = bool((model.restart_frac < 1.0).any())
        if ramping:
            restart_s = np.maximum(guests.oom_restart_s, 1e-9)
            ramp = np.minimum(1.0, model.restart_frac[None] + k * sim.step_s / restart_s)
            sizes = sizes * np.where(model.pop_is_anon[None], ramp[..., None], 1.0)
        if self._zero:
            need = population_sum(sizes) + np.where(guests.mask, guests.unevictable_bytes, 0.0)[None]
        elif ramping:
            rates = np.stack([self._rates[n] for n in future])
            need = self._needs_for(sim, sizes, rates, np.stack([self._refault_rates[n] for n in future]))
        else:
            need = np.stack([self._needs[n] for n in future])
        # memcg limits act at once: a huge finite "speed" keeps only the k = 1 term (need itself).
        instant = np.finfo(float).max / (steps + 1)
        deflate_per_step = np.where(is_balloon, guests.deflate_bytes_per_s * sim.step_s, instant)
        reachable = need - (k - 1) * deflate_per_step[None]
        target = reachable.max(axis=0) + self.margin_bytes
        return masked(snapshot, np.minimum(target, snapshot.provisioned_bytes))

    def _solve_block(self, sim: Simulator) -> None:
        """Refault rates and needs for the next ``horizon`` steps after the last solved one.

        The copy of the demand is run a further horizon ahead; a page evicted at step ``n``
        comes back, per second, at the largest over ``j >= 1`` of (the share of it still evicted
        after the touches of steps ``n+1 .. n+j-1``) x (the chance of a touch at step ``n+j``)
        / ``step_s``, relative to the working set then: ``F_n = max(c_{n+1} / W_{n+1},
        e^{-r_{n+1} dt} F_{n+1})``, one backward pass over the block and its horizon (``F`` is
        taken as 0 past the horizon). The population's refault rate is then
        ``max(r_n, W_n F_n)``.
        """
        horizon = self._horizon_steps
        first = self._solved + 1
        block = range(first, first + horizon)
        self._advance(sim, first + 2 * horizon - 1)
        dt_s = sim.step_s
        window_s = self.working_set_window_ms / 1000.0
        guests = sim.setup.guests
        unevictable = np.where(guests.mask, guests.unevictable_bytes, 0.0)
        span = range(first, first + 2 * horizon)
        sizes = np.stack([self._sizes[n] for n in span])
        rates = np.stack([self._rates[n] for n in span])
        touched = rates * dt_s
        # A page's chance of going untouched through a step, and the share of a population touched
        # within the window: exp(-r t) for independent pages, max(1 - r t, 0) for a sweep's.
        sweep = sim.model.pop_is_sweep
        stays = survival(touched, sweep)
        # Working set of each step as if every page were resident (pages touched within the window).
        window_bytes = population_sum(sizes * (1.0 - survival(rates * window_s, sweep))) + unevictable
        inv_window = np.divide(1.0, window_bytes, out=np.zeros_like(window_bytes), where=window_bytes > 0)
        comes_back = (1.0 - stays) / dt_s * inv_window[..., None]
        later = np.zeros(rates.shape)
        for i in range(len(span) - 2, -1, -1):
            np.maximum(comes_back[i + 1], stays[i + 1] * later[i + 1], out=later[i])
        count = len(block)
        refault_rate = np.maximum(rates[:count], window_bytes[:count, ..., None] * later[:count])
        needs = self._needs_for(sim, sizes[:count], rates[:count], refault_rate)
        for index, n in enumerate(block):
            self._refault_rates[n] = refault_rate[index]
            self._needs[n] = needs[index]
        self._solved = block[-1]

    def _needs_for(
        self, sim: Simulator, sizes: np.ndarray, rates: np.ndarray, refault_rate: np.ndarray
    ) -> np.ndarray:
        """``[steps, hosts, guests]`` sizes within the budget for ``[steps, hosts, guests, pops]`` demand."""
        guests = sim.setup.guests
        mask = np.broadcast_to(guests.mask, sizes.shape[:-1])
        anon = np.broadcast_to(sim.model.pop_is_anon, sizes.shape)
        swap = np.broadcast_to(guests.swap_capacity_bytes, mask.shape)
        unevictable = np.broadcast_to(np.where(guests.mask, guests.unevictable_bytes, 0.0), mask.shape)
        sweep = sim.model.pop_is_sweep
        pages = slo_page_bytes(
            sizes[mask],
            rates[mask],
            refault_rate[mask],
            anon[mask],
            swap[mask],
            unevictable[mask],
            self.budget_share * self.promotion_frac_per_min / 60.0,
            self.working_set_window_ms / 1000.0,
            is_sweep=None if sweep is None else np.broadcast_to(sweep, sizes.shape)[mask],
        )
        need = np.zeros(mask.shape)
        need[mask] = pages + unevictable[mask]
        return need


class ZeroRefaultOraclePolicy(OraclePolicy):
    """``oracle-zero``: the oracle that keeps every page of the demand (no refault at all).

    Next-step demand plus unevictable memory (and the balloon lookahead): the upper bound on
    savings with zero refaults, which :class:`OraclePolicy` passes by spending the SLO's budget.

    Args:
        lookahead_steps: steps of future demand a balloon guest is prepared for.
        margin_bytes: slack added to every proposal (one page: guards against float rounding).

    """

    name = "oracle-zero"

    def __init__(self, *, lookahead_steps: int = 30, margin_bytes: float = PAGE_BYTES) -> None:
        super().__init__(budget_share=0.0, lookahead_steps=lookahead_steps, margin_bytes=margin_bytes)
