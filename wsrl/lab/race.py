"""Reclaim speed against allocation speed: is a fast allocation into a tight limit OOM-killed.

``python -m wsrl.lab.race --out PATH.json`` (root; part of ``make fidelity``). A child process in a
fresh cgroup-v1 memory group allocates ``--total-mib`` of anonymous memory whose pages do not
compress (random bytes; ``--fill half``: half of each page random, compressing about 2x), either
as fast as it can in chunks (N MiB copied at a time, no pause) or paced (8 MiB, then 50 ms), into a
limit that is a fraction of the total, with a zram swap device of the run's own (``--zram-mib``,
default twice the total: every page fits uncompressed, with the interpreter's own). The steady
state always fits (swap holds every byte the limit does not), so an OOM kill is the race the
testbed notes describe: reclaim (compressing pages into zram) falling behind the allocation until
the memcg gives up (``MAX_RECLAIM_RETRIES`` passes without progress). Each trial records the
outcome, ``memory.max_usage_in_bytes`` and ``memory.memsw.max_usage_in_bytes`` (how far it got) and
the allocation's wall time. ``docs/fidelity.md`` ("Reclaim speed") has the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wsrl.errors import WsrlError
from wsrl.lab.kernel import (
    CGROUP_V1_MEMORY_ROOT,
    RungGroups,
    check_machine,
    read_flat_keyed,
    rmdir_retry,
    zram_swap,
)

MIB = 2**20
PACED_CHUNK_MIB = 8
PACED_PAUSE_S = 0.05
TRIAL_TIMEOUT_S = 300.0

_CHILD = r"""
import sys, time
import numpy as np
total_mib, chunk_mib, pause_s = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
random_bytes = int(sys.argv[4])
page = np.zeros(4096, np.uint8)
page[:random_bytes] = np.random.default_rng(0).integers(0, 256, random_bytes, dtype=np.uint8)
block = np.tile(page, chunk_mib * 256)
rng = np.random.default_rng(1)
kept = []
started = time.monotonic()
for _ in range(total_mib // chunk_mib):
    chunk = block.copy()
    chunk[::4096] = rng.integers(0, 256, chunk_mib * 256, dtype=np.uint8)  # no two pages alike
    kept.append(chunk)
    if pause_s:
        time.sleep(pause_s)
print(time.monotonic() - started, flush=True)
"""


FILL_RANDOM_BYTES = {"random": 4096, "half": 2048}


def run_trial(
    parent: Path,
    name: str,
    *,
    total_mib: int,
    limit_frac: float,
    chunk_mib: int,
    pause_s: float,
    fill: str = "random",
) -> dict[str, Any]:
    """One allocation into a fresh group under ``parent``; the group is removed afterwards."""
    groups = RungGroups(parent, None, name)
    groups.create()
    try:
        groups.set_limit(int(limit_frac * total_mib * MIB), swap=True)
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                _CHILD,
                str(total_mib),
                str(chunk_mib),
                str(pause_s),
                str(FILL_RANDOM_BYTES[fill]),
            ],
            preexec_fn=groups.join,
            capture_output=True,
            text=True,
            timeout=TRIAL_TIMEOUT_S,
        )
        memsw = groups.v1 / "memory.memsw.max_usage_in_bytes"
        oom_kills = read_flat_keyed(groups.v1 / "memory.oom_control").get("oom_kill", 0)
        return {
            "limit_frac": limit_frac,
            "limit_mib": round(limit_frac * total_mib, 1),
            "chunk_mib": chunk_mib,
            "pause_s": pause_s,
            "oom_killed": oom_kills > 0,
            "exit_code": done.returncode,
            "alloc_s": float(done.stdout) if done.returncode == 0 and done.stdout.strip() else None,
            "max_usage_mib": int((groups.v1 / "memory.max_usage_in_bytes").read_text()) / MIB,
            "memsw_max_usage_mib": int(memsw.read_text()) / MIB if memsw.exists() else None,
        }
    finally:
        groups.remove()


def run_race(
    *,
    total_mib: int,
    limit_fracs: Sequence[float],
    chunks_mib: Sequence[int],
    repeats: int,
    zram_mib: int,
    fill: str = "random",
) -> dict[str, Any]:
    """Every (limit, chunk, repeat) trial at full speed, and paced ones at each limit."""
    check_machine()
    parent = CGROUP_V1_MEMORY_ROOT / f"wsrl-race-{os.getpid()}"
    parent.mkdir()
    trials: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        with zram_swap(zram_mib * MIB) as zram:
            for frac in limit_fracs:
                modes = [(c, 0.0) for c in chunks_mib] + [(PACED_CHUNK_MIB, PACED_PAUSE_S)]
                for chunk, pause in modes:
                    for repeat in range(repeats):
                        trial = run_trial(
                            parent,
                            f"t{len(trials)}",
                            total_mib=total_mib,
                            limit_frac=frac,
                            chunk_mib=chunk,
                            pause_s=pause,
                            fill=fill,
                        )
                        trial["repeat"] = repeat
                        trials.append(trial)
                        print(json.dumps(trial), file=sys.stderr, flush=True)
            zram_info = zram.info()
    finally:
        rmdir_retry(parent)
    return {
        "schema": "wsrl.fidelity.race/1",
        "total_mib": total_mib,
        "fill": fill,
        "zram": zram_info,
        "elapsed_s": round(time.monotonic() - started, 1),
        "trials": trials,
    }


def summary(document: dict[str, Any]) -> str:
    """OOM kills per limit and mode, as a Markdown table."""
    rows: dict[tuple[float, str], list[bool]] = {}
    for trial in document["trials"]:
        mode = "paced" if trial["pause_s"] else "full speed"
        rows.setdefault((trial["limit_frac"], mode), []).append(trial["oom_killed"])
    lines = ["| limit (share of the allocation) | allocation | OOM-killed |", "|---:|---|---:|"]
    for (frac, mode), kills in sorted(rows.items()):
        lines.append(f"| {frac:.2f} | {mode} | {sum(kills)} of {len(kills)} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m wsrl.lab.race --out PATH.json [--total-mib N] ...``."""
    parser = argparse.ArgumentParser(prog="python -m wsrl.lab.race", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="where to write the JSON document")
    parser.add_argument("--total-mib", type=int, default=1024, help="anon allocated per trial")
    parser.add_argument(
        "--limits",
        default="0.05,0.1,0.2,0.4",
        help="limits as shares of the allocation, comma-separated",
    )
    parser.add_argument("--chunks-mib", default="16,64", help="full-speed chunk sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="trials per (limit, chunk)")
    parser.add_argument(
        "--zram-mib", type=int, default=None, help="zram size (default: twice --total-mib, room for all)"
    )
    parser.add_argument("--fill", choices=sorted(FILL_RANDOM_BYTES), default="random", help="page contents")
    args = parser.parse_args(argv)
    try:
        fracs = [float(x) for x in args.limits.split(",")]
        chunks = [int(x) for x in args.chunks_mib.split(",")]
    except ValueError as exc:
        parser.error(f"--limits/--chunks-mib: {exc}")
    if not all(0 < f <= 1 for f in fracs) or not all(c > 0 for c in chunks) or args.total_mib < max(chunks):
        parser.error("limits must be in (0, 1], chunks positive and at most --total-mib")
    try:
        document = run_race(
            total_mib=args.total_mib,
            limit_fracs=fracs,
            chunks_mib=chunks,
            repeats=args.repeats,
            zram_mib=args.zram_mib or 2 * args.total_mib,
            fill=args.fill,
        )
    except WsrlError as exc:
        print(f"race: error: {exc}", file=sys.stderr)
        return 2
    args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(summary(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
