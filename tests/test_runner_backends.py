"""The backend registry: each ``[[guest]]`` kind built from its config table, failures named by key.

A cgroup v2 group is laid out as plain files under a temporary root (what the cgroup backend reads
and writes), so the runner's config -> registry -> backend -> apply path runs for real without
root; a QEMU guest whose QMP socket does not exist shows a dead guest being masked while the
others are served.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_runner_support import audit_records, config_data

from wsrl.errors import WsrlError
from wsrl.runner.backend_registry import build_backends
from wsrl.runner.config import runner_config_from_dict
from wsrl.runner.daemon import Runner
from wsrl.units import GIB, MIB

V2_FILES = {
    "memory.current": f"{300 * MIB}\n",
    "memory.high": "max\n",
    "memory.max": "max\n",
    "memory.stat": "anon 150000000\nfile 50000000\nactive_anon 104857600\ninactive_anon 41943040\n"
    "active_file 20971520\ninactive_file 31457280\nunevictable 2097152\n"
    "workingset_refault_anon 70\nworkingset_refault_file 30\n",
    "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
    "memory.pressure": "some avg10=0.50 avg60=0.10 avg300=0.00 total=1500\n"
    "full avg10=0.00 avg60=0.00 avg300=0.00 total=20\n",
    "memory.swap.current": "0\n",
    "memory.reclaim": "",
}


def _cgroup_tree(root: Path, name: str) -> Path:
    group = root / "system.slice" / name
    group.mkdir(parents=True)
    for file, text in V2_FILES.items():
        (group / file).write_text(text)
    return group


def _config(tmp_path: Path, guests: list[dict[str, object]], policy: str = "static") -> object:
    data = config_data(tmp_path, policy=policy, guests=guests, record=False)
    data.pop("sim")
    return runner_config_from_dict(data, base_dir=tmp_path)


def test_cgroup_guest_is_read_and_its_limit_written(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    group = _cgroup_tree(root, "web.service")
    guests = [
        {
            "name": "web",
            "provisioned_gib": 1,
            "floor_gib": 0.25,
            "backend": {
                "kind": "cgroup",
                "path": "system.slice/web.service",
                "root": str(root),
                "version": "v2",
                "proactive_reclaim": False,
            },
        }
    ]
    config = _config(tmp_path, guests)
    runner = Runner(config)  # type: ignore[arg-type]
    runner.start()
    outcome = runner.tick()
    runner.shutdown(relax=False)
    guest = outcome.record["guests"][0]
    assert guest["inputs"]["usage_bytes"] == 300 * MIB
    assert guest["inputs"]["histogram"] is True and guest["inputs"]["psi_some_avg10"] == 0.5
    # static proposes the provisioned size; the group had no limit, so the runner sets 1 GiB.
    assert guest["applied"] and guest["target_bytes"] == GIB
    assert (group / "memory.high").read_text().strip() == str(GIB)
    assert (group / "memory.max").read_text().strip() == "max"  # the operator's hard cap is left alone


def test_unbuildable_backend_is_named_by_its_key(tmp_path: Path) -> None:
    guests = [
        {
            "name": "gone",
            "provisioned_gib": 1,
            "backend": {"kind": "cgroup", "path": "no/such/group", "root": str(tmp_path)},
        }
    ]
    config = _config(tmp_path, guests)
    with pytest.raises(WsrlError, match=r"guest\[0\]\.backend \(gone\): .*no/such/group"):
        build_backends(config)  # type: ignore[arg-type]


def test_dead_qemu_guest_is_masked_and_the_cgroup_guest_served(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    _cgroup_tree(root, "db.service")
    guests = [
        {
            "name": "vm",
            "provisioned_gib": 2,
            "backend": {"kind": "qemu", "qmp_socket": str(tmp_path / "vm.qmp"), "timeout_s": 0.5},
        },
        {
            "name": "db",
            "provisioned_gib": 1,
            "backend": {
                "kind": "cgroup",
                "path": "system.slice/db.service",
                "root": str(root),
                "proactive_reclaim": False,
            },
        },
    ]
    config = _config(tmp_path, guests)
    runner = Runner(config)  # type: ignore[arg-type]
    runner.start()
    outcome = runner.tick()
    runner.shutdown()
    start = audit_records(tmp_path, "start")[0]
    assert "cannot connect" in start["guests"][0]["start_error"]
    vm, db = outcome.record["guests"]
    assert vm["state"] == "hold" and vm["inputs"] is None and vm["errors"][0].startswith("read: ")
    assert db["state"] == "ok" and db["applied"]
    exit_record = audit_records(tmp_path, "exit")[0]
    assert exit_record["guests"][0]["error"] is not None  # relaxing a dead guest fails, and is said
    assert exit_record["guests"][1]["relaxed_to_bytes"] == GIB
