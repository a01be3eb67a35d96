"""Fuzz what the runner reads from outside: its config, traces, QMP answers, crosvm output, guest streams.

Each input has one allowed way to fail, and nothing else may escape:

* the runner config (dicts and files): :class:`ConfigError` whose every problem names a key or a line;
* a trace with a damaged part: :class:`TraceError` or a problem in the validation report, and
  the intact parts still read;
* QMP answers: :class:`BackendError`; crosvm output: :class:`ParseError`;
* the guest stream: nothing at all (bad units are counted and dropped), with the decoder's buffer
  never above its cap.

Inputs are bounded (sizes and ``max_examples``) so every test takes a few seconds; the size-bound
tests at the end check that a giant config file, frame or JSON line is refused without being read
whole. Inputs the fuzzers once crashed on are kept as regression tests next to the fuzzer that
found them.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from wsrl.agent.wire import encode_dump, encode_histogram_record, encode_pressure_record
from wsrl.backends.base import BackendError
from wsrl.backends.crosvm import parse_balloon_stats
from wsrl.backends.guest_stream import merge_lru_gen
from wsrl.backends.qemu import (
    U64_MAX,
    GuestStats,
    find_balloon_child,
    parse_guest_stats,
    parse_memory_size_summary,
    parse_query_balloon,
)
from wsrl.backends.stream_decoder import Dump, HistogramRecord, PressureRecord, StreamDecoder, parse_record
from wsrl.config_tools import model_keys
from wsrl.errors import ConfigError, HistogramError, ParseError, TraceError
from wsrl.formats import FormatOptions, parse_bytes
from wsrl.formats import crosvm as crosvm_format
from wsrl.histogram import Histogram
from wsrl.runner.config import RunnerConfig, load_runner_config, runner_config_from_dict
from wsrl.trace.reader import TraceReader
from wsrl.trace.record import GuestSample
from wsrl.trace.schema import TRACE_SCHEMA
from wsrl.trace.validate import validate_trace
from wsrl.trace.writer import TraceWriter

DATA = Path(__file__).parent / "data"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_FILES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
pytestmark = pytest.mark.timeout(120)

# JSON as a decoder hands it over: any nesting of objects, arrays and scalars, numbers unbounded.
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=12),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


# =====================================================================================================
# The runner config
# =====================================================================================================

BASE_CONFIG: dict[str, Any] = {
    "host": {"name": "node-1", "capacity_gib": 64, "reserve_gib": 4, "interval_s": 10},
    "policy": {"name_or_path": "vpa", "fallback": "static"},
    "safety": {"floor_frac": 0.25, "breaker": {"cooldown_s": 60}},
    "audit": {"path": "audit.jsonl"},
    "metrics": {"bind": "127.0.0.1", "port": 0},
    "record": {"dir": "trace"},
    "guest": [
        {
            "name": "db",
            "provisioned_gib": 16,
            "floor_gib": 8,
            "tier": "gold",
            "backend": {"kind": "cgroup", "path": "a/db"},
        },
        {
            "name": "vm1",
            "provisioned_gib": 8,
            "backend": {"kind": "qemu", "qmp_socket": "/run/vm1.qmp", "agent_socket": "/run/vm1.ws"},
        },
        {
            "name": "vm2",
            "provisioned_gib": 8,
            "backend": {"kind": "crosvm", "control_socket": "/run/vm2.sock"},
        },
    ],
}
CONFIG_KEYS = sorted(
    model_keys(RunnerConfig) | {"kind", "qmp_socket", "agent_socket", "control_socket", "path"}
)
TOML_SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.text(max_size=16),
    st.sampled_from(
        ["cgroup", "qemu", "crosvm", "sim", "static", "vpa", "oracle", "/run/x", "../x", "~nobody9/x"]
    ),
)
TOML_VALUES = st.recursive(
    TOML_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(CONFIG_KEYS) | st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
KEY_WORDS = re.compile(r"\b(" + "|".join(re.escape(k) for k in CONFIG_KEYS) + r")\b")


def _assert_config_error_is_located(error: ConfigError) -> None:
    """A ConfigError has problems, each naming a key or a line, all on one line."""
    assert error.problems
    assert "\n" not in str(error)
    for location, reason in error.problems:
        assert reason
        assert location or KEY_WORDS.search(reason), (location, reason)


def _validate_dict(data: dict[str, Any], base_dir: Path) -> None:
    try:
        config = runner_config_from_dict(data, base_dir=base_dir, label="host.toml")
    except ConfigError as error:
        _assert_config_error_is_located(error)
    else:
        assert isinstance(config, RunnerConfig) and config.guest_specs()


@st.composite
def mutated_configs(draw: st.DrawFn) -> dict[str, Any]:
    """The base config with a few keys replaced, deleted or added at random depths."""
    data = copy.deepcopy(BASE_CONFIG)
    for _ in range(draw(st.integers(1, 4))):
        node: Any = data
        while True:
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            if not keys:
                break
            key = draw(st.sampled_from(keys))
            child = node[key]
            if isinstance(child, dict | list) and child and draw(st.booleans()):
                node = child
                continue
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                node[key] = draw(TOML_VALUES)
            elif action == "delete" and isinstance(node, dict):
                del node[key]
            elif isinstance(node, dict):
                node[draw(st.sampled_from(CONFIG_KEYS) | st.text(max_size=6))] = draw(TOML_VALUES)
            break
    return data


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root-owned 0700 folder for files the fuzzers write (files in it are trusted when 0600)."""
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(data=mutated_configs())
def test_config_dicts_give_a_config_or_a_located_config_error(data: dict[str, Any], workdir: Path) -> None:
    _validate_dict(data, workdir)


