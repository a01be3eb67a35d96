"""Refuse files that someone other than the runner's own user could have written.

The runner acts on other people's memory with what it reads from three kinds of files: its
config (``host.toml``), an exported policy's ``manifest.json`` and its ``model.onnx``. Whoever can
write one of them controls the runner, so before reading one, wsrl checks that

* it is a regular file, owned by the current (effective) user or by root;
* it is not group- or world-writable;
* a symlink leading to it is itself owned by the current user or root, and the file it resolves
  to passes the checks above;
* every directory on the way to it, from ``/`` down (the path as given and, through each symlink,
  the path it leads to), is owned by the current user or root and is neither group- nor
  world-writable unless it has the sticky bit (``/tmp`` is fine: nobody else can replace a file
  there they do not own); whoever can write any of them could rename the rest away and plant
  their own;
* every symlink on the way (in a directory or the file itself) is owned by the current user or
  root.

The path is resolved one component at a time, as the kernel does, and each component is checked
where it is met (:func:`resolve_trusted`), so a symlink can neither hide an untrusted directory
nor lead around one.

:func:`check_trusted_file` checks a path; :func:`read_trusted_file` checks, opens and reads it in
one go: the checks are repeated on the open file descriptor (so a file swapped between the check
and the open is caught), a file larger than ``max_bytes`` is refused without being read, and the
bytes returned are the ones that were checked. :func:`check_trusted_directory` checks a directory
(socket directories, the trace directory) and :func:`open_trusted_append` opens a file the runner
writes (the audit log), creating it and its folders, never through a symlink someone else
planted. Every refusal is a :class:`UntrustedFileError`, one line naming the file and the reason.
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


def file_kind(mode: int) -> str:
    """What a ``st_mode`` is, for messages: ``a regular file``, ``a FIFO``, ``a symlink``..."""
    kinds = (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "a special file")


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


MAX_SYMLINKS = 40
"""Symlinks followed while resolving one path (the kernel's own limit)."""


def _directory_problem(directory: Path, info: os.stat_result | None = None) -> str | None:
    """Why ``directory`` cannot safely hold a trusted file (``None`` when it can)."""
    if info is None:
        try:
            info = directory.stat()
        except OSError as exc:
            return f"its directory {directory} cannot be examined: {exc.strerror or exc}"
    if not stat.S_ISDIR(info.st_mode):
        return f"{directory} is not a directory"
    owner = _owner_problem(info, f"its directory {directory}")
    if owner:
        return owner
    mode = stat.S_IMODE(info.st_mode)
    if mode & stat.S_ISVTX:
        return None
    if mode & stat.S_IWOTH:
        return f"its directory {directory} is world-writable without the sticky bit (mode {mode:04o})"
    if mode & stat.S_IWGRP:
        reason = f"is group-writable without the sticky bit (mode {mode:04o}; chmod g-w it)"
        return f"its directory {directory} {reason}"
    return None


class _MissingError(Exception):
    """A component of the path does not exist (``resolve_trusted`` with ``missing_ok``)."""

    def __init__(self, existing: Path, rest: list[str]) -> None:
        super().__init__(str(existing))
        self.existing = existing
        self.rest = rest


def _resolve(path: Path, what: str, *, missing_ok: bool = False) -> tuple[Path, os.stat_result]:
    """Resolve ``path`` one component at a time, checking every directory and symlink met.

    Returns the real path and its ``lstat`` (never a symlink). With ``missing_ok``, a missing
    component raises :class:`_MissingError` (the real directory reached, the components left).
    """
    absolute = path.absolute()
    pending = list(reversed(absolute.parts[1:]))
    current = Path("/")
    try:
        info = os.lstat(current)
    except OSError as exc:
        raise UntrustedFileError(path, what, _os_reason(exc), unreadable=True) from None
    problem = _directory_problem(current, info) if pending else None
    if problem:
        raise UntrustedFileError(path, what, problem)
    hops = 0
    while pending:
        name = pending.pop()
        if name in ("", "."):
            continue
        if name == "..":
            current = current.parent  # current is real: its parent was checked on the way down
            info = os.lstat(current)  # a directory that was just passed: it exists
            continue
        candidate = current / name
        try:
            info = os.lstat(candidate)
        except FileNotFoundError as exc:
            if missing_ok:
                raise _MissingError(current, [name, *reversed(pending)]) from None
            raise UntrustedFileError(path, what, _os_reason(exc), unreadable=True) from None
        except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
            raise UntrustedFileError(path, what, _os_reason(exc), unreadable=True) from None
        if stat.S_ISLNK(info.st_mode):
            shown = "the symlink" if candidate == absolute else f"the symlink {candidate}"
            problem = _owner_problem(info, shown)
            if problem:
                raise UntrustedFileError(path, what, problem)
            hops += 1
            if hops > MAX_SYMLINKS:
                raise UntrustedFileError(path, what, "too many levels of symbolic links", unreadable=True)
            try:
                link = Path(os.readlink(candidate))
            except OSError as exc:
                raise UntrustedFileError(path, what, _os_reason(exc), unreadable=True) from None
            if link.is_absolute():
                current = Path("/")
            pending.extend(reversed(link.parts[1:] if link.is_absolute() else link.parts))
            continue
        current = candidate
        if pending:
            if not stat.S_ISDIR(info.st_mode):
                raise UntrustedFileError(path, what, f"{candidate}: Not a directory", unreadable=True)
            problem = _directory_problem(candidate, info)
            if problem:
                raise UntrustedFileError(path, what, problem)
    return current, info


def resolve_trusted(path: str | Path, what: str) -> tuple[Path, os.stat_result]:
    """The real path ``path`` leads to and its ``lstat``, after checking every directory and symlink.

    Only the way to it is checked here, not the file itself (see :func:`check_trusted_file`).

    Raises:
        UntrustedFileError: a directory or symlink on the way could be written by someone else,
            or a component is missing or unreadable.

    """
    return _resolve(Path(path), what)


def check_trusted_file(path: str | Path, what: str) -> None:
    """Refuse ``path`` unless only this user or root could have written it (see the module docstring).

    Args:
        path: the file to check.
        what: what it is for, for the message (``config file``, ``policy model``...).

    Raises:
        UntrustedFileError: one line naming the file and the reason (also when it is missing).

    """
    _checked_target(Path(path), what)


def check_trusted_directory(path: str | Path, what: str) -> Path:
    """Refuse directory ``path`` unless only this user or root could have written it, or the way to it.

    The directory itself must pass the same rules as the directories on the way (owned by this
    user or root, not group- or world-writable without the sticky bit).

    Returns:
        the real path of the directory.

    Raises:
        UntrustedFileError: one line naming the directory and the reason.

    """
    return _trusted_directory(Path(path), what)


def check_trusted_directory_so_far(path: str | Path, what: str) -> Path | None:
    """:func:`check_trusted_directory` for a directory that may not exist yet.

    The part of its path that exists is checked (so nobody else could create the rest).

    Returns:
        the real path of the directory, or ``None`` when it does not exist (yet).

    Raises:
        UntrustedFileError: one line naming the directory and the reason.

    """
    try:
        return _trusted_directory(Path(path), what, missing_ok=True)
    except _MissingError:
        return None


def _trusted_directory(path: Path, what: str, *, missing_ok: bool = False) -> Path:
    target, info = _resolve(path, what, missing_ok=missing_ok)
    if not stat.S_ISDIR(info.st_mode):
        raise UntrustedFileError(path, what, "not a directory")
    problem = _directory_problem(target, info)
    if problem:
        problem = problem.replace(f"its directory {target}", "the directory", 1)
        shown = f"{problem} (it resolves to {target})" if target != path.absolute() else problem
        raise UntrustedFileError(path, what, shown)
    return target


def _checked_target(path: Path, what: str) -> tuple[Path, os.stat_result]:
    """The real file ``path`` leads to and its ``stat``, after every check; raises when refused."""
    target, info = _resolve(path, what)
    problem = _file_problem(info)
    if problem:
        shown = f"{problem} (it resolves to {target})" if target != path.absolute() else problem
        raise UntrustedFileError(path, what, shown)
    return target, info


def make_trusted_directory(path: str | Path, what: str) -> Path:
    """:func:`check_trusted_directory`, creating the directories missing (mode 0755) first.

    Returns:
        the real path of the directory.

    Raises:
        UntrustedFileError: one line naming the directory and the reason.

    """
    return _make_trusted_directories(Path(path).absolute(), what)


def _make_trusted_directories(path: Path, what: str) -> Path:
    """Check the way to directory ``path``, create what is missing (mode 0755), return its real path."""
    for _ in range(len(path.parts) + MAX_SYMLINKS):
        try:
            return _trusted_directory(path, what, missing_ok=True)
        except _MissingError as missing:
            directory = missing.existing
            problem = _directory_problem(directory)
            if problem:
                raise UntrustedFileError(path, what, problem) from None
            try:
                os.mkdir(directory / missing.rest[0], 0o755)
            except FileExistsError:
                pass  # made meanwhile: checked on the next round
            except OSError as exc:
                raise UntrustedFileError(path, what, _os_reason(exc), unreadable=True) from None
    raise UntrustedFileError(path, what, "its folders keep disappearing while being made", unreadable=True)


def open_trusted_append(path: str | Path, what: str, mode: int) -> int:
    """Open ``path`` for appending (``O_RDWR | O_APPEND``), creating it and its folders.

    The way to it must pass the checks of :func:`check_trusted_file` (folders missing are created,
    mode 0755); an existing file must too (a regular file of this user or root, not group- or
    world-writable); a new one is created with ``mode``. A symlink is followed only when this
    user or root owns it, and the final open never follows one (``O_NOFOLLOW``), so a symlink
    planted after the checks is refused rather than followed.

    Returns:
        the file descriptor (``O_CLOEXEC``).

    Raises:
        UntrustedFileError: refused or unopenable, one line.

    """
    path = Path(path)
    _make_trusted_directories(path.absolute().parent, what)
    info: os.stat_result | None
    try:
        target, info = _resolve(path, what, missing_ok=True)
    except _MissingError as missing:
        gone = missing.existing / missing.rest[0]
        if len(missing.rest) > 1:  # a folder on the way (or a symlink's) is missing
            raise UntrustedFileError(
                path, what, f"{gone}: No such file or directory", unreadable=True
            ) from None
        target, info = gone, None  # no file yet (or a symlink to a file not made yet)
    if info is not None:
        problem = _file_problem(info)
        if problem:
            raise UntrustedFileError(path, what, problem)
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(target, flags, mode)
    except OSError as exc:
        raise UntrustedFileError(path, what, _os_reason(exc), unreadable=True) from None
    try:
        opened = os.fstat(fd)
        problem = _file_problem(opened)
        if not problem and info is not None and (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
            problem = "it was replaced while being checked"
        if problem:
            raise UntrustedFileError(path, what, problem)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


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
