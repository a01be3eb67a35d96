"""A memory cgroup (a container) as a :class:`~wsrl.backends.base.GuestBackend`.

:class:`CgroupBackend` reads one memcg's state from its cgroup files and sets its target through its
limit files. It speaks both cgroup versions:

=========================  =====================================  ================================
what                       cgroup v1                              cgroup v2
=========================  =====================================  ================================
usage                      ``memory.usage_in_bytes``              ``memory.current``
target (what wsrl set)     ``memory.limit_in_bytes``              ``memory.high``, else ``memory.max``
visible (limit in force)   min(target, ``hierarchical_memory_     min over the group and its
                           limit`` of ``memory.stat``)            ancestors below ``root`` of
                                                                  ``memory.high`` / ``memory.max``
refaults (pages)           ``memory.stat`` ``total_workingset_    ``memory.stat`` ``workingset_
                           refault_anon`` + ``_file`` (or         refault_anon`` + ``_file`` (or
                           ``total_workingset_refault``)          ``workingset_refault``)
swap                       ``memory.memsw.usage_in_bytes`` -      ``memory.swap.current``
                           usage, else ``memory.stat`` swap
OOM kills                  ``memory.oom_control`` ``oom_kill``    ``memory.events`` ``oom_kill``
PSI                        none: NaN (see below)                  ``memory.pressure`` ``some``
=========================  =====================================  ================================

v1 ``memory.stat`` is read through its hierarchical ``total_*`` fields, so a container that holds
child groups is counted whole (v2 ``memory.stat`` is hierarchical already).

**Unlimited groups.** ``max`` (v2) or a limit at the kernel's ceiling (``PAGE_COUNTER_MAX`` pages,
9223372036854771712 bytes with 4 KiB pages, which v1 prints for "no limit") is unlimited: the
reading then has ``target_bytes = NaN`` and ``visible_bytes`` = the usage (or an ancestor's limit,
when one is in force). The backend reports what the kernel says; the runner knows the provisioned
size and :func:`~wsrl.inputs.live.snapshot_from_readings` falls back to ``visible_bytes``.

**PSI.** cgroup v2 has a per-group ``memory.pressure``; a kernel booted with ``psi=0`` makes it
unreadable (``EOPNOTSUPP``), and the reading then has NaN. cgroup v1 has no per-group PSI at all, so a
v1 reading always has NaN: the system-wide ``/proc/pressure/memory`` measures the whole host, not
this guest, and is deliberately not used in its place.

**Histograms** (``histogram_source``):

* ``"memory_stat"``: a coarse two-bin histogram from the kernel's LRU lists. The kernel keeps no
  time on them: "active" means referenced repeatedly at some point, "inactive" means not known to
  be hot (new anon pages start there, so it can hold pages touched a moment ago). The bins are
  therefore chosen so the histogram never says memory is colder than the LRU says: ``active_*``
  and ``unevictable`` (counted as anon, it can never be reclaimed) go to ``(0, 1 s]``, ``inactive_*``
  go to the open-ended bin ``(1 s, +inf)``, i.e. "idle for more than 1 s, age otherwise unknown".
  With :class:`~wsrl.histogram.Histogram`'s rules that makes ``cold_bytes(T)`` the inactive bytes
  for ``T <= 1 s`` (:data:`LRU_EDGE_MS`, wsrl's smallest canonical edge) and 0 for any longer ``T``:
  a policy with a 10 s or 120 s cold threshold sees nothing cold from this source and must rely on
  refaults and PSI instead. The LRU lists hold only page-cache and anon pages, so the bins add up
  to at most the usage (kernel memory is charged to the usage but not on an LRU).
* ``"lru_gen"``: MGLRU's debugfs file (``lru_gen_path``), parsed with :mod:`wsrl.formats.lru_gen`,
  keeping this memcg's entries (all its NUMA nodes, merged). An entry matches when its path equals
  the group's path relative to ``root`` with a leading ``/`` (the kernel prints paths relative to
  the hierarchy's mount, so ``root`` should be the mount point), or, failing that, when its memcg
  id equals the group directory's inode number (what kernels since 2025 print as the id). The file
  covers every memcg on the host and is parsed whole: a malformed entry anywhere fails the read.
* ``"wsr"``: the working-set reporting patches' ``memory.workingset.page_age`` in the group's
  directory, parsed with :mod:`wsrl.formats.wsr`, nodes merged. See **WSR push** below.
* ``"damon"``: the regions of an existing kdamond (``damon_kdamond``, ``damon_context``,
  ``damon_target``, ``damon_scheme``), read strictly read-only through
  :class:`~wsrl.backends.damon.DamonSource`: wsrl never starts, stops or reconfigures DAMON, and
  relies on the kdamond's owner to refresh the scheme's ``tried_regions``. DAMON regions are
  address ranges, not memory types: every byte is reported as anon. With physical-address
  monitoring (``paddr``) the histogram is host-wide, not this group's: it is only meaningful for
  a guest when the kdamond monitors that guest's process (``vaddr``: the container's main process,
  or a VM's QEMU process). See :mod:`wsrl.backends.damon` for every check.

* ``"referenced"``: page-table accessed bits of the group's processes, sampled on a thread of its
  own by :class:`~wsrl.backends.referenced.ReferencedSampler` (cleared through
  ``/proc/PID/clear_refs``, read from ``smaps`` at each edge after the clear). :meth:`read` returns
  the latest cycle's histogram (its age in ``source["histogram_age_s"]``) fitted to the LRU sizes
  of ``memory.stat``: a type's bytes counted in several processes are scaled down to its LRU
  pages, LRU pages no page table showed go to the first bin (age unknown, counted young); before
  the first read it returns the ``memory_stat`` bins (``source["histogram_fallback"]``), and a
  cost-cap breach or refusal is in ``source["histogram_problem"]``.
* ``"auto"``: :func:`choose_histogram_source` picks ``wsr``, else ``lru_gen``, else ``referenced``
  (the runner's config default; the class's default stays ``memory_stat``).

**WSR push.** With ``histogram_source="wsr"``, :meth:`CgroupBackend.start` starts a
:class:`~wsrl.backends.kernfs.KernfsWatcher` on ``memory.workingset.page_age``. The working-set
reporting patches (RFC 2023, v1-v4 2024, never merged) wake readers of that file through
``cgroup_file_notify`` (a ``kernfs_notify``, ``notify_workingset()`` in the patches) when
non-proactive direct reclaim hits the group and, with the kernel's aging thread, when a report refreshed per
``memory.workingset.refresh_interval`` is ready; ``memory.workingset.report_threshold`` (ms per
node, written ``N0=1000``) bounds how often a waiting reader is woken. Userspace waits on that
with ``poll()`` for ``POLLPRI | POLLERR`` (kernfs's notification; inotify ``IN_MODIFY`` is also
sent). On each wake the watcher re-reads the file (which re-arms kernfs's notification, and
forces one more aging pass on a WSR kernel) and calls ``notify("wsr_report")``; the runner then
reads the group as usual. wsrl does not write ``refresh_interval`` or ``report_threshold`` (both
default to 0, off): the operator enables reporting, and without it no wake comes and the runner
simply polls each tick. When the file is missing (a kernel without WSR, like the one wsrl is
developed on) or is not a kernfs file (a crafted tree), no watcher runs and ``start`` does nothing
more: polling each tick is the fallback. The watcher itself is tested on a real kernfs
notification this kernel does send, cgroup v2 ``cgroup.events`` (``populated`` flips when a
process enters or leaves a group); the WSR file itself is not available here.

Every file is read with a size cap (:data:`~wsrl.backends.cgroup_files.MAX_FILE_BYTES`,
:data:`~wsrl.backends.cgroup_files.MAX_LRU_GEN_BYTES`) and without following a symlink at the last
component (:mod:`wsrl.backends.cgroup_files` reads and parses them); every unreadable, missing or
malformed file is a :class:`~wsrl.backends.base.BackendError` naming the guest, the file and what
is wrong with it.

**Applying a target.** Targets are aligned down to a page; a target below one page is refused, one
at or above the kernel's ceiling means "unlimited".

* v1: ``memory.limit_in_bytes`` = target, then ``memory.soft_limit_in_bytes`` = target (the soft
  limit only matters under host-wide pressure, where the kernel then reclaims this group towards
  its target first; a kernel that does not support it, ``EOPNOTSUPP``, is tolerated). Lowering the
  limit below the usage makes the kernel reclaim synchronously; as soon as one reclaim pass frees
  nothing it answers ``EBUSY`` and keeps the old limit. That happens to anon that cannot be
  swapped, and also to swappable memory touched faster than reclaim can age it: measured here, a
  300 MiB anon region swept in a tight loop got ``EBUSY`` for a 200 MiB limit on 10 writes in a
  row (so immediate retries are pointless), while the same region swept once a second was
  accepted at the first write. The backend does not work around the refusal (no stepping, no
  ``memory.force_empty``): it raises ``BackendError("kernel refused limit X below usage Y ...")``,
  the old limit stays, and the runner holds its last good target (a refusal is itself a sign that
  the target is below the hot working set).
  A limit above a set ``memory.memsw.limit_in_bytes`` is refused by the kernel (``EINVAL``) and
  reported the same way; the backend never touches the memsw limit. v1 has no ``memory.reclaim``;
  ``proactive_reclaim`` has no effect there (lowering the limit reclaims by itself).
* v2: wsrl owns ``memory.high`` only: ``memory.high`` = target. ``memory.max`` is left alone: it is
  the operator's hard cap (typically the provisioned size); a wsrl target is a soft proposal, and
  breaching ``memory.high`` throttles and reclaims, which is recoverable, where breaching
  ``memory.max`` OOM-kills, which would make every misjudged target wsrl's kill. When
  ``proactive_reclaim`` is on and ``memory.current`` still exceeds the target after the write, the
  excess is written to ``memory.reclaim``; ``EAGAIN`` (reclaimed less than asked) is fine, a
  kernel without the file (before 5.19) is skipped (``memory.high`` reclaims on its own).
* :meth:`CgroupBackend.relax`: v1 writes the given size (``-1`` when ``None``) to
  ``memory.limit_in_bytes`` and resets the soft limit to unlimited (wsrl leaves no reclaim hint
  behind); v2 writes the size (``max`` when ``None``) to ``memory.high``. No proactive reclaim.

v2 support has been verified on crafted directory trees only: the kernel wsrl is developed on has
the cgroup v2 hierarchy mounted without the memory controller. v1 is tested on the real kernel.

**Path safety.** ``path`` is taken relative to ``root`` (default ``/sys/fs/cgroup/memory`` for v1,
``/sys/fs/cgroup`` or ``/sys/fs/cgroup/unified`` for v2, whichever is a cgroup2 mount holding the
group). It is resolved (``..`` and symlinks followed) and refused unless it names a directory
strictly below the resolved root: ``..`` escapes, symlinks out, and absolute paths elsewhere are all
refused with a BackendError naming the ``path`` setting.
"""

