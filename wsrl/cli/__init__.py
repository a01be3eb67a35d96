"""The ``wsrl`` command line: thin typer commands over the modules below it.

User errors (:class:`wsrl.errors.WsrlError`) exit with status 2 and one line on stderr, never a
traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import typer

from wsrl.cli import histogram_cmd, trace_cmd
from wsrl.errors import WsrlError

app = typer.Typer(
    name="wsrl",
    help="Learn, evaluate and run memory-overcommit policies from working-set histograms.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(histogram_cmd.app, name="histogram")
app.add_typer(trace_cmd.app, name="trace")

USER_ERROR_EXIT = 2


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``wsrl`` script."""
    try:
        app(args=argv, standalone_mode=False)
    except WsrlError as exc:
        print(f"wsrl: error: {exc}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("wsrl: aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            print(f"wsrl: error: {exc.format_message()}", file=sys.stderr)
            sys.exit(USER_ERROR_EXIT)
        raise
