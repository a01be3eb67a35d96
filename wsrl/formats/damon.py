"""DAMON captures: damo ``recency-sz-hist`` text and sysfs ``tried_regions`` listings.

DAMON monitors regions, not pages: each region carries ``nr_accesses`` (samples that found it
accessed in the last aggregation interval) and ``age`` (aggregation intervals its access pattern
has stayed the same). DAMON has no anon/file split: every byte is counted as
``options.damon_region_type``. Histograms are for ``options.guest`` (default ``"damon"``) on
``options.node`` (default :data:`~wsrl.histogram.ALL_NODES`). The input kind is detected from
the first non-blank line: ``path:value`` (a path with a ``/``) is a sysfs listing, anything else
is damo text.

**Idle time** follows damo's ``get_idle_time`` (``damo_report_access.py``, damo 3.4.3): a region
with ``nr_accesses > 0`` has idle time 0; otherwise ``age * aggr + aggr`` (it was also idle during
the aggregation interval that just ended).

**damo text** (``damo report access --style recency-sz-hist``, damo 3.4.3, with or without
``--raw_number``). Per snapshot damo prints the legend ``<idle time (us)> <total size>`` and ten
lines ``[<min>, <max>) <size> |<bar>|``: the regions whose idle time lies in ``[min, max)``, with
linear (or ``--hist_logscale``) contiguous ranges from the smallest to the largest idle time.
Times are ``format_time_ns`` text (``0 ns``, ``800 ms``, ``30.010 s``, ``1 m 0.020 s``,
``6 h 200.001 ms``) or raw microseconds; sizes are ``format_sz`` text (``0 B``, ``4.000 KiB``,
``1024.000 MiB``) or raw bytes. Then ``memory bw estimate: ...`` and ``total size: <size>``, and
once per record ``record DAMON intervals: ...``. With several records each starts with
``kdamond K / context C / scheme S / target id T / recorded for ...``; an operations-layer DAMOS filter adds a
``# damos filters (df): ...`` line and a ``<df-passed size>`` histogram before the total one, and
a ``total size: X  df-passed Y`` tail. ``scheme stats`` blocks are skipped.

* Precision: damo prints sizes above 1 KiB with 3 decimals of their unit, so each size is known to
  +-0.0005 unit (+-0.5 MiB for a GiB figure). Each bin is the printed figure converted exactly
  (``round(decimal * unit)``); the histogram's total is the sum of those bins, and the printed
  ``total size`` must agree with it within the sum of the printed figures' rounding, else the input
  is rejected. Raw numbers are exact and must add up exactly. Times of a second or more are printed
  to the millisecond.
* Edges: a range ``[min, max)`` becomes the bin with upper bound ``floor(max / 1 ms)``: flooring
  never makes memory look colder than damo showed. Ranges whose floors coincide (sub-millisecond
  ranges, e.g. all memory accessed) are merged. The last bin is open-ended and empty: damo's last
  range ends above the largest idle time, so nothing is known to be older.
* Ranges must be contiguous (each starts where the previous ended): ``--hist_cumulate`` output is
  rejected.
* One histogram per printed histogram: several snapshots give several histograms (``meta`` holds
  the snapshot index); a record head appends ``/kdamondK/contextC/schemeS/targetT`` to the guest;
  a df-passed histogram appends ``/df-passed`` and keeps the filter text in ``meta``.

**sysfs listing**: the text ``grep -r . <dir>`` prints for a DAMON sysfs directory (one
``path:value`` line per non-empty file), where ``<dir>`` is a kdamond directory
(``/sys/kernel/mm/damon/admin/kdamonds/<K>``), a context, a scheme or a ``tried_regions``
directory (run inside ``tried_regions`` itself, the paths are relative: ``./0/start:...``).
The regions come from ``.../schemes/<S>/tried_regions/<R>/{start,end,nr_accesses,age}``
(Documentation/admin-guide/mm/damon/usage.rst; filled by writing ``update_schemes_tried_regions``
to the kdamond's ``state`` file); ``tried_regions/total_bytes``, when present, must equal the sum of
the region sizes. ``start``/``end`` are ``%lu`` addresses (``[start, end)``, bytes = end - start),
``nr_accesses`` and ``age`` are ``%u`` (``nr_accesses`` = ``nr_accesses_bp / 10000``, a sample
count; ``age`` in aggregation intervals; per mm/damon/sysfs-schemes.c). The aggregation interval is
``contexts/<C>/monitoring_attrs/intervals/aggr_us`` from the same capture; when the capture does not
hold it, DAMON's default 100 ms is used and ``meta["aggr_us_source"]`` says ``"default"``. Target
``regions/`` directories (user-set initial regions, no access data) and every other file are
ignored. One histogram per ``tried_regions`` directory: edges are the distinct idle times (floored
to ms), each bin holding the regions with exactly that idle time, and the open-ended last bin is
empty, like the MGLRU convention. With several schemes the guest gets
``/kdamondK/contextC/schemeS`` appended.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

from wsrl.errors import HistogramError, ParseError
from wsrl.formats import FormatOptions, decode_text
from wsrl.histogram import ALL_NODES, ANON, FILE, MAX_BYTES, Histogram

SOURCE = "damon"
DEFAULT_GUEST = "damon"
DEFAULT_AGGR_US = 100_000
"""DAMON's default aggregation interval (``aggr_us``), used when a sysfs capture lacks it."""

