"""``esx-idle-tax``: VMware ESX Server's share-based allocation with an idle memory tax.

Source: C. A. Waldspurger, "Memory Resource Management in VMware ESX Server", OSDI 2002.

ESX gives memory by *shares*, revoking it from the client that pays the least per page (min-funding
revocation). The idle memory tax charges idle pages more: with tax rate ``tau`` (0.75 by default,
so an idle page costs as much as ``k = 1 / (1 - tau) = 4`` active ones), a client holding ``P``
pages, a fraction ``f`` of them active, with ``S`` shares, has the *adjusted shares-per-page ratio*
``rho = S / (P (f + k (1 - f)))``, and memory is reclaimed from the client with the lowest ``rho``.
The active fraction comes from statistical sampling: a working-set estimate that is the maximum of
a fast and a slow exponentially weighted moving average of the sampled active memory (and of the
current period's sample), so that the estimate rises quickly and falls slowly.

What the policy computes: revoking from the lowest ``rho`` until the host fits ends with every
client it took memory from at one common ``rho = 1 / L``. Writing the active bytes as ``A = f P``,
``P (f + k (1 - f)) = A + k (P - A)``, so that client's allocation is

    P(L) = A + (S L - A) / k    where S L >= A (it keeps its active memory and some idle pages)
    P(L) = S L                  otherwise (it is squeezed below its active memory),

clipped to ``[floor, provisioned]`` (ESX's min and max). ``L`` is found per host by bisection so
that the allocations add up to what the host has for guests (``capacity - reserve``). ESX does not
reclaim memory the host does not need: when the provisioned sizes fit, every guest keeps its
provisioned size, so the policy saves memory only where the host is over-committed (the bundled
``laptop`` scenario promises 12.5 % more than its host has for guests), and it decides who gives.

The working-set estimate: the sample is :meth:`~wsrl.pipeline.snapshot.HostSnapshot.working_set_bytes`
(memory touched within 120 s), taken at every snapshot; every ``sample_period_s`` (ESX samples
every 30 s) the fast and slow averages take it in with gains ``fast_gain`` and ``slow_gain`` (the
paper gives no values: 0.5 and 0.1 here, about one and five minutes), and ``A`` is the largest of
the two averages and the latest sample.

How the policy and the allocator split the work: the allocator runs after every policy
(:class:`~wsrl.pipeline.control.ControlStack`) and, in ``idle-tax`` mode, approximates the same rule in
one shot (weights ``S / (f + k (1 - f))`` with ``f`` from the current visible size and the 120 s
working set). This policy computes ESX's allocation itself, as ESX does, from its own smoothed
working-set estimate and solved to the fixed point (``f`` depends on the allocation it changes), so
its proposals already fit the host and any allocator passes them through unchanged (only floors
that alone exceed the host, or another policy's proposals, give the allocator work). Running it
under ``Allocator(mode="idle-tax")`` is consistent, not required. ESX counts shares only; wsrl's
SLO tier weights are the allocator's, not ESX's, and are not applied here.
"""

from __future__ import annotations

import numpy as np

from wsrl.pipeline.allocator import DEFAULT_IDLE_TAX
from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.policies.common import TickClock, masked
from wsrl.slo import WORKING_SET_WINDOW_MS

_BISECTION_STEPS = 80


