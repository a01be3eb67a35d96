"""Commands for learning from recorded decisions: ``wsrl trace export-minari``.

The command functions are plain typer functions; :mod:`wsrl.cli` registers them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from wsrl.errors import WsrlError


def export_minari_command(
    trace_dir: Annotated[
        Path, typer.Argument(help="A trace recorded with decisions (action_target_bytes per sample).")
    ],
    dataset_id: Annotated[
        str, typer.Argument(help="Minari dataset id, (namespace/)name-vN, for example wsrl/client-vpa-v0.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Datasets root directory (default: $MINARI_DATASETS_PATH, else ~/.minari/datasets).",
        ),
    ] = None,
    agent: Annotated[
        Path | None,
        typer.Option("--agent", help="Agent config (TOML) whose [reward] weights score the steps."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Export each guest's trajectory in a trace as one episode of a local Minari dataset (train extra)."""
    try:
        # minari and torch are imported here only, so `wsrl --help` never loads them.
        from wsrl.rl.minari_export import export_minari
    except ImportError as exc:
        raise WsrlError(
            f"export-minari needs the training stack ({exc.name}): pip install 'wsrl[train]'"
        ) from None
    weights = None
    if agent is not None:
        from wsrl.rl.config import load_agent_config

        weights = load_agent_config(agent).reward
    path = export_minari(trace_dir, dataset_id, weights, out=out)
    from wsrl.rl.minari_export import MINARI_PATH_ENV, datasets_root, import_minari

    minari = import_minari()

    with datasets_root(out):
        dataset = minari.load_dataset(dataset_id)
        episodes, steps = int(dataset.total_episodes), int(dataset.total_steps)
    root = str(out.resolve()) if out is not None else None
    if as_json:
        document = {"dataset_id": dataset_id, "path": str(path), "root": root}
        typer.echo(json.dumps({**document, "episodes": episodes, "steps": steps}, indent=2))
        return
    console = Console()
    console.print(f"dataset {dataset_id}: {episodes} episodes, {steps} steps in {path}")
    if root is not None:
        console.print(f"load it with {MINARI_PATH_ENV}={root} and minari.load_dataset({dataset_id!r})")
