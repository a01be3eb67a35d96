"""Model cards: evaluate a shipped policy against every reference policy on held-out inputs.

``python -m wsrl.rl.card trained/NAME`` runs the exported policy and all reference policies on the
held-out inputs (the standard scenarios, never trained on, and the held-out Bitbrains VMs, later in
time than anything trained on) with ``wsrl eval``'s grid runner, checks the acceptance rule below
per input, and writes ``trained/NAME/README.md`` (the model card) and ``trained/NAME/card.json``.

The acceptance rule (issue 5's "beats the heuristics"), per held-out input:

* the **best reference policy** is the real (non-oracle) reference policy that saves the most memory
  among those that keep the SLO about as well as the references can there: zero OOMs, and
  violations within :data:`SLO_TOLERANCE` (5 points) of the fewest any zero-OOM reference reaches on
  that input. On a host with room (``datacenter``) that fewest is 0, so "best" means the biggest
  saver that keeps the SLO in at least 95 % of guest-minutes; on an overcommitted host where every
  policy must squeeze a guest (``laptop``, ``dense``) it is measured from what is achievable there.
  Policies that save more by breaking the SLO far more often (``wmo``, often ``senpai``) are in the
  table but are not "best": an operator could not run them under that SLO;
* the learned policy must save at least 10 % more than it (``saved >= 1.1 x best``), break the SLO
  no more often, cause zero OOMs, and have a Jain fairness index no lower (compared at the
  three decimals the table shows).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from wsrl.errors import WsrlError
from wsrl.eval.runner import grid, run_grid
from wsrl.inputs.ref import InputRef, ScenarioInput, TraceInput
from wsrl.pipeline.control import ControlSpec
from wsrl.policies import REFERENCE_POLICIES

SLO_TOLERANCE = 0.05
"""Candidates for best reference violate the SLO in at most this share of guest-minutes more than
the zero-OOM reference that violates it least on the same input."""
SAVING_FACTOR = 1.1
HELD_OUT_INPUTS: tuple[InputRef, ...] = (
    ScenarioInput("datacenter"),
    ScenarioInput("laptop"),
    ScenarioInput("dense"),
    TraceInput(Path("out/bitbrains/holdout")),
)
"""Inputs no shipped policy trains on (agents/*.toml train on envs/training and out/bitbrains/train)."""
CARD_METRICS = ("memory_saved_frac", "violation_frac", "oom_events", "jain_fairness", "churn")


def per_input_means(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """``{input: {policy: {metric: mean over seeds}}}`` from run dicts."""
    table: dict[str, dict[str, dict[str, list[float]]]] = {}
    for run in runs:
        cell = table.setdefault(run["input"], {}).setdefault(run["policy"], {})
        for name, value in run["metrics"].items():
            cell.setdefault(name, []).append(float(value))
    return {
        ref: {pol: {m: sum(v) / len(v) for m, v in cell.items()} for pol, cell in pols.items()}
        for ref, pols in table.items()
    }


def best_reference(policies: dict[str, dict[str, float]]) -> str | None:
    """The best reference policy of one input under the rule of the module docstring."""
    safe = {
        name: m
        for name, m in policies.items()
        if name in REFERENCE_POLICIES and not name.startswith("oracle") and m["oom_events"] == 0
    }
    if not safe:
        return None
    achievable = min(m["violation_frac"] for m in safe.values())
    candidates = [n for n, m in safe.items() if m["violation_frac"] <= achievable + SLO_TOLERANCE]
    # Most saved first; among equal savings, fewer violations, then the name (deterministic).
    return min(candidates, key=lambda n: (-safe[n]["memory_saved_frac"], safe[n]["violation_frac"], n))


def verdict(learned: dict[str, float], best: dict[str, float]) -> dict[str, bool]:
    """Which parts of the acceptance rule hold (all must)."""
    return {
        "saves_10pct_more": learned["memory_saved_frac"] >= SAVING_FACTOR * best["memory_saved_frac"],
        "violations_no_more": learned["violation_frac"] <= best["violation_frac"],
        "zero_ooms": learned["oom_events"] == 0,
        "fairness_no_worse": round(learned["jain_fairness"], 3) >= round(best["jain_fairness"], 3),
    }


def evaluate_card(
    policy_dir: str,
    inputs: tuple[InputRef, ...] = HELD_OUT_INPUTS,
    duration_s: float = 6 * 3600,
    seeds: int = 1,
) -> dict[str, Any]:
    """Run the learned policy and every reference policy on ``inputs``; returns the card's data."""
    started = time.monotonic()
    specs = grid([policy_dir, *REFERENCE_POLICIES], list(inputs), seeds, duration_s)
    results = run_grid(specs, executor="process")
    runs = [r.to_json_dict() for r in results]
    means = per_input_means(runs)
    checks: dict[str, dict[str, Any]] = {}
    for ref, policies in means.items():
        best = best_reference(policies)
        learned = policies[policy_dir]
        checks[ref] = {
            "best_reference": best,
            "verdict": verdict(learned, policies[best]) if best else {},
        }
    return {
        "policy": policy_dir,
        "control": ControlSpec().describe(),
        "duration_s": duration_s,
        "seeds": seeds,
        "means": means,
        "checks": checks,
        "passed": all(bool(c["verdict"]) and all(c["verdict"].values()) for c in checks.values()),
        "eval_wall_s": round(time.monotonic() - started, 1),
    }


def _row(name: str, m: dict[str, float], mark: str = "") -> str:
    return (
        f"| {name}{mark} | {m['memory_saved_frac']:.3f} | {m['violation_frac']:.3f} | "
        f"{m['oom_events']:.0f} | {m['jain_fairness']:.3f} | {m['churn']:.2f} |"
    )


def card_tables(card: dict[str, Any]) -> str:
    """The markdown tables of a card: one per held-out input, best reference marked."""
    lines = []
    policy = card["policy"]
    for ref, policies in card["means"].items():
        check = card["checks"][ref]
        best = check["best_reference"]
        lines += [
            f"### {ref}",
            "",
            "| policy | memory saved | violation frac | OOMs | Jain fairness | churn |",
            "|---|---:|---:|---:|---:|---:|",
            _row(f"**{Path(policy).name}** (learned)", policies[policy]),
        ]
        for name in REFERENCE_POLICIES:
            if name in policies:
                lines.append(_row(name, policies[name], " (best reference)" if name == best else ""))
        verdict_text = ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in check["verdict"].items())
        lines += ["", f"Against {best}: {verdict_text}.", ""]
    return "\n".join(lines)


GPU_RECORD = "gpu.json"
"""Training throughput measured on a GPU machine, kept beside the model (benchmarks/bench_train_gpu.sh)."""


def gpu_section(path: Path, cpu_train: dict[str, Any]) -> str:
    """The card's "Training on a GPU" section from ``gpu.json`` (or a line saying none was measured).

    ``cpu_train`` is the model's own ``train.json``: the GPU run of its config is set beside it.
    """
    if not path.is_file():
        return (
            "## Training on a GPU\n\nNot measured: no GPU was lent to the sessions that trained this policy; "
            "`bash benchmarks/bench_train_gpu.sh` records the figures into `gpu.json` when one is."
        )
    gpu = json.loads(path.read_text(encoding="utf-8"))
    rows = [
        f"| {r['guests']:,} | {r['env_workers']} | {r['device']}"
        + (f" ({r['torch_threads']} threads)" if r["device"] == "cpu" else "")
        + f" | {r['net_arch']} | {r['ppo_env_steps_per_s']:,.0f} | {r['env_time_share']:.0%} "
        f"| {r['random_actions_env_steps_per_s']:,.0f} |"
        for r in gpu["runs"]
    ]
    lines = [
        "## Training on a GPU",
        "",
        f"Measured {gpu['date']} on {gpu['device']} with `{gpu['command']}` (PPO on `dense` hosts; "
        "an env step is one guest for one 10 s interval). The learner is SB3 PPO; the env is the "
        "simulator and pipeline, in-process or split over processes "
        "(`ParallelGuestVecEnv`, `wsrl train --workers`).",
        "",
        "| guests | env processes | learner | network | PPO env steps/s | time in env | env alone, steps/s |",
        "|---:|---:|---|---|---:|---:|---:|",
        *rows,
    ]
    train = gpu.get("train")
    if train:
        lines += [
            "",
            f"The shipped config on the GPU: `{train['command']}` trained {train['timesteps']:,} "
            f"guest-steps on {train['num_envs']} guest slots in {train['wall_s']:.0f} s "
            f"({train['env_steps_per_s']:,.0f}/s, against {cpu_train['env_steps_per_s']:,.0f}/s for the run "
            f"this card describes, on {cpu_train['machine']['cpus']} CPUs).",
        ]
    return "\n".join(lines)


def _refinements(distilled: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every refinement on record (``train.json``'s ``distill`` and its ``previous`` chain), oldest first."""
    chain: list[dict[str, Any]] = []
    record: Any = distilled
    while isinstance(record, dict):
        chain.append(record)
        record = record.get("previous")
    return chain[::-1]


def _distill_line(distilled: dict[str, Any] | None) -> str:
    """The model card's lines on the refinement stage (``train.json``'s ``distill`` record).

    A run refined more than once keeps each earlier record under ``previous``: one line each,
    oldest first.
    """
    if not distilled:
        return "- Refinement: none."
    lines = []
    for step, record in enumerate(_refinements(distilled)):
        teacher = record["teacher"]
        rounds = " plus a DAgger round in the states the student reaches" if record.get("dagger") else ""
        network, weights = ("this run's PPO network", "the PPO weights")
        head = f"- Refinement (`wsrl distill --config {record['config_path']}`)"
        if step:
            network, weights = ("the network refined above", "its weights")
            command = f"wsrl distill --config {record['config_path']} --base {record['base']}"
            head = f"- Refined again (`{command}`)"
        lines.append(
            f"{head}: {record['samples']:,} actions of the `refined` teacher ({network}, "
            "its cold age capped by far memory's threshold "
            f"on steady guests, bronze guests' headroom capped at {teacher['burst_headroom_frac']:.0%} on "
            f"hosts provisioned over {teacher['overcommit_min']}x; wsrl/policies/teacher.py), "
            f"{record['duration_s'] / 3600:.0f} h per input{rounds}, fitted from {weights} to "
            f"MSE {record['final_mse']:.1e}."
        )
    return "\n".join(lines)


NOTES_FILE = "card-notes.md"
"""Prose a maintainer keeps beside the model (what the numbers cannot say), placed in the card as is."""


def notes_section(path: Path) -> str:
    """The maintainers' notes beside the model (``card-notes.md``), or nothing."""
    if not path.is_file():
        return ""
    return path.read_text(encoding="utf-8").strip() + "\n"


def _rails_of(control: dict[str, Any]) -> dict[str, Any]:
    """A control record without the output check, which training leaves off (``ControlSpec.for_training``)."""
    return {k: v for k, v in control.items() if k != "max_proposal_jump_frac"}


def _control_line(control: dict[str, Any] | None, trained_under: dict[str, Any] | None) -> str:
    """How the control stack was set for every evaluation on this card, and for the training."""
    if control is None:
        return "- Control stack: not recorded (a card from before the one control stack)."
    if trained_under is None:
        training = "trained before the one control stack (no rails, breaker or fallback in training); "
    elif _rails_of(trained_under) == _rails_of(control):
        training = "trained and "
    else:
        training = f"trained under {trained_under}; "
    breaker = control["breaker"]
    return (
        f"- Control stack: {training}evaluated (every policy below) under the production runner's "
        f"default rails (`ControlSpec()`, docs/architecture.md): shrink at most "
        f"{control['max_shrink_frac_per_s']:g} of provisioned per second, growth at once; circuit breaker "
        f"on OOM kills, PSI some avg10 > {breaker['psi_some_avg10_pct']:g} % and refaults > "
        f"{breaker['refault_frac_per_min']:.0%} of usage per minute, handing the guest to "
        f"`{control['fallback']}` for {breaker['cooldown_s']:g} s; no shrink back to an OOM size for "
        f"{control['oom_memory_s'] / 3600:g} h; allocator `{control['allocator']}`."
    )


def model_card(directory: Path, card: dict[str, Any]) -> str:
    """The model card (markdown) of a trained policy directory: how it was made and how it scored."""
    train = json.loads((directory / "train.json").read_text(encoding="utf-8"))
    config = train["config"]
    init = train.get("init")
    # The warm start's record: kept beside the model (make train copies it), else where it was written.
    bc_path = directory / "bc.json" if (directory / "bc.json").is_file() else None
    if bc_path is None and init:
        bc_path = Path(init).parent / "bc.json"
    bc = json.loads(bc_path.read_text(encoding="utf-8")) if bc_path and bc_path.is_file() else None
    bc_wall = bc["wall_s"] if bc and "wall_s" in bc else 0.0
    distilled = train.get("distill")
    distill_wall = sum(float(record.get("wall_s", 0.0)) for record in _refinements(distilled))
    total_min = (bc_wall + train["wall_s"] + distill_wall) / 60.0
    verdicts = "\n".join(
        f"- `{ref}`: best reference `{c['best_reference']}`; "
        + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in c["verdict"].items())
        for ref, c in card["checks"].items()
    )
    root = str(Path(__file__).resolve().parents[2]) + "/"
    data_refs = distilled["inputs"] if distilled else config["env"]["inputs"]
    inputs = "\n".join(f"  - `{ref.replace(root, '')}`" for ref in data_refs)
    hp = ", ".join(f"{k}={v}" for k, v in config["hyperparameters"].items())
    lines = [
        f"# {directory.name}: model card",
        "",
        f"A per-guest {train['algorithm']} policy (one network with shared weights for every guest, "
        "see [docs/learning.md](../../docs/learning.md)), exported to `model.onnx` + `manifest.json` for "
        "the runner and `wsrl eval --policy " + str(directory) + "`.",
        "",
        f"**Acceptance on held-out data: {'PASSED' if card['passed'] else 'NOT PASSED'}** "
        "(rule: [wsrl/rl/card.py](../../wsrl/rl/card.py); at least 10 % more memory handed back than the "
        "best reference policy, no more SLO violations, zero OOMs, fairness no worse).",
        "",
        verdicts,
        "",
        "## How it was trained",
        "",
        "- Command (from scratch, on this 2-core machine): `make train` "
        "(Bitbrains split, behaviour cloning of vpa, PPO fine-tuning, "
        + ("refinement by distillation, " if distilled else "")
        + "export, this card).",
        f"- Wall time: {total_min:.1f} min of learning ({bc_wall:.0f} s recording and cloning vpa's "
        f"decisions, {train['wall_s']:.0f} s PPO for {train['timesteps']:,} guest-steps at "
        f"{train['env_steps_per_s']:,.0f}/s on {train['num_envs']} guest slots"
        + (f", {distill_wall:.0f} s refining" if distilled else "")
        + f"), on {train['machine']['cpus']} CPUs; "
        f"the card's evaluation took {card['eval_wall_s']:.0f} s more.",
        f"- Config: `{train['config_path']}`, seed {train['seed']}; {hp}; network {config['policy']}.",
        f"- Reward weights: {config['reward']}.",
        "- Training data (nothing held out below is in it):",
        inputs,
        f"- Warm start: {bc['samples']:,} decisions of `vpa` on the training inputs "
        f"({bc['duration_s'] / 3600:.0f} h each), cloned to MSE {bc['final_mse']:.1e}."
        if bc
        else "- Warm start: none.",
        _distill_line(distilled),
        _control_line(card.get("control"), train.get("control")),
        f"- Versions: {train['versions']}; git commit {train['git_commit']}.",
        "",
        notes_section(directory / NOTES_FILE),
        gpu_section(directory / GPU_RECORD, train),
        "",
        f"## Held-out evaluation ({card['duration_s'] / 3600:.0f} h per input, seeds: {card['seeds']})",
        "",
        "`datacenter`, `laptop` and `dense` are never trained on; `out/bitbrains/holdout` holds Bitbrains "
        "VMs that are not in the training split, over a later period (docs/trace-format.md).",
        "",
        card_tables(card),
    ]
    return "\n".join(lines) + "\n"


TRAINING_INPUTS_CONFIG = Path("agents/ppo-refine.toml")
"""Whose ``[env] inputs`` ``--training`` judges on: every input the shipped policy learns from."""


def main(argv: list[str] | None = None) -> int:
    """``python -m wsrl.rl.card TRAINED_DIR [--duration-h H] [--training [--inputs-config TOML]]``.

    Evaluates a trained policy and writes its card. ``--training`` applies the same rule on the
    training inputs instead of the held-out ones (those of ``--inputs-config``, default
    ``agents/ppo-refine.toml``: every input the shipped policy learns from) and writes
    ``card-training.json`` only: a check that reads no held-out data, for choosing between
    training runs before the held-out card is made.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m wsrl.rl.card", description=main.__doc__)
    parser.add_argument("directory", type=Path, help="an exported trained policy (model.onnx, manifest.json)")
    parser.add_argument("--duration-h", type=float, default=6.0, help="simulated hours per input (default 6)")
    parser.add_argument("--training", action="store_true", help="judge on the training inputs, not held-out")
    parser.add_argument(
        "--inputs-config",
        type=Path,
        default=TRAINING_INPUTS_CONFIG,
        help=f"agent config whose [env] inputs --training judges on (default {TRAINING_INPUTS_CONFIG})",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    directory: Path = args.directory
    if not args.duration_h > 0:
        parser.error(f"--duration-h must be > 0, got {args.duration_h}")
    try:
        if args.training:
            from wsrl.rl.config import load_agent_config

            inputs = tuple(load_agent_config(args.inputs_config).env.inputs)
            card = evaluate_card(str(directory), inputs, duration_s=args.duration_h * 3600)
            (directory / "card-training.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
            print(card_tables(card))
            passed = sum(all(c["verdict"].values()) for c in card["checks"].values() if c["verdict"])
            print(f"training inputs passed: {passed} of {len(card['checks'])}")
            return 0
        card = evaluate_card(str(directory), duration_s=args.duration_h * 3600)
    except WsrlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    (directory / "card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (directory / "README.md").write_text(model_card(directory, card), encoding="utf-8")
    print(card_tables(card))
    print("PASSED" if card["passed"] else "NOT PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
