"""The guest and host memory model: one vectorised step for every guest of every host.

See ``docs/simulator.md`` for the model, its assumptions and its sources. In short:

* A guest's memory is a few page populations (anon or file), each with a size and a per-page
  access rate (independent reference model). A page of rate ``r`` has been idle longer than ``a``
  with probability ``exp(-r a)``, so the working-set histogram is computed from the rates.
* Given ``L`` bytes for its pages, the guest's LRU keeps what was touched within a characteristic
  time ``T*`` (Che's approximation, :mod:`wsrl.sim.che`) and evicts the rest: anon pages to swap
  (as far as swap has room), file pages to storage. Accesses to evicted pages are refaults; each
  costs the backing store's latency, and the stall fraction is the share of time at least one
  fault is outstanding (``1 - exp(-stall_seconds / dt)``, the busy probability of an M/G/inf queue).
* Evicted pages come back only when touched: after a guest grows, its evicted set drains at the
  pages' access rates (every page that comes back is a refault), it does not reappear for free.
* Access order: a population is touched either independently (above) or as a cyclic sweep, every
  page once per period in the same order (``pop_is_sweep``). A sweep's idle ages are uniform over
  the period, and an LRU evicts exactly the pages the sweep touches next: a sweep that does not
  fit misses on every access (LRU's loop pathology, measured on this kernel in
  ``docs/fidelity.md``), one that fits never misses.
* Two kernels: ``mglru`` (one recency for anon and file pages, as above) and ``classic`` (the
  active/inactive lists, where ``get_scan_count`` reclaims file pages first by ``swappiness`` and
  rebalances toward anon as file pages refault: file pages age ``T_file / T_anon`` times faster,
  :meth:`GuestMemoryModel._rebalance`).
* OOM: when the anon pages that swap cannot take no longer fit, the guest's workload is killed;
  its anon demand restarts from zero and ramps back over ``oom_restart_s``.
* Actuators: a memcg limit acts at once; a balloon moves at finite inflate/deflate speeds and
  stalls where the guest cannot give more memory back (unevictable plus anon that swap cannot hold).
* Host: when the guests' resident memory exceeds capacity minus reserve, the host swaps out its
  globally coldest pages (a second, host-wide Che solve); guest accesses to them pay the host's
  (heavy) swap latency and count as host faults.

Every array is ``[hosts, guests]`` or ``[hosts, guests, populations]``; nothing loops per guest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsrl.sim.arrays import ACTUATOR_BALLOON, KERNEL_CLASSIC, GuestArrays, HostArrays
from wsrl.sim.che import population_sum, solve_lru, survival
from wsrl.sim.defaults import SWAPPINESS
from wsrl.units import PAGE_BYTES

PSI_AVG10_WINDOW_S = 10.0
SCAN_COST_MEMORY_S = 30.0
"""How long a classic guest's reclaim remembers its refault costs, s. The kernel halves them each
time they pass a quarter of the LRU's pages: tens of seconds under the pressures measured here.
Shorter memories over-correct on 10 s steps (the balance then flips between two states)."""
MIN_SWAPPINESS = 1.0
"""swappiness 0 (never swap while file pages remain) and 200 read as 1 and 199: finite ratios."""
MIN_FILE_AGE_SCALE = 1e-3
MAX_FILE_AGE_SCALE = 1e3
"""Bounds of a classic guest's T_file / T_anon (beyond them one type is all the reclaim anyway)."""
REGIME_HYSTERESIS = 1e-3


@dataclass
class StepResult:
    """What one step did, per guest (``[hosts, guests]`` float64 unless noted).

    Fault counts are pages during the step; stall is seconds during the step.
    """

    oom_kills: np.ndarray  # int64: OOM kills this step (0 or 1)
    balloon_stalled: np.ndarray  # bool: a balloon could not reach its target this step
    balloon_deflated: np.ndarray  # bool: a deflate-on-OOM balloon gave memory back this step
    refault_anon_pages: np.ndarray
    refault_file_pages: np.ndarray
    host_fault_pages: np.ndarray
    evicted_anon_pages: np.ndarray  # swap-outs this step
    stall_s: np.ndarray
    stall_frac: np.ndarray
    host_overcommitted: np.ndarray  # bool [hosts]: the host swapped guest memory this step


