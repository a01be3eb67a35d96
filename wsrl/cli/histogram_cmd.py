"""``wsrl histogram``: parse working-set histograms from real sources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from wsrl.formats import FORMAT_NAMES, FormatOptions, parse_file
from wsrl.histogram import Histogram

app = typer.Typer(help="Working-set histograms from real sources.", no_args_is_help=True)


def _format_bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


def _format_age(max_age_ms: int | None) -> str:
    if max_age_ms is None:
        return "+inf"
    if max_age_ms < 1000:
        return f"{max_age_ms} ms"
    if max_age_ms % 1000 == 0:
        return f"{max_age_ms // 1000} s"
    return f"{max_age_ms / 1000:.3f} s"


def _print_tables(histograms: list[Histogram]) -> None:
    console = Console()
    for histogram in histograms:
        table = Table(title=f"{histogram.guest}  node {histogram.node}", title_justify="left")
        table.add_column("idle <=", justify="right")
        for type_name in histogram.types:
            table.add_column(type_name, justify="right")
        table.add_column("idle longer", justify="right")
        for column, upper in enumerate(histogram.max_age_ms):
            cold = 0 if upper is None else histogram.cold_bytes(upper)
            cells = [_format_bytes(int(histogram.bytes[row, column])) for row in range(len(histogram.types))]
            table.add_row(_format_age(upper), *cells, _format_bytes(cold))
        totals = [_format_bytes(v) for v in histogram.totals_by_type().values()]
        table.add_row("total", *totals, "", style="bold")
        console.print(table)


@app.command("parse")
def parse_command(
    file: Annotated[Path, typer.Argument(help="A captured histogram (text, JSON or binary).")],
    format_name: Annotated[
        str, typer.Option("--format", "-f", help=f"Source format: {', '.join(FORMAT_NAMES)}.")
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list, one object per (guest, node).")
    ] = False,
    guest: Annotated[
        str | None, typer.Option(help="Guest name where the source has none (default: file stem).")
    ] = None,
    node: Annotated[int | None, typer.Option(help="NUMA node where the source does not say.")] = None,
    page_size: Annotated[int, typer.Option("--page-size", help="Bytes per page (lru_gen).")] = 4096,
    crosvm_order: Annotated[
        str, typer.Option("--crosvm-order", help="Meaning of crosvm 'bytes' [A, B]: file,anon or anon,file.")
    ] = "file,anon",
    virtio_layout: Annotated[str, typer.Option("--virtio-layout", help="auto, rfc2023 or v4.")] = "auto",
    damon_aggr_us: Annotated[
        int | None,
        typer.Option("--damon-aggr-us", help="DAMON aggregation interval (us) if the capture lacks it."),
    ] = None,
) -> None:
    """Parse FILE into canonical working-set histograms and print them."""
    from pydantic import ValidationError

    from wsrl.errors import WsrlError

    try:
        options = FormatOptions(
            guest=guest,
            node=node,
            page_size_bytes=page_size,
            crosvm_bytes_order=crosvm_order,
            virtio_layout=virtio_layout,
            damon_aggr_us=damon_aggr_us,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise WsrlError(f"option {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    histograms = parse_file(format_name, file, options)
    if as_json:
        typer.echo(json.dumps([h.to_json_dict() for h in histograms], indent=2))
    else:
        _print_tables(histograms)
