"""``wsrl guest-agent``: run inside a guest and stream working-set histograms to the host.

The command is defined in :mod:`wsrl.agent.cli` (so ``python -m wsrl.agent`` can run it without
importing the rest of the command line); see :mod:`wsrl.agent.guest_agent` for what it does.
"""

from __future__ import annotations

from wsrl.agent.cli import guest_agent_command

__all__ = ["guest_agent_command"]
