"""``wsrl trace``: import, inspect and validate traces in the trace store."""

from __future__ import annotations

import typer

app = typer.Typer(help="Traces: a host's guests over time.", no_args_is_help=True)
