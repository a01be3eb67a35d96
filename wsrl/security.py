"""Refuse files that someone other than the runner's own user could have written.

The runner acts on other people's memory with what it reads from three kinds of files: its
config (``host.toml``), an exported policy's ``manifest.json`` and its ``model.onnx``. Whoever can
write one of them controls the runner, so before reading one, wsrl checks that

* it is a regular file, owned by the current (effective) user or by root;
* it is not group- or world-writable;
* a symlink leading to it is itself owned by the current user or root, and the file it resolves
  to passes the checks above;
* the directory holding it (the symlink's and the target's) is owned by the current user or root
  and is not world-writable unless it has the sticky bit (``/tmp`` is fine: nobody else can
  replace a file there they do not own).

:func:`check_trusted_file` checks a path; :func:`read_trusted_file` checks, opens and reads it in
one go: the checks are repeated on the open file descriptor (so a file swapped between the check
and the open is caught), a file larger than ``max_bytes`` is refused without being read, and the
bytes returned are the ones that were checked. Every refusal is a :class:`UntrustedFileError`, one
line naming the file and the reason.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from wsrl.errors import WsrlError

MAX_CONFIG_BYTES = 1024 * 1024
"""Largest runner config read (a 64-guest ``host.toml`` is a few tens of kilobytes)."""
MAX_MANIFEST_BYTES = 1024 * 1024
"""Largest policy manifest read (an exported manifest is a few kilobytes)."""
MAX_MODEL_BYTES = 256 * 1024 * 1024
"""Largest ONNX model read (wsrl's per-guest networks are well under a megabyte)."""


class UntrustedFileError(WsrlError):
    """A file the runner would trust could have been written by someone else, is too large, or unreadable.

    Attributes:
        path: the file (as given).
        what: what it is for (``config file``, ``policy manifest``, ``policy model``).
        reason: why it is refused (or, when ``unreadable``, the system's error).
        unreadable: the file could not be read at all (missing, no permission, I/O error): not a
            refusal, and worded ``PATH: cannot read WHAT: REASON``.

    """

    def __init__(self, path: str | Path, what: str, reason: str, *, unreadable: bool = False) -> None:
        self.path = str(path)
        self.what = what
        self.reason = reason
        self.unreadable = unreadable
        message = f"cannot read {what}: {reason}" if unreadable else f"{what} refused: {reason}"
        super().__init__(f"{path}: {message}")


def _os_reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _trusted_owners() -> set[int]:
    return {0, os.geteuid()}


def _owner_problem(info: os.stat_result, kind: str) -> str | None:
    if info.st_uid not in _trusted_owners():
        return f"{kind} is owned by uid {info.st_uid}, not by this user (uid {os.geteuid()}) or root"
    return None


def _file_problem(info: os.stat_result) -> str | None:
    """Why a file with this ``stat`` is not trusted (``None`` when it is)."""
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    owner = _owner_problem(info, "the file")
    if owner:
        return owner
    mode = stat.S_IMODE(info.st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = " and ".join(w for bit, w in ((stat.S_IWGRP, "group"), (stat.S_IWOTH, "world")) if mode & bit)
        return f"it is {who}-writable (mode {mode:04o}; chmod go-w it)"
    return None


def _directory_problem(directory: Path) -> str | None:
    """Why ``directory`` cannot safely hold a trusted file (``None`` when it can)."""
    try:
        info = directory.stat()
    except OSError as exc:
        return f"its directory {directory} cannot be examined: {exc.strerror or exc}"
    owner = _owner_problem(info, f"its directory {directory}")
    if owner:
        return owner
    mode = stat.S_IMODE(info.st_mode)
    if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
        return f"its directory {directory} is world-writable without the sticky bit (mode {mode:04o})"
    return None


def check_trusted_file(path: str | Path, what: str) -> None:
    """Refuse ``path`` unless only this user or root could have written it (see the module docstring).

    Args:
        path: the file to check.
        what: what it is for, for the message (``config file``, ``policy model``...).

    Raises:
        UntrustedFileError: one line naming the file and the reason (also when it is missing).

    """
    _checked_target(Path(path), what)


def _checked_target(path: Path, what: str) -> tuple[Path, os.stat_result]:
    """The real file ``path`` leads to and its ``stat``, after every check; raises when refused."""
    try:
        link = os.lstat(path)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise UntrustedFileError(path, what, _os_reason(exc), unreadable=True) from None
    problem = None
    if stat.S_ISLNK(link.st_mode):
        problem = _owner_problem(link, "the symlink")
        problem = problem or _directory_problem(path.absolute().parent)
    if problem:
        raise UntrustedFileError(path, what, problem)
    try:
        target = path.resolve(strict=True)
        info = target.stat()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise UntrustedFileError(path, what, _os_reason(exc), unreadable=True) from None
    problem = _file_problem(info) or _directory_problem(target.parent)
    if problem:
        shown = f"{problem} (it resolves to {target})" if target != path.absolute() else problem
        raise UntrustedFileError(path, what, shown)
    return target, info


def read_trusted_file(path: str | Path, what: str, max_bytes: int) -> bytes:
    """Check ``path`` (:func:`check_trusted_file`), then read it whole, at most ``max_bytes``.

    The file is opened once; its descriptor is checked again (same file as checked, still a
    trusted regular file) and it is read through that descriptor, so the bytes returned are the
    bytes of the file that passed the checks. A file larger than ``max_bytes`` is refused after
    reading at most ``max_bytes + 1`` bytes of it.

    Raises:
        UntrustedFileError: refused (untrusted, unreadable, or too large), one line.

    """
    path = Path(path)
    target, checked = _checked_target(path, what)
    if checked.st_size > max_bytes:
        reason = f"{checked.st_size} bytes is larger than the {max_bytes}-byte cap"
        raise UntrustedFileError(path, what, reason)
    try:
        # O_NONBLOCK: a FIFO swapped in after the check must not block the open.
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UntrustedFileError(path, what, _os_reason(exc), unreadable=True) from None
    try:
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != (checked.st_dev, checked.st_ino):
            raise UntrustedFileError(path, what, "it was replaced while being checked")
        problem = _file_problem(info)
        if problem:
            raise UntrustedFileError(path, what, problem)
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise UntrustedFileError(path, what, _os_reason(exc), unreadable=True) from None
    finally:
        os.close(fd)
    if size > max_bytes:
        raise UntrustedFileError(path, what, f"larger than the {max_bytes}-byte cap")
    return b"".join(chunks)
