"""The ``wsrl`` command line: thin typer commands over the modules below it.

User errors (:class:`wsrl.errors.WsrlError`) exit with status 2 and one line on stderr, never a
traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import typer

from wsrl.cli import agent_cmd, eval_cmd, histogram_cmd, learn_cmd, run_cmd, sim_cmd, trace_cmd, train_cmd
from wsrl.cli.export_cmd import export_command
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
app.add_typer(sim_cmd.scenario_app, name="scenario")
app.command("sim")(sim_cmd.sim_command)
app.command("fit")(sim_cmd.fit_command)
app.command("eval")(eval_cmd.eval_command)
app.command("leaderboard")(eval_cmd.leaderboard_command)
app.command("train")(train_cmd.train_command)
app.command("tune")(train_cmd.tune_command)
app.command("bc")(train_cmd.bc_command)
app.command("distill")(train_cmd.distill_command)
trace_cmd.app.command("export-minari")(learn_cmd.export_minari_command)
app.command("export")(export_command)
app.command("run")(run_cmd.run_command)
app.command("guest-agent")(agent_cmd.guest_agent_command)

USER_ERROR_EXIT = 2


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``wsrl`` script."""
    try:
        exit_code = app(args=argv, standalone_mode=False)
    except WsrlError as exc:
        print(f"wsrl: error: {exc}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("wsrl: aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        # Usage errors (unknown command, missing option) arrive here in non-standalone mode. typer
        # ships its own copy of click, so recognise them by their interface, not their module.
        format_message = getattr(exc, "format_message", None)
        if callable(format_message) and hasattr(exc, "exit_code"):
            print(f"wsrl: error: {format_message()}", file=sys.stderr)
            sys.exit(USER_ERROR_EXIT)
        raise
    # In non-standalone mode click returns the code of a `typer.Exit` instead of raising it.
    if isinstance(exit_code, int) and exit_code != 0:
        sys.exit(exit_code)
