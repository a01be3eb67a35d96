"""Finding workload and scenario files by name in the ``envs`` folder.

The models live in :mod:`wsrl.sim.config_workload` and :mod:`wsrl.sim.config_scenario`; reading
TOML and turning validation errors into plain messages is :mod:`wsrl.config_tools`.
"""

from __future__ import annotations

import os
from pathlib import Path

import wsrl
from wsrl.config_tools import read_toml
from wsrl.errors import ConfigError

ENVS_ENV_VAR = "WSRL_ENVS"


def envs_dir() -> Path:
    """The ``envs`` directory: ``$WSRL_ENVS`` if set, else ``envs/`` next to the package."""
    override = os.environ.get(ENVS_ENV_VAR)
    if override:
        return Path(override)
    return Path(wsrl.__file__).resolve().parent.parent / "envs"


def repo_root() -> Path:
    """The folder holding ``envs`` (relative trace paths fall back to it)."""
    return envs_dir().parent


def available(kind: str) -> list[str]:
    """Names of the files in ``envs/<kind>`` (``kind`` is ``workloads`` or ``scenarios``)."""
    folder = envs_dir() / kind
    return sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []


def find_file(kind: str, name_or_path: str | Path, base_dir: Path | None) -> Path:
    """The file ``name_or_path`` refers to: a path that exists or ends in ``.toml``, else a name.

    Names are looked up in ``envs/<kind>``; ``base_dir`` is tried first for a relative path (a
    scenario passes its own folder).
    """
    singular = kind.removesuffix("s")
    ref = Path(name_or_path)
    if not ref.is_absolute() and base_dir is not None and (base_dir / ref).is_file():
        return base_dir / ref
    if ref.is_dir():
        raise ConfigError(str(ref), [("", f"is a directory, not a {singular} file")])
    if ref.exists() or str(name_or_path).endswith(".toml"):
        if not ref.is_file():
            raise ConfigError(str(ref), [("", "no such file")])
        return ref
    candidate = envs_dir() / kind / f"{name_or_path}.toml"
    if candidate.is_file():
        return candidate
    names = available(kind)
    listing = ", ".join(names) if names else f"none in {envs_dir() / kind}"
    raise ConfigError(str(name_or_path), [("", f"unknown {singular} name (available: {listing})")])


def listing(kind: str) -> list[tuple[str, str]]:
    """``(name, description)`` of every file in ``envs/<kind>``, sorted by name."""
    out: list[tuple[str, str]] = []
    for name in available(kind):
        path = envs_dir() / kind / f"{name}.toml"
        try:
            description = str(read_toml(path).get("description", ""))
        except ConfigError as exc:
            description = f"(unreadable: {exc})"
        out.append((name, description))
    return out