@FUZZ
@given(data=st.dictionaries(st.sampled_from(CONFIG_KEYS) | st.text(max_size=6), TOML_VALUES, max_size=6))
def test_random_toml_like_dicts_give_a_located_config_error(data: dict[str, Any], workdir: Path) -> None:
    _validate_dict(data, workdir)


@pytest.mark.parametrize(
    ("change", "location"),
    [
        # Crashed before the fix (the dict fuzzer, "~nobody9/x"): RunnerConfig.resolve raised
        # RuntimeError from Path.expanduser for an unknown user.
        ({"policy": {"name_or_path": "~nobody9/policy"}}, "policy.name_or_path"),
        ({"audit": {"path": "~nobody9/audit.jsonl"}}, "audit.path"),
        ({"record": {"dir": "~nobody9/trace"}}, "record.dir"),
        # NUL characters: every later system call with the path would raise ValueError.
        ({"audit": {"path": "audit\0.jsonl"}}, "audit.path"),
        ({"host": {"cgroup_root": "/sys/fs/cgroup\0"}}, "host.cgroup_root"),
    ],
)
def test_paths_that_cannot_be_used_are_config_errors(
    change: dict[str, Any], location: str, workdir: Path
) -> None:
    data = copy.deepcopy(BASE_CONFIG)
    for section, values in change.items():
        data[section] = {**data[section], **values}
    with pytest.raises(ConfigError) as info:
        runner_config_from_dict(data, base_dir=workdir, label="host.toml")
    assert location in [loc for loc, _ in info.value.problems], info.value.problems


@pytest.mark.parametrize(
    ("key", "location"), [("", '""'), ("a,b", '"a,b"'), ("\n", '"\\n"'), ("list[str]", '"list[str]"')]
)
def test_odd_key_names_are_named_unknown_keys(key: str, location: str, workdir: Path) -> None:
    # Found by the dict fuzzer: these keys were reported as "host.toml: unknown key" with no key
    # (the location dropped them), or broke the one-line message with a newline.
    data = {**copy.deepcopy(BASE_CONFIG), key: []}
    with pytest.raises(ConfigError) as info:
        runner_config_from_dict(data, base_dir=workdir, label="host.toml")
    assert info.value.problems == [(location, "unknown key (key names are letters, digits, '_' and '-')")]
    assert "\n" not in str(info.value)


def _toml(data: dict[str, Any]) -> str:
    """A small TOML writer for the base config (tables, arrays of tables, inline tables)."""

    def value(v: Any) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return json.dumps(v)

    lines: list[str] = []
    for section, body in data.items():
        if isinstance(body, list):
            for item in body:
                lines.append(f"[[{section}]]")
                lines += [f"{k} = {value(v)}" for k, v in item.items()]
            continue
        lines.append(f"[{section}]")
        for key, item in body.items():
            if isinstance(item, dict):
                lines.append(f"[{section}.{key}]")
                lines += [f"{k} = {value(v)}" for k, v in item.items()]
            else:
                lines.append(f"{key} = {value(item)}")
    return "\n".join(lines) + "\n"


BASE_TOML = _toml(BASE_CONFIG)


def _load_file(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    os.chmod(path, 0o600)
    try:
        config = load_runner_config(path)
    except ConfigError as error:
        _assert_config_error_is_located(error)
        assert error.path == str(path)
    else:
        assert isinstance(config, RunnerConfig)


def test_the_base_config_file_loads(workdir: Path) -> None:
    path = workdir / "base.toml"
    path.write_text(BASE_TOML)
    os.chmod(path, 0o600)
    assert [g.name for g in load_runner_config(path).guest] == ["db", "vm1", "vm2"]


@FUZZ_FILES
@given(content=st.binary(max_size=600))
def test_config_files_of_random_bytes_give_a_located_config_error(content: bytes, workdir: Path) -> None:
    _load_file(workdir / "random.toml", content)


TOML_NOISE = [b"[", b"]", b"{", b'"', b"=", b"\n", b"\\u0000", b"1" * 5000, b"[" * 1200, b"{a=" * 1200]
"""Bytes a mutation inserts: TOML syntax, a NUL escape, a 5000-digit number, deep nesting."""


@st.composite
def mutated_toml(draw: st.DrawFn) -> bytes:
    """The base config file with lines deleted, duplicated or cut, and bytes inserted."""
    lines = BASE_TOML.encode().splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 5))):
        index = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["delete", "duplicate", "cut", "insert"]))
        if action == "delete" and len(lines) > 1:
            del lines[index]
        elif action == "duplicate":
            lines.insert(index, lines[index])
        elif action == "cut":
            lines[index] = lines[index][: draw(st.integers(0, len(lines[index])))]
        else:
            at = draw(st.integers(0, len(lines[index])))
            noise = draw(st.binary(max_size=8) | st.sampled_from(TOML_NOISE))
            lines[index] = lines[index][:at] + noise + lines[index][at:]
    return b"".join(lines)


