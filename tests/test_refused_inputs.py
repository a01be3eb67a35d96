"""Values and files that must be refused with one line, a non-zero exit and no traceback.

Configs: numbers that are not finite (anywhere, nested tables and free-form parameters included),
durations too small or too large to mean anything, metrics served beyond loopback without an
opt-in, sockets that are not sockets or live in a directory others can write. Traces: a manifest
nested too deeply for the JSON parser, parts and manifests that are FIFOs or other special files,
timestamps outside the range a trace can hold, and a missing optional dependency.

Everything runs for real: the CLI in a subprocess (``python -m wsrl.runner``, ``python -m wsrl``),
real FIFOs, real unix sockets, real symlinks.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_runner_support import config_data, to_toml

from wsrl.errors import ConfigError
from wsrl.runner.config import runner_config_from_dict

pytestmark = pytest.mark.timeout(120)
OTHER_UID = 65534  # nobody


def _wsrl(
    *args: str, cwd: Path, module: str = "wsrl", timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def _assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, result
    joined = "\n".join(lines)
    for fragment in fragments:
        assert fragment in joined, joined


def _problems(tmp_path: Path, data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        runner_config_from_dict(data, base_dir=tmp_path, label="host.toml")
    return info.value.problems


# -- numbers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda d: d["guest"][0].update(provisioned_gib=float("inf")), "guest[0].provisioned_gib"),
        (lambda d: d["host"].update(interval_s=float("inf")), "host.interval_s"),
        (lambda d: d["host"].update(capacity_gib=float("inf")), "host.capacity_gib"),
        (lambda d: d["guest"][1].update(shares=float("inf")), "guest[1].shares"),
        (lambda d: d["guest"][1].update(shares=float("nan")), "guest[1].shares"),
        (lambda d: d["safety"].update(stale_after_s=float("nan")), "safety.stale_after_s"),
        (lambda d: d["policy"].update(params={"margin": float("inf")}), "policy.params"),
        (lambda d: d["host"].update(histogram_edges_ms=[1, float("inf")]), "host.histogram_edges_ms[1]"),
    ],
)
def test_non_finite_numbers_are_refused_everywhere(tmp_path: Path, change: Any, key: str) -> None:
    data = config_data(tmp_path)
    change(data)
    problems = _problems(tmp_path, data)
    assert key in [k for k, _ in problems], problems
    assert any("finite" in reason for _, reason in problems), problems


@pytest.mark.parametrize(
    ("change", "key", "fragment"),
    [
        (lambda d: d["host"].update(interval_s=1e-300), "host.interval_s", ">= 0.01"),
        (lambda d: d["host"].update(interval_s=1e300), "host.interval_s", "<="),
        (lambda d: d["record"].update(flush_interval_s=1e-300), "record.flush_interval_s", ">= 0.01"),
        (lambda d: d["safety"].update(decision_expiry_s=1e-300), "safety.decision_expiry_s", "at least"),
        (lambda d: d["safety"].update(call_timeout_s=1e300), "safety.call_timeout_s", "at most"),
        (lambda d: d["host"].update(capacity_gib=1e300), "host.capacity_gib", "at most"),
        (lambda d: d["guest"][0].update(shares=1e300), "guest[0].shares", "<="),
    ],
)
def test_durations_and_sizes_have_sane_bounds(tmp_path: Path, change: Any, key: str, fragment: str) -> None:
    data = config_data(tmp_path)
    change(data)
    problems = _problems(tmp_path, data)
    assert key in [k for k, _ in problems], problems
    assert any(fragment in reason for k, reason in problems if k == key), problems


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda d: d["host"].update(interval_s=float("inf")), "host.interval_s"),
        (lambda d: d["guest"][0].update(provisioned_gib=float("inf")), "guest[0].provisioned_gib"),
        (lambda d: d["host"].update(interval_s=1e-300), "host.interval_s"),
    ],
)
def test_wsrl_run_refuses_non_finite_values_in_one_line(tmp_path: Path, change: Any, key: str) -> None:
    data = config_data(tmp_path)
    change(data)
    config = tmp_path / "host.toml"
    config.write_text(to_toml(data))
    result = _wsrl("--config", str(config), "--once", "--dry-run", cwd=tmp_path, module="wsrl.runner")
    assert result.returncode == 2, result.stderr
    _assert_one_line_error(result, "host.toml", key)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_sim_configs_refuse_non_finite_numbers_but_keep_never(tmp_path: Path) -> None:
    from wsrl.sim.config_workload import PopulationConfig

    never = PopulationConfig.model_validate(
        {"name": "p", "type": "anon", "size_mib": 1, "access_interval_s": "never"}
    )
    assert never.access_interval_s == float("inf")
    for bad in ({"size_mib": float("inf")}, {"size_mib": 1, "access_interval_s": float("inf")}):
        data = {"name": "p", "type": "anon", "access_interval_s": 1.0, **bad}
        with pytest.raises(ValueError, match="finite"):
            PopulationConfig.model_validate(data)


# -- metrics beyond loopback -------------------------------------------------------------------


def test_metrics_beyond_loopback_need_an_explicit_opt_in(tmp_path: Path) -> None:
    for bind in ("0.0.0.0", "::", "192.0.2.1"):
        data = config_data(tmp_path, metrics_port=9100)
        data["metrics"]["bind"] = bind
        problems = _problems(tmp_path, data)
        assert [k for k, _ in problems] == ["metrics.bind"], problems
        assert "metrics.allow_remote = true" in problems[0][1]
    for bind in ("127.0.0.1", "127.0.0.5", "::1"):
        data = config_data(tmp_path, metrics_port=9100)
        data["metrics"]["bind"] = bind
        runner_config_from_dict(data, base_dir=tmp_path, label="host.toml")
    data = config_data(tmp_path, metrics_port=9100)
    data["metrics"].update(bind="0.0.0.0", allow_remote=True)
    config = runner_config_from_dict(data, base_dir=tmp_path, label="host.toml")
    assert any("0.0.0.0" in warning for warning in config.warnings())


def test_wsrl_run_warns_on_stderr_and_in_the_start_record_when_metrics_are_remote(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = config_data(tmp_path, metrics_port=port)
    data["metrics"].update(bind="0.0.0.0", allow_remote=True)
    config = tmp_path / "host.toml"
    config.write_text(to_toml(data))
    result = _wsrl("--config", str(config), "--once", "--dry-run", cwd=tmp_path, module="wsrl.runner")
    assert result.returncode == 0, result.stderr
    assert "warning: metrics" in result.stderr and "0.0.0.0" in result.stderr
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    start = next(r for r in records if r["kind"] == "start")
    assert any("0.0.0.0" in warning for warning in start["warnings"])


# -- sockets -----------------------------------------------------------------------------------


def _vm_data(tmp_path: Path, socket_path: Path, socket_dirs: list[str]) -> dict[str, Any]:
    data = config_data(tmp_path)
    data.pop("sim")
    data["host"]["socket_dirs"] = socket_dirs
    data["guest"] = [
        {"name": "vm", "provisioned_gib": 4, "backend": {"kind": "qemu", "qmp_socket": str(socket_path)}}
    ]
    return data


def test_a_socket_path_must_be_a_socket_if_it_exists(tmp_path: Path) -> None:
    folder = tmp_path / "sockets"
    folder.mkdir()
    problems = _problems(tmp_path, _vm_data(tmp_path, Path("/etc/passwd"), ["/"]))
    assert [k for k, _ in problems] == ["guest[0].backend.qmp_socket"], problems
    assert "not a socket" in problems[0][1]
    fifo = folder / "fifo"
    os.mkfifo(fifo)
    to_fifo = folder / "to-fifo"
    to_fifo.symlink_to(fifo)
    for path in (fifo, to_fifo):
        problems = _problems(tmp_path, _vm_data(tmp_path, path, [str(folder)]))
        assert "not a socket" in problems[0][1], problems
    link = folder / "link"
    link.symlink_to("/etc/passwd")  # a symlink may not lead out of the allowed directories
    problems = _problems(tmp_path, _vm_data(tmp_path, link, [str(folder)]))
    assert "symlink to /etc/passwd, outside" in problems[0][1], problems
    real = folder / "qmp.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(real))
        runner_config_from_dict(_vm_data(tmp_path, real, [str(folder)]), base_dir=tmp_path, label="host.toml")
        # A stable symlink to a VM's socket (its path moves at each boot), within the allowed
        # directories, is accepted.
        stable = folder / "vm.sock"
        stable.symlink_to(real)
        runner_config_from_dict(
            _vm_data(tmp_path, stable, [str(folder)]), base_dir=tmp_path, label="host.toml"
        )
    # not there yet (the VM starts later): accepted
    runner_config_from_dict(
        _vm_data(tmp_path, folder / "later.sock", [str(folder)]), base_dir=tmp_path, label="host.toml"
    )


def test_socket_dirs_must_pass_the_trust_checks(tmp_path: Path) -> None:
    assert os.geteuid() == 0, "plays another user with chown: run as root"
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, OTHER_UID, OTHER_UID)
    problems = _problems(tmp_path, _vm_data(tmp_path, theirs / "qmp.sock", [str(theirs)]))
    assert "host.socket_dirs[0]" in [k for k, _ in problems], problems
    assert any("owned by uid 65534" in reason for _, reason in problems), problems
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    problems = _problems(tmp_path, _vm_data(tmp_path, open_dir / "qmp.sock", [str(open_dir)]))
    assert any("world-writable" in reason for k, reason in problems if k == "host.socket_dirs[0]"), problems


# -- traces ------------------------------------------------------------------------------------


def _trace(directory: Path, times_ms: tuple[int, ...] = (1_000_000, 1_010_000)) -> Path:
    from wsrl.trace.record import GuestSample
    from wsrl.trace.writer import TraceWriter

    with TraceWriter(directory, source="test", flush_rows=1) as writer:
        for time_ms in times_ms:
            writer.append(GuestSample(time_ms=time_ms, host="h", guest="g", usage_bytes=1))
    return directory


def test_a_manifest_nested_too_deeply_is_refused_in_one_line(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "trace")
    depth = 200_000
    (trace / "trace.json").write_text("[" * depth + "]" * depth)
    for command in (("trace", "info"), ("trace", "validate")):
        result = _wsrl(*command, str(trace), cwd=tmp_path)
        _assert_one_line_error(result, "trace.json", "nested too deeply")
    data = config_data(tmp_path)  # the runner appending to it: its record.dir
    data["record"]["dir"] = str(trace)
    config = tmp_path / "host.toml"
    config.write_text(to_toml(data))
    result = _wsrl("--config", str(config), "--once", "--dry-run", cwd=tmp_path, module="wsrl.runner")
    assert result.returncode == 2, result.stderr
    _assert_one_line_error(result, "trace.json", "nested too deeply")


@pytest.mark.parametrize("name", ["part-000001.parquet", "trace.json"])
def test_a_fifo_in_a_trace_is_refused_without_hanging(tmp_path: Path, name: str) -> None:
    trace = _trace(tmp_path / "trace")
    (trace / name).unlink()
    os.mkfifo(trace / name)  # nobody ever writes to it: opening it for reading would block forever
    result = _wsrl("trace", "info", str(trace), cwd=tmp_path, timeout=60)  # TimeoutExpired: it hung
    _assert_one_line_error(result, name, "not a regular file (it is a FIFO)")
    result = _wsrl("trace", "validate", str(trace), cwd=tmp_path, timeout=60)
    if name == "trace.json":  # not a trace at all: an error
        _assert_one_line_error(result, name, "not a regular file (it is a FIFO)")
    else:  # one invalid part: a problem in the report, the other parts still checked
        assert result.returncode == 1, result
        assert f"{name}: not a regular file (it is a FIFO)" in result.stdout, result.stdout
        assert "2 part(s), 1 rows checked" in result.stdout, result.stdout


def test_a_part_that_is_a_symlink_to_a_device_is_refused(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "trace")
    (trace / "part-000001.parquet").unlink()
    (trace / "part-000001.parquet").symlink_to("/dev/zero")
    result = _wsrl("trace", "validate", str(trace), cwd=tmp_path, timeout=60)
    assert result.returncode == 1
    assert "part-000001.parquet" in result.stdout and "not a regular file" in result.stdout


def test_bitbrains_timestamps_beyond_the_trace_range_are_refused(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = tmp_path / "memory.parquet"
    table = pa.table(
        {
            "vm": pa.array([1, 1], pa.int16()),
            "ts": pa.array([1_372_636_800, 2**62], pa.int64()),
            "mem_prov_kb": pa.array([1024.0, 1024.0], pa.float32()),
            "mem_use_kb": pa.array([512.0, 512.0], pa.float32()),
        }
    )
    pq.write_table(table, source)
    result = _wsrl("trace", "import", "bitbrains", str(source), "--out", str(tmp_path / "out"), cwd=tmp_path)
    _assert_one_line_error(result, "memory.parquet", "column ts")
    assert not list((tmp_path / "out").glob("part-*")) if (tmp_path / "out").exists() else True


def test_validate_refuses_timestamps_outside_the_trace_range(tmp_path: Path) -> None:
    from wsrl.trace.validate import validate_trace

    trace = _trace(tmp_path / "trace", times_ms=(1_000_000, 2**62, -5))
    report = validate_trace(trace)
    assert not report.ok
    assert any("time_ms" in p and "out of range" in p for p in report.problems), report.problems
    result = _wsrl("trace", "info", str(trace), "--json", cwd=tmp_path)  # still summarised, no traceback
    assert "Traceback" not in result.stderr, result.stderr


def test_export_minari_without_minari_names_how_to_install_it(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "trace")
    blocked = (
        "import sys; sys.modules['minari'] = None; from wsrl.cli import main; sys.argv[0] = 'wsrl'; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", blocked, "trace", "export-minari", str(trace), "wsrl/test-v0", "--out", "ds"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    _assert_one_line_error(result, "minari", "pip install")
