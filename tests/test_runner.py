"""The runner's config (errors name their key) and its input checks on crafted ``[1, guests]`` arrays.

The rails themselves are tested in ``test_rails.py`` (they belong to the control stack).

End-to-end runs on the simulator backend are in ``test_runner_sim.py``, the command line in
``test_runner_cli.py`` and a learned ONNX policy in ``test_runner_learned.py``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_runner_support import config_data, make_config, reading, reading_arrays, to_toml

from wsrl.errors import ConfigError
from wsrl.histogram import ALL_NODES, Histogram
from wsrl.runner import safety
from wsrl.runner.config import load_runner_config, runner_config_from_dict
from wsrl.units import GIB

# -- config -----------------------------------------------------------------------------------------


def _problems(tmp_path: Path, data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        runner_config_from_dict(data, base_dir=tmp_path, label="host.toml")
    return info.value.problems


def _keys(problems: list[tuple[str, str]]) -> list[str]:
    return [key for key, _ in problems]


def test_valid_config_and_defaults(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert config.host.interval_s == 10
    assert config.policy.fallback == "static"
    assert config.safety.max_shrink_frac_per_s == 0.005
    assert config.safety.max_growth_frac_per_s is None
    assert config.safety.on_exit == "relax"
    assert config.metrics.bind == "127.0.0.1" and config.metrics.port == 0
    specs = config.guest_specs()
    assert [s.name for s in specs] == ["desktop", "android", "dev"]
    assert specs[0].floor_bytes == 2 * GIB and specs[0].tier == 0
    assert config.host_reserve_bytes == 2 * GIB


def test_floor_defaults_guest_then_safety_then_fraction(tmp_path: Path) -> None:
    guests = [
        {"name": "a", "provisioned_gib": 4, "floor_gib": 3, "backend": {"kind": "sim", "guest": "desktop"}},
        {"name": "b", "provisioned_gib": 4, "backend": {"kind": "sim", "guest": "android"}},
    ]
    config = make_config(tmp_path, guests=guests, safety={"floor_gib": 1.5})
    assert [s.floor_bytes for s in config.guest_specs()] == [3 * GIB, 1.5 * GIB]
    config = make_config(tmp_path, guests=guests, safety={"floor_frac": 0.5})
    assert [s.floor_bytes for s in config.guest_specs()] == [3 * GIB, 2 * GIB]


@pytest.mark.parametrize(
    ("change", "key", "fragment"),
    [
        (lambda d: d["host"].pop("capacity_gib"), "host.capacity_gib", "required"),
        (lambda d: d["host"].update(reserve_gib=20), "host", "reserve_gib"),
        (lambda d: d["host"].update(interval_s=0), "host.interval_s", ">= 0.01"),
        (lambda d: d["host"].update(histogram_edges_ms=[5, 2]), "host.histogram_edges_ms", "increasing"),
        (lambda d: d["host"].update(name="bad name"), "host.name", "pattern"),
        (
            lambda d: d["safety"].update(max_shrink_frac_per_s=2),
            "safety.max_shrink_frac_per_s",
            "<= 1",
        ),
        (lambda d: d["safety"].update(on_exit="explode"), "safety.on_exit", "relax"),
        (lambda d: d["safety"].update(breaker={"cooldown_s": -1}), "safety.breaker.cooldown_s", "> 0"),
        (
            lambda d: d["safety"].update(breaker={"psi_some_avg10_pct": 150}),
            "safety.breaker.psi_some_avg10_pct",
            "100",
        ),
        (lambda d: d["safety"].update(stale_afte_s=3), "safety.stale_afte_s", "stale_after_s"),
        (lambda d: d["metrics"].update(bind="localhost"), "metrics.bind", "IP address"),
        (lambda d: d["metrics"].update(port=70000), "metrics.port", "65535"),
        (lambda d: d["guest"][1].update(provisioned_gib=-1), "guest[1].provisioned_gib", "> 0"),
        (lambda d: d["guest"][0].update(floor_gib=7), "guest[0]", "floor_gib"),
        (lambda d: d["guest"][2].update(tier="platinum"), "guest[2].tier", "gold"),
        (lambda d: d["guest"][1].update(name="desktop"), "", "unique"),
        (lambda d: d["guest"][0]["backend"].update(kind="xen"), "guest[0].backend.kind", "unknown kind"),
        (lambda d: d["guest"][0]["backend"].pop("kind"), "guest[0].backend.kind", "required"),
        (lambda d: d["guest"][0]["backend"].update(scenario="x"), "guest[0].backend.scenario", "unknown key"),
        (lambda d: d.pop("sim"), "", "[sim]"),
        (lambda d: d.pop("audit"), "audit", "required"),
        (lambda d: d["policy"].update(name_or_path="no-such-policy"), "policy.name_or_path", "neither"),
        (lambda d: d["policy"].update(name_or_path="oracle"), "policy.name_or_path", "future"),
        (lambda d: d["policy"].update(fallback="nope"), "policy.fallback", "unknown reference policy"),
        (lambda d: d["policy"].update(params={"period_s": -5}), "policy.params", "wmo"),
        (lambda d: d["policy"].update(shadow_actor="oracle-zero"), "policy.shadow_actor", "future"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, change: Any, key: str, fragment: str) -> None:
    data = config_data(tmp_path)
    data["metrics"] = {}
    change(data)
    problems = _problems(tmp_path, data)
    assert key in _keys(problems), problems
    reason = dict(problems)[key]
    assert fragment in reason, problems


@pytest.mark.parametrize(
    ("backend", "key", "fragment"),
    [
        ({"kind": "cgroup", "path": "/sys/fs/cgroup/web"}, "guest[0].backend.path", "relative"),
        ({"kind": "cgroup", "path": "web/../../etc"}, "guest[0].backend.path", "'..'"),
        ({"kind": "cgroup", "path": "."}, "guest[0].backend.path", "name a cgroup"),
        ({"kind": "cgroup", "path": "web", "root": "cgroup"}, "guest[0].backend.root", "absolute"),
        (
            {"kind": "cgroup", "path": "web", "histogram_source": "magic"},
            "guest[0].backend.histogram_source",
            "lru_gen",
        ),
        ({"kind": "qemu", "qmp_socket": "vm.sock"}, "guest[0].backend.qmp_socket", "absolute"),
        ({"kind": "qemu", "qmp_socket": "/etc/vm.sock"}, "guest[0].backend.qmp_socket", "must lie under"),
        ({"kind": "qemu", "qmp_socket": "/run/../etc/x.sock"}, "guest[0].backend.qmp_socket", "'..'"),
        (
            {"kind": "qemu", "qmp_socket": "/run/vm.sock", "agent_socket": "/home/x.sock"},
            "guest[0].backend.agent_socket",
            "must lie under",
        ),
        (
            {"kind": "qemu", "qmp_socket": "/run/vm.sock", "memcg": "system.slice"},
            "guest[0].backend.memcg",
            "memcg",
        ),
        ({"kind": "qemu", "qmp_socket": "/run/vm.sock", "timeout_s": 0}, "guest[0].backend.timeout_s", "> 0"),
        ({"kind": "crosvm"}, "guest[0].backend.control_socket", "required"),
        (
            {"kind": "crosvm", "control_socket": "/run/c.sock", "crosvm_bin": "../bin/crosvm"},
            "guest[0].backend.crosvm_bin",
            "absolute",
        ),
        (
            {"kind": "crosvm", "control_socket": "/run/c.sock", "crosvm_bin": "crosvm; rm"},
            "guest[0].backend.crosvm_bin",
            "command name",
        ),
    ],
)
def test_backend_tables_are_validated_per_kind(
    tmp_path: Path, backend: dict[str, Any], key: str, fragment: str
) -> None:
    data = config_data(tmp_path)
    data["guest"][0]["backend"] = backend
    problems = _problems(tmp_path, data)
    assert key in _keys(problems), problems
    assert fragment in dict(problems)[key], problems


def test_backend_tables_that_pass(tmp_path: Path) -> None:
    data = config_data(tmp_path)
    data["host"]["socket_dirs"] = ["/srv/vms"]
    data["guest"] = [
        {
            "name": "web",
            "provisioned_gib": 2,
            "backend": {"kind": "cgroup", "path": "system.slice/web.service"},
        },
        {
            "name": "vm1",
            "provisioned_gib": 4,
            "backend": {
                "kind": "qemu",
                "qmp_socket": "/run/wsrl/vm1.qmp",
                "agent_socket": "/srv/vms/vm1.ws",
                "memcg": "/",
            },
        },
        {
            "name": "vm2",
            "provisioned_gib": 4,
            "backend": {
                "kind": "crosvm",
                "control_socket": str(tmp_path / "vm2.sock"),
                "crosvm_bin": "/usr/bin/crosvm",
            },
        },
    ]
    data.pop("sim")
    config = runner_config_from_dict(data, base_dir=tmp_path)
    assert [g.backend.kind for g in config.guest] == ["cgroup", "qemu", "crosvm"]
    assert config.guest[0].backend.path == "system.slice/web.service"  # type: ignore[union-attr]


def test_toml_file_errors_name_file_and_key(tmp_path: Path) -> None:
    data = config_data(tmp_path)
    data["safety"]["hold_intervals_before_fallback"] = -1
    path = tmp_path / "host.toml"
    path.write_text(to_toml(data))
    with pytest.raises(ConfigError) as info:
        load_runner_config(path)
    assert str(path) in str(info.value)
    assert "safety.hold_intervals_before_fallback" in str(info.value)
    path.write_text("[host\nname = 1\n")
    with pytest.raises(ConfigError, match="line 1"):
        load_runner_config(path)


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    data = config_data(tmp_path)
    data["audit"]["path"] = "logs/audit.jsonl"
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "host.toml").write_text(to_toml(data))
    config = load_runner_config(folder / "host.toml")
    assert config.resolve(config.audit.path) == folder / "logs" / "audit.jsonl"


def test_check_inputs_sorts_missing_stale_malformed() -> None:
    hist = Histogram("g", ALL_NODES, [1000], {"anon": [20 * GIB, 0], "file": [0, 0]})
    readings = [
        reading(),  # fine
        None,  # missing
        reading(time_ms=500_000),  # time did not advance past the previous reading
        reading(time_ms=1_000_000 - 120_000),  # older than stale_after_s
        reading(visible_bytes=math.nan),
        reading(usage_bytes=-5.0),
        reading(usage_bytes=9 * GIB),  # > 2x provisioned
        reading(histogram=hist),
        reading(psi_some_avg10=140.0),
        reading(refault_total=math.inf),
        reading(usage_bytes=math.nan, target_bytes=math.nan, psi_some_avg10=math.nan),  # unknowns are fine
    ]
    n = len(readings)
    previous = np.full((1, n), np.nan)
    previous[0, 2] = 500_000
    verdict = safety.check_inputs(
        reading_arrays(*readings),
        previous_time_ms=previous,
        now_ms=1_000_500,
        stale_after_s=60,
        provisioned_bytes=np.full((1, n), 4 * GIB),
    )
    assert verdict.missing[0].tolist() == [i == 1 for i in range(n)]
    assert verdict.stale[0].tolist() == [i in (2, 3) for i in range(n)]
    assert verdict.malformed[0].tolist() == [4 <= i <= 9 for i in range(n)]
    assert verdict.bad[0].tolist() == [i not in (0, 10) for i in range(n)]
    assert verdict.usable[0].tolist() == [i in (0, 2, 3, 10) for i in range(n)]
    reasons = verdict.reasons[0]
    assert reasons[0] == "" and reasons[10] == ""
    assert "could not be read" in reasons[1]
    assert "did not advance" in reasons[2]
    assert "120 s old" in reasons[3]
    assert "visible" in reasons[4] and "usage" in reasons[5] and "2x provisioned" in reasons[6]
    assert "histogram" in reasons[7] and "PSI" in reasons[8] and "refault" in reasons[9]


def test_check_inputs_refuses_a_clock_ahead_and_follows_a_clock_stepped_back() -> None:
    now_ms = 10_000_000.0
    readings = [
        reading(time_ms=now_ms + 2 * 3600 * 1000),  # a source two hours ahead: refused
        reading(time_ms=now_ms + 5_000),  # within the skew: fine
        reading(time_ms=now_ms - 1_000),  # the host clock was stepped back an hour: a new time line
        reading(time_ms=now_ms - 7200 * 1000),  # stamped two hours ago: old, stale
        reading(time_ms=now_ms - 1_000),  # a repeat of the previous sample
    ]
    previous = np.array([[now_ms - 10_000, now_ms - 10_000, now_ms + 3600 * 1000, now_ms, now_ms - 1_000]])
    verdict = safety.check_inputs(
        reading_arrays(*readings),
        previous_time_ms=previous,
        now_ms=now_ms,
        stale_after_s=60,
        provisioned_bytes=np.full((1, 5), 4 * GIB),
        clock_skew_s=30,
    )
    assert verdict.malformed[0].tolist() == [True, False, False, False, False]
    assert "ahead of the host clock" in verdict.reasons[0, 0]
    assert verdict.stale[0].tolist() == [False, False, False, True, True]
    assert verdict.stepped_back is not None
    assert verdict.stepped_back[0].tolist() == [False, False, True, False, False]


def test_input_health_holds_then_falls_back_then_recovers() -> None:
    health = safety.InputHealth(2, hold_intervals=2)
    bad = np.array([[True, False]])
    states = [int(health.update(bad)[0, 0]) for _ in range(4)]
    assert states == [safety.HOLD, safety.HOLD, safety.FALLBACK, safety.FALLBACK]
    assert int(health.update(np.array([[False, False]]))[0, 0]) == safety.OK
    immediate = safety.InputHealth(1, hold_intervals=0)
    assert int(immediate.update(np.array([[True]]))[0, 0]) == safety.FALLBACK


def test_expiry_reason() -> None:
    assert safety.expiry_reason(10.0, 10.2, 0.5) is None
    reason = safety.expiry_reason(10.0, 11.0, 0.5)
    assert reason is not None and "expired" in reason and "0.5 s" in reason


# -- deployment files -------------------------------------------------------------------------------

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def _unit() -> dict[str, list[str]]:
    """``[Service]`` and ``[Unit]`` keys of the systemd unit (repeated keys keep every value)."""
    values: dict[str, list[str]] = {}
    for line in (DEPLOY / "wsrl-runner.service").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


@pytest.mark.parametrize("name", ["vm-host.toml", "container-host.toml"])
def test_deploy_configs_validate_and_fit_the_unit_sandbox(tmp_path: Path, name: str) -> None:
    from wsrl.config_tools import read_toml

    data = read_toml(DEPLOY / name)
    if data["policy"]["name_or_path"] not in ("far-memory", "wmo", "vpa", "static", "senpai"):
        data["policy"]["name_or_path"] = str(tmp_path)  # the exported policy lives on the host only
    config = runner_config_from_dict(data, base_dir=tmp_path, label=name)
    unit = _unit()
    writable = unit["ReadWritePaths"][0].split()
    for path in (config.audit.path, config.record.dir):
        assert path is not None and any(Path(path).is_relative_to(w) for w in writable), path
    for guest in config.guest:
        for key in ("qmp_socket", "agent_socket", "control_socket"):
            socket_path = getattr(guest.backend, key, None)
            if socket_path is not None:
                assert any(Path(socket_path).is_relative_to(w) for w in writable), socket_path
    assert config.metrics.bind == "127.0.0.1"


def test_systemd_unit_is_hardened_and_stops_cleanly() -> None:
    unit = _unit()
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "Restart": "on-failure",
        "KillSignal": "SIGTERM",
        "ProtectControlGroups": "no",
    }
    for key, value in expected.items():
        assert unit[key] == [value], key
    assert float(unit["TimeoutStopSec"][0]) >= 30
    assert "/sys/fs/cgroup" in unit["ReadWritePaths"][0].split()
    assert unit["ExecStart"][0].endswith("wsrl run --config /etc/wsrl/host.toml")


def test_a_per_tick_rate_key_is_refused_with_its_per_second_replacement(tmp_path: Path) -> None:
    data = config_data(tmp_path, safety={"max_shrink_frac_per_interval": 0.05})
    problems = _problems(tmp_path, data)
    assert any(
        "max_shrink_frac_per_interval was replaced by max_shrink_frac_per_s" in why for _, why in problems
    ), problems


def test_the_config_maps_onto_one_control_spec(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        safety={"max_shrink_frac_per_s": 0.01, "host_reserve_gib": 3},
        breaker={"on_psi": False, "cooldown_s": 30},
    )
    spec = config.control_spec()
    assert spec.max_shrink_frac_per_s == 0.01 and spec.max_rate_step_s == config.host.interval_s
    assert spec.host_reserve_bytes == 3 * GIB and spec.fallback == config.policy.fallback
    assert spec.breaker.psi_some_avg10_pct is None and spec.breaker.cooldown_s == 30
    assert spec.breaker.refault_frac_per_min == 0.10 and spec.contain_policy_errors
