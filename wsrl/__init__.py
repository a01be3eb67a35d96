"""wsrl: learn, evaluate and run memory-overcommit policies from working-set histograms.

Importing the package imports nothing heavy: :class:`~wsrl.histogram.Histogram` and its helpers are
loaded on first use (so that the guest agent, ``python -m wsrl.agent``, runs in a guest that has
nothing but python3), and gymnasium only where it is installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wsrl.histogram import ALL_NODES, DEFAULT_EDGES_MS, Histogram, merge_nodes

__all__ = ["ALL_NODES", "DEFAULT_EDGES_MS", "ENV_IDS", "Histogram", "__version__", "merge_nodes"]

__version__ = "0.1.0"

ENV_IDS: dict[str, str] = {
    "wsrl/Overcommit-v0": "wsrl.rl.envs:OvercommitEnv",
    "wsrl/TraceReplay-v0": "wsrl.rl.envs:TraceReplayEnv",
    "wsrl/LiveHost-v0": "wsrl.rl.live_env:LiveHostEnv",
}
"""Gymnasium ids registered on ``import wsrl`` (when gymnasium is installed), with their entry points."""
LIVE_ENV_IDS: frozenset[str] = frozenset({"wsrl/LiveHost-v0"})
"""Envs over live guests: registered as nondeterministic (real time cannot be replayed from a seed)."""

_FROM_HISTOGRAM: frozenset[str] = frozenset({"ALL_NODES", "DEFAULT_EDGES_MS", "Histogram", "merge_nodes"})


def __getattr__(name: str) -> Any:
    """The histogram names of :data:`__all__`, imported from :mod:`wsrl.histogram` on first use."""
    if name in _FROM_HISTOGRAM:
        value = getattr(importlib.import_module("wsrl.histogram"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'wsrl' has no attribute {name!r}")


def _register_envs() -> None:
    """Register :data:`ENV_IDS` with gymnasium; without gymnasium (a runner-only install) do nothing."""
    try:
        import gymnasium
    except ImportError:
        return
    for env_id, entry_point in ENV_IDS.items():
        if env_id not in gymnasium.registry:
            # A live host is real time: the same seed cannot replay the same readings.
            live = env_id in LIVE_ENV_IDS
            gymnasium.register(id=env_id, entry_point=entry_point, nondeterministic=live)


_register_envs()
