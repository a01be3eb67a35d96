"""Golden and error tests for the ``crosvm balloon_ws`` JSON parser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from wsrl.errors import ParseError
from wsrl.formats import FormatOptions, parse_bytes, parse_file
from wsrl.formats.crosvm import parse
from wsrl.histogram import ALL_NODES

DATA = Path(__file__).parent / "data" / "crosvm"
MIB = 1024 * 1024


def _doc(buckets: list[Any], actual: Any = 0) -> dict[str, Any]:
    return {"BalloonWS": {"ws": {"ws": buckets}, "balloon_actual": actual}}


def _two(**last: Any) -> list[dict[str, Any]]:
    return [{"age": 1000, "bytes": [1, 2]}, {"age": 4294967295, "bytes": [3, 4], **last}]


def _error(data: str | bytes | dict, **options: object) -> ParseError:
    if isinstance(data, dict):
        data = json.dumps(data)
    raw = data.encode() if isinstance(data, str) else data
    with pytest.raises(ParseError) as info:
        parse(raw, FormatOptions(**options))
    assert info.value.source == "crosvm"
    return info.value


# -- golden files ------------------------------------------------------------------------------


def test_four_bins_default_order_is_file_then_anon() -> None:
    (histogram,) = parse_file("crosvm", DATA / "balloon_ws_4_bins.json")
    assert histogram.guest == "balloon_ws_4_bins"
    assert histogram.node == ALL_NODES
    # The last bucket is the catch-all whatever its age says (jiffies_to_msecs(ULONG_MAX)).
    assert histogram.max_age_ms == [1000, 10000, 60000, None]
    assert histogram.file_bytes.tolist() == [100 * MIB, 200 * MIB, 300 * MIB, 400 * MIB]
    assert histogram.anon_bytes.tolist() == [50 * MIB, 30 * MIB, 10 * MIB, 4 * MIB]
    assert histogram.meta == {
        "balloon_actual_bytes": str(1024 * MIB),
        "catch_all_age_ms": "4294967295",
        "bytes_order": "file,anon",
    }


def test_anon_first_order() -> None:
    data = (DATA / "balloon_ws_4_bins.json").read_bytes()
    (histogram,) = parse_bytes("crosvm", data, FormatOptions(crosvm_bytes_order="anon,file"))
    assert histogram.anon_bytes.tolist() == [100 * MIB, 200 * MIB, 300 * MIB, 400 * MIB]
    assert histogram.file_bytes.tolist() == [50 * MIB, 30 * MIB, 10 * MIB, 4 * MIB]
    assert histogram.meta["bytes_order"] == "anon,file"


def test_guest_name_defaults_to_vm_and_node_is_never_split() -> None:
    data = (DATA / "balloon_ws_4_bins.json").read_bytes()
    (histogram,) = parse_bytes("crosvm", data)
    assert histogram.guest == "vm"
    (named,) = parse_bytes("crosvm", data, FormatOptions(guest="vm-7", node=2))
    assert (named.guest, named.node) == ("vm-7", ALL_NODES)


def test_legacy_balloon_wss_spelling() -> None:
    (histogram,) = parse_file("crosvm", DATA / "balloon_wss_legacy_2_bins.json")
    assert histogram.max_age_ms == [5000, None]
    assert histogram.file_bytes.tolist() == [4096, 12288]
    assert histogram.anon_bytes.tolist() == [8192, 16384]
    assert histogram.meta["catch_all_age_ms"] == "4294967292"  # HZ=250


@pytest.mark.parametrize("last_age", [0, 500, 2**64 - 1])
def test_catch_all_age_is_not_an_edge(last_age: int) -> None:
    (histogram,) = parse(json.dumps(_doc(_two(age=last_age))).encode(), FormatOptions())
    assert histogram.edges_ms == (1000,)
    assert histogram.meta["catch_all_age_ms"] == str(last_age)


def test_sixteen_bins_compact_json() -> None:
    buckets = [{"age": 1000 * (i + 1), "bytes": [i, 2 * i]} for i in range(16)]
    (histogram,) = parse(json.dumps(_doc(buckets), separators=(",", ":")).encode(), FormatOptions())
    assert histogram.n_bins == 16
    assert histogram.total_bytes("file") == sum(range(16))
    assert histogram.total_bytes("anon") == 2 * sum(range(16))


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "location", "field", "reason"),
    [
        ("", "line 1", "text", "empty input"),
        ("  \n", "line 1", "text", "empty input"),
        ("{", "line 1 column 2", "JSON", "Expecting"),
        ('{"BalloonWS": {}}\n{}', "line 2 column 1", "JSON", "Extra data"),
        ("[1]", "$", "response", "got an array"),
        ('{"BalloonStats": {"stats": {}, "balloon_actual": 0}}', "$", "response", "BalloonStats"),
        ('{"BalloonWS": {}, "x": 1}', "$", "response", "keys"),
        ({"BalloonWS": []}, "$.BalloonWS", "BalloonWS", "expected an object"),
        ({"BalloonWS": {"ws": {"ws": []}}}, "$.BalloonWS", "balloon_actual", "missing"),
        (_doc([]), "$.BalloonWS.ws.ws", "ws", "has not reported"),
        (_doc(_two()[:1]), "$.BalloonWS.ws.ws", "ws", "1 buckets"),
        (_doc(_two() * 9), "$.BalloonWS.ws.ws", "ws", "18 buckets"),
        (_doc({"a": 1}), "$.BalloonWS.ws.ws", "ws", "expected an array"),
        (_doc(_two(), actual=-1), "$.BalloonWS.balloon_actual", "balloon_actual", "negative"),
        (_doc(_two(), actual=1.5), "$.BalloonWS.balloon_actual", "balloon_actual", "non-integer"),
        (_doc(_two(), actual=True), "$.BalloonWS.balloon_actual", "balloon_actual", "boolean"),
        (_doc(_two(), actual="5"), "$.BalloonWS.balloon_actual", "balloon_actual", "a string"),
        (_doc(_two(), actual=None), "$.BalloonWS.balloon_actual", "balloon_actual", "null"),
        (_doc(_two(), actual=2**63), "$.BalloonWS.balloon_actual", "balloon_actual", "range"),
        (
            '{"BalloonWS": {"ws": {"ws": []}, "balloon_actual": NaN}}',
            "$.BalloonWS.balloon_actual",
            "balloon_actual",
            "NaN",
        ),
        (
            '{"BalloonWS": {"ws": {"ws": []}, "balloon_actual": 1e3}}',
            "$.BalloonWS.balloon_actual",
            "balloon_actual",
            "non-integer number 1e3",
        ),
        (
            '{"BalloonWS": {"ws": {"ws": []}, "ws": 1, "balloon_actual": 0}}',
            "$.BalloonWS.ws",
            "ws",
            "twice",
        ),
        (
            {"BalloonWS": {"ws": {"ws": _two()}, "balloon_actual": 0, "node": 1}},
            "$.BalloonWS.node",
            "node",
            "unexpected key",
        ),
        (_doc([{"age": 1000}, *_two()]), "$.BalloonWS.ws.ws[0]", "bytes", "missing"),
        (_doc([{"age": 1, "bytes": [1, 2], "x": 0}, *_two()]), "$.BalloonWS.ws.ws[0].x", "x", "unexpected"),
        (_doc([5, *_two()]), "$.BalloonWS.ws.ws[0]", "bucket", "expected an object"),
        (_doc([{"age": -1, "bytes": [1, 2]}, *_two()]), "$.BalloonWS.ws.ws[0].age", "age", "negative"),
        (_doc([{"age": "1", "bytes": [1, 2]}, *_two()]), "$.BalloonWS.ws.ws[0].age", "age", "string"),
        (
            _doc([{"age": 2000, "bytes": [1, 2]}, *_two()]),
            "$.BalloonWS.ws.ws[1].age",
            "age",
            "strictly increase",
        ),
        (
            _doc([{"age": 1000, "bytes": [1, 2]}, *_two()]),
            "$.BalloonWS.ws.ws[1].age",
            "age",
            "strictly increase",
        ),
        (
            _doc([{"age": 2**63, "bytes": [1, 2]}, *_two()]),
            "$.BalloonWS.ws.ws[0].age",
            "age",
            "out of range",
        ),
        (_doc(_two(age=2**64)), "$.BalloonWS.ws.ws[1].age", "age", "out of range"),
        (_doc(_two(bytes=[1])), "$.BalloonWS.ws.ws[1].bytes", "bytes", "got 1 values"),
        (_doc(_two(bytes=[1, 2, 3])), "$.BalloonWS.ws.ws[1].bytes", "bytes", "got 3 values"),
        (_doc(_two(bytes={"a": 1})), "$.BalloonWS.ws.ws[1].bytes", "bytes", "an object"),
        (_doc(_two(bytes=[1, -2])), "$.BalloonWS.ws.ws[1].bytes[1]", "bytes", "negative"),
        (_doc(_two(bytes=[2.0, 1])), "$.BalloonWS.ws.ws[1].bytes[0]", "bytes", "non-integer"),
        (
            _doc(_two(bytes=[2**64 - 1, 1])),
            "$.BalloonWS.ws.ws[1].bytes[0]",
            "bytes",
            "never filled",
        ),
        (_doc(_two(bytes=[2**63, 0])), "$.BalloonWS.ws.ws[1].bytes[0]", "bytes", "out of range"),
        (_doc(_two(bytes=[2**62, 2**62])), "$.BalloonWS.ws.ws", "bytes", "over 2^63 - 1"),
        ("[" * 100000 + "]" * 100000, "line 1", "JSON", "unreadable"),
        ('{"BalloonWS": ' + "9" * 5000 + "}", "line 1", "JSON", "unreadable"),
    ],
)
def test_malformed_input_names_location_and_field(
    data: str | dict, location: str, field: str, reason: str
) -> None:
    error = _error(data)
    assert error.location == location
    assert error.field == field
    assert reason in error.reason
    assert str(error).startswith(f"crosvm: {location}: {field}: ")


def test_non_utf8_names_the_line() -> None:
    error = _error(b'{\n"BalloonWS":\n\xff}')
    assert (error.location, error.field) == ("line 3", "text")
