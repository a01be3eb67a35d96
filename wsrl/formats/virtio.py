"""virtio-balloon working-set reports, parsed from the raw little-endian bytes the guest sends.

Two wire layouts exist; neither was merged upstream. Facts below come from the patches themselves
(linux-mm / virtualization mailing-list posts), not from any merged header.

**2023 RFC** ("[RFC PATCH v2 6/6] virtio-balloon: Add Working Set reporting", T.J. Alumbaugh and
Yuanchu Xie, 21 Jun 2023). The report sent on the ``ws`` virtqueue is ``working_set_num_bins``
records (a ``u8`` in the device config space) of 32 bytes each::

    struct virtio_balloon_working_set {
        __le16 tag;                      /* 0 = VIRTIO_BALLOON_WS_RECLAIMABLE,
                                            1 = VIRTIO_BALLOON_WS_DISCARDABLE */
        __le16 node_id;                  /* NUMA node of this report */
        u8     reserved[4];              /* never written: zero (kcalloc) */
        __le64 idle_age_ms;              /* upper bound of the bin, ms */
        __le64 memory_size_bytes[2];     /* [0] = anon, [1] = file */
    };

* One report is one node: ``working_set_notify(receiver, bins, node_id)`` fills every record with
  the same ``node_id``; each node sends its own report, so a capture of several nodes is several
  reports back to back. Records are grouped by ``node_id``; a node's records must come in strictly
  increasing ``idle_age_ms``.
* The catch-all bin: ``register_working_set_receiver`` sets the last bin's threshold to ``-1``
  jiffies and the driver sends ``jiffies_to_msecs(bins[i].idle_age)``, an ``unsigned int``: so the
  last record carries ``jiffies_to_msecs(ULONG_MAX)`` truncated to 32 bits, which depends on the
  guest's HZ (4294967295 at HZ=1000, 4294967292 at HZ=250, 4294967286 at HZ=100, 1431655762 at
  HZ=300). Those values, plus ``U64_MAX`` and ``2^63-1`` (what the v4 series and the text files
  use), mark the catch-all record (:data:`RFC_CATCH_ALL_MS`).
* A record reset by ``reset_working_set`` (tag ``0xffff``, node ``0xffff``, idle age 0, both sizes
  ``U64_MAX``) is an unfilled slot and is skipped.
* Only ``VIRTIO_BALLOON_WS_RECLAIMABLE`` is ever written by the RFC driver. ``DISCARDABLE`` records
  are accepted and counted the same way (both are memory the guest can give back); the tags seen
  are kept in ``meta["tags"]``.

**v4** ("[PATCH v4 9/9] virtio-balloon: add workingset reporting", Yuanchu Xie, 26 Nov 2024)::

    struct virtio_balloon_working_set_report {
        __le32 error;                    /* 0, or a negative errno */
        __le32 node_id;
        struct { __le64 idle_age; __le64 anon_bytes; __le64 file_bytes; } bins[32];
    };                                   /* 8 + 32 * 24 = 776 bytes */

* ``wsr_receiver_notify`` fills ``bins[]`` in order until the bin whose age is
  ``WORKINGSET_INTERVAL_MAX`` (``(unsigned long)-1``: ``U64_MAX`` from a 64-bit guest,
  ``U32_MAX`` from a 32-bit one); it writes that bin's bytes and age, then stops. The slots after
  it are NOT cleared: the buffer is reused, so they hold stale bins of an older configuration. This
  parser therefore reads up to the first catch-all slot and ignores the rest; a report with no
  catch-all in its 32 slots is malformed (the driver refuses configurations of 32 finite bins).
* On failure ``virtio_balloon_working_set_request`` writes ``error = cpu_to_le16(err)`` (a
  negative errno stored as 16 bits, e.g. 0xffea for -EINVAL) and leaves the bins stale: any
  non-zero ``error`` raises :class:`~wsrl.errors.ParseError` naming the ``error`` field and
  the errno.
* One report per node (``wsr_node_id``); several reports concatenated are read as several nodes. A
  node reported twice in one capture is an error (which report is current cannot be told).

**Layout detection** (``FormatOptions.virtio_layout``): ``"rfc2023"`` and ``"v4"`` force a layout.
``"auto"`` picks by length: a multiple of 776 bytes and not of 32 is v4, a multiple of 32 and not of
776 is the RFC; a length that is both (a multiple of 3104) is tried as v4 first, then as the RFC,
and the v4 error is raised if both fail. Any other length is an error naming it.

Every histogram is for ``options.guest`` (default ``"vm"``) on the node its records name; the
node in the bytes wins over ``options.node``. Histograms come back sorted by node.
"""