_NS_PER_UNIT: dict[str, int] = {
    "d": 86_400 * 10**9,
    "h": 3_600 * 10**9,
    "m": 60 * 10**9,
    "s": 10**9,
    "ms": 10**6,
    "us": 10**3,
    "ns": 1,
}
_UNIT_ORDER = tuple(_NS_PER_UNIT)
_BYTES_PER_UNIT: dict[str, int] = {
    "KiB": 1 << 10,
    "MiB": 1 << 20,
    "GiB": 1 << 30,
    "TiB": 1 << 40,
    "PiB": 1 << 50,
    "EiB": 1 << 60,
}

_SYSFS_LINE = re.compile(r"^(?P<path>[^\s:]*/[^\s:]*):(?P<value>.*)$")
_RECORD_HEAD = re.compile(
    r"^kdamond (?P<kdamond>\S+) / context (?P<context>\S+) / scheme (?P<scheme>\S+) / "
    r"target id (?P<target>\S+) / recorded for .*$"
)
_LEGEND = re.compile(r"^<idle time(?: \(us\))?> <(?P<kind>total|df-passed) size>$")
_HIST_LINE = re.compile(
    r"^\[(?P<lo>[^,\[\]()|]+), (?P<hi>[^,\[\]()|]+)\) +(?P<size>[^|]+?) +\|(?P<bar>[* ]*)\|$"
)
_TOTAL = re.compile(r"^total size: (?P<total>.+?)(?:  df-passed (?P<df>.+))?$")
_FILTERS = re.compile(r"^# damos filters \(df\): (?P<filters>.*)$")
_NUMBER = re.compile(r"^[0-9]+(?:\.[0-9]+)?$")
_RAW_INT = re.compile(r"^[0-9]+$")
_ROUNDED_SIZE = re.compile(r"^(?P<value>[0-9]+\.[0-9]{3}) (?P<unit>[KMGTPE]iB)$")
_BYTE_SIZE = re.compile(r"^(?P<value>[0-9]+) B$")
_NO_REGION = "no region in snapshot"
_SKIPPED_PREFIXES = ("memory bw estimate: ", "record DAMON intervals: ")


def parse(data: bytes, options: FormatOptions) -> list[Histogram]:
    """Parse damo ``recency-sz-hist`` text or a ``grep -r`` listing of DAMON's sysfs tree.

    Args:
        data: the capture's bytes (UTF-8 text).
        options: ``guest``, ``node`` and ``damon_region_type`` (the type DAMON's bytes count as).

    Returns:
        One histogram per printed histogram (damo text) or per ``tried_regions`` directory.

    Raises:
        ParseError: the text matches neither format, or breaks one of the rules in the module
            docstring (line number, field and reason named).

    """
    lines = decode_text(SOURCE, data)
    first = next((line for line in lines if line.strip()), None)
    if first is None:
        raise ParseError(SOURCE, "line 1", "text", "empty input")
    if _SYSFS_LINE.match(first):
        return parse_sysfs_listing(lines, options)
    return parse_damo_report(lines, options)


def _histogram(
    guest: str,
    options: FormatOptions,
    edges_ms: list[int],
    bin_bytes: list[int],
    meta: dict[str, str],
    location: str,
) -> Histogram:
    """Build a histogram with every byte in ``options.damon_region_type`` (the other type zero)."""
    other = FILE if options.damon_region_type == ANON else ANON
    rows = {options.damon_region_type: bin_bytes, other: [0] * len(bin_bytes)}
    node = ALL_NODES if options.node is None else options.node
    try:
        return Histogram(guest, node, edges_ms, rows, meta)
    except HistogramError as exc:
        raise ParseError(SOURCE, location, "bytes", str(exc)) from None


