"""``python -m wsrl.runner --config host.toml [...]``: ``wsrl run`` without the rest of the CLI.

The standard library's argparse over :func:`wsrl.runner.command.run_host`, the function ``wsrl run``
calls too: the same options, the same exit codes, and nothing of :mod:`wsrl.cli` (nor typer)
imported. A usage or config error is one line ``wsrl: error: ...`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from wsrl.errors import WsrlError
from wsrl.runner.command import COMMAND_HELP, OPTION_HELP, run_host

USER_ERROR_EXIT = 2


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one ``wsrl: error:`` line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"wsrl: error: {message}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m wsrl.runner`` (the options of ``wsrl run``)."""
    cli = _Parser(prog="wsrl run", description=COMMAND_HELP)
    cli.add_argument("--config", type=Path, required=True, help=OPTION_HELP["config"])
    cli.add_argument("--dry-run", action="store_true", help=OPTION_HELP["dry_run"])
    cli.add_argument("--shadow", action="store_true", help=OPTION_HELP["shadow"])
    cli.add_argument("--shadow-actor", default=None, help=OPTION_HELP["shadow_actor"])
    cli.add_argument("--once", action="store_true", help=OPTION_HELP["once"])
    return cli


def main(argv: list[str] | None = None) -> None:
    """Run the runner command; user errors are one line on stderr and exit status 2."""
    args = parser().parse_args(argv)
    try:
        run_host(
            args.config,
            dry_run=args.dry_run,
            shadow=args.shadow,
            shadow_actor=args.shadow_actor,
            once=args.once,
        )
    except WsrlError as exc:
        print(f"wsrl: error: {exc}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)


if __name__ == "__main__":
    main()
