"""The evaluator: runs, grids on every executor, trace inputs, the CLI and the HTML report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wsrl.cli import app, main
from wsrl.eval.metrics import METRIC_NAMES
from wsrl.eval.runner import RunSpec, grid, run_grid, run_one, summarize
from wsrl.inputs.ref import ScenarioInput, TraceInput
from wsrl.pipeline.control import ControlSpec

runner = CliRunner()
SAMPLE_TRACE = TraceInput(Path("envs/traces/bitbrains-sample"))


def test_static_policy_saves_nothing_and_breaks_nothing():
    # The default datacenter holds every guest at its provisioned size: static is no overcommit.
    result = run_one(RunSpec(policy="static", input=ScenarioInput("datacenter"), seed=0, duration_s=1800))
    assert result.metrics["memory_saved_frac"] == pytest.approx(0.0, abs=1e-9)
    assert result.metrics["violation_frac"] == 0 and result.metrics["oom_events"] == 0
    assert set(result.metrics) == set(METRIC_NAMES)
    assert len(result.per_guest) == 16 and len(result.series["guests"]) == 8


def test_executors_give_identical_metrics():
    specs = grid(["static", "wmo"], [ScenarioInput("laptop")], seeds=2, duration_s=900)
    serial = run_grid(specs, executor="serial")
    process = run_grid(specs, executor="process", workers=2)
    ray = run_grid(specs, executor="ray")
    for a, b, c in zip(serial, process, ray, strict=True):
        assert (a.policy, a.input, a.seed) == (b.policy, b.input, b.seed) == (c.policy, c.input, c.seed)
        assert a.metrics == b.metrics == c.metrics
        assert a.per_guest == b.per_guest == c.per_guest
    assert set(summarize(serial)) == {"static", "wmo"}


def test_trace_input_replays_real_history():
    trace = SAMPLE_TRACE
    published = run_one(RunSpec("wmo", trace, seed=0, duration_s=3600, control=ControlSpec.unguarded()))
    assert len(published.per_guest) == 8
    assert published.metrics["memory_saved_frac"] > 0.2  # Bitbrains VMs are mostly idle
    # Under the production rails (the default) wmo's squeeze trips breakers: it saves less, not nothing.
    railed = run_one(RunSpec("wmo", trace, seed=0, duration_s=3600))
    assert 0 < railed.metrics["memory_saved_frac"] < published.metrics["memory_saved_frac"]


def test_cli_eval_json_and_report(tmp_path):
    report = tmp_path / "report"
    result = runner.invoke(
        app,
        [
            "eval",
            "--policy",
            "static",
            "--policy",
            "wmo",
            "--scenario",
            "laptop",
            "--duration",
            "20m",
            "--seeds",
            "2",
            "--json",
            "--report",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert len(document["runs"]) == 4
    run = document["runs"][0]
    assert {"policy", "input", "seed", "metrics"} <= set(run) and set(run["metrics"]) == set(METRIC_NAMES)
    assert set(document["summary"]) == {"static", "wmo"}
    page = (report / "index.html").read_text()
    assert "savings-vs-violations.png" in page and "wmo" in page
    pngs = sorted(report.glob("*.png"))
    assert len(pngs) == 3
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_cli_eval_rails_production_by_default_or_none():
    argv = ["eval", "--policy", "wmo", "--scenario", "laptop", "--duration", "30m", "--json"]
    railed = runner.invoke(app, argv)
    published = runner.invoke(app, [*argv, "--rails", "none"])
    assert railed.exit_code == 0 and published.exit_code == 0, railed.output + published.output
    railed_doc, published_doc = json.loads(railed.stdout), json.loads(published.stdout)
    assert railed_doc["rails"] == "production" and railed_doc["control"]["max_shrink_frac_per_s"] == 0.005
    assert published_doc["rails"] == "none" and published_doc["control"]["max_shrink_frac_per_s"] is None
    # wmo shrinks to its floor at once as published; the production rail spreads that over minutes.
    saved = {
        name: doc["summary"]["wmo"]["memory_saved_frac"]
        for name, doc in (("railed", railed_doc), ("published", published_doc))
    }
    assert saved["railed"] < saved["published"]


def test_cli_eval_table():
    result = runner.invoke(app, ["eval", "--policy", "static", "--scenario", "laptop", "--duration", "10m"])
    assert result.exit_code == 0, result.output
    assert "static" in result.stdout and "memory saved frac" in result.stdout


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["eval", "--policy", "nope", "--scenario", "laptop"], "nope"),
        (["eval", "--policy", "static"], "--scenario or --traces"),
        (["eval", "--policy", "static", "--scenario", "no-such"], "unknown scenario"),
        (["eval", "--policy", "static", "--scenario", "laptop", "--executor", "gpu"], "--executor"),
        (["eval", "--policy", "static", "--scenario", "laptop", "--address", "x:1"], "--address"),
        (["eval", "--policy", "static", "--traces", "/no/such/dir"], "--traces"),
        (["eval", "--policy", "static", "--scenario", "laptop", "--duration", "soon"], "--duration"),
        (["eval", "--policy", "static", "--scenario", "laptop", "--rails", "some"], "production, none"),
    ],
)
def test_cli_eval_bad_arguments_are_one_line(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and err.count("\n") == 1, err


def test_eval_on_the_shared_bitbrains_history(tmp_path):
    """Import VMs of the shared real history never bundled here, then evaluate on them."""
    from test_bitbrains_import import shared_bitbrains

    from wsrl.trace.bitbrains import import_bitbrains
    from wsrl.trace.reader import TraceReader

    trace = tmp_path / "bitbrains"
    vms = [3, 5, 7, 11, 13, 17]
    import_bitbrains(shared_bitbrains(), trace, vms=vms, start_s=1_376_000_000, end_s=1_376_100_000)
    specs = grid(["static", "vpa", "oracle"], [TraceInput(trace)], seeds=1, duration_s=3 * 3600)
    results = {r.policy: r for r in run_grid(specs)}
    recorded = set(TraceReader(trace).read_table(["guest"]).column("guest").to_pylist())
    assert 4 <= len(recorded) <= len(vms)  # a VM without samples in the window is not replayed
    assert all(len(r.per_guest) == len(recorded) for r in results.values())
    assert results["static"].metrics["memory_saved_frac"] == pytest.approx(0.0, abs=1e-9)
    oracle = results["oracle"].metrics
    assert oracle["violation_frac"] == 0 and oracle["oom_events"] == 0
    assert oracle["memory_saved_frac"] > results["vpa"].metrics["memory_saved_frac"] > 0


def test_leaderboard_writes_a_table_per_input(tmp_path):
    from wsrl.eval.leaderboard import STANDARD_SUITE
    from wsrl.policies import REFERENCE_POLICIES

    out = tmp_path / "leaderboard.md"
    argv = ["leaderboard", "--duration", "5m", "--executor", "process", "--out", str(out)]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.count("| policy | memory_saved_frac") == len(STANDARD_SUITE) + 1
    for policy in REFERENCE_POLICIES:
        assert text.count(f"| {policy} |") == len(STANDARD_SUITE) + 1
    assert "under the production runner's default rails" in text and "--rails production" in text
