"""Working-set bins as plain integers: the standard-library core of :class:`wsrl.histogram.Histogram`.

A guest has no numpy, yet the agent must produce exactly the histogram the host would: this module
holds the integer arithmetic both sides share. :class:`Bins` is one histogram as Python lists
(bin ``i`` holds the bytes idle for ``(edges_ms[i-1], edges_ms[i]]`` ms, the last bin is
open-ended; see :mod:`wsrl.histogram` for the rules). :func:`overlap_weights` and :func:`spread`
re-bin bytes by the kernel's proportional-overlap rule with largest-remainder rounding, conserving
every byte; :func:`merge_bins` adds histograms up on the union of their edges (what
:func:`wsrl.histogram.merge_nodes` does); :func:`select_memcgs` picks the memcgs of an ``lru_gen``
dump a ``memcg`` setting names. Standard library only: it runs inside a minimal guest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from wsrl.agent.kernel_text import KernelTextError

ANON = "anon"
FILE = "file"
BASE_TYPES: tuple[str, str] = (ANON, FILE)

ALL_NODES = -1
"""Node number of a histogram that is not split by NUMA node (merged, or a source without nodes)."""

MAX_BYTES = 2**63 - 1
"""Largest byte count a bin can hold (int64)."""


@dataclass
class Bins:
    """One guest's histogram on one node as plain integers (what a parser or the agent produces).

    Attributes:
        guest: the guest's name (a memcg path, ...).
        node: NUMA node number, or :data:`ALL_NODES`.
        edges_ms: finite upper bounds of all bins but the last, ms, strictly increasing.
        bytes_by_type: bytes per bin (``len(edges_ms) + 1``) of each memory type, ``anon`` and
            ``file`` first.
        meta: source details worth keeping, as strings.

    """

    guest: str
    node: int
    edges_ms: tuple[int, ...]
    bytes_by_type: dict[str, list[int]]
    meta: dict[str, str] = field(default_factory=dict)

    def type_bytes(self, type_name: str) -> list[int]:
        """Bytes per bin of ``type_name`` (zeros for a type this histogram does not carry)."""
        return list(self.bytes_by_type.get(type_name, [0] * (len(self.edges_ms) + 1)))


def overlap_weights(source_edges: Sequence[int], target_edges: Sequence[int]) -> list[tuple[list[int], int]]:
    """For each source bin, its overlap (ms) with every target bin and its own width.

    A source bin with no width to share (the open-ended bin, or a zero-width bin) gets a single
    overlap of 1 on the target bin that receives all of it, and width 1.
    """
    target_lower = [0, *target_edges]
    target_upper: list[float] = [*target_edges, float("inf")]
    source_lower = [0, *source_edges]
    source_upper: list[float] = [*source_edges, float("inf")]
    weights = []
    for lower, upper in zip(source_lower, source_upper, strict=True):
        overlaps = [0] * len(target_lower)
        if upper == float("inf"):
            # Ages just above `lower`: the first target bin whose upper bound exceeds it.
            overlaps[next(j for j, up in enumerate(target_upper) if up > lower)] = 1
            weights.append((overlaps, 1))
        elif upper == lower:
            # A point mass at age `upper`: the target bin (lo, hi] holding it (age 0 -> bin 0).
            overlaps[next(j for j, up in enumerate(target_upper) if up >= upper)] = 1
            weights.append((overlaps, 1))
        else:
            for j, (t_lower, t_upper) in enumerate(zip(target_lower, target_upper, strict=True)):
                overlap = min(upper, t_upper) - max(lower, t_lower)
                if overlap > 0:
                    overlaps[j] = int(overlap)
            weights.append((overlaps, int(upper - lower)))
    return weights


def spread(amount: int, overlaps: list[int], width: int, out: list[int]) -> None:
    """Add ``amount`` to ``out`` in proportion to ``overlaps / width``, exactly (largest remainder)."""
    if amount == 0:
        return
    shares = []
    given = 0
    for j, overlap in enumerate(overlaps):
        if overlap:
            share, remainder = divmod(amount * overlap, width)
            out[j] += share
            given += share
            shares.append((-remainder, j))
    shares.sort()
    for _, j in shares[: amount - given]:
        out[j] += 1


def rebin_rows(
    edges_ms: Sequence[int], rows: Mapping[str, Sequence[int]], target_edges: Sequence[int]
) -> dict[str, list[int]]:
    """Every row of bins on ``edges_ms`` moved onto ``target_edges``, conserving each row's bytes."""
    if tuple(target_edges) == tuple(edges_ms):
        return {type_name: [int(v) for v in values] for type_name, values in rows.items()}
    weights = overlap_weights(edges_ms, target_edges)
    moved: dict[str, list[int]] = {}
    for type_name, values in rows.items():
        out = [0] * (len(target_edges) + 1)
        for source_bin, (overlaps, width) in enumerate(weights):
            spread(int(values[source_bin]), overlaps, width, out)
        moved[type_name] = out
    return moved


