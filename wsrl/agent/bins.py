"""Working-set bins as plain integers: the standard-library core of :class:`wsrl.histogram.Histogram`.

A guest has no numpy, yet the agent must produce exactly the histogram the host would: this module
holds the integer arithmetic both sides share. :class:`Bins` is one histogram as Python lists
(bin ``i`` holds the bytes idle for ``(edges_ms[i-1], edges_ms[i]]`` ms, the last bin is
open-ended; see :mod:`wsrl.histogram` for the rules). :func:`overlap_weights` and :func:`spread`
re-bin bytes by the kernel's proportional-overlap rule with largest-remainder rounding, conserving
every byte, in time linear in the bins; :func:`merge_rows` and :func:`merge_bins` add histograms
up on the union of their edges in linear time (what :func:`wsrl.histogram.merge_nodes` does);
:func:`select_memcgs` picks the memcgs of an ``lru_gen`` dump a ``memcg`` setting names. Standard
library only: it runs inside a minimal guest.
"""

from __future__ import annotations

from bisect import bisect_right
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

MAX_HISTOGRAM_BINS = 4096
"""Most bins a histogram that crosses from a guest to the host may have: a guest's record with
more is refused, and merging a dump's memcgs (whose union of generation ages grows with their
number) keeps at most this many (:func:`merge_rows`). Enough to keep every generation of a
thousand memcgs apart; the runner itself reads a dozen bins."""


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


def overlap_weights(
    source_edges: Sequence[int], target_edges: Sequence[int]
) -> list[tuple[int, list[int], int]]:
    """For each source bin, the target bins it overlaps: ``(first target bin, overlaps (ms), width)``.

    ``overlaps[i]`` is the overlap with target bin ``first + i``; only the run of target bins the
    source bin meets is listed, so the whole list costs O(source bins + target bins), found in one
    walk over both edge lists. A source bin with no width to share (the open-ended bin, or a
    zero-width bin) gets a single overlap of 1 on the target bin that receives all of it, and width 1.
    """
    n_targets = len(target_edges)
    weights: list[tuple[int, list[int], int]] = []
    first = 0  # the first target bin whose upper bound exceeds the current source bin's lower bound
    lower = 0
    for upper in [*source_edges, None]:
        while first < n_targets and target_edges[first] <= lower:
            first += 1
        if upper is None:
            # Ages just above `lower`: the first target bin whose upper bound exceeds it.
            weights.append((first, [1], 1))
            break
        if upper == lower:
            # A point mass at age `upper` (only bin (0, 0] can be one): the target bin holding age 0.
            weights.append((0, [1], 1))
            continue
        overlaps = []
        target = first
        target_lower = target_edges[target - 1] if target else 0
        while True:
            target_upper = target_edges[target] if target < n_targets else None
            top = upper if target_upper is None else min(upper, target_upper)
            overlaps.append(top - max(lower, target_lower))
            if target_upper is None or target_upper >= upper:
                break
            target_lower = target_upper
            target += 1
        weights.append((first, overlaps, upper - lower))
        lower = upper
    return weights


def spread(amount: int, first: int, overlaps: list[int], width: int, out: list[int]) -> None:
    """Add ``amount`` to ``out[first:]`` in proportion to ``overlaps / width``, exactly.

    Shares are rounded down and the bytes left go one each to the largest remainders.
    """
    if amount == 0:
        return
    shares = []
    given = 0
    for offset, overlap in enumerate(overlaps):
        if overlap:
            share, remainder = divmod(amount * overlap, width)
            out[first + offset] += share
            given += share
            shares.append((-remainder, first + offset))
    shares.sort()
    for _, j in shares[: amount - given]:
        out[j] += 1


def rebin_rows(
    edges_ms: Sequence[int], rows: Mapping[str, Sequence[int]], target_edges: Sequence[int]
) -> dict[str, list[int]]:
    """Every row of bins on ``edges_ms`` moved onto ``target_edges``, conserving each row's bytes.

    Linear: O(source bins + target bins) per row (see :func:`overlap_weights`).
    """
    if tuple(target_edges) == tuple(edges_ms):
        return {type_name: [int(v) for v in values] for type_name, values in rows.items()}
    weights = overlap_weights(edges_ms, target_edges)
    moved: dict[str, list[int]] = {}
    for type_name, values in rows.items():
        out = [0] * (len(target_edges) + 1)
        for source_bin, (first, overlaps, width) in enumerate(weights):
            spread(int(values[source_bin]), first, overlaps, width, out)
        moved[type_name] = out
    return moved


_SCALE = 2**64
"""Fixed-point scale of :func:`merge_rows`' running sum: its rounding error is far below a byte."""


