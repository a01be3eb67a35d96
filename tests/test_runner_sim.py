"""The runner end to end on the simulator backend: rails, breaker, staleness, modes, audit, metrics, trace.

Every test runs the real :class:`~wsrl.runner.daemon.Runner` on :class:`~wsrl.backends.sim.SimBackend`
guests and checks what reached the simulated actuators (the world's pending targets) against the
audit log. Faults are injected with the small wrapping backends of ``test_runner_support``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
from test_runner_support import (
    LEAK_SCENARIO,
    BrokenBackend,
    FreezableBackend,
    SlowBackend,
    SlowPolicy,
    audit_records,
    leak_config,
    make_config,
)

from wsrl.backends.base import BackendError
from wsrl.backends.sim import SimBackend, SimWorld
from wsrl.inputs.live import GuestReading
from wsrl.policies import make_policy
from wsrl.runner.backend_registry import build_backends
from wsrl.runner.config import RunnerConfig
from wsrl.runner.daemon import Runner
from wsrl.trace.reader import TraceReader
from wsrl.trace.record import GuestSample
from wsrl.trace.validate import validate_trace
from wsrl.units import GIB, PAGE_BYTES


def _world(runner: Runner) -> SimWorld:
    backend = runner.backends[0]
    while not isinstance(backend, SimBackend):
        backend = backend.inner  # type: ignore[attr-defined]
    return backend.world


def _pending(runner: Runner) -> dict[str, float]:
    """The targets the simulated actuators hold now (what the runner applied last)."""
    return {name: g["pending_target_bytes"] for name, g in _world(runner).state()["guests"].items()}


def _by_name(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["name"]: g for g in record["guests"]}


def _wrapped(config: RunnerConfig, wrapper: type, name: str) -> tuple[list[Any], Any]:
    backends = build_backends(config)
    index = [b.name for b in backends].index(name)
    backends[index] = wrapper(backends[index])
    return backends, backends[index]


def test_aggressive_policy_never_crosses_floor_and_shrinks_at_bounded_rate(tmp_path: Path) -> None:
    # wmo reclaims everything idle for 10 s; the breaker is off so that it acts all along (1 h).
    config = make_config(tmp_path, breaker={"enabled": False}, record=False)
    runner = Runner(config)
    runner.start()
    specs = {s.name: s for s in runner.specs}
    room = (config.host.capacity_gib - config.host.reserve_gib) * GIB
    ticks = 360
    grew = 0
    for _ in range(ticks):
        before = dict(zip([s.name for s in runner.specs], runner.state.current[0], strict=True))
        outcome = runner.tick()
        pending = _pending(runner)
        for name, guest in _by_name(outcome.record).items():
            spec = specs[name]
            assert pending[name] >= spec.floor_bytes  # never below the floor, on the actuator itself
            assert guest["target_bytes"] >= spec.floor_bytes
            drop = before[name] - guest["target_bytes"]
            if sum(before.values()) <= room:  # (the first tick brings 18 GiB promised into 14 at once)
                assert drop <= 0.05 * spec.provisioned_bytes + PAGE_BYTES  # shrink bounded per interval
            decided = guest["decision"]["allotted_bytes"]
            rails = [r["rail"] for r in guest["rails"]]
            if decided > before[name] + PAGE_BYTES and "host_reserve" not in rails:
                grew += 1  # growth is immediate: the whole way in one interval
                assert guest["target_bytes"] == math.ceil(decided / PAGE_BYTES) * PAGE_BYTES
                assert guest["applied"]
            for rail in guest["rails"]:
                assert rail["reason"], rail
    runner.shutdown()
    assert grew > 0
    records = audit_records(tmp_path)
    assert [r["tick"] for r in records] == list(range(1, ticks + 1))  # one parseable record per tick
    assert len(audit_records(tmp_path, "start")) == 1 and len(audit_records(tmp_path, "exit")) == 1
    shrinks = [r for rec in records for g in rec["guests"] for r in g["rails"] if r["rail"] == "rate"]
    assert shrinks and all("shrink limited to 0.005 of provisioned per s" in r["reason"] for r in shrinks)
    floors = [g for rec in records for g in rec["guests"] if "raised to floor" in g["decision"]["allocator"]]
    assert floors, "wmo never asked for less than a floor: the floor was not exercised"


def test_breaker_trips_on_oom_deflates_and_falls_back_for_the_cooldown(tmp_path: Path) -> None:
    config = leak_config(tmp_path)
    runner = Runner(config)
    runner.start()
    outcomes = [runner.tick() for _ in range(19)]
    runner.shutdown()
    records = [o.record["guests"][0] for o in outcomes]
    times = [o.time_ms for o in outcomes]
    trips = [i for i, g in enumerate(records) if g["breaker"]["tripped"]]
    assert trips, "the swapless leaking guest was never OOM-killed"
    first = trips[0]
    trip = records[first]
    assert trip["breaker"]["reason"] == "OOM kill"
    assert trip["target_bytes"] == 8 * GIB and trip["applied"]  # deflated to provisioned at once
    assert trip["source"] == "static"
    cooldown_ms = 60_000
    open_ticks = [i for i in range(first + 1, len(records)) if times[i] < times[first] + cooldown_ms]
    assert open_ticks
    for i in open_ticks:  # on the fallback for the cooldown, and never shrunk
        assert records[i]["breaker"]["open"] and records[i]["source"] == "static"
        assert records[i]["target_bytes"] == 8 * GIB
    back = open_ticks[-1] + 1
    assert records[back]["breaker"]["closed"] and records[back]["source"] == "wmo"
    assert "cooldown over" in records[back]["breaker"]["reason"]
    assert records[back]["target_bytes"] < 8 * GIB  # the configured policy shrinks again (rate-bounded)


def test_stale_input_holds_then_falls_back_then_recovers(tmp_path: Path) -> None:
    config = make_config(tmp_path, safety={"hold_intervals_before_fallback": 2}, breaker={"enabled": False})
    backends, frozen = _wrapped(config, FreezableBackend, "android")
    runner = Runner(config, backends=backends)
    runner.start()
    for _ in range(6):
        runner.tick()
    frozen.frozen = True
    held_at = runner.state.current[0, 1]
    stuck = [_by_name(runner.tick().record)["android"] for _ in range(4)]
    frozen.frozen = False
    recovered = _by_name(runner.tick().record)["android"]
    runner.shutdown()
    assert [g["state"] for g in stuck] == ["hold", "hold", "fallback", "fallback"]
    for g in stuck[:2]:
        assert "did not advance" in g["input"]
        assert not g["applied"] and g["not_applied"].startswith("input not trusted")
        assert g["target_bytes"] == math.ceil(held_at / PAGE_BYTES) * PAGE_BYTES
        assert g["rails"][0]["rail"] == "hold"
    for g in stuck[2:]:
        assert g["source"] == "static"  # the fallback decides for the stuck guest
    assert recovered["state"] == "ok" and recovered["source"] == "wmo"
    # The stuck source's repeated samples were not recorded twice; the trace stays valid.
    assert [g["recorded"] for g in stuck] == [False] * 4
    report = validate_trace(tmp_path / "trace")
    assert report.ok, report.problems


def test_unreadable_guest_is_masked_and_the_others_are_served(tmp_path: Path) -> None:
    config = make_config(tmp_path, safety={"hold_intervals_before_fallback": 1}, breaker={"enabled": False})
    backends, broken = _wrapped(config, BrokenBackend, "dev")
    runner = Runner(config, backends=backends)
    runner.start()
    runner.tick()
    broken.broken = True
    first, second = (_by_name(runner.tick().record) for _ in range(2))
    runner.shutdown()
    dev = first["dev"]
    assert dev["state"] == "hold" and dev["inputs"] is None
    assert dev["errors"] == ["read: guest dev: connection refused"]
    assert first["desktop"]["applied"] and first["android"]["applied"]  # the others are served
    assert second["dev"]["state"] == "fallback" and second["dev"]["source"] == "relax (no usable input)"
    assert second["dev"]["target_bytes"] >= dev["target_bytes"]  # blind: relaxed towards provisioned


def test_expired_decisions_are_not_applied(tmp_path: Path) -> None:
    config = make_config(tmp_path, safety={"decision_expiry_s": 0.1, "call_timeout_s": 0.05}, record=False)
    slow = SlowPolicy(make_policy("wmo"))
    runner = Runner(config, policy=slow)
    runner.start()
    runner.tick()
    before = _pending(runner)
    slow.delay_s = 0.25  # the readings are older than decision_expiry_s when the decision is ready
    expired = runner.tick()
    assert _pending(runner) == before
    assert set(expired.outcomes) == {"expired"}
    for guest in expired.record["guests"]:
        assert not guest["applied"] and "decision expired" in guest["not_applied"]
    slow.delay_s = 0.0
    fresh = runner.tick()
    runner.shutdown()
    assert "applied" in fresh.outcomes


def test_stalled_source_is_skipped_and_the_others_are_served(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        safety={"call_timeout_s": 0.2, "hold_intervals_before_fallback": 1},
        breaker={"enabled": False},
        record=False,
    )
    backends, stalled = _wrapped(config, SlowBackend, "android")
    runner = Runner(config, backends=backends)
    runner.start()
    runner.tick()
    stalled.delay_s = 1.5  # a source that blocks (a stopped VMM, a hung file system) for 1.5 s
    started = time.monotonic()
    first = runner.tick()
    took_s = time.monotonic() - started
    second = runner.tick()  # the worker is still blocked: not tried again, no wait
    stalled.delay_s = 0.0
    time.sleep(1.6)  # the blocked read returns; its late result is dropped
    recovered = runner.tick()
    runner.shutdown()
    assert took_s < 1.0  # one stalled guest costs a tick at most call_timeout_s
    android = _by_name(first.record)["android"]
    assert android["errors"] == ["read: guest android: read did not return within 0.2 s (a stalled source)"]
    assert android["state"] == "hold" and not android["applied"]
    for name in ("desktop", "dev"):
        assert _by_name(first.record)[name]["state"] == "ok"
        assert _by_name(second.record)[name]["state"] == "ok"
    assert "still blocked in read" in _by_name(second.record)["android"]["errors"][0]
    assert _by_name(recovered.record)["android"]["state"] == "ok"
    assert not _by_name(recovered.record)["android"]["errors"]


def test_oom_memory_keeps_a_guest_above_the_size_it_was_killed_at(tmp_path: Path) -> None:
    config = leak_config(tmp_path, safety={"max_shrink_frac_per_s": 0.05, "floor_gib": 0.25})
    runner = Runner(config)
    runner.start()
    outcomes = [runner.tick() for _ in range(30)]
    runner.shutdown()
    records = [o.record["guests"][0] for o in outcomes]
    trips = [i for i, g in enumerate(records) if g["breaker"]["tripped"]]
    assert trips, "the swapless leaking guest was never OOM-killed"
    killed_at = records[trips[0] - 1]["target_bytes"]  # the target in force when it was killed
    bar = killed_at + 0.05 * 8 * GIB
    after_cooldown = [g for g in records[trips[0] + 1 :] if not g["breaker"]["open"]]
    assert after_cooldown, "the cooldown never ended"
    for guest in after_cooldown:
        assert guest["target_bytes"] >= bar - PAGE_BYTES  # wmo asks for less; the rail refuses
    # The allocator grants the remembered size first (a claim); the rail is there for what it missed.
    held = [r["reason"] for g in after_cooldown for r in g["rails"] if r["rail"] == "oom_memory"]
    held += [r for g in after_cooldown for r in g["decision"]["allocator"] if "claim" in r]
    assert held and ("OOM-killed below" in held[0] or "OOM memory" in held[0])


def test_dry_run_applies_nothing(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    runner = Runner(config, mode="dry-run")
    runner.start()
    provisioned = {s.name: s.provisioned_bytes for s in runner.specs}
    outcomes = [runner.tick() for _ in range(20)]
    assert _pending(runner) == provisioned
    model = _world(runner).sim.model
    assert model.target_bytes[0].tolist() == list(provisioned.values())
    exit_record = runner.shutdown()
    assert {o for t in outcomes for o in t.outcomes} == {"dry_run"}
    assert any(g["target_bytes"] < provisioned[g["name"]] for t in outcomes for g in t.record["guests"])
    assert all(g["skipped"].startswith("dry-run") for g in exit_record["guests"])
    table = TraceReader(tmp_path / "trace").read_table(["action_target_bytes"])
    assert table.num_rows == 60 and table.column("action_target_bytes").null_count == 60


def test_shadow_mode_fallback_acts_configured_policy_is_logged(tmp_path: Path) -> None:
    config = make_config(tmp_path, breaker={"enabled": False})
    runner = Runner(config, mode="shadow")
    runner.start()
    ticks = [runner.tick() for _ in range(12)]
    runner.shutdown()
    assert runner.actor.policy.name == "static"
    differs = 0
    for outcome in ticks:
        assert outcome.record["actor"] == "static" and outcome.record["policy"] == "wmo"
        for guest in outcome.record["guests"]:
            assert guest["source"] == "static"
            shadow = guest["shadow"]
            assert shadow["policy"] == "wmo" and shadow["decision"]["proposal_bytes"] is not None
            differs += shadow["decision"]["allotted_bytes"] != guest["decision"]["allotted_bytes"]
    assert differs > 0  # wmo's decisions were computed and logged next to static's
    # What the actuators hold is static's decision (after the rails), not wmo's.
    last = _by_name(ticks[-1].record)
    pending = _pending(runner)
    for name, guest in last.items():
        if guest["applied"]:
            assert pending[name] == guest["target_bytes"]
    table = TraceReader(tmp_path / "trace").read_table(["action_policy"])
    assert set(pc.unique(table.column("action_policy")).to_pylist()) <= {"static", None}


def test_shadow_actor_can_be_named(tmp_path: Path) -> None:
    runner = Runner(make_config(tmp_path, record=False), mode="shadow", shadow_actor="vpa")
    runner.start()
    outcome = runner.tick()
    runner.shutdown()
    assert {g["source"] for g in outcome.record["guests"]} == {"vpa"}
    assert outcome.record["guests"][0]["shadow"]["policy"] == "wmo"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_prometheus_endpoint_serves_metrics_on_loopback(tmp_path: Path) -> None:
    port = _free_port()
    runner = Runner(make_config(tmp_path, metrics_port=port, record=False))
    try:
        assert runner.metrics.server.server_address[0] == "127.0.0.1"
        runner.start()
        for _ in range(8):
            runner.tick()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        runner.shutdown()
    assert re.search(r'^wsrl_runner_target_bytes\{guest="desktop"\} [0-9.e+]+$', text, re.M)
    assert re.search(r'^wsrl_runner_usage_bytes\{guest="dev"\} [0-9.e+]+$', text, re.M)
    assert re.search(r'^wsrl_runner_working_set_bytes\{guest="android"\} ', text, re.M)
    assert re.search(r"^wsrl_runner_ticks_total 8\.0$", text, re.M)
    assert re.search(r'^wsrl_runner_decisions_total\{guest="desktop",outcome="applied"\} ', text, re.M)
    assert re.search(r'^wsrl_runner_rails_total\{guest="desktop",rail="rate"\} ', text, re.M)
    assert re.search(r'^wsrl_runner_breaker_open\{guest="dev"\} ', text, re.M)
    assert "wsrl_runner_tick_duration_seconds_bucket" in text
    assert 'wsrl_runner_info{fallback="static",host="sim-host",mode="normal",policy="wmo"} 1.0' in text
    with pytest.raises(OSError):  # closed with the runner
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_recorded_trace_validates_and_reads_back(tmp_path: Path) -> None:
    runner = Runner(make_config(tmp_path))
    runner.start()
    outcomes = [runner.tick() for _ in range(15)]
    runner.shutdown()
    report = validate_trace(tmp_path / "trace")
    assert report.ok, report.problems
    reader = TraceReader(tmp_path / "trace")
    assert reader.manifest["source"] == "runner"
    table = reader.read_table()
    assert table.num_rows == 15 * 3
    rows = table.to_pylist()
    audited = {(o.time_ms, g["name"]): g for o in outcomes for g in o.record["guests"]}
    for row in rows:
        guest = audited[(row["time_ms"], row["guest"])]
        assert row["action_target_bytes"] == guest["applied_bytes"]
        assert row["action_policy"] == (guest["source"] if guest["applied"] else None)
        assert row["usage_bytes"] == guest["inputs"]["usage_bytes"]
    assert {r["action_policy"] for r in rows} >= {"wmo"}
    sample = GuestSample.from_row(rows[-1])
    assert sample.histogram is not None and sample.histogram.total_bytes() > 0
    assert sample.provisioned_bytes in (6 * GIB, 4 * GIB, 8 * GIB)


def test_run_loop_wakes_early_on_notify_debounced(tmp_path: Path) -> None:
    config = make_config(tmp_path, host={"interval_s": 60, "min_tick_gap_s": 0.2}, record=False)
    runner = Runner(config)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while runner.ticks < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        for _ in range(5):  # a burst of pushed reports makes one early tick, not five
            runner.notify("balloon_change")
        while runner.ticks < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)
    finally:
        stop.set()
        runner.request_stop()
        thread.join(10)
    runner.shutdown()
    assert not thread.is_alive()
    records = audit_records(tmp_path)
    assert len(records) == 2  # the interval is 60 s: the second tick came from the push
    assert records[1]["woken_by"] == {"balloon_change": 5}  # counted, not listed one by one


@pytest.mark.parametrize(
    ("on_exit", "expected"), [("relax", "provisioned"), ("hold", "current"), ("unlimited", "provisioned")]
)
def test_exit_leaves_guests_as_configured(tmp_path: Path, on_exit: str, expected: str) -> None:
    runner = Runner(make_config(tmp_path, safety={"on_exit": on_exit}, record=False))
    runner.start()
    for _ in range(5):
        runner.tick()
    current = {s.name: runner.state.current[0, g] for g, s in enumerate(runner.specs)}
    assert any(current[s.name] < s.provisioned_bytes for s in runner.specs)
    record = runner.shutdown()
    pending = _pending(runner)
    for spec in runner.specs:
        want = spec.provisioned_bytes if expected == "provisioned" else current[spec.name]
        assert pending[spec.name] == pytest.approx(want)
    assert record["on_exit"] == on_exit and all(g["error"] is None for g in record["guests"])


def test_sim_world_clocks_and_pushed_oom(tmp_path: Path) -> None:
    wall = [1_000.0]
    world = SimWorld("laptop", clock="real", wall_clock=lambda: wall[0])
    first = world.read("desktop")
    assert world.sim.steps == 0 and first.time_ms == 1_000_000
    wall[0] += 25.0  # 25 s of wall time: two whole 10 s steps
    assert world.read("desktop").time_ms == 1_020_000 and world.sim.steps == 2
    assert world.read("android").time_ms == 1_020_000  # no time passed: no step
    ticking = SimWorld("laptop", seconds_per_tick=30)
    ticking.read("desktop")
    ticking.read("dev")
    assert ticking.sim.steps == 0  # the first tick reads the primed state
    ticking.read("desktop")  # the next tick starts: 30 s = three steps
    assert ticking.sim.steps == 3
    with pytest.raises(BackendError, match=r"no guest 'laptop-vm'.*desktop, android, dev"):
        ticking.index_of("laptop-vm")
    (tmp_path / "leak.toml").write_text(LEAK_SCENARIO)
    leak = SimWorld(tmp_path / "leak.toml")
    pushed: list[str] = []
    backend = SimBackend("svc", leak, guest="leaky")
    backend.start(pushed.append)
    backend.read()
    backend.apply(64 * 2**20)  # far below its anon: the next step OOM-kills it
    reading = backend.read()
    assert reading.name == "svc" and reading.oom_kills_total == 1 and pushed == ["oom"]


def test_audit_log_is_appended_across_restarts(tmp_path: Path) -> None:
    config = make_config(tmp_path, record=False)
    for _ in range(2):
        runner = Runner(config)
        runner.start()
        runner.tick()
        runner.shutdown()
    kinds = [r["kind"] for r in map(json.loads, (tmp_path / "audit.jsonl").read_text().splitlines())]
    assert kinds == ["start", "tick", "exit"] * 2
    assert (tmp_path / "audit.jsonl").stat().st_mode & 0o777 == 0o640


class _ReadAt(FreezableBackend):
    """Wraps a backend: its readings carry the time of the test's clock (ticks woken back to back)."""

    def __init__(self, inner: Any, wall: list[float]) -> None:
        super().__init__(inner)
        self.wall = wall

    def read(self) -> GuestReading:
        return dataclasses.replace(self.inner.read(), time_ms=int(self.wall[0] * 1000))


