"""Batched description of simulated hosts and guests: what a scenario builds and the core steps.

Everything is an array shaped ``[hosts, guests]`` (or ``[hosts, guests, populations]``) with a
guest mask, so one code path serves a single laptop and thousands of datacenter hosts. Padding
guests (``mask == False``) have zero sizes and never produce memory, faults or events.

A guest's demand is a handful of *page populations*: each has a type (anon or file), a size and a
per-page access rate. A :class:`DemandSource` yields those sizes and rates step by step; the
guest memory model (:mod:`wsrl.sim.model`) turns them into resident memory, idle-age histograms,
refaults, stall and OOMs under whatever size the guest is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, cast

import numpy as np

from wsrl.sim import defaults

# Actuator kinds, as stored in GuestArrays.actuator.
ACTUATOR_MEMCG = 0
ACTUATOR_BALLOON = 1
ACTUATOR_NAMES = ("memcg", "balloon")

# SLO tiers, as stored in GuestArrays.tier: lower is more important.
TIER_NAMES = ("gold", "silver", "bronze")
# Where a guest's working-set histogram would come from on a real host, as stored in
# GuestArrays.histogram_source: what the snapshot shows of its exact ages (wsrl.sim.observed).
HISTOGRAM_EXACT = 0
HISTOGRAM_LRU_GEN = 1
HISTOGRAM_REFERENCED = 2
HISTOGRAM_MEMORY_STAT = 3
HISTOGRAM_SOURCE_NAMES = ("exact", "lru_gen", "referenced", "memory_stat")
# The guest kernel's page reclaim, as stored in GuestArrays.kernel (wsrl.sim.model).
KERNEL_MGLRU = 0
KERNEL_CLASSIC = 1
KERNEL_NAMES = ("mglru", "classic")
DEFAULT_ACTUATOR = ACTUATOR_NAMES.index(defaults.ACTUATOR)
DEFAULT_TIER = TIER_NAMES.index(defaults.TIER)


@dataclass
class GuestArrays:
    """Static per-guest parameters, every array shaped ``[hosts, guests]``.

    Attributes:
        mask: True where a real guest sits; False for padding.
        names: guest names (object array of str; "" for padding).
        provisioned_bytes: memory promised to the guest (VM RAM, memcg ceiling).
        floor_bytes: never size the guest below this (the operator's floor).
        unevictable_bytes: kernel, page tables, mlocked memory: always resident, never reclaimable.
        swap_capacity_bytes: swap (zram, zswap, disk) the guest may push anon pages into; 0 = none.
        anon_fault_latency_s: time to bring back one swapped-out anon page (zram ~6 us).
        file_fault_latency_s: time to re-read one evicted file page from storage.
        actuator: ACTUATOR_MEMCG (limit acts at once) or ACTUATOR_BALLOON (finite speed).
        inflate_bytes_per_s: balloon inflation speed (guest gives memory back).
        deflate_bytes_per_s: balloon deflation speed (guest gets memory back).
        shares: proportional-share weight for fair allocation.
        tier: SLO tier index into TIER_NAMES (0 = gold).
        oom_restart_s: after an OOM kill, how long the killed workload takes to come back to
            its full anon demand.
        deflate_on_oom: balloon guests whose balloon gives memory back instead of letting the
            guest OOM (virtio-balloon ``deflate-on-oom``; QEMU leaves it off by default). ``None``
            means off for every guest.
        histogram_source: index into HISTOGRAM_SOURCE_NAMES: the source whose resolution the
            snapshot's histogram has (:mod:`wsrl.sim.observed`); the memory model always uses the
            exact state. ``None`` means ``exact`` for every guest.
        kernel: index into KERNEL_NAMES: how the guest's kernel splits reclaim between anon and
            file pages. ``mglru``: one recency for both (multi-gen LRU ages them in the same
            generations); ``classic``: the active/inactive lists, where ``get_scan_count`` scans
            file pages harder by ``swappiness`` and the two types' recent refault costs
            (:class:`wsrl.sim.model.GuestMemoryModel`). ``None`` means ``mglru`` for every guest.
        swappiness: the guest's ``vm.swappiness`` (0-200; read by the ``classic`` kernel only).
            ``None`` means 60 (the kernel's default) for every guest.

    """

    mask: np.ndarray
    names: np.ndarray
    provisioned_bytes: np.ndarray
    floor_bytes: np.ndarray
    unevictable_bytes: np.ndarray
    swap_capacity_bytes: np.ndarray
    anon_fault_latency_s: np.ndarray
    file_fault_latency_s: np.ndarray
    actuator: np.ndarray
    inflate_bytes_per_s: np.ndarray
    deflate_bytes_per_s: np.ndarray
    shares: np.ndarray
    tier: np.ndarray
    oom_restart_s: np.ndarray
    deflate_on_oom: np.ndarray | None = None
    histogram_source: np.ndarray | None = None
    kernel: np.ndarray | None = None
    swappiness: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(hosts, guests)``."""
        return cast(tuple[int, int], self.mask.shape)


@dataclass
class HostArrays:
    """Static per-host parameters, every array shaped ``[hosts]``.

    Attributes:
        names: host names.
        capacity_bytes: physical memory of the host.
        reserve_bytes: memory kept for the host itself (hypervisor, daemons); guests get the rest.
        swap_fault_latency_s: time for a guest access to bring back a page the *host* swapped out
            (host swap is the heavy penalty of overcommitting past capacity).

    """

    names: list[str]
    capacity_bytes: np.ndarray
    reserve_bytes: np.ndarray
    swap_fault_latency_s: np.ndarray


class DemandSource(Protocol):
    """Yields each guest's page populations step by step.

    ``pop_is_anon`` is fixed for the life of the source, and so is the optional ``pop_is_sweep``
    (bool ``[hosts, guests, populations]``: populations touched as a cyclic sweep; a source
    without it touches every page independently). :meth:`at` is called with strictly
    increasing times; stochastic sources advance their random state there, so the sequence of
    results is a pure function of the seed given to :meth:`reset`.
    """

    pop_is_anon: np.ndarray  # bool [hosts, guests, populations]

    def reset(self, seed: int) -> None:
        """Restart from time 0 with this seed."""
        ...

    def at(self, t_s: float, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Population sizes in bytes and per-page access rates in 1/s at time ``t_s``.

        Both float64 arrays shaped ``[hosts, guests, populations]``; padding populations have size 0.
        ``dt_s`` is the step that ends at ``t_s`` (patterns that fire events use it).
        """
        ...


@dataclass
class SimSetup:
    """Everything needed to run a simulation: static arrays, a demand source and the time step."""

    scenario: str
    guests: GuestArrays
    hosts: HostArrays
    demand: DemandSource
    step_s: float
    start_time_ms: int = 0
    meta: dict[str, object] = field(default_factory=dict)


def guest_arrays(
    shape: tuple[int, int],
    provisioned_bytes: float | np.ndarray,
    *,
    floor_bytes: float | np.ndarray = 0.0,
    unevictable_bytes: float | np.ndarray = defaults.UNEVICTABLE_BYTES,
    swap_capacity_bytes: float | np.ndarray | None = None,
    anon_fault_latency_s: float | np.ndarray = defaults.ANON_FAULT_LATENCY_S_BY_SWAP[defaults.SWAP],
    file_fault_latency_s: float | np.ndarray = defaults.FILE_FAULT_LATENCY_S,
    actuator: int | np.ndarray = DEFAULT_ACTUATOR,
    inflate_bytes_per_s: float | np.ndarray = defaults.INFLATE_BYTES_PER_S,
    deflate_bytes_per_s: float | np.ndarray = defaults.DEFLATE_BYTES_PER_S,
    shares: float | np.ndarray = defaults.SHARES,
    tier: int | np.ndarray = DEFAULT_TIER,
    oom_restart_s: float | np.ndarray = defaults.OOM_RESTART_S,
    deflate_on_oom: bool | np.ndarray = defaults.DEFLATE_ON_OOM,
    histogram_source: int | np.ndarray = HISTOGRAM_EXACT,
    kernel: int | np.ndarray = KERNEL_MGLRU,
    swappiness: float | np.ndarray = defaults.SWAPPINESS,
    mask: np.ndarray | None = None,
) -> GuestArrays:
    """Guest arrays of one shape from scalars or arrays (tests, benchmarks, hand-built setups).

    Defaults are the scenario defaults (:mod:`wsrl.sim.defaults`); swap is a quarter of the
    provisioned size unless given.
    """

    def full(value: float | np.ndarray, dtype: type = float) -> np.ndarray:
        return np.broadcast_to(np.asarray(value, dtype=dtype), shape).copy()

    provisioned = full(provisioned_bytes)
    swap = (
        defaults.SWAP_FRACTION_OF_PROVISIONED * provisioned
        if swap_capacity_bytes is None
        else full(swap_capacity_bytes)
    )
    real = np.ones(shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    names = np.empty(shape, dtype=object)
    for host in range(shape[0]):
        for guest in range(shape[1]):
            names[host, guest] = f"guest-{guest}" if real[host, guest] else ""
    return GuestArrays(
        mask=real,
        names=names,
        provisioned_bytes=provisioned,
        floor_bytes=full(floor_bytes),
        unevictable_bytes=full(unevictable_bytes),
        swap_capacity_bytes=swap,
        anon_fault_latency_s=full(anon_fault_latency_s),
        file_fault_latency_s=full(file_fault_latency_s),
        actuator=full(actuator, np.int8),
        inflate_bytes_per_s=full(inflate_bytes_per_s),
        deflate_bytes_per_s=full(deflate_bytes_per_s),
        shares=full(shares),
        tier=full(tier, np.int8),
        oom_restart_s=full(oom_restart_s),
        deflate_on_oom=full(deflate_on_oom, bool),
        histogram_source=full(histogram_source, np.int8),
        kernel=full(kernel, np.int8),
        swappiness=full(swappiness),
    )


def host_arrays(
    hosts: int,
    capacity_bytes: float | np.ndarray,
    *,
    reserve_bytes: float | np.ndarray = 0.0,
    swap_fault_latency_s: float | np.ndarray = defaults.HOST_SWAP_FAULT_LATENCY_S,
) -> HostArrays:
    """Host arrays for ``hosts`` hosts from scalars or arrays."""
    return HostArrays(
        names=[f"host-{index}" for index in range(hosts)],
        capacity_bytes=np.broadcast_to(np.asarray(capacity_bytes, dtype=float), (hosts,)).copy(),
        reserve_bytes=np.broadcast_to(np.asarray(reserve_bytes, dtype=float), (hosts,)).copy(),
        swap_fault_latency_s=np.broadcast_to(np.asarray(swap_fault_latency_s, dtype=float), (hosts,)).copy(),
    )


def with_histogram_sources(setup: SimSetup, sources: Sequence[str]) -> SimSetup:
    """``setup`` with each host's guests read through one of ``sources``, in turn.

    Host ``h`` gets ``sources[h % len(sources)]`` for every guest whose own source is ``exact``
    (the scenario left it open); a guest whose scenario names another source keeps it. Training
    across sources (``[env] histogram_sources``): a policy that meets ``referenced`` and
    ``memory_stat`` hosts in production must have seen their resolution. ``()``: ``setup`` as it is.
    """
    if not sources:
        return setup
    unknown = [name for name in sources if name not in HISTOGRAM_SOURCE_NAMES]
    if unknown:
        expected = list(HISTOGRAM_SOURCE_NAMES)
        raise ValueError(f"unknown histogram source(s) {unknown}: expected one of {expected}")
    guests = setup.guests
    current = (
        np.zeros(guests.shape, dtype=np.int8) if guests.histogram_source is None else guests.histogram_source
    )
    per_host = np.array(
        [HISTOGRAM_SOURCE_NAMES.index(sources[h % len(sources)]) for h in range(guests.shape[0])]
    )
    chosen = np.where(current == HISTOGRAM_EXACT, per_host[:, None], current).astype(np.int8)
    return replace(setup, guests=replace(guests, histogram_source=chosen))