@FUZZ_FILES
@given(content=mutated_toml())
def test_mutated_config_files_give_a_config_or_a_located_config_error(content: bytes, workdir: Path) -> None:
    _load_file(workdir / "mutated.toml", content)


@pytest.mark.parametrize(
    ("content", "location", "reason"),
    [
        # Crashed before the fix (the file fuzzers): tomllib raised ValueError / RecursionError, and read_text
        # UnicodeDecodeError, none of them a ConfigError.
        (b"[host]\nname = 1" + b"9" * 5000 + b"\n", "line 2", "TOML value"),
        (b"[host]\n\nx = " + b"[" * 3000 + b"]" * 3000 + b"\n", "line 3", "nested too deeply"),
        (b"x = " + b"{a = " * 3000 + b"1" + b"}" * 3000, "line 1", "nested too deeply"),
        (b'[host]\nname = "\xff"\n', "line 2", "not UTF-8"),
    ],
)
def test_config_files_that_crashed_the_toml_reader(
    content: bytes, location: str, reason: str, workdir: Path
) -> None:
    path = workdir / "crash.toml"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError) as info:
        load_runner_config(path)
    assert info.value.problems[0][0] == location and reason in info.value.problems[0][1]


# =====================================================================================================
# Traces with damaged parts
# =====================================================================================================

ROWS_PER_PART = 4


def _sample(t: int) -> GuestSample:
    edges = (1000, 5000)
    histogram = Histogram(f"g{t % 2}", 0, edges, {"anon": [t, 2, 3], "file": [4, 5, 6]})
    return GuestSample(
        time_ms=t * 1000,
        host="h",
        guest=f"g{t % 2}",
        histogram=histogram,
        usage_bytes=t * 100,
        events=["oom"] if t % 3 == 0 else [],
        flags=["gap_before"] if t % 5 == 0 else [],
    )


