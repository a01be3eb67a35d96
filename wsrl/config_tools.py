"""Config tooling shared by every layer: strict pydantic models, TOML reading, plain error messages.

Workload and scenario files (:mod:`wsrl.sim.config`), the runner's ``host.toml``
(:mod:`wsrl.runner.config`) and training configs (:mod:`wsrl.rl.config`) are all TOML validated by
pydantic models derived from :class:`StrictModel`. Every error is a :class:`wsrl.errors.ConfigError`
whose problems are ``(dotted key path, reason)`` pairs (``guest[2].provisioned_gib``,
``must be > 0``). This module imports neither the simulator nor the runner.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

from pydantic import AllowInfNan, BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from wsrl.errors import ConfigError

MIN_SECONDS = 0.001
"""Smallest non-zero duration a config may give (a key ending in ``_s``): 1 ms."""
MAX_SECONDS = 10 * 365 * 86400.0
"""Largest duration a config may give: ten years (timers and clocks overflow far beyond)."""
MAX_GIB = float(1 << 20)
"""Largest size a config may give in GiB (a key ending in ``_gib``): 1 PiB."""
MAX_MIB = MAX_GIB * 1024
"""Largest size a config may give in MiB (a key ending in ``_mib``)."""


def non_finite_in(value: Any) -> bool:
    """Whether ``value`` is, or holds (in lists, tuples and dicts, nested), a NaN or an infinity."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(non_finite_in(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(non_finite_in(v) for v in value)
    return False


def _opts_in(annotation: Any, metadata: list[Any]) -> bool:
    """Whether a field's type says ``AllowInfNan(True)``, on itself or on a member of its union."""
    if any(isinstance(item, AllowInfNan) and item.allow_inf_nan for item in metadata):
        return True
    if get_origin(annotation) is Annotated:
        inner, *extra = get_args(annotation)
        return _opts_in(inner, extra)
    return any(_opts_in(arg, []) for arg in get_args(annotation))


def _allows_non_finite(model: type[BaseModel], name: str) -> bool:
    """Whether field ``name`` opted in to NaN or infinity (it then checks them itself)."""
    field = model.model_fields.get(name)
    return field is not None and _opts_in(field.annotation, list(field.metadata))


def _unit_bound_problem(name: str, value: float) -> str | None:
    """Why a number under key ``name`` is out of the range its unit suffix allows (``None``: fine)."""
    if name.endswith("_s") and not name.endswith("_per_s"):
        if 0 < abs(value) < MIN_SECONDS:
            return f"must be 0 or at least {MIN_SECONDS:g} s (got {value:g})"
        if abs(value) > MAX_SECONDS:
            return f"must be at most {MAX_SECONDS:g} s, ten years (got {value:g})"
    if name.endswith("_ms") and abs(value) > MAX_SECONDS * 1000:
        return f"must be at most {MAX_SECONDS * 1000:g} ms, ten years (got {value:g})"
    if name.endswith("_h") and abs(value) > MAX_SECONDS / 3600:
        return f"must be at most {MAX_SECONDS / 3600:g} h, ten years (got {value:g})"
    if name.endswith("_gib") and abs(value) > MAX_GIB:
        return f"must be at most {MAX_GIB:g} GiB (got {value:g})"
    if name.endswith("_mib") and abs(value) > MAX_MIB:
        return f"must be at most {MAX_MIB:g} MiB (got {value:g})"
    return None


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, so typos do not pass silently.

    Numbers are checked at the root, for every model and every key, nested and free-form tables
    (``params``) included:

    * NaN and infinities are refused (``must be a finite number``); a field that means "never" by
      infinity opts in with ``Annotated[float, AllowInfNan(True)]`` and its own spelling;
    * a key ending in ``_s`` is a duration: 0, or between :data:`MIN_SECONDS` and
      :data:`MAX_SECONDS` (``_per_s`` keys are rates, not durations); ``_ms`` and ``_h`` keys are
      durations of at most :data:`MAX_SECONDS` too;
    * a key ending in ``_gib`` or ``_mib`` is a size of at most :data:`MAX_GIB` GiB.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _finite_and_bounded(cls, value: Any, info: ValidationInfo) -> Any:
        name = info.field_name or ""
        if _allows_non_finite(cls, name):
            if isinstance(value, float) and not math.isfinite(value):
                return value  # the field's own validator has judged it
        elif non_finite_in(value):
            raise ValueError("must be a finite number (not inf or nan), and so must everything it holds")
        numbers = value if isinstance(value, list) else [value]
        for number in numbers:
            if isinstance(number, int | float) and not isinstance(number, bool):
                problem = _unit_bound_problem(name, float(number))
                if problem:
                    raise ValueError(problem)
        return value


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


