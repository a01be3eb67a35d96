"""Evaluation: run policies on scenarios and recorded traces, and judge them on fixed metrics.

:mod:`~wsrl.eval.metrics` defines the metrics (memory saved, SLO violations, OOMs, stall, fairness,
churn; see ``docs/metrics.md``) and records them from host snapshots step by step;
:mod:`~wsrl.eval.runner` runs grids of (policy x input x seed), :mod:`~wsrl.eval.report` draws the
HTML report and :mod:`~wsrl.eval.leaderboard` writes the leaderboard page.
"""
