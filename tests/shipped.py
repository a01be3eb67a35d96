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


@functools.cache
def shipped_base() -> Path:
    """A private copy of ``trained/ppo-overcommit/base``: the PPO network the shipped policy refines."""
    copy = Path(tempfile.mkdtemp(prefix="wsrl-base-"))
    atexit.register(shutil.rmtree, copy, ignore_errors=True)
    for name in ("model.onnx", "manifest.json", "model.zip"):
        shutil.copyfile(TRAINED / "base" / name, copy / name)
        (copy / name).chmod(0o644)
    return copy