class GuestMemoryModel:
    """State and step of the guest memory model for a batch of hosts.

    Args:
        guests: static per-guest parameters.
        hosts: static per-host parameters.
        pop_is_anon: ``[hosts, guests, populations]`` population types.
        pop_is_sweep: optional ``[hosts, guests, populations]``: populations touched as a cyclic
            sweep rather than independently (default: none).

    """

    def __init__(
        self,
        guests: GuestArrays,
        hosts: HostArrays,
        pop_is_anon: np.ndarray,
        pop_is_sweep: np.ndarray | None = None,
    ) -> None:
        self.guests = guests
        self.hosts = hosts
        self.pop_is_anon = np.asarray(pop_is_anon, dtype=bool)
        self.pop_is_file = ~self.pop_is_anon
        sweep = None if pop_is_sweep is None else np.asarray(pop_is_sweep, dtype=bool)
        if sweep is not None and sweep.shape != self.pop_is_anon.shape:
            raise ValueError(f"pop_is_sweep shape {sweep.shape} does not match {self.pop_is_anon.shape}")
        # None where no population sweeps: every formula then takes its independent-reference path.
        self.pop_is_sweep = sweep if sweep is not None and sweep.any() else None
        pops = self.pop_is_anon.shape[2]
        self._sweep_flat = None if self.pop_is_sweep is None else self.pop_is_sweep.reshape(-1, pops)
        self._anon_weight = self.pop_is_anon.astype(float)  # multiply-and-sum beats masking
        self._deflate_on_oom = (
            np.zeros(guests.shape, dtype=bool)
            if guests.deflate_on_oom is None
            else (guests.actuator == ACTUATOR_BALLOON) & guests.deflate_on_oom
        )
        # What the hosts have for guests' evictable pages: capacity - reserve - unevictable.
        self._host_available_bytes = (
            hosts.capacity_bytes
            - hosts.reserve_bytes
            - np.where(guests.mask, guests.unevictable_bytes, 0.0).sum(axis=1)
        )
        # Row views (one row per guest) for the solver's fancy indexing.
        self._anon_flat = self.pop_is_anon.reshape(-1, self.pop_is_anon.shape[2])
        self._swap_flat = guests.swap_capacity_bytes.ravel()
        if self.pop_is_anon.shape[:2] != guests.shape:
            raise ValueError(f"pop_is_anon shape {self.pop_is_anon.shape} does not match {guests.shape}")
        self._mask = guests.mask
        # The classic kernel's anon/file balance (step 5): file pages age faster than anon by the
        # ratio of get_scan_count's scan fractions, swappiness : (200 - swappiness) weighted by
        # each type's recent refault cost.
        self._classic = (
            np.zeros(guests.shape, dtype=bool)
            if guests.kernel is None
            else guests.mask & (guests.kernel == KERNEL_CLASSIC)
        )
        self._any_classic = bool(self._classic.any())  # one-LRU setups skip the balance entirely
        swappiness = np.full(guests.shape, SWAPPINESS) if guests.swappiness is None else guests.swappiness
        swappiness = np.clip(swappiness, MIN_SWAPPINESS, 200.0 - MIN_SWAPPINESS)
        self._file_bias_base = swappiness / (200.0 - swappiness)
        self.reset()

    # -- state ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Guests at their provisioned size with nothing evicted and every counter at zero."""
        shape = self.guests.shape
        pop_shape: tuple[int, int, int] = self.pop_is_anon.shape
        self.size_bytes = np.zeros(pop_shape)
        self.rate_per_s = np.zeros(pop_shape)
        self.evicted_bytes = np.zeros(pop_shape)
        self.host_swapped_bytes = np.zeros(pop_shape)
        self.visible_bytes = np.where(self._mask, self.guests.provisioned_bytes, 0.0).astype(float)
        self.target_bytes = self.visible_bytes.copy()
        self.restart_frac = np.ones(shape)
        self.refault_anon_total = np.zeros(shape)
        self.refault_file_total = np.zeros(shape)
        self.host_fault_total = np.zeros(shape)
        self.swap_out_total = np.zeros(shape)
        self.psi_some_total_s = np.zeros(shape)
        self.oom_kills_total = np.zeros(shape, dtype=np.int64)
        self.balloon_stall_steps = np.zeros(shape, dtype=np.int64)
        self.psi_some_avg10 = np.zeros(shape)
        self.host_time_s = np.full(shape[0], np.inf)
        self._host_swapping = False
        # Characteristic times of the last solves per guest (one LRU; anon and file LRUs when
        # swap is full): warm starts for the next step's solves.
        self._solve_times = np.full((*shape, 3), np.inf)
        # Classic guests: how much longer a file page stays in the LRU than an anon page of the
        # same access rate (T_file / T_anon; 1 for one LRU).
        self.file_age_scale = np.where(self._classic, self._file_bias_base, 1.0)
        # Guests whose anon eviction was capped by swap the last time they were under pressure
        # (their LRU split in two).
        self._swap_bound = np.zeros(shape, dtype=bool)

    def prime(self, size_bytes: np.ndarray, rate_per_s: np.ndarray) -> None:
        """Load the demand at time 0 without advancing time: nothing evicted, nothing counted."""
        self.size_bytes = np.maximum(np.asarray(size_bytes, dtype=float), 0.0)
        self.rate_per_s = np.maximum(np.asarray(rate_per_s, dtype=float), 0.0)
        self.evicted_bytes = np.zeros_like(self.size_bytes)

    # -- derived views ------------------------------------------------------------------------

    @property
    def resident_pop_bytes(self) -> np.ndarray:
        """``[hosts, guests, populations]`` bytes of each population in guest memory."""
        return self.size_bytes - self.evicted_bytes

    @property
    def resident_bytes(self) -> np.ndarray:
        """Guest memory in use: resident pages plus the unevictable part."""
        unevictable = np.where(self._mask, self.guests.unevictable_bytes, 0.0)
        return population_sum(self.resident_pop_bytes) + unevictable

    @property
    def swap_bytes(self) -> np.ndarray:
        """Anon bytes the guest holds in its swap."""
        return self._anon_sum(self.evicted_bytes)

    @property
    def demand_bytes(self) -> np.ndarray:
        """All population bytes plus unevictable: what the guest would use given unlimited memory."""
        return population_sum(self.size_bytes) + np.where(self._mask, self.guests.unevictable_bytes, 0.0)

    def min_feasible_bytes(self, size_bytes: np.ndarray | None = None) -> np.ndarray:
        """The smallest visible size the guest survives: unevictable plus anon that swap cannot take."""
        sizes = self.size_bytes if size_bytes is None else size_bytes
        return self._min_feasible(self._anon_sum(sizes))

    # -- the step ------------------------------------------------------------------------------

    def step(
        self, size_bytes: np.ndarray, rate_per_s: np.ndarray, target_bytes: np.ndarray, dt_s: float
    ) -> StepResult:
        """Advance every guest by ``dt_s`` seconds.

        Args:
            size_bytes: ``[hosts, guests, populations]`` demand sizes at the end of the step.
            rate_per_s: ``[hosts, guests, populations]`` per-page access rates.
            target_bytes: ``[hosts, guests]`` requested guest-visible sizes (balloon target or
                memcg limit); clamped to ``[0, provisioned]``.
            dt_s: step length in seconds.

        """
        g = self.guests
        mask = self._mask
        anon = self.pop_is_anon
        # Padding populations have size 0 by the DemandSource contract, so they never matter.
        rate = np.maximum(rate_per_s, 0.0)
        size = np.maximum(size_bytes, 0.0)

        # 1. OOM restart ramp: a killed workload's anon demand comes back over oom_restart_s.
        if (self.restart_frac < 1.0).any():
            self.restart_frac = np.minimum(1.0, self.restart_frac + dt_s / np.maximum(g.oom_restart_s, 1e-9))
            size = size * np.where(anon, self.restart_frac[..., None], 1.0)

        # 2. Populations that shrank free pages evenly across their resident and evicted parts.
        evicted = self.evicted_bytes
        if evicted.any():
            kept = np.divide(size, self.size_bytes, out=np.ones_like(size), where=self.size_bytes > size)
            evicted = np.minimum(evicted * kept, size)
        anon_bytes = self._anon_sum(size)

        # 3. Actuators: memcg at once, balloons at finite speed and never below what the guest
        # can give back.
        target = np.minimum(np.maximum(np.where(mask, target_bytes, 0.0), 0.0), g.provisioned_bytes)
        self.target_bytes = target
        floor_now = self._min_feasible(anon_bytes)
        is_balloon = g.actuator == ACTUATOR_BALLOON
        shrinking = target < self.visible_bytes
        moved = np.where(
            shrinking,
            np.maximum(target, self.visible_bytes - g.inflate_bytes_per_s * dt_s),
            np.minimum(target, self.visible_bytes + g.deflate_bytes_per_s * dt_s),
        )
        stuck_at = np.minimum(self.visible_bytes, floor_now)
        balloon_visible = np.where(shrinking, np.maximum(moved, stuck_at), moved)
        stuck = (balloon_visible > target) & (balloon_visible <= floor_now)
        balloon_stalled = is_balloon & mask & shrinking & stuck
        visible = np.where(is_balloon, balloon_visible, target)
        # Deflate-on-OOM balloons give memory back (at their deflate speed) rather than let the
        # guest run out.
        rescued = self._deflate_on_oom & mask & (visible < floor_now)
        if rescued.any():
            reach = np.minimum(visible + g.deflate_bytes_per_s * dt_s, g.provisioned_bytes)
            grown = np.minimum(floor_now, reach)
            visible = np.where(rescued, np.maximum(visible, grown), visible)
        self.visible_bytes = visible
        capacity = np.maximum(visible - g.unevictable_bytes, 0.0)

        # 4. OOM: anon that swap cannot hold does not fit. The workload is killed; its anon goes.
        oom = mask & (visible < floor_now)
        if oom.any():
            self.restart_frac = np.where(oom, 0.0, self.restart_frac)
            keep = ~(oom[..., None] & anon)
            size = size * keep
            evicted = evicted * keep
            self.oom_kills_total += oom

        # 5. Where the LRU settles under this capacity: Che's T*, with anon eviction capped by swap.
        # A classic kernel ages file pages at file_age_scale times the rate (refaults still come
        # at the true rates, step 6).
        aging_rate = rate
        if self._any_classic:
            aging_rate = rate * np.where(self.pop_is_file, self.file_age_scale[..., None], 1.0)
        equilibrium = self._equilibrium_evicted(size, aging_rate, capacity, population_sum(size))

        # 6. Evicted pages drain at their access rates (refaults) while the limit pins them at the
        # equilibrium; see _drain for the closed form.
        evicted_end, refault_bytes = _drain(evicted, equilibrium, rate, dt_s)
        if self.pop_is_sweep is not None:
            evicted_end, refault_bytes = _drain_sweeps(
                self.pop_is_sweep, size, evicted, equilibrium, rate, dt_s, evicted_end, refault_bytes
            )
        evicted_end = self._fit_swap(size, evicted, evicted_end)
        swapped_out = evicted_end - evicted + refault_bytes
        self.size_bytes = size
        self.rate_per_s = rate
        self.evicted_bytes = evicted_end

        refault_anon_pages = self._anon_sum(refault_bytes) / PAGE_BYTES
        refault_file_pages = population_sum(refault_bytes) / PAGE_BYTES - refault_anon_pages
        if self._any_classic:
            self._rebalance(refault_anon_pages, refault_file_pages, dt_s)
        evicted_anon_pages = self._anon_sum(swapped_out) / PAGE_BYTES

        # 7. Host: overflow past capacity - reserve goes to host swap, globally coldest first.
        host_fault_pages, host_over = self._host_swap(dt_s)

        stall_s = (
            refault_anon_pages * g.anon_fault_latency_s
            + refault_file_pages * g.file_fault_latency_s
            + host_fault_pages * self.hosts.swap_fault_latency_s[:, None]
        )
        stall_frac = np.where(mask, -np.expm1(-stall_s / dt_s), 0.0)
        decay = np.exp(-dt_s / PSI_AVG10_WINDOW_S)
        self.psi_some_avg10 = self.psi_some_avg10 * decay + 100.0 * stall_frac * (1.0 - decay)

        self.refault_anon_total += refault_anon_pages
        self.refault_file_total += refault_file_pages
        self.host_fault_total += host_fault_pages
        self.swap_out_total += evicted_anon_pages
        self.psi_some_total_s += stall_frac * dt_s
        self.balloon_stall_steps += balloon_stalled
        return StepResult(
            oom_kills=oom.astype(np.int64),
            balloon_stalled=balloon_stalled,
            balloon_deflated=rescued,
            refault_anon_pages=refault_anon_pages,
            refault_file_pages=refault_file_pages,
            host_fault_pages=host_fault_pages,
            evicted_anon_pages=evicted_anon_pages,
            stall_s=stall_s,
            stall_frac=stall_frac,
            host_overcommitted=host_over,
        )

    def _fit_swap(self, size: np.ndarray, evicted_before: np.ndarray, evicted_end: np.ndarray) -> np.ndarray:
        """Keep swap within its capacity while populations drain at different speeds.

        The equilibrium respects swap, but a slowly draining anon population can still hold more
        than its equilibrium share while another is pushed to its new one. The anon pushed out
        this step beyond what swap holds stays in memory instead, and file pages make room for it.
        """
        limit = self.guests.swap_capacity_bytes * (1.0 + REGIME_HYSTERESIS) + PAGE_BYTES
        overflow = self._anon_sum(evicted_end) - limit
        if not (overflow > 0).any():
            return evicted_end
        overflow = np.maximum(overflow, 0.0)[..., None]
        pushed = np.maximum(evicted_end - evicted_before, 0.0) * self._anon_weight
        pushed_total = population_sum(pushed)[..., None]
        back = pushed * _share(overflow, pushed_total)
        fixed = evicted_end - back
        file_resident = (size - fixed) * (1.0 - self._anon_weight)
        room = population_sum(back)[..., None]
        return fixed + file_resident * _share(room, population_sum(file_resident)[..., None])

    def _rebalance(self, refault_anon_pages: np.ndarray, refault_file_pages: np.ndarray, dt_s: float) -> None:
        """Classic guests' anon/file balance after a step, from the step's refaults.

        ``get_scan_count`` (mm/vmscan.c) scans the anon list at ``swappiness x (total + 1) /
        (anon cost + 1)`` and the file list at ``(200 - swappiness) x (total + 1) / (file cost +
        1)``, per page of each list, where a type's cost grows with its refaults (and decays as
        reclaim goes on). A page's time in the LRU is inversely its list's scan rate, so file
        pages stay ``swappiness / (200 - swappiness) x (file cost + 1) / (anon cost + 1)`` as long
        as anon pages: file first while file pages do not come back, anon once they do. The
        costs are the step's refaults, remembered over :data:`SCAN_COST_MEMORY_S`.
        """
        target = self._file_bias_base * (refault_file_pages + 1.0) / (refault_anon_pages + 1.0)
        target = np.clip(target, MIN_FILE_AGE_SCALE, MAX_FILE_AGE_SCALE)
        weight = -np.expm1(-dt_s / SCAN_COST_MEMORY_S)
        moved = np.exp((1.0 - weight) * np.log(self.file_age_scale) + weight * np.log(target))
        self.file_age_scale = np.where(self._classic, moved, 1.0)

    def _anon_sum(self, pop_bytes: np.ndarray) -> np.ndarray:
        """``[hosts, guests]`` sum of a per-population quantity over the anon populations."""
        return population_sum(pop_bytes * self._anon_weight)

    def _min_feasible(self, anon_bytes: np.ndarray) -> np.ndarray:
        stuck = np.maximum(anon_bytes - self.guests.swap_capacity_bytes, 0.0)
        return np.where(self._mask, self.guests.unevictable_bytes + stuck, 0.0)

    def _equilibrium_evicted(
        self, size: np.ndarray, rate: np.ndarray, capacity: np.ndarray, demand: np.ndarray
    ) -> np.ndarray:
        """Per-population evicted bytes at the LRU equilibrium for ``capacity`` bytes of pages.

        One LRU over all pages (Che), unless that would push more anon out than swap holds: then
        the kernel keeps anon and reclaims file harder, and anon and file become two LRUs of fixed
        sizes (anon keeps all but ``swap`` bytes). Each guest is solved in the regime it was in
        last step; guests whose regime changed are solved again in the other (at most once).
        Every problem of a pass is one stacked call to the solver.
        """
        pops = size.shape[2]
        binding = demand > capacity
        equilibrium = np.zeros_like(size)
        if not binding.any():
            return equilibrium
        rows = np.flatnonzero(binding.ravel())
        s = size.reshape(-1, pops)[rows]
        r = rate.reshape(-1, pops)[rows]
        cap = capacity.ravel()[rows]
        anon = self._anon_flat[rows]
        sweep_rows = None if self._sweep_flat is None else self._sweep_flat[rows]
        swap_cap = self._swap_flat[rows]
        times = self._solve_times.reshape(-1, 3)[rows]  # columns: one LRU, anon LRU, file LRU
        # Predict each guest's regime from the last time it was binding (guests move in and out
        # of pressure with their workload's cycle), or where it never was, from whether evicting
        # every file page would still leave more anon to evict than swap holds.
        bound = self._swap_bound.ravel()[rows]
        file_total = population_sum(s * ~anon)
        bound |= demand.ravel()[rows] - cap - file_total > swap_cap
        out = np.empty_like(s)
        pending = np.arange(rows.size)
        for attempt in range(2):
            one, two = pending[~bound[pending]], pending[bound[pending]]
            n1, n2 = one.size, two.size
            sweeps = None
            if n2 == 0 and n1 == rows.size:  # everyone in one LRU: views, not copies
                sizes, rates, caps, guesses = s, r, cap, times[:, 0]
                sweeps = sweep_rows
            elif n2 == 0:
                sizes, rates, caps, guesses = s[one], r[one], cap[one], times[one, 0]
                sweeps = None if sweep_rows is None else sweep_rows[one]
            else:
                anon_two = anon[two]
                anon_resident = np.maximum(population_sum(s[two] * anon_two) - swap_cap[two], 0.0)
                sizes = np.concatenate([s[one], s[two] * anon_two, s[two] * ~anon_two])
                rates = np.concatenate([r[one], r[two], r[two]])
                caps = np.concatenate([cap[one], anon_resident, np.maximum(cap[two] - anon_resident, 0.0)])
                guesses = np.concatenate([times[one, 0], times[two, 1], times[two, 2]])
                if sweep_rows is not None:
                    sweeps = np.concatenate([sweep_rows[one], sweep_rows[two], sweep_rows[two]])
            t, evicted = solve_lru(sizes, rates, caps, guesses, sweep=sweeps)
            out[one] = evicted[:n1]
            times[one, 0] = t[:n1]
            if n2:
                out[two] = evicted[n1 : n1 + n2] + evicted[n1 + n2 :]
                times[two, 1], times[two, 2] = t[n1 : n1 + n2], t[n1 + n2 :]
            if attempt == 1:
                break
            # One LRU that overflows swap is wrong; two LRUs where anon would keep younger pages
            # than file is wrong too (one LRU then fits in swap). Near the boundary both answers
            # agree, so a 0.1 % hysteresis keeps guests that sit on it from flipping every step
            # (swap may then hold up to 0.1 % more than its capacity).
            overflows = population_sum(evicted[:n1] * anon[one]) > swap_cap[one] * (1 + REGIME_HYSTERESIS) + (
                PAGE_BYTES
            )
            needless = t[n1 : n1 + n2] < t[n1 + n2 :] * (1.0 - REGIME_HYSTERESIS)
            if not (overflows.any() or needless.any()):
                break
            pending = np.concatenate([one[overflows], two[needless]])
            bound[pending] = ~bound[pending]
        self._solve_times.reshape(-1, 3)[rows] = times
        self._swap_bound.ravel()[rows] = bound
        equilibrium.reshape(-1, pops)[rows] = np.minimum(out, s)
        return equilibrium

    def _host_swap(self, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Host-level LRU over every guest's resident pages; returns host faults and overcommit."""
        g = self.guests
        available = self._host_available_bytes
        used = population_sum(self.size_bytes - self.evicted_bytes).sum(axis=1)
        over = used > available
        faults = np.zeros(g.shape)
        if not over.any():
            if self._host_swapping:
                self.host_swapped_bytes = np.zeros_like(self.size_bytes)
                self.host_time_s = np.full(over.shape, np.inf)
                self._host_swapping = False
            return faults, over
        self._host_swapping = True
        hosts = np.flatnonzero(over)
        _, guests, pops = self.size_bytes.shape
        # The host's LRU sees each guest's resident pages; it is assumed to order them by the same
        # idle age the guest sees (host access bits track guest accesses), so the host keeps, per
        # population, the resident pages idle for less than one host-wide T_h.
        size = self.size_bytes[hosts].reshape(hosts.size, -1)
        rate = self.rate_per_s[hosts].reshape(hosts.size, -1)
        evicted = self.evicted_bytes[hosts].reshape(hosts.size, -1)
        gone = np.divide(evicted, size, out=np.ones_like(size), where=size > 0)
        cap = np.maximum(available[hosts], 0.0)
        sweep = None if self.pop_is_sweep is None else self.pop_is_sweep[hosts].reshape(hosts.size, -1)
        # Host faults stay at the pages' rates (swapped * rate) for sweeps too: an approximation.
        t_host, older = solve_lru(size, rate, cap, self.host_time_s[hosts], kept_fraction=gone, sweep=sweep)
        swapped = np.maximum(older - evicted, 0.0)  # older counts the guest's own evictions too
        self.host_swapped_bytes = np.zeros_like(self.size_bytes)
        self.host_swapped_bytes[hosts] = swapped.reshape(hosts.size, guests, pops)
        self.host_time_s = np.full(over.shape, np.inf)
        self.host_time_s[hosts] = t_host
        faults[hosts] = population_sum((swapped * rate).reshape(hosts.size, guests, pops)) * dt_s / PAGE_BYTES
        return faults, over

    def cold_bytes(self, threshold_s: float) -> np.ndarray:
        """``[hosts, guests]`` resident bytes idle for longer than ``threshold_s`` (exact, no bins)."""
        size = self.size_bytes
        q = np.divide(self.evicted_bytes, size, out=np.ones_like(size), where=size > 0)
        surviving = survival(self.rate_per_s * threshold_s, self.pop_is_sweep)
        return population_sum(size * (np.maximum(surviving, q) - q))

    # -- histograms ------------------------------------------------------------------------------

    def histogram_bytes(self, edges_ms: np.ndarray) -> np.ndarray:
        """Working-set histograms of resident pages: ``[hosts, guests, 2 (anon, file), bins]``.

        ``bins = len(edges_ms) + 1``; the last bin is open-ended. Resident pages of a population
        are those idle for less than its cut-off age ``T`` with ``S(r T) = evicted / size``,
        so bin ``(lo, hi]`` holds ``size * (max(S(r lo), q) - max(S(r hi), q))`` with
        ``q = evicted / size`` and ``S`` the population's survival (:func:`wsrl.sim.che.survival`).
        Never-touched resident pages sit in the open bin. Bins sum to the
        resident bytes of each type exactly.
        """
        size = self.size_bytes
        hosts, guests, pops = size.shape
        q = np.divide(self.evicted_bytes, size, out=np.ones_like(size), where=size > 0)
        # Fraction of each population resident and idle longer than each edge, [rows, E], in place
        # and in float32: plenty for fractions and several times faster. The outer product of
        # rates and edges is one BLAS call. Byte sums telescope in float64.
        neg_edges_s = (np.asarray(edges_ms, dtype=np.float32) / np.float32(-1000.0)).reshape(1, -1)
        older = self.rate_per_s.astype(np.float32).reshape(-1, 1) @ neg_edges_s
        if self.pop_is_sweep is None:
            np.exp(older, out=older)
        else:
            swept = self.pop_is_sweep.reshape(-1)
            linear = np.maximum(older[swept] + np.float32(1.0), np.float32(0.0))
            np.exp(older, out=older)
            older[swept] = linear
        np.subtract(older, q.astype(np.float32).reshape(-1, 1), out=older)
        np.maximum(older, 0.0, out=older)
        weights = np.empty((hosts, guests, 2, pops), dtype=np.float32)
        np.multiply(size, self._anon_weight, out=weights[:, :, 0, :], casting="unsafe")
        np.subtract(size, weights[:, :, 0, :], out=weights[:, :, 1, :], casting="unsafe")
        # [H, G, 2, E]: resident bytes of each type idle longer than each edge.
        cold = (weights @ older.reshape(hosts, guests, pops, -1)).astype(np.float64)
        resident_pop = size - self.evicted_bytes
        resident_anon = self._anon_sum(resident_pop)
        out = np.empty((hosts, guests, 2, cold.shape[3] + 1))
        out[:, :, 0, 0] = resident_anon - cold[:, :, 0, 0]
        out[:, :, 1, 0] = population_sum(resident_pop) - resident_anon - cold[:, :, 1, 0]
        np.subtract(cold[..., :-1], cold[..., 1:], out=out[..., 1:-1])
        out[..., -1] = cold[..., -1]
        return np.maximum(out, 0.0, out=out)


def _drain_sweeps(
    sweep: np.ndarray,
    size: np.ndarray,
    evicted: np.ndarray,
    equilibrium: np.ndarray,
    rate: np.ndarray,
    dt_s: float,
    evicted_end: np.ndarray,
    refault: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_drain` for the populations touched as a cyclic sweep (the others are kept).

    The sweep touches ``r * size`` bytes per second in a fixed order, and the LRU has evicted
    exactly the pages it touches next. Pinned at an equilibrium ``E* > 0`` (the sweep does not
    fit), every touch misses: refaults ``r * size * dt``, not ``r * E* * dt``. Above it (memory was
    given back), the sweep brings the evicted pages back in order, ``r * size`` bytes per second,
    until ``E*`` is reached; a sweep that fits then stops refaulting.
    """
    sweep_bytes = rate * size * dt_s
    drained = np.maximum(evicted - sweep_bytes, equilibrium)
    end = np.where(equilibrium >= evicted, equilibrium, drained)
    misses = np.where(equilibrium > 0, sweep_bytes, evicted - end)
    return np.where(sweep, end, evicted_end), np.where(sweep, np.maximum(misses, 0.0), refault)


def _share(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """``part / whole`` capped at 1, and 0 where ``whole`` is 0."""
    return np.minimum(np.divide(part, whole, out=np.zeros_like(part), where=whole > 0), 1.0)


def _drain(
    evicted: np.ndarray, equilibrium: np.ndarray, rate: np.ndarray, dt_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Evicted bytes at the end of a step and refaulted bytes during it, per population.

    The evicted set ``E`` loses pages as they are touched (``dE/dt = -r E``) and the limit pushes
    it back up to its equilibrium ``E*`` (reclaim keeps it there, refaults then run at ``r E*``).
    From ``E0``:

    * ``E0 <= E*``: reclaim brings it to ``E*`` at once; refaults ``r E* dt``.
    * ``E0 > E*`` (memory was given back): ``E`` decays freely as ``E0 e^{-r t}``; if it reaches
      ``E*`` after ``tau = ln(E0/E*)/r < dt``, the rest of the step refaults at ``r E*``.
    """
    free = evicted * np.exp(-rate * dt_s)
    pinned = equilibrium >= evicted
    evicted_end = np.where(pinned, equilibrium, free)
    refault = np.where(pinned, rate * equilibrium * dt_s, evicted - free)
    reaches = ~pinned & (free < equilibrium)
    if reaches.any():
        # Rare (only right after a guest grew): the free decay meets the equilibrium mid-step.
        e0, e_star, r = evicted[reaches], equilibrium[reaches], rate[reaches]
        tau = np.log(e0 / e_star) / r
        evicted_end[reaches] = e_star
        refault[reaches] = (e0 - e_star) + r * e_star * (dt_s - tau)
    return evicted_end, np.maximum(refault, 0.0)
