"""A memory cgroup's files: bounded reads and writes that refuse symlinks, and strict parsers.

:class:`CgroupFiles` reads one group's files for :class:`~wsrl.backends.cgroup.CgroupBackend`:
limits (``max`` or the kernel's ceiling is unlimited), byte counts, flat-keyed files
(``memory.stat``, ``memory.events``, ``memory.oom_control``), the refault counter, swap, the v2
limit in force over the ancestors and ``memory.pressure``. Every file is read with a size cap
(:data:`MAX_FILE_BYTES`, :data:`MAX_LRU_GEN_BYTES`) and without following a symlink at the last
component; every unreadable, missing or malformed file is a
:class:`~wsrl.backends.base.BackendError` naming the guest, the file and what is wrong with it.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from wsrl.backends.base import BackendError

CgroupVersionFound = Literal["v1", "v2"]

MAX_FILE_BYTES = 4 * 1024 * 1024
"""Largest cgroup file read (``memory.stat`` is a few KiB): a bigger one is refused, not read."""
MAX_LRU_GEN_BYTES = 16 * 1024 * 1024
"""Largest ``lru_gen`` dump read: it lists every memcg on the host (~200 bytes per memcg and node)."""

PAGE_SIZE_BYTES = os.sysconf("SC_PAGE_SIZE")
KERNEL_MAX_BYTES = (2**63 - 1) // PAGE_SIZE_BYTES * PAGE_SIZE_BYTES
"""The kernel's limit ceiling, ``PAGE_COUNTER_MAX`` pages: v1 prints it for "no limit"."""

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UINT = re.compile(r"[0-9]{1,20}")
_PSI_FLOAT = re.compile(r"[0-9]+(?:\.[0-9]+)?")

_REFAULT_SPLIT = ("workingset_refault_anon", "workingset_refault_file")
_REFAULT_OLD = "workingset_refault"