def _nested_models(model: type[BaseModel]) -> list[type[BaseModel]]:
    """``model`` and every model its fields hold, nested tables included, each once."""
    seen: list[type[BaseModel]] = []
    todo = [model]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.append(current)
        for field in current.model_fields.values():
            todo.extend(_models_in(field.annotation))
    return seen


def model_keys(model: type[BaseModel]) -> set[str]:
    """Every key a file validated by ``model`` may hold, nested tables included (for typo hints)."""
    return {name for current in _nested_models(model) for name in current.model_fields}


def _union_tags(members: Any, discriminator: str) -> tuple[str, ...]:
    """The tags of a discriminated union's members, in the union's order."""
    tags: list[str] = []
    for member in _models_in(members):
        field = member.model_fields.get(discriminator)
        if field is not None:
            tags.extend(str(tag) for tag in get_args(field.annotation))
    return tuple(tags)


def _discriminated(annotation: Any) -> tuple[str, ...]:
    """The tags of the discriminated union inside ``annotation`` (``()`` when there is none)."""
    if get_origin(annotation) is Annotated:
        inner, *metadata = get_args(annotation)
        for item in metadata:
            discriminator = getattr(item, "discriminator", None)
            if isinstance(discriminator, str):
                return _union_tags(inner, discriminator)
        return _discriminated(inner)
    for arg in get_args(annotation):
        tags = _discriminated(arg)
        if tags:
            return tags
    return ()


def tagged_unions(model: type[BaseModel]) -> dict[str, tuple[str, ...]]:
    """``{key: tags}`` of every key of ``model`` (nested tables included) holding a tagged union.

    A tagged union is a pydantic discriminated union (``Field(discriminator="kind")``); its tags are
    the ``Literal`` values of the members' discriminator field, in the union's order.
    """
    unions: dict[str, tuple[str, ...]] = {}
    for current in _nested_models(model):
        for name, field in current.model_fields.items():
            if isinstance(field.discriminator, str):
                tags = _union_tags(field.annotation, field.discriminator)
            else:
                tags = _discriminated(field.annotation)
            if tags:
                unions[name] = tags
    return unions


def _format_loc(loc: tuple[Any, ...], unions: dict[str, tuple[str, ...]]) -> str:
    out = ""
    prev: Any = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(prev, str) and part in unions.get(prev, ()):
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


def _union_kinds(err: dict[str, Any], unions: dict[str, tuple[str, ...]]) -> str:
    """The tags the union at ``err``'s location accepts, comma separated."""
    keys = [part for part in err["loc"] if isinstance(part, str)]
    tags = unions.get(keys[-1], ()) if keys else ()
    if not tags:
        expected = str((err.get("ctx") or {}).get("expected_tags", ""))
        return expected.replace("'", "")
    return ", ".join(tags)


def _format_error(err: dict[str, Any], keys: set[str], unions: dict[str, tuple[str, ...]]) -> tuple[str, str]:
    loc = _format_loc(tuple(err["loc"]), unions)
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        close = difflib.get_close_matches(key, sorted(keys), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return loc, f"unknown key{hint}"
    if kind == "missing":
        return loc, "required key missing"
    if kind == "finite_number":
        return loc, f"must be a finite number, not inf or nan (got {_describe(err.get('input'))})"
    if kind in _TYPE_WORDS:
        return loc, f"must be {_TYPE_WORDS[kind]} (got {_describe(err.get('input'))})"
    if kind in _BOUNDS:
        op, key = _BOUNDS[kind]
        return loc, f"must be {op} {ctx.get(key)} (got {_describe(err.get('input'))})"
    if kind == "union_tag_invalid":
        return loc, f"unknown kind {ctx.get('tag')!r} (one of {_union_kinds(err, unions)})"
    if kind == "union_tag_not_found":
        return loc, f"needs a kind (one of {_union_kinds(err, unions)})"
    msg = str(err.get("msg", ""))
    msg = msg.removeprefix("Value error, ").replace("Input should be", "must be")
    return loc, msg


def validation_problems(exc: ValidationError, model: type[BaseModel]) -> list[tuple[str, str]]:
    """Turn a pydantic error of ``model`` into ``(dotted key path, reason)`` pairs, one per problem."""
    keys = model_keys(model)
    unions = tagged_unions(model)
    seen: list[tuple[str, str]] = []
    for err in exc.errors():
        item = _format_error(err, keys, unions)  # type: ignore[arg-type]
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
# TOML
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
