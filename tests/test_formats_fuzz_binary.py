"""Fuzz the virtio and DAMON parsers: random bytes and mutated valid captures.

Every run must end in either a :class:`ParseError` or histograms whose byte totals match an
independent recount of what the input states; nothing else may escape.
"""

from __future__ import annotations

import re
import struct
from fractions import Fraction
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsrl.errors import ParseError
from wsrl.formats import FormatOptions, parse_bytes
from wsrl.histogram import Histogram

DATA = Path(__file__).parent / "data"
U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- independent recounts ------------------------------------------------------------------------


def recount_virtio(data: bytes, layout: str) -> dict[int, tuple[int, int]]:
    """Per node (anon, file) bytes as the documented structs state them."""
    totals: dict[int, tuple[int, int]] = {}
    if layout == "rfc2023":
        for tag, node, _res, age, anon, file in struct.iter_unpack("<HH4sQQQ", data):
            if tag == 0xFFFF and node == 0xFFFF and age == 0 and anon == file == U64_MAX:
                continue
            a, f = totals.get(node, (0, 0))
            totals[node] = (a + anon, f + file)
        return totals
    for offset in range(0, len(data), 776):
        _error, node = struct.unpack_from("<II", data, offset)
        a = f = 0
        for age, anon, file in struct.iter_unpack("<QQQ", data[offset + 8 : offset + 776]):
            a, f = a + anon, f + file
            if age in (U64_MAX, U32_MAX):
                break
        totals[node] = (a, f)
    return totals


_SIZE_UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40, "PiB": 1 << 50, "EiB": 1 << 60}
_HIST = re.compile(r"^\[[^\]]*\) +(?P<size>[^|]+?) +\|[* ]*\|$")


def _size_bytes(text: str) -> int:
    words = text.split()
    if len(words) == 1:
        return int(words[0])
    if words[1] == "B":
        return int(words[0])
    return round(Fraction(words[0]) * _SIZE_UNITS[words[1]])


def recount_damo(text: str) -> int:
    """Sum of the sizes on every histogram line outside 'scheme stats' blocks."""
    total, in_stats = 0, False
    for line in text.splitlines():
        line = line.rstrip()
        if line == "scheme stats":
            in_stats = True
        elif line.startswith(("<idle time", "kdamond ", "record DAMON")):
            in_stats = False
        elif not in_stats and (match := _HIST.match(line)):
            total += _size_bytes(match["size"])
    return total


def recount_sysfs(text: str) -> int:
    """Sum of end - start over every tried region named in a ``path:value`` listing."""
    regions: dict[tuple[str, str], dict[str, int]] = {}
    for line in text.splitlines():
        path, _, value = line.partition(":")
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if "tried_regions" in parts:
            at = len(parts) - 1 - parts[::-1].index("tried_regions")
            head, rest = parts[:at], parts[at + 1 :]
        elif not path.startswith("/"):
            head, rest = [], parts
        else:
            continue
        if len(rest) == 2 and rest[1] in ("start", "end"):
            regions.setdefault(("/".join(head), rest[0]), {})[rest[1]] = int(value.strip())
    return sum(r["end"] - r["start"] for r in regions.values())


# -- checks ----------------------------------------------------------------------------------------


def run(data: bytes, **options: object) -> list[Histogram] | None:
    fmt = "virtio" if "virtio_layout" in options else "damon"
    try:
        result = parse_bytes(fmt, data, FormatOptions(**options))
    except ParseError as error:
        assert error.source == fmt
        assert error.location and error.field and error.reason
        return None
    assert isinstance(result, list)
    assert all(isinstance(h, Histogram) for h in result)
    return result


def check_virtio(data: bytes, layout: str) -> None:
    result = run(data, virtio_layout=layout)
    if result is None:
        return
    assert result, "a parse that succeeds returns at least one node"
    used = {h.meta["layout"] for h in result}
    assert len(used) == 1
    got = {h.node: (int(h.type_bytes("anon").sum()), int(h.type_bytes("file").sum())) for h in result}
    assert got == recount_virtio(data, used.pop())


def check_damon(data: bytes) -> None:
    result = run(data, damon_region_type="anon")
    if result is None:
        return
    text = data.decode("utf-8")
    assert all(int(h.type_bytes("file").sum()) == 0 for h in result)
    total = sum(int(h.type_bytes("anon").sum()) for h in result)
    first = next(line for line in text.splitlines() if line.strip())
    if re.match(r"^[^\s:]*/[^\s:]*:", first):
        assert total == recount_sysfs(text)
    else:
        assert total == recount_damo(text)


# -- strategies ------------------------------------------------------------------------------------

_sizes = st.integers(min_value=0, max_value=2**40)


