"""Parsers for every real source of working-set histograms, each into :class:`wsrl.histogram.Histogram`.

Each parser module exposes ``parse(data, options) -> list[Histogram]`` taking the raw bytes of one
capture and a :class:`FormatOptions`. A malformed input raises :class:`wsrl.errors.ParseError`
naming the source, the line (or byte, record, JSON path) and the field; no parser raises anything
else, and every histogram it returns adds up to the bytes the input stated.

| name      | source                                                                                 |
| --------- | -------------------------------------------------------------------------------------- |
| `wsr`     | working-set reporting `memory.workingset.page_age` / `nodeN/workingset_report/page_age` |
| `lru_gen` | MGLRU `/sys/kernel/debug/lru_gen` and `lru_gen_full`                                   |
| `crosvm`  | `crosvm balloon_ws` JSON                                                               |
| `virtio`  | virtio-balloon working-set records (2023 RFC records, v4 report struct)                |
| `damon`   | `damo report access --style recency-sz-hist` text and the DAMON sysfs region listing    |
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from wsrl.agent.bins import Bins
from wsrl.agent.kernel_text import MAX_INPUT_BYTES, KernelTextError, decode_lines
from wsrl.errors import HistogramError, ParseError
from wsrl.histogram import Histogram

FORMAT_NAMES: tuple[str, ...] = ("wsr", "lru_gen", "crosvm", "virtio", "damon")


class FormatOptions(BaseModel):
    """Settings a source needs beyond its bytes. Every field has the default a real source implies."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    guest: str | None = Field(
        default=None,
        description="Guest name for sources that do not name one (crosvm, virtio, DAMON, a "
        "per-node WSR file). Defaults to the file name's stem.",
    )
    node: int | None = Field(
        default=None,
        description="NUMA node for a capture that does not say (a per-node WSR file: taken from "
        "a 'nodeN' path component when present).",
    )
    page_size_bytes: int = Field(
        default=4096, gt=0, description="Page size for MGLRU page counts (lru_gen prints pages)."
    )
    crosvm_bytes_order: Literal["file,anon", "anon,file"] = Field(
        default="file,anon",
        description="Meaning of crosvm's 'bytes': [A, B]. crosvm's own event code reads bytes[0] as "
        "file memory; the Linux/QEMU RFCs put anon first.",
    )
    virtio_layout: Literal["auto", "rfc2023", "v4"] = Field(
        default="auto",
        description="virtio-balloon record layout: the 2023 RFC's 32-byte records, the v4 report "
        "struct, or auto-detect from the length.",
    )
    damon_aggr_us: int | None = Field(
        default=None,
        gt=0,
        description="DAMON aggregation interval (us) for a sysfs capture that does not include "
        "monitoring_attrs/intervals/aggr_us; unset means DAMON's default, 100 ms (recorded in meta).",
    )
    damon_region_type: Literal["anon", "file"] = Field(
        default="anon",
        description="DAMON has no anon/file split: the memory type its bytes are counted as.",
    )


Parser = Callable[[bytes, FormatOptions], list[Histogram]]


def get_parser(format_name: str) -> Parser:
    """Return the ``parse`` function of a format, by name."""
    if format_name not in FORMAT_NAMES:
        raise ParseError(format_name, "format", "name", f"unknown format; choose one of {FORMAT_NAMES}")
    module = importlib.import_module(f"wsrl.formats.{format_name}")
    return module.parse


def parse_bytes(format_name: str, data: bytes, options: FormatOptions | None = None) -> list[Histogram]:
    """Parse one capture held in memory."""
    if len(data) > MAX_INPUT_BYTES:
        raise ParseError(
            format_name, "input", "size", f"{len(data)} bytes exceeds the {MAX_INPUT_BYTES}-byte limit"
        )
    return get_parser(format_name)(data, options or FormatOptions())


def parse_file(format_name: str, path: str | Path, options: FormatOptions | None = None) -> list[Histogram]:
    """Parse one capture file; errors name the file. Reads at most :data:`MAX_INPUT_BYTES` + 1."""
    path = Path(path)
    options = options or FormatOptions()
    updates: dict[str, object] = {}
    if options.guest is None:
        updates["guest"] = path.stem
    if options.node is None:
        node = next((p[4:] for p in reversed(path.parts) if p.startswith("node") and p[4:].isdigit()), None)
        if node is not None:
            updates["node"] = int(node)
    options = options.model_copy(update=updates)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise ParseError(format_name, str(path), "file", exc.strerror or str(exc)) from exc
    try:
        return parse_bytes(format_name, data, options)
    except ParseError as exc:
        raise exc.in_file(str(path)) from None


def decode_text(source: str, data: bytes) -> list[str]:
    """Decode a text capture as ASCII/UTF-8 and split it into lines, or raise a ParseError."""
    try:
        return decode_lines(source, data)
    except KernelTextError as exc:
        raise parse_error_from(exc) from None


def parse_error_from(exc: KernelTextError) -> ParseError:
    """The :class:`ParseError` of a standard-library parser's error (the same four parts)."""
    return ParseError(exc.source, exc.location, exc.field, exc.reason)


def histograms_from_bins(source: str, bins: list[Bins]) -> list[Histogram]:
    """:class:`Histogram` objects of a standard-library parser's bins (a ParseError if one is invalid)."""
    histograms = []
    for item in bins:
        try:
            histograms.append(Histogram(item.guest, item.node, item.edges_ms, item.bytes_by_type, item.meta))
        except HistogramError as exc:  # the parsers' own checks should make this unreachable
            raise ParseError(source, f"node {item.node}", "histogram", str(exc)) from None
    return histograms
