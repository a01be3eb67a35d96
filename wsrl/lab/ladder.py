"""Run known page populations in a real memcg under a ladder of limits and record what the kernel did.

For every case (a list of populations, see :mod:`wsrl.lab.workload`) and every rung of its
ladder (a limit, as a fraction of the populations' total size or of their anon size, with swap on
or off), the harness:

1. creates a fresh cgroup v1 memcg ``/sys/fs/cgroup/memory/wsrl-fidelity-<pid>/<case>-<k>`` (and,
   where the cgroup v2 hierarchy is mounted, a group of the same name there, only for its per-group
   ``memory.pressure``);
2. starts the workload process inside both groups (its pid is written to ``cgroup.procs`` between
   fork and exec, so everything it allocates is charged there), waits until it has imported its
   modules, reads that baseline usage and sets ``memory.limit_in_bytes`` to
   ``baseline + fraction * basis`` (a swap-off rung also sets ``memory.memsw.limit_in_bytes`` to the
   same value: no room in swap for this group), then lets it allocate;
3. snapshots the counters when the measured window opens and when it closes: ``memory.stat``
   (``total_workingset_refault_anon``, ``total_workingset_refault_file``, ``total_pgmajfault``,
   ...), ``memory.failcnt``, ``memory.oom_control`` ``oom_kill``, ``memory.usage_in_bytes``,
   ``pswpin`` / ``pswpout`` of ``/proc/vmstat`` and PSI memory ``some`` / ``full`` totals
   (system-wide ``/proc/pressure/memory`` and the group's own);
4. records an OOM kill (``oom_kill`` counter, and the workload dying of SIGKILL) in whatever phase
   it happens, then removes the group.

Each case's warm-up and window default to
:func:`~wsrl.lab.workload.steady_state_timing` of its populations: a warm-up of twice the
longest access interval, so that the kernel's LRU has reached the steady state the model predicts,
and a window of at least 10 s and 100 touches of every population. ``--quick`` runs a smoke test
with fixed short phases instead (not a steady state).

Swap is zram: a device of the run's own is hot-added, sized, ``mkswap``-ed and ``swapon``-ed for
the run, and removed afterwards; a host's own zram swap is left alone (:class:`ZramSwap`).
Everything the run creates (groups, swap, processes, files) is removed on success, failure,
KeyboardInterrupt and SIGTERM.

Command line: ``python -m wsrl.lab.measure [--quick] --out PATH.json`` (:mod:`wsrl.lab.measure`);
the machine side is :mod:`wsrl.lab.kernel`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Literal

import wsrl
from wsrl.errors import WsrlError
from wsrl.lab.kernel import (
    CGROUP_V1_MEMORY_ROOT,
    CGROUP_V2_ROOT,
    ZRAM_SIZE_BYTES,
    Cleanup,
    FidelitySetupError,
    RungGroups,
    ZramSwap,
    check_machine,
    machine_info,
    rmdir_retry,
)
from wsrl.lab.table import format_row
from wsrl.lab.workload import (
    HOST_PAGE_BYTES,
    PopulationSpec,
    WorkloadSpec,
    check_disk_dir,
    ensure_file,
    file_path,
    steady_state_timing,
)
from wsrl.units import MIB

SCHEMA = "wsrl.fidelity.measured/1"
DEFAULT_LADDER = (1.2, 1.0, 0.9, 0.75, 0.6, 0.45)
# --quick is a smoke test of the harness, not a steady state: fixed short phases for every case.
QUICK_WARMUP_S = 2.0
QUICK_DURATION_S = 3.0
# How long the workload may take to start, fill, and finish after its phases are due.
_START_TIMEOUT_S = 60.0
_FILL_TIMEOUT_S = 120.0
_SLACK_TIMEOUT_S = 120.0
# Snapshot keys that are cumulative counters (reported as deltas and per-second rates).
_COUNTERS = (
    "refault_anon",
    "refault_file",
    "pgmajfault",
    "pgfault",
    "failcnt",
    "memsw_failcnt",
    "oom_kill",
    "sys_pswpin",
    "sys_pswpout",
)


class FidelityRunError(WsrlError):
    """A rung went wrong in a way that is not a kernel outcome: the workload hung or broke protocol."""


@dataclass(frozen=True)
class Rung:
    """One memory limit of a ladder.

    The limit given to the populations is ``limit_fraction`` of the basis: ``demand`` (all
    populations) or ``anon`` (the anon populations only). The workload's own baseline (interpreter
    and libraries, measured before it allocates) is added on top. ``swap=False`` forbids this group
    any swap (``memory.memsw.limit_in_bytes`` = ``memory.limit_in_bytes``): anon that does not fit
    is an OOM.
    """

    limit_fraction: float
    basis: Literal["demand", "anon"] = "demand"
    swap: bool = True

    @property
    def label(self) -> str:
        """Short name, e.g. ``0.75xdemand`` or ``0.5xanon-noswap``."""
        return f"{self.limit_fraction:g}x{self.basis}" + ("" if self.swap else "-noswap")


@dataclass(frozen=True)
class Case:
    """Populations and the ladder of limits they are run under.

    ``warmup_s`` and ``duration_s`` left at ``None`` are the populations'
    :func:`~wsrl.lab.workload.steady_state_timing`.
    """

    name: str
    description: str
    populations: tuple[PopulationSpec, ...]
    rungs: tuple[Rung, ...]
    warmup_s: float | None = None
    duration_s: float | None = None

    def timing(self) -> tuple[float, float]:
        """``(warmup_s, duration_s)`` of every rung of this case."""
        warmup_s, duration_s = steady_state_timing(self.populations)
        return (
            warmup_s if self.warmup_s is None else self.warmup_s,
            duration_s if self.duration_s is None else self.duration_s,
        )


def _pop(
    name: str, kind: Literal["anon", "file"], mib: int, interval_s: float, pattern: str = "random"
) -> PopulationSpec:
    return PopulationSpec(name, kind, mib * MIB, interval_s, pattern)  # type: ignore[arg-type]


def default_cases() -> list[Case]:
    """The default cases: anon hot/cold, anon plus file, an LRU-thrashing loop, and a forced OOM.

    Each runs at its steady-state timing (warm-up twice its longest access interval, a window of
    at least 10 s): 40 s + 10 s per rung for the two cases with the 20 s cold population, about
    12 minutes for the whole ladder.
    """
    ladder = tuple(Rung(f) for f in DEFAULT_LADDER)
    oom_rung = Rung(0.5, "anon", swap=False)
    hot_cold = (_pop("hot", "anon", 64, 1.0), _pop("cold", "anon", 192, 20.0))
    return [
        Case(
            "anon-hot-cold",
            "two anon populations, random: 64 MiB touched every 1 s, 192 MiB every 20 s",
            hot_cold,
            (*ladder, oom_rung),
        ),
        Case(
            "anon-file",
            "the hot/cold anon pair plus a 128 MiB file read every 5 s, random",
            (*hot_cold, _pop("file", "file", 128, 5.0)),
            (*ladder, oom_rung),
        ),
        Case(
            "anon-loop",
            "192 MiB of anon swept in order, each page once every 4 s (LRU thrashing once it does not fit)",
            (_pop("loop", "anon", 192, 4.0, "loop"),),
            (*ladder, oom_rung),
        ),
        Case(
            "anon-oom",
            "256 MiB of anon (random, every 5 s) under a 128 MiB limit: survives with swap, OOMs without",
            (_pop("anon", "anon", 256, 5.0),),
            (Rung(0.5, "anon", swap=True), Rung(0.5, "anon", swap=False)),
        ),
    ]


def sweep_cases() -> list[Case]:
    """Sweeps beside other pages (issue 17): what the model's ``access_order = "sweep"`` predicts.

    ``anon-loop-beside-hot``: a 160 MiB anon sweep every 8 s beside 64 MiB of hot random anon,
    whether the LRU keeps the hot pages while the sweep thrashes. ``file-loop``: a 192 MiB file
    read in order every 4 s (a scheduled scan from the page cache), where the classic LRU's
    refault-distance activation (``mm/workingset.c``) may protect part of a sweep that is just
    larger than memory. About 7 minutes.
    """
    ladder = tuple(Rung(f) for f in DEFAULT_LADDER)
    return [
        Case(
            "anon-loop-beside-hot",
            "64 MiB of anon touched at random every 1 s beside a 160 MiB anon sweep every 8 s",
            (_pop("hot", "anon", 64, 1.0), _pop("loop", "anon", 160, 8.0, "loop")),
            ladder,
        ),
        Case(
            "file-loop",
            "a 192 MiB file read in order, each page once every 4 s (readahead off)",
            (_pop("scan", "file", 192, 4.0, "loop"),),
            ladder,
        ),
    ]


def quick_cases() -> list[Case]:
    """A small ladder for tests: anon hot/cold at 3 limits, and an OOM case with and without swap.

    A smoke test of the harness (under 40 s), not a steady state: every rung warms up for
    ``QUICK_WARMUP_S`` and measures ``QUICK_DURATION_S``.
    """
    return [
        Case(
            "quick-hot-cold",
            "anon, random: 32 MiB touched every 1 s, 96 MiB every 30 s",
            (_pop("hot", "anon", 32, 1.0), _pop("cold", "anon", 96, 30.0)),
            (Rung(1.2), Rung(0.75), Rung(0.5)),
            warmup_s=QUICK_WARMUP_S,
            duration_s=QUICK_DURATION_S,
        ),
        Case(
            "quick-oom",
            "128 MiB of anon (random, every 5 s) under a 64 MiB limit: survives with swap, OOMs without",
            (_pop("anon", "anon", 128, 5.0),),
            (Rung(0.5, "anon", swap=True), Rung(0.5, "anon", swap=False)),
            warmup_s=QUICK_WARMUP_S,
            duration_s=QUICK_DURATION_S,
        ),
    ]


CASE_SETS = {"default": default_cases, "sweeps": sweep_cases, "quick": quick_cases}
"""``python -m wsrl.lab.measure --cases NAME``."""


# --------------------------------------------------------------------------------------------
# The workload process.


class _EventReader:
    """JSON lines from the workload's stdout, with timeouts; ``None`` once it has closed."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.fd = stream.fileno()
        self.buffer = b""
        self.eof = False

    def next(self, timeout_s: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buffer:
            if self.eof:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                chunk = os.read(self.fd, 1 << 16)
                if chunk:
                    self.buffer += chunk
                else:
                    self.eof = True
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """Kill the workload (only this process, by its pid) and reap it."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def _window(start: dict[str, float], end: dict[str, float], workload: dict[str, Any]) -> dict[str, Any]:
    """Deltas and rates over the measured window."""
    wall_s = end["t_s"] - start["t_s"]
    out: dict[str, Any] = {"wall_s": wall_s}
    for key in _COUNTERS:
        delta = int(end[key] - start[key])
        out[key] = delta
        out[f"{key}_per_s"] = delta / wall_s
    for kind in ("some", "full"):
        out[f"psi_{kind}_us"] = int(end[f"psi_{kind}_us"] - start[f"psi_{kind}_us"])
        out[f"psi_{kind}_fraction"] = out[f"psi_{kind}_us"] / (wall_s * 1e6)
        if f"group_psi_{kind}_us" in end:
            out[f"group_psi_{kind}_us"] = int(end[f"group_psi_{kind}_us"] - start[f"group_psi_{kind}_us"])
            out[f"group_psi_{kind}_fraction"] = out[f"group_psi_{kind}_us"] / (wall_s * 1e6)
    fractions = [(p["resident_fraction_mean"], p["pages"]) for p in workload["populations"]]
    out["populations_resident_bytes"] = (
        int(sum(f * pages for f, pages in fractions) * HOST_PAGE_BYTES)
        if all(f is not None for f, _ in fractions)
        else None
    )
    for kind in ("anon", "file"):
        touches = sum(p["touches"] for p in workload["populations"] if p["type"] == kind)
        out[f"{kind}_touches"] = touches
        out[f"{kind}_refaults_per_touch"] = out[f"refault_{kind}"] / touches if touches else None
    return out


def _state(snap: dict[str, float]) -> dict[str, int]:
    keys = (
        "usage_bytes",
        "max_usage_bytes",
        "rss_bytes",
        "cache_bytes",
        "swap_bytes",
        "active_anon_bytes",
        "inactive_anon_bytes",
        "active_file_bytes",
        "inactive_file_bytes",
    )
    return {key: int(snap[key]) for key in keys}


def run_rung(
    case: Case,
    rung: Rung,
    groups: RungGroups,
    spec: WorkloadSpec,
    cleanup: Cleanup,
) -> dict[str, Any]:
    """Run one case under one limit in fresh groups and return the rung's result document."""
    demand_bytes = spec.total_bytes
    anon_bytes = spec.bytes_of("anon")
    basis_bytes = demand_bytes if rung.basis == "demand" else anon_bytes
    result: dict[str, Any] = {
        "case": case.name,
        "rung": {**asdict(rung), "label": rung.label},
        "demand_bytes": demand_bytes,
        "anon_bytes": anon_bytes,
        "file_bytes": spec.bytes_of("file"),
        "basis_bytes": basis_bytes,
        "warmup_s": spec.warmup_s,
        "duration_s": spec.duration_s,
    }
    remove_groups = cleanup.push(f"remove {groups.v1}", groups.remove)
    groups.create()
    with tempfile.TemporaryFile() as stderr_file:
        repo_root = str(Path(wsrl.__file__).resolve().parents[1])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [repo_root, os.environ.get("PYTHONPATH")])),
        }
        argv = [
            sys.executable,
            "-m",
            "wsrl.lab.workload",
            "--control",
            "--spec",
            json.dumps(spec.to_json()),
        ]
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            preexec_fn=groups.join,
            env=env,
        )
        stop_proc = cleanup.push(f"kill workload {proc.pid}", lambda: _terminate(proc))
        assert proc.stdin is not None and proc.stdout is not None
        events = _EventReader(proc.stdout)
        phase = "start"
        start_snap: dict[str, float] | None = None
        end_snap: dict[str, float] | None = None
        workload: dict[str, Any] | None = None
        timeouts = {
            "ready": _START_TIMEOUT_S,
            "filled": _FILL_TIMEOUT_S,
            "measure_start": spec.warmup_s + _SLACK_TIMEOUT_S,
            "result": spec.duration_s + _SLACK_TIMEOUT_S,
        }
        phase_after = {"ready": "fill", "filled": "warmup", "measure_start": "measured", "result": "done"}
        try:
            for expected, timeout_s in timeouts.items():
                try:
                    event = events.next(timeout_s)
                except TimeoutError:
                    raise FidelityRunError(
                        f"{case.name} {rung.label}: workload sent no {expected!r} "
                        f"within {timeout_s:.0f} s (phase {phase})"
                    ) from None
                if event is None:
                    break  # the workload died in `phase`
                if event.get("event") != expected:
                    raise FidelityRunError(f"{case.name} {rung.label}: expected {expected!r}, got {event!r}")
                if expected == "ready":
                    baseline_bytes = groups.usage_bytes()
                    limit_bytes = baseline_bytes + int(rung.limit_fraction * basis_bytes)
                    limit_bytes = -(-limit_bytes // HOST_PAGE_BYTES) * HOST_PAGE_BYTES
                    groups.set_limit(limit_bytes, rung.swap)
                    result.update(
                        baseline_bytes=baseline_bytes,
                        limit_bytes=limit_bytes,
                        populations_limit_bytes=limit_bytes - baseline_bytes,
                        swap_control=groups.swap_control,
                    )
                    with contextlib.suppress(BrokenPipeError):
                        proc.stdin.write(b"go\n")
                        proc.stdin.flush()
                elif expected == "filled":
                    result["fill_s"] = event["fill_s"]
                elif expected == "measure_start":
                    start_snap = groups.snapshot()
                else:
                    end_snap = groups.snapshot()
                    workload = {k: v for k, v in event.items() if k != "event"}
                phase = phase_after[expected]
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
            try:
                returncode = proc.wait(timeout=_SLACK_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise FidelityRunError(
                    f"{case.name} {rung.label}: workload did not exit after its result"
                ) from None
            final = groups.snapshot()
        finally:
            cleanup.run_now(stop_proc)
        stderr_file.seek(0)
        stderr_tail = stderr_file.read()[-2000:].decode("utf-8", "replace")
    cleanup.run_now(remove_groups)

    oom_kills = int(final["oom_kill"])
    if phase == "done" and returncode == 0:
        outcome = "ok"
    elif oom_kills > 0:
        outcome = "oom_killed"
    elif returncode == -signal.SIGKILL:
        outcome = "killed"
    else:
        outcome = "error"
    result.update(
        outcome=outcome,
        died_in_phase=None if phase == "done" else phase,
        returncode=returncode,
        oom_kills=oom_kills,
        failcnt=int(final["failcnt"]),
        memsw_failcnt=int(final["memsw_failcnt"]),
        window=_window(start_snap, end_snap, workload) if start_snap and end_snap and workload else None,
        end_of_window=_state(end_snap) if end_snap else None,
        peak_usage_bytes=int(final["max_usage_bytes"]),
        workload=workload,
    )
    if outcome == "error":
        result["stderr_tail"] = stderr_tail
    return result


# --------------------------------------------------------------------------------------------
# The whole run.


def run_measurements(
    cases: Sequence[Case],
    *,
    warmup_s: float | None = None,
    duration_s: float | None = None,
    file_dir: Path | None = None,
    zram_size_bytes: int = ZRAM_SIZE_BYTES,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every case under every rung of its ladder; return the JSON-ready document.

    Args:
        cases: what to run.
        warmup_s: unmeasured pattern time per rung, after the fill, for every case; default each
            case's own (:meth:`Case.timing`).
        duration_s: measured window per rung, for every case; default each case's own.
        file_dir: an existing directory on a disk filesystem for the file populations' files (a
            fresh folder is made under it and removed at the end); default ``/var/tmp``.
        zram_size_bytes: size of the zram swap device.
        progress: called with one line per rung.

    Raises:
        FidelitySetupError: the machine lacks cgroup v1 memory, zram or PSI.
        FidelityRunError: a workload hung or broke the protocol.

    """
    check_machine()
    zram = ZramSwap(size_bytes=zram_size_bytes)
    zram.check_free()
    base_dir = file_dir if file_dir is not None else Path("/var/tmp")
    try:
        check_disk_dir(base_dir)
    except WsrlError as exc:
        raise FidelitySetupError(str(exc)) from exc
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise FidelitySetupError(f"case names must be unique, got {names}")

    cleanup = Cleanup()
    atexit.register(cleanup.run_all)
    previous_sigterm = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_sigterm)
    started = time.monotonic()
    v1_parent = CGROUP_V1_MEMORY_ROOT / f"wsrl-fidelity-{os.getpid()}"
    v2_parent: Path | None = None
    results: list[dict[str, Any]] = []
    try:
        if v1_parent.exists():
            raise FidelitySetupError(f"{v1_parent} already exists: another run with the same pid?")
        v1_parent.mkdir()
        cleanup.push(f"remove {v1_parent}", lambda: rmdir_retry(v1_parent))
        if (CGROUP_V2_ROOT / "cgroup.procs").exists():
            candidate = CGROUP_V2_ROOT / v1_parent.name
            try:
                candidate.mkdir()
            except OSError:
                pass  # no per-group PSI; system-wide PSI is still recorded
            else:
                v2_parent = candidate
                cleanup.push(f"remove {candidate}", lambda: rmdir_retry(candidate))
        work_dir = Path(tempfile.mkdtemp(prefix="wsrl-fidelity-", dir=base_dir))
        cleanup.push(f"remove {work_dir}", lambda: shutil.rmtree(work_dir))
        cleanup.push(f"stop {zram.dev_path}", zram.stop)
        zram.start()
        machine = machine_info(zram, work_dir)
        for case in cases:
            case_warmup_s, case_duration_s = case.timing()
            spec = WorkloadSpec(
                case.populations,
                case_warmup_s if warmup_s is None else warmup_s,
                case_duration_s if duration_s is None else duration_s,
                str(work_dir),
                seed=0,
            )
            for index, pop in enumerate(spec.populations):
                if pop.type == "file":  # made here, outside the memcg; the workload re-reads it
                    ensure_file(file_path(spec, pop), pop.size_bytes, spec.seed * 1000 + index)
            for k, rung in enumerate(case.rungs):
                groups = RungGroups(v1_parent, v2_parent, f"{case.name}-{k}")
                result = run_rung(case, rung, groups, spec, cleanup)
                result["populations"] = [asdict(p) for p in case.populations]
                results.append(result)
                if progress is not None:
                    progress(format_row(result))
            for pop in spec.populations:
                if pop.type == "file":
                    file_path(spec, pop).unlink(missing_ok=True)
    finally:
        # A second Ctrl-C or SIGTERM must not cut the cleanup short.
        previous_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cleanup.run_all()
        for error in cleanup.errors:
            print(f"wsrl: cleanup failed: {error}", file=sys.stderr)
        signal.signal(signal.SIGINT, previous_sigint)
        signal.signal(signal.SIGTERM, previous_sigterm)
        atexit.unregister(cleanup.run_all)
    return {
        "schema": SCHEMA,
        "harness_pid": os.getpid(),
        "cgroup_v1_parent": str(v1_parent),
        "cgroup_v2_parent": str(v2_parent) if v2_parent is not None else None,
        "work_dir": str(work_dir),
        "settings": {
            "warmup_s_override": warmup_s,
            "duration_s_override": duration_s,
            "zram_size_bytes": zram_size_bytes,
        },
        "machine": machine,
        "cases": [
            {
                "name": c.name,
                "description": c.description,
                "populations": [asdict(p) for p in c.populations],
                "warmup_s": c.timing()[0] if warmup_s is None else warmup_s,
                "duration_s": c.timing()[1] if duration_s is None else duration_s,
            }
            for c in cases
        ],
        "elapsed_s": time.monotonic() - started,
        "cleanup_errors": cleanup.errors,
        "results": results,
    }
