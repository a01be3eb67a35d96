"""Finding and reading workload and scenario files, and turning validation errors into plain messages.

Every error is a :class:`wsrl.errors.ConfigError` whose problems are ``(dotted key path, reason)``
pairs (``guest[2].provisioned_gib``, ``must be > 0``); the models live in
:mod:`wsrl.sim.config_workload` and :mod:`wsrl.sim.config_scenario`.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

import wsrl
from wsrl.errors import ConfigError
from wsrl.sim.config_patterns import PATTERN_KINDS

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


# --------------------------------------------------------------------------------------------
# Validation errors as (key path, reason)
# --------------------------------------------------------------------------------------------

_TYPE_WORDS = {
    "float_type": "a number",
    "float_parsing": "a number",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "model_type": "a table",
    "dict_type": "a table",
    "model_attributes_type": "a table",
}

_BOUNDS = {
    "greater_than": (">", "gt"),
    "greater_than_equal": (">=", "ge"),
    "less_than": ("<", "lt"),
    "less_than_equal": ("<=", "le"),
}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def model_keys(model: type[BaseModel]) -> set[str]:
    """Every key a file validated by ``model`` may hold, nested tables included (for typo hints)."""
    keys: set[str] = set()
    seen: set[type[BaseModel]] = set()
    todo = [model]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name, field in current.model_fields.items():
            keys.add(name)
            todo.extend(_models_in(field.annotation))
    return keys


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    prev: Any = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(prev, str) and prev.endswith("_pattern") and part in PATTERN_KINDS:
            pass  # the discriminator tag pydantic puts in the path
        elif "[" in str(part) or "," in str(part):
            pass  # union member labels such as "list[str]"
        else:
            out += f".{part}" if out else str(part)
        prev = part
    return out


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _format_error(err: dict[str, Any], keys: set[str]) -> tuple[str, str]:
    loc = _format_loc(tuple(err["loc"]))
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        close = difflib.get_close_matches(key, sorted(keys), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return loc, f"unknown key{hint}"
    if kind == "missing":
        return loc, "required key missing"
    if kind in _TYPE_WORDS:
        return loc, f"must be {_TYPE_WORDS[kind]} (got {_describe(err.get('input'))})"
    if kind in _BOUNDS:
        op, key = _BOUNDS[kind]
        return loc, f"must be {op} {ctx.get(key)} (got {_describe(err.get('input'))})"
    if kind == "union_tag_invalid":
        return loc, f"unknown kind {ctx.get('tag')!r} (one of {', '.join(PATTERN_KINDS)})"
    if kind == "union_tag_not_found":
        return loc, f"needs a kind (one of {', '.join(PATTERN_KINDS)})"
    msg = str(err.get("msg", ""))
    msg = msg.removeprefix("Value error, ").replace("Input should be", "must be")
    return loc, msg


def validation_problems(exc: ValidationError, model: type[BaseModel]) -> list[tuple[str, str]]:
    """Turn a pydantic error of ``model`` into ``(dotted key path, reason)`` pairs, one per problem."""
    keys = model_keys(model)
    seen: list[tuple[str, str]] = []
    for err in exc.errors():
        item = _format_error(err, keys)  # type: ignore[arg-type]
        if item not in seen:
            seen.append(item)
    return seen


def validate_file(model: type[BaseModel], data: dict[str, Any], label: str) -> Any:
    """``model.model_validate(data)``, a validation error raised as :class:`ConfigError` of ``label``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(label, validation_problems(exc, model)) from None


# --------------------------------------------------------------------------------------------
# Files and names
# --------------------------------------------------------------------------------------------


MAX_TOML_BYTES = 16 * 1024 * 1024
"""Largest scenario, workload or agent file read (a bigger one is refused, not read whole)."""


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML document at ``path``; a read or syntax error is a :class:`ConfigError` with the line."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_TOML_BYTES + 1)
    except OSError as exc:
        raise ConfigError(str(path), [("", f"cannot read: {exc.strerror or exc}")]) from None
    if len(data) > MAX_TOML_BYTES:
        raise ConfigError(str(path), [("", f"larger than {MAX_TOML_BYTES} bytes: not a config file")])
    return parse_toml_bytes(data, str(path))


_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")
_LONG_NUMBER = re.compile(r"[0-9][0-9_]{4000,}")
MAX_TOML_DEPTH = 64
"""Nesting of arrays and inline tables reported as "nested too deeply" when parsing overflows."""


def _line_of(text: str, offset: int) -> str:
    return f"line {text.count(chr(10), 0, offset) + 1}"


def _deep_nesting_line(text: str) -> str:
    """The line where ``[``/``{`` nesting first passes :data:`MAX_TOML_DEPTH` (strings, comments skipped)."""
    depth, index, quote = 0, 0, ""
    while index < len(text):
        char = text[index]
        if quote:
            if char == "\\" and quote == '"':
                index += 1
            elif char == quote or char == "\n":
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "#":
            newline = text.find("\n", index)
            index = len(text) if newline < 0 else newline
            continue
        elif char in "[{":
            depth += 1
            if depth > MAX_TOML_DEPTH:
                return _line_of(text, index)
        elif char in "]}":
            depth = max(depth - 1, 0)
        index += 1
    return "line 1"


def parse_toml_bytes(data: bytes, label: str) -> dict[str, Any]:
    """Parse TOML bytes (runner config, scenario, workload, agent); failures name the line.

    Every failure is a :class:`ConfigError`.

    Raises:
        ConfigError: not UTF-8, TOML syntax, a number too long to convert or nesting too deep
            (each with ``line N``).

    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(label, [(f"line {line}", f"not UTF-8 text (byte {exc.start})")]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        match = _TOML_POSITION.search(msg)
        if match:
            where = f"line {match.group(1)}, column {match.group(2)}"
            raise ConfigError(label, [(where, f"TOML syntax: {msg[: match.start()].strip()}")]) from None
        raise ConfigError(label, [("line 1", f"TOML syntax: {msg}")]) from None
    except RecursionError:
        where = _deep_nesting_line(text)
        raise ConfigError(label, [(where, "TOML arrays or inline tables nested too deeply")]) from None
    except ValueError as exc:  # a number longer than int() converts (sys.get_int_max_str_digits)
        long_number = _LONG_NUMBER.search(text)
        where = _line_of(text, long_number.start()) if long_number else "line 1"
        raise ConfigError(label, [(where, f"TOML value: {str(exc)[:120]}")]) from None


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
