"""Parser for the working-set reporting (WSR) patches' ``page_age`` files, standard library only.

The WSR patch series (Yuanchu Xie, RFC 2023, v1..v4 2024; never merged upstream) adds two files
that print the same histogram:

* per memcg ``memory.workingset.page_age``: one block per NUMA node that has report intervals
  set, each headed ``N<node id>`` (``memory_ws_page_age_show`` in mm/memcontrol.c);
* per node ``/sys/devices/system/node/nodeN/workingset_report/page_age``: the node's block with no
  header (``page_age_show`` in mm/workingset_report.c).

A block is one line per bin, youngest first::

    N0
    1000 anon=137368 file=24530
    20000 anon=34342 file=0
    18446744073709551615 anon=4925624 file=1835328

The label is the bin's upper bound in ms (printed with ``%u``), the values are BYTES (the kernel
multiplies page counts by ``PAGE_SIZE``). The last bin is the catch-all, labelled
``WORKINGSET_INTERVAL_MAX`` = ``(unsigned long)-1`` = 18446744073709551615; early examples show
9223372036854775807 (LONG_MAX). Both mean +inf and both close a block: a block that ends without
one was cut short, and is an error rather than a histogram missing its oldest memory.

What this parser accepts, precisely:

* 1 to 32 bins per block (``WORKINGSET_REPORT_MAX_NR_BINS``; a block of only the catch-all is a
  node with no intervals), labels strictly increasing, finite labels below 2^63 - 1;
* ``key=value`` pairs in any order; ``anon`` and ``file`` are required, any other key (a memory
  type added by a later patch) is kept as an extra type and must then appear on every line of its
  block; a key may not repeat on a line;
* values are decimal byte counts in [0, 2^63); one block may hold at most 2^63 - 1 bytes in all;
* either every block has an ``N<id>`` header (each node at most once, at most :data:`MAX_NODES`
  of them) or the file has none and is one block, whose node is ``node`` (0 when unset);
* blank lines and whitespace around tokens are ignored.

The guest is ``guest`` (the CLI passes the file stem), or ``"memcg"``. An empty capture is
an error: the memcg file prints nothing when no node has ``page_age_intervals`` set, which is "no
histogram configured", not an empty histogram.

The result is :class:`~wsrl.agent.bins.Bins`: the guest agent reads its guest's file with it; on
the host, :mod:`wsrl.formats.wsr` turns it into :class:`~wsrl.histogram.Histogram` objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from wsrl.agent.bins import ANON, FILE, MAX_BYTES, Bins
from wsrl.agent.kernel_text import KernelTextError, decode_lines, parse_uint

SOURCE = "wsr"

ULONG_MAX = 2**64 - 1
LONG_MAX = 2**63 - 1
CATCH_ALL_LABELS: frozenset[int] = frozenset({ULONG_MAX, LONG_MAX})
"""Labels of the open-ended last bin: WORKINGSET_INTERVAL_MAX on 64-bit kernels, and LONG_MAX."""

MAX_BINS = 32
"""WORKINGSET_REPORT_MAX_NR_BINS: up to 31 intervals plus the catch-all bin."""

MAX_NODE_ID = 2**31 - 1
MAX_NODES = 1024
"""Most node blocks one file may have: the kernel's ``MAX_NUMNODES`` is at most 1024."""
DEFAULT_GUEST = "memcg"

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NODE_HEADER = re.compile(r"N([0-9]+)")


@dataclass
class _Block:
    """The bins of one node, collected line by line."""

    node: int
    first_line: int
    labels_ms: list[int] = field(default_factory=list)
    bytes_by_type: dict[str, list[int]] = field(default_factory=dict)
    closed: bool = False


def parse_wsr(data: bytes, guest: str | None = None, node: int | None = None) -> list[Bins]:
    """Parse a ``memory.workingset.page_age`` or ``nodeN/workingset_report/page_age`` capture.

    Args:
        data: the raw bytes of the file.
        guest: names the histograms (default ``"memcg"``).
        node: the node of a capture without ``N<id>`` headers (default 0).

    Returns:
        One histogram per node block, in file order.

    Raises:
        KernelTextError: the input does not match the format described in the module docstring.

    """
    lines = decode_lines(SOURCE, data)
    blocks = _read_blocks(lines, node)
    return [_to_bins(block, guest if guest is not None else DEFAULT_GUEST) for block in blocks]


def _error(location: str, field_name: str, reason: str) -> KernelTextError:
    return KernelTextError(SOURCE, location, field_name, reason)


