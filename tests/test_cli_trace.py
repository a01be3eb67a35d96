"""``wsrl trace`` end to end, as a subprocess: import, info, validate, and user errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "envs" / "traces" / "bitbrains-sample"


def wsrl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wsrl", *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def assert_user_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_info_json_on_the_bundled_trace() -> None:
    result = wsrl("trace", "info", str(BUNDLED), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["hosts"] == 1 and info["guests"] == 8 and info["samples"] == 4644
    assert info["start"].startswith("2013-07-15") and info["end"].startswith("2013-07-17")
    assert "working_set_bytes" in info["columns_with_data"]


def test_import_then_info_then_validate(tmp_path: Path) -> None:
    source = tmp_path / "memory.parquet"
    pq.write_table(
        pa.table(
            {
                "vm": pa.array([7, 7, 9], pa.int16()),
                "ts": pa.array([0, 300, 0], pa.int32()),
                "mem_prov_kb": pa.array([100.0, 100.0, 0.0], pa.float32()),
                "mem_use_kb": pa.array([1.0, 2.0, 3.0], pa.float32()),
            }
        ),
        source,
    )
    out = tmp_path / "trace"
    result = wsrl("trace", "import", "bitbrains", str(source), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rows_flagged"]["zero_provisioned"] == 1
    info = json.loads(wsrl("trace", "info", str(out), "--json").stdout)
    assert (info["guests"], info["samples"]) == (2, 3)
    validated = wsrl("trace", "validate", str(out))
    assert validated.returncode == 0 and "valid" in validated.stdout


def test_validate_exits_1_and_lists_problems(tmp_path: Path) -> None:
    out = tmp_path / "trace"
    result = wsrl("trace", "import", "bitbrains", str(REPO / "missing.parquet"), "--out", str(out))
    assert_user_error(result, "missing.parquet", "no such file")
    subprocess.run(["cp", "-r", str(BUNDLED), str(out)], check=True)
    part = next(out.glob("part-*.parquet"))
    part.write_bytes(part.read_bytes()[:100])  # torn by hand: no longer a Parquet file
    result = wsrl("trace", "validate", str(out))
    assert result.returncode == 1
    assert "unreadable Parquet" in result.stdout and "INVALID" in result.stdout


def test_user_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    assert_user_error(wsrl("trace", "info", str(tmp_path / "nope")), "no such trace directory")
    assert_user_error(wsrl("trace", "info", str(tmp_path)), "not a trace directory")
    assert_user_error(
        wsrl("trace", "import", "bitbrains", "x.parquet", "--out", str(tmp_path / "o"), "--days", "2"),
        "--days needs --start",
    )
    assert_user_error(wsrl("trace", "frobnicate"), "No such command")
