"""Property tests for the wsr, lru_gen and crosvm parsers.

For every parser:

* random bytes give a list of histograms or a ParseError, nothing else;
* a valid input built from a random model parses to exactly the model's histograms;
* a valid input mutated (lines deleted, duplicated, swapped or inserted, tokens altered) gives
  either a ParseError or histograms whose per-type byte totals equal an independent recount of
  the mutated text: a parser may refuse a damaged capture but never misread one.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from wsrl.errors import ParseError
from wsrl.formats import FormatOptions, crosvm, lru_gen, wsr
from wsrl.histogram import Histogram

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ULONG_MAX = 2**64 - 1
LONG_MAX = 2**63 - 1

Parser = Callable[[bytes, FormatOptions], list[Histogram]]


def _outcome(parser: Parser, data: bytes, options: FormatOptions) -> list[Histogram] | None:
    """The parser's histograms, or None for a ParseError. Any other exception fails the test."""
    try:
        result = parser(data, options)
    except ParseError as error:
        assert error.location and error.field and error.reason
        return None
    assert isinstance(result, list)
    assert all(isinstance(h, Histogram) for h in result)
    return result


def _totals(histograms: list[Histogram]) -> Counter[str]:
    totals: Counter[str] = Counter()
    for histogram in histograms:
        for type_name, value in histogram.totals_by_type().items():
            totals[type_name] += value
    return +totals


# -- mutations shared by the text formats ------------------------------------------------------

TOKENS = st.one_of(
    st.integers(min_value=-(2**65), max_value=2**65).map(str),
    st.sampled_from(
        [
            "",
            "x",
            "0x",
            "5x",
            "N1",
            "N0",
            "memcg",
            "node",
            "anon=1",
            "file=-1",
            "anon=",
            "=",
            "1.5",
            "18446744073709551615",
            "9223372036854775807",
            "9223372036854775808",
            "1R",
            "2T",
            "3p",
            "4L",
            "5A",
            "\t",
            "١",
        ]
    ),
    st.text(max_size=6),
)


@st.composite
def _mutated(draw: st.DrawFn, text: str) -> str:
    lines = text.split("\n")
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        kind = draw(st.sampled_from(["delete", "duplicate", "swap", "token", "insert", "truncate"]))
        index = draw(st.integers(min_value=0, max_value=max(len(lines) - 1, 0)))
        if kind == "delete" and lines:
            del lines[index]
        elif kind == "duplicate" and lines:
            lines.insert(index, lines[index])
        elif kind == "swap" and len(lines) > 1:
            other = draw(st.integers(min_value=0, max_value=len(lines) - 1))
            lines[index], lines[other] = lines[other], lines[index]
        elif kind == "token" and lines:
            tokens = lines[index].split(" ")
            position = draw(st.integers(min_value=0, max_value=len(tokens) - 1))
            tokens[position] = draw(TOKENS)
            lines[index] = " ".join(tokens)
        elif kind == "insert":
            lines.insert(index, " ".join(draw(st.lists(TOKENS, max_size=8))))
        elif kind == "truncate":
            cut = draw(st.integers(min_value=0, max_value=len(text)))
            return "\n".join(lines)[:cut]
    return "\n".join(lines)


# -- wsr ---------------------------------------------------------------------------------------

WSR_TYPES = st.lists(st.sampled_from(["shmem", "zswap", "kernel_stack", "Hugetlb"]), unique=True)
BYTES = st.integers(min_value=0, max_value=2**44)


@st.composite
def _wsr_model(draw: st.DrawFn) -> dict[str, Any]:
    headers = draw(st.booleans())
    nodes = draw(st.lists(st.integers(min_value=0, max_value=1023), min_size=1, max_size=4, unique=True))
    if not headers:
        nodes = nodes[:1]
    blocks = []
    for node in nodes:
        edges = sorted(draw(st.sets(st.integers(min_value=0, max_value=2**40), max_size=6)))
        types = ["anon", "file", *draw(WSR_TYPES)]
        rows = {t: draw(st.lists(BYTES, min_size=len(edges) + 1, max_size=len(edges) + 1)) for t in types}
        blocks.append(
            {
                "node": node,
                "edges": edges,
                "rows": rows,
                "sentinel": draw(st.sampled_from([ULONG_MAX, LONG_MAX])),
                "order": draw(st.permutations(types)),
            }
        )
    return {"headers": headers, "blocks": blocks}


