"""The run command itself: one host's runner from its config until a signal (or one tick).

Shared by ``wsrl run`` (:mod:`wsrl.cli.run_cmd`, typer) and ``python -m wsrl.runner``
(:mod:`wsrl.runner.__main__`, the standard library's argparse), so that both take the same options
(:data:`OPTION_HELP`) and behave the same. Exit status: 0 after a clean stop (SIGTERM or SIGINT:
every guest left as ``safety.on_exit`` says) or after ``--once``; 2 for a config or set-up error
(a :class:`~wsrl.errors.WsrlError`, one line naming the key); anything else is a crash, after
which the guests keep the last values that passed the rails (``docs/runner.md``).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from wsrl.errors import WsrlError
from wsrl.units import GIB

if TYPE_CHECKING:
    from wsrl.runner.config import RunnerConfig

OPTION_HELP: dict[str, str] = {
    "config": "The host's runner config (host.toml).",
    "dry_run": "Compute, audit and record every decision; apply nothing.",
    "shadow": "The fallback (or --shadow-actor) acts; the configured policy is computed and audited.",
    "shadow_actor": "Reference policy that acts in --shadow mode.",
    "once": "Run one tick, keep its targets and exit (no exit relax).",
}
"""Help of each option of the run command, by parameter name (both command lines use it)."""

COMMAND_HELP = "Control the memory of this host's guests with the configured policy, under the safety rails."
"""One-line help of the run command."""


def start_line(settings: RunnerConfig, mode: str) -> str:
    """The run's first log line: host, mode, policy and each guest's histogram source (and why)."""
    from wsrl.runner.backend_registry import histogram_source_of

    guests = []
    for g, guest in enumerate(settings.guest):
        source, why = histogram_source_of(settings, g)
        guests.append(f"{guest.name} ({guest.backend.kind}): histogram {source or 'none'} ({why})")
    return (
        f"wsrl run: {settings.label}: host {settings.host.name}, mode {mode}, "
        f"policy {settings.policy.name_or_path}; " + "; ".join(guests)
    )


def run_host(
    config: Path,
    *,
    dry_run: bool = False,
    shadow: bool = False,
    shadow_actor: str | None = None,
    once: bool = False,
    echo: Callable[[str], object] = print,
) -> None:
    """Run this host's guests under ``config`` until SIGTERM or SIGINT, or for one tick (``once``).

    Args:
        config: the host's runner config (``host.toml``).
        dry_run: compute, audit and record every decision; apply nothing.
        shadow: the fallback (or ``shadow_actor``) acts; the configured policy is only audited.
        shadow_actor: the reference policy that acts in shadow mode.
        once: run one tick, keep its targets (no exit relax) and print one line per guest.
        echo: where ``once`` prints its lines.

    Raises:
        WsrlError: conflicting options, or a config or set-up error (one line naming the key).

    """
    from wsrl.runner.config import load_runner_config
    from wsrl.runner.daemon import Mode, Runner

    if dry_run and shadow:
        raise WsrlError("options --dry-run and --shadow exclude each other")
    if shadow_actor is not None and not shadow:
        raise WsrlError("option --shadow-actor needs --shadow")
    settings = load_runner_config(config)
    mode: Mode = "dry-run" if dry_run else "shadow" if shadow else "normal"
    runner = Runner(settings, mode=mode, shadow_actor=shadow_actor)
    print(start_line(settings, mode), file=sys.stderr, flush=True)
    for warning in settings.warnings():  # also in the audit log's start record
        print(f"warning: {warning}", file=sys.stderr, flush=True)
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
                echo(f"{spec.name}: target {target / GIB:.3f} GiB ({result})")
        else:
            runner.run(stop)
    except BaseException:
        runner.close()  # a crash leaves the last values that passed the rails (docs/runner.md)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    runner.shutdown(relax=not once)
