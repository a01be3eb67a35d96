"""``python -m wsrl.agent``: the guest agent without the rest of the ``wsrl`` command line.

Same options as ``wsrl guest-agent``; made for a small guest image: it imports only the agent's
own modules and the standard library (no numpy, no typer), so nothing but python3 is needed.
"""

from __future__ import annotations

from wsrl.agent.cli import main

if __name__ == "__main__":
    main()
