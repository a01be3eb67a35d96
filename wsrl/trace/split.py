"""Split a trace into a VM-disjoint, time-forward train / holdout pair.

A learned policy must be judged on guests it never saw and on a period after everything it
trained on. :func:`split_trace` cuts a trace along both axes at once:

* **VM-disjoint.** A guest goes to the holdout side iff its :func:`holdout_score` is below
  ``holdout_frac``. The score is the SHA-256 of the UTF-8 bytes of ``salt``, one NUL byte and the
  guest name, its first 8 bytes read as a big-endian integer and divided by ``2**64``: uniform in
  ``[0, 1)``, a pure function of the salt and the guest's name, and independent of the order or
  the set of other guests (adding guests to a trace never moves an existing guest to the other
  side). The key is the guest *name* alone, not ``host/guest``, so a name seen on several hosts
  (a migrated VM) always lands on one side: the conservative choice for keeping a holdout VM out
  of training.
* **Time-forward.** The cutoff is ``start + cutoff_frac * (end - start)`` over the whole trace's
  time range (every guest, both sides). The train trace keeps the train guests' samples strictly
  before the cutoff, the holdout trace the holdout guests' samples at or after it. The rest (train
  guests after the cutoff, holdout guests before it) is in neither. Sample times are integer ms, so
  the cutoff is stored rounded up to a whole ms (:func:`cutoff_time_ms`), which selects exactly
  the same samples as the real-valued cutoff.

Hence no holdout guest and no sample of the holdout period is ever in the train trace.

Both sides are written with :class:`wsrl.trace.writer.TraceWriter` (crash-safe parts, the same
schema; every column and every data-quality flag is copied unchanged, and the source manifest's
``source`` and ``meta`` are kept, with a ``split`` entry added to ``meta``). The source is read
one Parquet row group batch at a time, never whole. ``split.json`` is written into both outputs
last, atomically: a directory without it is an interrupted split, not a finished one.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from wsrl.errors import TraceError, WsrlError
from wsrl.trace.files import open_regular, read_json_file
from wsrl.trace.writer import TraceWriter, list_parts, read_manifest, write_json_atomically

SPLIT_FILE_NAME = "split.json"
SPLIT_FORMAT = "wsrl-split"
SPLIT_FORMAT_VERSION = 1
DEFAULT_SALT = "wsrl-split-v1"
DEFAULT_HOLDOUT_FRAC = 0.2
DEFAULT_CUTOFF_FRAC = 0.7
BATCH_ROWS = 1_000_000
"""Source rows read per batch (memory bound of the split)."""
ROWS_PER_PART = 1_000_000
"""Rows per written part, as the Bitbrains importer writes them."""
HASH_SCALE = 2**64
HASH_RULE = 'int.from_bytes(sha256(salt + "\\0" + guest)[:8], "big") / 2**64 < holdout_frac'


def holdout_score(guest: str, salt: str = DEFAULT_SALT) -> float:
    """The guest's position in ``[0, 1)``, uniform over guests and stable across runs and machines.

    It is the first 8 bytes of the SHA-256 of ``salt``, a NUL byte and ``guest`` (UTF-8), as a
    big-endian integer divided by ``2**64``.
    """
    digest = hashlib.sha256(f"{salt}\0{guest}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / HASH_SCALE


def is_holdout_guest(guest: str, *, holdout_frac: float, salt: str = DEFAULT_SALT) -> bool:
    """True iff ``guest`` belongs to the holdout side: its :func:`holdout_score` is below ``holdout_frac``."""
    return holdout_score(guest, salt) < holdout_frac


def cutoff_time_ms(start_ms: int, end_ms: int, cutoff_frac: float) -> int:
    """``start_ms + cutoff_frac * (end_ms - start_ms)`` rounded up to a whole ms, in exact arithmetic.

    For integer sample times ``t``, ``t < cutoff_time_ms(...)`` iff ``t`` is before the real-valued
    cutoff, so rounding up changes no sample's side.
    """
    return math.ceil(start_ms + Fraction(cutoff_frac) * (end_ms - start_ms))


def iso_utc(time_ms: int | None) -> str | None:
    """ISO-8601 UTC form of an epoch time in ms (None stays None)."""
    return None if time_ms is None else datetime.fromtimestamp(time_ms / 1000, UTC).isoformat()


@dataclass(frozen=True)
class SplitSide:
    """One side of a split.

    Attributes:
        name: ``train`` or ``holdout``.
        directory: the trace directory written.
        guests: every guest of the source assigned to this side, sorted.
        guests_without_samples: those of ``guests`` with no sample in this side's period (a VM
            that ended before the cutoff, or started after it); they are not in the written trace.
        samples: rows written.
        start_ms: first sample time written (None when nothing was).
        end_ms: last sample time written.

    """

    name: str
    directory: Path
    guests: tuple[str, ...]
    guests_without_samples: tuple[str, ...]
    samples: int
    start_ms: int | None
    end_ms: int | None

    @property
    def guests_with_samples(self) -> int:
        """How many guests the written trace holds."""
        return len(self.guests) - len(self.guests_without_samples)

    def to_json_dict(self) -> dict[str, Any]:
        """JSON form (as in ``split.json``)."""
        return {
            "directory": str(self.directory),
            "guests": list(self.guests),
            "guests_without_samples": list(self.guests_without_samples),
            "samples": self.samples,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "start_utc": iso_utc(self.start_ms),
            "end_utc": iso_utc(self.end_ms),
        }


@dataclass(frozen=True)
class SplitSummary:
    """What :func:`split_trace` did; ``split.json`` is :meth:`to_json_dict`.

    Attributes:
        source: the source trace directory.
        salt: the hash salt.
        holdout_frac: the share of the hash range that goes to the holdout side.
        cutoff_frac: where in the source's time range the cutoff lies.
        source_start_ms: first sample time in the source.
        source_end_ms: last sample time in the source.
        cutoff_ms: train samples are before it, holdout samples at or after it.
        source_samples: rows in the source.
        train: the train side.
        holdout: the holdout side.
        dropped_train_guest_samples: train guests' samples at or after the cutoff (in neither side).
        dropped_holdout_guest_samples: holdout guests' samples before the cutoff (in neither side).
        elapsed_s: wall time the split took.

    """

    source: Path
    salt: str
    holdout_frac: float
    cutoff_frac: float
    source_start_ms: int
    source_end_ms: int
    cutoff_ms: int
    source_samples: int
    train: SplitSide
    holdout: SplitSide
    dropped_train_guest_samples: int
    dropped_holdout_guest_samples: int
    elapsed_s: float

    @property
    def cutoff_utc(self) -> str:
        """The cutoff as ISO-8601 UTC."""
        return str(iso_utc(self.cutoff_ms))

    def to_json_dict(self) -> dict[str, Any]:
        """JSON form: the content of ``split.json`` (the same in both output directories)."""
        return {
            "format": SPLIT_FORMAT,
            "version": SPLIT_FORMAT_VERSION,
            "source": str(self.source),
            "salt": self.salt,
            "holdout_frac": self.holdout_frac,
            "cutoff_frac": self.cutoff_frac,
            "guest_rule": HASH_RULE,
            "time_rule": "train: time_ms < cutoff_ms; holdout: time_ms >= cutoff_ms",
            "source_start_ms": self.source_start_ms,
            "source_end_ms": self.source_end_ms,
            "source_start_utc": iso_utc(self.source_start_ms),
            "source_end_utc": iso_utc(self.source_end_ms),
            "cutoff_ms": self.cutoff_ms,
            "cutoff_utc": self.cutoff_utc,
            "source_samples": self.source_samples,
            "dropped_train_guest_samples": self.dropped_train_guest_samples,
            "dropped_holdout_guest_samples": self.dropped_holdout_guest_samples,
            "train": self.train.to_json_dict(),
            "holdout": self.holdout.to_json_dict(),
            "elapsed_s": round(self.elapsed_s, 3),
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        }


def _check_fraction(value: float, name: str) -> float:
    value = float(value)
    if not 0.0 < value < 1.0:
        raise WsrlError(f"{name} must be strictly between 0 and 1, got {value}")
    return value


def _check_output(directory: Path, side: str) -> None:
    if directory.exists() and not directory.is_dir():
        raise TraceError(f"{directory}: {side} output exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()):
        raise TraceError(f"{directory}: {side} output directory is not empty; choose a new or empty one")


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def _batches(parts: Sequence[Path], columns: Sequence[str] | None) -> Iterator[pa.Table]:
    for path in parts:
        try:
            with open_regular(path) as handle:  # never waits on a FIFO planted as a part
                parquet = pq.ParquetFile(handle)
                for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
                    yield pa.Table.from_batches([batch])
        except (pa.ArrowInvalid, OSError) as exc:
            raise TraceError(f"{path}: unreadable trace part: {exc}") from None


def _guest_time_ranges(parts: Sequence[Path]) -> tuple[dict[str, tuple[int, int]], int]:
    """Per guest name: (first, last) sample time; and the source's row count."""
    ranges: dict[str, tuple[int, int]] = {}
    rows = 0
    for table in _batches(parts, ["guest", "time_ms"]):
        rows += table.num_rows
        grouped = table.group_by("guest").aggregate([("time_ms", "min"), ("time_ms", "max")])
        for guest, first, last in zip(
            grouped.column("guest").to_pylist(),
            grouped.column("time_ms_min").to_pylist(),
            grouped.column("time_ms_max").to_pylist(),
            strict=True,
        ):
            known = ranges.get(guest)
            ranges[guest] = (first, last) if known is None else (min(known[0], first), max(known[1], last))
    return ranges, rows