def test_a_flood_of_early_ticks_shrinks_no_faster_than_the_rate_per_second(tmp_path: Path) -> None:
    """A guest waking the runner 10 times a second (a report flood) cannot speed up any guest's shrink:
    the rate rail allows a share of provisioned per second of control time, not per tick."""
    # wmo squeezes every tick; a host that holds every promise (a start over capacity - reserve
    # would be cut at once, the rate rail yielding to capacity).
    config = make_config(tmp_path, breaker={"enabled": False}, record=False, host={"capacity_gib": 20})
    wall = [2_000_000_000.0]
    backends = [_ReadAt(b, wall) for b in build_backends(config)]
    runner = Runner(config, backends=backends, wall_clock=lambda: wall[0])
    runner.start()
    ticks, gap_s = 100, 0.1
    for _ in range(ticks):
        wall[0] += gap_s
        runner.tick()
    current = runner.state.current[0]
    runner.shutdown(relax=False)
    rate = config.safety.max_shrink_frac_per_s
    # The first tick may use one interval's allowance (no previous tick to measure from).
    allowed_s = config.host.interval_s + (ticks - 1) * gap_s
    for g, spec in enumerate(runner.specs):
        drop = spec.provisioned_bytes - current[g]
        assert drop <= rate * allowed_s * spec.provisioned_bytes + PAGE_BYTES, (spec.name, drop)
    # The rail, not the policy, is what held them: some shrank close to the allowance.
    drops = [(s.provisioned_bytes - current[g]) / s.provisioned_bytes for g, s in enumerate(runner.specs)]
    assert max(drops) > 0.8 * rate * allowed_s, drops
