"""The canonical working-set histogram every source maps onto.

A :class:`Histogram` describes one guest's memory on one NUMA node, binned by how long it has been
idle. Bin ``i`` holds the bytes whose idle age lies in ``(lower_i, upper_i]`` milliseconds, where
``lower_0 = 0``, ``upper_i = edges_ms[i]`` and the last bin is open-ended (``upper = +inf``). Each
bin carries bytes per memory type: always ``anon`` and ``file``, plus any further type a source
reports (the WSR patches allow new ``type=value`` keys).

Byte counts are exact integers. Every operation that moves bytes between bins (re-binning, merging
nodes) conserves them exactly: the bytes of each type add up to the same total before and after.

Re-binning follows the kernel's proportional-overlap rule (the working-set reporting patches split a
generation across report bins in proportion to how much of its age range falls in each bin, i.e.
they assume uniform idle ages inside a bin). Integer shares are rounded by largest remainder, so no
byte is created or lost. Two cases have no overlap to be proportional to:

* the open-ended last bin ``(lower, +inf)``: its bytes are known to be idle longer than ``lower``
  and nothing more, so they go to the target bin that holds ages just above ``lower``;
* a zero-width bin ``(0, 0]`` (an MGLRU generation born this millisecond): its bytes go to the
  target bin holding age 0.

Both choices are the conservative ones for a controller that reclaims cold memory: a re-binned
histogram never claims memory is colder than its source showed. :meth:`Histogram.cold_bytes` uses
the same rule, so ``cold_bytes(T)`` counts the open-ended bin only for ``T <= lower``; beyond the
last finite edge (:attr:`Histogram.known_up_to_ms`) a source says nothing.

The constants and the integer re-binning arithmetic are :mod:`wsrl.agent.bins`, the standard-library
core this module shares with the guest agent (which has no numpy).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from wsrl.agent.bins import ALL_NODES, ANON, BASE_TYPES, FILE, MAX_BYTES, merge_rows, rebin_rows
from wsrl.errors import HistogramError

__all__ = [
    "ALL_NODES",
    "ANON",
    "BASE_TYPES",
    "DEFAULT_EDGES_MS",
    "FILE",
    "MAX_BYTES",
    "Histogram",
    "cold_weights",
    "merge_nodes",
    "on_common_grid",
    "validate_edges",
]

DEFAULT_EDGES_MS: tuple[int, ...] = (
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    40_000,
    60_000,
    120_000,
    300_000,
    600_000,
    1_800_000,
    3_600_000,
)
"""wsrl's canonical bin edges (ms): roughly logarithmic from 1 s to 1 h, and containing the
thresholds the reference policies use (10 s and 40 s for WMO, 120 s for Google's far-memory
cold age), so they can be read off without interpolation."""


def validate_edges(edges_ms: Sequence[int]) -> tuple[int, ...]:
    """Histogram bin edges as a tuple of ints; :class:`HistogramError` unless strictly increasing ms >= 0."""
    edges: list[int] = []
    for position, edge in enumerate(edges_ms):
        if isinstance(edge, bool) or not isinstance(edge, (int, np.integer)):
            raise HistogramError(f"edge {position} must be an integer number of ms, got {edge!r}")
        value = int(edge)
        if value < 0 or value > MAX_BYTES:
            raise HistogramError(f"edge {position} = {value} ms is out of range [0, 2^63)")
        if edges and value <= edges[-1]:
            raise HistogramError(
                f"edges must be strictly increasing: edge {position} = {value} ms follows {edges[-1]} ms"
            )
        edges.append(value)
    return tuple(edges)


class Histogram:
    """One guest's working-set histogram on one NUMA node (see the module docstring).

    Args:
        guest: the guest's name (a VM name, a memcg path, ...).
        node: NUMA node number, or :data:`ALL_NODES`.
        edges_ms: finite upper bounds of all bins but the last, in ms, strictly increasing, >= 0.
            The histogram has ``len(edges_ms) + 1`` bins.
        bytes_by_type: bytes per bin for each memory type; ``anon`` and ``file`` are required.
        meta: source details worth keeping (for example an MGLRU memcg id), as strings.

    """

    __slots__ = ("_bytes", "edges_ms", "guest", "meta", "node", "types")

    def __init__(
        self,
        guest: str,
        node: int,
        edges_ms: Sequence[int],
        bytes_by_type: Mapping[str, Sequence[int] | np.ndarray],
        meta: Mapping[str, str] | None = None,
    ) -> None:
        self.guest = str(guest)
        self.node = int(node)
        self.edges_ms = validate_edges(edges_ms)
        n_bins = len(self.edges_ms) + 1
        missing = [t for t in BASE_TYPES if t not in bytes_by_type]
        if missing:
            raise HistogramError(f"histogram of {guest!r} lacks memory type(s) {missing}")
        types = BASE_TYPES + tuple(t for t in bytes_by_type if t not in BASE_TYPES)
        rows = np.zeros((len(types), n_bins), dtype=np.int64)
        for row, type_name in enumerate(types):
            values = bytes_by_type[type_name]
            if len(values) != n_bins:
                raise HistogramError(
                    f"{type_name} has {len(values)} bins, expected {n_bins} "
                    f"({len(self.edges_ms)} edges + the open-ended bin)"
                )
            for column, value in enumerate(values):
                if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                    raise HistogramError(f"{type_name} bin {column} must be an integer byte count")
                if not 0 <= int(value) <= MAX_BYTES:
                    raise HistogramError(
                        f"{type_name} bin {column} = {int(value)} bytes is out of range [0, 2^63)"
                    )
                rows[row, column] = int(value)
        totals = [sum(int(v) for v in rows[r]) for r in range(len(types))]
        if sum(totals) > MAX_BYTES:
            raise HistogramError(f"histogram of {guest!r} holds more than 2^63 bytes")
        rows.setflags(write=False)
        self._bytes = rows
        self.types: tuple[str, ...] = types
        self.meta: dict[str, str] = dict(meta or {})

    # -- shape -------------------------------------------------------------------------------

    @property
    def n_bins(self) -> int:
        """Number of bins, the open-ended one included."""
        return len(self.edges_ms) + 1

    @property
    def bytes(self) -> np.ndarray:
        """Read-only int64 array ``[type, bin]`` in the order of :attr:`types`."""
        return self._bytes

    @property
    def max_age_ms(self) -> list[int | None]:
        """Upper bound of each bin in ms; ``None`` stands for +inf (the last bin)."""
        return [*self.edges_ms, None]

    @property
    def lower_ms(self) -> list[int]:
        """Lower bound of each bin in ms (exclusive)."""
        return [0, *self.edges_ms]

    @property
    def known_up_to_ms(self) -> int:
        """The largest finite edge: beyond it the source tells only that memory is older."""
        return self.edges_ms[-1] if self.edges_ms else 0

    def type_bytes(self, type_name: str) -> np.ndarray:
        """Bytes per bin of one memory type (zeros for a type this histogram does not carry)."""
        if type_name in self.types:
            return self._bytes[self.types.index(type_name)]
        return np.zeros(self.n_bins, dtype=np.int64)

    @property
    def anon_bytes(self) -> np.ndarray:
        """Anonymous bytes per bin."""
        return self._bytes[0]

    @property
    def file_bytes(self) -> np.ndarray:
        """File-backed bytes per bin."""
        return self._bytes[1]

    def bin_bytes(self) -> list[int]:
        """Bytes per bin summed over all types (exact Python integers)."""
        return [sum(int(v) for v in self._bytes[:, column]) for column in range(self.n_bins)]

    # -- totals and the cold-memory curve ------------------------------------------------------

    def total_bytes(self, type_name: str | None = None) -> int:
        """All bytes, or the bytes of one memory type."""
        if type_name is None:
            return sum(int(v) for v in self._bytes.ravel())
        return sum(int(v) for v in self.type_bytes(type_name))

    def totals_by_type(self) -> dict[str, int]:
        """Total bytes of each memory type."""
        return {t: self.total_bytes(t) for t in self.types}

    def cold_bytes(self, idle_ms: int, type_name: str | None = None) -> int:
        """Bytes idle for longer than ``idle_ms``.

        Inside a finite bin ages are taken as uniform (the kernel's rule), so a bin straddling
        ``idle_ms`` contributes the share of its range above it, rounded down. The open-ended bin
        counts only when ``idle_ms`` is at or below its lower bound (see the module docstring).
        """
        rows = self._bytes if type_name is None else self.type_bytes(type_name)[None, :]
        per_bin = [sum(int(v) for v in rows[:, column]) for column in range(self.n_bins)]
        shares = _cold_shares(self.edges_ms, idle_ms)
        return sum(amount * above // width for amount, (above, width) in zip(per_bin, shares, strict=True))

    def cold_curve(self, idle_ms: Iterable[int], type_name: str | None = None) -> np.ndarray:
        """:meth:`cold_bytes` at each of several idle ages, as an int64 array."""
        return np.array([self.cold_bytes(int(t), type_name) for t in idle_ms], dtype=np.int64)

    # -- re-binning, merging, comparing --------------------------------------------------------

    def rebin(self, edges_ms: Sequence[int]) -> Histogram:
        """Return this histogram on other bin edges, conserving every type's bytes exactly.

        Itself when it is on those edges already; otherwise O(bins + target bins) per type
        (:func:`wsrl.agent.bins.rebin_rows`).
        """
        target_edges = validate_edges(edges_ms)
        if target_edges == self.edges_ms:
            return self
        rows = dict(zip(self.types, self._bytes.tolist(), strict=True))
        moved = rebin_rows(self.edges_ms, rows, target_edges)
        return Histogram(self.guest, self.node, target_edges, moved, self.meta)

    def with_types(self, types: Iterable[str]) -> Histogram:
        """Return this histogram carrying the given memory types too (zero where absent).

        The result's types are ``anon``, ``file``, then the given types in the given order, then
        any other type this histogram has.
        """
        order = list(dict.fromkeys([*BASE_TYPES, *types, *self.types]))
        if tuple(order) == self.types:
            return self
        rows = {t: self.type_bytes(t) for t in order}
        return Histogram(self.guest, self.node, self.edges_ms, rows, self.meta)

    def normalised(self) -> np.ndarray:
        """Share of all bytes in each ``[type, bin]`` (float64, sums to 1; zeros if empty)."""
        total = self.total_bytes()
        if total == 0:
            return np.zeros(self._bytes.shape, dtype=np.float64)
        return self._bytes.astype(np.float64) / float(total)

    def distance(self, other: Histogram) -> float:
        """Total-variation distance in [0, 1] between the two normalised histograms.

        Both are first re-binned onto the union of their edges and given the union of their
        memory types, so histograms from different sources can be compared.
        """
        mine, theirs = on_common_grid([self, other])
        mine_rows = mine.bytes.astype(np.float64)
        their_rows = theirs.bytes.astype(np.float64)
        mine_total, their_total = mine_rows.sum(), their_rows.sum()
        if mine_total == 0 or their_total == 0:
            return 0.0 if mine_total == their_total else 1.0
        return float(0.5 * np.abs(mine_rows / mine_total - their_rows / their_total).sum())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return (
            self.guest == other.guest
            and self.node == other.node
            and self.edges_ms == other.edges_ms
            and self.types == other.types
            and np.array_equal(self._bytes, other._bytes)
        )

    __hash__ = None  # type: ignore[assignment]  # unhashable (mutable arrays, __eq__ by value)

    def __repr__(self) -> str:
        totals = ", ".join(f"{t}={v}" for t, v in self.totals_by_type().items())
        return (
            f"Histogram(guest={self.guest!r}, node={self.node}, bins={self.n_bins}, "
            f"edges_ms={list(self.edges_ms)}, {totals})"
        )

    # -- JSON ----------------------------------------------------------------------------------

    def to_json_dict(self) -> dict[str, Any]:
        """The CLI's JSON shape: ``{"guest", "node", "bins": [{"max_age_ms", "<type>_bytes"...}]}``.

        ``max_age_ms`` is ``null`` for the open-ended bin. Extra memory types appear as
        ``<type>_bytes`` keys after ``anon_bytes`` and ``file_bytes``.
        """
        bins = []
        for column, upper in enumerate(self.max_age_ms):
            entry: dict[str, Any] = {"max_age_ms": upper}
            for row, type_name in enumerate(self.types):
                entry[f"{type_name}_bytes"] = int(self._bytes[row, column])
            bins.append(entry)
        out: dict[str, Any] = {"guest": self.guest, "node": self.node, "bins": bins}
        if self.meta:
            out["meta"] = dict(self.meta)
        return out

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> Histogram:
        """Inverse of :meth:`to_json_dict`."""
        try:
            bins = list(data["bins"])
            if not bins or bins[-1].get("max_age_ms") is not None:
                raise HistogramError("the last bin must have max_age_ms null (+inf)")
            edges = [b["max_age_ms"] for b in bins[:-1]]
            if any(e is None for e in edges):
                raise HistogramError("only the last bin may have max_age_ms null")
            types = [k[: -len("_bytes")] for k in bins[0] if k.endswith("_bytes")]
            rows = {t: [b.get(f"{t}_bytes", 0) for b in bins] for t in types}
            return cls(str(data["guest"]), int(data["node"]), edges, rows, data.get("meta"))
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise HistogramError(f"not a histogram JSON object: {exc!r}") from exc


def cold_weights(edges_ms: Sequence[int], idle_ms: int) -> np.ndarray:
    """Per-bin share of bytes that :meth:`Histogram.cold_bytes` counts as idle over ``idle_ms``.

    ``len(edges_ms) + 1`` floats in [0, 1]: cold bytes of any histogram on these edges are the dot
    product of its bin bytes with these weights (up to ``cold_bytes``' rounding down). Use it to
    compute cold memory for many histograms on one grid at once, as arrays.
    """
    shares = _cold_shares(validate_edges(edges_ms), idle_ms)
    return np.array([above / width for above, width in shares])


def _cold_shares(edges_ms: Sequence[int], idle_ms: int) -> list[tuple[int, int]]:
    """Per bin, the share idle longer than ``idle_ms`` as ``(above, width)``: the one rule.

    Ages are uniform inside a finite bin (the kernel's rule); the open-ended bin counts wholly
    when ``idle_ms`` is at or below its lower bound and not at all otherwise.
    """
    if idle_ms < 0:
        raise HistogramError(f"idle age must be >= 0 ms, got {idle_ms}")
    shares = []
    for lower, upper in zip((0, *edges_ms), (*edges_ms, None), strict=True):
        if idle_ms <= lower:
            shares.append((1, 1))
        elif upper is not None and idle_ms < upper:
            shares.append((upper - idle_ms, upper - lower))
        else:
            shares.append((0, 1))
    return shares


def merge_nodes(
    histograms: Sequence[Histogram], node: int = ALL_NODES, max_bins: int | None = None
) -> Histogram:
    """Add up several histograms (typically one guest's NUMA nodes, or a dump's memcgs) into one.

    The result is on the union of their edges and carries the union of their memory types. Bytes
    are conserved exactly; histograms on the same edges add up bin by bin. The cost is linear in
    the histograms' bins, however many there are and however their edges differ: the rule is
    :func:`wsrl.agent.bins.merge_rows`, which ``max_bins`` (``None``: no cap) passes a cap on the
    result's bins to.
    """
    if not histograms:
        raise HistogramError("merge_nodes needs at least one histogram")
    types = list(dict.fromkeys(t for h in histograms for t in h.types))
    parts = [(h.edges_ms, dict(zip(h.types, h.bytes.tolist(), strict=True))) for h in histograms]
    edges, sums = merge_rows(parts, types, max_bins)
    guests = {h.guest for h in histograms}
    guest = histograms[0].guest if len(guests) == 1 else "+".join(sorted(guests))
    return Histogram(guest, node, edges, sums, histograms[0].meta)


def on_common_grid(histograms: Sequence[Histogram]) -> list[Histogram]:
    """Re-bin histograms onto the union of their edges, each carrying the union of their types.

    The results share ``edges_ms`` and ``types`` (in the same order), so their ``bytes`` arrays
    line up element by element. Bytes are conserved exactly.
    """
    edges = tuple(sorted(set().union(*(h.edges_ms for h in histograms))))
    types = list(dict.fromkeys(t for h in histograms for t in h.types))
    return [h.rebin(edges).with_types(types) for h in histograms]
