"""The hostile-guest soak (issue 16): the runner against a guest that fights it, and its own restarts.

Two runners control the same simulated laptop (``desktop``, ``android``, ``dev``, VMs: their
figures are their own; the simulator backend, same scenario and seed) tick for tick, for
``WSRL_SOAK_S`` seconds of wall time (default 600): the *baseline* with every guest honest, the
*hostile* one with ``dev`` fighting it:

* it floods reports (a thread pushing about 2,000 wake-ups a second under ever new reasons);
* it lies about its pressure (PSI some avg10 99 %) in alternate minutes of simulated time;
* it sends maximum-size histograms (4,096 bins) with every reading;
* it lies about its sizes (usage 100x its provisioned size) now and then.

Every ``RESTART_EVERY`` ticks both runners are killed (nothing runs: no exit, no relax) and new
ones are started on the same guests, read through sources that cannot tell the target in force
(as QEMU's and crosvm's could not); the hostile one records a trace, flushed every ten ticks.

Checked, and written to ``out/soak/hostile.json`` and printed: the honest guests' targets against
the baseline's; the host's targets never add up to more than capacity - reserve; every tick within its
deadline (``decision_expiry_s``); no restart changes a target by itself; the runner's peak RSS and
CPU time; every trace row flushed before a kill reads back.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hostile import LyingBackend, VmmLikeBackend
from test_runner_support import make_config

from wsrl.histogram import Histogram
from wsrl.inputs.live import GuestReading
from wsrl.runner.backend_registry import build_backends
from wsrl.runner.daemon import Runner
from wsrl.trace.reader import TraceReader
from wsrl.units import GIB, PAGE_BYTES

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "out" / "soak" / "hostile.json"
RESTART_EVERY = 200
HONEST = (0, 1)
HOSTILE = 2


class HostileDev(LyingBackend):
    """``dev`` as an attacker runs it (see the module docstring)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.reads = 0
        edges = [int(1000 * 1.002**i) for i in range(4095)]
        self.big = Histogram(
            "dev", -1, edges, {"anon": np.full(4096, 1 << 20), "file": np.full(4096, 1 << 18)}
        )

    def read(self) -> GuestReading:
        reading = self.inner.read()
        self.reads += 1
        minute = (reading.time_ms // 60_000) % 2
        lies: dict[str, Any] = {"histogram": self.big, "self_reported": True}
        if minute:
            lies["psi_some_avg10"] = 99.0
        if self.reads % 37 == 0:
            lies["usage_bytes"] = 100 * 8 * GIB
        return GuestReading(**{**reading.__dict__, **lies})


def _flood(runner_ref: list[Runner], stop: threading.Event, sent: list[int]) -> None:
    i = 0
    while not stop.is_set():
        runner_ref[0].notify(f"agent_report {i}")
        i += 1
        if i % 200 == 0:
            time.sleep(0.1)
    sent[0] = i


def _rss_mib() -> float:
    """This process's resident memory now."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def _kill(runner: Runner) -> int:
    """What SIGKILL does to a runner: nothing more runs; the OS closes its files, ends its threads
    and releases its trace lock (done here by hand). Returns the trace rows it lost."""
    lost = 0
    if runner.recorder is not None:
        lost = runner.recorder.writer.buffered_rows
        runner.recorder.writer._release_lock()
    runner.audit.close()
    runner.calls.close()
    runner.metrics.close()
    return lost


SOAK_S = float(os.environ.get("WSRL_SOAK_S", "600"))


@pytest.mark.soak
@pytest.mark.timeout(int(SOAK_S) + 300)
def test_hostile_soak(tmp_path: Path) -> None:
    soak_s = SOAK_S
    # The laptop's guests are VMs: every figure they report is their own (``self_reported``).
    base_config = make_config(tmp_path / "baseline", record=False)
    base_guests = [LyingBackend(b) for b in build_backends(base_config)]
    baseline = Runner(base_config, backends=base_guests)
    baseline.start()

    config = make_config(tmp_path / "hostile", record=True)
    config.record.flush_rows = 30  # every ten ticks
    inner: list[Any] = [LyingBackend(b) for b in build_backends(config)]
    inner[HOSTILE] = HostileDev(inner[HOSTILE].inner)
    runner = Runner(config, backends=inner)
    runner.start()
    room = (config.host.capacity_gib - config.host.reserve_gib) * GIB
    rate = config.safety.max_shrink_frac_per_s * config.host.interval_s
    deadline_s = config.safety.decision_expiry_s

    ref, stop, sent = [runner], threading.Event(), [0]
    flooder = threading.Thread(target=_flood, args=(ref, stop, sent), daemon=True)
    flooder.start()
    cpu0 = time.process_time()
    rss_at_restart = [_rss_mib()]
    started = time.monotonic()
    ticks = restarts = 0
    honest_diff: list[float] = []
    honest_short: list[float] = []
    baseline_short: list[float] = []
    total_provisioned = sum(s.provisioned_bytes for s in runner.specs)
    over_room: list[float] = []
    durations: list[float] = []
    restart_moves: list[float] = []
    appended = flushed = lost = 0
    previous = [s.provisioned_bytes for s in runner.specs]
    try:
        while time.monotonic() - started < soak_s:
            base_outcome = baseline.tick()
            expected = base_outcome.target_bytes
            outcome = runner.tick()
            ticks += 1
            targets = outcome.target_bytes
            durations.append(outcome.record["duration_s"])
            appended += sum(g["recorded"] for g in outcome.record["guests"])
            for g in HONEST:
                spec = runner.specs[g]
                honest_diff.append((targets[g] - expected[g]) / spec.provisioned_bytes)
                # Given less than both what its policy asked and its share of the room, in either run?
                share = room * spec.provisioned_bytes / total_provisioned
                for shorts, run in ((honest_short, outcome), (baseline_short, base_outcome)):
                    asked = run.record["guests"][g]["decision"]["proposal_bytes"] or 0.0
                    owed = min(asked, share)
                    shorts.append(max(owed - run.target_bytes[g], 0.0) / spec.provisioned_bytes)
            over_room.append((sum(targets) - room) / GIB)  # never above capacity - reserve
            previous = targets
            if ticks % RESTART_EVERY == 0:
                lost += _kill(runner)
                flushed = appended - lost
                _kill(baseline)
                baseline = Runner(base_config, backends=[VmmLikeBackend(b) for b in base_guests])
                baseline.start()
                baseline.tick()
                runner = Runner(config, backends=[VmmLikeBackend(b) for b in inner])
                ref[0] = runner
                runner.start()
                restarts += 1
                first_outcome = runner.tick()
                first = first_outcome.target_bytes
                appended += sum(g["recorded"] for g in first_outcome.record["guests"])
                ticks += 1
                for g, spec in enumerate(runner.specs):
                    move = (first[g] - previous[g]) / spec.provisioned_bytes
                    restart_moves.append(move)
                    assert first[g] <= previous[g] + PAGE_BYTES or g == HOSTILE, (spec.name, move)
                    assert first[g] >= previous[g] - rate * spec.provisioned_bytes - PAGE_BYTES, spec.name
                previous = first
                rss_at_restart.append(_rss_mib())
    finally:
        stop.set()
        flooder.join(10)
        runner.shutdown(relax=False)
        baseline.shutdown(relax=False)
    wall_s = time.monotonic() - started
    cpu_s = time.process_time() - cpu0
    rows = TraceReader(config.resolve(config.record.dir)).summary().samples
    figures = {
        "soak_s": round(wall_s, 1),
        "ticks": ticks,
        "restarts": restarts,
        "wake_ups_sent": sent[0],
        "honest_target_vs_baseline_frac": {
            "min": round(min(honest_diff), 4),
            "max": round(max(honest_diff), 4),
            "mean_abs": round(float(np.mean(np.abs(honest_diff))), 4),
        },
        # An honest guest given less than min(its policy's proposal, its share of the room), as a
        # share of its provisioned size: with the attacker, and in the baseline (honest contention).
        "honest_short_of_asked_and_share_frac": {
            "hostile_max": round(max(honest_short), 4),
            "hostile_mean": round(float(np.mean(honest_short)), 5),
            "baseline_max": round(max(baseline_short), 4),
            "baseline_mean": round(float(np.mean(baseline_short)), 5),
        },
        "host_over_room_gib_max": round(max(over_room), 4),
        "tick_duration_s": {"max": max(durations), "p99": float(np.percentile(durations, 99))},
        "tick_deadline_s": deadline_s,
        "restart_first_tick_move_frac": {
            "min": round(min(restart_moves), 4) if restart_moves else None,
            "max": round(max(restart_moves), 4) if restart_moves else None,
        },
        # Both runners and the two simulated worlds; after the first period, the runners' own growth.
        "rss_mib": {
            "after_first_period": round(rss_at_restart[1] if len(rss_at_restart) > 1 else 0.0, 1),
            "end": round(rss_at_restart[-1], 1),
            "max": round(max(rss_at_restart), 1),
        },
        "cpu_s_per_tick": round(cpu_s / max(ticks, 1), 5),
        "trace_rows_appended": appended,
        "trace_rows_lost_in_kills": lost,
        "trace_rows_read_back": rows,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures, indent=1))
    assert ticks > RESTART_EVERY and restarts >= 1
    assert max(over_room) <= 0.0
    assert max(durations) < deadline_s
    assert rss_at_restart[-1] < rss_at_restart[1] + 256  # bounded: no growth with ticks or restarts
    assert flushed <= rows == appended - lost  # every row flushed before a kill reads back
