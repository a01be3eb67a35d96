"""Opening the files of a trace as data that may be hostile: regular files only, bounded JSON.

A trace may come from anywhere (a download, another user's recording, a guest-written folder), so
its files are opened without trusting what they are: :func:`open_regular` opens without blocking
(``O_NONBLOCK``: a FIFO or device planted as ``trace.json`` or a part cannot hang the reader) and
refuses anything that is not a regular file once open (``fstat``), so a symlink may lead to a
regular file but never into a FIFO, a device or a directory. :func:`read_json_file` reads a small
JSON document (manifest, split record) through it with a size cap, and turns every way JSON can
fail, absurd nesting included, into one :class:`~wsrl.errors.TraceError` line.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

from wsrl.errors import TraceError
from wsrl.security import file_kind

MAX_JSON_BYTES = 16 * 1024 * 1024
"""Largest manifest or split record read (they are a few kilobytes)."""


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading in binary, if it is a regular file (symlinks to one are fine).

    Raises:
        FileNotFoundError: it does not exist.
        TraceError: it is not a regular file, or cannot be opened (one line naming it).

    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise TraceError(f"{path}: cannot open: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise TraceError(f"{path}: not a regular file (it is {file_kind(info.st_mode)})")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def regular_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be opened as a regular file (``None`` when it can), without blocking."""
    try:
        with open_regular(path):
            return None
    except FileNotFoundError:
        return "no such file"
    except TraceError as exc:
        return str(exc).removeprefix(f"{path}: ")


def read_json_file(path: Path, what: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The JSON document at ``path``: a regular file of at most ``max_bytes``.

    Raises:
        FileNotFoundError: it does not exist (the caller says what that means).
        TraceError: not a regular file, too large, unreadable, not UTF-8, not JSON, or nested
            too deeply; one line naming ``path`` and ``what`` it is.

    """
    with open_regular(path) as handle:
        try:
            data = handle.read(max_bytes + 1)
        except OSError as exc:
            raise TraceError(f"{path}: unreadable {what}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise TraceError(f"{path}: unreadable {what}: larger than {max_bytes} bytes")
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise TraceError(f"{path}: unreadable {what}: JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an int of > 4300 digits
        raise TraceError(f"{path}: unreadable {what}: {' '.join(str(exc).split())[:200]}") from None
