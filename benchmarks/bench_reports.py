"""What one guest report costs the host: a pathological report against an ordinary one.

Run with ``make bench`` or ``python benchmarks/bench_reports.py [--json] [--repeat N]``.

A guest's reports are untrusted input to a root daemon, so their cost must be bounded by their size
(docs/runner.md, "Guest reports"). Measured in this process, each as CPU time and peak traced
memory (``tracemalloc``, so the figures are of the work itself):

* ``lru_gen dump``: a framed dump as the reader takes it (parse, merge the memcgs onto the union
  of their generations' ages, re-bin onto the runner's edges). Ordinary: a real capture of a QEMU
  guest (tests/data/lru_gen, 7 memcgs). Pathological: 4,000 memcgs whose generations all have
  different ages (the report that took 38 s and 423 MiB when merging was quadratic).
* ``histogram record``: a guest agent's record as the reader takes it (decode, check, re-bin onto
  the runner's edges). Ordinary: 32 bins. Pathological: the most bins a record may have
  (:data:`wsrl.agent.bins.MAX_HISTOGRAM_BINS`).
* ``tick``: a tick's snapshot of 12 guests whose histograms arrived as such maximum-size records:
  already on the runner's edges (what the runner's backends deliver), against 12 ordinary ones.

Figures are ratios against the ordinary report measured in the same process.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from wsrl.agent.bins import MAX_HISTOGRAM_BINS  # noqa: E402
from wsrl.agent.wire import encode_histogram_record  # noqa: E402
from wsrl.backends.guest_stream import merge_lru_gen  # noqa: E402
from wsrl.backends.stream_decoder import HistogramRecord, parse_record  # noqa: E402
from wsrl.formats import parse_bytes  # noqa: E402
from wsrl.histogram import DEFAULT_EDGES_MS, Histogram  # noqa: E402
from wsrl.inputs.live import GuestReading, GuestSpec, snapshot_from_readings  # noqa: E402
from wsrl.units import GIB  # noqa: E402

ORDINARY_DUMP = REPO / "tests" / "data" / "lru_gen" / "real-lru_gen-1.txt"
GUESTS = 12


def memcg_dump(memcgs: int, seed: int = 1) -> bytes:
    """An lru_gen dump of ``memcgs`` memcgs, 4 generations each, every age different."""
    rng = random.Random(seed)
    lines = []
    for index in range(memcgs):
        lines += [f"memcg {index + 1} /c{index}", " node 0"]
        base = rng.randrange(1_000, 10_000_000)
        for seq, age in enumerate(sorted(rng.sample(range(base, base + 5_000_000), 4), reverse=True)):
            lines.append(f" {seq + 10} {age} {rng.randrange(10_000)} {rng.randrange(10_000)}")
    return ("\n".join(lines) + "\n").encode()


def record(bins: int, seed: int = 2) -> bytes:
    """A histogram record of ``bins`` bins, as a guest agent writes it."""
    rng = random.Random(seed)
    edges = sorted(rng.sample(range(1, 4_000_000), bins - 1))
    rows = {t: [rng.randrange(1 << 30) for _ in range(bins)] for t in ("anon", "file")}
    return encode_histogram_record(Histogram("g", -1, edges, rows), seq=1, time_ms=1, source="lru_gen")


def take_dump(data: bytes) -> Histogram:
    return merge_lru_gen(parse_bytes("lru_gen", data), None, "vm").rebin(DEFAULT_EDGES_MS)


def take_record(line: bytes) -> Histogram:
    parsed = parse_record(line)
    assert isinstance(parsed, HistogramRecord)
    return parsed.histogram("vm").rebin(DEFAULT_EDGES_MS)


def tick(readings: list[GuestReading | None]) -> object:
    specs = [GuestSpec(r.name if r else "?", 4 * GIB, GIB) for r in readings]
    return snapshot_from_readings(
        readings, specs, host_name="h", capacity_bytes=64 * GIB, reserve_bytes=0, interval_s=10, time_ms=1
    )


def measure(work: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """(best CPU ms of ``repeat`` runs, peak traced MiB of one run)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        work()
        best = min(best, (time.process_time() - started) * 1000.0)
    tracemalloc.start()
    work()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return best, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ordinary_dump, pathological_dump = ORDINARY_DUMP.read_bytes(), memcg_dump(4000)
    ordinary_record, pathological_record = record(32), record(MAX_HISTOGRAM_BINS)
    readings = {
        kind: [GuestReading(f"g{g}", 1, 4.0 * GIB, histogram=take_record(line)) for g in range(GUESTS)]
        for kind, line in (("ordinary", ordinary_record), ("pathological", pathological_record))
    }
    cases: dict[str, tuple[Callable[[], Any], Callable[[], Any], float, str]] = {
        "lru_gen dump": (
            lambda: take_dump(ordinary_dump),
            lambda: take_dump(pathological_dump),
            len(pathological_dump) / len(ordinary_dump),
            f"{len(ordinary_dump) / 1024:.1f} KiB, 7 memcgs vs {len(pathological_dump) / 1024:.0f} KiB, "
            "4,000 memcgs",
        ),
        "histogram record": (
            lambda: take_record(ordinary_record),
            lambda: take_record(pathological_record),
            len(pathological_record) / len(ordinary_record),
            f"32 vs {MAX_HISTOGRAM_BINS} bins, {len(pathological_record) / 1024:.0f} KiB",
        ),
        "tick snapshot": (
            lambda: tick(readings["ordinary"]),
            lambda: tick(readings["pathological"]),
            1.0,
            f"{GUESTS} guests whose histograms came in 32- vs {MAX_HISTOGRAM_BINS}-bin records, on the "
            "runner's edges",
        ),
    }
    results: dict[str, dict[str, float]] = {}
    for name, (ordinary, pathological, size_ratio, what) in cases.items():
        base_ms, base_mib = measure(ordinary, args.repeat)
        worst_ms, worst_mib = measure(pathological, args.repeat)
        cpu_ratio = worst_ms / max(base_ms, 1e-3)
        results[name] = {
            "ordinary_ms": round(base_ms, 3),
            "pathological_ms": round(worst_ms, 3),
            "size_ratio": round(size_ratio, 1),
            "cpu_ratio": round(cpu_ratio, 1),
            "cpu_ratio_per_byte": round(cpu_ratio / size_ratio, 2),
            "ordinary_peak_mib": round(base_mib, 3),
            "pathological_peak_mib": round(worst_mib, 3),
        }
        if not args.json:
            print(f"{name} ({what}):")
            print(
                f"  CPU {worst_ms:.1f} ms vs {base_ms:.2f} ms: {cpu_ratio:.1f}x for {size_ratio:.1f}x the "
                f"bytes ({cpu_ratio / size_ratio:.2f}x per byte); peak memory {worst_mib:.2f} MiB vs "
                f"{base_mib:.3f} MiB"
            )
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
