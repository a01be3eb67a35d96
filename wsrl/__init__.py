"""wsrl: learn, evaluate and run memory-overcommit policies from working-set histograms."""

from wsrl.histogram import ALL_NODES, DEFAULT_EDGES_MS, Histogram, merge_nodes

__all__ = ["ALL_NODES", "DEFAULT_EDGES_MS", "Histogram", "__version__", "merge_nodes"]

__version__ = "0.1.0"
