"""Subprocess smoke tests of ``wsrl histogram parse``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
USER_ERROR_EXIT = 2


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wsrl", "histogram", "parse", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _check_shape(histograms: list) -> None:
    assert isinstance(histograms, list) and histograms
    for histogram in histograms:
        assert isinstance(histogram["guest"], str)
        assert isinstance(histogram["node"], int)
        bins = histogram["bins"]
        assert isinstance(bins, list) and bins
        for entry in bins[:-1]:
            assert isinstance(entry["max_age_ms"], int)
        assert bins[-1]["max_age_ms"] is None
        for entry in bins:
            assert isinstance(entry["anon_bytes"], int)
            assert isinstance(entry["file_bytes"], int)


def test_wsr_json_shape() -> None:
    result = _run("--format", "wsr", str(DATA / "wsr" / "memcg_page_age_documented.txt"), "--json")
    assert result.returncode == 0, result.stderr
    histograms = json.loads(result.stdout)
    _check_shape(histograms)
    (histogram,) = histograms
    assert histogram["guest"] == "memcg_page_age_documented"
    assert histogram["node"] == 0
    assert histogram["bins"] == [
        {"max_age_ms": 1000, "anon_bytes": 137368, "file_bytes": 24530},
        {"max_age_ms": 20000, "anon_bytes": 34342, "file_bytes": 0},
        {"max_age_ms": None, "anon_bytes": 4925624, "file_bytes": 1835328},
    ]


@pytest.mark.parametrize(
    ("format_name", "path", "count"),
    [
        ("lru_gen", DATA / "lru_gen" / "many_memcgs_two_nodes.txt", 6),
        ("crosvm", DATA / "crosvm" / "balloon_ws_4_bins.json", 1),
    ],
)
def test_other_formats_json_shape(format_name: str, path: Path, count: int) -> None:
    result = _run("--format", format_name, str(path), "--json")
    assert result.returncode == 0, result.stderr
    histograms = json.loads(result.stdout)
    _check_shape(histograms)
    assert len(histograms) == count


def test_table_output() -> None:
    result = _run("--format", "wsr", str(DATA / "wsr" / "memcg_page_age_two_nodes.txt"))
    assert result.returncode == 0, result.stderr
    assert "node 0" in result.stdout and "node 1" in result.stdout
    assert "+inf" in result.stdout


def _assert_user_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == USER_ERROR_EXIT, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_malformed_file_exits_2_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "page_age"
    path.write_text("N0\n1000 anon=1 file=2\n2000 anon=-3 file=4\n")
    result = _run("--format", "wsr", str(path), "--json")
    _assert_user_error(result, "wsr", str(path), "line 3", "anon", "negative")


def test_truncated_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "lru_gen"
    path.write_text("memcg 1 /\n node 0\n")
    _assert_user_error(_run("--format", "lru_gen", str(path)), "lru_gen", "line 2", "generation")


def test_missing_file_and_bad_options_exit_2(tmp_path: Path) -> None:
    _assert_user_error(_run("--format", "wsr", str(tmp_path / "nope")), "nope")
    good = str(DATA / "crosvm" / "balloon_ws_4_bins.json")
    _assert_user_error(_run("--format", "crosvm", good, "--crosvm-order", "x"), "crosvm_bytes_order")
    _assert_user_error(_run("--format", "lru_gen", good, "--page-size", "0"), "page_size_bytes")
    _assert_user_error(_run("--format", "nosuch", good), "unknown format")


def test_usage_error_exits_2_without_traceback() -> None:
    result = _run(str(DATA / "wsr" / "memcg_page_age_documented.txt"))
    _assert_user_error(result, "format")