def idle_tax_allocation(snapshot: HostSnapshot, active_bytes: np.ndarray, idle_tax: float) -> np.ndarray:
    """``[hosts, guests]`` ESX allocation: equal adjusted shares-per-page ratio among reclaimed guests.

    Hosts whose provisioned sizes fit keep them; hosts whose floors alone do not fit get floors.
    """
    k = 1.0 / (1.0 - idle_tax)
    mask = snapshot.mask
    high = np.where(mask, snapshot.provisioned_bytes, 0.0)
    low = np.where(mask, np.minimum(snapshot.floor_bytes, snapshot.provisioned_bytes), 0.0)
    shares = np.where(mask, np.maximum(snapshot.shares, 0.0), 0.0)
    active = np.clip(active_bytes, 0.0, high)
    room = (snapshot.capacity_bytes - snapshot.reserve_bytes)[:, None]

    def allocation(level: np.ndarray) -> np.ndarray:
        funded = shares * level
        pages = np.where(funded >= active, active + (funded - active) / k, funded)
        clipped: np.ndarray = np.clip(pages, low, high)
        return clipped

    # The level at which every guest reaches its provisioned size bounds the search from above.
    needed = np.divide(active + k * (high - active), shares, out=np.zeros_like(high), where=shares > 0)
    hi = np.maximum(needed.max(axis=1, keepdims=True), 1e-300)
    lo = np.zeros_like(hi)
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        over = allocation(mid).sum(axis=1, keepdims=True) > room
        hi = np.where(over, mid, hi)
        lo = np.where(over, lo, mid)
    fits = high.sum(axis=1, keepdims=True) <= room
    return np.where(fits, high, allocation(lo))


class EsxIdleTaxPolicy:
    """ESX's allocation with the idle memory tax (see the module docstring).

    Args:
        idle_tax: tax rate ``tau`` in [0, 1) (0.75).
        sample_period_s: working-set sampling period (30 s).
        fast_gain: gain of the fast moving average per sample period.
        slow_gain: gain of the slow moving average per sample period.
        active_window_ms: the window of the working-set sample (120 s).

    Attributes:
        active_bytes: ``[hosts, guests]`` the working-set estimate of the last decision.

    """

    name = "esx-idle-tax"

    def __init__(
        self,
        *,
        idle_tax: float = DEFAULT_IDLE_TAX,
        sample_period_s: float = 30.0,
        fast_gain: float = 0.5,
        slow_gain: float = 0.1,
        active_window_ms: int = WORKING_SET_WINDOW_MS,
    ) -> None:
        if not 0.0 <= idle_tax < 1.0:
            raise ValueError(f"idle_tax must be in [0, 1), got {idle_tax}")
        if not (0 < fast_gain <= 1 and 0 < slow_gain <= 1 and sample_period_s > 0 and active_window_ms > 0):
            raise ValueError("gains must be in (0, 1], sample_period_s and active_window_ms > 0")
        self.idle_tax = float(idle_tax)
        self.sample_period_s = float(sample_period_s)
        self.fast_gain = float(fast_gain)
        self.slow_gain = float(slow_gain)
        self.active_window_ms = int(active_window_ms)
        self._fast: np.ndarray | None = None

    def reset(self, snapshot: HostSnapshot) -> None:
        """Both averages start at the first sample."""
        sample = snapshot.working_set_bytes(self.active_window_ms)
        self._fast = sample.copy()
        self._slow = sample.copy()
        self._seeded = ~snapshot.histogram_provisional()
        self.active_bytes = sample.copy()
        self._clock = TickClock(snapshot.time_ms, self.sample_period_s)

    def decide(self, snapshot: HostSnapshot) -> np.ndarray:
        """Update the working-set estimate; propose ESX's share-based allocation."""
        if self._fast is None:
            self.reset(snapshot)
        assert self._fast is not None
        sample = snapshot.working_set_bytes(self.active_window_ms)
        periods = self._clock.advance(snapshot.time_ms)
        settled = ~snapshot.histogram_provisional()
        # A provisional histogram (its source's first cycle) counts every byte not yet seen idle as
        # active, so the averages do not remember it: until a guest's first settled sample they
        # follow the sample, that sample seeds them, and later provisional samples leave them be.
        if periods:
            # ``periods`` updates with the same sample, in closed form.
            fast = sample + (self._fast - sample) * (1.0 - self.fast_gain) ** periods
            slow = sample + (self._slow - sample) * (1.0 - self.slow_gain) ** periods
            self._fast = np.where(settled, fast, self._fast)
            self._slow = np.where(settled, slow, self._slow)
        self._fast = np.where(self._seeded, self._fast, sample)
        self._slow = np.where(self._seeded, self._slow, sample)
        self._seeded |= settled
        self.active_bytes = np.maximum(np.maximum(self._fast, self._slow), sample)
        return masked(snapshot, idle_tax_allocation(snapshot, self.active_bytes, self.idle_tax))