from __future__ import annotations

import errno
import math
import numbers
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from wsrl.agent.bins import MAX_HISTOGRAM_BINS
from wsrl.backends.base import BackendError, Notify
from wsrl.backends.cgroup_files import (
    KERNEL_MAX_BYTES,
    MAX_FILE_BYTES,
    MAX_LRU_GEN_BYTES,
    PAGE_SIZE_BYTES,
    CgroupFiles,
    detect_version,
)
from wsrl.backends.damon import DEFAULT_ADMIN_ROOT, DamonSource
from wsrl.backends.kernfs import KernfsWatcher
from wsrl.backends.referenced import PROC_ROOT, ReferencedSampler, ReferencedSettings, cgroup_pids
from wsrl.errors import HistogramError, ParseError
from wsrl.formats import FormatOptions, parse_bytes
from wsrl.formats.memory_stat import LRU_EDGE_MS as LRU_EDGE_MS  # re-exported: the memory_stat edge
from wsrl.formats.memory_stat import LRU_FIELDS, memory_stat_histogram
from wsrl.histogram import ALL_NODES, Histogram, merge_nodes
from wsrl.inputs.live import GuestReading

CgroupVersion = Literal["auto", "v1", "v2"]
HistogramSource = Literal["auto", "memory_stat", "lru_gen", "wsr", "damon", "referenced"]
HISTOGRAM_SOURCES: tuple[str, ...] = ("auto", "memory_stat", "lru_gen", "wsr", "damon", "referenced")
AUTO_ORDER: tuple[str, ...] = ("wsr", "lru_gen", "referenced")
"""What ``histogram_source="auto"`` picks from, best first (see :func:`choose_histogram_source`)."""

