"""``wsrl eval``: run policies on scenarios or recorded traces and compare them on fixed metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from wsrl.errors import WsrlError


def _checked_duration_s(duration: str, executor: str) -> float:
    """The ``--duration`` in seconds, after checking it and ``--executor`` (one-line errors)."""
    from wsrl.eval.runner import EXECUTORS
    from wsrl.units import parse_duration_s

    if executor not in EXECUTORS:
        raise WsrlError(f"option --executor: {executor!r} is not one of {', '.join(EXECUTORS)}")
    try:
        return parse_duration_s(duration)
    except ValueError as exc:
        raise WsrlError(f"option --duration: {exc}") from None


def eval_command(
    policy: Annotated[
        list[str], typer.Option("--policy", help="Policy name; repeat to compare policies side by side.")
    ],
    scenario: Annotated[
        list[str] | None, typer.Option("--scenario", help="Scenario name or TOML path; repeatable.")
    ] = None,
    traces: Annotated[
        list[Path] | None, typer.Option("--traces", help="Trace directory to replay; repeatable.")
    ] = None,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Seeds per (policy, input).")] = 1,
    duration: Annotated[str, typer.Option("--duration", help="Simulated time per run: 6h, 1d.")] = "6h",
    executor: Annotated[
        str, typer.Option("--executor", help="serial, process (local pool) or ray.")
    ] = "serial",
    address: Annotated[
        str | None, typer.Option("--address", help="Ray cluster address (with --executor ray).")
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write an HTML report with plots into this folder.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print runs and summary as JSON.")] = False,
    rails: Annotated[
        str,
        typer.Option(
            "--rails",
            help="production: the runner's default rails (shrink per second, circuit breaker with the "
            "static fallback, OOM memory, host reserve), what a policy meets on a host; "
            "none: each policy as published (only the floor/provisioned clamp).",
        ),
    ] = "production",
) -> None:
    """Evaluate policies on identical inputs: memory saved, SLO violations, OOMs, stall, fairness, churn."""
    from wsrl.eval.metrics import METRIC_NAMES
    from wsrl.eval.runner import check_specs, grid, rails_spec, run_grid, summarize
    from wsrl.inputs.ref import InputRef, TraceInput, parse_input

    duration_s = _checked_duration_s(duration, executor)
    if address is not None and executor != "ray":
        raise WsrlError("option --address needs --executor ray")
    inputs: list[InputRef] = [parse_input(text) for text in scenario or []]
    inputs += [TraceInput(path) for path in traces or []]
    if not inputs:
        raise WsrlError("give at least one --scenario or --traces input")
    for path in traces or []:
        if not path.is_dir():
            raise WsrlError(f"option --traces: {path} is not a directory")
    control = rails_spec(rails)
    specs = grid(list(dict.fromkeys(policy)), inputs, seeds, duration_s, control)
    check_specs(specs)  # before the progress bar, so that a bad input prints one clean line
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("evaluating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("runs"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=as_json,
    )
    task = progress.add_task("runs", total=len(specs))
    progress.start()

    try:
        results = run_grid(
            specs,
            executor=executor,  # type: ignore[arg-type]  # typer gives a str; run_grid refuses others
            address=address,
            on_done=lambda done, total: progress.update(task, completed=done, total=total),
        )
    finally:
        progress.stop()
    summary = summarize(results)
    if report is not None:
        from wsrl.eval.report import write_report

        page = write_report(results, summary, report)
        if not as_json:
            Console(stderr=True).print(f"report: {page}")
    if as_json:
        document = {
            "rails": rails,
            "control": control.describe(),
            "runs": [r.to_json_dict() for r in results],
            "summary": summary,
        }
        typer.echo(json.dumps(document, indent=2))
        return
    table = Table(
        title=f"{len(results)} runs: {len(inputs)} input(s) x {seeds} seed(s), {duration}, rails: {rails}"
    )
    table.add_column("policy", no_wrap=True)
    for name in METRIC_NAMES:
        table.add_column(name.replace("_", " "), justify="right")
    for name, metrics in summary.items():
        table.add_row(name, *(f"{metrics[m]:.3g}" for m in METRIC_NAMES))
    # Wide enough for every column also when the output is a file or a pipe.
    out = Console()
    if not out.is_terminal:
        out = Console(width=200)
    out.print(table)


def leaderboard_command(
    duration: Annotated[str, typer.Option("--duration", help="Simulated time per run.")] = "6h",
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Seeds per (policy, input).")] = 1,
    executor: Annotated[str, typer.Option("--executor", help="serial, process or ray.")] = "process",
    out: Annotated[Path, typer.Option("--out", help="Markdown file to write.")] = Path("docs/leaderboard.md"),
    rails: Annotated[
        str, typer.Option("--rails", help="production (the runner's default rails) or none (as published).")
    ] = "production",
) -> None:
    """Run every reference policy on the standard suite and write the table to docs/leaderboard.md."""
    from wsrl.eval.leaderboard import STANDARD_SUITE, leaderboard_markdown
    from wsrl.eval.runner import check_specs, grid, rails_spec, run_grid
    from wsrl.policies import REFERENCE_POLICIES

    duration_s = _checked_duration_s(duration, executor)
    specs = grid(list(REFERENCE_POLICIES), list(STANDARD_SUITE), seeds, duration_s, rails_spec(rails))
    check_specs(specs)
    with Progress(
        TextColumn("leaderboard"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task("runs", total=len(specs))
        results = run_grid(
            specs,
            executor=executor,  # type: ignore[arg-type]  # typer gives a str; run_grid refuses others
            on_done=lambda done, total: progress.update(task, completed=done, total=total),
        )
    command = f"wsrl leaderboard --duration {duration} --seeds {seeds} --rails {rails}"
    text = leaderboard_markdown(results, command=command, duration=duration, seeds=seeds, rails=rails)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    except OSError as exc:
        raise WsrlError(f"option --out: cannot write {out}: {exc.strerror or exc}") from None
    Console().print(text)
