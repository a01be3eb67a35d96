"""An input, typed: a scenario or a recorded trace, parsed once where its text enters wsrl.

The text forms (command-line options, agent configs, run results, trace metadata):

================  ===================================================================
``laptop``        a bundled scenario (:class:`ScenarioInput`, found in ``envs/scenarios``)
``envs/x.toml``   a scenario file (:class:`ScenarioInput`: a ``/`` or ``.toml`` makes it a path)
``traces:DIR``    a trace directory, replayed by trace-driven guests (:class:`TraceInput`)
================  ===================================================================

:func:`parse_input` turns the text into an :data:`InputRef` once, at the edge (an option, a
config value); everything inside takes the typed value. ``str(ref)`` gives the text back, so run
results, trace metadata and model cards keep naming inputs as before. Refs are frozen dataclasses:
hashable (setups are cached per ref) and picklable (the process pool and Ray get them whole).

A live host is not an input of this kind: it is a runner config (``host.toml``), loaded by
:mod:`wsrl.runner.config` and read through :class:`wsrl.inputs.live.LiveHost`.

This module parses and resolves only; whether the scenario or trace exists is checked when its
setup is built (:mod:`wsrl.inputs.setup`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from wsrl.errors import WsrlError

TRACE_PREFIX = "traces:"
"""The text form of a trace input: ``traces:DIR``."""

_KIND = re.compile(r"^([A-Za-z][A-Za-z0-9_-]+):")
"""A ``kind:`` prefix (two or more characters, so that a Windows drive letter is not one)."""
_FORMS = "a scenario name, a scenario TOML path or traces:DIR"


@dataclass(frozen=True)
class ScenarioInput:
    """A scenario: a bundled name (``laptop``) or a TOML path (``envs/training/pair.toml``)."""

    name_or_path: str

    def __post_init__(self) -> None:
        if not isinstance(self.name_or_path, str) or not self.name_or_path.strip():
            raise WsrlError(f"input {self.name_or_path!r}: empty; give {_FORMS}")

    @property
    def is_path(self) -> bool:
        """Whether the text names a file (it has a ``/`` or ends in ``.toml``), not a bundled name."""
        return "/" in self.name_or_path or self.name_or_path.endswith(".toml")

    @property
    def stem(self) -> str:
        """A short name: the bundled name, or the file's stem (``pair`` for ``envs/training/pair.toml``)."""
        return Path(self.name_or_path.rstrip("/")).stem

    def resolved(self, base_dir: Path) -> ScenarioInput:
        """A relative path made absolute against ``base_dir``; a bundled name or absolute path as it is."""
        path = Path(self.name_or_path)
        if not self.is_path or path.is_absolute():
            return self
        return ScenarioInput(str((base_dir / path).resolve()))

    def __str__(self) -> str:
        return self.name_or_path


@dataclass(frozen=True)
class TraceInput:
    """A trace directory (:mod:`wsrl.trace`) whose guests are replayed; text form ``traces:DIR``."""

    directory: Path

    def __post_init__(self) -> None:
        if isinstance(self.directory, str):
            object.__setattr__(self, "directory", Path(self.directory))
        if not isinstance(self.directory, Path):
            raise WsrlError(f"trace input {self.directory!r}: not a path")

    @property
    def stem(self) -> str:
        """A short name: the directory's stem (``holdout`` for ``out/bitbrains/holdout``)."""
        return self.directory.stem

    def resolved(self, base_dir: Path) -> TraceInput:
        """A relative directory made absolute against ``base_dir``; an absolute one as it is."""
        if self.directory.is_absolute():
            return self
        return TraceInput((base_dir / self.directory).resolve())

    def __str__(self) -> str:
        return f"{TRACE_PREFIX}{self.directory}"


InputRef: TypeAlias = ScenarioInput | TraceInput
"""What a simulated run, a training env or a recording runs on."""


def parse_input(text: str, base_dir: Path | None = None) -> InputRef:
    """The typed input of its text form (module docstring); ``str()`` of the result gives it back.

    Args:
        text: ``NAME``, ``PATH.toml`` or ``traces:DIR``.
        base_dir: resolve a relative scenario path or trace directory against this folder (a config
            file's folder, so that the config runs the same from any working directory); ``None``
            keeps it relative to the working directory.

    Raises:
        WsrlError: empty text, ``traces:`` without a directory, or another ``kind:`` prefix (one
            line naming the input and the forms it may take).

    """
    if not isinstance(text, str):
        raise WsrlError(f"input {text!r}: not text; give {_FORMS}")
    ref: InputRef
    if text.startswith(TRACE_PREFIX):
        directory = text[len(TRACE_PREFIX) :]
        if not directory.strip():
            raise WsrlError(f"input {text!r}: no trace directory after {TRACE_PREFIX!r}")
        ref = TraceInput(Path(directory))
    else:
        kind = _KIND.match(text)
        if kind is not None:
            raise WsrlError(f"input {text!r}: unknown kind {kind.group(1)!r}; give {_FORMS}")
        ref = ScenarioInput(text)
    return ref if base_dir is None else ref.resolved(base_dir)


def trace_input(value: str | Path | TraceInput) -> TraceInput:
    """A trace input from a directory (``DIR``) or its text form (``traces:DIR``)."""
    if isinstance(value, TraceInput):
        return value
    text = str(value)
    if text.startswith(TRACE_PREFIX):
        ref = parse_input(text)
        assert isinstance(ref, TraceInput)
        return ref
    if not text.strip():
        raise WsrlError(f"trace input {text!r}: no directory")
    return TraceInput(Path(text))
