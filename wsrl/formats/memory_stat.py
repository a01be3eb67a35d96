"""The two-bin histogram a memory cgroup's ``memory.stat`` LRU sizes give (the ``memory_stat`` source).

The kernel keeps no time on its LRU lists: "active" means referenced repeatedly at some point,
"inactive" means not known to be hot (new anon pages start there, so it can hold pages touched a
moment ago). The bins are therefore chosen so the histogram never says memory is colder than the
LRU says: ``active_*`` and ``unevictable`` (counted as anon: it can never be reclaimed) go to
``(0, 1 s]``, ``inactive_*`` to the open-ended bin ``(1 s, +inf)``, "idle for more than 1 s, age
otherwise unknown". The cgroup backend (:mod:`wsrl.backends.cgroup`) reads the fields; the
simulator (:mod:`wsrl.sim.observed`) estimates them; both turn them into bins here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import numpy as np

from wsrl.histogram import ALL_NODES, Histogram

LRU_EDGE_MS = 1_000
"""The one edge of the ``memory_stat`` histogram: active pages are put at ages up to it, inactive
pages above it (the conservative choice: see the module docstring)."""

LRU_FIELDS: dict[str, tuple[str, int]] = {
    "active_anon": ("anon", 0),
    "unevictable": ("anon", 0),
    "active_file": ("file", 0),
    "inactive_anon": ("anon", 1),
    "inactive_file": ("file", 1),
}
"""``memory.stat`` field -> (memory type, bin) (cgroup v1 reads the same names with ``total_``)."""

Value = TypeVar("Value", int, float, np.ndarray)


def lru_rows(fields_bytes: Mapping[str, Value]) -> dict[str, list[Value]]:
    """``{"anon": [bin 0, bin 1], "file": [...]}`` from the LRU fields in bytes (missing fields are 0).

    Works element-wise on arrays of fields too (the simulator's ``[hosts, guests]`` estimates).
    """
    rows: dict[str, list[Value]] = {}
    for key, (type_name, column) in LRU_FIELDS.items():
        row = rows.setdefault(type_name, [0, 0])  # type: ignore[list-item]
        row[column] = row[column] + fields_bytes.get(key, 0)
    return rows


def memory_stat_histogram(guest: str, fields_bytes: Mapping[str, int]) -> Histogram:
    """The ``memory_stat`` source's histogram of one group, on the edge :data:`LRU_EDGE_MS`."""
    rows = lru_rows(fields_bytes)
    return Histogram(guest, ALL_NODES, (LRU_EDGE_MS,), rows, {"source": "memory_stat"})
