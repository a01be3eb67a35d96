"""Runner decision latency and memory: 64 guests, an ONNX policy, snapshot to action.

Run with ``make bench`` or ``python benchmarks/bench_runner.py [--json] [--policy DIR] [--decisions N]``.

The runner here is the production one (:class:`wsrl.runner.daemon.Runner`) with 64 cgroup v2 guests
whose control files are laid out as plain files in a temporary directory (this kernel has no v2
memory controller; the files are read and written exactly as on a real v2 host). It runs in a child
process that imports only what ``wsrl run`` imports, so its resident memory is the runner's.

* ``decision_ms``: one decision for all 64 guests: snapshot (from the guests' readings) to the
  targets the pipeline hands the rails: observation, ONNX policy (onnxruntime), allocator, guard;
* ``tick_ms``: a whole runner tick: read 64 cgroups, decide, rails, apply, audit log;
* ``read_ms``: reading the 64 guests as a tick does (all at once, each on its guest's worker, one
  deadline), against reading them one after another on the calling thread (the cost of the
  deadline, :mod:`wsrl.runner.deadline`);
* ``rss_mb``: the runner process's peak resident memory after the run.

The baseline in the same child: the same decision with the ``static`` reference policy (no model),
so the ONNX policy's share of the decision shows as a ratio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

GUESTS = 64
REPO = Path(__file__).resolve().parent.parent
DEFAULT_POLICY = REPO / "trained" / "ppo-overcommit"

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import numpy as np
from wsrl.pipeline.control import PolicyStage
from wsrl.policies import make_policy
from wsrl.runner.config import runner_config_from_dict
from wsrl.runner.daemon import Runner

root, policy_dir, decisions = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
guests = [
    {"name": f"c{i}", "provisioned_gib": 1, "floor_gib": 0.125,
     "backend": {"kind": "cgroup", "path": f"c{i}", "root": str(root), "version": "v2"}}
    for i in range(64)
]
config = runner_config_from_dict(
    {"host": {"name": "bench", "capacity_gib": 48, "reserve_gib": 2, "interval_s": 10},
     "policy": {"name_or_path": policy_dir},
     "audit": {"path": str(root / "audit.jsonl"), "fsync": False},
     "guest": guests},
    base_dir=root, label="bench.toml")

def timed(step, snapshot, n):
    out = []
    for _ in range(n):
        t = time.perf_counter(); step(snapshot); out.append((time.perf_counter() - t) * 1000.0)
    return np.array(out)

with Runner(config) as runner:
    runner.start()
    for _ in range(20):
        runner.tick()
    snapshot = runner.observe()
    decision = timed(runner.primary.step, snapshot, decisions)
    static = PolicyStage(make_policy("static"), runner.stack.allocator)
    static.reset(snapshot)
    baseline = timed(static.step, snapshot, decisions)
    ticks = []
    for _ in range(200):
        t = time.perf_counter(); runner.tick(); ticks.append((time.perf_counter() - t) * 1000.0)
    reads, serial = [], []
    for _ in range(100):
        t = time.perf_counter(); runner._read_all(); reads.append((time.perf_counter() - t) * 1000.0)
        t = time.perf_counter(); [b.read() for b in runner.backends]
        serial.append((time.perf_counter() - t) * 1000.0)
    runner.shutdown()
print(json.dumps({
    "decision_ms_p50": round(float(np.percentile(decision, 50)), 3),
    "decision_ms_p99": round(float(np.percentile(decision, 99)), 3),
    "guests": int(snapshot.mask.sum()),
    "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
    "tick_ms_p50": round(float(np.percentile(ticks, 50)), 3),
    "tick_ms_p99": round(float(np.percentile(ticks, 99)), 3),
    "static_decision_ms_p50": round(float(np.percentile(baseline, 50)), 3),
    "read_ms_p50": round(float(np.percentile(reads, 50)), 3),
    "serial_read_ms_p50": round(float(np.percentile(serial, 50)), 3),
    "torch_loaded": "torch" in sys.modules,
}))
"""


def make_cgroups(root: Path) -> None:
    """64 v2-style memory cgroups as plain files: 600-900 MiB in use, a little swap, PSI, events."""
    for i in range(GUESTS):
        group = root / f"c{i}"
        group.mkdir()
        used = (600 + 5 * i) << 20
        anon, file = used * 6 // 10, used * 3 // 10
        files = {
            "memory.current": f"{used}\n",
            "memory.high": "max\n",
            "memory.max": "max\n",
            "memory.swap.current": f"{(16 + i) << 20}\n",
            "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
            "memory.pressure": "some avg10=0.10 avg60=0.05 avg300=0.01 total=12345\n"
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=1234\n",
            "memory.stat": (
                f"anon {anon}\nfile {file}\nactive_anon {anon // 2}\ninactive_anon {anon - anon // 2}\n"
                f"active_file {file // 3}\ninactive_file {file - file // 3}\nunevictable 0\n"
                f"workingset_refault_anon {100 * i}\nworkingset_refault_file {50 * i}\n"
            ),
            "memory.reclaim": "",
        }
        for name, text in files.items():
            (group / name).write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--policy", type=Path, default=DEFAULT_POLICY, help="exported policy directory")
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (args.policy / "manifest.json").is_file():
        sys.exit(f"bench_runner: {args.policy} holds no exported policy (run `make train` or pass --policy)")
    with tempfile.TemporaryDirectory(prefix="wsrl-bench-runner-") as tmp:
        root = Path(tmp)
        make_cgroups(root)
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(root), str(args.policy.resolve()), str(args.decisions)],
            capture_output=True,
            text=True,
            check=False,
            cwd=REPO,
        )
    if done.returncode != 0:
        sys.exit(f"bench_runner: the runner child failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if args.json:
        print(json.dumps({k: result[k] for k in ("decision_ms_p50", "decision_ms_p99", "guests", "rss_mb")}))
        return
    print(f"runner, {result['guests']} guests, ONNX policy {args.policy.name}:")
    print(
        f"  decision (snapshot to action): p50 {result['decision_ms_p50']:.3f} ms, "
        f"p99 {result['decision_ms_p99']:.3f} ms "
        f"(static policy: p50 {result['static_decision_ms_p50']:.3f} ms)"
    )
    print(
        f"  whole tick (read 64 cgroups, decide, rails, apply, audit): p50 {result['tick_ms_p50']:.2f} ms, "
        f"p99 {result['tick_ms_p99']:.2f} ms"
    )
    print(
        f"  reading 64 guests at once with a deadline: p50 {result['read_ms_p50']:.2f} ms "
        f"(one after another, no deadline: {result['serial_read_ms_p50']:.2f} ms, "
        f"{result['read_ms_p50'] / result['serial_read_ms_p50']:.2f}x)"
    )
    print(f"  resident memory: {result['rss_mb']:.0f} MB; torch loaded: {result['torch_loaded']}")


if __name__ == "__main__":
    main()