def _wsr_text(model: dict[str, Any]) -> str:
    lines = []
    for block in model["blocks"]:
        if model["headers"]:
            lines.append(f"N{block['node']}")
        labels = [*block["edges"], block["sentinel"]]
        for column, label in enumerate(labels):
            pairs = " ".join(f"{t}={block['rows'][t][column]}" for t in block["order"])
            lines.append(f"{label} {pairs}")
    return "\n".join(lines) + "\n"


def _wsr_recount(text: str) -> Counter[str]:
    totals: Counter[str] = Counter()
    for line in text.splitlines():
        for token in line.split()[1:]:
            key, _, value = token.partition("=")
            totals[key] += int(value)
    return +totals


@FUZZ
@given(st.binary(max_size=300))
def test_wsr_random_bytes(data: bytes) -> None:
    _outcome(wsr.parse, data, FormatOptions())


@FUZZ
@given(_wsr_model(), st.integers(min_value=0, max_value=7))
def test_wsr_valid_models_parse_exactly(model: dict[str, Any], node_option: int) -> None:
    result = _outcome(wsr.parse, _wsr_text(model).encode(), FormatOptions(node=node_option))
    assert result is not None
    assert len(result) == len(model["blocks"])
    for histogram, block in zip(result, model["blocks"], strict=True):
        assert histogram.node == (block["node"] if model["headers"] else node_option)
        assert histogram.guest == "memcg"
        assert list(histogram.edges_ms) == block["edges"]
        assert set(histogram.types) == set(block["rows"])
        for type_name, row in block["rows"].items():
            assert histogram.type_bytes(type_name).tolist() == row


@FUZZ
@given(st.data())
def test_wsr_mutations_refuse_or_count_exactly(data: st.DataObject) -> None:
    text = data.draw(_mutated(_wsr_text(data.draw(_wsr_model()))))
    result = _outcome(wsr.parse, text.encode(), FormatOptions())
    event("accepted" if result is not None else "refused")
    if result is not None:
        assert _totals(result) == _wsr_recount(text)
        headers = sum(1 for line in text.splitlines() if line.strip().startswith("N"))
        assert len(result) == max(headers, 1)


# -- lru_gen -----------------------------------------------------------------------------------

PATHS = st.one_of(
    st.just(""),
    st.just("/"),
    st.text(alphabet="abc xyz-_.@/", min_size=1, max_size=20).map(lambda s: "/" + s),
)


@st.composite
def _lru_node(draw: st.DrawFn, node: int, full: bool) -> dict[str, Any]:
    count = draw(st.integers(min_value=1, max_value=4))
    max_seq = draw(st.integers(min_value=count - 1, max_value=2**40))
    first = max_seq - count + 1
    # min_seq per type; the youngest generation is always live.
    min_seq = [draw(st.integers(min_value=first, max_value=max_seq)) for _ in range(2)]
    if not full:
        min_seq = [first, min(max(min_seq[1], first), max_seq)]
    ages = sorted(
        draw(st.lists(st.integers(min_value=0, max_value=2**32), min_size=count, max_size=count)),
        reverse=True,
    )
    gens = []
    for offset in range(count):
        seq = first + offset
        pages = draw(st.lists(st.integers(min_value=0, max_value=2**30), min_size=2, max_size=2))
        marks = [full and seq < min_seq[t] for t in range(2)]
        gens.append({"seq": seq, "age": ages[offset], "pages": pages, "x": marks})
    return {"node": node, "gens": gens, "stats": full and draw(st.booleans())}


@st.composite
def _lru_model(draw: st.DrawFn) -> dict[str, Any]:
    full = draw(st.booleans())
    ids = draw(st.lists(st.integers(min_value=0, max_value=ULONG_MAX), min_size=1, max_size=3, unique=True))
    memcgs = []
    for memcg_id in ids:
        nodes = draw(st.lists(st.integers(min_value=0, max_value=63), min_size=1, max_size=3, unique=True))
        memcgs.append(
            {
                "id": memcg_id,
                "path": draw(PATHS),
                "nodes": [draw(_lru_node(n, full)) for n in nodes],
            }
        )
    return {"memcgs": memcgs, "page_size": draw(st.sampled_from([4096, 16384, 65536]))}


def _lru_stats_lines(seq: int, max_seq: int) -> list[str]:
    suffixes = ("RT ", "RT ") if seq == max_seq else ("rep", "   ")
    lines = []
    for tier in range(4):
        cells = "".join(f" {n:10d}{s[i]}" for s in suffixes for i, n in enumerate((tier, 7, 1)))
        lines.append(f"            {tier:10d}{cells}")
    mm = "LOYNFA" if seq == max_seq else "      "
    lines.append("                      " + "".join(f" {i * 3:10d}{mm[i]}" for i in range(6)))
    return lines


