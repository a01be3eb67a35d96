"""``python -m wsrl.agent``: the guest agent without the rest of the ``wsrl`` command line.

Same options as ``wsrl guest-agent``; useful in a small guest image, since it imports only what the
agent needs.
"""

from __future__ import annotations

import sys

import typer

from wsrl.agent.cli import guest_agent_command
from wsrl.errors import WsrlError


def main(argv: list[str] | None = None) -> None:
    """Run the agent; a user error is one line on stderr and exit status 2."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(guest_agent_command)
    try:
        app(args=argv, standalone_mode=True)
    except WsrlError as exc:
        print(f"wsrl guest-agent: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
