"""What the ``referenced`` histogram source costs, and what clearing accessed bits does to reclaim.

Run as root on the real kernel: ``python benchmarks/bench_referenced.py [--sizes-gib 1 8]
[--repeat 5] [--interference-s 60] [--json]`` (not in ``make bench``: it needs root, a v1 memcg
and zram, and takes a few minutes). Figures go to ``docs/referenced-source.md``.

* **Cost per read**, per GiB resident: a child process maps N GiB of private anon memory with
  4 KiB pages (``MADV_NOHUGEPAGE``: the most page-table entries per GiB, the worst case) and
  touches all of it; this process then times, on its own thread (``time.thread_time``: user +
  system CPU, the kernel's page-table walk included), the clear (``clear_refs``), one
  ``smaps`` read parsed as the sampler parses it, and one ``smaps_rollup`` read. ``--repeat``
  runs each; the figures are the median and the range.
* **Interference** with the kernel's own aging: a steady workload in a v1 memcg with zram swap
  (a 160 MiB hot region read every 0.5 s, a 320 MiB region swept once per 20 s) under a 360 MiB
  limit, so that reclaim must choose between them all the time. Refaults (``memory.stat``
  ``total_workingset_refault_anon``) over ``--interference-s`` seconds, without the source, with
  the default schedule (bits cleared every 120 s) and with a clear every 10 s (edges 1, 5, 10 s).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from wsrl.backends.referenced import ReferencedSampler, ReferencedSettings, parse_smaps  # noqa: E402
from wsrl.lab.kernel import CGROUP_V1_MEMORY_ROOT, rmdir_retry, zram_swap  # noqa: E402

GIB = 1 << 30
MIB = 1 << 20

_FILL = r"""
import mmap, sys, time
size = int(sys.argv[1])
m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
m.madvise(mmap.MADV_NOHUGEPAGE)
chunk = bytes(range(256)) * (64 << 12)
for off in range(0, size, len(chunk)):
    m[off:off + len(chunk)] = chunk[: size - off]
