"""What is known about a batch of hosts at one instant: the input of every policy.

A :class:`HostSnapshot` holds arrays shaped ``[hosts, guests]`` (histograms
``[hosts, guests, 2, bins]``, anon then file) with a guest mask, so the same policy, allocator and
rails code serves one live host and thousands of simulated ones. Counters are cumulative, as the
kernel reports them; policies difference them between snapshots themselves.

Inputs build snapshots (:mod:`wsrl.inputs`): the simulator, trace replay and live readings, each
through one interface, :class:`wsrl.inputs.source.SnapshotSource`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from wsrl.histogram import cold_weights
from wsrl.slo import WORKING_SET_WINDOW_MS


@dataclass
class HostSnapshot:
    """Per-guest state of a batch of hosts at one instant (arrays ``[hosts, guests]``).

    Attributes:
        time_ms: sample time, ms since the UNIX epoch.
        interval_s: seconds since the previous snapshot (the control interval).
        mask: True where a real guest sits.
        names: guest names.
        host_names: host names, ``[hosts]``.
        capacity_bytes: host memory, ``[hosts]``.
        reserve_bytes: memory the host keeps for itself, ``[hosts]``.
        provisioned_bytes: what each guest was promised: the ceiling of every target.
        floor_bytes: the operator's floor: no target goes below it.
        shares: proportional-share weights.
        tier: SLO tier index (0 = gold, see ``wsrl.sim.arrays.TIER_NAMES``).
        visible_bytes: guest-visible size now (balloon-adjusted RAM, memcg limit).
        target_bytes: the target currently set.
        usage_bytes: memory in use (resident pages plus unevictable; ``memory.current``).
        edges_ms: finite histogram bin edges.
        hist_bytes: ``[hosts, guests, 2, bins]`` working-set histogram, anon then file.
        refault_total: cumulative refaults (promotions), pages.
        swap_bytes: bytes in the guest's swap.
        psi_some_total_s: cumulative memory stall ("some"), seconds.
        psi_some_avg10: memory PSI "some" avg10, percent.
        oom_kills_total: cumulative OOM kills.
        balloon_stalled: the balloon could not reach its target in the last interval.
        hist_provisional: ``[hosts, guests]`` True where the histogram is provisional: the guest's
            configured source has not completed its first full cycle yet (the ``referenced``
            source's first cycle, or the fallback before its first read), so the ages are only
            what is known so far and every byte not yet seen idle counts as young. Policies and the
            observation do not remember such a histogram's working set (peaks, moving averages,
            threshold histories); ``None``: every histogram is settled (simulation, replay).
        hist_horizon_ms: ``[hosts, guests]`` the oldest idle age each guest's source tells apart,
            ms: its bytes idle longer sit in one open-ended bin whatever their age (the
            ``referenced`` source's cycle, 120 s by default), re-binned onto ``edges_ms`` as
            that bin always is. ``inf`` (and ``None``: every guest) where the source resolves
            ages up to the last edge. Only the learned policies' reading of cold memory
            (:func:`wsrl.pipeline.observation.cold_bytes_by_type`) uses it.
        extra: backend-specific data (for example the simulator itself, for the oracle).

    """

    time_ms: int
    interval_s: float
    mask: np.ndarray
    names: np.ndarray
    host_names: list[str]
    capacity_bytes: np.ndarray
    reserve_bytes: np.ndarray
    provisioned_bytes: np.ndarray
    floor_bytes: np.ndarray
    shares: np.ndarray
    tier: np.ndarray
    visible_bytes: np.ndarray
    target_bytes: np.ndarray
    usage_bytes: np.ndarray
    edges_ms: np.ndarray
    hist_bytes: np.ndarray
    refault_total: np.ndarray
    swap_bytes: np.ndarray
    psi_some_total_s: np.ndarray
    psi_some_avg10: np.ndarray
    oom_kills_total: np.ndarray
    balloon_stalled: np.ndarray
    hist_provisional: np.ndarray | None = None
    hist_horizon_ms: np.ndarray | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """``(hosts, guests)``."""
        hosts, guests = self.mask.shape
        return hosts, guests

    def resident_page_bytes(self) -> np.ndarray:
        """``[hosts, guests]`` bytes the histogram covers (resident pages)."""
        result: np.ndarray = self.hist_bytes.sum(axis=(2, 3))
        return result

    def cold_bytes(self, idle_ms: int) -> np.ndarray:
        """``[hosts, guests]`` resident bytes idle for longer than ``idle_ms`` (histogram rule)."""
        weights = cold_weights([int(e) for e in self.edges_ms], idle_ms)
        result: np.ndarray = self.hist_bytes.sum(axis=2) @ weights
        return result

    def histogram_provisional(self) -> np.ndarray:
        """``[hosts, guests]`` :attr:`hist_provisional` as booleans (all False where it is ``None``)."""
        if self.hist_provisional is None:
            return np.zeros(self.mask.shape, dtype=bool)
        result: np.ndarray = np.asarray(self.hist_provisional, dtype=bool)
        return result

    def histogram_horizon_ms(self) -> np.ndarray:
        """``[hosts, guests]`` :attr:`hist_horizon_ms` as floats (all ``inf`` where it is ``None``)."""
        if self.hist_horizon_ms is None:
            return np.full(self.mask.shape, np.inf)
        result: np.ndarray = np.asarray(self.hist_horizon_ms, dtype=float)
        return result

    def usable_bytes(self) -> np.ndarray:
        """``[hosts]`` memory the host can give its guests: capacity minus reserve (at least 1)."""
        result: np.ndarray = np.maximum(np.asarray(self.capacity_bytes) - np.asarray(self.reserve_bytes), 1.0)
        return result

    def overcommit(self) -> np.ndarray:
        """``[hosts]`` provisioned bytes of the real guests over :meth:`usable_bytes`."""
        provisioned = np.where(self.mask, self.provisioned_bytes, 0.0).sum(axis=1)
        result: np.ndarray = provisioned / self.usable_bytes()
        return result

    def working_set_bytes(self, window_ms: int = WORKING_SET_WINDOW_MS) -> np.ndarray:
        """``[hosts, guests]`` resident bytes touched within ``window_ms`` (plus unevictable memory)."""
        unevictable = np.maximum(self.usage_bytes - self.resident_page_bytes(), 0.0)
        result: np.ndarray = self.resident_page_bytes() - self.cold_bytes(window_ms) + unevictable
        return result
