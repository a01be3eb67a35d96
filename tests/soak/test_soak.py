"""A bounded fault-injection soak of the production runner on real components (issue 7).

``python -m wsrl.runner`` runs as a real subprocess controlling one real QEMU guest (virtio balloon,
MGLRU dumps over virtio-serial) and two real v1 memory cgroups, each holding a real memory-hungry
process, with zram swap on. While it runs, a fault schedule fires (spread over ``WSRL_SOAK_S``
seconds, default 600):

* ``histogram_garbage``: the crafted ``lru_gen`` file the second cgroup reads holds garbage for a while;
* ``cgroup_gone``: the first cgroup disappears (its process moved out, rmdir) and reappears;
* ``trace_disk_full``: the tmpfs the trace is recorded to is filled up, then freed;
* ``time_jump``: the second cgroup's readings are stamped two hours in the past for a while (the
  runner child, ``runner_child.py``, puts a clock shifter in front of its real backends);
* ``policy_corrupt``: the exported policy's model file is overwritten with a corrupt one, then put
  back (the runner runs the shipped learned policy, ``trained/ppo-overcommit``, from a copy);
* ``time_jump_forward``: the second cgroup's readings are stamped two hours in the future for a while;
* ``vm_restart``: QEMU is killed (the QMP and agent sockets drop) and a new guest is booted; the
  config's socket paths are symlinks, repointed at the new guest's sockets;
* ``source_stall``: QEMU is stopped (SIGSTOP) so that its QMP socket and agent stream block, then
  continued;
* ``runner_sigkill``: the runner is killed with SIGKILL mid-run and restarted with the same config;
* ``runner_sigterm``: the runner is stopped with SIGTERM at the end.

A sampler reads every cgroup limit and the balloon (``query-balloon``) once a second. Checked at
the end: ticks continued and the other guests were served during every fault; no target and no
sampled size below a floor; no OOM kill; every fault in the audit log; the trace reads back whole
up to the last flush. The figures go to ``out/soak/figures.json`` and are printed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cgroup_fixtures import TEST_PARENT, Hog, require_v1_memcg, zram_swap
from shipped import private_copy
from test_backend_qemu import hand_over_serial_socket, wait_until
from testbed import QemuGuest

from wsrl.lab.kernel import CGROUP_V1_MEMORY_ROOT, rmdir_retry
from wsrl.runner.audit import read_audit
from wsrl.trace.reader import TraceReader
from wsrl.trace.validate import validate_trace
from wsrl.units import GIB

REPO = Path(__file__).resolve().parents[2]
RUNNER_CHILD = Path(__file__).with_name("runner_child.py")
OUT_DIR = REPO / "out" / "soak"
SOAK_S = float(os.environ.get("WSRL_SOAK_S", "600"))
INTERVAL_S = 1
FLUSH_INTERVAL_S = 3
PAGE = 4096
HOG_MIB = 300
CG_PROVISIONED_GIB = 0.75
CG_FLOOR_GIB = 0.375
"""Above the ~310 MiB each hog touches every second: with a floor below it (0.25 GiB) a soak run saw
wmo shrink a group into an OOM kill after the breaker's cooldown (docs/reliability.md)."""
VM_PROVISIONED_GIB = 1.0
VM_FLOOR_GIB = 0.625
MAX_TICK_GAP_S = 12.0
BALLOON_SLACK = 1 << 20  # query-balloon reports the balloon the guest has reached: page granular
FAULT_KINDS = (
    "histogram_garbage",
    "cgroup_gone",
    "trace_disk_full",
    "policy_corrupt",
    "time_jump",
    "time_jump_forward",
    "vm_restart",
    "source_stall",
    "runner_sigkill",
    "runner_sigterm",
)
SHIPPED_POLICY = REPO / "trained" / "ppo-overcommit"
RECOVERY_S = 5.0
"""After a source's clock fault ends, its guest is served again within this long."""