@pytest.fixture(scope="module")
def base_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real trace of three parts of four rows each, written by the writer."""
    directory = tmp_path_factory.mktemp("trace") / "t"
    with TraceWriter(directory, source="fuzz", flush_rows=ROWS_PER_PART) as writer:
        writer.append_many(_sample(t) for t in range(3 * ROWS_PER_PART))
    assert len(list(directory.glob("part-*.parquet"))) == 3
    return directory


def _keys(table: pa.Table) -> set[tuple[Any, ...]]:
    return set(
        zip(*(table.column(c).to_pylist() for c in ("host", "guest", "time_ms", "usage_bytes")), strict=True)
    )


@contextlib.contextmanager
def copy_of(base_trace: Path) -> Iterator[Path]:
    """A fresh copy of the base trace, removed afterwards."""
    folder = Path(tempfile.mkdtemp(dir=base_trace.parent))
    try:
        shutil.copytree(base_trace, folder / "t")
        yield folder / "t"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


FOREIGN_TABLES = {
    "unknown columns": pa.table({"x": [1, 2]}),
    "time as text": pa.table({"time_ms": ["a"], "host": ["h"], "guest": ["g"]}),
    "host as int": pa.table({"time_ms": [1], "host": [1], "guest": ["g"]}),
    "time as list": pa.table({"time_ms": [[1]], "host": ["h"], "guest": ["g"]}),
    "no columns": pa.table({}),
    "required only": pa.table({"time_ms": pa.array([99_000], pa.int64()), "host": ["h"], "guest": ["g"]}),
}


@st.composite
def damages(draw: st.DrawFn) -> tuple[str, Any]:
    kind = draw(st.sampled_from(["truncate", "flip", "flip footer", "zero", "garbage", "foreign"]))
    if kind == "truncate":
        return kind, draw(st.floats(0, 1, exclude_max=True))
    if kind in ("flip", "flip footer"):
        return kind, draw(
            st.lists(
                st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=6
            )
        )
    if kind == "garbage":
        return kind, draw(st.binary(max_size=300) | st.just(b"PAR1") | st.just(b"PAR1" * 8))
    if kind == "foreign":
        return kind, draw(st.sampled_from(sorted(FOREIGN_TABLES)))
    return kind, None


def _damage(path: Path, kind: str, arg: Any) -> None:
    data = bytearray(path.read_bytes())
    if kind == "truncate":
        path.write_bytes(bytes(data[: int(arg * len(data))]))
    elif kind in ("flip", "flip footer"):
        span = 400 if kind == "flip footer" else len(data)
        for where, mask in arg:
            data[len(data) - span + int(where * span)] ^= mask
        path.write_bytes(bytes(data))
    elif kind == "zero":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(arg)
    else:
        pq.write_table(FOREIGN_TABLES[arg], path)


def _check_damaged_trace(directory: Path, damaged: Path, intact_keys: set[tuple[Any, ...]]) -> None:
    report = validate_trace(directory)  # never raises for a damaged part
    assert report.parts_checked == 3
    assert report.rows_checked >= 2 * ROWS_PER_PART  # the intact parts are checked all the same
    try:
        strict = TraceReader(directory)
        table = strict.read_table()
        samples = list(strict.iter_samples())
    except TraceError as error:
        assert "\n" not in str(error)
        assert not report.ok and any(damaged.name in p for p in report.problems), report.problems
    else:
        assert table.num_rows == len(samples)
    lenient = TraceReader(directory, skip_bad_parts=True)
    table = lenient.read_table()
    assert intact_keys <= _keys(table), "an intact part was not read"
    assert {path.name for path, _ in lenient.bad_parts} <= {damaged.name}
    if lenient.bad_parts:
        assert table.num_rows == 2 * ROWS_PER_PART
    try:
        list(lenient.iter_samples())
    except TraceError as error:  # a damaged part that still decodes may hold a histogram that is not one
        assert "\n" not in str(error)


@FUZZ_FILES
@given(part=st.integers(0, 2), damage=damages())
def test_a_damaged_part_is_named_and_the_intact_parts_still_read(
    part: int, damage: tuple[str, Any], base_trace: Path
) -> None:
    with copy_of(base_trace) as directory:
        parts = sorted(directory.glob("part-*.parquet"))
        intact = set().union(*(_keys(pq.read_table(p)) for i, p in enumerate(parts) if i != part))
        _damage(parts[part], *damage)
        _check_damaged_trace(directory, parts[part], intact)


@pytest.mark.parametrize("name", sorted(set(FOREIGN_TABLES) - {"required only"}))
def test_parts_of_another_schema_are_refused_by_name(name: str, base_trace: Path) -> None:
    # Crashed before the fix (the damaged-part fuzzer): "time as list" escaped from the reader as
    # ArrowNotImplementedError,
    # "unknown columns" as TypeError (hosts() sorting null host names).
    with copy_of(base_trace) as directory:
        _check_foreign_part(directory, FOREIGN_TABLES[name])


def test_a_part_with_only_the_required_columns_is_read_and_reported(base_trace: Path) -> None:
    # The reader reads missing nullable columns as null (the schema's rule); the validator still
    # reports that no wsrl writer made this part.
    with copy_of(base_trace) as directory:
        parts = sorted(directory.glob("part-*.parquet"))
        pq.write_table(FOREIGN_TABLES["required only"], parts[1])
        assert any(
            p.startswith(f"{parts[1].name}: no wsrl.schema_version")
            for p in validate_trace(directory).problems
        )
        table = TraceReader(directory).read_table()
        assert table.num_rows == 2 * ROWS_PER_PART + 1 and ("h", "g", 99_000, None) in _keys(table)


def _check_foreign_part(directory: Path, table: pa.Table) -> None:
    parts = sorted(directory.glob("part-*.parquet"))
    intact = _keys(pq.read_table(parts[0])) | _keys(pq.read_table(parts[2]))
    pq.write_table(table, parts[1])
    report = validate_trace(directory)
    assert any(p.startswith(parts[1].name) for p in report.problems)
    with pytest.raises(TraceError, match=re.escape(parts[1].name)):
        TraceReader(directory).read_table()
    lenient = TraceReader(directory, skip_bad_parts=True)
    assert _keys(lenient.read_table()) == intact and [p for p, _ in lenient.bad_parts] == [parts[1]]


def test_a_part_with_invalid_utf8_is_named(base_trace: Path) -> None:
    # Crashed before the fix (bytes flipped in an uncompressed part): TraceReader.hosts() and
    # iter_samples() raised UnicodeDecodeError, and
    # validate_trace reported nothing.
    with copy_of(base_trace) as directory:
        _check_invalid_utf8_part(directory)


def _check_invalid_utf8_part(directory: Path) -> None:
    parts = sorted(directory.glob("part-*.parquet"))
    table = pq.read_table(parts[1])
    host = table.column("host").combine_chunks()
    validity, offsets, data = host.buffers()
    broken = bytearray(data.to_pybytes())
    broken[0] = 0xFF
    bad = pa.Array.from_buffers(pa.string(), len(host), [validity, offsets, pa.py_buffer(bytes(broken))])
    table = table.set_column(table.schema.get_field_index("host"), table.schema.field("host"), bad)
    pq.write_table(table, parts[1], compression="none")
    assert any(
        p.startswith(parts[1].name) and re.search("UTF-?8", p) for p in validate_trace(directory).problems
    )
    with pytest.raises(TraceError, match=re.escape(parts[1].name)):
        TraceReader(directory).hosts()
    lenient = TraceReader(directory, skip_bad_parts=True)
    assert lenient.hosts() == ["h"] and len(list(lenient.iter_samples())) == 2 * ROWS_PER_PART


# Rows of the right schema with the wrong content: nulls where none belong, negative sizes,
# histograms whose lengths disagree, nulls inside lists.
INT64 = st.integers(-(2**63), 2**63 - 1)
MAYBE_INT = st.none() | INT64
MAYBE_INT_LIST = st.none() | st.lists(MAYBE_INT, max_size=4)


def _foreign_rows(nulls_in_required: bool) -> st.SearchStrategy[list[dict[str, Any]]]:
    maybe = (lambda s: st.none() | s) if nulls_in_required else (lambda s: s)
    return st.lists(
        st.fixed_dictionaries(
            {
                "time_ms": maybe(INT64),
                "host": maybe(st.text(max_size=3)),
                "guest": maybe(st.text(max_size=3)),
                "hist_edges_ms": MAYBE_INT_LIST,
                "hist_anon_bytes": MAYBE_INT_LIST,
                "hist_file_bytes": MAYBE_INT_LIST,
                "hist_extra_bytes": st.none()
                | st.lists(st.tuples(st.text(max_size=3), MAYBE_INT_LIST), max_size=2),
                "usage_bytes": MAYBE_INT,
                "psi_some_avg10": st.none() | st.floats(),
                "events": st.none() | st.lists(st.none() | st.text(max_size=4), max_size=3),
                "flags": st.none()
                | st.lists(st.none() | st.sampled_from(["gap_before", "bogus", ""]), max_size=3),
            }
        ),
        min_size=1,
        max_size=6,
    )


@FUZZ_FILES
@given(data=st.data(), nulls_in_required=st.booleans())
def test_parts_of_the_right_schema_with_wrong_content_are_reported(
    data: st.DataObject, nulls_in_required: bool, base_trace: Path
) -> None:
    rows = data.draw(_foreign_rows(nulls_in_required))
    schema = TRACE_SCHEMA
    if nulls_in_required:  # a foreign writer that made the required columns nullable
        schema = pa.schema([f.with_nullable(True) for f in TRACE_SCHEMA], metadata=TRACE_SCHEMA.metadata)
    with copy_of(base_trace) as directory:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), directory / "part-000003.parquet")
        report = validate_trace(directory)
        assert report.parts_checked == 4
        if nulls_in_required:
            assert any(p.startswith("part-000003.parquet: schema differs") for p in report.problems)
        else:
            assert report.rows_checked == 3 * ROWS_PER_PART + len(rows)
        try:
            reader = TraceReader(directory)
            summary = reader.summary()
            reader.hosts()
            samples = list(reader.iter_samples())
        except TraceError as error:
            assert "\n" not in str(error)
        else:
            assert summary.samples == len(samples) == 3 * ROWS_PER_PART + len(rows)


def test_null_flags_and_null_required_values_in_a_part(base_trace: Path) -> None:
    # Found by the right-schema fuzzer: a null inside "flags" made validate_trace raise TypeError
    # (sorting None with names), and rows with a null host were silently left out by iter_samples.
    row = {"time_ms": 1, "host": "h2", "guest": "g", "flags": [None, "gap_before"], "hist_extra_bytes": None}
    with copy_of(base_trace) as directory:
        pq.write_table(pa.Table.from_pylist([row], schema=TRACE_SCHEMA), directory / "part-000003.parquet")
        assert (
            "part-000003.parquet: column flags: unknown flag(s) [None]" in validate_trace(directory).warnings
        )
        assert len(list(TraceReader(directory).iter_samples())) == 3 * ROWS_PER_PART + 1
    nullable = pa.schema([f.with_nullable(True) for f in TRACE_SCHEMA], metadata=TRACE_SCHEMA.metadata)
    with copy_of(base_trace) as directory:
        part = directory / "part-000003.parquet"
        pq.write_table(pa.Table.from_pylist([{**row, "host": None}], schema=nullable), part)
        with pytest.raises(TraceError, match=r"part-000003\.parquet: unreadable part: column host: 1 null"):
            list(TraceReader(directory).iter_samples())
        lenient = TraceReader(directory, skip_bad_parts=True)
        assert len(list(lenient.iter_samples())) == 3 * ROWS_PER_PART
        assert [p.name for p, _ in lenient.bad_parts] == [part.name]


# =====================================================================================================
# QMP answers
# =====================================================================================================


def _size_or_backend_error(parse: Any, answer: object) -> int | None:
    try:
        value = parse(answer)
    except BackendError as error:
        assert "unexpected answer" in str(error) and "\n" not in str(error)
        return None
    assert isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63
    return value


@FUZZ
@given(answer=JSON_VALUES)
def test_qmp_answers_give_numbers_or_a_backend_error(answer: object) -> None:
    ram = _size_or_backend_error(parse_memory_size_summary, answer)
    assert ram is None or ram > 0
    _size_or_backend_error(parse_query_balloon, answer)
    try:
        stats = parse_guest_stats(answer)
    except BackendError as error:
        assert "qom-get guest-stats" in str(error)
    else:
        assert stats is None or isinstance(stats, GuestStats)
    found = find_balloon_child(answer, "/machine/peripheral")
    assert found is None or found.startswith("/machine/peripheral/")


@FUZZ
@given(
    base=JSON_VALUES,
    plugged=JSON_VALUES,
    actual=JSON_VALUES,
    last_update=JSON_VALUES,
    stats=st.dictionaries(
        st.sampled_from(["stat-total-memory", "stat-free-memory", "stat-major-faults"]) | st.text(max_size=8),
        JSON_VALUES,
        max_size=5,
    ),
    children=st.lists(
        st.dictionaries(st.sampled_from(["name", "type"]), JSON_VALUES) | JSON_VALUES, max_size=4
    ),
)
def test_qmp_answers_of_the_right_shape_with_any_values(
    base: object,
    plugged: object,
    actual: object,
    last_update: object,
    stats: dict[str, Any],
    children: list[Any],
) -> None:
    ram = _size_or_backend_error(parse_memory_size_summary, {"base-memory": base, "plugged-memory": plugged})
    if ram is not None:
        assert ram == base + plugged  # type: ignore[operator]
    if _size_or_backend_error(parse_query_balloon, {"actual": actual}) is not None:
        assert actual == int(actual)  # type: ignore[arg-type]
    result = parse_guest_stats({"stats": stats, "last-update": last_update})
    if result is not None:
        assert result.last_update_s > 0 and not isinstance(result.last_update_s, bool)
        assert all(isinstance(v, int) and 0 <= v < U64_MAX for v in result.values.values())
        assert set(result.values) <= set(stats)
    children.append({"name": "balloon0", "type": "child<virtio-balloon-pci>"})
    assert find_balloon_child(children, "/m") is not None


@pytest.mark.parametrize(
    ("parse", "answer"),
    [
        # Misread before the fix (found reviewing what the fuzzer feeds): True passed as an int (RAM
        # of 1 byte), sizes of 2^63 and more and negative plugged memory were taken.
        (parse_memory_size_summary, {"base-memory": True}),
        (parse_memory_size_summary, {"base-memory": 2**63, "plugged-memory": 0}),
        (parse_memory_size_summary, {"base-memory": 2**62, "plugged-memory": 2**62}),
        (parse_memory_size_summary, {"base-memory": 1024, "plugged-memory": -512}),
        (parse_query_balloon, {"actual": True}),
        (parse_query_balloon, {"actual": 2**64}),
    ],
)
def test_qmp_answers_that_were_misread(parse: Any, answer: object) -> None:
    with pytest.raises(BackendError, match="unexpected answer"):
        parse(answer)


def test_qom_list_entries_that_crashed_the_balloon_search() -> None:
    # Crashed before the fix (found reviewing what the fuzzer feeds): a non-object qom-list entry
    # raised AttributeError, an entry without a name KeyError; last-update true was a time.
    assert find_balloon_child([1, "x", None, {"type": "child<virtio-balloon-pci>"}], "/m") is None
    assert find_balloon_child([[], {"name": "b", "type": "child<virtio-balloon-pci>"}], "/m") == "/m/b"
    assert parse_guest_stats({"stats": {}, "last-update": True}) is None


# =====================================================================================================
# crosvm output
# =====================================================================================================

PATHOLOGICAL_JSON = [b"[" * 100_000, b'{"BalloonStats": ' + b"9" * 5000 + b"}", b"-" + b"1" * 4400]
"""JSON that json.loads refuses with RecursionError or ValueError (too many digits), not JSONDecodeError."""


@FUZZ
@given(data=st.binary(max_size=400) | st.sampled_from(PATHOLOGICAL_JSON))
def test_crosvm_output_of_random_bytes_is_a_parse_error(data: bytes) -> None:
    for parse in (parse_balloon_stats, lambda d: crosvm_format.parse(d, FormatOptions(guest="vm"))):
        try:
            parse(data)
        except ParseError as error:
            assert error.location and error.field and error.reason


@FUZZ
@given(
    stats=st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=6),
    actual=JSON_VALUES,
    extra=JSON_VALUES,
)
@example(stats={"\n": []}, actual=0, extra=None)  # found by hypothesis: a key that broke the line
def test_crosvm_balloon_stats_of_any_values(stats: dict[str, Any], actual: object, extra: object) -> None:
    for document in (
        {"BalloonStats": {"stats": stats, "balloon_actual": actual}},
        {"BalloonStats": extra},
        extra,
    ):
        try:
            text = json.dumps(document)
        except ValueError:  # NaN and infinities are still valid json.dumps output; nothing else fails
            continue
        try:
            parsed = parse_balloon_stats(text.encode())
        except ParseError as error:
            assert error.location.startswith(("$", "line")) and "\n" not in str(error)
        else:
            assert 0 <= parsed.balloon_actual_bytes < 2**63
            assert all(0 <= v < 2**64 - 1 for v in parsed.stats.values())


@pytest.mark.parametrize(
    "data",
    [
        # Crashed before the fix (the bytes fuzzer with PATHOLOGICAL_JSON): RecursionError and
        # ValueError (an integer of more than 4300 digits) escaped.
        b"[" * 100_000,
        b'{"BalloonStats": {"stats": {}, "balloon_actual": ' + b"9" * 5000 + b"}}",
        b'{"BalloonStats": {"stats": {"x": ' + b"[" * 5000 + b"]" * 5000 + b'}, "balloon_actual": 0}}',
    ],
)
def test_crosvm_outputs_that_crashed_the_parser(data: bytes) -> None:
    with pytest.raises(ParseError, match="JSON"):
        parse_balloon_stats(data)


# =====================================================================================================
# The guest stream
# =====================================================================================================

SMALL_FRAME_CAP = 4096
SMALL_RECORD_CAP = 16 * 1024
LRU_GEN_BODY = (DATA / "lru_gen" / "real-lru_gen-1.txt").read_bytes()
HISTOGRAM = Histogram("vm", 0, (1000, 4000), {"anon": [4096, 0, 8192], "file": [0, 4096, 0]})


def _odd_frame(
    seq: bytes, name: bytes, length: bytes | None, uptime: bytes, body: bytes, closed: bool
) -> bytes:
    """A frame with an odd header; ``length`` None: the body's true length, ``closed``: with its trailer."""
    size = b"%d" % len(body) if length is None else length
    trailer = b"WSRL-END seq=%s name=%s\n" % (seq, name) if closed else b""
    return b"WSRL-DUMP v1 seq=%s name=%s len=%s uptime=%s\n%s%s" % (seq, name, size, uptime, body, trailer)


