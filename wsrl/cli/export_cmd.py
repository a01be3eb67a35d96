"""``wsrl export``: turn a training run into the ONNX model and manifest that production loads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def export_command(
    trained_dir: Annotated[
        Path, typer.Argument(help="Training run directory: model.zip (stable-baselines3) and train.json.")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Directory to write (default: TRAINED_DIR itself).")
    ] = None,
) -> None:
    """Export a trained agent's deterministic actor to model.onnx + manifest.json (training extra needed)."""
    from wsrl.errors import WsrlError

    try:
        # torch is imported here only, so `wsrl --help` and the runner never load it.
        from wsrl.rl.export import export_policy
    except ImportError as exc:
        raise WsrlError(f"export needs the training stack ({exc.name}): pip install 'wsrl[train]'") from None
    directory = export_policy(trained_dir, out)
    typer.echo(f"exported: {directory / 'model.onnx'} + {directory / 'manifest.json'}")
