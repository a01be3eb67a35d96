"""The shipped policy's files as tests load them: private copies with owner-only write bits.

Git does not keep file modes, and the loader refuses group- or world-writable model files
(docs/security.md), so tests load a copy whose modes they set, as the runner's operator would.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

TRAINED = Path(__file__).resolve().parent.parent / "trained" / "ppo-overcommit"


def private_copy(
    source: Path, destination: Path, names: tuple[str, ...] = ("model.onnx", "manifest.json")
) -> Path:
    """Copy a policy's ``names`` from ``source`` into ``destination`` (created) with mode 0644."""
    destination.mkdir(mode=0o755, parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(source / name, destination / name)
        (destination / name).chmod(0o644)
    return destination


@functools.cache
def shipped_base() -> Path:
    """A private copy of ``trained/ppo-overcommit/base``: the PPO network the shipped policy refines."""
    copy = Path(tempfile.mkdtemp(prefix="wsrl-base-"))
    atexit.register(shutil.rmtree, copy, ignore_errors=True)
    return private_copy(TRAINED / "base", copy, ("model.onnx", "manifest.json", "model.zip"))
