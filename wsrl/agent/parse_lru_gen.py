"""Parser for MGLRU's ``/sys/kernel/debug/lru_gen`` and ``lru_gen_full``, standard library only.

Both files are printed by ``lru_gen_seq_show`` in the kernel's mm/vmscan.c, one block per
(memcg, NUMA node)::

    memcg     1 /
     node     0
              7      12228      54326           0
              8       8168          1           0

* ``memcg <id> <path>``: printed before the memcg's first node. The id was a 16-bit memcg id
  (``%5hu``) and is the 64-bit cgroup inode number since 2025 (``%llu``); the path is
  everything after the single space that follows the id, and may hold spaces or be empty (a
  kernel without CONFIG_MEMCG).
* `` node <nid>``.
* generation lines ``<seq> <age_ms> <anon_pages> <file_pages>``, oldest (lowest seq) first. The
  age is the time since the generation was born. In ``lru_gen_full`` a page count may end in
  ``x``: the generation is below ``min_seq`` of that type. Such a generation has been retired
  for that type (its slot in the 4-entry ring waits to be reused by a future generation), so the
  printed counter is not memory on the LRU: it is counted as 0 bytes.
* in ``lru_gen_full`` only, after each generation line: per-tier lines ``<tier>`` + 6 counters
  whose one-letter suffixes come from ``"RT "``/``"RTx"`` or ``"rep"``/``"xxx"``, then one
  mm-walk line of 6 counters with suffixes from ``"LOYNFA"``/``"loynfa"`` (4 counters with
  ``"TYFA"``/``"tyfa"`` since 2025, blanks shown as ``x``). They are checked and skipped.

Turning generations into bins: generation ``g`` holds memory whose idle age lies in
``(age of g+1, age of g]``, and the youngest covers ``(0, its age]``. So the edges are the
generations' ages from the youngest up, each bin holds its generation's bytes, and the open-ended
last bin is EMPTY: nothing is known to be older than the oldest generation. Generations of equal
age are merged into one bin (edges must strictly increase); a younger generation (larger seq)
reporting a larger age than an older one is malformed. Generations retired for both types (both
counts ``x``-marked) carry no live memory and a stale age, so they are checked for syntax and then
left out of the bins and of the age-order check.

Rules this parser enforces beyond the syntax:

* every memcg has at least one node block and every node block at least one generation: the kernel
  prints each memcg with all its memory nodes and every node with its live generations, so a
  missing part means a truncated or edited capture;
* seq numbers within a node are consecutive; a (memcg id) or a node within a memcg appears once
  (a repeat happens when the dump is read while memcgs come and go, so: read it again);
* page counts fit in 64 bits and, as bytes (``page_size_bytes`` each), below 2^63; one
  histogram holds at most 2^63 - 1 bytes;
* at most :data:`MAX_MEMCGS` memcgs, :data:`MAX_NODES` node blocks per memcg and
  :data:`MAX_GENERATIONS` generations per node block: a dump over a cap is refused, naming it, so
  that a report's cost is bounded whoever wrote it. Parsing is linear in the dump's size.

One histogram per (memcg, node), in file order, as :class:`~wsrl.agent.bins.Bins`: guest = the
memcg path (``memcg:<id>`` when the path is empty), node = the node id, meta
``{"memcg_id": "<id>"}``. The guest agent reads its guest's dump with it; on the host,
:mod:`wsrl.formats.lru_gen` turns the result into :class:`~wsrl.histogram.Histogram` objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from wsrl.agent.bins import ANON, FILE, MAX_BYTES, Bins
from wsrl.agent.kernel_text import KernelTextError, decode_lines, parse_uint

SOURCE = "lru_gen"

U64_MAX = 2**64 - 1
MAX_NODE_ID = 2**31 - 1
MAX_AGE_MS = MAX_BYTES
"""Largest age usable as a histogram edge (the kernel prints ages as 32-bit ``%u``)."""

MAX_MEMCGS = 16384
"""Most memcgs one dump may hold. A dump comes from a guest, so it bounds the work one report can
cost the host; it is far above what a VM runs (a busy container host has a few thousand memcgs)."""
MAX_NODES = 1024
"""Most node blocks one memcg may have: the kernel's ``MAX_NUMNODES`` is at most 1024."""
MAX_GENERATIONS = 32
"""Most generation lines one node block may have: the kernel prints at most ``MAX_NR_GENS`` (4)."""

