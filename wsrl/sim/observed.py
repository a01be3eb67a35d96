"""What a real host's histogram source would report of the simulator's exact ages.

The memory model knows every page's idle age exactly
(:meth:`wsrl.sim.model.GuestMemoryModel.histogram_bytes`); a real host does not. Each guest names
the source its host reads (``histogram_source`` in the scenario, stored in
:attr:`wsrl.sim.arrays.GuestArrays.histogram_source`), and the snapshot the policies see carries
what that source would give, on the simulator's edges, re-binned with the rule the runner applies
to every backend's histogram (:meth:`wsrl.histogram.Histogram.rebin`: an open-ended bin goes to
the first bin above its lower bound). Sizes, refaults, swap, PSI and OOM kills stay exact (kernel
counters on every host), and the memory model, the metrics and the reward keep using the exact
state.

* ``exact`` (default): the model's ages on the simulator's edges, unchanged.
* ``lru_gen``: MGLRU's generations. The runner applies no coarsening of its own beyond the
  re-binning onto its edges (the generations' ages are parsed as the kernel prints them), so the
  simulator reports the exact ages here too.
* ``referenced``: page-table accessed bits (:mod:`wsrl.backends.referenced`) with its default
  edges and cycle (:mod:`wsrl.formats.referenced`): bins up to 120 s, everything older in the
  open-ended bin (on the simulator's edges: the bin just above 120 s), and one histogram per cycle
  held in between. The bytes referenced within ``e`` after a clear, read at ``e``, are the bytes
  whose last access is at most ``e`` old at that read, so in a steady state the source's bins are
  the exact ages on its edges; the simulator takes them from the state at the end of each cycle
  (simulation time a multiple of the cycle, or the first step after it), and at reset from the
  primed state, as if the source had completed a cycle just before the run began (a runner that
  was already up, not its first-cycle fallback).
* ``memory_stat``: the two bins the cgroup backend makes of ``memory.stat``
  (:func:`wsrl.formats.memory_stat.lru_rows`): active bytes at ages up to 1 s, inactive bytes in
  the open-ended bin. The simulator has no LRU lists, so it estimates their sizes per memory type
  (an assumption, not a measurement): the inactive list holds the coldest bytes, at least the share
  the kernel's reclaim balances it to (``inactive * ratio >= active`` with
  ``ratio = int_sqrt(10 * GiB)``, 1 under 1 GiB: ``inactive_is_low`` in ``mm/vmscan.c``) and every
  byte idle longer than the simulator's longest edge (untouched that long: never activated, or
  deactivated since). The simulator's unevictable memory (kernel, page tables) is on no LRU list,
  so the ``unevictable`` field is 0 and the bins add up to the exact histogram's bytes.
"""

from __future__ import annotations

import math

import numpy as np

from wsrl.agent.bins import overlap_weights
from wsrl.formats.memory_stat import LRU_EDGE_MS, lru_rows
from wsrl.formats.referenced import DEFAULT_CYCLE_S, DEFAULT_EDGES
from wsrl.sim.arrays import HISTOGRAM_MEMORY_STAT, HISTOGRAM_REFERENCED, GuestArrays
from wsrl.sim.model import GuestMemoryModel
from wsrl.units import GIB

REFERENCED_EDGES_MS: tuple[int, ...] = DEFAULT_EDGES
"""The edges a simulated ``referenced`` guest's source reads at (the sampler's defaults)."""
REFERENCED_CYCLE_S: float = DEFAULT_CYCLE_S
"""How often a simulated ``referenced`` guest's histogram changes, s (the sampler's default cycle)."""


def rebin_matrix(source_edges_ms: tuple[int, ...] | np.ndarray, target_edges_ms: np.ndarray) -> np.ndarray:
    """``[source bins, target bins]``: ``hist @ matrix`` re-bins like :meth:`wsrl.histogram.Histogram.rebin`.

    Each source bin spreads over the target bins in proportion to their overlap in age; the
    open-ended bin goes whole to the first target bin above its lower bound.
    """
    source = [int(e) for e in source_edges_ms]
    target = [int(e) for e in target_edges_ms]
    matrix = np.zeros((len(source) + 1, len(target) + 1))
    for row, (first, overlaps, width) in enumerate(overlap_weights(source, target)):
        matrix[row, first : first + len(overlaps)] = np.asarray(overlaps, dtype=float) / width
    return matrix


def inactive_ratio(lru_bytes: np.ndarray) -> np.ndarray:
    """The kernel's target active:inactive ratio of an LRU this size: int_sqrt(10 * GiB), 1 under 1 GiB."""
    gib = np.floor(np.maximum(lru_bytes, 0.0) / GIB)
    return np.where(gib >= 1, np.floor(np.sqrt(10.0 * gib)), 1.0)