def merge_rows(
    parts: Sequence[tuple[Sequence[int], Mapping[str, Sequence[int]]]],
    types: Sequence[str],
    max_bins: int | None = None,
) -> tuple[tuple[int, ...], dict[str, list[int]]]:
    """Add up histograms given as ``(edges_ms, rows by type)`` on the union of their edges, in linear time.

    Each source bin spreads its bytes uniformly over its age range (the proportional-overlap rule
    of :func:`rebin_rows`); the open-ended bin goes to the bin just above its lower bound and a
    zero-width bin to the bin holding age 0. Instead of re-binning every histogram onto the union
    (work of histograms x union edges, quadratic when many histograms have different ages), one
    sweep over the sorted union adds up the cumulative bytes of all histograms at each edge, in
    exact integers at a fixed-point scale of 2^64: each bin's slope is its bytes over its width,
    rounded down, and the rest is added at its upper edge, so every histogram contributes exactly
    its bytes. A merged bin is the difference of the cumulative sums at its edges, each rounded up
    to a byte (leaning, as re-binning does, toward younger memory), so bytes are conserved exactly
    and no bin is negative. Histograms that share their edges add up bin by bin, exactly. Cost:
    O(n log n) in the number of source bins, plus O(union edges).

    ``max_bins`` (``None``: no cap; at least 2) bounds the result: when the union has more edges
    than ``max_bins - 1``, that many of them are kept, evenly spaced, always with the largest (so
    the open-ended bin is unchanged); the bins are then the same sums read at fewer edges.

    Returns:
        The merged edges and bytes per bin of each of ``types`` (a type a part lacks counts 0).

    """
    edges = sorted({edge for part_edges, _ in parts for edge in part_edges})
    index = {edge: position for position, edge in enumerate(edges)}
    n_edges = len(edges)
    slope_change = {t: [0] * (n_edges + 1) for t in types}
    jump = {t: [0] * (n_edges + 1) for t in types}  # added at the end of segment j (j = n_edges: open)
    totals = dict.fromkeys(types, 0)
    for part_edges, rows in parts:
        lowers = [0, *part_edges]
        for type_name, values in rows.items():
            if type_name not in totals:
                continue
            slopes, jumps = slope_change[type_name], jump[type_name]
            for source_bin, amount in enumerate(values):
                amount = int(amount)
                if amount == 0:
                    continue
                totals[type_name] += amount
                lower = lowers[source_bin]
                first = index[lower] + 1 if source_bin else 0
                if source_bin == len(part_edges):  # open-ended: the segment just above `lower`
                    jumps[first if source_bin else bisect_right(edges, 0)] += amount * _SCALE
                    continue
                upper = part_edges[source_bin]
                last = index[upper]
                if upper == lower:  # the zero-width bin (0, 0]: a point mass at age 0
                    jumps[0] += amount * _SCALE
                    continue
                slope, rest = divmod(amount * _SCALE, upper - lower)
                slopes[first] += slope
                slopes[last + 1] -= slope
                jumps[last] += rest
    kept: Sequence[int] = range(n_edges)
    if max_bins is not None and n_edges > max_bins - 1:
        keep = max(max_bins - 1, 1)
        kept = [(i + 1) * n_edges // keep - 1 for i in range(keep)]  # evenly spaced, the largest kept
    merged: dict[str, list[int]] = {}
    for type_name in types:
        slopes, jumps = slope_change[type_name], jump[type_name]
        cumulative = [0] * n_edges
        running = slope = previous = 0
        for position, edge in enumerate(edges):
            slope += slopes[position]
            running += slope * (edge - previous) + jumps[position]
            cumulative[position] = -(-running // _SCALE)  # rounded up: never colder than the parts
            previous = edge
        below = 0
        out = []
        for position in kept:
            out.append(cumulative[position] - below)
            below = cumulative[position]
        out.append(totals[type_name] - below)
        merged[type_name] = out
    return tuple(edges[position] for position in kept), merged


def merge_bins(
    histograms: Sequence[Bins], guest: str, node: int = ALL_NODES, max_bins: int | None = None
) -> Bins:
    """Add up histograms on the union of their edges into one of ``guest``, conserving every byte.

    The rule and its linear cost are :func:`merge_rows` (``max_bins`` caps the result's bins). The
    result carries the union of their memory types (``anon`` and ``file`` first) and the first
    histogram's meta, like :func:`wsrl.histogram.merge_nodes`.
    """
    if not histograms:
        raise ValueError("merge_bins needs at least one histogram")
    types = list(dict.fromkeys([*BASE_TYPES, *(t for h in histograms for t in h.bytes_by_type)]))
    edges, sums = merge_rows([(h.edges_ms, h.bytes_by_type) for h in histograms], types, max_bins)
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

    The result is on the union of the generations' ages (at most :data:`MAX_HISTOGRAM_BINS` bins),
    node :data:`ALL_NODES`, and holds exactly the bytes of the selected blocks. ``meta`` is
    ``{"source": "lru_gen", "memcgs": <paths>}``.
    """
    chosen = select_memcgs(histograms, memcg)
    if not chosen:
        raise KernelTextError("lru_gen", "dump", "memcg", "the dump holds no memcg")
    merged = merge_bins(chosen, guest, max_bins=MAX_HISTOGRAM_BINS)
    merged.meta = {"source": "lru_gen", "memcgs": ",".join(dict.fromkeys(h.guest for h in chosen))}
    return merged
