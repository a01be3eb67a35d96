"""Workload and scenario files: the bundled library loads and builds; bad files fail clearly."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pytest

from wsrl.errors import ConfigError, WsrlError
from wsrl.sim import defaults
from wsrl.sim.arrays import ACTUATOR_BALLOON, ACTUATOR_MEMCG, ACTUATOR_NAMES, KERNEL_NAMES, TIER_NAMES
from wsrl.sim.build import build_setup
from wsrl.sim.config import (
    envs_dir,
    list_scenarios,
    list_workloads,
    load_scenario,
    load_workload,
    parse_trace_start,
    scenario_from_dict,
)
from wsrl.sim.simulator import Simulator
from wsrl.units import GIB, MIB

ENVS = envs_dir()
WORKLOADS = sorted(p.stem for p in (ENVS / "workloads").glob("*.toml"))
SCENARIOS = sorted(p.stem for p in (ENVS / "scenarios").glob("*.toml"))
TRACE = ENVS / "traces" / "bitbrains-sample"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


WORKLOAD_OK = """
name = "tiny"
description = "d"
source = "s"

[[population]]
name = "heap"
type = "anon"
size_mib = 256
access_interval_s = 10
"""

SCENARIO_OK = """
name = "small"
description = "d"

[host]
capacity_gib = 8