class CgroupFiles:
    """The files of one group directory (``group``), of cgroup ``version``, read for guest ``name``.

    Args:
        name: the guest's configured name (in error messages).
        group: the group's directory.
        version: ``"v1"`` or ``"v2"``: v1 ``memory.stat`` fields are read as their hierarchical
            ``total_*`` twins.

    """

    def __init__(self, name: str, group: Path, version: CgroupVersionFound) -> None:
        self.name = name
        self.dir = group
        self.version = version

    # -- reading ---------------------------------------------------------------------------------

    def stat_value(self, fields: dict[str, int], key: str, *, required: bool = True) -> int | None:
        """A ``memory.stat`` field (``total_<key>`` on v1, hierarchical), or None when absent."""
        if self.version == "v1" and f"total_{key}" in fields:
            return fields[f"total_{key}"]
        if key in fields or not required:
            return fields.get(key)
        shown = f"total_{key}" if self.version == "v1" else key
        raise BackendError(f"cgroup {self.name!r}: {self.dir / 'memory.stat'}: field {shown!r} is missing")

    def refaults(self, fields: dict[str, int]) -> int:
        """Refaulted pages: ``workingset_refault_anon`` + ``_file``, or the older ``workingset_refault``."""
        split = [self.stat_value(fields, key, required=False) for key in _REFAULT_SPLIT]
        if all(v is not None for v in split):
            return sum(v for v in split if v is not None)
        old = self.stat_value(fields, _REFAULT_OLD, required=False)
        if old is not None:
            return old
        prefix = "total_" if self.version == "v1" else ""
        raise BackendError(
            f"cgroup {self.name!r}: {self.dir / 'memory.stat'}: field '{prefix}{_REFAULT_SPLIT[0]}' is "
            f"missing (nor '{prefix}{_REFAULT_OLD}'): no refault counter, refusing to report 0 refaults"
        )

    def v1_swap_bytes(self, usage_bytes: int, fields: dict[str, int]) -> int:
        """v1 bytes in swap: ``memory.memsw.usage_in_bytes`` - usage, else ``memory.stat`` swap."""
        if (self.dir / "memory.memsw.usage_in_bytes").exists():
            return max(0, self.uint("memory.memsw.usage_in_bytes") - usage_bytes)
        return self.stat_value(fields, "swap", required=False) or 0

    def v2_limit_in_force(self, root: Path) -> int | None:
        """The smallest ``memory.high`` / ``memory.max`` of the group and its ancestors below ``root``."""
        limits: list[int] = []
        directory = self.dir
        while directory.is_relative_to(root):
            for file_name in ("memory.high", "memory.max"):
                if (directory / file_name).exists():
                    value = self.limit(file_name, directory)
                    if value is not None:
                        limits.append(value)
            if directory == root:
                break
            directory = directory.parent
        return min(limits, default=None)

    def psi(self) -> tuple[float, float]:
        """``(some total s, some avg10 %)`` of ``memory.pressure``; NaN when PSI is off."""
        path = self.dir / "memory.pressure"
        try:
            text = self.read_text(path, MAX_FILE_BYTES, raw_errors=True)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOENT):
                return math.nan, math.nan  # psi=0 on the command line, or no PSI in the kernel
            raise self.os_error(path, "read", exc) from None
        for number, line in enumerate(text.splitlines(), start=1):
            kind, *pairs = line.split()
            if kind != "some":
                continue
            values: dict[str, str] = {}
            for pair in pairs:
                key, separator, value = pair.partition("=")
                if not separator:
                    raise self.parse_error(path, number, kind, f"{pair!r} is not key=value")
                values[key] = value
            for key in ("avg10", "total"):
                if key not in values:
                    raise self.parse_error(path, number, f"some {key}", "missing")
            if not _PSI_FLOAT.fullmatch(values["avg10"]):
                raise self.parse_error(path, number, "some avg10", f"{values['avg10']!r} is not a percentage")
            if not _UINT.fullmatch(values["total"]):
                raise self.parse_error(
                    path, number, "some total", f"{values['total']!r} is not a count of us"
                )
            return int(values["total"]) / 1e6, float(values["avg10"])
        raise self.parse_error(path, 1, "some", "no 'some' line")

    def describe_limit(self, file_name: str) -> str:
        """A limit file's value for a message: bytes, ``unlimited`` or ``unknown``."""
        try:
            limit = self.limit(file_name)
        except BackendError:
            return "unknown"
        return "unlimited" if limit is None else str(limit)

    # -- file primitives -----------------------------------------------------------------------

    def limit(self, file_name: str, directory: Path | None = None) -> int | None:
        """A limit file's bytes, or None for unlimited (``max``, or the kernel's ceiling)."""
        path = (directory or self.dir) / file_name
        text = self.read_text(path, MAX_FILE_BYTES).strip()
        if text == "max":
            return None
        value = self.parse_uint(path, text)
        return None if value >= KERNEL_MAX_BYTES else value

    def uint(self, file_name: str) -> int:
        """A file of the group holding one non-negative decimal byte count."""
        path = self.dir / file_name
        return self.parse_uint(path, self.read_text(path, MAX_FILE_BYTES).strip())

    def parse_uint(self, path: Path, text: str) -> int:
        """``text`` (read from ``path``) as a non-negative decimal byte count."""
        if not _UINT.fullmatch(text):
            raise BackendError(
                f"cgroup {self.name!r}: {path}: {text[:40]!r} is not a non-negative decimal byte count"
            )
        return int(text)

    def flat_keyed(self, file_name: str, required: Sequence[str] = ()) -> dict[str, int]:
        """A ``key value`` per line file (``memory.stat``, ``memory.events``, ``oom_control``)."""
        path = self.dir / file_name
        fields: dict[str, int] = {}
        for number, line in enumerate(self.read_text(path, MAX_FILE_BYTES).splitlines(), start=1):
            tokens = line.split()
            if not tokens:
                continue
            if len(tokens) != 2 or not _KEY.fullmatch(tokens[0]):
                raise self.parse_error(path, number, tokens[0], f"{line.strip()[:60]!r} is not 'key value'")
            key, value = tokens
            if key in fields:
                raise self.parse_error(path, number, key, "appears twice")
            if not _UINT.fullmatch(value):
                raise self.parse_error(path, number, key, f"{value[:40]!r} is not a non-negative integer")
            fields[key] = int(value)
        for key in required:
            if key not in fields:
                raise BackendError(f"cgroup {self.name!r}: {path}: field {key!r} is missing")
        return fields

    def parse_error(self, path: Path, line: int, field: str, reason: str) -> BackendError:
        """The error for a malformed ``field`` on ``line`` of ``path``."""
        return BackendError(f"cgroup {self.name!r}: {path}: line {line}: field {field!r}: {reason}")

    def os_error(self, path: Path | str, action: str, exc: OSError) -> BackendError:
        """The error for a failed ``action`` (read, write) on ``path`` (a name: in the group)."""
        path = self.dir / path if isinstance(path, str) else path
        if exc.errno == errno.ENOENT:
            return BackendError(
                f"cgroup {self.name!r}: cannot {action} {path}: missing (was the group removed?)"
            )
        return BackendError(f"cgroup {self.name!r}: cannot {action} {path}: {exc.strerror or exc}")

    def read_text(self, path: Path, cap_bytes: int, *, raw_errors: bool = False) -> str:
        """At most ``cap_bytes`` of ``path`` as ASCII text (see :meth:`read_bytes`)."""
        data = self.read_bytes(path, cap_bytes, raw_errors=raw_errors)
        try:
            return data.decode("ascii")
        except UnicodeDecodeError as exc:
            raise BackendError(f"cgroup {self.name!r}: {path}: not ASCII text (byte {exc.start})") from None

    def read_bytes(self, path: Path, cap_bytes: int, *, raw_errors: bool = False) -> bytes:
        """At most ``cap_bytes`` of a regular file, not following a symlink at its last component."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            if raw_errors:
                raise
            raise self.os_error(path, "read", nofollow_error(exc)) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise BackendError(f"cgroup {self.name!r}: {path}: not a regular file: refused")
            chunks: list[bytes] = []
            total = 0
            while total <= cap_bytes:
                chunk = os.read(fd, min(1024 * 1024, cap_bytes + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
        except OSError as exc:
            if raw_errors:
                raise
            raise self.os_error(path, "read", exc) from None
        finally:
            os.close(fd)
        if total > cap_bytes:
            raise BackendError(
                f"cgroup {self.name!r}: {path}: larger than the {cap_bytes}-byte limit: refused"
            )
        return b"".join(chunks)

    def write(self, file_name: str, value: str, *, raw_errors: bool = False) -> None:
        """One ``write()`` of ``value`` to an existing regular file of the group."""
        path = self.dir / file_name
        data = value.encode("ascii")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise self.os_error(path, "write", nofollow_error(exc)) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise BackendError(f"cgroup {self.name!r}: {path}: not a regular file: refused")
            written = os.write(fd, data)
            if written != len(data):
                raise BackendError(
                    f"cgroup {self.name!r}: {path}: short write ({written} of {len(data)} bytes)"
                )
        except OSError as exc:
            if raw_errors:
                raise
            raise self.os_error(path, "write", exc) from None
        finally:
            os.close(fd)


def detect_version(group: Path) -> CgroupVersionFound | None:
    """Which cgroup version a group directory belongs to, by its memory files."""
    if (group / "memory.limit_in_bytes").exists() and (group / "memory.usage_in_bytes").exists():
        return "v1"
    if (group / "memory.current").exists() and (group / "memory.max").exists():
        return "v2"
    return None


def nofollow_error(exc: OSError) -> OSError:
    """Name O_NOFOLLOW's ``ELOOP`` for what it is: the file is a symlink."""
    if exc.errno == errno.ELOOP:
        return OSError(errno.ELOOP, "is a symlink: refused")
    return exc
