"""Issue 23's measured layout, live: three real Redis servers under ``wsrl run`` on this kernel.

Run as root: ``python benchmarks/bench_layout_live.py [--policy NAME ...] [--rounds 2]
[--warmup-s 60] [--measured-s 240] [--out out/layout]`` (``make layoutbench``). Not in
``make bench``: it needs root, the cgroup v1 memory controller, zram and Debian's ``redis-server``
(``scripts/testbed.sh``); it exits 2 with one line on stderr when one is missing.

The layout (issue 23): three guests, each a ``redis-server`` (unix socket, no persistence) in its
own v1 memcg, with zram swap, ``provisioned_gib = 1.5`` each on a host given ``capacity_gib = 2``
(reserve 0):

* ``busy``: about 870 MiB of keys, all of them read in a loop (a full pass every ~23 s);
* ``mixed``: about 900 MiB (950 k keys), only the first 60 k read in a loop (every ~3 s);
* ``idle``: about 770 MiB, loaded and never read again.

For each policy, on a fresh layout (the groups made again, the servers restarted and the keys
loaded again, limits at the provisioned size): the readers start, and once the busy reader has
made one full pass the real runner starts (``python -m wsrl run --config host.toml``, interval
5 s, the production rails' defaults, ``histogram_source = "auto"``: ``referenced`` on a kernel
with neither WSR nor MGLRU). After ``--warmup-s`` the ``--measured-s`` window is measured, then
the runner gets SIGTERM (it relaxes every guest to its provisioned size) and the layout is torn
down. Every second the kernel's figures are sampled per group (``memory.limit_in_bytes``,
``memory.usage_in_bytes``, ``memory.stat`` ``total_workingset_refault_anon`` + ``_file`` and
``total_pgmajfault``); every reader reports its GETs per second and the latency of each pipelined
batch of 100 GETs. The runner's audit log gives each guest's histogram source (start record) and
what the runner saw per tick (``inputs.cold_120s_bytes``, ``working_set_bytes``, breaker state).

Reported per policy and guest: time-averaged limit, refaults per second, reader ops/s and p99
batch latency over the measured window, the runner's cold bytes; per host the largest sum of the
sampled limits while the runner was in control (from the end of its first tick to SIGTERM)
against ``capacity - reserve``: any sample above it is printed as a ``FAIL`` line (issue 23's
invariant). Rounds run the policies in alternating order; JSON per policy goes to
``<out>/<policy>.json`` (``/`` in a policy path becomes ``-``) and the audit logs to
``<out>/runs/``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from wsrl.lab.kernel import (  # noqa: E402
    CGROUP_V1_MEMORY_ROOT,
    FidelitySetupError,
    ZramSwap,
    proc_status_bytes,
    rmdir_retry,
    zram_swap,
)

MIB = 1 << 20
GIB = 1 << 30
PAGE = os.sysconf("SC_PAGE_SIZE")
DEFAULT_POLICIES = ("static", "far-memory", "esx-idle-tax", "trained/ppo-overcommit")
BATCH = 100  # GETs per pipelined batch; latency is measured per batch


class LayoutError(Exception):
    """The machine cannot run the layout (not root, no redis, no v1 memcg, no zram)."""


@dataclass(frozen=True)
class GuestSpec:
    """One Redis guest: ``keys`` keys ``key:0`` .., of which ``key:0`` .. ``key:<hot_keys - 1>`` are
    read in a loop at ``rate_ops_s`` GETs per second (``hot_keys = 0``: never read)."""

    name: str
    keys: int
    hot_keys: int
    rate_ops_s: float
    target_rss_mib: float


@dataclass(frozen=True)
class Layout:
    """The host, its guests and the schedule of one measurement."""

    guests: tuple[GuestSpec, ...]
    provisioned_gib: float = 1.5
    capacity_gib: float = 2.0
    reserve_gib: float = 0.0
    value_bytes: int = 850  # jemalloc's 896-byte class: ~0.97 KiB of RSS per key
    interval_s: float = 5.0
    warmup_s: float = 60.0
    measured_s: float = 240.0
    zram_gib: float = 4.0
    referenced_max_age_s: float | None = None  # None: the runner's default (120 s)
    policy_params: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def room_bytes(self) -> int:
        """``capacity - reserve``: what the limits in force may add up to."""
        return int((self.capacity_gib - self.reserve_gib) * GIB)


ISSUE_23 = Layout(
    guests=(
        GuestSpec("busy", 920_000, 920_000, 40_000.0, 870.0),
        GuestSpec("mixed", 950_000, 60_000, 20_000.0, 900.0),
        GuestSpec("idle", 810_000, 0, 0.0, 770.0),
    )
)
"""Issue 23's layout, at the benchmark's defaults."""

SMALL = Layout(
    guests=(
        GuestSpec("busy", 215_000, 215_000, 40_000.0, 200.0),
        GuestSpec("mixed", 215_000, 15_000, 20_000.0, 200.0),
        GuestSpec("idle", 180_000, 0, 0.0, 170.0),
    ),
    provisioned_gib=0.35,
    capacity_gib=0.45,
    warmup_s=20.0,
    measured_s=40.0,
    zram_gib=1.0,
    referenced_max_age_s=20.0,
    policy_params={"far-memory": {"min_threshold_s": 20.0, "control_period_s": 10.0}},
)
"""A short version (about 570 MiB of keys on a 0.45 GiB host) for the test: ages up to 20 s and
far memory's threshold and period scaled down with them, so that the policy acts within a minute."""


