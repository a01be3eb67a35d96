"""Picking up a replaced policy while the runner runs, and refusing a bad one.

Operators roll out a newly trained policy by replacing the exported directory's files
(``manifest.json``, ``model.onnx``). :class:`PolicyReloader` notices a change on the next tick
(their inode, size and modification time; a ``stat`` per file per tick), loads the new files with
every check :func:`~wsrl.policies.learned.load_learned_policy` makes (ownership and permissions,
the manifest's spec, the model's SHA-256, the graph's inputs and outputs), and hands the runner
either the new policy or the reason it was refused.

A refused policy never replaces the running one: the runner keeps the policy it verified before
(it is in memory) and says so in the audit log and the metrics. A half-written file fails the
checksum and is refused; the write that completes it changes the files again and is loaded then.
Files that stay bad are not re-read every tick: only a further change triggers another attempt.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wsrl.errors import WsrlError
from wsrl.pipeline.policy import Policy

Fingerprint = tuple[tuple[int, int, int, int] | None, ...]
"""Per watched file ``(device, inode, size, mtime_ns)``, ``None`` where it is missing."""


@dataclass(frozen=True)
class ReloadResult:
    """A change of the policy files, and what came of it.

    Attributes:
        policy: the new policy, verified (``None`` when refused).
        error: why it was refused (``None`` when loaded).

    """

    policy: Policy | None
    error: str | None


class PolicyReloader:
    """Watches an exported policy's files and reloads them when they change.

    Args:
        directory: the exported policy directory the runner started with.
        files: the names watched inside it.
        load: the loader (:func:`~wsrl.policies.learned.load_learned_policy`).

    """

    def __init__(self, directory: Path, files: tuple[str, ...], load: Callable[[Path], Policy]) -> None:
        self.directory = directory
        self.files = files
        self._load = load
        self._seen = self._fingerprint()

    def _fingerprint(self) -> Fingerprint:
        prints: list[tuple[int, int, int, int] | None] = []
        for name in self.files:
            try:
                st = os.stat(self.directory / name)
            except OSError:
                prints.append(None)
                continue
            prints.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(prints)

    def poll(self) -> ReloadResult | None:
        """``None`` when the files are as last seen; else the new policy or why it was refused."""
        now = self._fingerprint()
        if now == self._seen:
            return None
        self._seen = now
        try:
            return ReloadResult(policy=self._load(self.directory), error=None)
        except WsrlError as exc:
            return ReloadResult(policy=None, error=str(exc))
        except Exception as exc:  # a loader bug must not stop the runner: the old policy keeps running
            return ReloadResult(policy=None, error=f"{type(exc).__name__}: {exc}")


def reloader_for(directory: Path) -> PolicyReloader:
    """A :class:`PolicyReloader` for an exported policy directory (its manifest and model)."""
    from wsrl.policies.learned import MANIFEST_FILE, MODEL_FILE, load_learned_policy

    return PolicyReloader(directory, (MANIFEST_FILE, MODEL_FILE), load_learned_policy)