def _units_bytes() -> st.SearchStrategy[bytes]:
    names = st.sampled_from(["lru_gen", "lru_gen_full", "meminfo", "x.y-z"])
    return st.one_of(
        st.builds(encode_dump, st.integers(0, 10**6), names, st.binary(max_size=64), st.floats(0, 1e6)),
        st.builds(
            lambda s: encode_dump(s, "lru_gen", LRU_GEN_BODY[: SMALL_FRAME_CAP - 1]), st.integers(0, 9)
        ),
        st.builds(
            lambda s: encode_histogram_record(HISTOGRAM, seq=s, time_ms=1, source="lru_gen"),
            st.integers(0, 10**6),
        ),
        st.builds(
            lambda s: encode_pressure_record(
                seq=s, time_ms=2, some={"avg10": 5.0, "total": 9}, full=None, threshold_avg10=1.0
            ),
            st.integers(0, 10**6),
        ),
        st.builds(lambda v: json.dumps(v).encode() + b"\n", JSON_VALUES),
        st.builds(
            lambda d: b'{"v": 1, "kind": "histogram", "seq": 1, "time_ms": 1, ' + d + b"}\n",
            st.binary(max_size=40),
        ),
        st.builds(
            _odd_frame,
            st.sampled_from([b"1", b"0" * 300, b"99", b""]),
            st.sampled_from([b"lru_gen", b"a b", b""]),
            st.sampled_from([b"", b"99999999999", b"-1", None]),
            st.sampled_from([b"1.0", b".", b"1.2.3", b"..", b""]),
            st.binary(max_size=20),
            st.booleans(),
        ),
        # JSON the decoder's json.loads cannot take: too deep, or an integer of too many digits.
        st.sampled_from(
            [b'{"v": 1, "seq": ' + b"7" * 5000 + b"}\n", b'{"a": ' + b"[" * 3000 + b"]" * 3000 + b"}\n"]
        ),
        st.sampled_from(
            [b"WSRL-DUMP v1 ", b"WSRL-DU", b"WSRL-END seq=1 name=lru_gen\n", b"\n{", b"{", b"\r\n"]
        ),
        st.binary(max_size=80),
    )


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """A stream of valid, damaged and random units, and the points it is split at."""
    stream = b"".join(draw(st.lists(_units_bytes(), max_size=8)))
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    return stream, cuts