# ------------------------------------------------------------------------------------------------
# Machine checks, zram, memcgs.


def problems() -> list[str]:
    """What this machine lacks for the layout (empty: it can run)."""
    found = []
    if os.geteuid() != 0:
        found.append("needs root (memcgs, zram, clear_refs)")
    for tool in ("redis-server", "mkswap", "swapon", "swapoff"):
        if shutil.which(tool) is None:
            hint = " (run scripts/testbed.sh)" if tool == "redis-server" else ""
            found.append(f"{tool} not installed{hint}")
    if not (CGROUP_V1_MEMORY_ROOT / "memory.limit_in_bytes").exists():
        found.append(f"no cgroup v1 memory controller at {CGROUP_V1_MEMORY_ROOT}")
    if not Path("/sys/class/zram-control/hot_add").exists():
        found.append("no /sys/class/zram-control (load the zram module)")
    return found


@contextlib.contextmanager
def own_zram(size_bytes: int) -> Iterator[ZramSwap]:
    """A zram swap device of the run's own (hot-added, removed after); a LayoutError without zram."""
    try:
        with zram_swap(size_bytes) as zram:
            yield zram
    except FidelitySetupError as exc:
        raise LayoutError(str(exc)) from exc


@contextlib.contextmanager
def memcg_parent(name: str) -> Iterator[Path]:
    """A v1 memcg folder for the guests' groups, removed afterwards (its groups first)."""
    parent = CGROUP_V1_MEMORY_ROOT / name
    parent.mkdir()
    try:
        yield parent
    finally:
        for child in parent.iterdir():
            if child.is_dir():
                rmdir_retry(child, timeout_s=30.0)
        rmdir_retry(parent, timeout_s=30.0)