from __future__ import annotations

import errno
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from wsrl.errors import HistogramError, ParseError
from wsrl.formats import FormatOptions
from wsrl.histogram import ANON, FILE, MAX_BYTES, Histogram

SOURCE = "virtio"
DEFAULT_GUEST = "vm"

U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1
I64_MAX = 2**63 - 1

RFC_RECORD = struct.Struct("<HH4sQQQ")
"""2023 RFC record: tag, node_id, reserved[4], idle_age_ms, anon bytes, file bytes (32 bytes)."""
RFC_RECORD_BYTES = RFC_RECORD.size
RFC_TAGS: dict[int, str] = {0: "reclaimable", 1: "discardable"}
RFC_UNFILLED_TAG = 0xFFFF


def _jiffies_to_msecs_u32(jiffies: int, hz: int) -> int:
    """Compute the kernel's ``jiffies_to_msecs`` on a 64-bit guest, as an ``unsigned int``."""
    jiffies %= 2**64
    if 1000 % hz == 0:
        return ((1000 // hz) * jiffies) % 2**32
    # e.g. HZ=300: DIV_ROUND_UP(j * 10, 3), computed in unsigned long.
    common = math.gcd(1000, hz)
    num, den = 1000 // common, hz // common
    return (((jiffies * num) % 2**64 + den - 1) // den) % 2**32


RFC_CATCH_ALL_MS: frozenset[int] = frozenset(
    {U64_MAX, I64_MAX, *(_jiffies_to_msecs_u32(U64_MAX, hz) for hz in (100, 250, 300, 1000))}
)
"""Idle ages that mark the RFC's catch-all record (see the module docstring)."""

V4_HEADER = struct.Struct("<II")
V4_BIN = struct.Struct("<QQQ")
V4_NR_BINS = 32
V4_REPORT_BYTES = V4_HEADER.size + V4_NR_BINS * V4_BIN.size
V4_CATCH_ALL: frozenset[int] = frozenset({U64_MAX, U32_MAX})
"""``WORKINGSET_INTERVAL_MAX`` as a 64-bit or a 32-bit guest writes it."""


@dataclass
class _NodeBins:
    """The bins of one node as they are read, before becoming a :class:`Histogram`."""

    node: int
    first_record: int
    edges_ms: list[int] = field(default_factory=list)
    anon_bytes: list[int] = field(default_factory=list)
    file_bytes: list[int] = field(default_factory=list)
    catch_all: tuple[int, int] | None = None
    catch_all_record: int | None = None
    tags: set[str] = field(default_factory=set)


def parse(data: bytes, options: FormatOptions) -> list[Histogram]:
    """Parse a capture of virtio-balloon working-set reports.

    Args:
        data: the raw bytes: 2023 RFC records or v4 reports, little-endian.
        options: ``virtio_layout`` picks or auto-detects the layout; ``guest`` names the guest.

    Returns:
        One histogram per NUMA node, sorted by node.

    Raises:
        ParseError: the bytes do not match the layout (see the module docstring).

    """
    layout = options.virtio_layout
    if layout == "rfc2023":
        return parse_rfc2023(data, options)
    if layout == "v4":
        return parse_v4(data, options)
    return _parse_auto(data, options)


def _parse_auto(data: bytes, options: FormatOptions) -> list[Histogram]:
    length = len(data)
    if length == 0:
        raise ParseError(SOURCE, "byte 0", "length", "empty input: no report")
    fits_v4 = length % V4_REPORT_BYTES == 0
    fits_rfc = length % RFC_RECORD_BYTES == 0
    if fits_v4 and fits_rfc:
        try:
            return parse_v4(data, options)
        except ParseError as v4_error:
            try:
                return parse_rfc2023(data, options)
            except ParseError:
                raise v4_error from None
    if fits_v4:
        return parse_v4(data, options)
    if fits_rfc:
        return parse_rfc2023(data, options)
    raise ParseError(
        SOURCE,
        f"byte {length}",
        "length",
        f"{length} bytes is neither a whole number of {V4_REPORT_BYTES}-byte v4 reports nor of "
        f"{RFC_RECORD_BYTES}-byte 2023 RFC records",
    )


# -- 2023 RFC ---------------------------------------------------------------------------------


def parse_rfc2023(data: bytes, options: FormatOptions) -> list[Histogram]:
    """Parse a sequence of 32-byte 2023 RFC records (see the module docstring).

    Args:
        data: whole records, little-endian.
        options: ``guest`` names the guest.

    Returns:
        One histogram per node, sorted by node.

    Raises:
        ParseError: truncated record, bad tag, non-zero reserved bytes, idle ages not strictly
            increasing, a record after its node's catch-all, a size of 2^63 bytes or more.

    """
    _check_whole_units(data, RFC_RECORD_BYTES, "record")
    nodes: dict[int, _NodeBins] = {}
    for index, fields in enumerate(RFC_RECORD.iter_unpack(data)):
        _add_rfc_record(nodes, index, *fields)
    if not nodes:
        raise ParseError(SOURCE, "record 0", "tag", "every record is an unfilled (reset) slot")
    return [_to_histogram(nodes[n], options, "rfc2023") for n in sorted(nodes)]


def _add_rfc_record(
    nodes: dict[int, _NodeBins],
    index: int,
    tag: int,
    node_id: int,
    reserved: bytes,
    idle_age_ms: int,
    anon_bytes: int,
    file_bytes: int,
) -> None:
    location = f"record {index}"
    if tag == RFC_UNFILLED_TAG:
        if node_id == 0xFFFF and idle_age_ms == 0 and anon_bytes == file_bytes == U64_MAX:
            return
        raise ParseError(SOURCE, location, "tag", "0xffff marks an unfilled slot, but the record is not one")
    if tag not in RFC_TAGS:
        raise ParseError(SOURCE, location, "tag", f"unknown tag {tag} (known: 0, 1)")
    if reserved != bytes(4):
        raise ParseError(SOURCE, location, "reserved", f"must be zero, got {reserved.hex()}")
    _check_bytes(location, "memory_size_bytes[0] (anon)", anon_bytes)
    _check_bytes(location, "memory_size_bytes[1] (file)", file_bytes)
    bins = nodes.setdefault(node_id, _NodeBins(node=node_id, first_record=index))
    bins.tags.add(RFC_TAGS[tag])
    if bins.catch_all_record is not None:
        raise ParseError(
            SOURCE,
            location,
            "idle_age_ms",
            f"node {node_id} already ended with its catch-all bin at record {bins.catch_all_record}",
        )
    if idle_age_ms in RFC_CATCH_ALL_MS:
        bins.catch_all = (anon_bytes, file_bytes)
        bins.catch_all_record = index
        return
    _append_finite(bins, location, "idle_age_ms", idle_age_ms, anon_bytes, file_bytes)


# -- v4 ---------------------------------------------------------------------------------------


def parse_v4(data: bytes, options: FormatOptions) -> list[Histogram]:
    """Parse one or more concatenated 776-byte v4 reports (see the module docstring).

    Args:
        data: whole reports, little-endian.
        options: ``guest`` names the guest.

    Returns:
        One histogram per report (node), sorted by node.

    Raises:
        ParseError: truncated report, non-zero ``error``, a node reported twice, idle ages not
            strictly increasing, no catch-all slot, a size of 2^63 bytes or more.

    """
    _check_whole_units(data, V4_REPORT_BYTES, "report")
    nodes: dict[int, _NodeBins] = {}
    for index in range(len(data) // V4_REPORT_BYTES):
        report = data[index * V4_REPORT_BYTES : (index + 1) * V4_REPORT_BYTES]
        bins = _read_v4_report(index, report)
        if bins.node in nodes:
            raise ParseError(
                SOURCE,
                f"record {index}",
                "node_id",
                f"node {bins.node} was already reported by record {nodes[bins.node].first_record}",
            )
        nodes[bins.node] = bins
    return [_to_histogram(nodes[n], options, "v4") for n in sorted(nodes)]


def _read_v4_report(index: int, report: bytes) -> _NodeBins:
    location = f"record {index}"
    error_code, node_id = V4_HEADER.unpack_from(report)
    if error_code:
        raise ParseError(SOURCE, location, "error", f"the guest reported {_describe_errno(error_code)}")
    bins = _NodeBins(node=node_id, first_record=index)
    bin_fields = V4_BIN.iter_unpack(report[V4_HEADER.size :])
    for slot, (idle_age, anon_bytes, file_bytes) in enumerate(bin_fields):
        _check_bytes(location, f"bins[{slot}].anon_bytes", anon_bytes)
        _check_bytes(location, f"bins[{slot}].file_bytes", file_bytes)
        if idle_age in V4_CATCH_ALL:
            bins.catch_all = (anon_bytes, file_bytes)
            bins.catch_all_record = index
            return bins
        if slot and idle_age == anon_bytes == file_bytes == 0:
            raise ParseError(
                SOURCE,
                location,
                f"bins[{slot}].idle_age",
                f"zero-filled slot before any catch-all bin (idle_age {U64_MAX})",
            )
        _append_finite(bins, location, f"bins[{slot}].idle_age", idle_age, anon_bytes, file_bytes)
    raise ParseError(
        SOURCE,
        location,
        f"bins[{V4_NR_BINS - 1}].idle_age",
        f"no catch-all bin (idle_age {U64_MAX}) among the {V4_NR_BINS} slots",
    )


def _describe_errno(code: int) -> str:
    """Name the negative errno a v4 guest stores in ``error`` (as 32 or as 16 bits)."""
    if code >= 2**31:
        value = code - 2**32
    elif 0x8000 <= code <= 0xFFFF:
        value = code - 0x10000
    else:
        return f"error {code}"
    name = errno.errorcode.get(-value)
    described = f"-{name}" if name else str(value)
    return f"error {code} ({described})"


# -- shared -----------------------------------------------------------------------------------


def _check_bytes(location: str, field_name: str, value: int) -> None:
    if value > MAX_BYTES:
        raise ParseError(SOURCE, location, field_name, f"{value} bytes is 2^63 or more")


def _append_finite(
    bins: _NodeBins,
    location: str,
    field_name: str,
    idle_age_ms: int,
    anon_bytes: int,
    file_bytes: int,
) -> None:
    if idle_age_ms > MAX_BYTES:
        raise ParseError(
            SOURCE,
            location,
            field_name,
            f"idle age {idle_age_ms} ms is 2^63 or more and no sentinel",
        )
    if bins.edges_ms and idle_age_ms <= bins.edges_ms[-1]:
        raise ParseError(
            SOURCE,
            location,
            field_name,
            f"idle age {idle_age_ms} ms of node {bins.node} does not exceed the previous bin's "
            f"{bins.edges_ms[-1]} ms: ages must be strictly increasing",
        )
    bins.edges_ms.append(idle_age_ms)
    bins.anon_bytes.append(anon_bytes)
    bins.file_bytes.append(file_bytes)


def _to_histogram(bins: _NodeBins, options: FormatOptions, layout: str) -> Histogram:
    """Close a node's bins with its catch-all bin (or an empty open-ended one) and build it."""
    anon, file = list(bins.anon_bytes), list(bins.file_bytes)
    meta = {"layout": layout}
    if bins.catch_all is None:
        anon.append(0)
        file.append(0)
        meta["catch_all"] = "absent"
    else:
        anon.append(bins.catch_all[0])
        file.append(bins.catch_all[1])
    if bins.tags:
        meta["tags"] = ",".join(sorted(bins.tags))
    guest = options.guest or DEFAULT_GUEST
    try:
        return Histogram(guest, bins.node, bins.edges_ms, {ANON: anon, FILE: file}, meta)
    except HistogramError as exc:
        raise ParseError(SOURCE, f"record {bins.first_record}", "bytes", str(exc)) from None


def build_rfc2023(records: Sequence[tuple[int, int, int, int, int]]) -> bytes:
    """Encode 2023 RFC records ``(tag, node_id, idle_age_ms, anon_bytes, file_bytes)``."""
    return b"".join(RFC_RECORD.pack(t, n, bytes(4), age, a, f) for t, n, age, a, f in records)


def build_v4(node_id: int, bins: Sequence[tuple[int, int, int]], error: int = 0, filler: int = 0) -> bytes:
    """Encode one v4 report; unused slots are filled with ``filler`` bytes."""
    if len(bins) > V4_NR_BINS:
        raise ValueError(f"a v4 report holds at most {V4_NR_BINS} bins")
    body = b"".join(V4_BIN.pack(*b) for b in bins)
    body += bytes([filler]) * (V4_NR_BINS * V4_BIN.size - len(body))
    return V4_HEADER.pack(error, node_id) + body


def _check_whole_units(data: bytes, unit_bytes: int, unit_name: str) -> None:
    """Refuse empty input and input that is not a whole number of records or reports."""
    if not data:
        raise ParseError(SOURCE, "byte 0", "length", f"empty input: no {unit_name}")
    if len(data) % unit_bytes:
        whole = len(data) // unit_bytes
        raise ParseError(
            SOURCE,
            f"record {whole}",
            "length",
            f"truncated: {len(data) - whole * unit_bytes} of {unit_bytes} bytes (input is {len(data)} bytes)",
        )