_MEMCG = re.compile(r"[ \t]*memcg[ \t]+([0-9]+)(?: (.*))?")
_NODE = re.compile(r"[ \t]*node[ \t]+([0-9]+)[ \t]*")
_COUNT = re.compile(r"([0-9]+)([A-Za-z]?)")

# Suffixes a per-tier counter may carry, by position within its type's three counters:
# "RT " / "RTx" on the youngest generation, "rep" on the others, "   " / "xxx" where unused.
_TIER_SUFFIXES: tuple[str, str, str] = ("Rrx", "Tex", "px")
# mm-walk stats: 6 counters "LOYNFA"/"loynfa" (to 2024), 4 counters "TYFA"/"tyfa" (2025 on).
_MM_SUFFIXES: dict[int, tuple[str, ...]] = {
    6: tuple(f"{u}{u.lower()}x" for u in "LOYNFA"),
    4: tuple(f"{u}{u.lower()}x" for u in "TYFA"),
}
_TIER_COUNTERS = 6


@dataclass
class _Generation:
    seq: int
    age_ms: int
    anon_pages: int
    file_pages: int
    anon_live: bool
    file_live: bool
    line: int
    next_tier: int = 0
    has_mm_stats: bool = False

    @property
    def live(self) -> bool:
        return self.anon_live or self.file_live


@dataclass
class _NodeBlock:
    node: int
    line: int
    generations: list[_Generation] = field(default_factory=list)


@dataclass
class _Memcg:
    memcg_id: int
    path: str
    line: int
    nodes: list[_NodeBlock] = field(default_factory=list)
    node_ids: set[int] = field(default_factory=set)

    @property
    def guest(self) -> str:
        return self.path if self.path.strip() else f"memcg:{self.memcg_id}"


def parse_lru_gen(data: bytes, page_size_bytes: int = 4096) -> list[Bins]:
    """Parse an ``lru_gen`` or ``lru_gen_full`` dump.

    Args:
        data: the raw bytes of the dump.
        page_size_bytes: converts page counts to bytes.

    Returns:
        One histogram per (memcg, node) block, in file order.

    Raises:
        KernelTextError: the input does not match the format described in the module docstring.

    """
    lines = decode_lines(SOURCE, data)
    memcgs = _Reader(lines).read()
    return [_to_bins(memcg, block, page_size_bytes) for memcg in memcgs for block in memcg.nodes]


def _error(location: str, field_name: str, reason: str) -> KernelTextError:
    return KernelTextError(SOURCE, location, field_name, reason)


def _parse_uint(token: str, location: str, field_name: str, max_value: int) -> int:
    return parse_uint(SOURCE, token, location, field_name, max_value)