def _read_blocks(lines: list[str], headerless_node: int | None) -> list[_Block]:
    """Split the lines into node blocks, checking headers and block ends."""
    blocks: list[_Block] = []
    nodes: set[int] = set()
    has_headers: bool | None = None
    current: _Block | None = None
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            continue
        location = f"line {number}"
        header = _NODE_HEADER.fullmatch(text)
        if header is not None:
            if has_headers is False:
                raise _error(
                    location,
                    "node header",
                    f"{text!r} follows bins that had no node header (mixed or concatenated files)",
                )
            has_headers = True
            _require_closed(current, location)
            current = _Block(_node_id(header.group(1), location, nodes), number)
            blocks.append(current)
            continue
        if current is None:
            has_headers = False
            node = headerless_node if headerless_node is not None else 0
            current = _Block(node, number)
            blocks.append(current)
        elif current.closed:
            raise _error(
                location,
                "bin label",
                f"a bin follows the catch-all bin of node {current.node} (the catch-all must be "
                "last; a new node needs an N<id> header)",
            )
        _add_bin(current, text, location)
    if not blocks:
        raise _error(
            "line 1",
            "text",
            "empty input: no bins (the kernel prints nothing when no node has page_age_intervals)",
        )
    _require_closed(current, f"line {len(lines)}", at_end=True)
    return blocks


def _node_id(digits: str, location: str, nodes: set[int]) -> int:
    """The node of an ``N<id>`` header, recorded in ``nodes`` (a repeat or one too many is an error)."""
    node = _parse_uint(digits, location, "node header", MAX_NODE_ID)
    if node in nodes:
        raise _error(location, "node header", f"node {node} appears twice")
    if len(nodes) == MAX_NODES:
        raise _error(location, "node header", f"more than {MAX_NODES} nodes (the cap)")
    nodes.add(node)
    return node


def _require_closed(block: _Block | None, location: str, at_end: bool = False) -> None:
    """Raise unless the block (if any) ended with its catch-all bin."""
    if block is None or block.closed:
        return
    where = "the input ends" if at_end else "a new node header starts"
    raise _error(
        location,
        "bin label",
        f"{where} before node {block.node}'s block (from line {block.first_line}) reached its "
        f"catch-all bin ({ULONG_MAX} or {LONG_MAX}): truncated input",
    )


def _parse_uint(token: str, location: str, field_name: str, max_value: int) -> int:
    return parse_uint(SOURCE, token, location, field_name, max_value)


def _add_bin(block: _Block, text: str, location: str) -> None:
    """Parse one ``<label> key=value ...`` line into the block."""
    label_token, *pair_tokens = text.split()
    label_ms = _parse_uint(label_token, location, "bin label", ULONG_MAX)
    if not pair_tokens:
        raise _error(location, "bin label", f"bin {label_token} has no key=value pairs")
    values = _parse_pairs(pair_tokens, location)
    _check_types(block, values, location)
    is_catch_all = label_ms in CATCH_ALL_LABELS
    if not is_catch_all:
        if label_ms >= LONG_MAX:
            raise _error(
                location,
                "bin label",
                f"{label_ms} is neither a finite bound below 2^63 - 1 ms nor a catch-all label",
            )
        if block.labels_ms and label_ms <= block.labels_ms[-1]:
            raise _error(
                location,
                "bin label",
                f"labels must be strictly increasing: {label_ms} follows {block.labels_ms[-1]}",
            )
    if len(block.labels_ms) == MAX_BINS:
        raise _error(location, "bin label", f"node {block.node} has more than {MAX_BINS} bins")
    block.labels_ms.append(label_ms)
    for type_name, value in values.items():
        block.bytes_by_type.setdefault(type_name, []).append(value)
    block.closed = is_catch_all


def _parse_pairs(tokens: list[str], location: str) -> dict[str, int]:
    """``key=value`` tokens as a dict of byte counts; anon and file must be among them."""
    values: dict[str, int] = {}
    for token in tokens:
        key, separator, value = token.partition("=")
        if not separator or not _KEY.fullmatch(key):
            raise _error(location, "key=value pair", f"{token!r} is not a key=value pair")
        if key in values:
            raise _error(location, key, f"{key} appears twice on the line")
        values[key] = _parse_uint(value, location, key, MAX_BYTES)
    for required in (ANON, FILE):
        if required not in values:
            raise _error(location, required, f"the required key {required}= is missing")
    return values


def _check_types(block: _Block, values: dict[str, int], location: str) -> None:
    """Every line of a block must carry the same memory types as its first line."""
    if not block.bytes_by_type:
        return
    expected = set(block.bytes_by_type)
    missing = sorted(expected - set(values))
    if missing:
        raise _error(
            location,
            missing[0],
            f"{missing[0]}= is on the block's earlier lines but missing here "
            f"(every line of a node must carry the same types)",
        )
    extra = sorted(set(values) - expected)
    if extra:
        raise _error(
            location,
            extra[0],
            f"{extra[0]}= is not on the block's earlier lines "
            f"(every line of a node must carry the same types)",
        )


def _to_bins(block: _Block, guest: str) -> Bins:
    location = f"line {block.first_line}"
    total = sum(sum(values) for values in block.bytes_by_type.values())
    if total > MAX_BYTES:
        raise _error(location, "bytes", f"node {block.node} holds {total} bytes, over 2^63 - 1")
    types = [ANON, FILE, *(t for t in block.bytes_by_type if t not in (ANON, FILE))]
    return Bins(guest, block.node, tuple(block.labels_ms[:-1]), {t: block.bytes_by_type[t] for t in types})
