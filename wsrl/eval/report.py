"""An evaluation report people can read: one HTML page with the summary, per-run tables and plots.

Plots (PNG, next to the page):

* ``savings-vs-violations.png``: every policy on one chart, memory saved against the share of
  guest-minutes that broke their SLO (each run a small dot, the policy's mean a large one);
* ``fairness.png``: Jain's fairness index over per-guest slowdown, and OOM kills, per policy;
* ``sizes-<input>.png``: per guest of the input's first host, the demand and the size every
  policy gave it over time (seed 0).
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from wsrl.errors import WsrlError
from wsrl.eval.metrics import METRIC_NAMES
from wsrl.eval.runner import RunResult
from wsrl.units import GIB


def _pyplot() -> ModuleType:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise WsrlError("reports need matplotlib: pip install 'wsrl[plot]'") from None
    return plt


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "input"


def write_report(
    results: Sequence[RunResult], summary: dict[str, dict[str, float]], out_dir: str | Path
) -> Path:
    """Write ``index.html`` and its PNGs into ``out_dir``; return the page's path.

    Raises:
        WsrlError: the folder cannot be written, or there are no results.

    """
    if not results:
        raise WsrlError("no runs to report")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        images = [
            _savings_vs_violations(results, summary, out / "savings-vs-violations.png"),
            _fairness(summary, out / "fairness.png"),
        ]
        for input_ref in dict.fromkeys(r.input for r in results):
            images.append(_sizes(results, input_ref, out / f"sizes-{_slug(input_ref)}.png"))
        page = out / "index.html"
        page.write_text(_page(results, summary, images))
    except OSError as exc:
        raise WsrlError(f"{out}: cannot write the report: {exc.strerror or exc}") from None
    return page


def _savings_vs_violations(
    results: Sequence[RunResult], summary: dict[str, dict[str, float]], path: Path
) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    colors = plt.get_cmap("tab10")
    for index, policy in enumerate(summary):
        runs = [r for r in results if r.policy == policy]
        color = colors(index % 10)
        ax.scatter(
            [100 * r.metrics["violation_frac"] for r in runs],
            [100 * r.metrics["memory_saved_frac"] for r in runs],
            s=12,
            color=color,
            alpha=0.4,
        )
        ax.scatter(
            100 * summary[policy]["violation_frac"],
            100 * summary[policy]["memory_saved_frac"],
            s=90,
            color=color,
            edgecolor="black",
            label=policy,
        )
    ax.set_xlabel("guest-minutes breaking the SLO (%)")
    ax.set_ylabel("memory saved (%)")
    ax.set_title("Savings against SLO violations (up and left is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fairness(summary: dict[str, dict[str, float]], path: Path) -> Path:
    plt = _pyplot()
    policies = list(summary)
    fig, (ax_jain, ax_oom) = plt.subplots(1, 2, figsize=(10, 4))
    ax_jain.bar(policies, [summary[p]["jain_fairness"] for p in policies], color="#1b9e77")
    ax_jain.set_ylim(0, 1.05)
    ax_jain.set_title("Jain's fairness over per-guest slowdown (1 = equal)")
    ax_oom.bar(policies, [summary[p]["oom_events"] for p in policies], color="#d95f02")
    ax_oom.set_title("OOM kills per run")
    for ax in (ax_jain, ax_oom):
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _sizes(results: Sequence[RunResult], input_ref: str, path: Path) -> Path:
    plt = _pyplot()
    runs = [r for r in results if r.input == input_ref and r.seed == 0 and r.series.get("guests")]
    guests = runs[0].series["guests"] if runs else []
    count = max(1, len(guests))
    fig, axes = plt.subplots(count, 1, figsize=(10, 1.9 * count + 0.8), squeeze=False, sharex=True)
    colors = plt.get_cmap("tab10")
    for row in range(len(guests)):
        ax = axes[row][0]
        first = runs[0].series
        demand = [point[row] / GIB for point in first["demand_bytes"]]
        ax.plot(first["time_h"], demand, color="black", linewidth=1.2, label="demand")
        ax.axhline(first["provisioned_bytes"][row] / GIB, color="grey", linestyle=":", label="provisioned")
        for index, run in enumerate(runs):
            sizes = [point[row] / GIB for point in run.series["visible_bytes"]]
            ax.plot(run.series["time_h"], sizes, color=colors(index % 10), linewidth=0.9, label=run.policy)
        ax.set_ylabel(f"{guests[row]}\nGiB", fontsize=7)
        ax.tick_params(labelsize=7)
        if row == 0:
            ax.legend(fontsize=6, ncol=6, loc="upper right")
    axes[-1][0].set_xlabel("hours")
    fig.suptitle(f"{input_ref}: demand and the size each policy gave (seed 0)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _page(results: Sequence[RunResult], summary: dict[str, dict[str, float]], images: list[Path]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(name)}</th>" for name in METRIC_NAMES)
    summary_rows = "".join(
        f"<tr><td>{esc(policy)}</td>" + "".join(f"<td>{values[m]:.4g}</td>" for m in METRIC_NAMES) + "</tr>"
        for policy, values in summary.items()
    )
    run_rows = "".join(
        f"<tr><td>{esc(r.policy)}</td><td>{esc(r.input)}</td><td>{r.seed}</td>"
        + "".join(f"<td>{r.metrics[m]:.4g}</td>" for m in METRIC_NAMES)
        + "</tr>"
        for r in results
    )
    pictures = "".join(f'<p><img src="{esc(p.name)}" alt="{esc(p.stem)}"></p>' for p in images)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>wsrl evaluation</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right;font-size:13px}}
td:first-child{{text-align:left}}
img{{max-width:100%}}</style></head><body>
<h1>wsrl evaluation</h1>
<p>{len(results)} runs. Metric definitions: docs/metrics.md in the wsrl repository.</p>
<h2>Summary (mean over inputs and seeds)</h2>
<table><tr><th>policy</th>{head}</tr>{summary_rows}</table>
<h2>Plots</h2>{pictures}
<h2>Every run</h2>
<table><tr><th>policy</th><th>input</th><th>seed</th>{head}</tr>{run_rows}</table>
</body></html>
"""