def group_counters(group: Path) -> dict[str, int]:
    """The group's limit, usage, refaults (anon + file) and major faults, from the kernel."""
    stat: dict[str, int] = {}
    for line in (group / "memory.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        stat[key] = int(value)
    return {
        "limit": int((group / "memory.limit_in_bytes").read_text()),
        "usage": int((group / "memory.usage_in_bytes").read_text()),
        "refaults": stat.get("total_workingset_refault_anon", 0)
        + stat.get("total_workingset_refault_file", 0),
        "majfaults": stat.get("total_pgmajfault", 0),
    }


# ------------------------------------------------------------------------------------------------
# Redis and its readers.


def _joiner(group: Path) -> Any:
    def join() -> None:
        with open(group / "cgroup.procs", "w") as f:
            f.write(str(os.getpid()))

    return join


class RedisGuest:
    """``redis-server`` on a unix socket inside ``group`` (no persistence), its keys loaded."""

    def __init__(self, spec: GuestSpec, group: Path, directory: Path, value_bytes: int) -> None:
        self.spec = spec
        self.group = group
        self.socket_path = directory / f"{spec.name}.sock"
        binary = shutil.which("redis-server")
        if binary is None:
            raise LayoutError("redis-server not installed (run scripts/testbed.sh)")
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--unixsocket", str(self.socket_path), "--save", "", "--appendonly", "no",
             "--enable-debug-command", "yes", "--dir", str(directory), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_joiner(group),
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self.socket_path.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise LayoutError(f"redis-server for {spec.name} did not open its socket")
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(self.socket_path))
            client.settimeout(120)
            args = [b"DEBUG", b"POPULATE", b"%d" % spec.keys, b"key", b"%d" % value_bytes]
            client.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
            if not client.recv(64).startswith(b"+OK"):
                raise LayoutError(f"DEBUG POPULATE failed for {spec.name}")

    def rss_bytes(self) -> int:
        """The server's resident memory (``VmRSS``)."""
        return proc_status_bytes(self.proc.pid, "VmRSS")

    def stop(self) -> None:
        """Kill the server by its pid and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


_READER = r"""
import json, socket, sys, time
path, hot, rate, batch = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
def get(k):
    key = b"key:%d" % k
    return b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)
payloads = [b"".join(get(k) for k in range(f, min(f + batch, hot))) for f in range(0, hot, batch)]
client = socket.socket(socket.AF_UNIX)
client.connect(path)
replies = client.makefile("rb")
sent, ops, lat, passes = 0, 0, [], 0
start = time.monotonic()
report = start + 1.0
i = 0
while True:
    payload = payloads[i]
    n = min(batch, hot - i * batch)
    t0 = time.perf_counter()
    client.sendall(payload)
    for _ in range(n):
        size = int(replies.readline()[1:])
        if size >= 0:
            replies.read(size + 2)
    lat.append(round((time.perf_counter() - t0) * 1e6))
    ops += n
    sent += n
    i += 1
    if i == len(payloads):
        i, passes = 0, passes + 1
    now = time.monotonic()
    if now >= report:
        print(json.dumps({"t": time.time(), "ops": ops, "passes": passes, "lat_us": lat}), flush=True)
        ops, lat = 0, []
        report = max(report + 1.0, now)
    behind = (now - start) - sent / rate
    if behind > 1.0:  # fell behind by more than a second: do not build up a debt to catch up
        start += behind - 1.0
    elif behind < 0:
        time.sleep(-behind)
"""


class Reader:
    """A paced reader of one guest's hot keys in a child process; its per-second lines collected."""

    def __init__(self, guest: RedisGuest) -> None:
        self.name = guest.spec.name
        self.lines: list[dict[str, Any]] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _READER, str(guest.socket_path), str(guest.spec.hot_keys),
             str(guest.spec.rate_ops_s), str(BATCH)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(raw))

    def passes(self) -> int:
        """Full passes over the hot keys so far."""
        return self.lines[-1]["passes"] if self.lines else 0

    def stop(self) -> None:
        """Kill the reader by its pid and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self._thread.join(5)
        if self.proc.stdout is not None:
            with contextlib.suppress(OSError):
                self.proc.stdout.close()


class Sampler:
    """Every second: each group's counters, with the wall time."""

    def __init__(self, groups: dict[str, Path]) -> None:
        self.groups = groups
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            sample: dict[str, Any] = {"t": time.time()}
            with contextlib.suppress(OSError):
                for name, group in self.groups.items():
                    sample[name] = group_counters(group)
                self.samples.append(sample)
            self._stop.wait(1.0)

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(5)


