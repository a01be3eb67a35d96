"""The defaults of the accessed-bit source (``referenced``), shared by its sampler and the simulator.

The sampler (:mod:`wsrl.backends.referenced`) clears the accessed bits, reads the bytes referenced
since at each edge after the clear, and publishes one histogram per cycle: bin ``(e[k-1], e[k]]``
holds the bytes first seen referenced between the reads at ``e[k-1]`` and ``e[k]``, the open-ended
bin the resident bytes not referenced by the last edge. The simulator (:mod:`wsrl.sim.observed`)
degrades its exact ages to the same edges and refresh. Only the constants live here, one layer
below both.
"""

from __future__ import annotations

from wsrl.histogram import DEFAULT_EDGES_MS

DEFAULT_MAX_AGE_MS = 120_000
"""The longest age the source reports by default: the far-memory cold age the audit reports."""
DEFAULT_EDGES: tuple[int, ...] = tuple(e for e in DEFAULT_EDGES_MS if e <= DEFAULT_MAX_AGE_MS)
"""Default read edges: wsrl's canonical edges up to 120 s (1, 2, 5, 10, 20, 40, 60, 120 s)."""
DEFAULT_CYCLE_S: float = DEFAULT_MAX_AGE_MS / 1000
"""Default time from one clear to the next, s: one histogram is published per cycle."""
