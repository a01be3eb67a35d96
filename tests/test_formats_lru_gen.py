"""Golden and error tests for the MGLRU ``lru_gen`` / ``lru_gen_full`` parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsrl.errors import ParseError
from wsrl.formats import FormatOptions, parse_bytes, parse_file
from wsrl.formats.lru_gen import parse
from wsrl.histogram import Histogram

DATA = Path(__file__).parent / "data" / "lru_gen"
PAGE = 4096


def _parse(text: str, **options: object) -> list[Histogram]:
    return parse(text.encode(), FormatOptions(**options))


def _error(text: str | bytes, **options: object) -> ParseError:
    data = text.encode() if isinstance(text, str) else text
    with pytest.raises(ParseError) as info:
        parse(data, FormatOptions(**options))
    assert info.value.source == "lru_gen"
    return info.value


def _shape(histogram: Histogram) -> tuple:
    """(guest, node, memcg id, edges, anon pages per bin, file pages per bin)."""
    return (
        histogram.guest,
        histogram.node,
        histogram.meta["memcg_id"],
        histogram.edges_ms,
        [v // PAGE for v in histogram.anon_bytes.tolist()],
        [v // PAGE for v in histogram.file_bytes.tolist()],
    )


# -- golden files ------------------------------------------------------------------------------


def test_documented_example_exact_bins() -> None:
    root, hot = parse_file("lru_gen", DATA / "documented.txt")
    # gen 8 (age 8168) is the youngest: (0, 8168]; gen 7: (8168, 12228]; nothing is known older.
    assert root.guest == "/"
    assert root.node == 0
    assert root.meta == {"memcg_id": "1"}
    assert root.max_age_ms == [8168, 12228, None]
    assert root.anon_bytes.tolist() == [1 * PAGE, 54326 * PAGE, 0]
    assert root.file_bytes.tolist() == [0, 0, 0]
    assert hot.guest == "/hot"
    assert hot.meta == {"memcg_id": "2"}
    assert hot.max_age_ms == [16, 4088, None]
    assert hot.anon_bytes.tolist() == [4 * PAGE, 4 * PAGE, 0]
    assert hot.file_bytes.tolist() == [0, 0, 0]


def test_page_size_parameter() -> None:
    data = (DATA / "documented.txt").read_bytes()
    root, _ = parse_bytes("lru_gen", data, FormatOptions(page_size_bytes=16384))
    assert root.anon_bytes.tolist() == [16384, 54326 * 16384, 0]
    huge, _ = parse_bytes("lru_gen", data, FormatOptions(page_size_bytes=2 * 1024 * 1024))
    assert huge.total_bytes("anon") == 54327 * 2 * 1024 * 1024


def test_many_memcgs_nodes_64bit_id_and_odd_paths() -> None:
    histograms = parse_file("lru_gen", DATA / "many_memcgs_two_nodes.txt")
    assert [_shape(h) for h in histograms] == [
        ("/", 0, "1", (100, 9000, 20000), [50, 300, 1000, 0], [60, 400, 2000, 0]),
        # gens 3 and 4 share age 15000: merged; gen 5 was born this millisecond: edge 0.
        ("/", 1, "1", (0, 15000), [0, 40, 0], [0, 60, 0]),
        ("/kubepods/pod a b", 0, "4294967296123", (32000, 64000), [7, 5, 0], [8, 6, 0]),
        ("/kubepods/pod a b", 1, "4294967296123", (10, 1000), [11, 9, 0], [12, 10, 0]),
        ("memcg:7", 0, "7", (4, 5), [2, 1, 0], [2, 1, 0]),
        ("memcg:7", 1, "7", (40, 50), [4, 3, 0], [4, 3, 0]),
    ]


def test_lru_gen_full_old_layout_x_marks_and_stats() -> None:
    histograms = parse_file("lru_gen", DATA / "full_old_layout.txt")
    assert [_shape(h) for h in histograms] == [
        # min_seq = (anon 2, file 4): gens 2 and 3 are x-marked for file and count 0 file bytes.
        ("/", 0, "1", (500, 2000, 5000, 9000), [10, 300, 200, 100, 0], [20, 400, 0, 0, 0]),
        ("/system.slice", 0, "3", (0, 1000, 30000), [7, 5, 4, 0], [8, 6, 6, 0]),
        # gens 2 and 3 are retired for both types: left out, their stale ages too.
        ("/system.slice", 1, "3", (1500, 4000), [13, 11, 0], [14, 12, 0]),
    ]


def test_lru_gen_full_2025_layout() -> None:
    histograms = parse_file("lru_gen", DATA / "full_new_layout.txt")
    assert [_shape(h) for h in histograms] == [
        ("/", 0, "1", (100, 2000, 3000, 4000), [110, 90, 70, 0, 0], [120, 100, 80, 60, 0]),
        (
            "/user.slice/user-1000.slice/session 2.scope",
            0,
            "18446744073709551557",
            (50, 600, 700),
            [5, 3, 1, 0],
            [6, 4, 0, 0],
        ),
    ]


def test_minimal_memcg_line_forms() -> None:
    text = "memcg 9\n node 0\n 1 10 1 2\nmemcg 10 \n node 0\n 1 10 1 2\n"
    first, second = _parse(text)
    assert (first.guest, second.guest) == ("memcg:9", "memcg:10")


def test_real_captures_from_a_qemu_guest() -> None:
    captures = sorted(DATA.glob("real-*.txt"))
    assert captures, "real lru_gen captures belong in tests/data/lru_gen/real-*.txt"
    for path in captures:
        histograms = parse_file("lru_gen", path)
        assert histograms, path
        for histogram in histograms:
            assert histogram.meta["memcg_id"].isdigit()
            assert histogram.node >= 0
            assert histogram.bin_bytes()[-1] == 0  # nothing is known older than the oldest gen
            assert histogram.total_bytes() % FormatOptions().page_size_bytes == 0


# -- errors ------------------------------------------------------------------------------------

HEAD = "memcg 1 /\n node 0\n"


@pytest.mark.parametrize(
    ("text", "location", "field", "reason"),
    [
        ("", "line 1", "text", "empty input"),
        ("\n\n", "line 1", "text", "empty input"),
        ("memcg 1 /\n", "line 1", "node id", "no node lines"),
        ("memcg 1 /\nmemcg 2 /a\n node 0\n 1 1 1 1\n", "line 1", "node id", "no node lines"),
        (HEAD, "line 2", "generation", "no generation lines"),
        (HEAD + " node 1\n 1 1 1 1\n", "line 2", "generation", "no generation lines"),
        (" node 0\n 1 1 1 1\n", "line 1", "node id", "before any memcg"),
        (" 1 1 1 1\n", "line 1", "generation seq", "before any node"),
        (HEAD + " 1 1 1 1\n node 0\n 1 1 1 1\n", "line 4", "node id", "twice"),
        (HEAD + " 1 1 1 1\nmemcg 1 /\n node 0\n 1 1 1 1\n", "line 4", "memcg id", "twice"),
        ("memcg -1 /\n", "line 1", "memcg id", "expected 'memcg <id> <path>'"),
        ("memcg x /\n", "line 1", "memcg id", "expected"),
        ("memcg 18446744073709551616 /\n", "line 1", "memcg id", "out of range"),
        ("memcg 1 /\n node -1\n", "line 2", "node id", "expected 'node <id>'"),
        ("memcg 1 /\n node 4294967296\n", "line 2", "node id", "out of range"),
        (HEAD + " 5 100 1 1\n 7 50 1 1\n", "line 4", "generation seq", "consecutive"),
        (HEAD + " 5 100 1 1\n 5 50 1 1\n", "line 4", "generation seq", "consecutive"),
        (HEAD + " 5 100 1 1\n 6 200 1 1\n", "line 4", "age", "younger"),
        (HEAD + " 5 100 1 1\n 6 121 1 1\n", "line 4", "age", "younger"),  # past the skew tolerance
        (HEAD + " 5 -100 1 1\n", "line 3", "age", "negative"),
        (HEAD + " 5 9223372036854775808 1 1\n", "line 3", "age", "out of range"),
        (HEAD + " 5 100 -1 1\n", "line 3", "anon pages", "negative"),
        (HEAD + " 5 100 1 1.5\n", "line 3", "file pages", "not a decimal integer"),
        (HEAD + " 5 100 1 1y\n", "line 3", "file pages", "not a decimal integer"),
        (HEAD + " 5 100 18446744073709551616 1\n", "line 3", "anon pages", "out of range"),
        (HEAD + " 5 100 2251799813685248 0\n", "line 3", "anon pages", "over 2^63 - 1"),
        (HEAD + " 5 100 1x 1x\n", "line 2", "generation", "no live generation"),
        (HEAD + " 5 100 1 1 1\n", "line 3", "line", "unrecognised"),
        (HEAD + " 5 100 1\n", "line 3", "line", "unrecognised"),
        (HEAD + "hello world\n", "line 3", "line", "unrecognised"),
        (HEAD + "            0 1R 2T 3 4R 5T 6\n", "line 3", "tier stats", "before any generation"),
        (HEAD + " 5 1 1 1\n            1 1R 2T 3 4R 5T 6\n", "line 4", "tier stats", "expected 0"),
        (HEAD + " 5 1 1 1\n            0 1Q 2T 3 4R 5T 6\n", "line 4", "tier stats", "'Q'"),
        (HEAD + " 5 1 1 1\n            0 1R 2T 3p 4R 5T -6\n", "line 4", "tier stats", "'-6'"),
        (HEAD + " 5 1 1 1\n            0 1T 2R 3 4R 5T 6\n", "line 4", "tier stats", "suffix"),
        (HEAD + " 5 1 1 1\n 1L 2O 3Y 4N 5F 6A\n 7L 2O 3Y 4N 5F 6A\n", "line 5", "mm stats", "second"),
        (HEAD + " 5 1 1 1\n 1L 2O 3Y 4N 5F 6A\n 0 1R 2T 3 4R 5T 6\n", "line 5", "tier stats", "none"),
        (HEAD + " 5 1 1 1\n 1T 2Y 3F 4L\n", "line 4", "mm stats", "'L'"),
        (HEAD + " 5 1 1 1\n 1L 2O 3Y 4N 5F 6Q\n", "line 4", "mm stats", "'Q'"),
        (
            "memcg 1 /\n node 0\n 1 10 1125899906842624 1125899906842624\n",
            "line 2",
            "pages",
            "over 2^63 - 1",
        ),
    ],
)
def test_malformed_input_names_line_and_field(text: str, location: str, field: str, reason: str) -> None:
    error = _error(text)
    assert error.location == location
    assert error.field == field
    assert reason in error.reason
    assert str(error).startswith(f"lru_gen: {location}: {field}: ")


def test_non_utf8_names_the_line() -> None:
    error = _error(b"memcg 1 /\n node 0\n 1 1 1 1\nmemcg 2 /\xff\n")
    assert (error.location, error.field) == ("line 4", "text")


def test_stats_lines_with_blank_suffixes_are_accepted() -> None:
    text = HEAD + " 5 10 1 2\n" + "            0 0 0 0 0 0 0\n" + " 0 0 0 0 0 0\n"
    (histogram,) = _parse(text)
    assert histogram.anon_bytes.tolist() == [PAGE, 0]


def test_a_jiffy_of_age_inversion_is_read_as_the_same_age() -> None:
    """Real 6.1 guests print generations born within a jiffy one tick apart the wrong way
    (4324 ms after 4320 ms at HZ=250): read as one age, bytes kept."""
    (histogram,) = parse_bytes("lru_gen", (HEAD + " 5 4320 1 2\n 6 4324 3 4\n").encode())
    assert histogram.edges_ms == (4320,)
    assert histogram.total_bytes("anon") == 4 * 4096 and histogram.total_bytes("file") == 6 * 4096
