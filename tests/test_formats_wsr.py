"""Golden and error tests for the WSR ``page_age`` parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsrl.errors import ParseError
from wsrl.formats import FormatOptions, parse_bytes, parse_file
from wsrl.formats.wsr import parse
from wsrl.histogram import ALL_NODES

DATA = Path(__file__).parent / "data" / "wsr"
ULONG_MAX = 2**64 - 1


def _parse(text: str, **options: object) -> list:
    return parse(text.encode(), FormatOptions(**options))


def _error(text: str | bytes, **options: object) -> ParseError:
    data = text.encode() if isinstance(text, str) else text
    with pytest.raises(ParseError) as info:
        parse(data, FormatOptions(**options))
    assert info.value.source == "wsr"
    return info.value


# -- golden files ------------------------------------------------------------------------------


def test_documented_example_exact_bins() -> None:
    (histogram,) = parse_file("wsr", DATA / "memcg_page_age_documented.txt")
    assert histogram.guest == "memcg_page_age_documented"  # the file stem, as the CLI does
    assert histogram.node == 0
    assert histogram.edges_ms == (1000, 20000)
    assert histogram.max_age_ms == [1000, 20000, None]
    assert histogram.anon_bytes.tolist() == [137368, 34342, 4925624]
    assert histogram.file_bytes.tolist() == [24530, 0, 1835328]
    assert histogram.types == ("anon", "file")
    assert histogram.totals_by_type() == {"anon": 5097334, "file": 1859858}


def test_guest_defaults_to_memcg_without_a_file_name() -> None:
    data = (DATA / "memcg_page_age_documented.txt").read_bytes()
    (histogram,) = parse_bytes("wsr", data)
    assert histogram.guest == "memcg"
    (named,) = parse_bytes("wsr", data, FormatOptions(guest="web"))
    assert named.guest == "web"


def test_two_nodes() -> None:
    first, second = parse_bytes("wsr", (DATA / "memcg_page_age_two_nodes.txt").read_bytes())
    assert (first.node, second.node) == (0, 1)
    for histogram in (first, second):
        assert histogram.edges_ms == (1000, 10000, 60000)
    assert first.anon_bytes.tolist() == [4096, 40960, 0, 1048576]
    assert first.file_bytes.tolist() == [8192, 0, 12288, 2097152]
    assert second.anon_bytes.tolist() == [0, 8192, 16384, 65536]
    assert second.file_bytes.tolist() == [4096, 8192, 0, 131072]


def test_headerless_node_file_takes_node_from_options_or_path(tmp_path: Path) -> None:
    data = (DATA / "node_page_age.txt").read_bytes()
    (default,) = parse_bytes("wsr", data)
    assert default.node == 0
    assert default.edges_ms == (5000, 30000, 120000)
    assert default.anon_bytes.tolist() == [12288, 8192, 0, 409600]
    assert default.file_bytes.tolist() == [4096, 16384, 0, 819200]
    (explicit,) = parse_bytes("wsr", data, FormatOptions(node=3))
    assert explicit.node == 3
    node_dir = tmp_path / "node2" / "workingset_report"
    node_dir.mkdir(parents=True)
    (node_dir / "page_age").write_bytes(data)
    (from_path,) = parse_file("wsr", node_dir / "page_age")
    assert from_path.node == 2
    assert from_path.guest == "page_age"


def test_headers_win_over_options_node() -> None:
    (histogram,) = _parse("N5\n18446744073709551615 anon=1 file=2\n", node=3)
    assert histogram.node == 5


@pytest.mark.parametrize("name", ["memcg_page_age_documented.txt", "memcg_page_age_long_max.txt"])
def test_both_catch_all_sentinels(name: str) -> None:
    (histogram,) = parse_bytes("wsr", (DATA / name).read_bytes())
    assert histogram.max_age_ms == [1000, 20000, None]
    assert histogram.anon_bytes.tolist() == [137368, 34342, 4925624]


def test_catch_all_only_block_is_one_open_bin() -> None:
    (histogram,) = parse_bytes("wsr", (DATA / "memcg_page_age_catch_all_only.txt").read_bytes())
    assert histogram.edges_ms == ()
    assert histogram.n_bins == 1
    assert histogram.anon_bytes.tolist() == [4194304]
    assert histogram.file_bytes.tolist() == [8388608]


def test_unknown_keys_are_kept_as_memory_types() -> None:
    (histogram,) = parse_bytes("wsr", (DATA / "memcg_page_age_extra_type.txt").read_bytes())
    assert histogram.types == ("anon", "file", "shmem")
    assert histogram.type_bytes("shmem").tolist() == [12288, 24576]
    assert histogram.anon_bytes.tolist() == [4096, 16384]
    assert histogram.to_json_dict()["bins"][0] == {
        "max_age_ms": 1000,
        "anon_bytes": 4096,
        "file_bytes": 8192,
        "shmem_bytes": 12288,
    }


def test_key_order_does_not_matter_and_whitespace_is_tolerated() -> None:
    text = "  N0 \r\n\n1000   file=2 anon=1\t\n18446744073709551615 file=4 anon=3  \r\n\n"
    (histogram,) = _parse(text)
    assert histogram.anon_bytes.tolist() == [1, 3]
    assert histogram.file_bytes.tolist() == [2, 4]


def test_thirty_two_bins_is_the_maximum() -> None:
    lines = [f"{(i + 1) * 1000} anon={i} file={2 * i}" for i in range(31)]
    text = "N0\n" + "\n".join(lines) + f"\n{ULONG_MAX} anon=7 file=9\n"
    (histogram,) = _parse(text)
    assert histogram.n_bins == 32
    assert histogram.total_bytes("anon") == sum(range(31)) + 7
    too_many = "N0\n" + "\n".join([*lines, "32000 anon=0 file=0"]) + f"\n{ULONG_MAX} anon=0 file=0\n"
    error = _error(too_many)
    assert (error.location, error.field) == ("line 34", "bin label")
    assert "more than 32 bins" in error.reason


def test_edge_zero_and_large_values_are_exact() -> None:
    big = 2**62
    (histogram,) = _parse(f"N0\n0 anon={big} file=0\n{ULONG_MAX} anon={big - 1} file=0\n")
    assert histogram.edges_ms == (0,)
    assert histogram.total_bytes() == 2**63 - 1


def test_histograms_are_never_all_nodes() -> None:
    for histogram in parse_bytes("wsr", (DATA / "memcg_page_age_two_nodes.txt").read_bytes()):
        assert histogram.node != ALL_NODES


# -- errors ------------------------------------------------------------------------------------

CATCH = f"{ULONG_MAX} anon=1 file=1"


@pytest.mark.parametrize(
    ("text", "location", "field", "reason"),
    [
        ("", "line 1", "text", "empty input"),
        ("\n  \n", "line 1", "text", "empty input"),
        ("N0\n1000 anon=1 file=2\n", "line 2", "bin label", "truncated"),
        ("N0\n", "line 1", "bin label", "truncated"),
        ("N0\n1000 anon=1 file=2\nN1\n" + CATCH, "line 3", "bin label", "truncated"),
        ("N0\n" + CATCH + "\nN0\n" + CATCH, "line 3", "node header", "twice"),
        ("N0\n" + CATCH + "\n1000 anon=1 file=1", "line 3", "bin label", "follows the catch-all"),
        (CATCH + "\nN1\n" + CATCH, "line 2", "node header", "no node header"),
        ("N0\n2000 anon=1 file=1\n1000 anon=1 file=1\n" + CATCH, "line 3", "bin label", "increasing"),
        ("N0\n1000 anon=1 file=1\n1000 anon=1 file=1\n" + CATCH, "line 3", "bin label", "increasing"),
        ("N0\n-5 anon=1 file=1\n" + CATCH, "line 2", "bin label", "negative"),
        ("N0\n1e3 anon=1 file=1\n" + CATCH, "line 2", "bin label", "not a decimal integer"),
        ("N0\n1_000 anon=1 file=1\n" + CATCH, "line 2", "bin label", "not a decimal integer"),
        ("N0\n+5 anon=1 file=1\n" + CATCH, "line 2", "bin label", "not a decimal integer"),
        ("N0\n١٢ anon=1 file=1\n" + CATCH, "line 2", "bin label", "not a decimal integer"),
        ("N0\n18446744073709551616 anon=1 file=1", "line 2", "bin label", "out of range"),
        ("N0\n9223372036854775808 anon=1 file=1", "line 2", "bin label", "neither"),
        ("N0\n1000\n" + CATCH, "line 2", "bin label", "no key=value"),
        ("N0\n1000 anon=1 file=-2\n" + CATCH, "line 2", "file", "negative"),
        ("N0\n1000 anon=9223372036854775808 file=0\n" + CATCH, "line 2", "anon", "out of range"),
        ("N0\n1000 anon=1.5 file=0\n" + CATCH, "line 2", "anon", "not a decimal integer"),
        ("N0\n1000 anon= file=0\n" + CATCH, "line 2", "anon", "not a decimal integer"),
        ("N0\n1000 anon=1 file=0 junk\n" + CATCH, "line 2", "key=value pair", "'junk'"),
        ("N0\n1000 anon=1 =3 file=0\n" + CATCH, "line 2", "key=value pair", "'=3'"),
        ("N0\n1000 anon=1 anon=2 file=0\n" + CATCH, "line 2", "anon", "twice"),
        ("N0\n1000 file=0\n" + CATCH, "line 2", "anon", "missing"),
        ("N0\n1000 anon=0\n" + CATCH, "line 2", "file", "missing"),
        ("N0\n1000 anon=0 file=0 shmem=1\n" + CATCH, "line 3", "shmem", "missing here"),
        ("N0\n1000 anon=0 file=0\n" + CATCH + " shmem=1", "line 3", "shmem", "not on the block"),
        ("N-1\n" + CATCH, "line 1", "bin label", "not a decimal integer"),
        ("N99999999999\n" + CATCH, "line 1", "node header", "out of range"),
        ("garbage\n", "line 1", "bin label", "not a decimal integer"),
        (
            f"N0\n1000 anon={2**62} file={2**62}\n{ULONG_MAX} anon=1 file=0\n",
            "line 1",
            "bytes",
            "over 2^63 - 1",
        ),
    ],
)
def test_malformed_input_names_line_and_field(text: str, location: str, field: str, reason: str) -> None:
    error = _error(text)
    assert error.location == location
    assert error.field == field
    assert reason in error.reason
    assert str(error).startswith(f"wsr: {location}: {field}: ")


def test_non_utf8_names_the_line() -> None:
    error = _error(b"N0\n1000 anon=1 file=2\n\xff\xfe\n")
    assert (error.location, error.field) == ("line 3", "text")
    assert "UTF-8" in error.reason


def test_parse_file_puts_the_file_name_in_the_location(tmp_path: Path) -> None:
    path = tmp_path / "page_age"
    path.write_text("N0\n1000 anon=1 file=2\n")
    with pytest.raises(ParseError) as info:
        parse_file("wsr", path)
    assert info.value.location == f"{path}: line 2"
