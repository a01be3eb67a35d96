"""The leaderboard: every reference policy on the standard suite, as a markdown table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from wsrl.eval.runner import RunResult, summarize
from wsrl.inputs.ref import InputRef, ScenarioInput, TraceInput

STANDARD_SUITE: tuple[InputRef, ...] = (
    ScenarioInput("datacenter"),
    ScenarioInput("laptop"),
    ScenarioInput("dense"),
    TraceInput(Path("envs/traces/bitbrains-sample")),
)
"""Every bundled scenario kind plus the bundled slice of real Bitbrains history."""
TABLE_METRICS: tuple[str, ...] = (
    "memory_saved_frac",
    "violation_frac",
    "oom_events",
    "stall_frac_p99",
    "jain_fairness",
    "churn",
)


RAILS_TEXT = {
    "production": "under the production runner's default rails (shrink at most 0.5 % of provisioned per "
    "second, the circuit breaker with the `static` fallback, OOM memory, host reserve: what a policy "
    "meets on a host; [architecture.md](architecture.md))",
    "none": "as published: no rail but the floor/provisioned clamp",
}


def leaderboard_markdown(
    results: Sequence[RunResult], *, command: str, duration: str, seeds: int, rails: str = "production"
) -> str:
    """A markdown page: one table per input and one overall, policies sorted by memory saved."""
    inputs = list(dict.fromkeys(r.input for r in results))
    lines = [
        "# Leaderboard",
        "",
        f"Every reference policy on the standard suite: {len(inputs)} inputs, {seeds} seed(s), "
        f"{duration} of simulated time per run, {RAILS_TEXT[rails]}. "
        "Metric definitions: [metrics.md](metrics.md).",
        f"Generated {datetime.now(UTC).strftime('%Y-%m-%d')} by `{command}`.",
        "",
    ]
    for title, subset in [("All inputs (mean)", list(results))] + [
        (f"`{ref}`", [r for r in results if r.input == ref]) for ref in inputs
    ]:
        summary = summarize(subset)
        ranked = sorted(summary.items(), key=lambda item: -item[1]["memory_saved_frac"])
        lines += [f"## {title}", "", "| policy | " + " | ".join(TABLE_METRICS) + " |"]
        lines.append("|---|" + "---:|" * len(TABLE_METRICS))
        for policy, values in ranked:
            lines.append(f"| {policy} | " + " | ".join(_cell(m, values[m]) for m in TABLE_METRICS) + " |")
        lines.append("")
    return "\n".join(lines)


def _cell(metric: str, value: float) -> str:
    if metric.endswith("_frac") or metric.startswith("stall_frac"):
        return f"{100 * value:.1f} %"
    if metric == "oom_events":
        return f"{value:.1f}"
    return f"{value:.3f}"
