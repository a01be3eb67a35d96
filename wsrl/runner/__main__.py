"""``python -m wsrl.runner --config host.toml [...]``: ``wsrl run`` without the rest of the CLI."""

from __future__ import annotations

import sys

import typer

from wsrl.cli.run_cmd import run_command
from wsrl.errors import WsrlError

USER_ERROR_EXIT = 2

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command()(run_command)


def main(argv: list[str] | None = None) -> None:
    """Run the runner command; user errors are one line on stderr and exit status 2."""
    try:
        exit_code = app(args=argv, standalone_mode=False, prog_name="wsrl run")
    except WsrlError as exc:
        print(f"wsrl: error: {exc}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        format_message = getattr(exc, "format_message", None)
        if callable(format_message) and hasattr(exc, "exit_code"):
            print(f"wsrl: error: {format_message()}", file=sys.stderr)
            sys.exit(USER_ERROR_EXIT)
        raise
    if isinstance(exit_code, int) and exit_code != 0:
        sys.exit(exit_code)


if __name__ == "__main__":
    main()
