"""Default guest and host parameters, in SI units, shared by scenario files and hand-built setups.

Sources: zram/zswap refaults cost about 6 us (domain facts, section 3); SSD swap and NVMe file
re-reads about 100 us and a spinning disk about 5 ms are typical device latencies, not
measurements; the 200 us host-swap fault stands for double paging (host swap under a guest).
"""

from __future__ import annotations

from typing import Final, Literal

from wsrl.units import MIB

UNEVICTABLE_BYTES = 64 * MIB
"""Kernel, page tables and mlocked memory of a guest: always resident."""
SWAP_FRACTION_OF_PROVISIONED = 0.25
"""Swap a guest gets when its scenario entry does not say (zram sized at a quarter of RAM)."""
ANON_FAULT_LATENCY_S_BY_SWAP = {"none": 0.0, "zram": 6e-6, "ssd": 100e-6, "hdd": 5e-3}
FILE_FAULT_LATENCY_S = 100e-6
INFLATE_BYTES_PER_S = 256 * MIB
DEFLATE_BYTES_PER_S = 1024 * MIB
ACTUATOR: Final[Literal["memcg", "balloon"]] = "balloon"
SWAP: Final[Literal["none", "zram", "ssd", "hdd"]] = "zram"
DEFLATE_ON_OOM = False
"""QEMU's virtio-balloon leaves ``deflate-on-oom`` off unless the VM is started with it."""
SHARES = 1000.0
MAX_SHARES = 1e6
"""Largest ``shares`` of a guest in any config (weights beyond this only overflow the allocator's sums)."""
TIER: Final[Literal["gold", "silver", "bronze"]] = "silver"
OOM_RESTART_S = 60.0
HOST_SWAP_FAULT_LATENCY_S = 200e-6

KERNEL: Final[Literal["mglru", "classic"]] = "mglru"
"""A guest's page reclaim unless its scenario says (``wsrl.sim.arrays.KERNEL_NAMES``): the multi-gen
LRU the VM guest kernels wsrl targets run; a memcg on a host kernel without MGLRU is ``classic``."""
SWAPPINESS = 60.0
"""``vm.swappiness`` unless a scenario says: the kernel's default."""