def _feed(decoder: StreamDecoder, stream: bytes, cuts: list[int]) -> list[object]:
    units: list[object] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        units += decoder.feed(stream[start:end], 0.0)
        assert decoder.buffered_bytes <= decoder.max_buffered_bytes
    return units


@FUZZ
@given(stream_and_cuts=streams())
def test_guest_streams_decode_without_errors_within_the_buffer_cap(
    stream_and_cuts: tuple[bytes, list[int]],
) -> None:
    stream, cuts = stream_and_cuts
    decoder = StreamDecoder(SMALL_FRAME_CAP, SMALL_RECORD_CAP)
    units = _feed(decoder, stream, cuts)
    for unit in units:
        assert isinstance(unit, Dump | HistogramRecord | PressureRecord)
        if isinstance(unit, Dump):
            assert len(unit.data) <= SMALL_FRAME_CAP
            try:  # what the reader does with a dump
                merged = merge_lru_gen(parse_bytes("lru_gen", unit.data, FormatOptions()), None, "vm")
            except (ParseError, HistogramError) as error:
                assert "\n" not in str(error)
            else:
                assert merged.guest == "vm"
        elif isinstance(unit, HistogramRecord):
            assert unit.histogram("vm").total_bytes("anon") == sum(unit.anon_bytes)
    # How the stream was cut into reads does not change what it decodes to.
    whole = StreamDecoder(SMALL_FRAME_CAP, SMALL_RECORD_CAP).feed(stream, 0.0)
    assert [repr(u) for u in units] == [repr(u) for u in whole]