@st.composite
def rfc_capture(draw: st.DrawFn) -> bytes:
    out = b""
    for node in draw(st.lists(st.integers(0, 7), min_size=1, max_size=3, unique=True)):
        ages = sorted(draw(st.sets(st.integers(0, 10**7), min_size=1, max_size=6)))
        for age in ages:
            out += struct.pack("<HH4sQQQ", 0, node, bytes(4), age, draw(_sizes), draw(_sizes))
        if draw(st.booleans()):
            sentinel = draw(st.sampled_from([U64_MAX, U32_MAX, 2**63 - 1, 2**32 - 4]))
            out += struct.pack("<HH4sQQQ", 0, node, bytes(4), sentinel, draw(_sizes), draw(_sizes))
    return out


@st.composite
def v4_capture(draw: st.DrawFn) -> bytes:
    out = b""
    for node in draw(st.lists(st.integers(0, 7), min_size=1, max_size=3, unique=True)):
        ages = sorted(draw(st.sets(st.integers(0, 10**7), max_size=10)))
        bins = [(age, draw(_sizes), draw(_sizes)) for age in ages]
        bins.append((draw(st.sampled_from([U64_MAX, U32_MAX])), draw(_sizes), draw(_sizes)))
        body = b"".join(struct.pack("<QQQ", *b) for b in bins)
        body += bytes([draw(st.sampled_from([0, 0xFF]))]) * (768 - len(body))
        out += struct.pack("<II", 0, node) + body
    return out


_interesting_u64 = st.sampled_from([0, 1, U32_MAX, U64_MAX, 2**63 - 1, 2**63, 0xFFEA, 0xFFFF])


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "append", "word", "insert"]))
        if op == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        elif op == "append":
            data += draw(st.binary(max_size=64))
        elif op == "word" and len(data) >= 8:
            at = draw(st.integers(0, len(data) // 8 - 1)) * 8
            data[at : at + 8] = struct.pack("<Q", draw(_interesting_u64))
        elif op == "insert":
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=40))
    return bytes(data)


_DAMON_GOLDEN = sorted((DATA / "damon").glob("*.txt"))
_damon_text = st.sampled_from([path.read_text() for path in _DAMON_GOLDEN])


@st.composite
def mutated_text(draw: st.DrawFn) -> bytes:
    lines = draw(_damon_text).splitlines()
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["char", "digit", "delete", "duplicate", "replace", "swap"]))
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        if op == "char" and line:
            at = draw(st.integers(0, len(line) - 1))
            line = line[:at] + draw(st.sampled_from(list("0189 .,:/[)|*BKiGs-x\t\xe9"))) + line[at + 1 :]
            lines[i] = line
        elif op == "digit":
            lines[i] = re.sub(r"\d", lambda _m: str(draw(st.integers(0, 9))), line, count=1)
        elif op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, line)
        elif op == "replace":
            lines[i] = draw(st.text(max_size=40))
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines).encode("utf-8", "surrogatepass")


# -- tests -----------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=3200), st.sampled_from(["auto", "rfc2023", "v4"]))
def test_virtio_random_bytes(data: bytes, layout: str) -> None:
    check_virtio(data, layout)


@FUZZ
@given(st.one_of(rfc_capture(), v4_capture()))
def test_virtio_valid_captures_parse_and_add_up(data: bytes) -> None:
    result = run(data, virtio_layout="auto")
    assert result is not None
    check_virtio(data, "auto")


@FUZZ
@given(mutated(st.one_of(rfc_capture(), v4_capture())), st.sampled_from(["auto", "rfc2023", "v4"]))
def test_virtio_mutated_captures(data: bytes, layout: str) -> None:
    check_virtio(data, layout)


@FUZZ
@given(mutated(st.sampled_from([p.read_bytes() for p in sorted((DATA / "virtio").glob("*.bin"))])))
def test_virtio_mutated_golden_files(data: bytes) -> None:
    check_virtio(data, "auto")


@FUZZ
@given(st.binary(max_size=2000))
def test_damon_random_bytes(data: bytes) -> None:
    check_damon(data)


@FUZZ
@given(mutated_text())
def test_damon_mutated_golden_text(data: bytes) -> None:
    check_damon(data)


@FUZZ
@given(mutated(st.sampled_from([p.read_bytes() for p in _DAMON_GOLDEN])))
def test_damon_mutated_golden_bytes(data: bytes) -> None:
    check_damon(data)


def test_every_golden_damon_file_but_the_cumulative_one_parses() -> None:
    for path in _DAMON_GOLDEN:
        result = run(path.read_bytes(), damon_region_type="anon")
        assert (result is None) == ("cumulative" in path.name), path.name
        check_damon(path.read_bytes())
