"""Parser for the JSON that ``crosvm balloon_ws VM_SOCKET`` prints.

crosvm serialises its ``VmResponse`` with serde_json (``to_string_pretty``), so the output is::

    {"BalloonWS": {"ws": {"ws": [{"age": 1000, "bytes": [A, B]}, ...]}, "balloon_actual": N}}

(``vm_control`` ``VmResponse::BalloonWS { ws: BalloonWS, balloon_actual: u64 }``, ``BalloonWS {
ws: Vec<WSBucket> }``, ``WSBucket { age: u64, bytes: [u64; 2] }``). crosvm versions of 2023 named
the same thing ``BalloonWSS`` / ``wss`` (command ``balloon_wss``); both spellings are accepted.

What the numbers mean, from the sources:

* crosvm copies each bucket verbatim from the guest's ``virtio_balloon_ws`` records
  (devices/src/virtio/balloon.rs): ``age`` = ``idle_age_ms``, ``bytes`` = ``memory_size_bytes``.
  It asks for 2..16 bins (``VIRTIO_BALLOON_WS_MIN/MAX_NUM_BINS``) and sends the guest
  ``bins - 1`` interval bounds.
* The guest driver (the 2023 virtio-balloon working-set RFC) sets those bounds as the ages of the
  first ``bins - 1`` bins and gives the LAST bin the age ``(unsigned long)-1`` jiffies, i.e.
  infinity, then reports ``jiffies_to_msecs(idle_age)``. ``jiffies_to_msecs`` returns a 32-bit
  value, so the last bin's ``age`` is not u64::MAX but a truncated, HZ-dependent number
  (4294967295 at HZ=1000, 4294967292 at HZ=250, 4294967286 at HZ=100, other values at other HZ).
  So the last bucket is taken as the catch-all (+inf) whatever its ``age`` says; that age is kept
  in ``meta["catch_all_age_ms"]`` and is not checked against the others.
* The other ages are the bins' upper bounds in ms and must strictly increase.
* ``bytes[0]`` / ``bytes[1]``: crosvm's own event code (``VirtioWsBucket { file_bytes:
  bytes[0], anon_bytes: bytes[1] }``) reads them as file, anon; the kernel and QEMU RFCs put anon
  first. ``options.crosvm_bytes_order`` decides (default ``"file,anon"``).
* The guest driver initialises every bin to u64::MAX bytes before its first report; such a value
  (and anything >= 2^63) is rejected.
* An empty list is what crosvm returns before the guest has ever reported; it is an error (2..16
  buckets are required).

The format has no NUMA node (the RFC driver reports the whole guest, NUMA_NO_NODE), so the node is
:data:`wsrl.histogram.ALL_NODES`. The guest is ``options.guest`` or ``"vm"``. ``balloon_actual``
(the balloon's size in bytes) is kept in ``meta["balloon_actual_bytes"]``.

The JSON is read strictly: duplicate keys, keys crosvm does not write, floats, booleans, NaN and
Infinity are errors, because a value of another shape means a crosvm version whose meaning has
not been checked. Error locations are JSON paths (``$.BalloonWS.ws.ws[2].bytes[1]``), or
``line L column C`` for a syntax error.
"""

from __future__ import annotations

import json
from typing import Any

from wsrl.errors import HistogramError, ParseError
from wsrl.formats import FormatOptions
from wsrl.histogram import ALL_NODES, ANON, FILE, MAX_BYTES, Histogram

SOURCE = "crosvm"

MIN_BINS = 2
MAX_BINS = 16
U64_MAX = 2**64 - 1
DEFAULT_GUEST = "vm"

# Response variant -> (its inner key, the list key inside it).
_VARIANTS: dict[str, str] = {"BalloonWS": "ws", "BalloonWSS": "wss"}


class _Object(dict[str, Any]):
    """A JSON object that remembers a key it saw twice."""

    duplicate: str | None = None


class _Float(str):
    """A JSON number written with a fraction or exponent (kept as text, rejected later)."""


class _Constant(str):
    """NaN, Infinity or -Infinity (rejected later)."""


def parse(data: bytes, options: FormatOptions) -> list[Histogram]:
    """Parse the output of ``crosvm balloon_ws`` (or the older ``balloon_wss``).

    Args:
        data: the raw bytes crosvm printed.
        options: ``guest`` names the histogram (default ``"vm"``); ``crosvm_bytes_order`` gives
            the meaning of ``bytes[0]`` and ``bytes[1]``.

    Returns:
        A list holding one histogram (node :data:`~wsrl.histogram.ALL_NODES`).

    Raises:
        ParseError: the input does not match the format described in the module docstring.

    """
    document = _load(data)
    variant, buckets, balloon_actual = _unwrap(document)
    path = f"$.{variant}.{_VARIANTS[variant]}.{_VARIANTS[variant]}"
    edges_ms, first, second, catch_all_age_ms = _read_buckets(buckets, path)
    if options.crosvm_bytes_order == "file,anon":
        bytes_by_type = {ANON: second, FILE: first}
    else:
        bytes_by_type = {ANON: first, FILE: second}
    total = sum(first) + sum(second)
    if total > MAX_BYTES:
        raise _error(path, "bytes", f"the buckets hold {total} bytes in all, over 2^63 - 1")
    meta = {
        "balloon_actual_bytes": str(balloon_actual),
        "catch_all_age_ms": str(catch_all_age_ms),
        "bytes_order": options.crosvm_bytes_order,
    }
    guest = options.guest if options.guest is not None else DEFAULT_GUEST
    try:
        return [Histogram(guest, ALL_NODES, edges_ms, bytes_by_type, meta)]
    except HistogramError as exc:  # every check above should make this unreachable
        raise _error(path, "histogram", str(exc)) from None