@FUZZ
@given(line=st.binary(max_size=300) | st.builds(lambda v: json.dumps(v).encode(), JSON_VALUES))
def test_json_lines_give_a_record_or_a_parse_error(line: bytes) -> None:
    try:
        record = parse_record(line)
    except ParseError as error:
        assert error.source == "guest_stream" and error.field and error.reason
    else:
        assert record is None or isinstance(record, HistogramRecord | PressureRecord)


@pytest.mark.parametrize(
    "stream",
    [
        # Crashed before the fix (the stream fuzzer): float(".") of a header's uptime raised
        # ValueError out of feed().
        b"WSRL-DUMP v1 seq=1 name=lru_gen len=0 uptime=.\nWSRL-END seq=1 name=lru_gen\n",
        b"WSRL-DUMP v1 seq=1 name=lru_gen len=0 uptime=1.2.3\nWSRL-END seq=1 name=lru_gen\n",
        # Crashed before the fix (the stream fuzzer): json.loads raised ValueError (an integer of
        # more than 4300 digits), which is no JSONDecodeError.
        b'{"v": 1, "kind": "pressure", "seq": ' + b"7" * 5000 + b"}\n",
    ],
)
def test_stream_units_that_crashed_the_decoder(stream: bytes) -> None:
    decoder = StreamDecoder()
    assert (
        decoder.feed(stream + encode_histogram_record(HISTOGRAM, seq=3, time_ms=1, source="wsr"), 0.0)[-1].seq
        == 3
    )
    assert decoder.bad_frames + decoder.bad_records == 1


