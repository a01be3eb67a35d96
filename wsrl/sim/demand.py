"""Demand sources: each guest's page populations (sizes and access rates) step by step.

:class:`WorkloadDemand` drives guests from workload files: base size and rate per population,
times the factors of its size and rate patterns (:mod:`wsrl.sim.patterns`), with per-guest
jitter drawn at :meth:`WorkloadDemand.reset`. :class:`CombinedDemand` lays trace-driven guests
(:mod:`wsrl.sim.trace_demand`) over it so that one scenario can mix both. Both implement
:class:`wsrl.sim.arrays.DemandSource`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, cast

import numpy as np

from wsrl.sim.config_patterns import Pattern
from wsrl.sim.config_workload import WorkloadConfig
from wsrl.sim.patterns import PatternSet


class SlotFiller(Protocol):
    """A source that owns some guests' populations and writes them into flat ``[H*G*P]`` arrays."""

    pop_is_anon: np.ndarray

    def reset(self, seed: int) -> None:
        """Restart from time 0 with this seed."""
        ...

    def fill(self, t_s: float, dt_s: float, size_bytes: np.ndarray, rate_per_s: np.ndarray) -> None:
        """Write the owned populations' sizes and rates at ``t_s`` into the flat arrays."""
        ...


class WorkloadDemand:
    """Demand of workload-driven guests: base sizes and rates times pattern factors.

    A new source is in the state :meth:`reset` with seed 0 gives; the simulator resets it with
    its own seed before a run.

    Args:
        pop_is_anon: bool ``[H, G, P]``.
        base_size_bytes: float ``[H, G, P]``, sizes at factor 1 (0 for padding).
        base_rate_per_s: float ``[H, G, P]``, per-page access rates at factor 1.
        patterns: ``(h, g, p, "size" | "rate", pattern)`` for every population with a pattern.
        jitter: float ``[H, G]``: per-guest variation of sizes (``1 + jitter * U(-1, 1)`` per
            population) and of pattern phases, drawn from the seed at :meth:`reset`.
        time_of_day_s: seconds since midnight UTC at time 0, for diurnal patterns
            (:class:`wsrl.sim.patterns.PatternSet`).
        pop_is_sweep: bool ``[H, G, P]``: populations touched as a cyclic sweep (default none).

    """

    def __init__(
        self,
        pop_is_anon: np.ndarray,
        base_size_bytes: np.ndarray,
        base_rate_per_s: np.ndarray,
        patterns: Sequence[tuple[int, int, int, str, Pattern]],
        jitter: np.ndarray,
        *,
        time_of_day_s: float = 0.0,
        pop_is_sweep: np.ndarray | None = None,
    ) -> None:
        self.shape = cast(tuple[int, int, int], tuple(pop_is_anon.shape))
        hosts, guests, pops = self.shape
        self.pop_is_anon = np.asarray(pop_is_anon, dtype=bool)
        self.pop_is_sweep = (
            np.zeros(self.shape, dtype=bool) if pop_is_sweep is None else np.asarray(pop_is_sweep, dtype=bool)
        )
        if self.pop_is_sweep.shape != self.shape:
            raise ValueError(f"pop_is_sweep shape {self.pop_is_sweep.shape} != {self.shape}")
        self.base_size_bytes = np.asarray(base_size_bytes, dtype=np.float64).reshape(-1)
        self.base_rate_per_s = np.asarray(base_rate_per_s, dtype=np.float64).reshape(-1)
        if (self.base_size_bytes < 0).any() or (self.base_rate_per_s < 0).any():
            raise ValueError("base sizes and rates must be >= 0")
        self.jitter = np.asarray(jitter, dtype=np.float64).reshape(-1)
        n = self.base_size_bytes.shape[0]
        entries = []
        for h, g, p, target, pattern in patterns:
            flat = (h * guests + g) * pops + p
            entries.append((flat if target == "size" else n + flat, h * guests + g, pattern))
        self.patterns = PatternSet(2 * n, hosts * guests, entries, time_of_day_s=time_of_day_s)
        self._guest_of_pop = np.repeat(np.arange(hosts * guests), pops)
        self._size_bytes = self.base_size_bytes.copy()
        self._n = n
        self.reset(0)

    @classmethod
    def from_workloads(
        cls,
        grid: Sequence[Sequence[tuple[WorkloadConfig, float, float] | None]],
        populations: int | None = None,
        *,
        time_of_day_s: float = 0.0,
    ) -> WorkloadDemand:
        """Build from ``grid[h][g] = (workload, scale, jitter)`` (None for a guest it does not drive).

        ``populations`` pads P (default: the most populations any workload has); ``time_of_day_s``
        is passed on to the patterns.
        """
        hosts = len(grid)
        guests = max((len(row) for row in grid), default=0)
        pops = max((len(c[0].population) for row in grid for c in row if c is not None), default=1)
        pops = max(pops, populations or 0)
        is_anon = np.zeros((hosts, guests, pops), dtype=bool)
        is_sweep = np.zeros((hosts, guests, pops), dtype=bool)
        size = np.zeros((hosts, guests, pops))
        rate = np.zeros((hosts, guests, pops))
        jitter = np.zeros((hosts, guests))
        patterns: list[tuple[int, int, int, str, Pattern]] = []
        for h, row in enumerate(grid):
            for g, cell in enumerate(row):
                if cell is None:
                    continue
                workload, scale, guest_jitter = cell
                jitter[h, g] = guest_jitter
                for p, pop in enumerate(workload.population):
                    is_anon[h, g, p] = pop.type == "anon"
                    is_sweep[h, g, p] = pop.access_order == "sweep"
                    size[h, g, p] = pop.size_bytes * scale
                    rate[h, g, p] = pop.rate_per_s
                    if pop.size_pattern is not None:
                        patterns.append((h, g, p, "size", pop.size_pattern))
                    if pop.rate_pattern is not None:
                        patterns.append((h, g, p, "rate", pop.rate_pattern))
        return cls(is_anon, size, rate, patterns, jitter, time_of_day_s=time_of_day_s, pop_is_sweep=is_sweep)

    def reset(self, seed: int) -> None:
        """Restart from time 0: draw jitter and the patterns' random state from ``seed``."""
        jitter_seq, pattern_seq = np.random.SeedSequence(seed).spawn(2)
        rng = np.random.default_rng(jitter_seq)
        mult = 1.0 + rng.uniform(-1.0, 1.0, self._n) * self.jitter[self._guest_of_pop]
        self._size_bytes = self.base_size_bytes * mult
        self.patterns.reset(np.random.default_rng(pattern_seq), self.jitter)

    def fill(self, t_s: float, dt_s: float, size_bytes: np.ndarray, rate_per_s: np.ndarray) -> None:
        """Write sizes and rates at ``t_s`` into flat ``[H*G*P]`` arrays (every slot)."""
        factors = self.patterns.evaluate(t_s, dt_s)
        np.multiply(self._size_bytes, factors[: self._n], out=size_bytes)
        np.multiply(self.base_rate_per_s, factors[self._n :], out=rate_per_s)

    def at(self, t_s: float, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Population sizes in bytes and per-page access rates in 1/s at ``t_s``, ``[H, G, P]``."""
        size = np.empty(self._n)
        rate = np.empty(self._n)
        self.fill(t_s, dt_s, size, rate)
        return size.reshape(self.shape), rate.reshape(self.shape)


class CombinedDemand:
    """Workload-driven guests plus other sources (trace-driven guests) written over their slots.

    ``base`` fills every slot (guests it does not drive have size 0); each overlay then writes
    the slots it owns. All share one ``[H, G, P]`` layout.
    """

    def __init__(self, base: WorkloadDemand, overlays: Sequence[SlotFiller]) -> None:
        self.base = base
        self.overlays = list(overlays)
        self.shape = base.shape
        self.pop_is_anon = base.pop_is_anon.copy()
        self.pop_is_sweep = base.pop_is_sweep  # overlays (recorded traces) have no access order
        for overlay in self.overlays:
            if overlay.pop_is_anon.shape != self.shape:
                raise ValueError(f"overlay shape {overlay.pop_is_anon.shape} != {self.shape}")
            self.pop_is_anon |= overlay.pop_is_anon

    def reset(self, seed: int) -> None:
        """Restart from time 0 with this seed (each part gets its own stream)."""
        seeds = np.random.SeedSequence(seed).generate_state(1 + len(self.overlays), dtype=np.uint64)
        self.base.reset(int(seeds[0]))
        for overlay, sub in zip(self.overlays, seeds[1:], strict=True):
            overlay.reset(int(sub))

    def at(self, t_s: float, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Population sizes in bytes and per-page access rates in 1/s at ``t_s``, ``[H, G, P]``."""
        n = self.pop_is_anon.size
        size = np.empty(n)
        rate = np.empty(n)
        self.base.fill(t_s, dt_s, size, rate)
        for overlay in self.overlays:
            overlay.fill(t_s, dt_s, size, rate)
        return size.reshape(self.shape), rate.reshape(self.shape)
