"""``wsrl trace``: import, inspect and validate traces in the trace store."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from wsrl.errors import WsrlError

app = typer.Typer(help="Traces: a host's guests over time.", no_args_is_help=True)
import_app = typer.Typer(help="Import real history into the trace store.", no_args_is_help=True)
app.add_typer(import_app, name="import")


def _parse_day(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise WsrlError(f"option {option}: {value!r} is not a date (YYYY-MM-DD[THH:MM[:SS]])") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def _parse_vms(value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise WsrlError(f"option --vms: {value!r} is not a comma-separated list of VM ids") from None


@import_app.command("bitbrains")
def import_bitbrains_command(
    src: Annotated[Path, typer.Argument(help="The Bitbrains memory.parquet file.")],
    out: Annotated[Path, typer.Option("--out", help="Trace directory to create (new or empty).")],
    vms: Annotated[str | None, typer.Option("--vms", help="Only these VM ids, comma-separated.")] = None,
    start: Annotated[
        str | None, typer.Option("--start", help="First day to import (UTC), YYYY-MM-DD.")
    ] = None,
    days: Annotated[float | None, typer.Option("--days", help="Import this many days from --start.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the import report as JSON.")] = False,
) -> None:
    """Import the Bitbrains GWA-T-12 memory history, cleaning and flagging its known defects."""
    from wsrl.trace.bitbrains import import_bitbrains

    start_s = _parse_day(start, "--start")
    if days is not None and days <= 0:
        raise WsrlError("option --days: must be > 0")
    if days is not None and start_s is None:
        raise WsrlError("option --days needs --start")
    end_s = None if days is None or start_s is None else start_s + int(days * 86_400)
    console = Console(stderr=True)
    with Progress(
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=as_json,
    ) as progress:
        task = progress.add_task("rows", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        report = import_bitbrains(
            src, out, vms=_parse_vms(vms), start_s=start_s, end_s=end_s, progress=advance
        )
    if as_json:
        typer.echo(json.dumps(report.to_json_dict(), indent=2))
        return
    out_console = Console()
    out_console.print(
        f"imported {report.rows_written:,} samples of {report.guests} guests into {out} "
        f"({report.rows_read:,} rows read, {report.duplicate_rows_merged:,} duplicate rows merged)"
    )
    table = Table("flag", "rows", "guests", title="data-quality flags (see docs/trace-format.md)")
    for name, rows in report.rows_flagged.items():
        guests = report.guests_flagged.get(name)
        table.add_row(
            name,
            f"{rows:,}",
            "" if guests is None else ", ".join(guests[:6]) + (" ..." if len(guests) > 6 else ""),
        )
    out_console.print(table)


@app.command("info")
def info_command(
    directory: Annotated[Path, typer.Argument(help="A trace directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Summarise a trace: hosts, guests, samples, time range, which columns hold data."""
    from wsrl.trace import TraceReader

    summary = TraceReader(directory).summary()
    if as_json:
        typer.echo(json.dumps(summary.to_json_dict(), indent=2))
        return
    data = summary.to_json_dict()
    table = Table(show_header=False, title=str(directory), title_justify="left")
    for key in ("source", "schema_version", "hosts", "guests", "samples", "start", "end", "parts"):
        value = data[key]
        table.add_row(key, f"{value:,}" if isinstance(value, int) and key != "schema_version" else str(value))
    table.add_row("columns with data", ", ".join(summary.columns_with_data))
    Console().print(table)


@app.command("validate")
def validate_command(directory: Annotated[Path, typer.Argument(help="A trace directory.")]) -> None:
    """Check a trace against its schema. Exit 0 if valid, 1 if it has problems (listed)."""
    from wsrl.trace.validate import validate_trace

    report = validate_trace(directory)
    console = Console()
    for warning in report.warnings:
        console.print(f"[yellow]warning[/]: {warning}", highlight=False, soft_wrap=True)
    for problem in report.problems:
        console.print(f"[red]problem[/]: {problem}", highlight=False, soft_wrap=True)
    verdict = "valid" if report.ok else f"INVALID ({len(report.problems)} problem(s))"
    console.print(
        f"{directory}: {verdict}: {report.parts_checked} part(s), {report.rows_checked:,} rows checked",
        highlight=False,
        soft_wrap=True,
    )
    if not report.ok:
        raise typer.Exit(1)


@app.command("plot")
def plot_command(
    trace: Annotated[Path, typer.Argument(help="Trace directory.")],
    out: Annotated[Path, typer.Option("--out", help="PNG file to write.")],
    host: Annotated[str | None, typer.Option("--host", help="Host to draw (default: the first).")] = None,
    guests: Annotated[
        str | None, typer.Option("--guests", help="Guests to draw, comma-separated (default: first 16).")
    ] = None,
    threshold_s: Annotated[
        float, typer.Option("--threshold", min=0.001, help="Idle age in seconds that makes memory cold.")
    ] = 120.0,
) -> None:
    """Draw each guest's memory over time split by idle age, and its mean histogram, into a PNG."""
    from wsrl.trace.plot import plot_trace

    chosen = [g.strip() for g in guests.split(",") if g.strip()] if guests else None
    path = plot_trace(trace, out, host=host, guests=chosen, threshold_s=threshold_s)
    typer.echo(f"wrote {path}")


@app.command("split")
def split_command(
    source: Annotated[Path, typer.Argument(help="The trace directory to split (left untouched).")],
    train: Annotated[Path, typer.Option("--train", help="New or empty directory for the train trace.")],
    holdout: Annotated[Path, typer.Option("--holdout", help="New or empty directory for the holdout trace.")],
    holdout_frac: Annotated[
        float, typer.Option("--holdout-frac", help="Share of the guest hash range held out, in (0, 1).")
    ] = 0.2,
    cutoff_frac: Annotated[
        float, typer.Option("--cutoff-frac", help="Cutoff position in the trace's time range, in (0, 1).")
    ] = 0.7,
    salt: Annotated[str, typer.Option("--salt", help="Salt of the guest hash.")] = "wsrl-split-v1",
    as_json: Annotated[bool, typer.Option("--json", help="Print split.json instead of a summary.")] = False,
) -> None:
    """Split a trace into VM-disjoint, time-forward train and holdout traces (docs/trace-format.md)."""
    from wsrl.trace.split import split_trace

    summary = split_trace(
        source, train, holdout, holdout_frac=holdout_frac, cutoff_frac=cutoff_frac, salt=salt
    )
    if as_json:
        typer.echo(json.dumps(summary.to_json_dict(), indent=2))
        return
    guests = len(summary.train.guests) + len(summary.holdout.guests)
    typer.echo(
        f"split {source} ({guests} guests, {summary.source_samples:,} samples) at {summary.cutoff_utc} "
        f"(holdout_frac {summary.holdout_frac}, cutoff_frac {summary.cutoff_frac})"
    )
    for side in (summary.train, summary.holdout):
        period = "before" if side.name == "train" else "at or after"
        unused = len(side.guests_without_samples)
        typer.echo(
            f"  {side.name:<7} {side.guests_with_samples} guests, {side.samples:,} samples "
            f"{period} the cutoff -> {side.directory}"
            + (f" ({unused} more assigned guest(s) have no samples there)" if unused else "")
        )
    typer.echo(
        f"  dropped {summary.dropped_train_guest_samples:,} train-guest samples after the cutoff and "
        f"{summary.dropped_holdout_guest_samples:,} holdout-guest samples before it "
        f"({summary.elapsed_s:.1f} s)"
    )