[[guest]]
name = "a"
workload = "web-diurnal"
provisioned_gib = 16
"""


def scenario_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path / "s.toml", text)
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    return str(info.value)


def workload_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path / "w.toml", text)
    with pytest.raises(ConfigError) as info:
        load_workload(path)
    return str(info.value)


# --- the bundled library ---------------------------------------------------------------------


def test_library_has_what_the_issue_asks() -> None:
    assert set(WORKLOADS) >= {
        "web-diurnal",
        "database-bufferpool",
        "batch-compile",
        "jvm-heap-gc",
        "cache-cold-tail",
        "idle-desktop",
        "android-app-switching",
        "memory-leak",
        "bursty-spikes",
    }
    assert set(SCENARIOS) >= {"datacenter", "laptop", "dense", "bitbrains-replay"}


@pytest.mark.parametrize("name", WORKLOADS)
def test_bundled_workload_loads(name: str) -> None:
    wl = load_workload(name)
    assert wl.name == name
    assert wl.description and wl.source.strip()
    assert wl.base_bytes > 0
    assert all(p.size_bytes >= 0 and p.rate_per_s >= 0 for p in wl.population)


@pytest.mark.parametrize("name", SCENARIOS)
def test_bundled_scenario_loads_and_builds(name: str) -> None:
    scenario = load_scenario(name)
    assert scenario.name == name
    setup = build_setup(scenario)
    g = setup.guests
    hosts, guests = g.shape
    assert hosts == scenario.host.count
    assert guests >= 1 and guests <= 64
    assert g.mask.all()
    for h in range(hosts):
        assert len(set(g.names[h].tolist())) == guests
    assert (g.floor_bytes <= g.provisioned_bytes).all()
    assert (g.unevictable_bytes < g.provisioned_bytes).all()
    assert setup.demand.pop_is_anon.shape[:2] == (hosts, guests)
    assert setup.meta["scenario_path"] and setup.meta["workloads"]


def test_listings() -> None:
    workloads = dict(list_workloads())
    scenarios = dict(list_scenarios())
    assert set(workloads) == set(WORKLOADS)
    assert set(scenarios) == set(SCENARIOS)
    assert all(isinstance(d, str) and d for d in (*workloads.values(), *scenarios.values()))


def test_dense_is_exactly_64_guests() -> None:
    setup = build_setup("dense")
    assert setup.guests.shape == (1, 64)
    assert (setup.guests.actuator == ACTUATOR_MEMCG).all()


def test_datacenter_arrays_in_si_units() -> None:
    scenario = load_scenario("datacenter")
    setup = build_setup(scenario, hosts=5)
    g = setup.guests
    assert g.shape == (5, 16)
    assert setup.hosts.names == [f"host-{h}" for h in range(5)]
    np.testing.assert_allclose(setup.hosts.capacity_bytes, 288 * GIB)
    np.testing.assert_allclose(setup.hosts.reserve_bytes, 8 * GIB)
    np.testing.assert_allclose(setup.hosts.swap_fault_latency_s, 200e-6)
    names = g.names[0].tolist()
    web = names.index("web-0")
    db = names.index("db-0")
    build = names.index("build-0")
    assert g.provisioned_bytes[0, web] == 16 * GIB
    assert g.floor_bytes[0, web] == 4 * GIB
    assert g.unevictable_bytes[0, web] == 64 * MIB
    assert g.swap_capacity_bytes[0, web] == pytest.approx(0.25 * 16 * GIB)
    assert g.anon_fault_latency_s[0, web] == pytest.approx(6e-6)
    assert g.anon_fault_latency_s[0, build] == pytest.approx(100e-6)
    assert g.file_fault_latency_s[0, web] == pytest.approx(100e-6)
    assert g.inflate_bytes_per_s[0, web] == 256 * MIB
    assert g.deflate_bytes_per_s[0, web] == 1024 * MIB
    assert g.actuator[0, web] == ACTUATOR_BALLOON
    assert TIER_NAMES[g.tier[0, db]] == "gold"
    assert g.shares[0, db] == 2000
    assert g.oom_restart_s[0, web] == 60
    assert setup.step_s == 10
    assert setup.meta["workloads"][4][web] == "web-diurnal"
    # Every host carries the same guest list.
    assert (g.names == g.names[0]).all()


# --- name lookup -----------------------------------------------------------------------------


def test_unknown_workload_name_lists_available() -> None:
    with pytest.raises(ConfigError) as info:
        load_workload("no-such-workload")
    msg = str(info.value)
    assert "no-such-workload" in msg and "unknown workload name" in msg
    assert "web-diurnal" in msg and "memory-leak" in msg


def test_unknown_workload_in_scenario_names_the_key(tmp_path: Path) -> None:
    msg = scenario_error(tmp_path, SCENARIO_OK.replace('"web-diurnal"', '"web-diurnall"'))
    assert "guest[0].workload" in msg and "available:" in msg and "web-diurnal" in msg


def test_unknown_scenario_name_lists_available() -> None:
    with pytest.raises(ConfigError, match=r"available: .*datacenter"):
        load_scenario("nope")


def test_missing_toml_path() -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_scenario("does/not/exist.toml")


def test_workload_by_path_relative_to_scenario(tmp_path: Path) -> None:
    (tmp_path / "wl").mkdir()
    write(tmp_path / "wl" / "tiny.toml", WORKLOAD_OK)
    text = SCENARIO_OK.replace('"web-diurnal"', '"wl/tiny.toml"').replace(
        "provisioned_gib = 16", "provisioned_gib = 1"
    )
    scenario = load_scenario(write(tmp_path / "s.toml", text))
    assert scenario.workload_of(0).name == "tiny"


def test_envs_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "workloads").mkdir()
    (tmp_path / "scenarios").mkdir()
    write(tmp_path / "workloads" / "tiny.toml", WORKLOAD_OK)
    text = SCENARIO_OK.replace('"web-diurnal"', '"tiny"').replace(
        "provisioned_gib = 16", "provisioned_gib = 1"
    )
    write(tmp_path / "scenarios" / "small.toml", text)
    monkeypatch.setenv("WSRL_ENVS", str(tmp_path))
    assert list_workloads() == [("tiny", "d")]
    assert [n for n, _ in list_scenarios()] == ["small"]
    setup = build_setup("small")
    assert setup.guests.names[0, 0] == "a"


# --- errors ----------------------------------------------------------------------------------


def test_unknown_key_is_an_error_with_a_hint(tmp_path: Path) -> None:
    msg = scenario_error(tmp_path, SCENARIO_OK.replace("provisioned_gib = 16", "provisoned_gib = 16"))
    assert "s.toml: guest[0].provisoned_gib: unknown key" in msg
    assert "did you mean 'provisioned_gib'" in msg


def test_unknown_key_in_a_pattern(tmp_path: Path) -> None:
    text = WORKLOAD_OK + 'size_pattern = { kind = "diurnal", amplitude = 0.2, peak_hour = 3 }\n'
    msg = workload_error(tmp_path, text)
    assert "population[0].size_pattern.peak_hour: unknown key" in msg


def test_bad_type(tmp_path: Path) -> None:
    msg = scenario_error(tmp_path, SCENARIO_OK.replace("provisioned_gib = 16", 'provisioned_gib = "lots"'))
    assert "guest[0].provisioned_gib: must be a number" in msg and "'lots'" in msg
    msg = workload_error(
        tmp_path, WORKLOAD_OK.replace("access_interval_s = 10", 'access_interval_s = "soon"')
    )
    assert "population[0].access_interval_s" in msg and '"never"' in msg


def test_non_positive_size(tmp_path: Path) -> None:
    msg = workload_error(tmp_path, WORKLOAD_OK.replace("size_mib = 256", "size_mib = -1"))
    assert "w.toml: population[0].size_mib: must be >= 0" in msg
    msg = scenario_error(tmp_path, SCENARIO_OK.replace("provisioned_gib = 16", "provisioned_gib = 0"))
    assert "s.toml: guest[0].provisioned_gib: must be > 0" in msg


def test_both_sizes(tmp_path: Path) -> None:
    msg = workload_error(tmp_path, WORKLOAD_OK.replace("size_mib = 256", "size_mib = 256\nsize_gib = 1"))
    assert "population[0]: give exactly one of size_mib and size_gib" in msg
    msg = workload_error(tmp_path, WORKLOAD_OK.replace("size_mib = 256\n", ""))
    assert "exactly one of size_mib and size_gib" in msg


def test_toml_syntax_error_has_line(tmp_path: Path) -> None:
    msg = scenario_error(tmp_path, SCENARIO_OK.replace("capacity_gib = 8", "capacity_gib = = 8"))
    line = SCENARIO_OK.splitlines().index("capacity_gib = 8") + 1
    assert f"s.toml: line {line}, column" in msg and "TOML syntax" in msg


def test_too_many_guests_per_host(tmp_path: Path) -> None:
    text = (
        SCENARIO_OK + '\n[[guest]]\nname = "b"\nworkload = "web-diurnal"\nprovisioned_gib = 16\ncount = 64\n'
    )
    msg = scenario_error(tmp_path, text)
    assert "65 guests per host; at most 64" in msg
    msg = scenario_error(
        tmp_path, SCENARIO_OK.replace("provisioned_gib = 16", "provisioned_gib = 16\ncount = 65")
    )
    assert "guest[0].count: must be <= 64" in msg


def test_trace_guest_count_counts_toward_64(tmp_path: Path) -> None:
    text = (
        SCENARIO_OK.replace("provisioned_gib = 16", "provisioned_gib = 16\ncount = 60")
        + f'\n[[guest]]\nname = "bb"\ntrace = "{TRACE}"\ntrace_fallback_provisioned_gib = 4\n'
    )
    msg = scenario_error(tmp_path, text)
    assert "68 guests per host" in msg


def test_missing_trace_dir(tmp_path: Path) -> None:
    text = SCENARIO_OK.replace('workload = "web-diurnal"\nprovisioned_gib = 16', 'trace = "no/such/trace"')
    msg = scenario_error(tmp_path, text)
    assert "guest[0].trace: no such trace directory 'no/such/trace'" in msg


def test_unknown_trace_guest(tmp_path: Path) -> None:
    text = SCENARIO_OK.replace(
        'workload = "web-diurnal"\nprovisioned_gib = 16',
        f'trace = "{TRACE}"\ntrace_guests = ["vm1", "vm999"]',
    )
    msg = scenario_error(tmp_path, text)
    assert "guest[0].trace_guests: not in the trace: vm999" in msg and "vm38" in msg


def test_trace_guest_without_provisioned_size_needs_fallback(tmp_path: Path) -> None:
    text = SCENARIO_OK.replace('workload = "web-diurnal"\nprovisioned_gib = 16', f'trace = "{TRACE}"')
    scenario = load_scenario(write(tmp_path / "s.toml", text))
    with pytest.raises(ConfigError, match=r"guest\[0\]\.trace_fallback_provisioned_gib: trace guest vm38"):
        build_setup(scenario)


def test_workload_only_keys_on_trace_guests_and_back(tmp_path: Path) -> None:
    text = SCENARIO_OK.replace('workload = "web-diurnal"', f'trace = "{TRACE}"')
    msg = scenario_error(tmp_path, text)
    assert "guest[0]: provisioned_gib: only for workload guests" in msg
    msg = scenario_error(tmp_path, SCENARIO_OK + "idle_fraction = 0.2\n")
    assert "guest[0]: idle_fraction: only for trace guests" in msg
    msg = scenario_error(tmp_path, SCENARIO_OK.replace('workload = "web-diurnal"\n', ""))
    assert "give exactly one of workload and trace" in msg


def test_consistency_checks(tmp_path: Path) -> None:
    msg = scenario_error(tmp_path, SCENARIO_OK + "floor_gib = 20\n")
    assert "floor (20 GiB) must be <= provisioned (16 GiB)" in msg
    msg = scenario_error(tmp_path, SCENARIO_OK.replace("provisioned_gib = 16", "provisioned_gib = 4"))
    assert "guest[0].provisioned_gib: workload 'web-diurnal' needs" in msg
    msg = scenario_error(tmp_path, SCENARIO_OK + 'swap = "none"\nswap_gib = 2\n')
    assert "swap_gib > 0 needs a swap kind" in msg
    msg = scenario_error(
        tmp_path, SCENARIO_OK.replace("capacity_gib = 8", "capacity_gib = 8\nreserve_gib = 9")
    )
    assert "host: reserve_gib (9.0) must be < capacity_gib (8.0)" in msg
    msg = scenario_error(tmp_path, SCENARIO_OK + "jitter = 0.7\n")
    assert "guest[0].jitter: must be <= 0.5" in msg
    msg = scenario_error(tmp_path, SCENARIO_OK + 'tier = "platinum"\n')
    assert "guest[0].tier: must be 'gold', 'silver' or 'bronze'" in msg
    text = SCENARIO_OK + '\n[[guest]]\nname = "a"\nworkload = "web-diurnal"\nprovisioned_gib = 16\n'
    assert "guest names must be unique (repeated: a)" in scenario_error(tmp_path, text)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ('{ kind = "diurnal", amplitude = 1.0 }', "size_pattern.amplitude: must be < 1"),
        ('{ kind = "sawtooth", low = 0, period_s = 60 }', "size_pattern.low: must be > 0"),
        ('{ kind = "ramp", per_hour = 0.1, max_factor = 0.5 }', "size_pattern.max_factor: must be >= 1"),
        ('{ kind = "phases", phases = [] }', "size_pattern.phases: List should have at least 1 item"),
        (
            '{ kind = "bursts", per_hour = 0, duration_s = 10, peak = 2 }',
            "size_pattern.per_hour: must be > 0",
        ),
        (
            '{ kind = "switching", slot = 4, slots = 4, mean_dwell_s = 10, background = 0.1 }',
            "size_pattern: slot 4 must be < slots (4)",
        ),
        ('{ kind = "wobble" }', "size_pattern: unknown kind 'wobble'"),
        ("{ amplitude = 0.1 }", "size_pattern: needs a kind"),
    ],
)
def test_pattern_parameters_validated(tmp_path: Path, pattern: str, expected: str) -> None:
    msg = workload_error(tmp_path, WORKLOAD_OK + f"size_pattern = {pattern}\n")
    assert f"population[0].{expected}" in msg


def test_shared_stochastic_state_must_agree(tmp_path: Path) -> None:
    text = WORKLOAD_OK + (
        'rate_pattern = { kind = "switching", slot = 0, slots = 2, mean_dwell_s = 10, background = 0.1 }\n'
        '\n[[population]]\nname = "b"\ntype = "anon"\nsize_mib = 1\naccess_interval_s = 1\n'
        'rate_pattern = { kind = "switching", slot = 1, slots = 3, mean_dwell_s = 10, background = 0.1 }\n'
    )
    assert "switching group 'apps': every population must use the same slots" in workload_error(
        tmp_path, text
    )


def test_never_interval() -> None:
    wl = load_workload("memory-leak")
    leaked = next(p for p in wl.population if p.name == "leaked")
    assert math.isinf(leaked.access_interval_s) and leaked.rate_per_s == 0.0


def test_config_error_is_a_wsrl_error(tmp_path: Path) -> None:
    with pytest.raises(WsrlError):
        load_workload(write(tmp_path / "w.toml", "name = 1"))


def test_scenario_from_dict_and_trace_start() -> None:
    data = tomllib.loads(SCENARIO_OK)
    scenario = scenario_from_dict(data)
    assert scenario.guest[0].provisioned_bytes == 16 * GIB
    with pytest.raises(ConfigError, match=r"<scenario>: guest\[0\]\.count: must be >= 1"):
        scenario_from_dict({**data, "guest": [{**data["guest"][0], "count": 0}]})
    assert parse_trace_start("6h") == ("offset", 6 * 3600.0)
    assert parse_trace_start(90) == ("offset", 90.0)
    how, ms = parse_trace_start("2013-07-15T06:00:00")
    assert how == "abs" and ms == 1373868000000.0
    with pytest.raises(ValueError, match="neither an ISO date"):
        parse_trace_start("yesterday")


def test_trace_paths_relative_to_scenario_then_repo() -> None:
    guest = {"name": "bb", "trace_guests": ["vm1"]}
    base = {"name": "t", "description": "d", "host": {"capacity_gib": 8}}
    from_repo = scenario_from_dict({**base, "guest": [{**guest, "trace": "envs/traces/bitbrains-sample"}]})
    from_file = scenario_from_dict(
        {**base, "guest": [{**guest, "trace": "../traces/bitbrains-sample"}]}, base_dir=ENVS / "scenarios"
    )
    assert from_repo.trace_dir_of(0) == from_file.trace_dir_of(0) == TRACE.resolve()
    assert from_file.path is None


def test_trace_start_offsets_use_the_shared_duration_forms() -> None:
    assert parse_trace_start("1h30m") == ("offset", 5400.0)
    assert parse_trace_start("90 m") == ("offset", 5400.0)
    assert parse_trace_start("1w") == ("offset", 7 * 86400.0)
    assert parse_trace_start(0) == ("offset", 0.0)
    base = build_setup(scenario_from_dict(trace_scenario()))
    shifted = build_setup(scenario_from_dict(trace_scenario(trace_start="1h30m")))
    assert shifted.start_time_ms == base.start_time_ms + 5400 * 1000


def trace_scenario(**extra: object) -> dict[str, object]:
    guest = {"name": "bb", "trace": str(TRACE), "trace_guests": ["vm1"], **extra}
    return {"name": "t", "description": "d", "host": {"capacity_gib": 8}, "guest": [guest]}


@pytest.mark.parametrize("value", [-5, -0.5, math.nan, math.inf, -math.inf])
def test_bad_numeric_trace_start_names_the_key(value: float) -> None:
    with pytest.raises(ConfigError) as info:
        scenario_from_dict(trace_scenario(trace_start=value))
    msg = str(info.value)
    assert "guest[0].trace_start: an offset must be a finite number of seconds >= 0" in msg


@pytest.mark.parametrize("value", ["-6h", "nan", "inf", "soon", "6x"])
def test_bad_trace_start_text_names_the_key(tmp_path: Path, value: str) -> None:
    text = SCENARIO_OK.replace(
        'workload = "web-diurnal"\nprovisioned_gib = 16', f'trace = "{TRACE}"\ntrace_start = "{value}"'
    )
    msg = scenario_error(tmp_path, text)
    assert "s.toml: guest[0].trace_start:" in msg and "neither an ISO date/time" in msg


def test_bad_trace_start_from_toml_numbers(tmp_path: Path) -> None:
    for value in ("nan", "-inf", "-60"):
        text = SCENARIO_OK.replace(
            'workload = "web-diurnal"\nprovisioned_gib = 16', f'trace = "{TRACE}"\ntrace_start = {value}'
        )
        assert "guest[0].trace_start: an offset must be" in scenario_error(tmp_path, text)


def test_a_directory_is_not_a_scenario_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_scenario(tmp_path)
    assert str(info.value) == f"{tmp_path}: is a directory, not a scenario file"
    with pytest.raises(ConfigError, match="is a directory, not a workload file"):
        load_workload(tmp_path)


def test_cli_scenario_directory_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wsrl.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["sim", "--scenario", str(tmp_path), "--duration", "60"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "is a directory, not a scenario file" in err and "no such file" not in err


def test_defaults_are_the_shared_si_defaults() -> None:
    setup = build_setup(scenario_from_dict(tomllib.loads(SCENARIO_OK)))
    g = setup.guests
    assert g.unevictable_bytes[0, 0] == defaults.UNEVICTABLE_BYTES
    assert g.swap_capacity_bytes[0, 0] == defaults.SWAP_FRACTION_OF_PROVISIONED * 16 * GIB
    assert g.anon_fault_latency_s[0, 0] == defaults.ANON_FAULT_LATENCY_S_BY_SWAP["zram"]
    assert g.file_fault_latency_s[0, 0] == defaults.FILE_FAULT_LATENCY_S
    assert g.inflate_bytes_per_s[0, 0] == defaults.INFLATE_BYTES_PER_S
    assert g.deflate_bytes_per_s[0, 0] == defaults.DEFLATE_BYTES_PER_S
    assert g.shares[0, 0] == defaults.SHARES
    assert TIER_NAMES[g.tier[0, 0]] == defaults.TIER
    assert g.oom_restart_s[0, 0] == defaults.OOM_RESTART_S
    assert setup.hosts.swap_fault_latency_s[0] == defaults.HOST_SWAP_FAULT_LATENCY_S
    for swap, latency_s in defaults.ANON_FAULT_LATENCY_S_BY_SWAP.items():
        data = tomllib.loads(SCENARIO_OK + f'swap = "{swap}"\n')
        entry = scenario_from_dict(data).guest[0]
        assert entry.anon_latency_s == latency_s


def test_actuator_and_tier_names_index_the_arrays() -> None:
    data = tomllib.loads(SCENARIO_OK)
    for actuator in ACTUATOR_NAMES:
        for tier in TIER_NAMES:
            guest = {**data["guest"][0], "actuator": actuator, "tier": tier}
            setup = build_setup(scenario_from_dict({**data, "guest": [guest]}))
            assert ACTUATOR_NAMES[setup.guests.actuator[0, 0]] == actuator
            assert TIER_NAMES[setup.guests.tier[0, 0]] == tier


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff", "not UTF-8"),
        (b"name = " + b"9" * 5000, "TOML value"),
        (b"x = " + b"[" * 3000, "nested too deeply"),
    ],
)
def test_unreadable_scenario_bytes_are_config_errors(tmp_path: Path, data: bytes, reason: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=f"bad.toml: line 1: .*{reason}"):
        load_scenario(path)


def test_access_order_reaches_the_model_and_a_wrong_one_names_the_field(tmp_path: Path) -> None:
    msg = workload_error(tmp_path, WORKLOAD_OK + 'access_order = "random"\n')
    assert "w.toml: population[0].access_order" in msg and "'independent'" in msg and "'sweep'" in msg
    setup = build_setup(ENVS / "scenarios" / "sweepers.toml")
    sweeping = setup.demand.pop_is_sweep  # type: ignore[attr-defined]
    # jvm-major-gc's old generation (3 guests) and analytics-scan's dataset (2 guests).
    assert int(sweeping.sum()) == 5
    assert Simulator(setup).model.pop_is_sweep is not None
    assert Simulator(build_setup(ENVS / "scenarios" / "datacenter.toml")).model.pop_is_sweep is None


def test_kernel_and_swappiness_per_scenario_and_guest(tmp_path: Path) -> None:
    text = SCENARIO_OK.replace(
        'description = "d"\n', 'description = "d"\nkernel = "classic"\nswappiness = 100\n'
    )
    text += (
        '\n[[guest]]\nname = "b"\nworkload = "web-diurnal"\nprovisioned_gib = 16\n'
        'kernel = "mglru"\nswappiness = 10\n'
    )
    guests = build_setup(load_scenario(write(tmp_path / "k.toml", text))).guests
    assert guests.kernel is not None and guests.swappiness is not None
    assert [KERNEL_NAMES[k] for k in guests.kernel[0]] == ["classic", "mglru"]
    assert guests.swappiness[0].tolist() == [100.0, 10.0]
    default = build_setup(load_scenario(write(tmp_path / "d.toml", SCENARIO_OK))).guests
    assert default.kernel is not None and KERNEL_NAMES[default.kernel[0, 0]] == defaults.KERNEL == "mglru"
    assert scenario_error(tmp_path, text.replace('kernel = "mglru"', 'kernel = "lru"')).startswith(
        f"{tmp_path / 's.toml'}: guest[1].kernel:"
    )
    assert "swappiness" in scenario_error(tmp_path, text.replace("swappiness = 100", "swappiness = 201"))
