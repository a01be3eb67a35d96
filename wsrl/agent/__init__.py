"""Code that runs inside a guest: the agent that streams working-set histograms to the host.

See :mod:`wsrl.agent.guest_agent`; run it as ``wsrl guest-agent`` or ``python -m wsrl.agent``.
"""
