"""``wsrl run``: the production runner on one host (``docs/runner.md``).

Also runnable as ``python -m wsrl.runner --config host.toml`` (same options, same exit codes).
Exit status: 0 after a clean stop (SIGTERM or SIGINT: every guest left as ``safety.on_exit``
says) or after ``--once``; 2 for a config or set-up error (one line naming the key); anything
else is a crash, after which the guests keep the last values that passed the rails.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from wsrl.errors import WsrlError
from wsrl.units import GIB


def run_command(
    config: Annotated[Path, typer.Option("--config", help="The host's runner config (host.toml).")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Compute, audit and record every decision; apply nothing.")
    ] = False,
    shadow: Annotated[
        bool,
        typer.Option(
            "--shadow",
            help="The fallback (or --shadow-actor) acts; the configured policy is computed and audited.",
        ),
    ] = False,
    shadow_actor: Annotated[
        str | None, typer.Option("--shadow-actor", help="Reference policy that acts in --shadow mode.")
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Run one tick, keep its targets and exit (no exit relax).")
    ] = False,
) -> None:
    """Control the memory of this host's guests with the configured policy, under the safety rails."""
    from wsrl.runner.config import load_runner_config
    from wsrl.runner.daemon import Runner

    if dry_run and shadow:
        raise WsrlError("options --dry-run and --shadow exclude each other")
    if shadow_actor is not None and not shadow:
        raise WsrlError("option --shadow-actor needs --shadow")
    settings = load_runner_config(config)
    mode = "dry-run" if dry_run else "shadow" if shadow else "normal"
    runner = Runner(settings, mode=mode, shadow_actor=shadow_actor)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()
        runner.request_stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        runner.start()
        if once:
            outcome = runner.tick()
            rows = zip(runner.specs, outcome.target_bytes, outcome.outcomes, strict=True)
            for spec, target, result in rows:
                typer.echo(f"{spec.name}: target {target / GIB:.3f} GiB ({result})")
        else:
            runner.run(stop)
    except BaseException:
        runner.close()  # a crash leaves the last values that passed the rails (docs/runner.md)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    runner.shutdown(relax=not once)