def merge_bins(histograms: Sequence[Bins], guest: str, node: int = ALL_NODES) -> Bins:
    """Add up histograms on the union of their edges into one of ``guest``, conserving every byte.

    The result carries the union of their memory types (``anon`` and ``file`` first) and the first
    histogram's meta, like :func:`wsrl.histogram.merge_nodes`.
    """
    if not histograms:
        raise ValueError("merge_bins needs at least one histogram")
    edges = tuple(sorted(set().union(*(h.edges_ms for h in histograms))))
    types = list(dict.fromkeys([*BASE_TYPES, *(t for h in histograms for t in h.bytes_by_type)]))
    sums = {type_name: [0] * (len(edges) + 1) for type_name in types}
    for histogram in histograms:
        moved = rebin_rows(histogram.edges_ms, histogram.bytes_by_type, edges)
        for type_name, values in moved.items():
            sums[type_name] = [a + b for a, b in zip(sums[type_name], values, strict=True)]
    return Bins(guest, node, edges, sums, dict(histograms[0].meta))


class _Named(Protocol):
    @property
    def guest(self) -> str: ...


NamedT = TypeVar("NamedT", bound=_Named)


def select_memcgs(histograms: Sequence[NamedT], memcg: str | None) -> list[NamedT]:
    """The lru_gen histograms (one per memcg and node, named by memcg path) that ``memcg`` selects.

    ``None`` or ``"/"``: all of them. A path: that memcg and every memcg below it.

    Raises:
        KernelTextError: no memcg in the dump matches ``memcg``.

    """
    if memcg is None or memcg.strip() in ("", "/"):
        return list(histograms)
    wanted = memcg.rstrip("/")
    chosen = [h for h in histograms if h.guest == wanted or h.guest.startswith(wanted + "/")]
    if not chosen:
        present = sorted({h.guest for h in histograms})
        raise KernelTextError(
            "lru_gen", "dump", "memcg", f"no memcg {memcg!r} in the dump (memcgs: {present})"
        )
    return chosen


def merge_lru_gen_bins(histograms: Sequence[Bins], memcg: str | None, guest: str) -> Bins:
    """Merge the memcgs ``memcg`` selects (see :func:`select_memcgs`) into one histogram of ``guest``.

    The result is on the union of the generations' ages, node :data:`ALL_NODES`, and holds exactly
    the bytes of the selected blocks. ``meta`` is ``{"source": "lru_gen", "memcgs": <paths>}``.
    """
    chosen = select_memcgs(histograms, memcg)
    if not chosen:
        raise KernelTextError("lru_gen", "dump", "memcg", "the dump holds no memcg")
    merged = merge_bins(chosen, guest)
    merged.meta = {"source": "lru_gen", "memcgs": ",".join(dict.fromkeys(h.guest for h in chosen))}
    return merged