print("ready", flush=True)
sys.stdin.read()
"""

_STEADY = r"""
import mmap, sys, time
PAGE = mmap.PAGESIZE
def region(mib):
    m = mmap.mmap(-1, mib << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_NOHUGEPAGE)
    for off in range(0, len(m), PAGE):
        m[off:off + 8] = (off // PAGE + 1).to_bytes(8, "little")
    return m
hot, warm = region(int(sys.argv[1])), region(int(sys.argv[2]))
tick_s, chunks = 0.5, int(float(sys.argv[3]) / 0.5)
pages = len(warm) // PAGE
print("ready", flush=True)
tick, start = 0, time.monotonic()
while True:
    s = 0
    for off in range(8, len(hot), PAGE):
        s += hot[off]
    c = tick % chunks
    for p in range(c * pages // chunks, (c + 1) * pages // chunks):
        s += warm[p * PAGE + 8]
    tick += 1
    time.sleep(max(0.0, start + tick * tick_s - time.monotonic()))
"""


@contextlib.contextmanager
def memcg(name: str) -> Iterator[Path]:
    group = CGROUP_V1_MEMORY_ROOT / f"wsrl-bench-{name}-{os.getpid()}"
    group.mkdir()
    try:
        yield group
    finally:
        rmdir_retry(group)


@contextlib.contextmanager
def child(group: Path, script: str, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    def join() -> None:
        with open(group / "cgroup.procs", "w") as f:
            f.write(str(os.getpid()))

    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=join
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        yield proc
    finally:
        proc.kill()
        proc.wait(60)


def _timed(fn: Any) -> tuple[float, float]:
    cpu, wall = time.thread_time(), time.perf_counter()
    fn()
    return time.thread_time() - cpu, time.perf_counter() - wall


def cost(size_gib: float, repeat: int) -> dict[str, Any]:
    """CPU and wall seconds per GiB resident of a clear, a smaps read and a smaps_rollup read."""
    with memcg("cost") as group, child(group, _FILL, str(int(size_gib * GIB))) as proc:
        base = Path(f"/proc/{proc.pid}")
        rss_gib = parse_smaps((base / "smaps_rollup").read_bytes()).rss_anon / GIB
        runs: dict[str, list[tuple[float, float]]] = {"clear": [], "smaps": [], "rollup": []}
        for _ in range(repeat):
            runs["clear"].append(_timed(lambda: (base / "clear_refs").write_text("1")))
            time.sleep(0.2)
            runs["smaps"].append(_timed(lambda: parse_smaps((base / "smaps").read_bytes())))
            runs["rollup"].append(_timed(lambda: parse_smaps((base / "smaps_rollup").read_bytes())))
    out: dict[str, Any] = {"resident_gib": round(rss_gib, 2)}
    for what, values in runs.items():
        for column, name in ((0, "cpu"), (1, "wall")):
            per_gib = [v[column] / rss_gib * 1000 for v in values]
            out[f"{what}_{name}_ms_per_gib"] = {
                "median": round(statistics.median(per_gib), 2),
                "min": round(min(per_gib), 2),
                "max": round(max(per_gib), 2),
            }
    return out


def _refaults(group: Path) -> int:
    for line in (group / "memory.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "total_workingset_refault_anon":
            return int(value)
    raise RuntimeError("no total_workingset_refault_anon in memory.stat")


def interference(seconds: float) -> list[dict[str, Any]]:
    """Refaults of the steady workload without the source and with two schedules."""
    schedules: list[tuple[str, ReferencedSettings | None]] = [
        ("none", None),
        ("default (clear every 120 s)", ReferencedSettings()),
        (
            "clear every 10 s (edges 1, 5, 10 s)",
            ReferencedSettings(edges_ms=(1000, 5000, 10_000), cycle_s=10.0),
        ),
    ]
    results = []
    for label, settings in schedules:
        with memcg("interference") as group:
            (group / "memory.limit_in_bytes").write_text(str(360 * MIB))
            with child(group, _STEADY, "160", "320", "20"):
                time.sleep(25)  # one full sweep of the warm region: reclaim settles
                sampler = None
                if settings is not None:
                    sampler = ReferencedSampler("bench", lambda g=group: _pids(g), settings)
                    sampler.start()
                before, started = _refaults(group), time.monotonic()
                stop = threading.Event()
                stop.wait(seconds)
                refaults = _refaults(group) - before
                elapsed = time.monotonic() - started
                if sampler is not None:
                    sampler.stop()
        results.append(
            {
                "schedule": label,
                "refaults_per_min": round(refaults / elapsed * 60),
                "refault_mib_per_min": round(refaults * 4096 / MIB / elapsed * 60, 1),
            }
        )
    return results


def _pids(group: Path) -> list[int]:
    return [int(p) for p in (group / "cgroup.procs").read_text().split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-gib", type=float, nargs="+", default=[1.0, 8.0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--interference-s", type=float, default=60.0)
    parser.add_argument("--skip-interference", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_referenced: needs root (clear_refs, a v1 memcg, zram)")
    report: dict[str, Any] = {"cost": [cost(size, args.repeat) for size in args.sizes_gib]}
    if not args.skip_interference:
        with zram_swap(1 * GIB):  # a device of the run's own, removed afterwards
            report["interference"] = interference(args.interference_s)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for row in report["cost"]:
        print(f"resident {row['resident_gib']} GiB (4 KiB pages), ms per GiB: median [min, max]")
        for what in ("clear", "smaps", "rollup"):
            cpu, wall = row[f"{what}_cpu_ms_per_gib"], row[f"{what}_wall_ms_per_gib"]
            print(
                f"  {what:7s} cpu {cpu['median']:8.2f} [{cpu['min']:.2f}, {cpu['max']:.2f}]"
                f"   wall {wall['median']:8.2f} [{wall['min']:.2f}, {wall['max']:.2f}]"
            )
    for row in report.get("interference", []):
        print(
            f"interference: {row['schedule']:38s} refaults {row['refaults_per_min']:8d}/min "
            f"({row['refault_mib_per_min']} MiB/min)"
        )


if __name__ == "__main__":
    main()