# -- damo report access --style recency-sz-hist ------------------------------------------------


@dataclass
class _Range:
    """One ``[lo, hi) size |bar|`` line."""

    line: int
    lo_text: str
    hi_text: str
    hi_us: Fraction | None
    size_bytes: int
    tolerance_bytes: Fraction


@dataclass
class _Block:
    """One printed histogram: its legend line, kind and ranges."""

    line: int
    kind: str
    filters: str | None
    ranges: list[_Range] = field(default_factory=list)
    no_region: bool = False


@dataclass
class _ReportState:
    """Where the damo text parser is."""

    options: FormatOptions
    record: dict[str, str] | None = None
    snapshot: int = 0
    pending: list[_Block] = field(default_factory=list)
    filters: str | None = None
    in_stats: bool = False
    histograms: list[Histogram] = field(default_factory=list)


def parse_damo_report(lines: list[str], options: FormatOptions) -> list[Histogram]:
    """Parse ``damo report access --style recency-sz-hist`` output (see the module docstring).

    Args:
        lines: the text's lines.
        options: ``guest``, ``node`` and ``damon_region_type``.

    Returns:
        One histogram per printed histogram, in order.

    Raises:
        ParseError: an unrecognised line, a malformed range, time or size, non-contiguous ranges,
            or a ``total size`` that the bins do not add up to.

    """
    state = _ReportState(options)
    for number, text in enumerate(lines, start=1):
        _report_line(state, number, text.rstrip())
    _flush_snapshot(state, None, len(lines))
    if not state.histograms:
        raise ParseError(SOURCE, "line 1", "legend", "no '<idle time (us)> <total size>' histogram found")
    return state.histograms


def _report_line(state: _ReportState, number: int, text: str) -> None:
    """Consume one line of damo text."""
    if state.in_stats:
        if not (_RECORD_HEAD.match(text) or _LEGEND.match(text) or text.startswith("record DAMON")):
            return
        state.in_stats = False
    if not text.strip() or text.startswith(_SKIPPED_PREFIXES):
        return
    if match := _RECORD_HEAD.match(text):
        _flush_snapshot(state, None, number)
        state.record = match.groupdict()
        state.snapshot = 0
        state.filters = None
    elif match := _FILTERS.match(text):
        state.filters = match["filters"]
    elif text.startswith("#"):
        return
    elif match := _LEGEND.match(text):
        _start_block(state, number, match["kind"])
    elif match := _HIST_LINE.match(text):
        _current_block(state, number, "idle time range").ranges.append(_read_range(number, match))
    elif text == _NO_REGION:
        _current_block(state, number, "histogram").no_region = True
    elif match := _TOTAL.match(text):
        _flush_snapshot(state, match, number)
    elif text == "scheme stats":
        state.in_stats = True
    else:
        raise ParseError(SOURCE, f"line {number}", "line", f"not damo recency-sz-hist output: {text[:80]!r}")


def _start_block(state: _ReportState, number: int, kind: str) -> None:
    if any(block.kind == kind for block in state.pending):
        # A second histogram of the same kind without a 'total size' line between: the previous
        # snapshot's tail was left out (a custom --format); close it unchecked.
        _flush_snapshot(state, None, number)
    filters = state.filters if kind == "df-passed" else None
    state.pending.append(_Block(number, kind, filters))


def _current_block(state: _ReportState, number: int, field_name: str) -> _Block:
    if not state.pending:
        raise ParseError(
            SOURCE, f"line {number}", field_name, "histogram line before any '<idle time>' legend"
        )
    block = state.pending[-1]
    if block.no_region:
        raise ParseError(SOURCE, f"line {number}", field_name, "histogram line after 'no region in snapshot'")
    return block


def _read_range(number: int, match: re.Match[str]) -> _Range:
    location = f"line {number}"
    lo_us = _parse_time_us(match["lo"], location, "idle time range start")
    hi_us = _parse_time_us(match["hi"], location, "idle time range end")
    if lo_us is None:
        raise ParseError(SOURCE, location, "idle time range start", "'max' cannot start a range")
    if hi_us is not None and hi_us <= lo_us:
        raise ParseError(
            SOURCE, location, "idle time range end", f"{match['hi']!r} is not after {match['lo']!r}"
        )
    size_bytes, tolerance = _parse_size(match["size"], location, "size")
    return _Range(number, match["lo"], match["hi"], hi_us, size_bytes, tolerance)


