"""``wsrl run`` as a real process (``python -m wsrl.runner``, the same command function).

A runner under SIGTERM or SIGINT relaxes every guest and exits 0; ``--once`` runs one tick and keeps
it; config errors are one line naming the key with exit status 2; and the runner never loads torch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_runner_support import audit_records, config_data, to_toml

from wsrl.trace.validate import validate_trace
from wsrl.units import GIB

PROVISIONED = {"desktop": 6 * GIB, "android": 4 * GIB, "dev": 8 * GIB}


def _write(tmp_path: Path, **kwargs: Any) -> Path:
    data = config_data(tmp_path, **kwargs)
    data["audit"]["path"] = "audit.jsonl"  # relative: resolved against the config's folder
    data["sim"]["state_file"] = "sim-state.json"
    path = tmp_path / "host.toml"
    path.write_text(to_toml(data))
    return path


def _run(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wsrl.runner", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def _pending(tmp_path: Path) -> dict[str, float]:
    state = json.loads((tmp_path / "sim-state.json").read_text())
    return {name: g["pending_target_bytes"] for name, g in state["guests"].items()}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_relaxes_every_guest_and_exits_zero(tmp_path: Path, signum: int) -> None:
    config = _write(tmp_path, host={"interval_s": 0.02}, sim={"seconds_per_tick": 10})
    process = subprocess.Popen(
        [sys.executable, "-m", "wsrl.runner", "--config", str(config)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        audit = tmp_path / "audit.jsonl"
        while time.monotonic() < deadline and process.poll() is None:
            if audit.exists() and audit.read_text().count('"kind":"tick"') >= 8:
                break
            time.sleep(0.05)
        ticks_seen = audit_records(tmp_path)
        assert len(ticks_seen) >= 8, process.communicate(timeout=5)
        shrunk = ticks_seen[-1]["guests"]
        assert any(g["target_bytes"] < PROVISIONED[g["name"]] for g in shrunk)  # it really controlled
        process.send_signal(signum)
        _out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    exits = audit_records(tmp_path, "exit")
    assert len(exits) == 1
    assert {g["name"]: g["relaxed_to_bytes"] for g in exits[0]["guests"]} == PROVISIONED
    assert _pending(tmp_path) == PROVISIONED  # what the simulated actuators were left at
    report = validate_trace(tmp_path / "trace")
    assert report.ok and report.rows_checked >= 3 * 8, report.problems


def test_once_runs_one_tick_and_keeps_its_targets(tmp_path: Path) -> None:
    config = _write(tmp_path)
    result = _run("--config", str(config), "--once", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["desktop", "android", "dev"]
    assert all("(applied)" in line for line in lines)
    ticks = audit_records(tmp_path)
    assert len(ticks) == 1
    applied = {g["name"]: g["applied_bytes"] for g in ticks[0]["guests"]}
    assert _pending(tmp_path) == applied  # not relaxed: a one-shot run keeps what it applied
    assert all(applied[name] < PROVISIONED[name] for name in applied)
    exit_record = audit_records(tmp_path, "exit")[0]
    assert all(g["skipped"] == "one-shot run: targets kept" for g in exit_record["guests"])


def test_dry_run_once_applies_nothing(tmp_path: Path) -> None:
    config = _write(tmp_path)
    result = _run("--config", str(config), "--once", "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert all("(dry_run)" in line for line in result.stdout.strip().splitlines())
    assert _pending(tmp_path) == PROVISIONED


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda d: d["safety"].update(max_shrink_frac_per_s=0), "safety.max_shrink_frac_per_s"),
        (lambda d: d["guest"][1]["backend"].update(kind="hyperv"), "guest[1].backend.kind"),
        (
            lambda d: d["guest"][0].update(backend={"kind": "qemu", "qmp_socket": "/etc/x.sock"}),
            "guest[0].backend.qmp_socket",
        ),
        (lambda d: d["policy"].update(name_or_path="./missing-policy"), "policy.name_or_path"),
    ],
)
def test_config_errors_are_one_line_naming_the_key(tmp_path: Path, edit: Any, fragment: str) -> None:
    data = config_data(tmp_path)
    edit(data)
    config = tmp_path / "host.toml"
    config.write_text(to_toml(data))
    result = _run("--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wsrl: error: ") and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_option_errors_exit_two(tmp_path: Path) -> None:
    config = _write(tmp_path)
    both = _run("--config", str(config), "--dry-run", "--shadow", cwd=tmp_path)
    assert both.returncode == 2 and "exclude each other" in both.stderr
    missing = _run("--config", str(tmp_path / "nope.toml"), cwd=tmp_path)
    assert missing.returncode == 2 and "nope.toml" in missing.stderr and "cannot read" in missing.stderr
    actor = _run("--config", str(config), "--shadow", "--shadow-actor", "oracle", "--once", cwd=tmp_path)
    assert actor.returncode == 2 and "oracle" in actor.stderr


def test_runner_never_imports_torch_nor_the_cli(tmp_path: Path) -> None:
    imports = subprocess.run(
        [sys.executable, "-c", "import wsrl.runner.daemon, sys; assert 'torch' not in sys.modules"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert imports.returncode == 0, imports.stderr
    config = _write(tmp_path)
    script = (
        "import sys\n"
        "from wsrl.runner.__main__ import main\n"
        "try:\n"
        f"    main(['--config', {str(config)!r}, '--once'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        # Nor the CLI layer above the runner (python -m wsrl.runner is argparse, not typer).
        "heavy = ('torch', 'stable_baselines3', 'sb3_contrib', 'typer')\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith('wsrl.cli'))\n"
        "assert not loaded, loaded\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert run.returncode == 0, run.stderr


def test_runner_runs_where_the_training_libraries_are_not_installed(tmp_path: Path) -> None:
    """A runner-only install: torch, gymnasium and stable-baselines3 cannot be imported at all."""
    config = _write(tmp_path)
    script = (
        "import sys, importlib.abc\n"
        "class Absent(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'gymnasium', 'stable_baselines3', 'sb3_contrib'):\n"
        "            raise ImportError(f'No module named {name!r} (blocked by the test)')\n"
        "        return None\n"
        "sys.meta_path.insert(0, Absent())\n"
        "from wsrl.runner.__main__ import main\n"
        "try:\n"
        f"    main(['--config', {str(config)!r}, '--once'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "audit.jsonl").read_text().count('"kind":"tick"') == 1
