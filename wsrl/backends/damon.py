"""A read-only histogram source over an existing kdamond's DAMON sysfs tree.

:class:`DamonSource` turns the regions that a running kdamond (started and owned by someone else:
``damo``, a daemon, the boot configuration) exposes under ``/sys/kernel/mm/damon/admin`` into a
:class:`~wsrl.histogram.Histogram`, through the same parser as recorded captures
(:func:`wsrl.formats.damon.parse_sysfs_listing`).

**Strictly read-only.** Every DAMON file is opened ``O_RDONLY | O_NOFOLLOW`` and read with a size
cap; nothing is ever written, so wsrl never starts, stops, commits or reconfigures a kdamond and
never asks it to refresh anything. That has a consequence worth knowing:

**Where the access data is.** In the DAMON sysfs ABI (Documentation/admin-guide/mm/damon/usage.rst,
mm/damon/sysfs.c, mm/damon/sysfs-schemes.c) a target's ``targets/<T>/regions/<R>/`` directories
hold only ``start`` and ``end``: they are the *initial* regions a user asks for, with no access
information. Per-region ``nr_accesses`` and ``age`` are exposed only under a DAMOS scheme,
``contexts/<C>/schemes/<S>/tried_regions/<R>/{start,end,nr_accesses,age}``, and the kernel fills
that directory only when someone writes ``update_schemes_tried_regions`` to the kdamond's
``state`` file. wsrl never writes it: the kdamond's owner must refresh it (``damo report access``
and ``damo show`` do), and :class:`DamonSource` reads whatever the last refresh left, which may be
stale; the sysfs tree carries no timestamp that would say how stale. An empty ``tried_regions``
is a :class:`~wsrl.backends.base.BackendError` saying so.

What is checked before a histogram is returned (each failure is a BackendError naming the
kdamond and the file):

* the kdamond, context, target and scheme directories exist (a missing one names the index and
  the ``nr_*`` count next to it; a missing admin directory means no DAMON sysfs interface);
* ``kdamonds/<K>/state`` is ``on`` (``off`` means the regions are frozen at the last run:
  "kdamond K is off");
* the context has exactly one target: ``tried_regions`` entries do not say which target they
  belong to, so with several targets (several processes under ``vaddr``) the histogram would mix
  them;
* the scheme's access pattern admits every region (``sz`` from at most a page to at least
  2^63 - 1 bytes, ``nr_accesses`` from 0 to at least ``aggr_us / sample_us``, ``age`` from 0 to
  ``UINT_MAX``: the all-inclusive pattern of a monitoring-only ``stat`` scheme): a narrower
  scheme (a ``pageout`` scheme for regions idle over 10 s, say) tries only some regions, and its
  ``tried_regions`` would silently leave memory out;
* at most ``max_files`` region directories (:data:`DEFAULT_MAX_FILES`): a bigger tree is refused
  before any region is read, so a huge or hostile tree cannot exhaust memory (DAMON's own
  default is at most 1,000 regions per target).

**Units.** Region sizes are ``end - start`` times the context's ``addr_unit`` (Linux 6.18+, ``1``
when the file is absent). ``age`` counts aggregation intervals, converted to ms with the context's
``monitoring_attrs/intervals/aggr_us``; a region accessed in the last aggregation interval
(``nr_accesses > 0``) is idle for 0 ms, otherwise for ``(age + 1) * aggr_us`` (the parser's and
damo's rule). ``sample_us`` is read to check the access pattern and kept in ``meta``.

**Memory types and scope.** DAMON regions are address ranges, not memory types: every byte is
reported as ``region_type`` (default ``"anon"``, like the parser's ``damon_region_type``), the
other type zero. What the ranges cover depends on the context's ``operations``:

* ``paddr`` (physical addresses; the only operations on the wsrl development host) monitors the
  whole machine's memory: the histogram is **host-wide**, not a guest's. It means something for a
  guest only as a statement about the host.
* ``vaddr`` / ``fvaddr`` monitor one process's address space (``targets/<T>/pid_target``): for a
  VM that is meaningful when the target is the guest's QEMU (or crosvm) process, whose address
  space holds the guest's RAM; for a container, a single main process.

``meta`` records ``operations``, ``pid_target`` (when present), ``aggr_us``, ``sample_us``,
``addr_unit`` and the kdamond, context, target and scheme indexes, so an audit record shows which
of these a histogram was.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Literal

from wsrl.backends.base import BackendError
from wsrl.errors import ParseError
from wsrl.formats import FormatOptions
from wsrl.formats.damon import parse_sysfs_listing
from wsrl.histogram import Histogram

DEFAULT_ADMIN_ROOT = Path("/sys/kernel/mm/damon/admin")
DEFAULT_MAX_FILES = 100_000
"""Most region directories read from one ``tried_regions`` directory (DAMON's default is <= 1,000)."""
MAX_VALUE_BYTES = 4096
"""Largest DAMON sysfs file read (sysfs values fit in one page; a numeric one is ~20 bytes)."""

_UINT_MAX = 2**32 - 1
_PAGE_SIZE_BYTES = os.sysconf("SC_PAGE_SIZE")
_REGION_FIELDS = ("start", "end", "nr_accesses", "age")


def _index(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BackendError(f"DAMON: {name}={value!r} must be a non-negative integer index")
    return value


class DamonSource:
    """Reads, never writes, one existing kdamond's regions into a histogram (module docstring).

    Args:
        kdamond: the kdamond's index under ``kdamonds/``.
        context: the context's index under ``contexts/``.
        target: the target's index under ``targets/`` (must be the context's only target).
        scheme: the DAMOS scheme whose ``tried_regions`` hold the access data; its access pattern
            must admit every region.
        admin_root: DAMON's sysfs admin directory.
        max_files: most region directories read; a larger ``tried_regions`` is refused.
        guest: the histogram's guest name.
        region_type: the memory type DAMON's bytes are counted as (DAMON has no anon/file split).

    Raises:
        BackendError: an index is negative or not an integer, or ``max_files`` is below 1.

    Nothing is read until :meth:`read`: the kdamond may be started after wsrl.

    """

    def __init__(
        self,
        kdamond: int,
        context: int = 0,
        target: int = 0,
        *,
        scheme: int = 0,
        admin_root: str | Path = DEFAULT_ADMIN_ROOT,
        max_files: int = DEFAULT_MAX_FILES,
        guest: str = "damon",
        region_type: Literal["anon", "file"] = "anon",
    ) -> None:
        self.kdamond = _index("kdamond", kdamond)
        self.context = _index("context", context)
        self.target = _index("target", target)
        self.scheme = _index("scheme", scheme)
        if isinstance(max_files, bool) or not isinstance(max_files, int) or max_files < 1:
            raise BackendError(f"DAMON: max_files={max_files!r} must be a positive integer")
        if region_type not in ("anon", "file"):
            raise BackendError(f"DAMON: region_type={region_type!r}: choose 'anon' or 'file'")
        self.admin_root = Path(admin_root)
        self.max_files = max_files
        self.guest = guest
        self.region_type: Literal["anon", "file"] = region_type
        self._label = f"DAMON kdamond {self.kdamond}"

    # -- reading -------------------------------------------------------------------------------

    def read(self) -> Histogram:
        """The kdamond's current ``tried_regions`` as a histogram (module docstring).

        Raises:
            BackendError: DAMON's sysfs tree is missing, the kdamond (or its context, target or
                scheme) does not exist, the kdamond is off, the context has several targets, the
                scheme's access pattern leaves regions out, ``tried_regions`` is empty, larger
                than ``max_files`` or malformed, or a file is unreadable; the message names the
                kdamond and the file.

        """
        kdamond_dir = self._kdamond_dir()
        state = self._text(kdamond_dir / "state")
        if state != "on":
            raise BackendError(
                f"{self._label} is {state or 'in an empty state'}: its regions are not being "
                "monitored (wsrl never starts a kdamond)"
            )
        context_dir = self._child(kdamond_dir / "contexts", self.context, "context")
        operations = self._text(context_dir / "operations")
        intervals = context_dir / "monitoring_attrs" / "intervals"
        sample_us = self._uint(intervals / "sample_us")
        aggr_us = self._uint(intervals / "aggr_us")
        if sample_us == 0 or aggr_us == 0:
            raise BackendError(f"{self._label}: {intervals}: sample_us and aggr_us must be above 0")
        addr_unit_path = context_dir / "addr_unit"
        addr_unit = self._uint(addr_unit_path) if addr_unit_path.exists() else 1
        if addr_unit == 0:
            raise BackendError(f"{self._label}: {addr_unit_path}: an address unit of 0")
        target_dir = self._child(context_dir / "targets", self.target, "target")
        nr_targets = self._uint(context_dir / "targets" / "nr_targets")
        if nr_targets != 1:
            raise BackendError(
                f"{self._label}: context {self.context} has {nr_targets} targets: DAMON's "
                "tried_regions do not say which target a region belongs to, so the histogram would "
                "mix them; give the guest a context with a single target"
            )
        pid_path = target_dir / "pid_target"
        pid_target = self._text(pid_path) if pid_path.exists() else None
        scheme_dir = self._child(context_dir / "schemes", self.scheme, "scheme")
        self._check_access_pattern(scheme_dir / "access_pattern", aggr_us // sample_us)
        context_prefix = f"kdamonds/{self.kdamond}/contexts/{self.context}"
        lines = [f"{context_prefix}/monitoring_attrs/intervals/aggr_us:{aggr_us}"]
        lines += self._region_lines(scheme_dir / "tried_regions", addr_unit)
        options = FormatOptions(guest=self.guest, damon_region_type=self.region_type)
        try:
            [histogram] = parse_sysfs_listing(lines, options)
        except ParseError as exc:
            raise BackendError(f"{self._label}: {scheme_dir / 'tried_regions'}: {exc}") from None
        meta = dict(histogram.meta)
        meta.update(
            source="damon sysfs (read-only)",
            operations=operations,
            sample_us=str(sample_us),
            addr_unit=str(addr_unit),
            target=str(self.target),
        )
        if pid_target is not None:
            meta["pid_target"] = pid_target
        rows = {t: list(histogram.type_bytes(t)) for t in histogram.types}
        return Histogram(histogram.guest, histogram.node, histogram.edges_ms, rows, meta)

    def _kdamond_dir(self) -> Path:
        kdamonds = self.admin_root / "kdamonds"
        if not kdamonds.is_dir():
            raise BackendError(
                f"{self._label} does not exist: {kdamonds} is missing (a kernel without the DAMON "
                "sysfs interface, CONFIG_DAMON_SYSFS, or sysfs not mounted)"
            )
        return self._child(kdamonds, self.kdamond, "kdamond")

    def _child(self, parent: Path, index: int, kind: str) -> Path:
        """``parent/<index>``, or a BackendError naming the index and ``parent/nr_<kind>s``."""
        child = parent / str(index)
        if child.is_dir() and not child.is_symlink():
            return child
        count_path = parent / f"nr_{kind}s"
        try:
            count = f"{count_path.name} is {self._text(count_path)}"
        except BackendError:
            count = f"{count_path.name} is unreadable"
        what = self._label if kind == "kdamond" else f"{self._label}: {kind} {index}"
        raise BackendError(f"{what} does not exist: no {child} ({count}); wsrl never creates one")

    def _check_access_pattern(self, pattern_dir: Path, max_nr_accesses: int) -> None:
        """Refuse a scheme whose access pattern would leave some regions out of tried_regions."""
        ranges = {
            name: (self._uint(pattern_dir / name / "min"), self._uint(pattern_dir / name / "max"))
            for name in ("sz", "nr_accesses", "age")
        }
        problems = []
        if ranges["sz"][0] > _PAGE_SIZE_BYTES or ranges["sz"][1] < 2**63 - 1:
            problems.append(f"sz {ranges['sz'][0]}..{ranges['sz'][1]}")
        if ranges["nr_accesses"][0] > 0 or ranges["nr_accesses"][1] < max_nr_accesses:
            problems.append(
                f"nr_accesses {ranges['nr_accesses'][0]}..{ranges['nr_accesses'][1]} "
                f"(all is 0..{max_nr_accesses})"
            )
        if ranges["age"][0] > 0 or ranges["age"][1] < _UINT_MAX:
            problems.append(f"age {ranges['age'][0]}..{ranges['age'][1]} (all is 0..{_UINT_MAX})")
        if problems:
            raise BackendError(
                f"{self._label}: scheme {self.scheme}'s access pattern ({pattern_dir}) tries only "
                f"some regions: {'; '.join(problems)}; its tried_regions would leave memory out. "
                "Use a scheme that admits every region (an all-inclusive 'stat' scheme)"
            )

    def _region_lines(self, tried_dir: Path, addr_unit: int) -> list[str]:
        """``path:value`` listing lines of every region (bounded by ``max_files``)."""
        names: list[int] = []
        try:
            with os.scandir(tried_dir) as entries:
                for entry in entries:
                    if not entry.name.isdigit():
                        continue
                    names.append(int(entry.name))
                    if len(names) > self.max_files:
                        raise BackendError(
                            f"{self._label}: {tried_dir} holds more than max_files={self.max_files} "
                            "region directories: refused"
                        )
        except OSError as exc:
            raise self._os_error(tried_dir, exc) from None
        if not names:
            raise BackendError(
                f"{self._label}: {tried_dir} holds no regions: the kdamond's owner has not written "
                "'update_schemes_tried_regions' to its state file (wsrl never writes DAMON files)"
            )
        prefix = f"kdamonds/{self.kdamond}/contexts/{self.context}/schemes/{self.scheme}/tried_regions"
        lines = []
        for number in sorted(names):
            values = {name: self._uint(tried_dir / str(number) / name) for name in _REGION_FIELDS}
            values["start"] *= addr_unit
            values["end"] *= addr_unit
            lines += [f"{prefix}/{number}/{name}:{values[name]}" for name in _REGION_FIELDS]
        total_path = tried_dir / "total_bytes"
        if total_path.exists() and addr_unit == 1:
            lines.append(f"{prefix}/total_bytes:{self._uint(total_path)}")
        return lines

    # -- file primitives -----------------------------------------------------------------------

    def _os_error(self, path: Path, exc: OSError) -> BackendError:
        if exc.errno == errno.ENOENT:
            return BackendError(
                f"{self._label}: cannot read {path}: missing (or removed while read, when the "
                "kdamond's owner refreshed the tree: the next read retries)"
            )
        if exc.errno == errno.ELOOP:
            return BackendError(f"{self._label}: cannot read {path}: is a symlink: refused")
        return BackendError(f"{self._label}: cannot read {path}: {exc.strerror or exc}")

    def _text(self, path: Path) -> str:
        """A DAMON sysfs file's stripped text: opened read-only, never following a final symlink."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            raise self._os_error(path, exc) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise BackendError(f"{self._label}: {path}: not a regular file: refused")
            data = b""
            while len(data) <= MAX_VALUE_BYTES:
                chunk = os.read(fd, MAX_VALUE_BYTES + 1 - len(data))
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            raise self._os_error(path, exc) from None
        finally:
            os.close(fd)
        if len(data) > MAX_VALUE_BYTES:
            raise BackendError(f"{self._label}: {path}: larger than {MAX_VALUE_BYTES} bytes: refused")
        try:
            return data.decode("ascii").strip()
        except UnicodeDecodeError:
            raise BackendError(f"{self._label}: {path}: not ASCII text") from None

    def _uint(self, path: Path) -> int:
        text = self._text(path)
        if not text.isdigit() or not text.isascii() or len(text) > 20:
            raise BackendError(f"{self._label}: {path}: {text[:40]!r} is not an unsigned integer")
        return int(text)
