"""The simulator: a demand source, the guest memory model and a clock, stepped as one batch.

:class:`Simulator` is the backend the environments, the evaluator and ``wsrl sim`` share. It
advances every guest of every host by one step per call, takes the guest-visible targets a policy
chose (or leaves guests at their provisioned size), and exposes what a real host would report:
sizes, counters, PSI-like stall and working-set histograms on any bin edges: exact
(:meth:`Simulator.histograms`) and at each guest's histogram source's resolution
(:meth:`Simulator.observed_histograms`, :mod:`wsrl.sim.observed`).
"""

from __future__ import annotations

import numpy as np

from wsrl.histogram import DEFAULT_EDGES_MS, validate_edges
from wsrl.sim.arrays import SimSetup
from wsrl.sim.model import GuestMemoryModel, StepResult
from wsrl.sim.observed import ObservedHistograms


class Simulator:
    """Step a :class:`~wsrl.sim.arrays.SimSetup` through time.

    Args:
        setup: the hosts, guests and demand to simulate.
        edges_ms: finite upper bounds of the histogram bins this simulator reports.

    """

    def __init__(self, setup: SimSetup, *, edges_ms: tuple[int, ...] | np.ndarray = DEFAULT_EDGES_MS) -> None:
        self.setup = setup
        self.step_s = float(setup.step_s)
        if not self.step_s > 0:
            raise ValueError(f"step_s must be > 0, got {setup.step_s}")
        self.edges_ms = np.asarray(validate_edges(list(edges_ms)), dtype=np.int64)
        self.model = GuestMemoryModel(
            setup.guests,
            setup.hosts,
            setup.demand.pop_is_anon,
            # Optional on a demand source: sources without it touch every page independently.
            getattr(setup.demand, "pop_is_sweep", None),
        )
        self.seed = 0
        self.steps = 0
        self.time_s = 0.0
        self.last: StepResult | None = None
        self.observed = ObservedHistograms(setup.guests, self.edges_ms)
        """What each guest's histogram source shows of the exact ages (:mod:`wsrl.sim.observed`)."""

    @property
    def shape(self) -> tuple[int, int]:
        """``(hosts, guests)``."""
        return self.setup.guests.shape

    @property
    def mask(self) -> np.ndarray:
        """``[hosts, guests]``: True where a real guest sits."""
        return self.setup.guests.mask

    @property
    def time_ms(self) -> int:
        """Wall-clock time of the current state, ms since the UNIX epoch."""
        return int(self.setup.start_time_ms + round(self.time_s * 1000.0))

    def reset(self, seed: int = 0) -> None:
        """Back to time 0 with guests at their provisioned size; the demand restarts from ``seed``.

        The model is primed with the demand at time 0 (nothing evicted, nothing counted), so
        histograms and sizes are meaningful before the first action.
        """
        self.seed = int(seed)
        self.setup.demand.reset(self.seed)
        self.model.reset()
        self.steps = 0
        self.time_s = 0.0
        size, rate = self.setup.demand.at(0.0, 0.0)
        self.model.prime(size, rate)
        self.last = None
        self.observed.reset(self.model)

    def step(self, target_bytes: np.ndarray | None = None) -> StepResult:
        """Advance one step with these guest-visible targets (default: keep the current targets).

        Args:
            target_bytes: ``[hosts, guests]`` balloon targets or memcg limits in bytes.

        """
        target = self.model.target_bytes if target_bytes is None else np.asarray(target_bytes, dtype=float)
        if target.shape != self.shape:
            raise ValueError(f"target_bytes has shape {target.shape}, expected {self.shape}")
        if not np.isfinite(target).all() and not np.isfinite(target[self.mask]).all():
            raise ValueError("target_bytes must be finite for every guest (a policy returned NaN or inf)")
        self.time_s = (self.steps + 1) * self.step_s
        size, rate = self.setup.demand.at(self.time_s, self.step_s)
        self.last = self.model.step(size, rate, target, self.step_s)
        self.steps += 1
        self.observed.advance(self.model, self.time_s)
        return self.last

    def histograms(self) -> np.ndarray:
        """``[hosts, guests, 2 (anon, file), bins]`` working-set histograms in bytes (float)."""
        return self.model.histogram_bytes(self.edges_ms)

    def observed_histograms(self, exact_bytes: np.ndarray | None = None) -> np.ndarray:
        """``[hosts, guests, 2, bins]`` histograms as each guest's source reports them (what policies see).

        The exact ones (``exact_bytes``, default :meth:`histograms`) where every guest's source is
        ``exact`` or ``lru_gen``: then the very same array.
        """
        exact = self.histograms() if exact_bytes is None else exact_bytes
        return self.observed.observe(self.model, exact)
