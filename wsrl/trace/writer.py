"""Append-only, crash-safe trace writer.

Layout of a trace directory::

    DIR/trace.json            manifest: format name, schema version, source, creation time, meta
    DIR/part-000000.parquet   samples, one immutable Parquet file per flush
    DIR/part-000001.parquet
    DIR/.lock                 held (flock) by the one writer allowed at a time

Why one file per flush: a Parquet file is only readable once its footer is written, so a writer
killed in the middle of a file loses that whole file. Each flush therefore writes a complete part
to ``part-N.parquet.tmp``, fsyncs it, renames it into place and fsyncs the directory. A writer
killed at any instant leaves every earlier part whole; at worst a ``.tmp`` file that never held
committed samples remains, which readers ignore and the next writer removes. A writer reopened on
an existing trace continues with the next part number, so a restarted recorder appends.

Runners flush on a row count or an interval (``flush_rows`` / ``flush_interval_s``); samples not
yet flushed are what a crash can lose, and nothing else.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from wsrl.errors import TraceError
from wsrl.trace.files import read_json_file
from wsrl.trace.record import GuestSample
from wsrl.trace.schema import COLUMN_NAMES, FORMAT_NAME, SCHEMA_VERSION, TRACE_SCHEMA, conform

MANIFEST_NAME = "trace.json"
LOCK_NAME = ".lock"
PART_PATTERN = re.compile(r"^part-(\d{6,})\.parquet$")
PART_COMPRESSION = "zstd"


def part_name(sequence: int) -> str:
    """File name of part number ``sequence``."""
    return f"part-{sequence:06d}.parquet"


def list_parts(directory: Path) -> list[Path]:
    """Committed part files of a trace, in sequence order (``.tmp`` leftovers excluded)."""
    parts = []
    for entry in directory.iterdir():
        match = PART_PATTERN.match(entry.name)
        if match:
            parts.append((int(match.group(1)), entry))
    return [path for _, path in sorted(parts)]


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomically(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON so that a crash leaves either the old file or the new one, never a torn one."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_directory(path.parent)


def read_manifest(directory: Path) -> dict[str, Any]:
    """Read and check a trace's manifest; refuse other formats and newer schema versions.

    The manifest is read as possibly hostile data (:func:`wsrl.trace.files.read_json_file`: a
    regular file only, size-capped, nesting bounded).
    """
    path = directory / MANIFEST_NAME
    try:
        manifest = read_json_file(path, "manifest")
    except FileNotFoundError:
        raise TraceError(f"{directory}: not a trace directory (no {MANIFEST_NAME})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise TraceError(f"{path}: field 'format' must be {FORMAT_NAME!r}")
    version = manifest.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise TraceError(f"{path}: field 'schema_version' must be an integer")
    if version > SCHEMA_VERSION:
        raise TraceError(
            f"{path}: schema_version {version} is newer than this wsrl reads ({SCHEMA_VERSION}); upgrade wsrl"
        )
    if version < 1:
        raise TraceError(f"{path}: schema_version {version} is not a valid version")
    return manifest


def _rows_table(rows: list[dict[str, Any]]) -> pa.Table:
    columns = {name: [row.get(name) for row in rows] for name in COLUMN_NAMES}
    return pa.Table.from_pydict(columns, schema=TRACE_SCHEMA)


def _row_converts(row: dict[str, Any]) -> bool:
    try:
        _rows_table([row])
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return False
    return True


class TraceWriter:
    """Append samples to a trace directory, flushing whole immutable parts.

    Args:
        directory: the trace directory; created if missing, appended to if it holds a trace.
        source: what produced the samples (``sim``, ``runner``, ``import:bitbrains``...).
        description: free text for people.
        meta: extra manifest fields (kept from the first writer; later writers add keys).
        flush_rows: flush automatically once this many rows are buffered.
        flush_interval_s: flush automatically when this long has passed since the last flush
            (checked on append). ``None`` disables the timer.

    Raises:
        TraceError: the directory holds something that is not a trace of a readable version, or
            another writer holds it.

    """

    def __init__(
        self,
        directory: str | Path,
        *,
        source: str = "unknown",
        description: str = "",
        meta: Mapping[str, Any] | None = None,
        flush_rows: int = 100_000,
        flush_interval_s: float | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.flush_rows = max(1, int(flush_rows))
        self.flush_interval_s = flush_interval_s
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TraceError(f"{self.directory}: cannot create trace directory: {exc}") from None
        self._lock_handle = self._acquire_lock()
        try:
            self.removed_partial_parts = self._remove_partial_parts()
            self._open_manifest(source, description, meta or {})
            existing = list_parts(self.directory)
            match = PART_PATTERN.match(existing[-1].name) if existing else None  # list_parts: all match
            last = int(match.group(1)) if match else -1
            self._next_part = last + 1
        except BaseException:
            self._release_lock()
            raise
        self._rows: list[dict[str, Any]] = []
        self._tables: list[pa.Table] = []
        self._buffered = 0
        self._last_flush = time.monotonic()
        self.rows_written = 0
        self.parts_written = 0

    # -- set-up -----------------------------------------------------------------------------

    def _acquire_lock(self) -> Any:
        try:  # never through a symlink, and never blocking on a FIFO planted in its place
            fd = os.open(
                self.directory / LOCK_NAME,
                os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                0o644,
            )
        except OSError as exc:
            raise TraceError(
                f"{self.directory / LOCK_NAME}: cannot open the lock: {exc.strerror or exc}"
            ) from None
        handle = os.fdopen(fd, "a")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise TraceError(f"{self.directory}: another writer is recording into this trace") from None
        return handle

    def _release_lock(self) -> None:
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle.fileno(), fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    def _remove_partial_parts(self) -> int:
        removed = 0
        for entry in self.directory.glob("part-*.parquet.tmp"):
            entry.unlink()
            removed += 1
        return removed

    def _open_manifest(self, source: str, description: str, meta: Mapping[str, Any]) -> None:
        manifest_path = self.directory / MANIFEST_NAME
        if manifest_path.exists():
            manifest = read_manifest(self.directory)
            if manifest["schema_version"] != SCHEMA_VERSION:
                raise TraceError(
                    f"{manifest_path}: schema_version {manifest['schema_version']} differs from "
                    f"{SCHEMA_VERSION}; write a new trace instead of appending"
                )
            new_keys = {k: v for k, v in meta.items() if k not in manifest.get("meta", {})}
            if new_keys:
                manifest.setdefault("meta", {}).update(new_keys)
                write_json_atomically(manifest_path, manifest)
            return
        stray = [p.name for p in self.directory.iterdir() if p.name != LOCK_NAME]
        if stray:
            raise TraceError(
                f"{self.directory}: not empty and not a trace (found {', '.join(sorted(stray)[:3])}); "
                "choose an empty or new directory"
            )
        manifest = {
            "format": FORMAT_NAME,
            "schema_version": SCHEMA_VERSION,
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": source,
            "description": description,
            "meta": dict(meta),
        }
        write_json_atomically(manifest_path, manifest)

    # -- appending --------------------------------------------------------------------------

    def append(self, sample: GuestSample) -> None:
        """Buffer one sample; flushes when a size or time threshold is reached.

        Raises:
            TraceError: the flush failed; the sample and everything before it stay buffered.

        """
        self.append_many((sample,))

    def append_many(self, samples: Iterable[GuestSample]) -> None:
        """Buffer several samples, flushing a part whenever ``flush_rows`` are buffered.

        A flush that fails does not stop the appending: every sample is buffered (no more flushes
        are tried in this call) and the error is raised at the end.

        Raises:
            TraceError: a flush failed; every sample stays buffered for the next flush.

        """
        error: TraceError | None = None
        for sample in samples:
            self._rows.append(sample.to_row())
            self._buffered += 1
            if error is None and self._buffered >= self.flush_rows:
                try:
                    self.flush()
                except TraceError as exc:
                    error = exc
        if error is not None:
            raise error
        self._maybe_flush()

    def append_table(self, table: pa.Table) -> None:
        """Buffer an Arrow table of trace columns (missing nullable columns become null)."""
        try:
            conformed = conform(table)
        except (KeyError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise TraceError(f"table does not match the trace schema: {exc}") from None
        self._flush_rows_into_tables()
        self._tables.append(conformed)
        self._buffered += conformed.num_rows
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        due = self._buffered >= self.flush_rows or (
            self.flush_interval_s is not None and time.monotonic() - self._last_flush >= self.flush_interval_s
        )
        if due:
            self.flush()

    def _flush_rows_into_tables(self) -> None:
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        try:
            self._tables.append(_rows_table(rows))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            # Keep every row that converts; only the ones that do not match the schema are dropped.
            good = [row for row in rows if _row_converts(row)]
            if good:
                self._tables.append(_rows_table(good))
            dropped = len(rows) - len(good)
            self._buffered -= dropped
            raise TraceError(
                f"sample does not match the trace schema ({dropped} of {len(rows)} dropped): {exc}"
            ) from None

    def flush(self) -> None:
        """Write everything buffered as one new part, durably. A no-op when nothing is buffered."""
        self._flush_rows_into_tables()
        self._last_flush = time.monotonic()
        if not self._tables:
            return
        table = pa.concat_tables(self._tables)
        table = table.sort_by([("host", "ascending"), ("time_ms", "ascending"), ("guest", "ascending")])
        final = self.directory / part_name(self._next_part)
        tmp = final.with_name(final.name + ".tmp")
        try:
            pq.write_table(table, tmp, compression=PART_COMPRESSION)
            with tmp.open("rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, final)
            _fsync_directory(self.directory)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            # Keep the rows buffered: a later flush (after space is freed) can still commit them.
            self._tables = [table]
            raise TraceError(f"{final}: could not write trace part: {exc}") from None
        self._tables.clear()
        self._buffered = 0
        self._next_part += 1
        self.rows_written += table.num_rows
        self.parts_written += 1

    @property
    def buffered_rows(self) -> int:
        """Rows appended but not yet flushed (what a crash now would lose)."""
        return self._buffered

    def close(self) -> None:
        """Flush and release the directory."""
        try:
            self.flush()
        finally:
            self._release_lock()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