# ------------------------------------------------------------------------------------------------
# The runner.


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def runner_config(
    layout: Layout, policy: str, parent: Path, audit_path: Path, record_dir: Path | None = None
) -> str:
    """The runner's ``host.toml`` for the layout: interval, capacity, the rails' defaults.

    ``record_dir``: where the runner records its ticks as a trace (``[record]``), for ``wsrl fit``.
    """
    path = REPO / policy
    name_or_path = str(path) if path.is_dir() else policy
    policy_table: dict[str, Any] = {"name_or_path": name_or_path}
    if layout.policy_params.get(policy):
        policy_table["params"] = layout.policy_params[policy]
    tables: list[tuple[str, dict[str, Any]]] = [
        (
            "[host]",
            {
                "name": "layout",
                "capacity_gib": layout.capacity_gib,
                "reserve_gib": layout.reserve_gib,
                "interval_s": layout.interval_s,
                "cgroup_root": str(CGROUP_V1_MEMORY_ROOT),
            },
        ),
        ("[policy]", policy_table),
        ("[audit]", {"path": str(audit_path), "fsync": False}),
    ]
    if record_dir is not None:
        tables.append(("[record]", {"dir": str(record_dir), "flush_interval_s": layout.interval_s}))
    for spec in layout.guests:
        backend: dict[str, Any] = {"kind": "cgroup", "path": f"{parent.name}/{spec.name}"}
        if layout.referenced_max_age_s is not None:
            backend["referenced_max_age_s"] = layout.referenced_max_age_s
        tables.append(
            ("[[guest]]", {"name": spec.name, "provisioned_gib": layout.provisioned_gib, "backend": backend})
        )
    lines = []
    for header, body in tables:
        lines.append(header)
        lines.extend(f"{key} = {_toml(value)}" for key, value in body.items())
    return "\n".join(lines) + "\n"


def read_audit(path: Path) -> list[dict[str, Any]]:
    """The audit log's records (a torn last line skipped)."""
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            records.append(json.loads(line))
    return records


def _first_tick_end(audit_path: Path) -> float | None:
    if not audit_path.exists():
        return None
    for record in read_audit(audit_path):
        if record.get("kind") == "tick":
            return record["time_ms"] / 1000.0 + float(record.get("duration_s") or 0.0)
    return None


# ------------------------------------------------------------------------------------------------
# One policy on a fresh layout.


