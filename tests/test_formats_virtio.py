"""virtio-balloon working-set reports: both layouts built from the documented structs."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from wsrl.errors import ParseError
from wsrl.formats import FormatOptions, parse_bytes, parse_file
from wsrl.formats import virtio as v
from wsrl.histogram import Histogram

DATA = Path(__file__).parent / "data" / "virtio"
U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1
MIB = 1 << 20


def rfc(tag: int, node: int, age_ms: int, anon: int, file: int, reserved: bytes = bytes(4)) -> bytes:
    """``u16 tag; u16 node_id; u8 reserved[4]; u64 idle_age_ms; u64 memory_size_bytes[2]``."""
    return struct.pack("<HH4sQQQ", tag, node, reserved, age_ms, anon, file)


def v4(node: int, bins: list[tuple[int, int, int]], error: int = 0, fill: bytes = b"\0") -> bytes:
    """``u32 error; u32 node_id; 32 x {u64 idle_age; u64 anon_bytes; u64 file_bytes}``."""
    body = b"".join(struct.pack("<QQQ", *b) for b in bins)
    body += fill * (32 * 24 - len(body))
    return struct.pack("<II", error, node) + body


def parse(data: bytes, layout: str = "auto", guest: str | None = None) -> list[Histogram]:
    return parse_bytes("virtio", data, FormatOptions(virtio_layout=layout, guest=guest))


def rows(h: Histogram) -> tuple[list[int], list[int]]:
    return h.type_bytes("anon").tolist(), h.type_bytes("file").tolist()


def error_of(data: bytes, layout: str = "auto") -> ParseError:
    with pytest.raises(ParseError) as info:
        parse(data, layout)
    assert info.value.source == "virtio"
    return info.value


def test_struct_sizes_match_the_patches() -> None:
    assert v.RFC_RECORD_BYTES == 32
    assert v.V4_REPORT_BYTES == 8 + 32 * 24 == 776


# -- 2023 RFC -----------------------------------------------------------------------------------


def test_rfc_single_node_with_hz1000_catch_all() -> None:
    data = rfc(0, 0, 1000, 10, 1) + rfc(0, 0, 5000, 20, 2) + rfc(0, 0, U32_MAX, 30, 3)
    [h] = parse(data)
    assert (h.guest, h.node, h.edges_ms) == ("vm", 0, (1000, 5000))
    assert rows(h) == ([10, 20, 30], [1, 2, 3])
    assert h.meta == {"layout": "rfc2023", "tags": "reclaimable"}


@pytest.mark.parametrize("sentinel", [U64_MAX, 2**63 - 1, U32_MAX, 2**32 - 4, 2**32 - 10, 1431655762])
def test_rfc_catch_all_sentinels(sentinel: int) -> None:
    [h] = parse(rfc(0, 2, 100, 1, 2) + rfc(0, 2, sentinel, 3, 4), "rfc2023")
    assert h.edges_ms == (100,)
    assert rows(h) == ([1, 3], [2, 4])
    assert "catch_all" not in h.meta


def test_rfc_without_catch_all_gets_an_empty_open_bin() -> None:
    [h] = parse(rfc(0, 0, 100, 1, 2) + rfc(0, 0, 200, 3, 4), "rfc2023")
    assert h.edges_ms == (100, 200)
    assert rows(h) == ([1, 3, 0], [2, 4, 0])
    assert h.meta["catch_all"] == "absent"


def test_rfc_nodes_are_grouped_and_sorted_even_interleaved() -> None:
    data = rfc(0, 1, 100, 1, 0) + rfc(0, 0, 100, 2, 0) + rfc(1, 1, U64_MAX, 3, 0) + rfc(0, 0, U64_MAX, 4, 0)
    h0, h1 = parse(data, guest="vm7")
    assert (h0.guest, h0.node, rows(h0)[0]) == ("vm7", 0, [2, 4])
    assert (h1.node, rows(h1)[0], h1.meta["tags"]) == (1, [1, 3], "discardable,reclaimable")


def test_rfc_unfilled_slots_are_skipped() -> None:
    unfilled = rfc(0xFFFF, 0xFFFF, 0, U64_MAX, U64_MAX)
    [h] = parse(rfc(0, 0, 100, 1, 2) + rfc(0, 0, U64_MAX, 3, 4) + unfilled, "rfc2023")
    assert h.total_bytes() == 10


def test_rfc_golden_file() -> None:
    expected = b"".join(
        [
            rfc(0, 0, 1000, 100 * MIB, 20 * MIB),
            rfc(0, 0, 10000, 50 * MIB, 10 * MIB),
            rfc(0, 0, 60000, 30 * MIB, 5 * MIB),
            rfc(0, 0, U32_MAX, 400 * MIB, 80 * MIB),
            rfc(0, 1, 1000, 7 * MIB, 1 * MIB),
            rfc(0, 1, 10000, 6 * MIB, 0),
            rfc(0, 1, 60000, 0, 2 * MIB),
            rfc(0, 1, U32_MAX, 9 * MIB, 3 * MIB),
        ]
    )
    path = DATA / "rfc2023_two_nodes.bin"
    assert path.read_bytes() == expected
    h0, h1 = parse_file("virtio", path)
    assert h0.guest == "rfc2023_two_nodes"
    assert h0.edges_ms == h1.edges_ms == (1000, 10000, 60000)
    assert rows(h0) == ([100 * MIB, 50 * MIB, 30 * MIB, 400 * MIB], [20 * MIB, 10 * MIB, 5 * MIB, 80 * MIB])
    assert rows(h1) == ([7 * MIB, 6 * MIB, 0, 9 * MIB], [MIB, 0, 2 * MIB, 3 * MIB])


@pytest.mark.parametrize(
    ("data", "location", "field", "reason"),
    [
        (rfc(0, 0, 200, 1, 1) + rfc(0, 0, 200, 1, 1), "record 1", "idle_age_ms", "strictly increasing"),
        (rfc(0, 0, 200, 1, 1) + rfc(0, 0, 100, 1, 1), "record 1", "idle_age_ms", "strictly increasing"),
        (rfc(0, 0, U64_MAX, 1, 1) + rfc(0, 0, 100, 1, 1), "record 1", "idle_age_ms", "catch-all"),
        (rfc(7, 0, 100, 1, 1), "record 0", "tag", "unknown tag 7"),
        (rfc(0xFFFF, 0, 100, 1, 1), "record 0", "tag", "unfilled"),
        (rfc(0, 0, 100, 1, 1, reserved=b"\0\1\0\0"), "record 0", "reserved", "zero"),
        (rfc(0, 0, 100, 2**63, 1), "record 0", "memory_size_bytes[0] (anon)", "2^63"),
        (rfc(0, 0, 100, 1, 2**64 - 2), "record 0", "memory_size_bytes[1] (file)", "2^63"),
        (rfc(0, 0, 2**63, 1, 1), "record 0", "idle_age_ms", "2^63"),
        (rfc(0, 0, 100, 1, 1) + b"\0" * 31, "record 1", "length", "truncated"),
        (rfc(0xFFFF, 0xFFFF, 0, U64_MAX, U64_MAX), "record 0", "tag", "unfilled"),
        (b"", "byte 0", "length", "empty"),
    ],
)
def test_rfc_errors_name_location_and_field(data: bytes, location: str, field: str, reason: str) -> None:
    error = error_of(data, "rfc2023")
    assert (error.location, error.field) == (location, field)
    assert reason in error.reason
    assert location in str(error) and field in str(error)


def test_rfc_totals_overflowing_int64_are_a_parse_error() -> None:
    big = 2**62
    error = error_of(rfc(0, 0, 1, big, 0) + rfc(0, 0, U64_MAX, big, 0), "rfc2023")
    assert error.location == "record 0"
    assert error.field == "bytes"


# -- v4 -----------------------------------------------------------------------------------------


def test_v4_single_report() -> None:
    [h] = parse(v4(3, [(1000, 10, 1), (10000, 20, 2), (U64_MAX, 30, 3)]))
    assert (h.node, h.edges_ms) == (3, (1000, 10000))
    assert rows(h) == ([10, 20, 30], [1, 2, 3])
    assert h.meta == {"layout": "v4"}


def test_v4_catch_all_only_and_32bit_guest_sentinel() -> None:
    [h] = parse(v4(0, [(U64_MAX, 5, 6)]))
    assert h.edges_ms == ()
    assert rows(h) == ([5], [6])
    [h] = parse(v4(0, [(100, 1, 1), (U32_MAX, 5, 6)]))
    assert h.edges_ms == (100,)


def test_v4_slots_after_the_catch_all_are_stale_and_ignored() -> None:
    [h] = parse(v4(0, [(100, 1, 1), (U64_MAX, 2, 2), (50, 999, 999), (7, 2**64 - 1, 5)], fill=b"\xff"))
    assert rows(h) == ([1, 2], [1, 2])


def test_v4_all_32_slots_used() -> None:
    bins = [(1000 * (i + 1), i, 2 * i) for i in range(31)] + [(U64_MAX, 99, 98)]
    [h] = parse(v4(0, bins))
    assert h.n_bins == 32
    assert h.totals_by_type() == {"anon": sum(range(31)) + 99, "file": 2 * sum(range(31)) + 98}


def test_v4_golden_file_two_nodes() -> None:
    expected = v4(
        0,
        [
            (1000, 100 * MIB, 20 * MIB),
            (5000, 40 * MIB, 8 * MIB),
            (40000, 30 * MIB, 4 * MIB),
            (U64_MAX, 500 * MIB, 70 * MIB),
        ],
    ) + v4(
        1, [(2000, 11 * MIB, 2 * MIB), (U64_MAX, 22 * MIB, 3 * MIB), (9000, 999 * MIB, 999 * MIB), (1, 2, 3)]
    )
    path = DATA / "v4_two_nodes.bin"
    assert path.read_bytes() == expected
    h0, h1 = parse_file("virtio", path, FormatOptions(guest="web"))
    assert (h0.guest, h0.node, h0.edges_ms) == ("web", 0, (1000, 5000, 40000))
    assert rows(h1) == ([11 * MIB, 22 * MIB], [2 * MIB, 3 * MIB])


def test_v4_error_golden_file_names_the_errno() -> None:
    path = DATA / "v4_error_einval.bin"
    assert path.read_bytes() == v4(0, [(1000, 1, 1), (U64_MAX, 2, 2)], error=0xFFEA)
    with pytest.raises(ParseError) as info:
        parse_file("virtio", path)
    assert info.value.field == "error"
    assert info.value.location.endswith("record 0")
    assert "EINVAL" in info.value.reason


@pytest.mark.parametrize(
    ("error", "text"), [(0xFFEA, "-EINVAL"), (2**32 - 22, "-EINVAL"), (2**32 - 34, "-ERANGE"), (5, "error 5")]
)
def test_v4_error_values(error: int, text: str) -> None:
    err = error_of(v4(0, [(U64_MAX, 0, 0)], error=error))
    assert (err.location, err.field) == ("record 0", "error")
    assert text in err.reason


@pytest.mark.parametrize(
    ("data", "location", "field", "reason"),
    [
        (v4(0, [(100, 1, 1), (100, 1, 1), (U64_MAX, 0, 0)]), "record 0", "bins[1].idle_age", "strictly"),
        (v4(0, [(100, 1, 1)]), "record 0", "bins[1].idle_age", "zero-filled slot"),
        (v4(0, [(i + 1, 1, 1) for i in range(32)]), "record 0", "bins[31].idle_age", "no catch-all"),
        (v4(0, [(100, 2**63, 1), (U64_MAX, 0, 0)]), "record 0", "bins[0].anon_bytes", "2^63"),
        (v4(0, [(U64_MAX, 0, 2**63)]), "record 0", "bins[0].file_bytes", "2^63"),
        (v4(0, [(2**63, 1, 1), (U64_MAX, 0, 0)]), "record 0", "bins[0].idle_age", "2^63"),
        (v4(1, [(U64_MAX, 0, 0)]) + v4(1, [(U64_MAX, 0, 0)]), "record 1", "node_id", "record 0"),
    ],
)
def test_v4_errors_name_location_and_field(data: bytes, location: str, field: str, reason: str) -> None:
    error = error_of(data)
    assert (error.location, error.field) == (location, field)
    assert reason in error.reason


def test_v4_truncated_report() -> None:
    error = error_of(v4(0, [(U64_MAX, 0, 0)]) + b"\0" * 100, "v4")
    assert (error.location, error.field) == ("record 1", "length")
    assert "100 of 776" in error.reason


# -- layout detection ---------------------------------------------------------------------------


def test_auto_rejects_lengths_of_neither_layout() -> None:
    error = error_of(b"\0" * 33)
    assert (error.location, error.field) == ("byte 33", "length")


def test_auto_ambiguous_length_prefers_v4() -> None:
    data = b"".join(v4(n, [(100, n, n), (U64_MAX, 1, 1)]) for n in range(4))
    assert len(data) == 3104
    result = parse(data)
    assert [h.node for h in result] == [0, 1, 2, 3]
    assert all(h.meta["layout"] == "v4" for h in result)


def test_auto_ambiguous_length_falls_back_to_rfc() -> None:
    data = b"".join(rfc(0, 0, 1000 * (i + 1), i, 1) for i in range(96)) + rfc(0, 0, U64_MAX, 5, 5)
    assert len(data) == 3104
    [h] = parse(data)
    assert h.meta["layout"] == "rfc2023"
    assert h.n_bins == 97


def test_forced_layout_is_obeyed() -> None:
    data = rfc(0, 0, 100, 1, 1) + rfc(0, 0, U64_MAX, 1, 1)
    error = error_of(data, "v4")
    assert error.field == "length"
    assert parse(data, "rfc2023")[0].meta["layout"] == "rfc2023"


def test_never_raises_anything_but_parse_error_on_garbage() -> None:
    for size in (1, 31, 32, 64, 776, 800, 3104):
        for fill in (b"\0", b"\xff", b"\x5a"):
            try:
                result = parse(fill * size)
            except ParseError:
                continue
            assert all(isinstance(h, Histogram) for h in result)