def _parse_time_us(text: str, location: str, field_name: str) -> Fraction | None:
    """Read damo ``format_time_ns`` text (or raw microseconds) as exact microseconds."""
    text = text.strip()
    if text == "max":
        return None
    if _RAW_INT.match(text):
        return Fraction(int(text))
    words = text.split(" ")
    if len(words) % 2:
        raise ParseError(SOURCE, location, field_name, f"{text!r} is not '<number> <unit>' pairs")
    total_ns = Fraction(0)
    last_unit = -1
    for value, unit in zip(words[::2], words[1::2], strict=True):
        if unit not in _NS_PER_UNIT or not _NUMBER.match(value):
            raise ParseError(SOURCE, location, field_name, f"{value} {unit!r} is not a time")
        order = _UNIT_ORDER.index(unit)
        if order <= last_unit:
            raise ParseError(SOURCE, location, field_name, f"units out of order in {text!r}")
        last_unit = order
        total_ns += Fraction(Decimal(value)) * _NS_PER_UNIT[unit]
    return total_ns / 1000


def _parse_size(text: str, location: str, field_name: str) -> tuple[int, Fraction]:
    """Read damo ``format_sz`` text (or raw bytes): ``(bytes, how far off it may be)``."""
    text = text.strip()
    if match := (_RAW_INT.match(text) or _BYTE_SIZE.match(text)):
        value, tolerance = int(match.group(1) if match.groups() else match.group(0)), Fraction(0)
    elif match := _ROUNDED_SIZE.match(text):
        unit = _BYTES_PER_UNIT[match["unit"]]
        value = round(Fraction(Decimal(match["value"])) * unit)
        tolerance = Fraction(unit, 2000)
    else:
        raise ParseError(SOURCE, location, field_name, f"{text!r} is not a damo size")
    if value > MAX_BYTES:
        raise ParseError(SOURCE, location, field_name, f"{text!r} is 2^63 bytes or more")
    return value, tolerance


def _flush_snapshot(state: _ReportState, total: re.Match[str] | None, number: int) -> None:
    """Close the pending histograms of one snapshot, checking them against its ``total size``."""
    if not state.pending:
        if total is not None:
            raise ParseError(SOURCE, f"line {number}", "total size", "no histogram before it")
        return
    totals: dict[str, str | None] = {"total": None, "df-passed": None}
    if total is not None:
        totals = {"total": total["total"], "df-passed": total["df"]}
    blocks = sorted(state.pending, key=lambda b: b.kind != "total")
    for block in blocks:
        _check_contiguous(block)
        if totals[block.kind] is not None:
            _check_total(block, str(totals[block.kind]), number)
    for block in state.pending:
        state.histograms.append(_block_histogram(state, block))
    state.pending = []
    state.snapshot += 1


def _check_contiguous(block: _Block) -> None:
    if not block.ranges and not block.no_region:
        raise ParseError(SOURCE, f"line {block.line}", "histogram", "legend line with no histogram after it")
    for previous, current in zip(block.ranges, block.ranges[1:], strict=False):
        if previous.hi_us is None:
            raise ParseError(SOURCE, f"line {current.line}", "idle time range start", "range after 'max'")
        if current.lo_text != previous.hi_text:
            raise ParseError(
                SOURCE,
                f"line {current.line}",
                "idle time range start",
                f"{current.lo_text!r} does not continue the previous range's end "
                f"{previous.hi_text!r} (cumulative --hist_cumulate output is not supported)",
            )


def _check_total(block: _Block, total_text: str, number: int) -> None:
    location = f"line {number}"
    field_name = "total size" if block.kind == "total" else "df-passed total size"
    stated, tolerance = _parse_size(total_text, location, field_name)
    summed = sum(r.size_bytes for r in block.ranges)
    tolerance += sum((r.tolerance_bytes for r in block.ranges), Fraction(0))
    if tolerance:
        tolerance += len(block.ranges) + 1  # float formatting slack, a byte per figure
    if abs(summed - stated) > tolerance:
        raise ParseError(
            SOURCE,
            location,
            field_name,
            f"{total_text!r} ({stated} bytes) differs from the sum of the histogram's sizes "
            f"({summed} bytes) by more than damo's rounding ({float(tolerance):.0f} bytes)",
        )


