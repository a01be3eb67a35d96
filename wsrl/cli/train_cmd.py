"""``wsrl train``, ``wsrl tune`` and ``wsrl bc``: learn a policy from an agent config (train extra)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from wsrl.errors import WsrlError

if TYPE_CHECKING:
    from wsrl.inputs.ref import InputRef


def _training_stack() -> None:
    """Fail with one line when the training extra is not installed."""
    try:
        import stable_baselines3  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        missing = exc.name
        raise WsrlError(f"training needs the training stack ({missing}): pip install 'wsrl[train]'") from None


def _check_inputs(refs: list[InputRef], key: str, config_path: Path) -> None:
    """Every input of a config exists before minutes of set-up are spent."""
    from wsrl.inputs.ref import TraceInput
    from wsrl.sim.config import load_scenario

    for ref in refs:
        if isinstance(ref, TraceInput):
            directory = ref.directory
            if not directory.is_dir():
                hint = " (run `make bitbrains-split` first)" if "bitbrains" in str(directory) else ""
                raise WsrlError(f"{config_path}: {key}: trace directory {directory} not found{hint}")
        else:
            load_scenario(ref.name_or_path)


def train_command(
    config: Annotated[Path, typer.Option("--config", help="Agent config TOML (agents/NAME.toml).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (trained/NAME).")],
    timesteps: Annotated[
        int | None, typer.Option("--timesteps", min=1, help="Override the config's timesteps.")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Override the config's seed.")] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="torch device: cpu, cuda, auto (config's by default).")
    ] = None,
    init: Annotated[
        Path | None,
        typer.Option("--init", help="Start from this model.zip (a behaviour-cloned warm start)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", min=1, max=256, help="Processes stepping the env (config's env.workers by default)."
        ),
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar.")] = True,
) -> None:
    """Train an agent (PPO, SAC, RecurrentPPO) with TensorBoard logs, checkpoints and held-out evaluation."""
    _training_stack()
    from wsrl.rl.config import load_agent_config
    from wsrl.rl.train import algorithm_class, train

    agent = load_agent_config(config, {"timesteps": timesteps, "seed": seed, "device": device})
    if workers is not None:
        agent = agent.model_copy(update={"env": agent.env.model_copy(update={"workers": workers})})
    _check_inputs(agent.env.inputs, "env.inputs", config)
    _check_inputs(agent.eval.inputs, "eval.inputs", config)
    init_model = None
    if init is not None:
        if not init.is_file():
            raise WsrlError(f"option --init: {init} is not a file")
        init_model = algorithm_class(agent.algorithm).load(init, device="cpu")
    record = train(agent, out, progress_bar=progress, init_model=init_model, init_path=init)
    console = Console()
    console.print(
        f"trained {record['algorithm']} for {record['timesteps']:,} guest-steps in {record['wall_s']:.0f} s "
        f"({record['env_steps_per_s']:,.0f}/s); model: {out / 'model.zip'}"
    )
    for ref, metrics in record["final_eval"].items():
        console.print(
            f"  held-out {ref}: saved {metrics['memory_saved_frac']:.3f}, "
            f"violations {metrics['violation_frac']:.3f}, OOMs {metrics['oom_events']:.0f}"
        )


def tune_command(
    config: Annotated[Path, typer.Option("--config", help="Base agent config TOML.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder for the trials and tune.json.")],
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Seeds per grid point.")] = 1,
    grid: Annotated[
        list[str] | None,
        typer.Option("--grid", help="SECTION.KEY=V1,V2 (e.g. hyperparameters.learning_rate=1e-4,3e-4)."),
    ] = None,
    timesteps: Annotated[int | None, typer.Option("--timesteps", min=1, help="Timesteps per trial.")] = None,
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster address.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the trials as JSON.")] = False,
) -> None:
    """Run seeds or a small hyperparameter sweep on Ray Tune (local by default) and rank the trials."""
    _training_stack()
    from wsrl.rl.config import load_agent_config
    from wsrl.rl.tune import parse_grid, tune

    parsed = parse_grid(list(grid or []))
    agent = load_agent_config(config, {"timesteps": timesteps})
    _check_inputs(agent.env.inputs, "env.inputs", config)
    _check_inputs(agent.eval.inputs, "eval.inputs", config)
    rows: list[dict[str, Any]] = tune(agent, out, seeds=seeds, grid=parsed, address=address)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    console = Console()
    for rank, row in enumerate(rows, 1):
        saved = {k: round(v, 3) for k, v in row["metrics"].items() if k.endswith("memory_saved_frac")}
        console.print(f"{rank}. seed {row['seed']} {row['overrides']} -> {saved} ({row['out_dir']})")


def bc_command(
    config: Annotated[
        Path, typer.Option("--config", help="Agent config (PPO or SAC) whose network to clone into.")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Output folder: model.zip (the warm start) and bc.json.")
    ],
    policy: Annotated[
        str,
        typer.Option(
            "--policy", help="Policy whose decisions to record (without --traces, or with --actor)."
        ),
    ] = "vpa",
    actor: Annotated[
        str | None,
        typer.Option(
            "--actor",
            help="DAgger: this policy (e.g. an exported learned one) drives the hosts and --policy "
            "labels the states it reaches; added to any --traces.",
        ),
    ] = None,
    traces: Annotated[
        list[Path] | None,
        typer.Option(
            "--traces", help="Traces already recorded with decisions (a live runner's); repeatable."
        ),
    ] = None,
    duration: Annotated[str, typer.Option("--duration", help="Simulated time recorded per input.")] = "6h",
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Passes over the decisions.")] = 30,
) -> None:
    """Behaviour cloning: fit an agent's network to recorded decisions (a warm start for `train --init`).

    Without ``--traces``, records ``--policy`` on the config's training inputs first (out/decisions).
    With ``--actor``, the recorded decisions are ``--policy``'s in the states ``--actor`` drives the
    hosts into (DAgger, with the config's seed + 1 so the episodes are new), and ``--traces`` (the
    expert's own earlier recordings) are cloned with them.
    """
    _training_stack()
    from wsrl.rl.bc import bc_dataset, behaviour_clone, record_decisions
    from wsrl.rl.config import load_agent_config
    from wsrl.rl.train import make_model
    from wsrl.rl.vec_env import GuestVecEnv
    from wsrl.units import parse_duration_s

    agent = load_agent_config(config)
    if agent.algorithm == "RecurrentPPO":
        raise WsrlError(f"{config}: behaviour cloning supports PPO and SAC configs, not RecurrentPPO")
    _check_inputs(agent.env.inputs, "env.inputs", config)
    try:
        duration_s = parse_duration_s(duration)
    except ValueError as exc:
        raise WsrlError(f"option --duration: {exc}") from None
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    recorded: list[Path] = []
    if actor is not None or not traces:
        seed = agent.seed + 1 if actor is not None else agent.seed
        decisions = out / "decisions"
        recorded = record_decisions(policy, agent.env.inputs, duration_s, seed, decisions, actor=actor)
    trace_dirs = recorded + list(traces or [])
    obs, actions = bc_dataset(trace_dirs)
    model = make_model(agent, GuestVecEnv(agent.env.inputs[:1], episode_steps=agent.env.episode_steps), None)
    result = behaviour_clone(model, obs, actions, epochs=epochs, seed=agent.seed)
    model.save(out / "model.zip")
    record = {
        "config": str(config),
        "traces": [str(t) for t in trace_dirs],
        "policy": policy if recorded else None,
        "actor": actor,
        "samples": result.samples,
        "final_mse": result.final_mse,
        "epoch_mse": result.epoch_mse,
        "duration_s": duration_s,
        "wall_s": round(time.monotonic() - started, 1),
    }
    (out / "bc.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    Console().print(
        f"cloned {result.samples:,} decisions (MSE {result.final_mse:.2e}) into {out / 'model.zip'}; "
        f"fine-tune with: wsrl train --config {config} --init {out / 'model.zip'} --out DIR"
    )


def distill_command(
    config: Annotated[
        Path, typer.Option("--config", help="PPO agent config: the network and the inputs distilled on.")
    ],
    base: Annotated[
        Path,
        typer.Option(
            "--base", help="Trained and exported run to refine (model.zip, train.json, model.onnx)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder: model.zip and train.json.")],
    duration: Annotated[str, typer.Option("--duration", help="Simulated time per input and round.")] = "3h",
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Passes over the samples.")] = 10,
    dagger: Annotated[
        bool, typer.Option("--dagger/--no-dagger", help="Add a round in the states the student reaches.")
    ] = False,
    overcommit_min: Annotated[
        float,
        typer.Option(
            "--overcommit-min", help="Teacher: provisioned / usable above which bronze headroom is capped."
        ),
    ] = 1.1,
    burst_headroom: Annotated[
        float,
        typer.Option("--burst-headroom", help="Teacher: bronze headroom cap there (share of provisioned)."),
    ] = 0.17,
) -> None:
    """Refine a trained policy: distill the `refined` teacher (its own actions, capped) back into it.

    The teacher is ``--base``'s exported network with far memory's cold-age threshold as a ceiling
    on its ``cold_age`` for steady guests and, on overcommitted hosts, a cap on bronze guests'
    ``headroom`` (:class:`wsrl.policies.teacher.RefinedTeacher`). The student starts from
    ``--base``'s weights. ``out`` gets ``--base``'s ``train.json`` with a ``distill`` record
    added: `wsrl export OUT` next.
    """
    _training_stack()
    from stable_baselines3 import PPO

    from wsrl.policies.learned import load_learned_policy
    from wsrl.policies.teacher import RefinedTeacher
    from wsrl.rl.config import load_agent_config
    from wsrl.rl.distill import distill
    from wsrl.rl.train import make_model
    from wsrl.rl.vec_env import GuestVecEnv
    from wsrl.units import parse_duration_s

    agent = load_agent_config(config)
    if agent.algorithm != "PPO":
        raise WsrlError(f"{config}: distillation refines PPO policies, not {agent.algorithm}")
    _check_inputs(agent.env.inputs, "env.inputs", config)
    try:
        duration_s = parse_duration_s(duration)
    except ValueError as exc:
        raise WsrlError(f"option --duration: {exc}") from None
    base_train = base / "train.json"
    if not (base / "model.zip").is_file() or not base_train.is_file():
        raise WsrlError(f"--base {base}: needs model.zip and train.json (a `wsrl train` output)")

    def make_teacher() -> RefinedTeacher:
        # load_learned_policy raises one line if --base is not exported yet
        return RefinedTeacher(
            load_learned_policy(base), overcommit_min=overcommit_min, burst_headroom_frac=burst_headroom
        )

    try:
        make_teacher()  # checked before minutes of collecting; every input gets a fresh one
    except ValueError as exc:
        raise WsrlError(f"teacher: {exc}") from None
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    model = make_model(agent, GuestVecEnv(agent.env.inputs[:1], episode_steps=agent.env.episode_steps), None)
    try:
        model.policy.load_state_dict(PPO.load(base / "model.zip", device="cpu").policy.state_dict())
    except RuntimeError as exc:
        raise WsrlError(f"--base {base}: its network does not match {config}'s: {exc}") from None
    result = distill(
        model,
        make_teacher,
        agent.env.inputs,
        duration_s,
        agent.seed,
        epochs=epochs,
        dagger=dagger,
        histogram_sources=agent.env.histogram_sources,
    )
    model.save(out / "model.zip")
    record = json.loads(base_train.read_text(encoding="utf-8"))
    earlier = record.get("distill")  # --base was refined already: its refinement stays on record
    record["distill"] = {
        "base": str(base),
        "config_path": str(config),
        "inputs": [str(ref) for ref in agent.env.inputs],
        "histogram_sources": list(agent.env.histogram_sources),
        "seed": agent.seed,
        "teacher": {
            "name": "refined",
            "overcommit_min": overcommit_min,
            "burst_headroom_frac": burst_headroom,
        },
        "duration_s": duration_s,
        "epochs": epochs,
        "dagger": dagger,
        "samples": result.samples,
        "dagger_samples": result.dagger_samples,
        "final_mse": result.final_mse,
        "wall_s": round(time.monotonic() - started, 1),
    }
    if isinstance(earlier, dict):
        record["distill"]["previous"] = earlier
    tmp = out / "train.json.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / "train.json")
    Console().print(
        f"distilled {result.samples:,} teacher actions (MSE {result.final_mse:.2e}) "
        f"into {out / 'model.zip'}; "
        f"export with: wsrl export {out}"
    )