@dataclass
class _SideState:
    samples: int = 0
    start_ms: int | None = None
    end_ms: int | None = None

    def add(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        bounds = pc.min_max(table.column("time_ms")).as_py()
        self.samples += table.num_rows
        self.start_ms = bounds["min"] if self.start_ms is None else min(self.start_ms, bounds["min"])
        self.end_ms = bounds["max"] if self.end_ms is None else max(self.end_ms, bounds["max"])


def split_trace(
    source_dir: str | Path,
    train_dir: str | Path,
    holdout_dir: str | Path,
    *,
    holdout_frac: float = DEFAULT_HOLDOUT_FRAC,
    cutoff_frac: float = DEFAULT_CUTOFF_FRAC,
    salt: str = DEFAULT_SALT,
) -> SplitSummary:
    """Write a VM-disjoint, time-forward split of the trace at ``source_dir`` (see the module docstring).

    Args:
        source_dir: the trace to split (left untouched).
        train_dir: new or empty directory for the train trace.
        holdout_dir: new or empty directory for the holdout trace.
        holdout_frac: share of the hash range (so, in expectation, of the guests) held out, in (0, 1).
        cutoff_frac: where the cutoff lies in the source's time range, in (0, 1).
        salt: salt of the guest hash; another salt gives another, independent guest split.

    Returns:
        the summary, also written as ``split.json`` into both output directories.

    Raises:
        TraceError: the source is not a trace or unreadable; an output exists and is not empty,
            or overlaps another path; a side would hold no guest or no sample.
        WsrlError: a fraction outside (0, 1).

    """
    began = time.monotonic()
    holdout_frac = _check_fraction(holdout_frac, "holdout_frac")
    cutoff_frac = _check_fraction(cutoff_frac, "cutoff_frac")
    source = Path(source_dir)
    train_path, holdout_path = Path(train_dir), Path(holdout_dir)
    if not source.is_dir():
        raise TraceError(f"{source}: no such trace directory")
    manifest = read_manifest(source)
    for side, path in (("train", train_path), ("holdout", holdout_path)):
        _check_output(path, side)
        if _overlaps(path.resolve(), source.resolve()):
            raise TraceError(f"{path}: {side} output must not be the source trace or lie inside or above it")
    if _overlaps(train_path.resolve(), holdout_path.resolve()):
        raise TraceError(
            f"{holdout_path}: holdout output must not be the train output or lie inside or above it"
        )
    parts = list_parts(source)

    ranges, source_samples = _guest_time_ranges(parts)
    if not ranges:
        raise TraceError(f"{source}: trace holds no samples; nothing to split")
    start_ms = min(first for first, _ in ranges.values())
    end_ms = max(last for _, last in ranges.values())
    cutoff_ms = cutoff_time_ms(start_ms, end_ms, cutoff_frac)
    holdout_guests = sorted(g for g in ranges if is_holdout_guest(g, holdout_frac=holdout_frac, salt=salt))
    holdout_names = set(holdout_guests)
    train_guests = sorted(g for g in ranges if g not in holdout_names)
    train_empty = sorted(g for g in train_guests if ranges[g][0] >= cutoff_ms)
    holdout_empty = sorted(g for g in holdout_guests if ranges[g][1] < cutoff_ms)
    cutoff_text = f"cutoff {iso_utc(cutoff_ms)}"
    for side, path, guests, empty in (
        ("train", train_path, train_guests, train_empty),
        ("holdout", holdout_path, holdout_guests, holdout_empty),
    ):
        if not guests:
            raise TraceError(
                f"{path}: {side} side would hold no guest ({len(ranges)} guest(s) in {source}, "
                f"holdout_frac {holdout_frac}, salt {salt!r}); change holdout_frac or salt"
            )
        if len(empty) == len(guests):
            raise TraceError(
                f"{path}: {side} side would hold no sample: none of its {len(guests)} guest(s) has one "
                f"{'before' if side == 'train' else 'at or after'} the {cutoff_text}; change cutoff_frac"
            )

    holdout_set = pa.array(holdout_guests, type=pa.string())
    states = {"train": _SideState(), "holdout": _SideState()}
    raw_meta = manifest.get("meta")
    source_meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    split_meta = {
        "source": str(source),
        "salt": salt,
        "holdout_frac": holdout_frac,
        "cutoff_frac": cutoff_frac,
        "cutoff_ms": cutoff_ms,
        "cutoff_utc": iso_utc(cutoff_ms),
    }
    origin = str(manifest.get("source", "unknown"))
    description = str(manifest.get("description", ""))
    rows_seen = 0
    dropped = {"train": 0, "holdout": 0}
    with (
        TraceWriter(
            train_path,
            source=origin,
            description=f"train side (guests not held out, before {cutoff_text}) of {source}: {description}",
            meta={**source_meta, "split": {**split_meta, "side": "train"}},
            flush_rows=ROWS_PER_PART,
        ) as train_writer,
        TraceWriter(
            holdout_path,
            source=origin,
            description=(
                f"holdout side (held-out guests, at or after {cutoff_text}) of {source}: {description}"
            ),
            meta={**source_meta, "split": {**split_meta, "side": "holdout"}},
            flush_rows=ROWS_PER_PART,
        ) as holdout_writer,
    ):
        for table in _batches(parts, None):
            rows_seen += table.num_rows
            held_out = pc.is_in(table.column("guest"), value_set=holdout_set)
            before = pc.less(table.column("time_ms"), cutoff_ms)
            train_rows = table.filter(pc.and_(pc.invert(held_out), before))
            holdout_rows = table.filter(pc.and_(held_out, pc.invert(before)))
            held_out_count = int(pc.sum(held_out).as_py() or 0)
            dropped["train"] += table.num_rows - held_out_count - train_rows.num_rows
            dropped["holdout"] += held_out_count - holdout_rows.num_rows
            for name, writer, rows in (
                ("train", train_writer, train_rows),
                ("holdout", holdout_writer, holdout_rows),
            ):
                if rows.num_rows:
                    writer.append_table(rows)
                    states[name].add(rows)
    if rows_seen != source_samples:
        raise TraceError(f"{source}: changed while being split ({source_samples} rows, then {rows_seen})")
    summary = SplitSummary(
        source=source,
        salt=salt,
        holdout_frac=holdout_frac,
        cutoff_frac=cutoff_frac,
        source_start_ms=start_ms,
        source_end_ms=end_ms,
        cutoff_ms=cutoff_ms,
        source_samples=source_samples,
        train=SplitSide(
            "train", train_path, tuple(train_guests), tuple(train_empty), **vars(states["train"])
        ),
        holdout=SplitSide(
            "holdout", holdout_path, tuple(holdout_guests), tuple(holdout_empty), **vars(states["holdout"])
        ),
        dropped_train_guest_samples=dropped["train"],
        dropped_holdout_guest_samples=dropped["holdout"],
        elapsed_s=time.monotonic() - began,
    )
    # split.json last: its presence marks a finished split.
    record = summary.to_json_dict()
    for path in (train_path, holdout_path):
        write_json_atomically(path / SPLIT_FILE_NAME, record)
    return summary


def read_split(directory: str | Path) -> dict[str, Any]:
    """The ``split.json`` of one side of a split (raises :class:`TraceError` when missing or malformed)."""
    path = Path(directory) / SPLIT_FILE_NAME
    try:
        record = read_json_file(path, "split record")
    except FileNotFoundError:
        raise TraceError(
            f"{path}: no split record (not a split output, or the split was interrupted)"
        ) from None
    if not isinstance(record, dict) or record.get("format") != SPLIT_FORMAT:
        raise TraceError(f"{path}: field 'format' must be {SPLIT_FORMAT!r}")
    return record