class _Reader:
    """Line-by-line state machine over the dump."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.memcgs: list[_Memcg] = []
        self.memcg_lines: dict[int, int] = {}
        """Line of each memcg id seen (a repeat is found in O(1), not by a scan)."""
        self.memcg: _Memcg | None = None
        self.block: _NodeBlock | None = None

    def read(self) -> list[_Memcg]:
        for number, raw in enumerate(self.lines, start=1):
            if raw.strip():
                self._line(raw, number)
        if not self.memcgs:
            raise _error("line 1", "text", "empty input: no memcg line")
        self._close_memcg(f"line {len(self.lines)}", "the input ends")
        return self.memcgs

    def _line(self, raw: str, number: int) -> None:
        location = f"line {number}"
        memcg = _MEMCG.fullmatch(raw)
        if memcg is not None:
            self._start_memcg(memcg, number)
            return
        node = _NODE.fullmatch(raw)
        if node is not None:
            self._start_node(node.group(1), number)
            return
        tokens = raw.split()
        first_is_number = tokens[0].isascii() and tokens[0].isdigit()
        if tokens[0] in ("memcg", "node"):
            raise _error(
                location,
                f"{tokens[0]} id",
                f"malformed {tokens[0]} line {raw.strip()[:60]!r}: expected "
                + ("'memcg <id> <path>'" if tokens[0] == "memcg" else "'node <id>'"),
            )
        if len(tokens) == 4 and first_is_number:
            self._generation(tokens, number)
        elif len(tokens) == _TIER_COUNTERS + 1 and first_is_number:
            self._tier_stats(tokens, location)
        elif len(tokens) in _MM_SUFFIXES and _COUNT.fullmatch(tokens[0]):
            self._mm_stats(tokens, location)
        else:
            raise _error(
                location,
                "line",
                f"unrecognised line {raw.strip()[:60]!r}: expected a memcg, node, generation "
                "(seq age anon file) or lru_gen_full stats line",
            )

    # -- structure -----------------------------------------------------------------------------

    def _start_memcg(self, match: re.Match[str], number: int) -> None:
        location = f"line {number}"
        if self.memcg is not None:
            self._close_memcg(location, "a new memcg line starts")
        memcg_id = _parse_uint(match.group(1), location, "memcg id", U64_MAX)
        earlier = self.memcg_lines.get(memcg_id)
        if earlier is not None:
            raise _error(
                location,
                "memcg id",
                f"memcg {memcg_id} appears twice (first on line {earlier}); the dump was "
                "probably read while memcgs were created or removed: read it again",
            )
        if len(self.memcgs) == MAX_MEMCGS:
            raise _error(location, "memcg id", f"more than {MAX_MEMCGS} memcgs: over the cap on one dump")
        self.memcg_lines[memcg_id] = number
        self.memcg = _Memcg(memcg_id, match.group(2) or "", number)
        self.memcgs.append(self.memcg)

    def _start_node(self, digits: str, number: int) -> None:
        location = f"line {number}"
        if self.memcg is None:
            raise _error(location, "node id", "node line before any memcg line")
        self._close_node(location, "a new node line starts")
        node = _parse_uint(digits, location, "node id", MAX_NODE_ID)
        if node in self.memcg.node_ids:
            raise _error(
                location,
                "node id",
                f"node {node} appears twice in memcg {self.memcg.memcg_id} (line "
                f"{self.memcg.line}); the dump was probably read while memcgs changed",
            )
        if len(self.memcg.nodes) == MAX_NODES:
            raise _error(
                location, "node id", f"memcg {self.memcg.memcg_id} has more than {MAX_NODES} nodes (the cap)"
            )
        self.block = _NodeBlock(node, number)
        self.memcg.nodes.append(self.block)
        self.memcg.node_ids.add(node)

    def _close_node(self, location: str, why: str) -> None:
        block = self.block
        if block is None:
            return
        if not block.generations:
            raise _error(
                f"line {block.line}",
                "generation",
                f"node {block.node} has no generation lines ({why} at {location})",
            )
        if not any(generation.live for generation in block.generations):
            raise _error(
                f"line {block.line}",
                "generation",
                f"node {block.node} has no live generation: every count is x-marked",
            )
        self.block = None

    def _close_memcg(self, location: str, why: str) -> None:
        self._close_node(location, why)
        memcg = self.memcg
        if memcg is not None and not memcg.nodes:
            raise _error(
                f"line {memcg.line}",
                "node id",
                f"memcg {memcg.memcg_id} has no node lines ({why} at {location})",
            )

    # -- generations and their stats -----------------------------------------------------------

    def _generation(self, tokens: list[str], number: int) -> None:
        location = f"line {number}"
        if self.block is None:
            raise _error(location, "generation seq", "generation line before any node line")
        seq = _parse_uint(tokens[0], location, "generation seq", U64_MAX)
        age_ms = _parse_uint(tokens[1], location, "age", MAX_AGE_MS)
        anon_pages, anon_live = _page_count(tokens[2], location, "anon pages")
        file_pages, file_live = _page_count(tokens[3], location, "file pages")
        previous = self.block.generations[-1] if self.block.generations else None
        if previous is not None and seq != previous.seq + 1:
            raise _error(
                location,
                "generation seq",
                f"seq {seq} follows {previous.seq}: generations must be consecutive, oldest first",
            )
        if len(self.block.generations) == MAX_GENERATIONS:
            raise _error(
                location,
                "generation seq",
                f"node {self.block.node} has more than {MAX_GENERATIONS} generations (the cap; the "
                "kernel keeps 4)",
            )
        self.block.generations.append(
            _Generation(seq, age_ms, anon_pages, file_pages, anon_live, file_live, number)
        )

    def _current_generation(self, location: str, field_name: str) -> _Generation:
        if self.block is None or not self.block.generations:
            raise _error(location, field_name, "stats line before any generation line")
        return self.block.generations[-1]

    def _tier_stats(self, tokens: list[str], location: str) -> None:
        generation = self._current_generation(location, "tier stats")
        tier = _parse_uint(tokens[0], location, "tier stats", 2**31 - 1)
        if generation.has_mm_stats or tier != generation.next_tier:
            expected = (
                "none (the mm stats line ends a generation)"
                if generation.has_mm_stats
                else str(generation.next_tier)
            )
            raise _error(
                location,
                "tier stats",
                f"tier {tier} out of order after generation {generation.seq}: expected {expected}",
            )
        for position, token in enumerate(tokens[1:]):
            _stats_counter(token, _TIER_SUFFIXES[position % 3], location, "tier stats")
        generation.next_tier += 1

    def _mm_stats(self, tokens: list[str], location: str) -> None:
        generation = self._current_generation(location, "mm stats")
        if generation.has_mm_stats:
            raise _error(location, "mm stats", f"generation {generation.seq} has a second mm stats line")
        for token, allowed in zip(tokens, _MM_SUFFIXES[len(tokens)], strict=True):
            _stats_counter(token, allowed, location, "mm stats")
        generation.has_mm_stats = True


def _page_count(token: str, location: str, field_name: str) -> tuple[int, bool]:
    """A page count, and whether it is live (not ``x``-marked)."""
    live = not token.endswith("x")
    pages = _parse_uint(token if live else token[:-1], location, field_name, U64_MAX)
    return pages, live


def _stats_counter(token: str, allowed_suffixes: str, location: str, field_name: str) -> None:
    """Check one lru_gen_full counter: digits plus an optional position-specific letter."""
    match = _COUNT.fullmatch(token)
    if match is None or not match.group(1).isascii():
        raise _error(location, field_name, f"{token!r} is not a counter")
    suffix = match.group(2)
    if suffix and suffix not in allowed_suffixes:
        raise _error(
            location,
            field_name,
            f"{token!r}: suffix {suffix!r} is not one of {list(allowed_suffixes)} here",
        )
    _parse_uint(match.group(1), location, field_name, U64_MAX)


AGE_SKEW_TOLERANCE_MS = 20
"""A younger generation printed up to this much older than the one before it is read as the same
age. Seen on a real 6.1 guest in the first seconds after boot: generations born within one jiffy
printed across a clock tick, one jiffy (4 ms at HZ=250) apart the wrong way. 20 ms covers a few
jiffies at any HZ; a larger inversion is still an error."""


def _to_bins(memcg: _Memcg, block: _NodeBlock, page_size: int) -> Bins:
    """Bins from the live generations, youngest first, plus the empty open-ended bin."""
    live = [generation for generation in block.generations if generation.live]
    ages_ms = [generation.age_ms for generation in live]  # oldest generation first
    for index in range(1, len(live)):
        older_ms, younger = ages_ms[index - 1], live[index]
        if ages_ms[index] > older_ms:
            if ages_ms[index] - older_ms > AGE_SKEW_TOLERANCE_MS:
                raise _error(
                    f"line {younger.line}",
                    "age",
                    f"generation {younger.seq} is younger than {live[index - 1].seq} but older by age "
                    f"({younger.age_ms} ms > {older_ms} ms)",
                )
            ages_ms[index] = older_ms
    edges_ms: list[int] = []
    anon_bytes: list[int] = []
    file_bytes: list[int] = []
    for generation, age_ms in zip(reversed(live), reversed(ages_ms), strict=True):
        anon = _bytes(generation, generation.anon_pages, generation.anon_live, page_size, "anon")
        file = _bytes(generation, generation.file_pages, generation.file_live, page_size, "file")
        if edges_ms and edges_ms[-1] == age_ms:
            anon_bytes[-1] += anon
            file_bytes[-1] += file
        else:
            edges_ms.append(age_ms)
            anon_bytes.append(anon)
            file_bytes.append(file)
    anon_bytes.append(0)
    file_bytes.append(0)
    location = f"line {block.line}"
    total = sum(anon_bytes) + sum(file_bytes)
    if total > MAX_BYTES:
        raise _error(location, "pages", f"node {block.node} holds {total} bytes, over 2^63 - 1")
    return Bins(
        memcg.guest,
        block.node,
        tuple(edges_ms),
        {ANON: anon_bytes, FILE: file_bytes},
        {"memcg_id": str(memcg.memcg_id)},
    )


def _bytes(generation: _Generation, pages: int, live: bool, page_size: int, type_name: str) -> int:
    if not live:
        return 0
    value = pages * page_size
    if value > MAX_BYTES:
        raise _error(
            f"line {generation.line}",
            f"{type_name} pages",
            f"{pages} pages x {page_size} bytes = {value} bytes, over 2^63 - 1",
        )
    return value
