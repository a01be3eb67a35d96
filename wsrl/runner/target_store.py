"""What the runner set, kept on disk, so that a restart changes no guest's size by itself.

After every tick that applied something, and on exit, the runner writes each guest's target in
force to a small JSON file (``state.path``, default ``targets.json`` beside the audit log),
atomically (a new file renamed over the old, fsynced when the audit log is). A new runner reads it
before its first tick; :class:`~wsrl.runner.guest_state.GuestState` then starts each guest's rails
from what is really in force (see :meth:`~wsrl.runner.guest_state.GuestState.restore`): the size
the VMM or the cgroup reports, and the target the previous run set where the two agree that it is
still being worked towards.

The file is the runner's own: it is read only if this user or root owns it and every directory on
the way (:func:`wsrl.security.read_trusted_file`), it is capped in size, and a file that cannot be
used (missing, torn, from another host or config) is reported and ignored: the sizes the backends
report are the truth either way.

Format::

    {"version": 1, "host": "laptop", "time_ms": 1765000000000,
     "guests": {"desktop": {"target_bytes": 4294967296, "provisioned_bytes": 6442450944}}}
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from wsrl.errors import WsrlError
from wsrl.inputs.live import GuestSpec
from wsrl.security import UntrustedFileError, check_trusted_directory, read_trusted_file

STATE_VERSION = 1
MAX_STATE_BYTES = 1 << 20
"""The largest state file read (64 guests need a few kB)."""
STATE_FILE_MODE = 0o640


class TargetStore:
    """Reads and writes the runner's targets in force (see the module docstring).

    Args:
        path: the state file.
        host: the host's name (a file written for another host is ignored).
        specs: the configured guests.
        fsync: fsync the file and its directory after each write.

    """

    def __init__(self, path: str | Path, *, host: str, specs: Sequence[GuestSpec], fsync: bool) -> None:
        self.path = Path(path)
        self.host = host
        self.specs = list(specs)
        self.fsync = fsync
        self._last_written: dict[str, int] | None = None

    def load(self) -> tuple[dict[str, float], str | None]:
        """The targets the previous run left, by guest name, and a one-line problem (``None``: none).

        A guest is left out when the file does not name it, or names it with another provisioned
        size (the config changed: the old target means nothing now).
        """
        if not self.path.exists():
            return {}, None
        try:
            raw = read_trusted_file(self.path, "runner state file", MAX_STATE_BYTES)
            data = json.loads(raw.decode("utf-8"))
        except UntrustedFileError as exc:
            return {}, f"{exc}: ignored"
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            return {}, f"{self.path}: not a runner state file ({type(exc).__name__}): ignored"
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            return {}, f"{self.path}: not a version-{STATE_VERSION} runner state file: ignored"
        if data.get("host") != self.host:
            return {}, f"{self.path}: written for host {data.get('host')!r}, not {self.host!r}: ignored"
        guests = data.get("guests")
        if not isinstance(guests, dict):
            return {}, f"{self.path}: field 'guests' is not an object: ignored"
        targets: dict[str, float] = {}
        for spec in self.specs:
            entry = guests.get(spec.name)
            if not isinstance(entry, dict):
                continue
            target, provisioned = entry.get("target_bytes"), entry.get("provisioned_bytes")
            if not (isinstance(target, int) and _is_bytes(target) and _is_bytes(provisioned)):
                continue
            if provisioned != round(spec.provisioned_bytes) or not 0 < target <= provisioned:
                continue
            targets[spec.name] = float(target)
        return targets, None

    def save(self, targets_bytes: Mapping[str, float], time_ms: float) -> None:
        """Write ``targets_bytes`` (non-finite ones are left out); unchanged targets are not rewritten.

        Raises:
            WsrlError: the file cannot be written (one line).

        """
        guests: dict[str, int] = {}
        for spec in self.specs:
            value = targets_bytes.get(spec.name, math.nan)
            if math.isfinite(value):
                guests[spec.name] = round(value)
        if guests == self._last_written:
            return
        data = {
            "version": STATE_VERSION,
            "host": self.host,
            "time_ms": int(time_ms),
            "guests": {
                s.name: {"target_bytes": guests[s.name], "provisioned_bytes": round(s.provisioned_bytes)}
                for s in self.specs
                if s.name in guests
            },
        }
        self._write(json.dumps(data, indent=1).encode("utf-8") + b"\n")
        self._last_written = guests

    def _write(self, content: bytes) -> None:
        directory = check_trusted_directory(self.path.parent, "runner state directory")
        tmp = directory / f".{self.path.name}.{os.getpid()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            fd = os.open(tmp, flags | os.O_EXCL, STATE_FILE_MODE)
            try:
                os.write(fd, content)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, directory / self.path.name)
            if self.fsync:
                dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise WsrlError(f"runner state file {self.path}: cannot write: {exc.strerror or exc}") from None


def _is_bytes(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 63