def run_policy(
    layout: Layout, policy: str, run_dir: Path, log: Any = print, *, record: bool = False
) -> dict[str, Any]:
    """Build the layout, run ``wsrl run`` under ``policy`` on it, measure, tear it all down.

    ``record``: the runner records its ticks into ``run_dir/trace`` (a new one each run).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    audit_path = run_dir / "audit.jsonl"
    for stale in (audit_path, run_dir / "layout.targets.json"):
        stale.unlink(missing_ok=True)
    guests: list[RedisGuest] = []
    readers: list[Reader] = []
    runner: subprocess.Popen[bytes] | None = None
    sampler: Sampler | None = None
    with (
        memcg_parent(f"wsrl-layout-{os.getpid()}") as parent,
        tempfile.TemporaryDirectory(prefix="wsrl-layout-") as scratch,
    ):
        try:
            groups: dict[str, Path] = {}
            rss: dict[str, int] = {}
            for spec in layout.guests:
                group = parent / spec.name
                group.mkdir()
                (group / "memory.limit_in_bytes").write_text(str(int(layout.provisioned_gib * GIB)))
                groups[spec.name] = group
                guests.append(RedisGuest(spec, group, Path(scratch), layout.value_bytes))
                rss[spec.name] = guests[-1].rss_bytes()
            log(
                f"  {policy}: loaded "
                + ", ".join(f"{g.spec.name} {rss[g.spec.name] / MIB:.0f} MiB" for g in guests)
            )
            readers = [Reader(g) for g in guests if g.spec.hot_keys > 0]
            deadline = time.monotonic() + 120
            while any(r.passes() < 1 for r in readers) and time.monotonic() < deadline:
                time.sleep(0.5)  # every reader has read its whole hot range once
            sampler = Sampler(groups)
            config_path = run_dir / "host.toml"
            record_dir = run_dir / "trace" if record else None
            if record_dir is not None and record_dir.exists():
                shutil.rmtree(record_dir)
            config_path.write_text(runner_config(layout, policy, parent, audit_path, record_dir))
            started = time.time()
            with open(run_dir / "runner.log", "wb") as runner_log:
                runner = subprocess.Popen(
                    [sys.executable, "-m", "wsrl", "run", "--config", str(config_path)],
                    cwd=REPO,
                    stdout=runner_log,
                    stderr=subprocess.STDOUT,
                )
            time.sleep(layout.warmup_s + layout.measured_s)
            stopped = time.time()
            sampler.stop()
            runner.send_signal(signal.SIGTERM)
            runner_rc = runner.wait(timeout=60)
            runner = None
        finally:
            if sampler is not None:
                sampler.stop()
            if runner is not None and runner.poll() is None:
                runner.send_signal(signal.SIGTERM)
                try:
                    runner.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    runner.kill()
                    runner.wait(timeout=30)
            for reader in readers:
                reader.stop()
            for guest in guests:
                guest.stop()
    return summarize(
        layout,
        policy,
        rss=rss,
        samples=sampler.samples,
        readers={r.name: r.lines for r in readers},
        audit=read_audit(audit_path),
        started=started,
        stopped=stopped,
        first_tick_end=_first_tick_end(audit_path),
        runner_rc=runner_rc,
    )


# ------------------------------------------------------------------------------------------------
# Figures.


def _p99(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)])


TAIL_S = 60.0
"""The end of the measured window whose refaults say whether a guest kept its hot set after warm-up, s."""


def summarize(
    layout: Layout,
    policy: str,
    *,
    rss: dict[str, int],
    samples: list[dict[str, Any]],
    readers: dict[str, list[dict[str, Any]]],
    audit: list[dict[str, Any]],
    started: float,
    stopped: float,
    first_tick_end: float | None,
    runner_rc: int,
) -> dict[str, Any]:
    """Per-guest and host figures over the measured window, and the invariant over runner control."""
    window_start = started + layout.warmup_s
    measured = [s for s in samples if window_start <= s["t"] <= stopped]
    control_from = first_tick_end if first_tick_end is not None else math.inf
    controlled = [s for s in samples if control_from + 0.1 <= s["t"] <= stopped]
    start = next((r for r in audit if r.get("kind") == "start"), {})
    sources = {g["name"]: g.get("histogram_source") for g in start.get("guests", [])}
    ticks = [r for r in audit if r.get("kind") == "tick"]
    measured_ticks = [r for r in ticks if r["time_ms"] / 1000.0 >= window_start]
    per_guest: dict[str, Any] = {}
    for spec in layout.guests:
        name = spec.name
        limits = [s[name]["limit"] for s in measured]
        span = measured[-1]["t"] - measured[0]["t"] if len(measured) > 1 else math.nan
        refaults = measured[-1][name]["refaults"] - measured[0][name]["refaults"] if measured else 0
        tail = [s for s in measured if s["t"] >= stopped - TAIL_S]
        tail_span = tail[-1]["t"] - tail[0]["t"] if len(tail) > 1 else math.nan
        tail_refaults = tail[-1][name]["refaults"] - tail[0][name]["refaults"] if len(tail) > 1 else 0
        majfaults = measured[-1][name]["majfaults"] - measured[0][name]["majfaults"] if measured else 0
        lines = [line for line in readers.get(name, []) if window_start <= line["t"] <= stopped]
        inputs = [
            g["inputs"] for r in measured_ticks for g in r["guests"] if g["name"] == name and g.get("inputs")
        ]
        cold = [i["cold_120s_bytes"] for i in inputs if i.get("cold_120s_bytes") is not None]
        working = [i["working_set_bytes"] for i in inputs if i.get("working_set_bytes") is not None]
        breaker = [g.get("breaker") for r in measured_ticks for g in r["guests"] if g["name"] == name]
        per_guest[name] = {
            "rss_loaded_mib": round(rss[name] / MIB, 1),
            "target_rss_mib": spec.target_rss_mib,
            "limit_mean_mib": round(sum(limits) / len(limits) / MIB, 1) if limits else None,
            "limit_end_mib": round(limits[-1] / MIB, 1) if limits else None,
            "usage_mean_mib": round(sum(s[name]["usage"] for s in measured) / len(measured) / MIB, 1)
            if measured
            else None,
            "refaults_per_s": round(refaults / span, 1) if span > 0 else None,
            "majfaults_per_s": round(majfaults / span, 1) if span > 0 else None,
            "refaults_per_s_last_60s": round(tail_refaults / tail_span, 1) if tail_span > 0 else None,
            "reader_ops_per_s": round(sum(line["ops"] for line in lines) / len(lines)) if lines else None,
            "reader_target_ops_per_s": spec.rate_ops_s,
            "reader_p99_ms": round(_p99([x for line in lines for x in line["lat_us"]]) / 1000.0, 2)
            if lines and any(line["lat_us"] for line in lines)
            else None,
            "histogram_source": sources.get(name),
            "cold_120s_mib_mean": round(sum(cold) / len(cold) / MIB, 1) if cold else None,
            "cold_120s_mib_last": round(cold[-1] / MIB, 1) if cold else None,
            "working_set_mib_last": round(working[-1] / MIB, 1) if working else None,
            "breaker_open_ticks": sum(1 for b in breaker if isinstance(b, dict) and b.get("open")),
            "breaker_trips": sum(1 for b in breaker if isinstance(b, dict) and b.get("tripped")),
        }
    sums = [sum(s[spec.name]["limit"] for spec in layout.guests) for s in controlled]
    over = [
        {"t": s["t"], "sum_bytes": total, "over_bytes": total - layout.room_bytes}
        for s, total in zip(controlled, sums, strict=True)
        if total > layout.room_bytes
    ]
    return {
        "policy": policy,
        "reset": "fresh layout: groups made again, redis restarted, keys loaded again, limits at provisioned",
        "guests": per_guest,
        "host": {
            "room_bytes": layout.room_bytes,
            "max_sum_limits_bytes": max(sums) if sums else None,
            "controlled_samples": len(controlled),
            "samples_over_room": over,
            "ticks": len(ticks),
            "runner_rc": runner_rc,
        },
        "window": {"started": started, "warmup_s": layout.warmup_s, "stopped": stopped},
        "samples": samples,
    }


def machine() -> dict[str, Any]:
    """The machine the figures were taken on."""
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    total = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemTotal:"))
    return {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "mem_total_gib": round(total / GIB, 1),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "cgroup": "v1",
    }


def _spread(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "-"
    mean = sum(got) / len(got)
    if all(isinstance(v, int) for v in got):
        return f"{mean:,.0f}" if len(got) == 1 else f"{mean:,.0f} [{min(got):,}-{max(got):,}]"
    if len(got) == 1:
        return f"{mean:,.1f}" if mean < 100 else f"{mean:,.0f}"
    lo, hi = min(got), max(got)
    if max(abs(mean), hi) < 100:
        return f"{mean:,.1f} [{lo:,.1f}-{hi:,.1f}]"
    return f"{mean:,.0f} [{lo:,.0f}-{hi:,.0f}]"


def table(results: dict[str, list[dict[str, Any]]], layout: Layout) -> str:
    """Markdown table: per policy and guest, the mean over rounds [min-max]."""
    rows = [
        "| policy | guest | limit MiB (mean) | limit MiB (end) | refaults/s | refaults/s (last 60 s) | "
        "reader ops/s | reader p99 ms | source | runner cold_120s MiB (mean) | breaker open ticks |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for policy, rounds in results.items():
        for spec in layout.guests:
            figures = [r["guests"][spec.name] for r in rounds]
            rows.append(
                f"| {policy} | {spec.name} | {_spread([f['limit_mean_mib'] for f in figures])} | "
                f"{_spread([f['limit_end_mib'] for f in figures])} | "
                f"{_spread([f['refaults_per_s'] for f in figures])} | "
                f"{_spread([f.get('refaults_per_s_last_60s') for f in figures])} | "
                f"{_spread([f['reader_ops_per_s'] for f in figures]) if spec.hot_keys else '-'} | "
                f"{_spread([f['reader_p99_ms'] for f in figures]) if spec.hot_keys else '-'} | "
                f"{'/'.join(sorted({str(f['histogram_source']) for f in figures}))} | "
                f"{_spread([f['cold_120s_mib_mean'] for f in figures])} | "
                f"{_spread([f['breaker_open_ticks'] for f in figures])} |"
            )
        host = [r["host"] for r in rounds]
        maxima = [h["max_sum_limits_bytes"] / MIB for h in host if h["max_sum_limits_bytes"] is not None]
        over = sum(len(h["samples_over_room"]) for h in host)
        rows.append(
            f"| {policy} | host | max sum {max(maxima) if maxima else math.nan:,.0f} of "
            f"{layout.room_bytes / MIB:,.0f} MiB | samples over: {over} of "
            f"{sum(h['controlled_samples'] for h in host)} | | | | | | | |"
        )
    return "\n".join(rows)


def run_benchmark(
    layout: Layout, policies: Sequence[str], rounds: int, out: Path, log: Any = print, *, record: bool = False
) -> dict[str, list[dict[str, Any]]]:
    """Every policy on a fresh layout per round (order alternated), JSON per policy to ``out``.

    ``record``: each run's ticks are also recorded as a trace (``runs/ROUND-POLICY/trace``).
    """
    results: dict[str, list[dict[str, Any]]] = {p: [] for p in policies}
    info = machine()
    with own_zram(int(layout.zram_gib * GIB)) as zram:
        info["zram"] = zram.info()
        for round_no in range(rounds):
            order = list(policies) if round_no % 2 == 0 else list(reversed(policies))
            for policy in order:
                slug = policy.replace("/", "-")
                log(f"round {round_no + 1}: {policy}")
                run_dir = out / "runs" / f"round{round_no + 1}-{slug}"
                result = run_policy(layout, policy, run_dir, log, record=record)
                result["round"] = round_no + 1
                results[policy].append(result)
                for name, g in result["guests"].items():
                    log(
                        f"    {name}: limit {g['limit_mean_mib']} MiB (end {g['limit_end_mib']}), "
                        f"refaults/s {g['refaults_per_s']} (last 60 s {g['refaults_per_s_last_60s']}), "
                        f"ops/s {g['reader_ops_per_s']}, p99 {g['reader_p99_ms']} ms, "
                        f"cold {g['cold_120s_mib_mean']} MiB ({g['histogram_source']})"
                    )
                for bad in result["host"]["samples_over_room"]:
                    log(f"FAIL {policy} round {round_no + 1}: limits add up to {bad['sum_bytes']} bytes, "
                        f"{bad['over_bytes']} over capacity - reserve")  # fmt: skip
                out.mkdir(parents=True, exist_ok=True)
                (out / f"{slug}.json").write_text(
                    json.dumps(
                        {"policy": policy, "layout": asdict(layout), "machine": info}
                        | {"rounds": results[policy]},
                        indent=1,
                    )
                )
    return results


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: every finally block undoes its part


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; exit 2 with one line when the machine cannot run the layout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = ", ".join(DEFAULT_POLICIES)
    parser.add_argument("--policy", action="append", help=f"repeatable; default {default}")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--warmup-s", type=float, default=ISSUE_23.warmup_s)
    parser.add_argument("--measured-s", type=float, default=ISSUE_23.measured_s)
    parser.add_argument("--out", type=Path, default=REPO / "out" / "layout")
    parser.add_argument("--small", action="store_true", help="the test's short layout (~570 MiB of keys)")
    parser.add_argument(
        "--record", action="store_true", help="also record each run's ticks as a trace, for wsrl fit"
    )
    args = parser.parse_args(argv)
    missing = problems()
    if missing:
        print(f"bench_layout_live: {'; '.join(missing)}", file=sys.stderr)
        return 2
    layout = replace(SMALL if args.small else ISSUE_23, warmup_s=args.warmup_s, measured_s=args.measured_s)
    policies = args.policy or list(DEFAULT_POLICIES)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        results = run_benchmark(layout, policies, args.rounds, args.out.resolve(), record=args.record)
    except LayoutError as exc:
        print(f"bench_layout_live: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench_layout_live: interrupted; everything set up was undone", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"\n{' '.join(['bench_layout_live.py', *(argv or sys.argv[1:])])} on {machine()}")
    print(table(results, layout))
    failures = sum(len(r["host"]["samples_over_room"]) for rounds in results.values() for r in rounds)
    print(f"invariant (sum of limits <= capacity - reserve while the runner is in control): "
          f"{'held' if failures == 0 else f'FAILED in {failures} samples'}")  # fmt: skip
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