def _block_histogram(state: _ReportState, block: _Block) -> Histogram:
    """Turn a printed histogram into floored-ms edges; the open-ended bin stays empty."""
    edges_ms: list[int] = []
    bin_bytes: list[int] = []
    open_bytes = 0
    for item in block.ranges:
        if item.hi_us is None:
            open_bytes += item.size_bytes
            continue
        edge = int(item.hi_us // 1000)
        if edges_ms and edges_ms[-1] == edge:
            bin_bytes[-1] += item.size_bytes
        else:
            edges_ms.append(edge)
            bin_bytes.append(item.size_bytes)
    bin_bytes.append(open_bytes)
    guest = state.options.guest or DEFAULT_GUEST
    meta = {"source": "damo recency-sz-hist", "snapshot": str(state.snapshot)}
    if state.record is not None:
        record = state.record
        guest += (
            f"/kdamond{record['kdamond']}/context{record['context']}"
            f"/scheme{record['scheme']}/target{record['target']}"
        )
        meta.update(record)
    if block.kind == "df-passed":
        guest += "/df-passed"
        meta["damos_filters"] = block.filters or ""
    if block.ranges:
        meta["min_idle_time"] = block.ranges[0].lo_text
    return _histogram(guest, state.options, edges_ms, bin_bytes, meta, f"line {block.line}")


# -- sysfs tried_regions listing ----------------------------------------------------------------

_REGION_FIELDS = ("start", "end", "nr_accesses", "age")
_FIELD_LIMITS = {"start": 2**64, "end": 2**64, "nr_accesses": 2**32, "age": 2**32}


@dataclass
class _Region:
    """One ``tried_regions/<R>`` directory."""

    line: int
    values: dict[str, int] = field(default_factory=dict)


@dataclass
class _Scheme:
    """One ``tried_regions`` directory: the scheme it belongs to and its regions."""

    prefix: str
    ids: dict[str, str]
    line: int
    context: str | None
    regions: dict[str, _Region] = field(default_factory=dict)
    total_bytes: tuple[int, int] | None = None


def parse_sysfs_listing(lines: list[str], options: FormatOptions) -> list[Histogram]:
    """Parse ``grep -r . <DAMON sysfs dir>`` output (see the module docstring).

    Args:
        lines: the listing's lines (``path:value``).
        options: ``guest``, ``node`` and ``damon_region_type``.

    Returns:
        One histogram per ``tried_regions`` directory, in the order they first appear.

    Raises:
        ParseError: a line that is not ``path:value``, a bad or missing region field, an empty
            region, ``total_bytes`` that the regions do not add up to, or no tried regions at all.

    """
    schemes: dict[str, _Scheme] = {}
    aggr_us: dict[str, tuple[int, int]] = {}
    for number, text in enumerate(lines, start=1):
        if text.strip():
            _sysfs_line(schemes, aggr_us, number, text)
    if not schemes:
        raise ParseError(
            SOURCE,
            "line 1",
            "tried_regions",
            "no schemes/<S>/tried_regions files in the listing",
        )
    many = len(schemes) > 1
    return [_scheme_histogram(s, aggr_us, options, many) for s in schemes.values()]


def _sysfs_line(
    schemes: dict[str, _Scheme], aggr_us: dict[str, tuple[int, int]], number: int, text: str
) -> None:
    location = f"line {number}"
    match = _SYSFS_LINE.match(text)
    if match is None:
        raise ParseError(SOURCE, location, "line", f"not a 'path:value' line: {text[:80]!r}")
    parts = [p for p in match["path"].split("/") if p not in ("", ".")]
    value = match["value"].strip()
    if parts[-3:] == ["monitoring_attrs", "intervals", "aggr_us"]:
        context = "/".join(parts[:-3])
        aggr_us[context] = (_read_uint(value, location, "aggr_us", 2**64), number)
        return
    if "tried_regions" in parts:
        at = len(parts) - 1 - parts[::-1].index("tried_regions")
    elif not match["path"].startswith("/"):
        at = -1  # 'grep -r .' run inside a tried_regions directory: paths start at <R>/
    else:
        return
    head, rest = (parts[:at], parts[at + 1 :]) if at >= 0 else ([], parts)
    prefix = "/".join(head)
    is_region_field = len(rest) == 2 and rest[0].isdigit() and rest[1] in _REGION_FIELDS
    if rest != ["total_bytes"] and not is_region_field:
        return
    if prefix not in schemes:
        scheme_context = "/".join(head[: head.index("schemes")]) if "schemes" in head else None
        schemes[prefix] = _Scheme(prefix, _ids_of(head), number, scheme_context)
    scheme = schemes[prefix]
    if rest == ["total_bytes"]:
        scheme.total_bytes = (_read_uint(value, location, "total_bytes", 2**64), number)
    else:
        region = scheme.regions.setdefault(rest[0], _Region(number))
        if rest[1] in region.values:
            raise ParseError(SOURCE, location, rest[1], f"region {rest[0]} lists it twice")
        region.values[rest[1]] = _read_uint(value, location, rest[1], _FIELD_LIMITS[rest[1]])


def _ids_of(parts: list[str]) -> dict[str, str]:
    """Find the kdamond, context and scheme numbers a path names, where it names them."""
    ids = {}
    for key, name in (("kdamonds", "kdamond"), ("contexts", "context"), ("schemes", "scheme")):
        if key in parts and parts.index(key) + 1 < len(parts):
            ids[name] = parts[parts.index(key) + 1]
    return ids


def _read_uint(value: str, location: str, field_name: str, limit: int) -> int:
    if not _RAW_INT.match(value):
        raise ParseError(SOURCE, location, field_name, f"{value!r} is not an unsigned integer")
    number = int(value)
    if number >= limit:
        raise ParseError(SOURCE, location, field_name, f"{number} does not fit ({limit} or more)")
    return number


def _aggr_for(
    scheme: _Scheme, aggr_us: dict[str, tuple[int, int]], options: FormatOptions
) -> tuple[int, str]:
    """Find a scheme's aggregation interval: in the capture, else the option, else DAMON's default."""
    if scheme.context is not None and scheme.context in aggr_us:
        found = aggr_us[scheme.context]
    elif len(aggr_us) == 1:
        found = next(iter(aggr_us.values()))
    elif options.damon_aggr_us is not None:
        return options.damon_aggr_us, "option"
    else:
        return DEFAULT_AGGR_US, "default"
    if found[0] == 0:
        raise ParseError(SOURCE, f"line {found[1]}", "aggr_us", "aggregation interval of 0 us")
    return found[0], "capture"


def _region_idle_ms(region: _Region, aggr_us: int) -> tuple[int, int]:
    """``(idle ms, bytes)`` of one region, after checking its fields."""
    location = f"line {region.line}"
    for name in _REGION_FIELDS:
        if name not in region.values:
            raise ParseError(SOURCE, location, name, "missing from the region's directory")
    start, end = region.values["start"], region.values["end"]
    if end <= start:
        raise ParseError(SOURCE, location, "end", f"end {end} is not above start {start}")
    if end - start > MAX_BYTES:
        raise ParseError(SOURCE, location, "end", f"region of {end - start} bytes is 2^63 or more")
    if region.values["nr_accesses"] > 0:
        return 0, end - start
    return (region.values["age"] + 1) * aggr_us // 1000, end - start


def _scheme_histogram(
    scheme: _Scheme, aggr_us: dict[str, tuple[int, int]], options: FormatOptions, many: bool
) -> Histogram:
    interval_us, interval_source = _aggr_for(scheme, aggr_us, options)
    by_idle: dict[int, int] = {}
    for region in scheme.regions.values():
        idle_ms, size = _region_idle_ms(region, interval_us)
        by_idle[idle_ms] = by_idle.get(idle_ms, 0) + size
    if scheme.total_bytes is not None and scheme.total_bytes[0] != sum(by_idle.values()):
        raise ParseError(
            SOURCE,
            f"line {scheme.total_bytes[1]}",
            "total_bytes",
            f"{scheme.total_bytes[0]} differs from the regions' sum {sum(by_idle.values())}",
        )
    edges_ms = sorted(by_idle)
    guest = options.guest or DEFAULT_GUEST
    if many:
        guest += "".join(f"/{name}{value}" for name, value in scheme.ids.items())
    meta = {"source": "damon sysfs tried_regions", "aggr_us": str(interval_us)}
    meta["aggr_us_source"] = interval_source
    meta.update(scheme.ids)
    bin_bytes = [by_idle[e] for e in edges_ms] + [0]
    return _histogram(guest, options, edges_ms, bin_bytes, meta, f"line {scheme.line}")