def _lru_text(model: dict[str, Any]) -> str:
    lines = []
    for memcg in model["memcgs"]:
        lines.append(f"memcg {memcg['id']:5d} {memcg['path']}")
        for block in memcg["nodes"]:
            lines.append(f" node {block['node']:5d}")
            max_seq = block["gens"][-1]["seq"]
            for gen in block["gens"]:
                cells = "".join(
                    f" {pages:10d}{'x' if x else ' '}"
                    for pages, x in zip(gen["pages"], gen["x"], strict=True)
                )
                lines.append(f" {gen['seq']:10d} {gen['age']:10d}{cells}")
                if block["stats"]:
                    lines.extend(_lru_stats_lines(gen["seq"], max_seq))
    return "\n".join(lines) + "\n"


def _lru_expected(block: dict[str, Any], page_size: int) -> tuple[list[int], list[list[int]]]:
    edges: list[int] = []
    rows: list[list[int]] = [[], []]
    for gen in reversed(block["gens"]):
        if all(gen["x"]):
            continue
        values = [0 if x else p * page_size for p, x in zip(gen["pages"], gen["x"], strict=True)]
        if edges and edges[-1] == gen["age"]:
            for t in range(2):
                rows[t][-1] += values[t]
        else:
            edges.append(gen["age"])
            for t in range(2):
                rows[t].append(values[t])
    return edges, [[*row, 0] for row in rows]


def _lru_recount(text: str, page_size: int) -> Counter[str]:
    totals: Counter[str] = Counter()
    for line in text.splitlines():
        tokens = line.split()
        if len(tokens) == 4 and tokens[0].isascii() and tokens[0].isdigit():
            for type_name, token in zip(("anon", "file"), tokens[2:], strict=True):
                if not token.endswith("x"):
                    totals[type_name] += int(token) * page_size
    return +totals


@FUZZ
@given(st.binary(max_size=300))
def test_lru_gen_random_bytes(data: bytes) -> None:
    _outcome(lru_gen.parse, data, FormatOptions())


@FUZZ
@given(_lru_model())
def test_lru_gen_valid_models_parse_exactly(model: dict[str, Any]) -> None:
    options = FormatOptions(page_size_bytes=model["page_size"])
    result = _outcome(lru_gen.parse, _lru_text(model).encode(), options)
    assert result is not None
    expected = [(m, b) for m in model["memcgs"] for b in m["nodes"]]
    assert len(result) == len(expected)
    for histogram, (memcg, block) in zip(result, expected, strict=True):
        assert histogram.guest == (memcg["path"] if memcg["path"].strip() else f"memcg:{memcg['id']}")
        assert histogram.node == block["node"]
        assert histogram.meta == {"memcg_id": str(memcg["id"])}
        edges, (anon, file) = _lru_expected(block, model["page_size"])
        assert list(histogram.edges_ms) == edges
        assert histogram.anon_bytes.tolist() == anon
        assert histogram.file_bytes.tolist() == file


@FUZZ
@given(st.data())
def test_lru_gen_mutations_refuse_or_count_exactly(data: st.DataObject) -> None:
    model = data.draw(_lru_model())
    text = data.draw(_mutated(_lru_text(model)))
    options = FormatOptions(page_size_bytes=model["page_size"])
    result = _outcome(lru_gen.parse, text.encode(), options)
    event("accepted" if result is not None else "refused")
    if result is not None:
        assert _totals(result) == _lru_recount(text, model["page_size"])
        nodes = sum(1 for line in text.splitlines() if line.split()[:1] == ["node"])
        assert len(result) == nodes


# -- crosvm ------------------------------------------------------------------------------------


