"""DAMON: damo recency-sz-hist text (golden files made by damo 3.4.3 itself) and sysfs listings.

The ``recency_*.txt`` files are the output of ``damo report access --style recency-sz-hist`` (with
``--raw_number`` for ``*_raw.txt``, ``--hist_cumulate`` for ``*_cumulative.txt``) run on damo
record files built from synthetic regions with damo's own classes (``_damon.DamonRegion``,
``_damo_records.DamonRecord``); no DAMON was running. The region sets are listed in ``REGIONS``.
``sysfs_*.txt`` are ``grep -r .`` listings in the layout of the DAMON sysfs ABI.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from wsrl.errors import ParseError
from wsrl.formats import FormatOptions, parse_bytes, parse_file
from wsrl.histogram import ALL_NODES, Histogram

DATA = Path(__file__).parent / "data" / "damon"
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30

# (size, nr_accesses, age in aggregation intervals) of the regions behind recency_single*.txt;
# sample 5 ms, aggr 100 ms. Idle time (damo): 0 if accessed, else (age + 1) * aggr.
REGIONS_SINGLE = [
    (512 * MIB, 3, 10),
    (GIB + 12345 * 4096, 0, 5),
    (300 * MIB, 0, 42),
    (7 * GIB, 0, 600),
    (4096, 0, 3000),
    (64 * KIB, 1, 0),
]


def load(name: str, **options: object) -> list[Histogram]:
    return parse_file("damon", DATA / name, FormatOptions(**options))


def parse_text(text: str, **options: object) -> list[Histogram]:
    return parse_bytes("damon", text.encode(), FormatOptions(**options))


def error_of(text: str | bytes) -> ParseError:
    data = text.encode() if isinstance(text, str) else text
    with pytest.raises(ParseError) as info:
        parse_bytes("damon", data)
    assert info.value.source == "damon"
    return info.value


def anon(h: Histogram) -> list[int]:
    return h.type_bytes("anon").tolist()


# -- damo text ----------------------------------------------------------------------------------


def test_raw_numbers_are_exact() -> None:
    [h] = load("recency_single_raw.txt")
    assert h.guest == "recency_single_raw"
    assert h.node == ALL_NODES
    assert h.edges_ms == (30010, 60020, 90030, 120040, 150050, 180060, 210070, 240080, 270090, 300100)
    idle_ms = [0 if nr else (age + 1) * 100 for _, nr, age in REGIONS_SINGLE]
    expected = [0] * 11
    for (size, _, _), idle in zip(REGIONS_SINGLE, idle_ms, strict=True):
        expected[next(i for i, e in enumerate(h.edges_ms) if idle <= e)] += size
    assert anon(h) == expected
    assert h.total_bytes() == sum(size for size, _, _ in REGIONS_SINGLE)
    assert h.type_bytes("file").sum() == 0


def test_human_readable_sizes_are_within_damos_rounding() -> None:
    [text] = load("recency_single.txt")
    [raw] = load("recency_single_raw.txt")
    assert text.edges_ms == raw.edges_ms
    assert anon(text)[0] == round(Fraction("1.840") * GIB)
    assert anon(text)[2] == 7 * GIB
    assert anon(text)[9] == 4 * KIB
    for printed, exact in zip(anon(text), anon(raw), strict=True):
        assert abs(printed - exact) <= GIB // 2000
    assert text.meta == {"source": "damo recency-sz-hist", "snapshot": "0", "min_idle_time": "0 ns"}


def test_region_type_and_node_options() -> None:
    [h] = load("recency_small.txt", damon_region_type="file", node=1, guest="g")
    assert (h.guest, h.node) == ("g", 1)
    assert h.type_bytes("anon").sum() == 0
    assert h.type_bytes("file").tolist() == [12 * KIB, 0, 0, 0, 8 * KIB, 0, 0, 0, 0, 4 * KIB, 0]
    assert h.edges_ms == (20, 40, 60, 80, 100, 120, 140, 160, 180, 200)


def test_sub_millisecond_ranges_merge_into_one_bin() -> None:
    [h] = load("recency_all_hot.txt")
    assert h.edges_ms == (0,)
    assert anon(h) == [2 * GIB, 0]


def test_hours_and_milliseconds() -> None:
    [h] = load("recency_long_idle.txt")
    assert h.edges_ms[0] == 6 * 3600 * 1000 + 200
    assert h.edges_ms[4] == 30 * 3600 * 1000 + 1000
    assert anon(h)[-2] == 2 * GIB and anon(h)[-1] == 0


def test_no_region_in_snapshot() -> None:
    [h] = load("recency_empty.txt")
    assert h.edges_ms == ()
    assert h.total_bytes() == 0


def test_two_snapshots_give_two_histograms() -> None:
    first, second = load("recency_two_snapshots.txt")
    assert first.guest == second.guest == "recency_two_snapshots"
    assert (first.meta["snapshot"], second.meta["snapshot"]) == ("0", "1")
    assert second.meta["min_idle_time"] == "300 ms"
    assert second.edges_ms[0] == 480
    assert first.total_bytes() == second.total_bytes() == 2 * GIB


def test_two_records_name_their_targets() -> None:
    first, second = load("recency_two_records.txt", guest="host")
    assert first.guest == "host/kdamond0/context0/schemeNone/target0"
    assert second.guest == "host/kdamond0/context0/schemeNone/target1"
    assert second.meta["target"] == "1"
    assert second.total_bytes() == 8 * MIB


@pytest.mark.parametrize("name", ["recency_dfpassed.txt", "recency_dfpassed_raw.txt"])
def test_df_passed_histogram(name: str) -> None:
    passed, total = load(name, guest="vm")
    assert passed.guest == "vm/df-passed"
    assert passed.meta["damos_filters"] == "allow anon"
    assert total.guest == "vm"
    assert passed.edges_ms == total.edges_ms
    assert passed.total_bytes() == GIB + 5 * MIB + 256 * MIB
    assert total.total_bytes() == 3 * GIB + 5 * MIB


def test_cumulative_output_is_rejected() -> None:
    with pytest.raises(ParseError) as info:
        load("recency_single_cumulative.txt")
    assert info.value.location.endswith("line 3")
    assert info.value.field == "idle time range start"
    assert "cumulative" in info.value.reason


GOOD = (DATA / "recency_small.txt").read_text()


@pytest.mark.parametrize(
    ("text", "location", "field", "reason"),
    [
        (
            GOOD.replace("total size: 24.000 KiB", "total size: 25.000 KiB"),
            "line 13",
            "total size",
            "differs",
        ),
        (GOOD.replace("12.000 KiB", "12.5 KiB"), "line 2", "size", "not a damo size"),
        (
            GOOD.replace("[20.001 ms, 40.002 ms)", "[20.001 ms, 40.002 parsecs)"),
            "line 3",
            "idle time range end",
            "not a time",
        ),
        (
            GOOD.replace("[20.001 ms, 40.002 ms)", "[20.001 ms, 40.002 ms 1 s)"),
            "line 3",
            "idle time range end",
            "out of order",
        ),
        (
            GOOD.replace("[40.002 ms, 60.003 ms)", "[40.003 ms, 60.003 ms)"),
            "line 4",
            "idle time range start",
            "continue",
        ),
        (
            GOOD.replace("[40.002 ms, 60.003 ms)", "[40.002 ms, 40.002 ms)"),
            "line 4",
            "idle time range end",
            "not after",
        ),
        (GOOD.replace("<idle time (us)> <total size>\n", ""), "line 1", "idle time range", "legend"),
        (GOOD.replace("memory bw", "memory bandwidth"), "line 12", "line", "not damo"),
        (GOOD + "[0 ns, 1 us) 0 B |     |\n", "line 15", "idle time range", "legend"),
        ("total size: 0 B\n", "line 1", "total size", "no histogram"),
        ("<idle time (us)> <total size>\n", "line 1", "histogram", "no histogram after it"),
        ("\n\n", "line 1", "text", "empty"),
    ],
)
def test_damo_errors_name_location_and_field(text: str, location: str, field: str, reason: str) -> None:
    error = error_of(text)
    assert (error.location, error.field) == (location, field)
    assert reason in error.reason


def test_damo_raw_totals_must_add_up_exactly() -> None:
    text = (
        (DATA / "recency_single_raw.txt")
        .read_text()
        .replace("total size: 9492013056", "total size: 9492013057")
    )
    assert error_of(text).field == "total size"


def test_bad_utf8_is_a_parse_error() -> None:
    error = error_of(GOOD.encode().replace(b"KiB", b"K\xffB", 1))
    assert (error.location, error.field) == ("line 2", "text")


def test_a_size_of_2_63_bytes_is_rejected() -> None:
    text = "<idle time (us)> <total size>\n[0, 10) 9223372036854775808 |*|\n"
    assert "2^63" in error_of(text).reason


# -- sysfs listing ------------------------------------------------------------------------------


def test_sysfs_listing_of_a_kdamond() -> None:
    scheme0, scheme1 = load("sysfs_kdamond0.txt", guest="host")
    assert scheme0.guest == "host/kdamond0/context0/scheme0"
    assert scheme0.meta["aggr_us"] == "200000" and scheme0.meta["aggr_us_source"] == "capture"
    # accessed -> 0 ms; age 0 -> 200 ms; age 149 -> 30 s; age 1499 -> 300 s (aggr 200 ms)
    assert scheme0.edges_ms == (0, 200, 30000, 300000)
    assert anon(scheme0) == [GIB, 2 * GIB, 123 * 4096 + 256 * MIB, 5 * GIB, 0]
    assert scheme1.edges_ms == (0, 2000)
    assert anon(scheme1) == [4 * GIB, 5 * GIB, 0]


def test_sysfs_listing_from_inside_tried_regions_uses_the_default_interval() -> None:
    [h] = load("sysfs_tried_regions_relative.txt", damon_region_type="file")
    assert h.guest == "sysfs_tried_regions_relative"
    assert h.meta["aggr_us_source"] == "default"
    assert h.edges_ms == (0, 1000)
    assert h.type_bytes("file").tolist() == [4 * GIB, 5 * GIB, 0]


def listing(*regions: tuple[int, int, int, int], extra: str = "") -> str:
    lines = ["/sys/kernel/mm/damon/admin/kdamonds/0/contexts/0/monitoring_attrs/intervals/aggr_us:100000"]
    base = "/sys/kernel/mm/damon/admin/kdamonds/0/contexts/0/schemes/0/tried_regions"
    for index, (start, end, nr, age) in enumerate(regions):
        lines += [f"{base}/{index}/start:{start}", f"{base}/{index}/end:{end}"]
        lines += [f"{base}/{index}/nr_accesses:{nr}", f"{base}/{index}/age:{age}"]
    return "\n".join(lines) + "\n" + extra


def test_sysfs_aggr_us_not_a_multiple_of_a_millisecond_floors() -> None:
    text = listing((0, 4096, 0, 2)).replace("aggr_us:100000", "aggr_us:1500")
    [h] = parse_text(text)
    assert h.edges_ms == (4,)  # 3 * 1.5 ms = 4.5 ms -> 4 ms


@pytest.mark.parametrize(
    ("text", "location", "field", "reason"),
    [
        (listing((4096, 4096, 0, 1)), "line 2", "end", "not above"),
        (listing((0, 4096, 0, 1)).replace("age:1", "age:x"), "line 5", "age", "unsigned"),
        (listing((0, 4096, 2**32, 1)), "line 4", "nr_accesses", "does not fit"),
        (listing((0, 2**64, 0, 1)), "line 3", "end", "does not fit"),
        (listing((0, 2**63 + 1, 0, 1)), "line 2", "end", "2^63"),
        ("\n".join(listing((0, 4096, 0, 1)).splitlines()[:-1]), "line 2", "age", "missing"),
        (
            listing((0, 4096, 0, 1), extra=listing((0, 4096, 0, 1)).splitlines()[1]),
            "line 6",
            "start",
            "twice",
        ),
        (
            listing((0, 4096, 0, 1), extra="/s/schemes/0/tried_regions/total_bytes:4097\n").replace(
                "/s/", "/sys/kernel/mm/damon/admin/kdamonds/0/contexts/0/"
            ),
            "line 6",
            "total_bytes",
            "differs",
        ),
        (listing((0, 4096, 0, 1), extra="garbage line\n"), "line 6", "line", "path:value"),
        ("/sys/kernel/mm/damon/admin/kdamonds/0/state:on\n", "line 1", "tried_regions", "no schemes"),
        (listing((0, 4096, 0, 1)).replace("aggr_us:100000", "aggr_us:0"), "line 1", "aggr_us", "0 us"),
    ],
)
def test_sysfs_errors_name_location_and_field(text: str, location: str, field: str, reason: str) -> None:
    error = error_of(text)
    assert (error.location, error.field) == (location, field)
    assert reason in error.reason


def test_sysfs_listing_without_an_interval_takes_the_option() -> None:
    [h] = load("sysfs_tried_regions_relative.txt", damon_aggr_us=5_000_000)
    assert h.meta["aggr_us_source"] == "option" and h.meta["aggr_us"] == "5000000"
    # The same regions as with the 100 ms default, 50 times older.
    assert h.edges_ms == (0, 50_000)
