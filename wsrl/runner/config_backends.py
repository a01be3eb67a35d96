"""The ``backend`` table of a ``[[guest]]``, one model per kind, and the path rules they follow.

See :mod:`wsrl.runner.config` for the rules (cgroup paths relative to the root, sockets absolute
and under an allowed directory, no ``..`` anywhere); the socket rule needs the whole config and is
checked there with :func:`socket_problem`.
"""

from __future__ import annotations

import itertools
import os
import re
import stat
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator

from wsrl.config_tools import StrictModel
from wsrl.histogram import DEFAULT_EDGES_MS
from wsrl.security import file_kind

BACKEND_KINDS: tuple[str, ...] = ("cgroup", "qemu", "crosvm", "sim")
DEFAULT_SOCKET_DIRS: tuple[str, ...] = ("/run", "/var/run", "/var/lib/wsrl", "/tmp")
"""Directories sockets may live in (plus the system temporary directory and ``host.socket_dirs``)."""
SOCKET_KEYS: tuple[str, ...] = ("qmp_socket", "agent_socket", "control_socket")
"""Backend keys that name a unix socket."""


class CgroupBackendConfig(StrictModel):
    """A memory cgroup (v1 or v2) driven through its limit files.

    ``histogram_source = "damon"`` reads an existing kdamond, strictly read-only
    (:mod:`wsrl.backends.damon`): ``damon_kdamond`` is then required, ``damon_context``,
    ``damon_target`` and ``damon_scheme`` default to 0. Under ``paddr`` monitoring the histogram
    is host-wide; it describes this guest only when the kdamond monitors the guest's process.

    ``histogram_source = "auto"`` (the default) takes the best source the kernel offers: ``wsr``,
    then ``lru_gen``, then ``referenced`` (page-table accessed bits,
    :mod:`wsrl.backends.referenced`), whose ``referenced_*`` keys set its schedule and caps: the
    bits are cleared every ``referenced_cycle_s`` (default: the longest age) and read at
    ``referenced_edges_ms`` (default: wsrl's canonical edges below ``referenced_max_age_s``), then
    at ``referenced_max_age_s`` (120 s), the longest age reported.
    """

    kind: Literal["cgroup"]
    path: str
    root: str | None = None
    version: Literal["auto", "v1", "v2"] = "auto"
    histogram_source: Literal["auto", "memory_stat", "lru_gen", "wsr", "damon", "referenced"] = "auto"
    lru_gen_path: str | None = None
    proactive_reclaim: bool = True
    damon_kdamond: int | None = Field(None, ge=0, validate_default=True)
    """Index of the running kdamond to read (``/sys/kernel/mm/damon/admin/kdamonds/<N>``)."""
    damon_context: int = Field(0, ge=0)
    damon_target: int = Field(0, ge=0)
    damon_scheme: int = Field(0, ge=0)
    """The DAMOS scheme whose ``tried_regions`` hold the regions (its pattern must admit all)."""
    referenced_max_age_s: float = Field(120.0, ge=0.001, le=86_400)
    """The longest age the ``referenced`` source reports (its last read after a clear), s."""
    referenced_edges_ms: list[int] | None = None
    """Windows read after each clear, ms (strictly increasing, above 0, below the longest age)."""
    referenced_cycle_s: float | None = Field(None, ge=0.001, le=86_400)
    """Time from one clear to the next, s (default and minimum: ``referenced_max_age_s``)."""
    referenced_detail: Literal["smaps", "rollup"] = "smaps"
    """``smaps``: anon and file apart per mapping; ``rollup``: per process (cheaper)."""
    referenced_max_processes: int = Field(4096, ge=1, le=1_000_000)
    """Most processes read per sweep (the rest count as young, with an audited problem)."""
    referenced_read_deadline_s: float = Field(5.0, ge=0.001, le=3600)
    """Longest one sweep (the clear, or one edge's reads) may take, s."""
    _source_in_use: tuple[str, str] | None = PrivateAttr(None)

    def note_source_in_use(self, source: str, reason: str) -> None:
        """Record the source the built backend uses and why (``auto`` resolves when it is built)."""
        self._source_in_use = (source, reason)

    def source_in_use(self) -> tuple[str, str]:
        """``(source, why)``: what the built backend uses, else the configured source."""
        return self._source_in_use or (self.histogram_source, "configured; backend not built")

    @field_validator("referenced_edges_ms")
    @classmethod
    def _referenced_edges(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if not value or any(e <= 0 for e in value) or any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError(f"must be strictly increasing ms above 0, got {value!r}")
        return value

    @field_validator("referenced_cycle_s")
    @classmethod
    def _referenced_cycle(cls, value: float | None, info: ValidationInfo) -> float | None:
        max_age_s = info.data.get("referenced_max_age_s")
        if value is not None and max_age_s is not None and value < max_age_s:
            raise ValueError(f"must be at least referenced_max_age_s ({max_age_s:g} s), got {value:g}")
        return value

    def referenced_read_edges_ms(self) -> tuple[int, ...]:
        """The windows the ``referenced`` source reads: the edges below the longest age, then it."""
        max_age_ms = round(self.referenced_max_age_s * 1000)
        edges = self.referenced_edges_ms if self.referenced_edges_ms is not None else DEFAULT_EDGES_MS
        return (*(e for e in edges if e < max_age_ms), max_age_ms)

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        return _cgroup_path(value)

    @field_validator("root", "lru_gen_path")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        return None if value is None else absolute_path(value)

    @field_validator("damon_kdamond")
    @classmethod
    def _damon_kdamond(cls, value: int | None, info: ValidationInfo) -> int | None:
        source = info.data.get("histogram_source")
        if source == "damon" and value is None:
            raise ValueError('required when histogram_source = "damon" (the running kdamond\'s index)')
        if source not in ("damon", None) and value is not None:
            raise ValueError(f'only used when histogram_source = "damon" (it is {source!r})')
        return value


class QemuBackendConfig(StrictModel):
    """A QEMU VM: balloon and statistics over QMP, histograms from the guest agent's stream."""

    kind: Literal["qemu"]
    qmp_socket: str
    agent_socket: str | None = None
    memcg: str | None = None
    """Which memcg of the guest's lru_gen dumps makes the histogram (a path inside the guest,
    such as ``/`` or ``/system.slice``); ``None``: all of them."""
    stats_interval_s: float = Field(2.0, ge=0)
    timeout_s: float = Field(5.0, gt=0)

    @field_validator("memcg")
    @classmethod
    def _guest_memcg(cls, value: str | None) -> str | None:
        return None if value is None else _guest_memcg_path(value)


class CrosvmBackendConfig(StrictModel):
    """A crosvm VM: balloon through ``crosvm balloon`` on its control socket."""

    kind: Literal["crosvm"]
    control_socket: str
    crosvm_bin: str = "crosvm"
    timeout_s: float = Field(5.0, gt=0)
    agent_socket: str | None = None
    memcg: str | None = None
    """As for QEMU guests: the guest memcg whose lru_gen entries make the histogram."""
    working_set: bool = True
    """Ask crosvm's ``balloon_ws`` for a histogram on every read."""

    @field_validator("memcg")
    @classmethod
    def _guest_memcg(cls, value: str | None) -> str | None:
        return None if value is None else _guest_memcg_path(value)

    @field_validator("crosvm_bin")
    @classmethod
    def _binary(cls, value: str) -> str:
        if "/" in value:
            return absolute_path(value)
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", value):
            raise ValueError(f"must be a command name or an absolute path, got {value!r}")
        return value


class SimBackendConfig(StrictModel):
    """A guest of the ``[sim]`` scenario (``guest``: its name there; default the runner's name)."""

    kind: Literal["sim"]
    guest: str | None = None


BackendConfig = Annotated[
    CgroupBackendConfig | QemuBackendConfig | CrosvmBackendConfig | SimBackendConfig,
    Field(discriminator="kind"),
]


# --------------------------------------------------------------------------------------------
# Path rules
# --------------------------------------------------------------------------------------------


def absolute_path(value: str) -> str:
    """``value`` normalised; ``ValueError`` unless it is absolute and free of ``..``."""
    path = PurePosixPath(value)
    if not path.is_absolute():
        raise ValueError(f"must be an absolute path, got {value!r}")
    if ".." in path.parts:
        raise ValueError(f"must not contain '..', got {value!r}")
    return str(path)


def _cgroup_path(value: str) -> str:
    path = PurePosixPath(value)
    if path.is_absolute():
        raise ValueError(f"must be relative to the cgroup root (no leading '/'), got {value!r}")
    if ".." in path.parts:
        raise ValueError(f"must not contain '..', got {value!r}")
    if str(path) in ("", "."):
        raise ValueError("must name a cgroup below the root")
    return str(path)


def _guest_memcg_path(value: str) -> str:
    path = PurePosixPath(value)
    if not path.is_absolute() or ".." in path.parts:
        raise ValueError(f"must be a guest memcg path as its kernel prints it (/system.slice), got {value!r}")
    return str(path)


def socket_problem(value: str, allowed_dirs: list[str]) -> str | None:
    """Why ``value`` is not an acceptable socket path (``None`` when it is).

    It must lie under an allowed directory and, when it exists, be a unix socket (not a regular
    file, a FIFO nor a device). A symlink is accepted only where it resolves to such a socket, or
    to a path not made yet, that also lies under an allowed directory: the way an operator gives a
    VM whose socket moves at each boot (libvirt's ``domain-<id>-<name>``) one stable path.
    """
    try:
        path = PurePosixPath(absolute_path(value))
    except ValueError as exc:
        return str(exc)

    def allowed(candidate: PurePosixPath) -> bool:
        return any(candidate.is_relative_to(d) and candidate != PurePosixPath(d) for d in allowed_dirs)

    if not allowed(path):
        return f"must lie under one of {', '.join(allowed_dirs)} (add host.socket_dirs), got {value!r}"
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None  # not made yet: the VM starts later, and the backend connects when it is there
    except OSError as exc:
        return f"{value}: cannot be examined: {exc.strerror or exc}"
    if stat.S_ISLNK(info.st_mode):
        target = PurePosixPath(os.path.realpath(path))
        if not allowed(target):
            return (
                f"{value} is a symlink to {target}, outside {', '.join(allowed_dirs)} (add host.socket_dirs)"
            )
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return None  # the link's target is not made yet
        except OSError as exc:
            return f"{value}: cannot be examined: {exc.strerror or exc}"
        if not stat.S_ISSOCK(info.st_mode):
            return f"{value} is not a socket (a symlink to {file_kind(info.st_mode)} {target})"
        return None
    if not stat.S_ISSOCK(info.st_mode):
        return f"{value} is not a socket (it is {file_kind(info.st_mode)})"
    return None
