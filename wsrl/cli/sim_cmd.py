"""``wsrl sim`` and ``wsrl scenario``: run scenarios in the simulator and look at the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from wsrl.errors import WsrlError
from wsrl.units import GIB

POOR_FIT_FRAC = 0.2
"""``wsrl fit`` warns about a guest whose fit misplaces more than this share of its bytes."""

scenario_app = typer.Typer(help="The scenario library under envs/scenarios.", no_args_is_help=True)


def sim_command(
    scenario: Annotated[str, typer.Option("--scenario", help="Scenario name (envs/scenarios) or TOML path.")],
    duration: Annotated[str, typer.Option("--duration", help="Simulated time: 90s, 15m, 6h, 2d.")] = "6h",
    out: Annotated[
        Path | None, typer.Option("--out", help="Trace directory to write (the trace store format).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the workloads' randomness.")] = 0,
    hosts: Annotated[
        int | None, typer.Option("--hosts", min=1, help="Replicate the scenario's host this many times.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Also draw the first host into this PNG (with --out).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run a scenario with every guest at its provisioned size and record what the host would report."""
    from wsrl.sim.build import build_setup
    from wsrl.sim.config import load_scenario
    from wsrl.sim.run import run_simulation
    from wsrl.units import parse_duration_s

    try:
        duration_s = parse_duration_s(duration)
    except ValueError as exc:
        raise WsrlError(f"option --duration: {exc}") from None
    if plot is not None and out is None:
        raise WsrlError("option --plot needs --out: the plot is drawn from the recorded trace")
    if plot is not None:
        _check_writable(plot, "--plot")
    config = load_scenario(scenario)
    setup = build_setup(config, hosts=hosts)
    # The bar starts with the first step, so that errors found before it (a bad --out) print
    # one clean line.
    progress = Progress(
        TextColumn(f"simulating {config.name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=as_json,
    )
    task = progress.add_task("steps", total=None)

    def advance(done: int, total: int) -> None:
        if done == 1:
            progress.start()
        progress.update(task, completed=done, total=total)

    try:
        summary = run_simulation(setup, duration_s, seed=seed, out=out, on_step=advance)
    finally:
        progress.stop()
    if plot is not None and out is not None:
        from wsrl.trace.plot import plot_trace

        plot_trace(out, plot, title=f"{config.name}: every guest at its provisioned size, seed {seed}")
    if as_json:
        document = summary.to_json_dict()
        typer.echo(json.dumps(document, indent=2))
        return
    out_console = Console()
    title = f"{config.name}: {summary.guests} guests, {summary.steps} steps of {summary.step_s:g} s"
    table = Table(title=title)
    headers = ("host", "guest", "provisioned GiB", "mean resident GiB", "cold > 120 s", "refaults/s", "OOMs")
    for column in headers:
        table.add_column(column, justify="left" if column in ("host", "guest") else "right")
    for row in summary.per_guest:
        table.add_row(
            str(row["host"]),
            str(row["guest"]),
            f"{float(row['provisioned_bytes']) / GIB:.2f}",
            f"{float(row['mean_resident_bytes']) / GIB:.2f}",
            f"{float(row['cold_frac_120s']):.0%}",
            f"{float(row['refaults_per_s']):.1f}",
            str(row["oom_kills"]),
        )
    out_console.print(table)
    cold = ", ".join(f"{t} s: {v:.1%}" for t, v in summary.cold_frac_by_threshold_s.items())
    out_console.print(f"cold fraction of resident memory (time average) at {cold}")
    out_console.print(
        f"refaults {summary.refaults_per_s:.1f}/s, host swap faults {summary.host_faults_per_s:.1f}/s, "
        f"OOM events {summary.oom_events}, "
        f"balloon stall steps {summary.balloon_stall_steps}, host swap steps {summary.host_swap_steps}"
    )
    if summary.trace:
        out_console.print(f"trace: {summary.trace} ({summary.trace_rows} rows)")
    if plot is not None:
        out_console.print(f"plot: {plot}")


def _check_writable(path: Path, option: str) -> None:
    """Fail before a long run when an output file cannot be written (by trying to)."""
    existed = path.exists()
    try:
        with path.open("ab"):
            pass
    except OSError as exc:
        raise WsrlError(f"option {option}: cannot write {path}: {exc.strerror or exc}") from None
    if not existed:
        path.unlink(missing_ok=True)


@scenario_app.command("list")
def scenario_list_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List the bundled scenarios and workloads."""
    from wsrl.sim.config import list_scenarios, list_workloads

    scenarios = list_scenarios()
    workloads = list_workloads()
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "scenarios": [{"name": n, "description": d} for n, d in scenarios],
                    "workloads": [{"name": n, "description": d} for n, d in workloads],
                },
                indent=2,
            )
        )
        return
    console = Console()
    for title, items in (("scenarios", scenarios), ("workloads", workloads)):
        table = Table(title=title)
        table.add_column("name")
        table.add_column("description")
        for name, description in items:
            table.add_row(name, description)
        console.print(table)


@scenario_app.command("show")
def scenario_show_command(
    name: Annotated[str, typer.Argument(help="Scenario name (envs/scenarios) or TOML path.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the validated scenario as JSON.")] = False,
) -> None:
    """Show a scenario: its host and every guest, with its workload's populations."""
    from wsrl.sim.config import load_scenario

    config = load_scenario(name)
    if as_json:
        document = config.model_dump(mode="json")
        document["path"] = str(config.path) if config.path else None
        typer.echo(json.dumps(document, indent=2))
        return
    console = Console()
    host = config.host
    console.print(f"[bold]{config.name}[/bold]: {config.description}")
    console.print(
        f"file {config.path}; step {config.step_s:g} s; {host.count} host(s) of {host.capacity_gib:g} GiB "
        f"(reserve {host.reserve_gib:g} GiB, host swap fault {host.swap_latency_us:g} us)"
    )
    table = Table(title="guests per host")
    for column in ("name", "count", "source", "provisioned GiB", "tier", "shares", "actuator", "swap"):
        table.add_column(column)
    for index, entry in enumerate(config.guest):
        source = f"workload {entry.workload}" if entry.workload else f"trace {entry.trace}"
        provisioned = entry.provisioned_bytes
        table.add_row(
            entry.name,
            str(config.guest_count(index)),
            source,
            "from trace" if provisioned is None else f"{provisioned / GIB:g}",
            entry.tier,
            f"{entry.shares:g}",
            entry.actuator,
            entry.swap,
        )
    console.print(table)
    for index, entry in enumerate(config.guest):
        if entry.workload is None:
            continue
        workload = config.workload_of(index)
        pops = Table(title=f"{entry.name}: workload {workload.name} — {workload.description}")
        for column in ("population", "type", "MiB", "access interval s", "size pattern", "rate pattern"):
            pops.add_column(column)
        for population in workload.population:
            interval_s = population.access_interval_s
            pops.add_row(
                population.name,
                population.type,
                f"{population.size_bytes * entry.scale / 2**20:g}",
                "never" if interval_s == float("inf") else f"{interval_s:g}",
                _pattern_text(population.size_pattern),
                _pattern_text(population.rate_pattern),
            )
        console.print(pops)


def _pattern_text(pattern: object) -> str:
    if pattern is None:
        return "-"
    fields = pattern.model_dump() if hasattr(pattern, "model_dump") else {}
    kind = fields.pop("kind", type(pattern).__name__)
    return f"{kind}(" + ", ".join(f"{k}={v}" for k, v in fields.items()) + ")"


def fit_command(
    trace: Annotated[Path, typer.Argument(help="A trace directory with working-set histograms.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the fitted workloads and scenario.toml.")],
    capacity_gib: Annotated[
        float | None,
        typer.Option(
            "--capacity-gib", min=0.001, help="The scenario host's memory (default: room for every guest)."
        ),
    ] = None,
    skip_s: Annotated[
        float, typer.Option("--skip-s", min=0.0, help="Leave out each guest's first seconds (a warm-up).")
    ] = 0.0,
    horizon_s: Annotated[
        float | None,
        typer.Option(
            "--horizon-s",
            min=0.001,
            help="Ages are dated only up to this (a recording through the `referenced` source made "
            "before trace schema 2, which does not say so itself: 120).",
        ),
    ] = None,
    kernel: Annotated[
        str,
        typer.Option(
            "--kernel",
            help="The recorded guests' page reclaim: classic for memcgs on a host kernel without MGLRU "
            "(this project's cgroup guests on such a host), mglru for guests that run it.",
        ),
    ] = "mglru",
    as_json: Annotated[bool, typer.Option("--json", help="Print the fitted populations as JSON.")] = False,
) -> None:
    """Fit page populations to each recorded guest's histograms, for counterfactual replay.

    Writes one workload file per guest that has histograms and a scenario holding them
    (``OUT/scenario.toml``), ready for ``wsrl eval --scenario OUT/scenario.toml``. How the fit
    works and what it cannot tell apart: wsrl/sim/fit.py.
    """
    from wsrl.sim.arrays import KERNEL_NAMES
    from wsrl.sim.config import load_scenario
    from wsrl.sim.fit import fit_trace, write_fitted

    if kernel not in KERNEL_NAMES:
        raise WsrlError(f"option --kernel: {kernel!r} is not one of {', '.join(KERNEL_NAMES)}")
    if out.exists() and not out.is_dir():
        raise WsrlError(f"option --out: {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise WsrlError(f"option --out: {out} is not empty; fit into a new folder")
    guests = fit_trace(trace, skip_s=skip_s, horizon_ms=None if horizon_s is None else horizon_s * 1000.0)
    scenario = write_fitted(guests, out, trace=str(trace), capacity_gib=capacity_gib, kernel=kernel)
    load_scenario(str(scenario))  # what was written must load: a fit is only useful if it replays
    if as_json:
        rows = [
            {
                "host": g.host,
                "guest": g.guest,
                "samples": g.samples,
                "residual_frac": g.residual_frac,
                "populations": [
                    {
                        "name": p.name,
                        "type": p.type,
                        "size_bytes": p.size_bytes,
                        "access_interval_s": None
                        if p.access_interval_s == float("inf")
                        else p.access_interval_s,
                        "access_order": p.access_order,
                    }
                    for p in g.populations
                ],
            }
            for g in guests
        ]
        print(json.dumps({"scenario": str(scenario), "guests": rows}, indent=2))
        return
    table = Table(title=f"fitted {len(guests)} guests of {trace}")
    for column in ("guest", "samples", "populations", "GiB", "misplaced"):
        table.add_column(column)
    for g in guests:
        table.add_row(
            f"{g.host}/{g.guest}",
            str(g.samples),
            str(len(g.populations)),
            f"{sum(p.size_bytes for p in g.populations) / GIB:.2f}",
            f"{g.residual_frac:.1%}",
        )
    Console().print(table)
    for g in guests:
        if g.residual_frac > POOR_FIT_FRAC:
            print(
                f"warning: {g.host}/{g.guest}: the fit misplaces {g.residual_frac:.0%} of its bytes: "
                "no steady populations make this histogram (a coarse source's oldest bin re-binned onto "
                "finer edges, or demand that changed over the trace; docs/simulator.md, 'Guests fitted')",
                file=sys.stderr,
            )
    print(f"scenario: {scenario}  (wsrl eval --scenario {scenario} --policy ...)")