V1_ROOT = Path("/sys/fs/cgroup/memory")
V2_ROOTS: tuple[Path, ...] = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))
DEFAULT_LRU_GEN_PATH = Path("/sys/kernel/debug/lru_gen")
LRU_GEN_ENABLED = Path("/sys/kernel/mm/lru_gen/enabled")
WSR_REPORT_FILE = "memory.workingset.page_age"
"""The WSR patches' per-memcg report, read for ``histogram_source="wsr"`` and watched for pushes."""


def choose_histogram_source(
    group: Path, lru_gen_path: Path, lru_gen_enabled_path: str | Path = LRU_GEN_ENABLED
) -> tuple[HistogramSource, str]:
    """The best source this kernel offers for ``group``, and why (``histogram_source="auto"``).

    ``wsr`` when the group has ``memory.workingset.page_age`` (the working-set reporting patches);
    else ``lru_gen`` when MGLRU is on (``/sys/kernel/mm/lru_gen/enabled`` not ``0x0000``) and its
    debugfs dump is readable; else ``referenced`` (page-table accessed bits: every kernel).
    """
    if (group / WSR_REPORT_FILE).is_file():
        return "wsr", f"auto: {WSR_REPORT_FILE} present"
    try:
        enabled = Path(lru_gen_enabled_path).read_text().strip()
    except OSError:
        enabled = ""
    if not enabled:
        why = f"no {lru_gen_enabled_path} (no MGLRU)"
    elif enabled in ("0", "n", "N") or enabled.strip("0x") == "":
        why = f"MGLRU off ({lru_gen_enabled_path} = {enabled})"
    elif not os.access(lru_gen_path, os.R_OK):
        why = f"MGLRU on but {lru_gen_path} is not readable (debugfs not mounted?)"
    else:
        return "lru_gen", f"auto: MGLRU on, {lru_gen_path} readable"
    return "referenced", f"auto: no {WSR_REPORT_FILE}, {why}: page-table accessed bits"


