"""A demand source whose populations never change: for tests, benchmarks and the fidelity check."""

from __future__ import annotations

import numpy as np


class ConstantDemand:
    """Fixed population sizes and access rates (``[hosts, guests, populations]`` each)."""

    def __init__(
        self,
        size_bytes: np.ndarray,
        rate_per_s: np.ndarray,
        is_anon: np.ndarray,
        is_sweep: np.ndarray | None = None,
    ) -> None:
        self.size_bytes = np.asarray(size_bytes, dtype=float)
        self.rate_per_s = np.asarray(rate_per_s, dtype=float)
        self.pop_is_anon = np.asarray(is_anon, dtype=bool)
        self.pop_is_sweep = None if is_sweep is None else np.asarray(is_sweep, dtype=bool)
        if not (self.size_bytes.shape == self.rate_per_s.shape == self.pop_is_anon.shape):
            raise ValueError("size, rate and type arrays must share one [hosts, guests, populations] shape")

    def reset(self, seed: int) -> None:
        """Nothing is random here; present for the DemandSource protocol."""

    def at(self, t_s: float, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
        """The fixed sizes and rates."""
        return self.size_bytes, self.rate_per_s