def memory_stat_histograms(exact_bytes: np.ndarray, edges_ms: np.ndarray) -> np.ndarray:
    """``[..., 2, bins]`` what the ``memory_stat`` source reports of exact histograms on ``edges_ms``.

    The LRU sizes are estimated per type as the module docstring says, turned into bins by
    :func:`~wsrl.formats.memory_stat.lru_rows` (the cgroup backend's conversion) and re-binned onto
    ``edges_ms``.
    """
    lru = exact_bytes.sum(axis=-1)  # [..., 2]
    balanced = lru / (1.0 + inactive_ratio(lru))
    inactive = np.minimum(lru, np.maximum(balanced, exact_bytes[..., -1]))
    active = lru - inactive
    fields = {
        "active_anon": active[..., 0],
        "inactive_anon": inactive[..., 0],
        "active_file": active[..., 1],
        "inactive_file": inactive[..., 1],
        "unevictable": np.zeros_like(lru[..., 0]),
    }
    rows = lru_rows(fields)
    two_bins = np.stack([np.stack(rows["anon"], axis=-1), np.stack(rows["file"], axis=-1)], axis=-2)
    result: np.ndarray = two_bins @ rebin_matrix((LRU_EDGE_MS,), edges_ms)
    return result


class ObservedHistograms:
    """Each guest's histogram at its source's resolution, with the ``referenced`` source's hold.

    Args:
        guests: the guests (their ``histogram_source`` and mask).
        edges_ms: the simulator's edges (what every snapshot histogram is on).

    """

    def __init__(self, guests: GuestArrays, edges_ms: np.ndarray) -> None:
        self.edges_ms = np.asarray(edges_ms, dtype=np.int64)
        sources = guests.histogram_source
        if sources is None:
            sources = np.zeros(guests.shape, dtype=np.int8)
        self.referenced = guests.mask & (sources == HISTOGRAM_REFERENCED)
        self.memory_stat = guests.mask & (sources == HISTOGRAM_MEMORY_STAT)
        self.degraded = bool(self.referenced.any() or self.memory_stat.any())
        """False when every guest sees its exact ages (``exact``, ``lru_gen``): nothing is changed."""
        self._referenced_matrix = rebin_matrix(REFERENCED_EDGES_MS, self.edges_ms)
        horizon = np.where(self.referenced, float(max(REFERENCED_EDGES_MS)), np.inf)
        self._horizon_ms: np.ndarray | None = horizon if self.referenced.any() else None
        self._held: np.ndarray | None = None
        self._cycle = 0
        self.published_at_s: float | None = None
        """Simulation time of the ``referenced`` histogram held now (None before the first)."""

    def horizon_ms(self) -> np.ndarray | None:
        """``[hosts, guests]`` each guest's histogram horizon, ms (``inf``: exact ages; ``None``: all).

        The ``referenced`` guests' is the source's longest edge
        (:attr:`wsrl.pipeline.snapshot.HostSnapshot.hist_horizon_ms`). ``memory_stat``'s open bin
        starts at 1 s but is the kernel's inactive list, not an idle age: it has none. Fixed for
        the run (computed once); callers must not change it.
        """
        return self._horizon_ms

    def reset(self, model: GuestMemoryModel) -> None:
        """At simulation time 0: publish the ``referenced`` guests' histogram of the primed state."""
        self._cycle = 0
        self._held = None
        self.published_at_s = None
        if self.referenced.any():
            self._publish(model, 0.0)

    def advance(self, model: GuestMemoryModel, time_s: float) -> None:
        """After a step to ``time_s``: publish a new ``referenced`` histogram when a cycle ended."""
        if not self.referenced.any():
            return
        cycle = math.floor(time_s / REFERENCED_CYCLE_S + 1e-9)
        if self._held is None or cycle != self._cycle:
            self._cycle = cycle
            self._publish(model, time_s)

    def _publish(self, model: GuestMemoryModel, time_s: float) -> None:
        source_bins = model.histogram_bytes(np.asarray(REFERENCED_EDGES_MS, dtype=np.int64))
        self._held = source_bins @ self._referenced_matrix
        self.published_at_s = time_s

    def observe(self, model: GuestMemoryModel, exact_bytes: np.ndarray) -> np.ndarray:
        """``[hosts, guests, 2, bins]``: ``exact_bytes`` (the model's now) as each guest's source reports it.

        ``exact_bytes`` itself (not a copy) when no guest's source degrades it.
        """
        if not self.degraded:
            return exact_bytes
        observed = exact_bytes.copy()
        if self.memory_stat.any():
            observed[self.memory_stat] = memory_stat_histograms(exact_bytes[self.memory_stat], self.edges_ms)
        if self.referenced.any():
            if self._held is None:  # observed before any reset: the state now is the latest cycle
                self._publish(model, float("nan"))
            assert self._held is not None
            observed[self.referenced] = self._held[self.referenced]
        return observed