pytestmark = [
    pytest.mark.soak,
    pytest.mark.cgroup,
    pytest.mark.qemu,
    pytest.mark.realvm,
    pytest.mark.timeout(int(SOAK_S) + 600),
]


def lru_gen_text(memcg_path: str, memcg_id: int) -> str:
    """A well-formed MGLRU dump for one memcg (~300 MiB of anon over three generations)."""
    return (
        f"memcg {memcg_id} {memcg_path}\n"
        " node     0\n"
        "          1      90000       6800          50\n"
        "          2       6000      30000         100\n"
        "          3        800      40000         200\n"
    )


class Sampler(threading.Thread):
    """Once a second: every cgroup limit and the balloon, checked against the floors."""

    def __init__(self, groups: dict[str, Path], soak: Soak) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.groups = groups
        self.soak = soak
        self.stop_event = threading.Event()
        self.samples = 0
        self.violations: list[str] = []

    def run(self) -> None:
        while not self.stop_event.wait(1.0):
            for name, group in self.groups.items():
                with contextlib.suppress(OSError, ValueError):  # the group may be gone (a fault)
                    limit = int((group / "memory.limit_in_bytes").read_text())
                    self.samples += 1
                    if limit < CG_FLOOR_GIB * GIB - PAGE:
                        self.violations.append(f"{name}: limit {limit} below the floor")
            guest = self.soak.guest
            if guest is not None and self.soak.vm_up.is_set():
                with contextlib.suppress(Exception):  # the VM may be down (a fault)
                    actual = int(guest.qmp("query-balloon", timeout_s=3.0)["actual"])
                    self.samples += 1
                    if actual < VM_FLOOR_GIB * GIB - BALLOON_SLACK:
                        self.violations.append(f"vm: balloon {actual} below the floor")


