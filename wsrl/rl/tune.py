"""Seeds and small hyperparameter sweeps on Ray Tune (local by default, a cluster with ``address``).

Each trial is one :func:`wsrl.rl.train.train` run of the base config with some keys replaced (the
seed, and any ``hyperparameters`` / ``reward`` / ``policy`` values of the grid), written to its own
folder. A trial reports the held-out evaluation's metrics at the end; the summary ranks trials by
``memory_saved_frac`` among those with zero OOMs, then by fewest violations.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from wsrl.errors import WsrlError
from wsrl.inputs.ref import parse_input
from wsrl.rl.config import AgentConfig

SECTIONS = ("hyperparameters", "reward", "policy")


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["hyperparameters.learning_rate=1e-4,3e-4", ...]`` -> ``{"hyperparameters.learning_rate": [...]}``.

    Values are read as JSON when they parse (numbers, lists) and as strings otherwise.

    Raises:
        WsrlError: an item is not ``SECTION.KEY=V1,V2`` with a known section.

    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        section = key.split(".", 1)[0]
        if not sep or "." not in key or section not in SECTIONS or not values:
            raise WsrlError(
                f"--grid {item!r}: expected SECTION.KEY=V1,V2 with SECTION one of {', '.join(SECTIONS)}"
            )
        parsed = []
        for raw in values.split(","):
            try:
                parsed.append(json.loads(raw))
            except json.JSONDecodeError:
                parsed.append(raw)
        grid[key] = parsed
    return grid


def trial_configs(base: AgentConfig, seeds: int, grid: dict[str, list[Any]]) -> list[AgentConfig]:
    """Every (grid point x seed) as a config, seeds ``base.seed .. base.seed + seeds - 1``."""
    keys = list(grid)
    configs = []
    for values in itertools.product(*(grid[k] for k in keys)) if keys else [()]:
        for offset in range(seeds):
            data = base.model_dump()
            data["seed"] = base.seed + offset
            for key, value in zip(keys, values, strict=True):
                section, name = key.split(".", 1)
                data[section] = {**data[section], name: value}
            configs.append(AgentConfig.model_validate(data))
    return configs


def _trial(space: dict[str, Any]) -> dict[str, Any]:
    """One Ray Tune trial: train a config and return its final held-out metrics (flattened)."""
    from wsrl.rl.train import train

    params = space["trial"]
    config = AgentConfig.model_validate(params["config"])
    record = train(config, params["out_dir"], progress_bar=False)
    metrics: dict[str, Any] = {"wall_s": record["wall_s"], "env_steps_per_s": record["env_steps_per_s"]}
    for ref, values in record["final_eval"].items():
        label = parse_input(ref).stem or ref
        for name, value in values.items():
            metrics[f"{label}/{name}"] = value
    return metrics


def tune(
    base: AgentConfig,
    out_dir: str | Path,
    *,
    seeds: int = 1,
    grid: dict[str, list[Any]] | None = None,
    address: str | None = None,
    cpus_per_trial: float = 1.0,
) -> list[dict[str, Any]]:
    """Run every trial on Ray Tune; returns one row per trial (config overrides + metrics), best first.

    Also writes ``tune.json`` into ``out_dir``.
    """
    import ray
    from ray import tune as ray_tune

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    configs = trial_configs(base, seeds, grid or {})
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    space = [
        {"config": c.model_dump(mode="json"), "out_dir": str(out / f"trial-{i:03d}")}
        for i, c in enumerate(configs)
    ]
    tuner = ray_tune.Tuner(
        ray_tune.with_resources(_trial, {"cpu": cpus_per_trial}),
        param_space={"trial": ray_tune.grid_search(space)},
        run_config=ray_tune.RunConfig(storage_path=str(out / "ray"), name="wsrl-tune", verbose=0),
    )
    results = tuner.fit()
    rows = []
    for index in range(len(results)):  # ResultGrid indexes but declares no __iter__
        result = results[index]
        if result.error is not None:
            raise WsrlError(f"a tune trial failed: {result.error}")
        if result.config is None or result.metrics is None:
            raise WsrlError("a tune trial finished without reporting its config and metrics")
        params = result.config["trial"]
        config = params["config"]
        rows.append(
            {
                "out_dir": params["out_dir"],
                "seed": config["seed"],
                "overrides": {k: config[k.split(".")[0]][k.split(".", 1)[1]] for k in (grid or {})},
                "metrics": {k: v for k, v in result.metrics.items() if "/" in k or k.endswith("_s")},
            }
        )
    rows.sort(key=_rank)
    (out / "tune.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return rows


def _rank(row: dict[str, Any]) -> tuple[float, float, float]:
    metrics = row["metrics"]
    ooms = sum(v for k, v in metrics.items() if k.endswith("/oom_events"))
    saved = [v for k, v in metrics.items() if k.endswith("/memory_saved_frac")]
    violations = [v for k, v in metrics.items() if k.endswith("/violation_frac")]
    return (float(ooms > 0), -_mean(saved), _mean(violations))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
