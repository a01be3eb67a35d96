"""What access order does to a policy's ranking: the ``sweepers`` scenario, sweeps modelled or not.

``make accessorder`` (a few minutes on 2 cores) runs the reference policies and the shipped
learned policy on ``envs/scenarios/sweepers.toml`` twice with the same seeds: once with its
sweeping populations (major GCs, scheduled scans) modelled as sweeps, and once with the same
populations read as independent accesses (what the model assumed before; the ablation sets every
population's ``pop_is_sweep`` to False and changes nothing else). It prints the comparison and,
with ``--doc``, writes it between the markers of ``docs/simulator.md``. The gap is the error a
policy ranking made on the independent-reference model would carry into production for software
that sweeps its memory.

Usage: ``python benchmarks/bench_access_order.py [--duration 6h] [--seeds 3] [--doc docs/simulator.md]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from wsrl.eval.runner import evaluate_setup, policy_of  # noqa: E402
from wsrl.sim.build import build_setup  # noqa: E402
from wsrl.units import parse_duration_s  # noqa: E402

SCENARIO = REPO / "envs" / "scenarios" / "sweepers.toml"
POLICIES = ("static", "senpai", "far-memory", "vpa", "esx-idle-tax", "oracle", "trained/ppo-overcommit")
SWEEPING_GUESTS = ("jvm", "analytics")
BEGIN_MARKER = "<!-- access-order-table:begin -->"
END_MARKER = "<!-- access-order-table:end -->"


def run(policy: str, sweeps: bool, seed: int, duration_s: float) -> dict[str, Any]:
    """One run; returns host metrics and the sweeping guests' mean violation share."""
    setup = build_setup(SCENARIO)  # a fresh one: input_setup's are cached and shared
    if not sweeps:
        setup.demand.pop_is_sweep[...] = False  # type: ignore[attr-defined]
    result = evaluate_setup(
        policy_of(str(REPO / policy) if "/" in policy else policy),
        setup,
        f"sweepers ({'sweeps' if sweeps else 'independent'})",
        seed,
        duration_s,
    )
    sweepers = [g for g in result.per_guest if str(g.get("name", "")).split("-")[0] in SWEEPING_GUESTS]
    return {
        "saved": result.metrics["memory_saved_frac"],
        "violations": result.metrics["violation_frac"],
        "refaults": result.metrics["refaults_per_guest_hour"],
        "sweeper_violations": float(np.mean([g["violation_frac"] for g in sweepers]))
        if sweepers
        else float("nan"),
    }


def _cell(values: list[float], percent: bool = True) -> str:
    scale = 100.0 if percent else 1.0
    mean, lo, hi = (scale * float(f(values)) for f in (np.mean, np.min, np.max))
    if percent:
        return f"{mean:.1f} % [{lo:.1f}-{hi:.1f}]"
    return f"{mean:,.0f} [{lo:,.0f}-{hi:,.0f}]"


def table(rows: dict[tuple[str, bool], list[dict[str, Any]]], seeds: int, duration: str) -> str:
    """Markdown: per policy, each figure with sweeps modelled / read as independent."""
    lines = [
        f"`sweepers`, {duration}, seeds 0-{seeds - 1}: mean [min-max] over seeds; each cell is "
        "*sweeps modelled* / *read as independent accesses*.",
        "",
        "| policy | memory saved | violations (all guests) | violations (jvm + analytics) "
        "| refaults per guest-hour |",
        "|---|---|---|---|---|",
    ]
    for policy in POLICIES:
        on, off = rows[(policy, True)], rows[(policy, False)]
        cells = [
            f"{_cell([r[key] for r in on], percent)} / {_cell([r[key] for r in off], percent)}"
            for key, percent in (
                ("saved", True),
                ("violations", True),
                ("sweeper_violations", True),
                ("refaults", False),
            )
        ]
        lines.append(f"| {policy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", default="6h")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--doc", type=Path, default=None)
    args = parser.parse_args()
    duration_s = parse_duration_s(args.duration)
    rows: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    for policy in POLICIES:
        for sweeps in (True, False):
            rows[(policy, sweeps)] = [run(policy, sweeps, seed, duration_s) for seed in range(args.seeds)]
            print(f"{policy} sweeps={sweeps}: {rows[(policy, sweeps)]}", file=sys.stderr, flush=True)
    text = table(rows, args.seeds, args.duration)
    print(text)
    if args.doc is not None:
        doc = args.doc.read_text()
        if BEGIN_MARKER not in doc or END_MARKER not in doc:
            sys.exit(f"bench_access_order: {args.doc} has no {BEGIN_MARKER} ... {END_MARKER} markers")
        head, rest = doc.split(BEGIN_MARKER, 1)
        _, tail = rest.split(END_MARKER, 1)
        args.doc.write_text(f"{head}{BEGIN_MARKER}\n{text}\n{END_MARKER}{tail}")


if __name__ == "__main__":
    main()