class Soak:
    """The components, the runner subprocess and the fault log of one soak."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.guest: QemuGuest | None = None
        self.vm_up = threading.Event()
        self.runner: subprocess.Popen[bytes] | None = None
        self.runner_runs = 0
        self.faults: list[dict[str, Any]] = []
        self.trace_mnt = work / "trace-mnt"
        self.qmp_link = work / "vm-qmp.sock"
        self.agent_link = work / "vm-agent.sock"
        self.config = work / "host.toml"
        self.audit = work / "audit.jsonl"
        self.lru_gen = work / "lru_gen"
        self.clock_file = work / "clock.json"
        self.policy = work / "policy"

    def install_policy(self) -> None:
        """A private copy of the shipped policy, owned by this user and writable by no one else."""
        private_copy(SHIPPED_POLICY, self.policy)

    # -- the VM ------------------------------------------------------------------------------

    def boot_vm(self) -> None:
        guest = QemuGuest()
        guest.start()
        hand_over_serial_socket(guest)
        for link, target in ((self.qmp_link, guest.qmp_socket), (self.agent_link, guest.serial_socket)):
            tmp = link.with_suffix(".new")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(target)
            tmp.replace(link)  # atomic: the runner never sees a missing path
        self.guest = guest
        self.vm_up.set()

    def stop_vm(self) -> None:
        self.vm_up.clear()
        guest, self.guest = self.guest, None
        if guest is not None:
            guest.close()

    # -- the runner --------------------------------------------------------------------------

    def start_runner(self) -> None:
        self.runner_runs += 1
        log = (self.work / f"runner-{self.runner_runs}.log").open("wb")
        self.runner = subprocess.Popen(
            [sys.executable, str(RUNNER_CHILD), str(self.config), str(self.clock_file)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        log.close()

    def runner_log(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-3000:] for p in sorted(self.work.glob("runner-*.log"))
        )

    def ticks_so_far(self) -> int:
        if not self.audit.exists():
            return 0
        return sum(1 for r in read_audit(self.audit) if r["kind"] == "tick")

    def wait_ticks(self, more: int, timeout_s: float) -> None:
        start = self.ticks_so_far()
        wait_until(lambda: self.ticks_so_far() >= start + more, timeout_s, f"{more} more runner ticks")

    def stop_runner(self) -> None:
        proc, self.runner = self.runner, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)

    # -- faults ------------------------------------------------------------------------------

    def fault(self, kind: str, start_ms: int, end_ms: int, **extra: Any) -> None:
        self.faults.append({"kind": kind, "start_ms": start_ms, "end_ms": end_ms, **extra})
        print(f"[soak] fault {kind}: {(end_ms - start_ms) / 1000:.1f} s {extra or ''}", flush=True)


def now_ms() -> int:
    return int(time.time() * 1000)


def oom_kills(group: Path) -> int:
    for line in (group / "memory.oom_control").read_text().splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    return 0


def move_pid(pid: int, group: Path) -> None:
    (group / "cgroup.procs").write_text(str(pid))


def host_toml(soak: Soak, groups: dict[str, Path]) -> str:
    root = CGROUP_V1_MEMORY_ROOT
    cg_guests = []
    for name, group in groups.items():
        backend = f'kind = "cgroup", path = "{group.relative_to(root)}", version = "v1"'
        if name == "cg-b":
            backend += f', histogram_source = "lru_gen", lru_gen_path = "{soak.lru_gen}"'
        cg_guests.append(
            f'[[guest]]\nname = "{name}"\nprovisioned_gib = {CG_PROVISIONED_GIB}\n'
            f"floor_gib = {CG_FLOOR_GIB}\nbackend = {{ {backend} }}\n"
        )
    return (
        f'[host]\nname = "soak"\ncapacity_gib = 3\nreserve_gib = 0\ninterval_s = {INTERVAL_S}\n'
        f'cgroup_root = "{root}"\n\n'
        f'[policy]\nname_or_path = "{soak.policy}"\n\n'
        f"[safety]\nmax_shrink_frac_per_s = 0.1\nfloor_gib = {CG_FLOOR_GIB}\n"
        "hold_intervals_before_fallback = 2\ndecision_expiry_s = 15\n\n"
        "[safety.breaker]\ncooldown_s = 30\n\n"
        f'[audit]\npath = "{soak.audit}"\nfsync = true\n\n'
        f'[record]\ndir = "{soak.trace_mnt / "trace"}"\nflush_interval_s = {FLUSH_INTERVAL_S}\n\n'
        + "\n".join(cg_guests)
        + f'\n[[guest]]\nname = "vm"\nprovisioned_gib = {VM_PROVISIONED_GIB}\nfloor_gib = {VM_FLOOR_GIB}\n'
        f'backend = {{ kind = "qemu", qmp_socket = "{soak.qmp_link}", agent_socket = "{soak.agent_link}", '
        "stats_interval_s = 1, timeout_s = 5 }\n"
    )


def test_runner_survives_a_fault_schedule_on_real_components() -> None:
    require_v1_memcg()
    work = Path(tempfile.mkdtemp(prefix="wsrl-soak-", dir="/tmp"))
    soak = Soak(work)
    groups = {"cg-a": TEST_PARENT / "cg-a", "cg-b": TEST_PARENT / "cg-b"}
    hogs: dict[str, Hog] = {}
    sampler = Sampler(groups, soak)
    oom_before_removal = 0
    mounted = False
    made_parent = False

    def stop_processes() -> None:  # before the zram swap goes: swapoff must not wait on live hogs
        sampler.stop_event.set()
        soak.stop_runner()
        soak.stop_vm()
        for child in hogs.values():
            child.stop()

    try:
        with zram_swap(1 * GIB), contextlib.ExitStack() as inner:
            inner.callback(stop_processes)
            if not TEST_PARENT.exists():
                TEST_PARENT.mkdir()
                made_parent = True
            for group in groups.values():
                group.mkdir()
            soak.lru_gen.write_text(
                lru_gen_text("/" + groups["cg-b"].relative_to(CGROUP_V1_MEMORY_ROOT).as_posix(), 7)
            )
            soak.trace_mnt.mkdir()
            mount = ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(soak.trace_mnt)]
            subprocess.run(mount, check=True)
            mounted = True
            for name, group in groups.items():
                hogs[name] = Hog(group, HOG_MIB)
            for child in hogs.values():
                assert child.expect("ready"), "a hog died while filling its memory"
            soak.boot_vm()
            soak.install_policy()
            soak.config.write_text(host_toml(soak, groups))
            soak.start_runner()
            soak.wait_ticks(3, 60.0)
            sampler.start()
            began = time.monotonic()
            print(f"[soak] {SOAK_S:.0f} s soak in {work}", flush=True)

            def at(frac: float) -> None:
                wait = began + frac * SOAK_S - time.monotonic()
                if wait > 0:
                    time.sleep(wait)

            # 1. the histogram source returns garbage
            at(0.08)
            good = soak.lru_gen.read_text()
            t0 = now_ms()
            soak.lru_gen.write_bytes(b"memcg \xff\xfe garbage\n node x\n 1 2 three\x00\n" * 50)
            time.sleep(6)
            soak.lru_gen.write_text(good)
            soak.fault("histogram_garbage", t0, now_ms(), guest="cg-b")

            # 2. a cgroup disappears and reappears
            at(0.18)
            t0 = now_ms()
            pid = hogs["cg-a"].proc.pid
            oom_before_removal += oom_kills(groups["cg-a"])
            move_pid(pid, CGROUP_V1_MEMORY_ROOT)
            rmdir_retry(groups["cg-a"])
            time.sleep(5)
            groups["cg-a"].mkdir()
            # v1 charges stay with the group they were made in (this kernel refuses
            # move_charge_at_immigrate): the new group holds what the process allocates from now on.
            move_pid(pid, groups["cg-a"])
            soak.fault("cgroup_gone", t0, now_ms(), guest="cg-a")

            # 3. the trace disk fills up
            at(0.30)
            t0 = now_ms()
            filler = soak.trace_mnt / "filler"
            subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
            time.sleep(max(8, 3 * FLUSH_INTERVAL_S))
            filler.unlink()
            soak.fault("trace_disk_full", t0, now_ms())

            # 3b. the policy file is replaced by a corrupt one, then put back
            at(0.36)
            t0 = now_ms()
            model = soak.policy / "model.onnx"
            good_model = model.read_bytes()
            model.write_bytes(good_model[: len(good_model) // 3] + b"\x00not a model\x00" * 64)
            time.sleep(6)
            fixed = model.with_suffix(".new")
            fixed.write_bytes(good_model)
            fixed.chmod(0o644)
            fixed.replace(model)
            soak.wait_ticks(2, 30.0)
            soak.fault("policy_corrupt", t0, now_ms())

            # 4. time jumps: one guest's readings come stamped two hours in the past
            at(0.42)
            t0 = now_ms()
            soak.clock_file.write_text(json.dumps({"guest": "cg-b", "offset_ms": -2 * 3600 * 1000}))
            time.sleep(6)
            soak.clock_file.unlink()
            soak.fault("time_jump", t0, now_ms(), guest="cg-b", offset_ms=-2 * 3600 * 1000)

            # 4b. and two hours in the future
            at(0.47)
            t0 = now_ms()
            soak.clock_file.write_text(json.dumps({"guest": "cg-b", "offset_ms": 2 * 3600 * 1000}))
            time.sleep(6)
            soak.clock_file.unlink()
            soak.fault("time_jump_forward", t0, now_ms(), guest="cg-b", offset_ms=2 * 3600 * 1000)

            # 5. the VM is killed (QMP and agent sockets drop) and a new one booted
            at(0.52)
            t0 = now_ms()
            assert soak.guest is not None and soak.guest._proc is not None
            soak.vm_up.clear()
            soak.guest._proc.kill()  # a crash, not a shutdown
            time.sleep(5)
            soak.stop_vm()
            soak.boot_vm()
            restarted_ms = now_ms()
            soak.fault("vm_restart", t0, restarted_ms, guest="vm")

            # 5b. the VM's sources stall: QEMU is stopped, its sockets block instead of failing
            at(0.62)
            t0 = now_ms()
            assert soak.guest is not None and soak.guest._proc is not None
            qemu_pid = soak.guest._proc.pid
            os.kill(qemu_pid, signal.SIGSTOP)
            time.sleep(12)
            os.kill(qemu_pid, signal.SIGCONT)
            soak.fault("source_stall", t0, now_ms(), guest="vm")

            # 6. SIGKILL mid-run, restart with the same config
            at(0.72)
            t0 = now_ms()
            assert soak.runner is not None
            soak.runner.send_signal(signal.SIGKILL)
            assert soak.runner.wait(timeout=30) == -signal.SIGKILL
            killed_ms = now_ms()
            time.sleep(2)
            soak.start_runner()
            soak.wait_ticks(2, 60.0)
            soak.fault("runner_sigkill", t0, now_ms(), killed_ms=killed_ms)

            # 7. SIGTERM at the end
            at(1.0)
            t0 = now_ms()
            assert soak.runner is not None and soak.runner.poll() is None, soak.runner_log()
            soak.runner.send_signal(signal.SIGTERM)
            rc = soak.runner.wait(timeout=60)
            soak.runner = None
            soak.fault("runner_sigterm", t0, now_ms(), exit_status=rc)
            sampler.stop_event.set()
            sampler.join(timeout=10)

            hogs_alive = {name: child.alive() for name, child in hogs.items()}
            vm_proc = soak.guest._proc if soak.guest is not None else None
            vm_alive = vm_proc is not None and vm_proc.poll() is None
            ooms = oom_before_removal + sum(oom_kills(g) for g in groups.values())
            limits_after_exit = {n: int((g / "memory.limit_in_bytes").read_text()) for n, g in groups.items()}
            balloon_after_exit = None
            if vm_alive and soak.guest is not None:
                balloon_after_exit = soak.guest.qmp("query-balloon")["actual"]
            report = check_and_report(soak, sampler, rc, hogs_alive, vm_alive, ooms)
            report["limits_after_exit"] = limits_after_exit
            report["balloon_after_exit"] = balloon_after_exit
            OUT_DIR.mkdir(parents=True, exist_ok=True)
            (OUT_DIR / "figures.json").write_text(json.dumps(report, indent=2) + "\n")
            print_table(report)
            assert not report["problems"], "\n".join(report["problems"]) + "\n" + soak.runner_log()
    finally:
        stop_processes()
        if mounted:
            subprocess.run(["umount", str(soak.trace_mnt)], check=False)
        for group in groups.values():
            if group.exists():
                rmdir_retry(group)
        soak.clock_file.unlink(missing_ok=True)
        if made_parent and TEST_PARENT.exists():
            rmdir_retry(TEST_PARENT)
        keep = OUT_DIR / "last"  # the audit log, config and runner logs, for a post-mortem
        shutil.rmtree(keep, ignore_errors=True)
        keep.mkdir(parents=True, exist_ok=True)
        for path in [soak.audit, soak.config, *work.glob("runner-*.log")]:
            if path.exists():
                shutil.copy(path, keep / path.name)
        if not mounted or not os.path.ismount(soak.trace_mnt):
            shutil.rmtree(work, ignore_errors=True)


def check_and_report(
    soak: Soak, sampler: Sampler, rc: int, hogs_alive: dict[str, bool], vm_alive: bool, ooms: int
) -> dict[str, Any]:
    problems: list[str] = []
    records = read_audit(soak.audit)
    ticks = [r for r in records if r["kind"] == "tick"]
    starts = [r for r in records if r["kind"] == "start"]
    exits = [r for r in records if r["kind"] == "exit"]
    guests = ["cg-a", "cg-b", "vm"]
    policy_name = starts[0]["policy"] if starts else None

    def served(record: dict[str, Any], name: str) -> bool:
        g = next(x for x in record["guests"] if x["name"] == name)
        return not g["errors"] and g["state"] == "ok"

    def in_window(fault: dict[str, Any], slack_ms: int = 3000) -> list[dict[str, Any]]:
        return [t for t in ticks if fault["start_ms"] <= t["time_ms"] <= fault["end_ms"] + slack_ms]

    def guest_of(record: dict[str, Any], name: str) -> dict[str, Any]:
        return next(x for x in record["guests"] if x["name"] == name)

    survived: dict[str, bool] = {}
    audited: dict[str, bool] = {}
    for fault in soak.faults:
        kind = fault["kind"]
        window = in_window(fault)
        if "guest" in fault:
            name = fault["guest"]
            others = [g for g in guests if g != name]
            audited[kind] = any(
                guest_of(t, name)["errors"] or guest_of(t, name)["input"] != "ok" for t in window
            )
            # A clock fault must not outlast itself: the guest is served again at once.
            recovery_ms = RECOVERY_S * 1000 if kind.startswith("time_jump") else math.inf
            survived[kind] = any(all(served(t, o) for o in others) for t in window) and any(
                served(t, name)
                for t in ticks
                if fault["end_ms"] < t["time_ms"] <= fault["end_ms"] + recovery_ms
            )
        elif kind == "policy_corrupt":
            reloads = [
                r for r in records if r["kind"] == "policy_reload" and r["time_ms"] >= fault["start_ms"]
            ]
            refused = [r for r in reloads if not r["loaded"] and r["time_ms"] <= fault["end_ms"]]
            audited[kind] = bool(refused) and all(r["kept"] == policy_name for r in refused)
            survived[kind] = (
                any(r["loaded"] for r in reloads)
                and any(all(served(t, g) for g in guests) for t in window)
                and all(g["source"] != "relax (no usable input)" for t in window for g in t["guests"])
            )
        elif kind == "trace_disk_full":
            audited[kind] = any(t["record_error"] for t in window)
            survived[kind] = len(window) >= 3 and any(all(served(t, g) for g in guests) for t in window)
        elif kind == "runner_sigkill":
            later = [s for s in starts if s["time_ms"] >= fault["killed_ms"]]
            audited[kind] = len(later) == 1  # the restart's start record
            survived[kind] = any(t["time_ms"] > fault["killed_ms"] for t in ticks)
        elif kind == "runner_sigterm":
            audited[kind] = len(exits) == 1 and exits[0]["time_ms"] >= fault["start_ms"]
            survived[kind] = rc == 0
    for kind in FAULT_KINDS:
        if not audited.get(kind):
            problems.append(f"fault {kind} is not in the audit log")
        if not survived.get(kind):
            problems.append(f"fault {kind}: the runner did not keep serving the guests")

    # Floors: every target the runner audited, and every size sampled from the kernel and QEMU.
    floors = {"cg-a": CG_FLOOR_GIB * GIB, "cg-b": CG_FLOOR_GIB * GIB, "vm": VM_FLOOR_GIB * GIB}
    audit_violations = [
        f"tick {t['tick']} {g['name']}: target {g['target_bytes']}"
        for t in ticks
        for g in t["guests"]
        if g["target_bytes"] < floors[g["name"]] - PAGE
    ]
    floor_violations = audit_violations + sampler.violations
    problems += floor_violations[:20]
    decisions = sum(1 for t in ticks for g in t["guests"] if g["applied"])

    # Gaps: the runner ticked on, except while it was dead (SIGKILL to restart); a dead VM costs at most
    # one QMP timeout (5 s) per tick.
    sigkill = next(f for f in soak.faults if f["kind"] == "runner_sigkill")
    gaps = [
        (b["time_ms"] - a["time_ms"]) / 1000
        for a, b in itertools.pairwise(ticks)
        if not (a["time_ms"] <= sigkill["killed_ms"] <= b["time_ms"])
    ]
    max_gap_s = max(gaps, default=0.0)
    if max_gap_s > MAX_TICK_GAP_S:
        problems.append(f"ticks stopped for {max_gap_s:.1f} s (more than {MAX_TICK_GAP_S} s)")
    if ooms:
        problems.append(f"{ooms} OOM kills in the soak's cgroups")
    for name, alive in hogs_alive.items():
        if not alive:
            problems.append(f"the process in {name} died")
    if not vm_alive:
        problems.append("the VM is not running at the end")
    if len(starts) != 2:
        problems.append(f"{len(starts)} start records, expected 2 (first run and restart after SIGKILL)")

    # The trace: whole and valid; every row the runner recorded before the last flush is there.
    trace_dir = soak.trace_mnt / "trace"
    validation = validate_trace(trace_dir)
    if not validation.ok:
        problems.append(f"trace validation failed: {validation}")
    table = TraceReader(trace_dir).read_table(["time_ms", "guest"])
    stored = set(zip(table["guest"].to_pylist(), table["time_ms"].to_pylist(), strict=True))
    killed_ms = next(f["killed_ms"] for f in soak.faults if f["kind"] == "runner_sigkill")
    unflushed_window_ms = (FLUSH_INTERVAL_S + 2 * INTERVAL_S + 1) * 1000
    recorded = [
        (g["name"], g["inputs"]["time_ms"], t["time_ms"])
        for t in ticks
        for g in t["guests"]
        if g["recorded"] and g["inputs"] and g["inputs"]["time_ms"] is not None
    ]
    lost, lost_at_kill = [], []
    for name, sample_ms, tick_ms in recorded:
        if (name, sample_ms) in stored:
            continue
        if killed_ms - unflushed_window_ms <= tick_ms <= killed_ms:
            lost_at_kill.append((name, sample_ms))  # buffered, not yet flushed when SIGKILL hit
        else:
            lost.append((name, sample_ms))
    if lost:
        problems.append(
            f"{len(lost)} recorded samples missing from the trace before the last flush: {lost[:5]}"
        )

    injected = {k: sum(1 for f in soak.faults if f["kind"] == k) for k in FAULT_KINDS}
    return {
        "soak_s": SOAK_S,
        "faults_injected": injected,
        "faults_survived": {k: bool(survived.get(k)) for k in FAULT_KINDS},
        "faults_audited": {k: bool(audited.get(k)) for k in FAULT_KINDS},
        "ticks": len(ticks),
        "max_tick_gap_s": round(max_gap_s, 2),
        "decisions_applied": decisions,
        "guest_decisions": sum(len(t["guests"]) for t in ticks),
        "floor_violations": len(floor_violations),
        "kernel_and_qemu_samples": sampler.samples,
        "ooms_caused": ooms,
        "trace_rows": len(stored),
        "samples_recorded": len(recorded),
        "samples_lost_before_last_flush": len(lost),
        "samples_unflushed_at_sigkill": len(lost_at_kill),
        "runner_exit_status": rc,
        "problems": problems,
    }


def print_table(report: dict[str, Any]) -> None:
    print("\n[soak] figures", flush=True)
    print(f"  {'fault':<20} {'injected':>8} {'survived':>8} {'audited':>8}")
    for kind in FAULT_KINDS:
        print(
            f"  {kind:<20} {report['faults_injected'][kind]:>8} "
            f"{report['faults_survived'][kind]!s:>8} {report['faults_audited'][kind]!s:>8}"
        )
    for key in (
        "soak_s",
        "ticks",
        "max_tick_gap_s",
        "decisions_applied",
        "guest_decisions",
        "floor_violations",
        "kernel_and_qemu_samples",
        "ooms_caused",
        "trace_rows",
        "samples_recorded",
        "samples_lost_before_last_flush",
        "samples_unflushed_at_sigkill",
        "runner_exit_status",
    ):
        print(f"  {key:<32} {report[key]}")
    print(flush=True)
