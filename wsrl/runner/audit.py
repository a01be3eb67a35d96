"""The audit log: one JSON line per tick, saying what the runner saw, decided and did, and why.

The file is opened for appending only (``O_APPEND``, mode 0640) and every record is flushed (and
by default fsynced) before the next tick, so a crash loses at most the record being written and
never rewrites an earlier one. A record torn by a crash is ended with a newline when the log is
opened again, so the next record starts a line of its own (:func:`read_audit` skips the torn one).
The log, and every folder and symlink on the way to it, must be this user's or root's
(:func:`wsrl.security.open_trusted_append`): a symlink another user planted is not followed.

A record (``docs/runner.md`` lists every field)::

    {"kind": "tick", "tick": 7, "time": "2025-...Z", "time_ms": ..., "mode": "normal",
     "policy": "wmo", "fallback": "static", "duration_s": 0.004,
     "guests": [{"name": "web", "state": "ok", "source": "wmo",
                 "inputs": {"visible_bytes": ..., "usage_bytes": ..., "working_set_bytes": ...,
                            "refault_pages_per_s": ..., "psi_some_avg10": ..., "cold_120s_bytes": ...},
                 "proposal_bytes": ..., "allotted_bytes": ..., "allocator": ["squeezed"],
                 "guard": ["shrink limited"], "rails": [{"rail": "rate", "from_bytes": ..., "to_bytes": ...,
                 "reason": "..."}], "target_bytes": ..., "applied": true, "applied_bytes": ...,
                 "not_applied": null, "errors": []}]}

Other kinds: ``start`` (config and policies), ``exit`` (what each guest was relaxed to) and
``error`` (a tick that failed as a whole).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from wsrl.errors import WsrlError
from wsrl.security import UntrustedFileError, open_trusted_append

AUDIT_FILE_MODE = 0o640


def iso_time(time_ms: float) -> str:
    """``time_ms`` (ms since the UNIX epoch) as ISO-8601 UTC with milliseconds.

    A time outside what ``datetime`` holds (years 1-9999; a guest's reading can carry any number)
    is written as ``"invalid time <ms> ms"`` rather than raised: the record must still be written.
    """
    try:
        return datetime.fromtimestamp(time_ms / 1000.0, UTC).isoformat(timespec="milliseconds")
    except (ValueError, OverflowError, OSError):
        return f"invalid time {time_ms!r} ms"


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars and arrays made plain, and NaN/inf as ``null`` (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


class AuditLog:
    """Append-only JSONL writer (see the module docstring).

    Args:
        path: the log file; its folder is created if missing.
        fsync: fsync after every record (``False``: flush to the OS only).

    Raises:
        WsrlError: the file cannot be opened for appending.

    """

    def __init__(self, path: str | Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        try:
            fd = open_trusted_append(self.path, "audit log", AUDIT_FILE_MODE)
        except UntrustedFileError as exc:
            if exc.unreadable:
                raise WsrlError(f"audit.path: cannot open {self.path} for appending: {exc.reason}") from None
            raise WsrlError(f"audit.path: {exc}") from None
        try:
            _end_torn_line(fd)
        except OSError as exc:
            os.close(fd)
            raise WsrlError(
                f"audit.path: cannot open {self.path} for appending: {exc.strerror or exc}"
            ) from None
        self._handle = os.fdopen(fd, "a", encoding="utf-8")
        self.records_written = 0

    def write(self, record: dict[str, Any]) -> None:
        """Append one record as one line, then flush (and fsync)."""
        line = json.dumps(jsonable(record), separators=(",", ":"), allow_nan=False)
        self._handle.write(line + "\n")
        self._handle.flush()
        if self.fsync:
            os.fsync(self._handle.fileno())
        self.records_written += 1

    def close(self) -> None:
        """Close the file (never raises)."""
        with contextlib.suppress(OSError):
            self._handle.close()


def _end_torn_line(fd: int) -> None:
    """End the file with a newline if it does not (the last record was torn by a crash)."""
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        os.write(fd, b"\n")


def read_audit(path: str | Path) -> list[dict[str, Any]]:
    """Every record of an audit log, in order (a torn line, from a crash, is skipped)."""
    records = []
    for line in Path(path).read_bytes().splitlines():
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # torn: invalid JSON or UTF-8
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
