"""The simulator end to end: scenarios through Simulator, run_simulation, `wsrl sim` and `wsrl scenario`."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from wsrl.cli import app
from wsrl.histogram import DEFAULT_EDGES_MS
from wsrl.sim.build import build_setup
from wsrl.sim.config import list_scenarios, load_scenario
from wsrl.sim.run import run_simulation
from wsrl.sim.simulator import Simulator
from wsrl.trace.reader import TraceReader
from wsrl.trace.validate import validate_trace

runner = CliRunner()
DAY_S = 86_400


@pytest.fixture(scope="module")
def datacenter_day():
    """The default datacenter scenario, one simulated day, every guest at its provisioned size."""
    setup = build_setup(load_scenario("datacenter"))
    return run_simulation(setup, DAY_S, seed=0)


def test_datacenter_is_calibrated_to_the_published_cold_fraction(datacenter_day):
    # Google's far-memory fleet (ASPLOS'19): 32 % of memory idle for over 120 s. The default
    # datacenter scenario must land in 25-40 % with no overcommit ...
    summary = datacenter_day
    assert 0.25 <= summary.cold_frac_120s <= 0.40
    # ... and its cold fraction must fall as the threshold grows.
    by_threshold = [summary.cold_frac_by_threshold_s[str(t)] for t in (60, 120, 600, 3600)]
    assert all(a > b for a, b in itertools.pairwise(by_threshold))
    # At provisioned size nothing is evicted: no refaults, no OOM, no host swap.
    assert summary.refaults_per_s == 0 and summary.oom_events == 0 and summary.host_swap_steps == 0
    assert summary.guests == 16 and summary.steps == DAY_S // 10


def test_same_seed_same_result_and_another_seed_differs():
    def run(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sim = Simulator(build_setup(load_scenario("datacenter")))
        sim.reset(seed)
        targets = sim.setup.guests.provisioned_bytes * 0.6
        for _ in range(200):
            sim.step(targets)
        return sim.histograms(), sim.model.refault_anon_total.copy(), sim.model.visible_bytes.copy()

    first, again, other = run(3), run(3), run(4)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_reset_restarts_the_same_run():
    sim = Simulator(build_setup(load_scenario("laptop")))
    sim.reset(1)
    for _ in range(30):
        sim.step(sim.setup.guests.provisioned_bytes * 0.5)
    before = sim.model.refault_file_total.copy(), sim.histograms()
    sim.reset(1)
    for _ in range(30):
        sim.step(sim.setup.guests.provisioned_bytes * 0.5)
    np.testing.assert_array_equal(before[0], sim.model.refault_file_total)
    np.testing.assert_array_equal(before[1], sim.histograms())


def test_trace_driven_guests_answer_the_counterfactual():
    """Replaying real Bitbrains demand: smaller sizes cost refaults, never fewer."""
    setup = build_setup(load_scenario("bitbrains-replay"))
    sim = Simulator(setup)
    provisioned = setup.guests.provisioned_bytes
    totals = []
    for fraction in (1.0, 0.5, 0.25):
        sim.reset(0)
        for _ in range(6 * 360):  # six hours of 10 s steps
            sim.step(provisioned * fraction)
        totals.append(sim.model.refault_anon_total + sim.model.refault_file_total)
    mask = setup.guests.mask
    assert np.all(totals[0][mask] == 0)
    assert np.all(totals[1][mask] <= totals[2][mask] + 1e-6)
    assert totals[2][mask].sum() > 0
    # The simulated clock starts where the replayed window starts.
    assert sim.time_ms > 1_300_000_000_000


def test_run_writes_a_valid_trace_in_the_store_format(tmp_path):
    setup = build_setup(load_scenario("laptop"))
    out = tmp_path / "trace"
    summary = run_simulation(setup, 3600, seed=2, out=out)
    report = validate_trace(out)
    assert report.ok, report.problems
    reader = TraceReader(out)
    table = reader.read_table()
    assert table.num_rows == summary.trace_rows == summary.guests * summary.steps == 3 * 360
    assert reader.manifest["source"] == "sim"
    first = table.slice(0, 1).to_pylist()[0]
    assert first["hist_edges_ms"] == list(DEFAULT_EDGES_MS)
    # Histograms cover the resident pages; usage adds the unevictable part on top.
    hist_total = sum(first["hist_anon_bytes"]) + sum(first["hist_file_bytes"])
    assert 0 < hist_total <= first["usage_bytes"] <= first["visible_bytes"] <= first["provisioned_bytes"]


def test_parse_duration():
    from wsrl.units import parse_duration_s

    assert parse_duration_s("6h") == 21_600
    assert parse_duration_s("1h30m") == parse_duration_s("90 m") == 5_400
    assert parse_duration_s("90") == parse_duration_s(90) == 90
    assert parse_duration_s("2d") == 172_800 and parse_duration_s("1w") == 604_800
    for bad in ("", "-5", "6x", "h", "5h3", "1.5.5h", "inf", "nan", 0, -1.0, True):
        with pytest.raises(ValueError, match="duration"):
            parse_duration_s(bad)


def test_cli_sim_json_summary_and_trace(tmp_path):
    out = tmp_path / "sim"
    result = runner.invoke(
        app, ["sim", "--scenario", "laptop", "--duration", "30m", "--out", str(out), "--seed", "5", "--json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    for key in ("guests", "steps", "cold_frac_120s", "refaults_per_s", "oom_events"):
        assert key in document
    assert document["guests"] == 3 and document["steps"] == 180 and document["seed"] == 5
    assert 0 < document["cold_frac_120s"] < 1
    assert validate_trace(out).ok


def test_cli_sim_table_and_plot(tmp_path):
    out, png = tmp_path / "sim", tmp_path / "host.png"
    result = runner.invoke(
        app, ["sim", "--scenario", "laptop", "--duration", "20m", "--out", str(out), "--plot", str(png)]
    )
    assert result.exit_code == 0, result.output
    assert "desktop" in result.stdout and "cold" in result.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_cli_sim_user_errors_are_one_line(tmp_path, capsys):
    from wsrl.cli import main

    cases = [
        (["sim", "--scenario", "no-such-scenario"], "unknown scenario name"),
        (["sim", "--scenario", "laptop", "--duration", "soon"], "--duration"),
        (["sim", "--scenario", "laptop", "--plot", str(tmp_path / "x.png")], "--plot needs --out"),
    ]
    for argv, expected in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2, argv
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err and err.count("\n") == 1, err


def test_cli_sim_bad_scenario_file_names_the_key(tmp_path, capsys):
    from wsrl.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text(
        'name = "bad"\ndescription = "x"\n[host]\ncapacity_gib = 16\n'
        '[[guest]]\nname = "a"\nworkload = "web-diurnal"\nprovisioned_gib = -1\n'
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["sim", "--scenario", str(bad)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "provisioned_gib" in err and "Traceback" not in err


def test_cli_scenario_list_and_show():
    result = runner.invoke(app, ["scenario", "list", "--json"])
    assert result.exit_code == 0, result.output
    names = {s["name"] for s in json.loads(result.stdout)["scenarios"]}
    assert {"datacenter", "laptop", "dense", "bitbrains-replay"} <= names
    assert names == {name for name, _ in list_scenarios()}
    shown = runner.invoke(app, ["scenario", "show", "datacenter"])
    assert shown.exit_code == 0, shown.output
    assert "web-diurnal" in shown.stdout and "288" in shown.stdout
    as_json = json.loads(runner.invoke(app, ["scenario", "show", "laptop", "--json"]).stdout)
    assert as_json["name"] == "laptop" and len(as_json["guest"]) >= 2


def test_cli_trace_plot_works_on_real_history(tmp_path):
    png = tmp_path / "bb.png"
    result = runner.invoke(app, ["trace", "plot", "envs/traces/bitbrains-sample", "--out", str(png)])
    assert result.exit_code == 0, result.output
    assert png.stat().st_size > 20_000


def test_trace_rows_carry_events_and_counters(tmp_path):
    """OOMs and balloon stalls a policy causes show up in the recorded trace, as on a real host."""
    from wsrl.sim.record import step_table
    from wsrl.trace.writer import TraceWriter

    setup = build_setup(load_scenario("laptop"))
    sim = Simulator(setup)
    sim.reset(0)
    tiny = np.full(sim.shape, 64.0 * 2**20)  # far below what any guest needs
    out = tmp_path / "squeezed"
    with TraceWriter(out, source="test") as writer:
        for _ in range(30):
            sim.step(tiny)
            writer.append_table(step_table(sim, action_target_bytes=tiny, action_policy="squeeze"))
    table = TraceReader(out).read_table()
    rows = table.to_pylist()
    events = {event for row in rows for event in row["events"]}
    assert "balloon_stall" in events  # balloons stop where the guest cannot give memory back
    assert all(row["action_policy"] == "squeeze" and row["action_target_bytes"] == 64 * 2**20 for row in rows)
    # Counters are cumulative and never go down.
    for guest in {row["guest"] for row in rows}:
        series = [row for row in rows if row["guest"] == guest]
        for key in ("refault_anon_total", "refault_file_total", "oom_kills_total", "psi_some_total_us"):
            values = [row[key] for row in series]
            assert values == sorted(values), (guest, key)
    assert max(row["refault_anon_total"] + row["refault_file_total"] for row in rows) > 0
    assert validate_trace(out).ok


def test_memcg_guests_oom_under_a_tight_limit_and_the_trace_says_so(tmp_path):
    from wsrl.sim.record import step_table

    setup = build_setup(load_scenario("dense"))  # memcg guests: limits act at once
    sim = Simulator(setup)
    sim.reset(0)
    sim.step(np.full(sim.shape, 32.0 * 2**20))
    table = step_table(sim)
    rows = table.to_pylist()
    assert sum(row["oom_kills_total"] for row in rows) == int(sim.model.oom_kills_total[sim.mask].sum()) > 0
    assert all(("oom" in row["events"]) == (row["oom_kills_total"] > 0) for row in rows)


def test_simulator_rejects_bad_targets_and_edges():
    from wsrl.errors import HistogramError

    setup = build_setup(load_scenario("laptop"))
    sim = Simulator(setup)
    sim.reset(0)
    bad = setup.guests.provisioned_bytes.copy()
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        sim.step(bad)
    with pytest.raises(ValueError, match="shape"):
        sim.step(np.zeros((2, 2)))
    with pytest.raises(HistogramError, match="increasing"):
        Simulator(setup, edges_ms=(10_000, 1_000))


def test_trace_manifest_records_the_run_seed(tmp_path):
    setup = build_setup(load_scenario("laptop"))
    run_simulation(setup, 600, seed=7, out=tmp_path / "t")
    manifest = TraceReader(tmp_path / "t").manifest
    assert manifest["meta"]["seed"] == 7 and manifest["meta"]["scenario"] == "laptop"


def test_cli_plot_errors_are_one_line(tmp_path, capsys):
    from wsrl.cli import main

    trace = tmp_path / "t"
    run_simulation(build_setup(load_scenario("laptop")), 300, out=trace)
    for argv, expected in (
        (["trace", "plot", str(trace), "--out", str(tmp_path / "a.png"), "--guests", ","], "no guests"),
        (["trace", "plot", str(trace), "--out", "/proc/no/such.png"], "cannot write"),
        (["sim", "--scenario", "laptop", "--out", str(tmp_path / "u"), "--plot", "/proc/x.png"], "--plot"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2, argv
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err and err.count("\n") == 1, err
    assert not (tmp_path / "u").exists()  # nothing was run or written before the check failed


def test_deflate_on_oom_is_a_scenario_key():
    from wsrl.sim.config import scenario_from_dict

    def guests(flag: bool | None) -> np.ndarray:
        entry = {"name": "vm", "workload": "web-diurnal", "provisioned_gib": 16}
        if flag is not None:
            entry["deflate_on_oom"] = flag
        data = {"name": "s", "description": "d", "host": {"capacity_gib": 64}, "guest": [entry]}
        return build_setup(scenario_from_dict(data)).guests.deflate_on_oom

    assert not guests(None).any()  # off by default, as in QEMU
    assert guests(True).all()