class CgroupBackend:
    """One memory cgroup as a guest: reads its state, sets its limit (see the module docstring).

    Args:
        name: the guest's configured name (used in readings and error messages).
        path: the group's directory relative to ``root`` (an absolute path must lie below it).
        root: the hierarchy to stay inside; default detected from ``version`` (module docstring).
        version: ``"v1"``, ``"v2"`` or ``"auto"`` (by the files in the group's directory).
        histogram_source: where the working-set histogram comes from: ``"memory_stat"`` (LRU
            lists), ``"lru_gen"`` (MGLRU debugfs), ``"wsr"`` (``memory.workingset.page_age``,
            watched for pushes) or ``"damon"`` (an existing kdamond, read-only; host-wide under
            ``paddr``, see the module docstring).
        lru_gen_path: the MGLRU dump to read when ``histogram_source="lru_gen"``.
        proactive_reclaim: v2 only: write the excess over a new target to ``memory.reclaim``.
        damon_kdamond: the kdamond to read when ``histogram_source="damon"`` (required then).
        damon_context: its context index.
        damon_target: its target index (the context's only target).
        damon_scheme: the DAMOS scheme whose ``tried_regions`` hold the regions.
        damon_admin_root: DAMON's sysfs admin directory.
        edges_ms: bin edges the histogram is re-binned onto when it is read (the runner's, so a
            tick does no re-binning); ``None`` keeps the source's edges.

    Raises:
        BackendError: the path escapes the root, the group does not exist, its files do not
            match the requested cgroup version, or ``histogram_source="damon"`` without
            ``damon_kdamond``.

    """

    def __init__(
        self,
        name: str,
        path: str | Path,
        *,
        root: str | Path | None = None,
        version: CgroupVersion = "auto",
        histogram_source: HistogramSource = "memory_stat",
        lru_gen_path: str | Path = DEFAULT_LRU_GEN_PATH,
        proactive_reclaim: bool = True,
        damon_kdamond: int | None = None,
        damon_context: int = 0,
        damon_target: int = 0,
        damon_scheme: int = 0,
        damon_admin_root: str | Path = DEFAULT_ADMIN_ROOT,
        edges_ms: Sequence[int] | None = None,
        referenced: ReferencedSettings | None = None,
        proc_root: str | Path = PROC_ROOT,
        lru_gen_enabled_path: str | Path = LRU_GEN_ENABLED,
    ) -> None:
        self.name = name
        self.edges_ms = None if edges_ms is None else tuple(edges_ms)
        if version not in ("auto", "v1", "v2"):
            raise BackendError(f"cgroup {name!r}: version={version!r}: choose 'auto', 'v1' or 'v2'")
        if histogram_source not in HISTOGRAM_SOURCES:
            raise BackendError(
                f"cgroup {name!r}: histogram_source={histogram_source!r}: "
                "choose 'auto', 'memory_stat', 'lru_gen', 'wsr', 'damon' or 'referenced'"
            )
        self.configured_histogram_source: HistogramSource = histogram_source
        """The configured source (``"auto"`` included); :attr:`histogram_source` is the one in use."""
        self.histogram_source: HistogramSource = histogram_source
        self.histogram_source_reason = "configured"
        """Why :attr:`histogram_source` is in use (``"configured"``, or what ``"auto"`` found)."""
        self.lru_gen_path = Path(lru_gen_path)
        self.proactive_reclaim = proactive_reclaim
        self.damon_source: DamonSource | None = None
        if histogram_source == "damon":
            if damon_kdamond is None:
                raise BackendError(
                    f"cgroup {name!r}: histogram_source='damon' needs damon_kdamond (the index of "
                    "the running kdamond to read)"
                )
            try:
                self.damon_source = DamonSource(
                    damon_kdamond,
                    damon_context,
                    damon_target,
                    scheme=damon_scheme,
                    admin_root=damon_admin_root,
                    guest=name,
                )
            except BackendError as exc:
                raise BackendError(f"cgroup {name!r}: {exc}") from None
        self.root, self.dir, self.version = self._locate(path, root, version)
        self.files = CgroupFiles(name, self.dir, self.version)
        """The group's files, read and written through bounded, symlink-refusing calls."""
        if histogram_source == "auto":
            chosen, self.histogram_source_reason = choose_histogram_source(
                self.dir, self.lru_gen_path, lru_gen_enabled_path
            )
            self.histogram_source = chosen
        self.sampler: ReferencedSampler | None = None
        """The accessed-bit sampler when :attr:`histogram_source` is ``"referenced"``."""
        if self.histogram_source == "referenced":
            try:
                settings = referenced or ReferencedSettings()
            except ValueError as exc:
                raise BackendError(f"cgroup {name!r}: {exc}") from None
            self.sampler = ReferencedSampler(name, self._pids, settings, proc_root=proc_root)
        self._notify: Notify | None = None
        self.wsr_watcher: KernfsWatcher | None = None
        """The running WSR push watcher (``histogram_source="wsr"`` on a kernfs file), else None."""
        self.wsr_watcher_status = "not started"
        """Why :attr:`wsr_watcher` runs or not (set by :meth:`start`)."""

    # -- locating the group --------------------------------------------------------------------

    def _locate(
        self, path: str | Path, root: str | Path | None, version: CgroupVersion
    ) -> tuple[Path, Path, Literal["v1", "v2"]]:
        """Resolve ``path`` under the given or default root(s); detect the version."""
        if root is not None:
            roots = [Path(root)]
        elif version == "v1":
            roots = [V1_ROOT]
        elif version == "v2":
            roots = [r for r in V2_ROOTS if (r / "cgroup.controllers").is_file()] or list(V2_ROOTS)
        else:
            roots = [V1_ROOT] + [r for r in V2_ROOTS if (r / "cgroup.controllers").is_file()]
        problems: list[str] = []
        for candidate_root in roots:
            if root is None and not candidate_root.is_dir():
                problems.append(f"default root {candidate_root} does not exist")
                continue
            resolved_root, group = self._resolve(path, candidate_root, root is not None)
            if not group.is_dir():
                problems.append(f"{group} does not exist")
                continue
            found = detect_version(group)
            if found is None:
                problems.append(
                    f"{group} has no memory controller files (memory.limit_in_bytes, memory.current)"
                )
                continue
            if version != "auto" and found != version:
                problems.append(f"{group} is a cgroup {found} group, not {version}")
                continue
            return resolved_root, group, found
        raise BackendError(f"cgroup {self.name!r}: path={str(path)!r}: " + "; ".join(problems))

    def _resolve(self, path: str | Path, root: Path, explicit_root: bool) -> tuple[Path, Path]:
        """``(resolved root, resolved group)``, or BackendError when the group escapes the root."""
        setting = "root" if explicit_root else "default root"
        try:
            resolved_root = root.resolve(strict=True)
        except (OSError, RuntimeError, ValueError) as exc:
            raise BackendError(
                f"cgroup {self.name!r}: {setting}={str(root)!r}: cannot resolve: {exc}"
            ) from None
        if not resolved_root.is_dir():
            raise BackendError(f"cgroup {self.name!r}: {setting}={str(root)!r} is not a directory")
        try:
            group = (resolved_root / Path(path)).resolve()
        except (OSError, RuntimeError, ValueError) as exc:
            raise BackendError(f"cgroup {self.name!r}: path={str(path)!r}: cannot resolve: {exc}") from None
        if group == resolved_root or not group.is_relative_to(resolved_root):
            hint = " (give it relative to root, without the leading '/')" if Path(path).is_absolute() else ""
            raise BackendError(
                f"cgroup {self.name!r}: path={str(path)!r} resolves to {group}, which is not a group "
                f"below {setting} {resolved_root}: refused{hint}"
            )
        return resolved_root, group

    # -- protocol ------------------------------------------------------------------------------

    def start(self, notify: Notify) -> None:
        """Keep ``notify``; with ``histogram_source="wsr"``, watch the report for pushes.

        The watcher (module docstring, **WSR push**) calls ``notify("wsr_report")`` when the
        kernel signals a new report. A missing report file or one that is not on kernfs starts
        nothing (the runner polls :meth:`read` every tick, as for the other sources); why is in
        ``wsr_watcher_status``.
        """
        self._stop_watcher()
        self._notify = notify
        self.wsr_watcher_status = "not a wsr source"
        if self.sampler is not None:
            self.sampler.start()
        if self.histogram_source != "wsr":
            return
        watcher = KernfsWatcher(
            self.dir / WSR_REPORT_FILE, self._on_wsr_report, thread_name=f"wsrl-wsr-{self.name}"
        )
        self.wsr_watcher_status = watcher.start()
        if watcher.running:
            self.wsr_watcher = watcher

    def close(self) -> None:
        """Stop the WSR watcher and the accessed-bit sampler, if they run (files are opened per call)."""
        self._stop_watcher()
        if self.sampler is not None:
            self.sampler.stop()
        self._notify = None

    def _on_wsr_report(self) -> None:
        notify = self._notify
        if notify is not None:
            notify("wsr_report")

    def _stop_watcher(self) -> None:
        watcher, self.wsr_watcher = self.wsr_watcher, None
        if watcher is not None:
            watcher.stop()

    def read(self) -> GuestReading:
        """The group's state now (see the module docstring for every field's source).

        Raises:
            BackendError: a file is missing (the group was removed), unreadable, too large or
                malformed; the message names the file and the field.

        """
        time_ms = int(time.time() * 1000)
        stat_fields = self.files.flat_keyed("memory.stat")
        if self.version == "v1":
            usage = self.files.uint("memory.usage_in_bytes")
            limit = self.files.limit("memory.limit_in_bytes")
            target = math.nan if limit is None else float(limit)
            hierarchical = self.files.stat_value(stat_fields, "hierarchical_memory_limit", required=False)
            in_force = min(
                (v for v in (limit, hierarchical) if v is not None and v < KERNEL_MAX_BYTES),
                default=None,
            )
            swap = self.files.v1_swap_bytes(usage, stat_fields)
            oom_kills = self.files.flat_keyed("memory.oom_control", required=("oom_kill",))["oom_kill"]
            psi_total_s, psi_avg10 = math.nan, math.nan
        else:
            usage = self.files.uint("memory.current")
            high = self.files.limit("memory.high")
            maximum = self.files.limit("memory.max")
            own = high if high is not None else maximum
            target = math.nan if own is None else float(own)
            in_force = self.files.v2_limit_in_force(self.root)
            swap = (
                self.files.uint("memory.swap.current") if (self.dir / "memory.swap.current").exists() else 0
            )
            oom_kills = self.files.flat_keyed("memory.events", required=("oom_kill",))["oom_kill"]
            psi_total_s, psi_avg10 = self.files.psi()
        refaults = self.files.refaults(stat_fields)
        source = {
            "backend": f"cgroup-{self.version}",
            "cgroup": str(self.dir),
            "histogram": self.histogram_source,
        }
        histogram: Histogram | None
        provisional = False
        horizon_ms = math.inf
        if self.sampler is not None:
            histogram, provisional = self._referenced_histogram(stat_fields, source, time_ms)
            if histogram is None:  # no read yet, or none possible: the LRU lists' two bins meanwhile
                source["histogram_fallback"] = "memory_stat"
                histogram = self._lru_histogram(stat_fields)
            elif histogram.edges_ms:  # older than the last window read: one open bin, ages unknown
                horizon_ms = float(histogram.edges_ms[-1])
                source["histogram_horizon_s"] = f"{horizon_ms / 1000:g}"
        else:
            histogram = self._histogram(stat_fields)
        if self.edges_ms is not None:
            histogram = histogram.rebin(self.edges_ms)  # on the read's worker, under its deadline
        return GuestReading(
            name=self.name,
            time_ms=time_ms,
            visible_bytes=float(in_force if in_force is not None else usage),
            target_bytes=target,
            usage_bytes=float(usage),
            histogram=histogram,
            refault_total=float(refaults),
            swap_bytes=float(swap),
            psi_some_total_s=psi_total_s,
            psi_some_avg10=psi_avg10,
            oom_kills_total=int(oom_kills),
            histogram_provisional=provisional,
            histogram_horizon_ms=horizon_ms,
            source=source,
        )

    def apply(self, target_bytes: int) -> None:
        """Set the group's target (page-aligned down); see the module docstring per version.

        Raises:
            BackendError: the target is below one page, the kernel refused the limit (v1 ``EBUSY``
                below an unreclaimable usage: the old limit is kept), or a file write failed.

        """
        aligned = self._aligned(target_bytes)
        if self.version == "v1":
            self._v1_set_limit(aligned)
            self._v1_set_soft_limit(aligned)
            return
        self.files.write("memory.high", "max" if aligned is None else str(aligned))
        if aligned is None or not self.proactive_reclaim:
            return
        excess = self.files.uint("memory.current") - aligned
        if excess > 0:
            self._reclaim(excess)

    def relax(self, target_bytes: int | None) -> None:
        """Leave the group at ``target_bytes`` (page-aligned down), or unlimited when ``None``.

        v1: hard limit = the size (``-1`` for none), soft limit unlimited; v2: ``memory.high`` =
        the size (``max`` for none). ``memory.max`` and the memsw limit are never touched.
        """
        aligned = None if target_bytes is None else self._aligned(target_bytes)
        if self.version == "v1":
            self._v1_set_limit(aligned)
            self._v1_set_soft_limit(None)
        else:
            self.files.write("memory.high", "max" if aligned is None else str(aligned))

    # -- applying ------------------------------------------------------------------------------

    def _aligned(self, target_bytes: int) -> int | None:
        """The target aligned down to a page; ``None`` (unlimited) at or above the kernel's ceiling."""
        if isinstance(target_bytes, bool) or not isinstance(target_bytes, numbers.Real):
            raise BackendError(f"cgroup {self.name!r}: target {target_bytes!r} is not a byte count")
        if not math.isfinite(target_bytes):
            raise BackendError(f"cgroup {self.name!r}: target {target_bytes!r} is not a finite byte count")
        value = int(target_bytes)
        if value >= KERNEL_MAX_BYTES:
            return None
        aligned = value // PAGE_SIZE_BYTES * PAGE_SIZE_BYTES
        if aligned < PAGE_SIZE_BYTES:
            raise BackendError(
                f"cgroup {self.name!r}: target {value} bytes is below one page "
                f"({PAGE_SIZE_BYTES} bytes): refused"
            )
        return aligned

    def _v1_set_limit(self, aligned: int | None) -> None:
        value = "-1" if aligned is None else str(aligned)
        try:
            self.files.write("memory.limit_in_bytes", value, raw_errors=True)
            return
        except OSError as exc:
            error = exc
        old = self.files.describe_limit("memory.limit_in_bytes")
        if error.errno == errno.EBUSY:
            usage = self.files.uint("memory.usage_in_bytes")
            raise BackendError(
                f"cgroup {self.name!r}: kernel refused limit {value} below usage {usage} "
                f"(EBUSY: it could not reclaim enough); limit {old} kept"
            )
        if error.errno == errno.EINVAL and (self.dir / "memory.memsw.limit_in_bytes").exists():
            memsw = self.files.describe_limit("memory.memsw.limit_in_bytes")
            raise BackendError(
                f"cgroup {self.name!r}: kernel refused limit {value} (EINVAL): "
                f"memory.memsw.limit_in_bytes is {memsw} and must stay >= the limit; limit {old} kept"
            )
        raise self.files.os_error("memory.limit_in_bytes", "write", error)

    def _v1_set_soft_limit(self, aligned: int | None) -> None:
        try:
            self.files.write(
                "memory.soft_limit_in_bytes", "-1" if aligned is None else str(aligned), raw_errors=True
            )
        except OSError as exc:
            if exc.errno == errno.EOPNOTSUPP:
                return  # soft limits are advisory; PREEMPT_RT kernels do not offer them
            raise self.files.os_error("memory.soft_limit_in_bytes", "write", exc) from None

    def _reclaim(self, excess_bytes: int) -> None:
        if not (self.dir / "memory.reclaim").exists():
            return  # before Linux 5.19: memory.high's own reclaim has to do
        try:
            self.files.write("memory.reclaim", str(excess_bytes), raw_errors=True)
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                return  # reclaimed less than asked: memory.high keeps pushing
            raise self.files.os_error("memory.reclaim", "write", exc) from None

    # -- reading -------------------------------------------------------------------------------

    def _pids(self) -> list[int]:
        """The group's processes and its subgroups' (the accessed-bit sampler's listing)."""
        return cgroup_pids(self.dir, lambda p: self.files.read_bytes(p, MAX_FILE_BYTES, raw_errors=True))

    def _referenced_histogram(
        self, stat_fields: dict[str, int], source: dict[str, str], time_ms: int
    ) -> tuple[Histogram | None, bool]:
        """The sampler's latest histogram, fitted to the group's LRU sizes (module docstring).

        Returns the histogram (``None``: no read yet, or none possible) and whether it is
        provisional: the sampler has not completed its first cycle (no read yet, or only the
        first cycle's early edges), so ages past the last edge read are not known yet.

        Mapped bytes counted in several processes are scaled down so that each type's total is at
        most the group's LRU pages of that type; LRU pages the page tables did not show (page cache
        read through ``read()``, processes left out by a cap or a refusal) are put in the first bin:
        their age is unknown, and counting them young never makes memory look colder than it is.
        """
        assert self.sampler is not None
        if not self.sampler.running:
            self.sampler.start()  # read() before start(): sample from now on
        sampled = self.sampler.latest()
        problem = self.sampler.problem
        if sampled is None or sampled.histogram is None:
            source["histogram_problem"] = problem or "no read yet (the first comes one edge after start)"
            return None, sampled is None
        source["histogram_age_s"] = f"{max(0, time_ms - sampled.completed_ms) / 1000:.1f}"
        if not sampled.complete:
            source["histogram_partial"] = "first cycle in progress"
        if problem:
            source["histogram_problem"] = problem
        sampled_hist = sampled.histogram
        rows: dict[str, list[int]] = {}
        for type_name in ("anon", "file"):
            lru = sum(
                self.files.stat_value(stat_fields, key) or 0
                for key, (kind, _) in LRU_FIELDS.items()
                if kind == type_name
            )
            row = [int(v) for v in sampled_hist.type_bytes(type_name)]
            total = sum(row)
            if total > lru:
                row = [v * lru // total for v in row]
                total = sum(row)
            row[0] += lru - total
            rows[type_name] = row
        fitted = Histogram(self.name, ALL_NODES, sampled_hist.edges_ms, rows, dict(sampled_hist.meta))
        return fitted, not sampled.complete

    def _histogram(self, stat_fields: dict[str, int]) -> Histogram:
        if self.damon_source is not None:
            try:
                return self.damon_source.read()
            except BackendError as exc:
                raise BackendError(f"cgroup {self.name!r}: {exc}") from None
        if self.histogram_source == "memory_stat":
            return self._lru_histogram(stat_fields)
        if self.histogram_source == "wsr":
            path = self.dir / WSR_REPORT_FILE
            histograms = self._parse("wsr", path, MAX_FILE_BYTES)
            return self._merged(histograms, path, {"source": "wsr"})
        path = self.lru_gen_path
        histograms = self._parse("lru_gen", path, MAX_LRU_GEN_BYTES)
        memcg_path = "/" + self.dir.relative_to(self.root).as_posix()
        mine = [h for h in histograms if h.guest == memcg_path]
        if not mine:
            inode = str(self.dir.stat().st_ino)
            mine = [h for h in histograms if h.meta.get("memcg_id") == inode]
        if not mine:
            raise BackendError(
                f"cgroup {self.name!r}: {path}: no entry for memcg {memcg_path} "
                f"(nor memcg id {self.dir.stat().st_ino}); is root the hierarchy's mount point?"
            )
        return self._merged(mine, path, {"source": "lru_gen", "memcg_id": mine[0].meta.get("memcg_id", "")})

    def _lru_histogram(self, stat_fields: dict[str, int]) -> Histogram:
        fields = {key: self.files.stat_value(stat_fields, key) or 0 for key in LRU_FIELDS}
        return memory_stat_histogram(self.name, fields)

    def _merged(self, histograms: Sequence[Histogram], path: Path, meta: dict[str, str]) -> Histogram:
        try:
            merged = merge_nodes(histograms, max_bins=MAX_HISTOGRAM_BINS)
            rows = {t: list(merged.type_bytes(t)) for t in merged.types}
            return Histogram(self.name, ALL_NODES, merged.edges_ms, rows, meta)
        except HistogramError as exc:
            raise BackendError(f"cgroup {self.name!r}: {path}: {exc}") from None

    def _parse(self, format_name: str, path: Path, cap_bytes: int) -> list[Histogram]:
        data = self.files.read_bytes(path, cap_bytes)
        try:
            return parse_bytes(
                format_name, data, FormatOptions(guest=self.name, page_size_bytes=PAGE_SIZE_BYTES)
            )
        except ParseError as exc:
            raise BackendError(f"cgroup {self.name!r}: {path}: {exc}") from None