@st.composite
def _crosvm_model(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(min_value=2, max_value=16))
    ages = sorted(
        draw(st.sets(st.integers(min_value=0, max_value=2**40), min_size=count - 1, max_size=count - 1))
    )
    ages.append(draw(st.integers(min_value=0, max_value=ULONG_MAX)))
    buckets = [{"age": age, "bytes": draw(st.lists(BYTES, min_size=2, max_size=2))} for age in ages]
    legacy = draw(st.booleans())
    variant, inner = ("BalloonWSS", "wss") if legacy else ("BalloonWS", "ws")
    actual = draw(st.integers(min_value=0, max_value=2**40))
    return {variant: {inner: {inner: buckets}, "balloon_actual": actual}}


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**66), max_value=2**66)
    | st.floats()
    | st.text(max_size=5)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def _crosvm_mutated(draw: st.DrawFn, document: dict[str, Any]) -> str:
    """Structural edits of the JSON object, then maybe a text-level edit."""
    (variant,) = document
    body = document[variant]
    inner = "ws" if variant == "BalloonWS" else "wss"
    buckets = body[inner][inner]
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        kind = draw(st.sampled_from(["drop", "dup", "swap", "value", "key", "age", "bytes"]))
        index = draw(st.integers(min_value=0, max_value=len(buckets) - 1)) if buckets else 0
        if kind == "drop" and buckets:
            del buckets[index]
        elif kind == "dup" and buckets:
            buckets.insert(index, json.loads(json.dumps(buckets[index])))
        elif kind == "swap" and len(buckets) > 1:
            buckets[0], buckets[-1] = buckets[-1], buckets[0]
        elif kind == "value":
            target = draw(st.sampled_from(["balloon_actual", "bucket", "list"]))
            value = draw(JSON_VALUES)
            if target == "balloon_actual":
                body["balloon_actual"] = value
            elif target == "bucket" and buckets:
                buckets[index] = value
            else:
                body[inner][inner] = value
                buckets = []
        elif kind == "key" and buckets and isinstance(buckets[index], dict):
            buckets[index][draw(st.sampled_from(["age", "bytes", "node"]))] = draw(JSON_VALUES)
        elif kind == "age" and buckets and isinstance(buckets[index], dict):
            buckets[index]["age"] = draw(st.integers(min_value=-5, max_value=2**65))
        elif kind == "bytes" and buckets and isinstance(buckets[index], dict):
            buckets[index]["bytes"] = draw(st.lists(st.integers(min_value=-5, max_value=2**65), max_size=3))
    text = json.dumps(document, indent=draw(st.sampled_from([None, 2])))
    if draw(st.booleans()):
        cut = draw(st.integers(min_value=0, max_value=len(text)))
        text = text[:cut] + draw(st.text(max_size=3)) + text[cut + draw(st.integers(0, 3)) :]
    return text


def _crosvm_recount(text: str, order: str) -> Counter[str]:
    (body,) = json.loads(text).values()
    inner = "ws" if "ws" in body else "wss"
    first = sum(bucket["bytes"][0] for bucket in body[inner][inner])
    second = sum(bucket["bytes"][1] for bucket in body[inner][inner])
    names = ("file", "anon") if order == "file,anon" else ("anon", "file")
    return +Counter({names[0]: first, names[1]: second})


ORDERS = st.sampled_from(["file,anon", "anon,file"])


@FUZZ
@given(st.binary(max_size=300))
def test_crosvm_random_bytes(data: bytes) -> None:
    _outcome(crosvm.parse, data, FormatOptions())


@FUZZ
@given(_crosvm_model(), ORDERS, st.sampled_from([None, 2]))
def test_crosvm_valid_models_parse_exactly(document: dict[str, Any], order: str, indent: int | None) -> None:
    text = json.dumps(document, indent=indent)
    (histogram,) = _outcome(crosvm.parse, text.encode(), FormatOptions(crosvm_bytes_order=order))
    (body,) = document.values()
    (holder,) = (v for k, v in body.items() if k != "balloon_actual")
    (buckets,) = holder.values()
    assert list(histogram.edges_ms) == [b["age"] for b in buckets[:-1]]
    first = [b["bytes"][0] for b in buckets]
    second = [b["bytes"][1] for b in buckets]
    anon, file = (second, first) if order == "file,anon" else (first, second)
    assert histogram.anon_bytes.tolist() == anon
    assert histogram.file_bytes.tolist() == file
    assert histogram.meta["balloon_actual_bytes"] == str(body["balloon_actual"])
    assert histogram.meta["catch_all_age_ms"] == str(buckets[-1]["age"])


@FUZZ
@given(st.data(), ORDERS)
def test_crosvm_mutations_refuse_or_count_exactly(data: st.DataObject, order: str) -> None:
    text = data.draw(_crosvm_mutated(data.draw(_crosvm_model())))
    result = _outcome(crosvm.parse, text.encode(), FormatOptions(crosvm_bytes_order=order))
    event("accepted" if result is not None else "refused")
    if result is not None:
        assert len(result) == 1
        assert _totals(result) == _crosvm_recount(text, order)
