"""``wsrl run``: the production runner on one host (``docs/runner.md``).

A typer command over :func:`wsrl.runner.command.run_host`, which ``python -m wsrl.runner
--config host.toml`` runs too (same options, same exit codes). Exit status: 0 after a clean stop
(SIGTERM or SIGINT: every guest left as ``safety.on_exit`` says) or after ``--once``; 2 for a
config or set-up error (one line naming the key); anything else is a crash, after which the guests
keep the last values that passed the rails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wsrl.runner.command import OPTION_HELP, run_host


def run_command(
    config: Annotated[Path, typer.Option("--config", help=OPTION_HELP["config"])],
    dry_run: Annotated[bool, typer.Option("--dry-run", help=OPTION_HELP["dry_run"])] = False,
    shadow: Annotated[bool, typer.Option("--shadow", help=OPTION_HELP["shadow"])] = False,
    shadow_actor: Annotated[
        str | None, typer.Option("--shadow-actor", help=OPTION_HELP["shadow_actor"])
    ] = None,
    once: Annotated[bool, typer.Option("--once", help=OPTION_HELP["once"])] = False,
) -> None:
    """Control the memory of this host's guests with the configured policy, under the safety rails."""
    run_host(config, dry_run=dry_run, shadow=shadow, shadow_actor=shadow_actor, once=once, echo=typer.echo)