def _error(location: str, field_name: str, reason: str) -> ParseError:
    return ParseError(SOURCE, location, field_name, reason)


def _load(data: bytes) -> Any:
    """Decode and parse the JSON text, keeping what strict checks need to see."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _error(f"line {line}", "text", f"not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise _error("line 1", "text", "empty input: no JSON value")
    try:
        return json.loads(
            text,
            object_pairs_hook=_make_object,
            parse_float=_Float,
            parse_constant=_Constant,
        )
    except json.JSONDecodeError as exc:
        raise _error(f"line {exc.lineno} column {exc.colno}", "JSON", exc.msg) from None
    except (ValueError, RecursionError) as exc:  # over-long integers, absurd nesting
        raise _error("line 1", "JSON", f"unreadable JSON: {exc}") from None


def _make_object(pairs: list[tuple[str, Any]]) -> _Object:
    result = _Object()
    for key, value in pairs:
        if key in result and result.duplicate is None:
            result.duplicate = key
        result[key] = value
    return result


def _json_type(value: Any) -> str:
    if isinstance(value, _Constant):
        return str(value)
    if isinstance(value, _Float):
        return f"the non-integer number {value}"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    names = {dict: "an object", list: "an array", str: "a string", int: "an integer"}
    return next(name for kind, name in names.items() if isinstance(value, kind))


def _object(value: Any, path: str, field_name: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """Check that ``value`` is an object with exactly ``keys``."""
    if not isinstance(value, dict):
        raise _error(path, field_name, f"expected an object, got {_json_type(value)}")
    duplicate = getattr(value, "duplicate", None)
    if duplicate is not None:
        raise _error(f"{path}.{duplicate}", duplicate, "the key appears twice")
    for key in keys:
        if key not in value:
            raise _error(path, key, f"missing key {key!r}")
    for key in value:
        if key not in keys:
            raise _error(f"{path}.{key}", key, f"unexpected key {key!r}; expected {list(keys)}")
    return value


def _integer(value: Any, path: str, field_name: str, max_value: int) -> int:
    """Check that ``value`` is a JSON integer in [0, max_value]."""
    if isinstance(value, bool) or not isinstance(value, int) or isinstance(value, str):
        raise _error(path, field_name, f"expected an integer, got {_json_type(value)}")
    if value < 0:
        raise _error(path, field_name, f"{value} is negative")
    if value > max_value:
        note = " (u64::MAX: a bin the guest never filled)" if value == U64_MAX else ""
        raise _error(path, field_name, f"{value} is out of range [0, {max_value}]{note}")
    return value


def _unwrap(document: Any) -> tuple[str, list[Any], int]:
    """The response variant, its bucket list and balloon_actual."""
    if not isinstance(document, dict) or len(document) != 1:
        got = f"keys {list(document)}" if isinstance(document, dict) else _json_type(document)
        raise _error("$", "response", f'expected {{"BalloonWS": ...}}, got {got}')
    variant = next(iter(document))
    if variant not in _VARIANTS:
        raise _error(
            "$",
            "response",
            f"{variant!r} is not a working-set response (expected 'BalloonWS', as printed by "
            "crosvm balloon_ws)",
        )
    inner = _VARIANTS[variant]
    body = _object(document[variant], f"$.{variant}", variant, (inner, "balloon_actual"))
    balloon_actual = _integer(
        body["balloon_actual"], f"$.{variant}.balloon_actual", "balloon_actual", MAX_BYTES
    )
    holder = _object(body[inner], f"$.{variant}.{inner}", inner, (inner,))
    buckets = holder[inner]
    path = f"$.{variant}.{inner}.{inner}"
    if not isinstance(buckets, list):
        raise _error(path, inner, f"expected an array of buckets, got {_json_type(buckets)}")
    if not MIN_BINS <= len(buckets) <= MAX_BINS:
        why = " (the guest has not reported yet)" if not buckets else ""
        raise _error(path, inner, f"{len(buckets)} buckets; crosvm uses {MIN_BINS}..{MAX_BINS}{why}")
    return variant, buckets, balloon_actual


def _read_buckets(buckets: list[Any], path: str) -> tuple[list[int], list[int], list[int], int]:
    """Edges (all ages but the last), bytes[0] and bytes[1] per bin, and the last age."""
    edges_ms: list[int] = []
    first: list[int] = []
    second: list[int] = []
    last = len(buckets) - 1
    catch_all_age_ms = 0
    for index, raw in enumerate(buckets):
        here = f"{path}[{index}]"
        bucket = _object(raw, here, "bucket", ("age", "bytes"))
        if index == last:
            catch_all_age_ms = _integer(bucket["age"], f"{here}.age", "age", U64_MAX)
        else:
            age_ms = _integer(bucket["age"], f"{here}.age", "age", MAX_BYTES)
            if edges_ms and age_ms <= edges_ms[-1]:
                raise _error(
                    f"{here}.age",
                    "age",
                    f"ages must strictly increase: {age_ms} ms follows {edges_ms[-1]} ms",
                )
            edges_ms.append(age_ms)
        values = bucket["bytes"]
        if not isinstance(values, list) or len(values) != 2:
            got = f"{len(values)} values" if isinstance(values, list) else _json_type(values)
            raise _error(f"{here}.bytes", "bytes", f"expected an array of 2 integers, got {got}")
        first.append(_integer(values[0], f"{here}.bytes[0]", "bytes", MAX_BYTES))
        second.append(_integer(values[1], f"{here}.bytes[1]", "bytes", MAX_BYTES))
    return edges_ms, first, second, catch_all_age_ms