# =====================================================================================================
# Size bounds: giant inputs are refused without being read whole
# =====================================================================================================


def test_a_giant_config_file_is_refused_without_being_read(workdir: Path) -> None:
    path = workdir / "giant.toml"
    with path.open("wb") as handle:
        handle.write(BASE_TOML.encode())
        handle.truncate(64 * 1024**3)  # 64 GiB, sparse: reading it would exhaust the runner's memory
    os.chmod(path, 0o600)
    try:
        with pytest.raises(
            ConfigError, match=rf"config file refused: {64 * 1024**3} bytes is larger than the"
        ):
            load_runner_config(path)
    finally:
        path.unlink()
    endless = workdir / "endless.toml"
    endless.symlink_to("/dev/zero")
    with pytest.raises(ConfigError, match="not a regular file"):
        load_runner_config(endless)


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_a_giant_frame_is_discarded_as_it_arrives() -> None:
    decoder = StreamDecoder()  # the production caps: 16 MiB frames
    length = decoder.max_buffered_bytes * 2
    header = b"WSRL-DUMP v1 seq=1 name=lru_gen len=%d uptime=1.00\n" % length
    chunk = 64 * 1024
    assert decoder.feed(header, 0.0) == []
    zeros = bytes(chunk)
    for _ in range(math.ceil(length / chunk)):
        assert decoder.feed(zeros, 0.0) == []
        assert decoder.buffered_bytes <= chunk  # never the frame: at most what one read brought
    decoder.feed(b"WSRL-END seq=1 name=lru_gen\n", 0.0)
    units = decoder.feed(encode_histogram_record(HISTOGRAM, seq=5, time_ms=1, source="lru_gen"), 0.0)
    assert [u.seq for u in units] == [5] and decoder.oversized == 1  # type: ignore[union-attr]


def test_a_giant_json_line_is_discarded_as_it_arrives() -> None:
    decoder = StreamDecoder()  # the production caps: 1 MiB records
    line = b'{"v": 1, "kind": "histogram", "pad": "' + b"a" * (3 * 1024 * 1024) + b'"}\n'
    seen_max = 0
    for part in _chunks(
        line + encode_histogram_record(HISTOGRAM, seq=6, time_ms=1, source="lru_gen"), 64 * 1024
    ):
        units = decoder.feed(part, 0.0)
        seen_max = max(seen_max, decoder.buffered_bytes)
    assert seen_max < 1024 * 1024  # a partial line only ever holds less than the record cap
    assert [u.seq for u in units] == [6] and decoder.oversized == 1  # type: ignore[union-attr]


def test_a_read_that_ends_in_noise_leaves_the_next_read_mid_line() -> None:
    """Found by the stream fuzz test: noise, then a record line with no newline between them."""
    record = (
        b'{"v":1,"kind":"histogram","seq":0,"time_ms":1,"source":"lru_gen","memcg":null,'
        b'"edges_ms":[1000,4000],"anon":[4096,0,8192],"file":[0,4096,0]}\n'
    )
    stream = b"\x00" * 9 + record
    whole = StreamDecoder(SMALL_FRAME_CAP, SMALL_RECORD_CAP).feed(stream, 0.0)
    split = _feed(StreamDecoder(SMALL_FRAME_CAP, SMALL_RECORD_CAP), stream, [9])
    assert whole == split == []  # the "{" is inside the noise's line, however the reads fall
    # After a newline the same record is read, also when the newline ends the previous read.
    stream = b"\x00" * 9 + b"\n" + record
    assert len(_feed(StreamDecoder(SMALL_FRAME_CAP, SMALL_RECORD_CAP), stream, [10])) == 1
    assert len(StreamDecoder(SMALL_FRAME_CAP, SMALL_RECORD_CAP).feed(stream, 0.0)) == 1
