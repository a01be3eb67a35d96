"""The runner: every interval, read the guests, decide through the shared pipeline, pass the rails, apply.

One :meth:`Runner.tick`:

1. read every guest (a guest that fails is masked out; its error is audited; the others are served);
2. sort the readings (:func:`~wsrl.runner.safety.check_inputs`): missing, stale or malformed inputs
   put a guest on hold, then on the fallback policy (:class:`~wsrl.runner.safety.InputHealth`);
3. build one :class:`~wsrl.pipeline.snapshot.HostSnapshot` with
   :func:`~wsrl.backends.base.snapshot_from_readings` (usable readings only) and run the configured
   policy, and the fallback policy beside it (so it is warm when it takes over), each through
   :class:`~wsrl.pipeline.loop.ControlLoop` (policy -> allocator -> guard), as simulation does;
4. per guest pick the acting decision (the configured policy; the fallback where inputs went bad,
   the circuit breaker is open or the policy failed; in shadow mode the shadow actor);
5. the rails of :mod:`~wsrl.runner.safety`, in order: hold, breaker deflate, OOM memory, rate,
   host reserve, floor/ceiling;
6. drop the whole decision if it expired (inputs older than ``decision_expiry_s``), else apply
   per guest (never in dry-run mode), then audit, record and export metrics.

Every backend call (start, read, apply, relax) runs on a shared worker with a deadline
(:mod:`~wsrl.runner.deadline`): a source that blocks is skipped, the others are served. An exported
policy whose files change is loaded again, or refused with the running one kept
(:mod:`~wsrl.runner.policy_reload`).

:meth:`Runner.run` ticks every ``interval_s`` and earlier when a backend pushes a report
(``notify``), never closer than ``min_tick_gap_s`` to the previous tick. :meth:`Runner.shutdown`
leaves every guest as ``safety.on_exit`` says. A crash skips that: what the guests keep is what
the last ticks applied, and every applied value passed the rails (``[floor, provisioned]``, rate
bounded), so the state a crash leaves is bounded by construction; systemd restarts the runner.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from wsrl.backends.base import GuestBackend, GuestReading, snapshot_from_readings
from wsrl.errors import WsrlError
from wsrl.pipeline.allocator import Allocator
from wsrl.pipeline.loop import ControlLoop, Decision
from wsrl.pipeline.policy import Policy
from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.runner import safety
from wsrl.runner.audit import AuditLog, iso_time
from wsrl.runner.config import SIM_ONLY_POLICIES, RunnerConfig
from wsrl.runner.deadline import GuestCalls
from wsrl.runner.metrics import RunnerMetrics
from wsrl.runner.policy_reload import PolicyReloader, reloader_for
from wsrl.runner.recorder import TraceRecorder
from wsrl.runner.report import exit_record, guest_record, start_record
from wsrl.units import GIB, PAGE_BYTES

Mode = Literal["normal", "dry-run", "shadow"]
MODES: tuple[str, ...] = ("normal", "dry-run", "shadow")
POLL_S = 0.25
"""Longest sleep between checks of the stop event in :meth:`Runner.run`."""


def load_policy(config: RunnerConfig) -> Policy:
    """The configured policy: a reference policy by name (with ``params``) or an exported directory."""
    from wsrl.policies import POLICIES, make_policy

    ref = config.policy.name_or_path
    if ref in POLICIES:
        return make_policy(ref, **config.policy.params)
    from wsrl.policies.learned import load_learned_policy

    return load_learned_policy(config.resolve(ref))


@dataclass
class TickOutcome:
    """What one tick did (``[guests]`` lists in config order)."""

    tick: int
    time_ms: int
    target_bytes: list[int]
    outcomes: list[str]
    record: dict[str, Any]


class Runner:
    """Runs one host (see the module docstring).

    Args:
        config: the validated ``host.toml``.
        backends: one backend per ``[[guest]]`` in config order (default: built from the config).
        mode: ``normal``, ``dry-run`` (never applies) or ``shadow`` (the shadow actor applies; the
            configured policy is computed and audited beside it).
        shadow_actor: the reference policy acting in shadow mode (default ``policy.shadow_actor``,
            else ``policy.fallback``).
        policy: a policy object to run instead of the configured one (an agent acting through
            :class:`wsrl.rl.live_env.LiveHostEnv`); the fallback and every rail stay as configured.
        wall_clock: seconds since the epoch (staleness of readings).
        monotonic: a monotonic clock in seconds (intervals, decision expiry).

    Raises:
        WsrlError: a backend, the policy, the audit log, the trace or the metrics endpoint cannot
            be set up.

    """

    def __init__(
        self,
        config: RunnerConfig,
        *,
        backends: Sequence[GuestBackend] | None = None,
        mode: Mode = "normal",
        shadow_actor: str | None = None,
        policy: Policy | None = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        from wsrl.policies import POLICIES, make_policy

        if mode not in MODES:
            raise WsrlError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.config = config
        self.mode: Mode = mode
        self.specs = config.guest_specs()
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        n = len(self.specs)
        self.provisioned = np.array([[s.provisioned_bytes for s in self.specs]])
        self.floor = np.array([[s.floor_bytes for s in self.specs]])
        self.current = self.provisioned.copy()
        """Each guest's target in force, the rails' starting point: from its last good reading or the
        last successful apply (until one is known, the provisioned size, so the shrink rail starts
        from there; an unlimited group counts as provisioned too)."""
        self.known_target = np.full((1, n), np.nan)
        """What the actuator is known to hold (NaN: unknown or unlimited), to skip needless applies."""
        self._closables: list[Any] = []
        allocator = Allocator(mode=config.policy.allocator)
        self.reloader: PolicyReloader | None = None
        if policy is None and config.policy.reload and config.policy.name_or_path not in POLICIES:
            # Watch before loading: a change while the first load runs is then loaded again.
            self.reloader = reloader_for(config.resolve(config.policy.name_or_path))
        self.primary = ControlLoop(policy if policy is not None else load_policy(config), allocator=allocator)
        self.fallback = ControlLoop(
            make_policy(config.policy.fallback, **config.policy.fallback_params), allocator=allocator
        )
        self.actor = self.primary
        if mode == "shadow":
            actor_name = shadow_actor or config.policy.shadow_actor or config.policy.fallback
            if actor_name in SIM_ONLY_POLICIES:
                raise WsrlError(f"shadow actor {actor_name!r} reads the simulator's future: not for a host")
            self.actor = (
                self.fallback
                if actor_name == config.policy.fallback
                else ControlLoop(make_policy(actor_name), allocator=allocator)
            )
        self._to_reset = {id(self.primary), id(self.fallback), id(self.actor)}
        """Loops whose policy has not seen a snapshot yet (reset before their first step)."""
        self.backends = list(backends) if backends is not None else self._build_backends()
        self._closables.extend(self.backends)
        self.calls = GuestCalls([b.name for b in self.backends], monotonic=monotonic)
        self._closables.append(self.calls)
        if [b.name for b in self.backends] != [s.name for s in self.specs]:
            self.close()
            raise WsrlError(
                f"backends {[b.name for b in self.backends]} do not match the config's guests "
                f"{[s.name for s in self.specs]}"
            )
        safety_cfg = config.safety
        self.health = safety.InputHealth(n, safety_cfg.hold_intervals_before_fallback)
        breaker = safety_cfg.breaker
        self.breaker = safety.CircuitBreaker(
            n,
            on_oom=breaker.on_oom,
            psi_some_avg10_pct=breaker.psi_some_avg10_pct if breaker.on_psi else None,
            refault_frac_per_min=breaker.refault_frac_per_min if breaker.on_refaults else None,
            cooldown_s=breaker.cooldown_s,
            enabled=breaker.enabled,
        )
        self.oom_memory = safety.OomMemory(
            n, memory_s=safety_cfg.oom_memory_s, margin_frac=safety_cfg.oom_margin_frac
        )
        self._clock_offset_s: float | None = None
        simulated = config.sim is not None and config.sim.clock == "simulated"
        self._clock_skew_s = math.inf if simulated else safety_cfg.clock_skew_s
        """A simulated clock runs ahead of the host's by design: only real clocks are held to the skew."""
        self._last_time_ms = np.full((1, n), np.nan)
        self._last_snapshot_ms: int | None = None
        self._started = False
        self._closed = False
        self.ticks = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._wake_lock = threading.Lock()
        self._wake_reasons: list[str] = []
        try:
            self.audit = AuditLog(config.resolve(config.audit.path), fsync=config.audit.fsync)
            self._closables.append(self.audit)
            self.metrics = RunnerMetrics(
                config.host.name,
                [s.name for s in self.specs],
                bind=config.metrics.bind,
                port=config.metrics.port,
                labels={
                    "policy": self.primary.policy.name,
                    "fallback": self.fallback.policy.name,
                    "mode": mode,
                },
            )
            self._closables.append(self.metrics)
            self.recorder: TraceRecorder | None = None
            if config.record.dir is not None:
                self.recorder = TraceRecorder(
                    config.resolve(config.record.dir),
                    host=config.host.name,
                    specs=self.specs,
                    meta={"config": config.label, "policy": self.primary.policy.name, "mode": mode},
                    flush_rows=config.record.flush_rows,
                    flush_interval_s=config.record.flush_interval_s,
                )
                self._closables.append(self.recorder)
        except BaseException:
            self.close()
            raise

    def _build_backends(self) -> list[GuestBackend]:
        from wsrl.backends.registry import build_backends

        return build_backends(self.config)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start every backend (a failure is audited; that guest's reads will fail and be held)."""
        if self._started:
            return
        self._started = True
        errors: dict[str, str] = {}
        timeout_s = self.config.safety.call_timeout_s
        for g, backend in enumerate(self.backends):
            try:
                self.calls.call(g, "start", backend.start, self.notify, timeout_s=timeout_s)
            except Exception as exc:  # a backend bug must not stop the other guests
                errors[backend.name] = _error_text(exc)
                self.metrics.backend_error(g, "start")
        self.audit.write(start_record(self, errors, self._wall_clock() * 1000.0))

    def notify(self, reason: str) -> None:
        """Wake the runner before its next tick (backends call this from any thread)."""
        with self._wake_lock:
            self._wake_reasons.append(str(reason))
        self._wake.set()

    def request_stop(self) -> None:
        """Make :meth:`run` return after the current tick (safe from a signal handler)."""
        self._stop.set()
        self._wake.set()

    def run(self, stop_event: threading.Event | None = None, *, max_ticks: int | None = None) -> int:
        """Tick every ``interval_s`` (earlier on a pushed report) until ``stop_event`` is set.

        Returns the number of ticks run.
        """
        stop = stop_event or self._stop
        self.start()
        interval_s = self.config.host.interval_s
        gap_s = self.config.host.min_tick_gap_s
        done = 0
        last_tick = -math.inf
        next_due = self._monotonic()
        while not (stop.is_set() or self._stop.is_set()):
            now = self._monotonic()
            woken = self._wake.is_set() and not self._stop.is_set()
            if now >= next_due or (woken and now - last_tick >= gap_s):
                self._wake.clear()
                last_tick = now
                next_due = now + interval_s
                self.tick()
                done += 1
                if max_ticks is not None and done >= max_ticks:
                    break
                continue
            if woken:
                stop.wait(min(last_tick + gap_s - now, next_due - now, POLL_S))
            else:
                self._wake.wait(min(next_due - now, POLL_S))
        return done

    def shutdown(self, *, relax: bool = True) -> dict[str, Any]:
        """Leave the guests as ``safety.on_exit`` says (unless ``relax`` is False), then close.

        ``relax``: ``relax`` gives each guest its provisioned size, ``hold`` keeps the target in
        force, ``unlimited`` removes the limit. Dry-run mode changed nothing, so it relaxes nothing.
        Returns the ``exit`` audit record.
        """
        if self._closed:
            return {}
        on_exit = self.config.safety.on_exit
        results: list[dict[str, Any]] = []
        for g, backend in enumerate(self.backends):
            entry: dict[str, Any] = {"name": backend.name, "relaxed_to_bytes": None, "error": None}
            if not relax or self.mode == "dry-run":
                entry["skipped"] = "dry-run: nothing was applied" if relax else "one-shot run: targets kept"
            else:
                size = {
                    "relax": int(self.provisioned[0, g]),
                    "hold": int(self.current[0, g]),
                    "unlimited": None,
                }[on_exit]
                try:
                    self.calls.call(
                        g, "relax", backend.relax, size, timeout_s=self.config.safety.call_timeout_s
                    )
                    entry["relaxed_to_bytes"] = size
                    entry["relaxed_to"] = "unlimited" if size is None else on_exit
                except Exception as exc:  # one guest's failure must not keep the others unrelaxed
                    entry["error"] = _error_text(exc)
                    self.metrics.backend_error(g, "relax")
            results.append(entry)
        record = exit_record(self, on_exit, results, self._wall_clock() * 1000.0)
        try:
            self.audit.write(record)
        finally:
            self.close()
        return record

    def close(self) -> None:
        """Close backends, trace, audit log and metrics endpoint (never raises)."""
        if self._closed:
            return
        self._closed = True
        for item in self._closables:
            with contextlib.suppress(Exception):  # closing is best effort: keep closing the rest
                item.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one tick --------------------------------------------------------------------------------

    def _read_all(self) -> tuple[list[GuestReading | None], list[list[str]]]:
        readings: list[GuestReading | None] = []
        errors: list[list[str]] = []
        results = self.calls.read_all(
            "read", [b.read for b in self.backends], timeout_s=self.config.safety.call_timeout_s
        )
        for g, result in enumerate(results):
            if isinstance(result, Exception):  # BackendError, a stall, or a backend bug: mask this guest only
                readings.append(None)
                errors.append([f"read: {_error_text(result)}"])
                self.metrics.backend_error(g, "read")
            else:
                readings.append(result)
                errors.append([])
        return readings, errors

    def _snapshot(self, readings: list[GuestReading | None], time_ms: int) -> HostSnapshot:
        host = self.config.host
        previous = self._last_snapshot_ms
        interval_s = host.interval_s
        if previous is not None and time_ms > previous:
            interval_s = (time_ms - previous) / 1000.0
        self._last_snapshot_ms = time_ms
        return snapshot_from_readings(
            readings,
            self.specs,
            host_name=host.name,
            capacity_bytes=host.capacity_gib * GIB,
            reserve_bytes=host.reserve_gib * GIB,
            interval_s=interval_s,
            time_ms=time_ms,
            edges_ms=host.histogram_edges_ms,
        )

    def observe(self) -> HostSnapshot:
        """Read every guest into a snapshot without deciding or applying anything.

        Unreadable guests are masked out (their errors count in the metrics, as in a tick).
        """
        readings, _ = self._read_all()
        times = [r.time_ms for r in readings if r is not None]
        time_ms = max(times) if times else int(self._wall_clock() * 1000.0)
        return self._snapshot(readings, time_ms)

    def _decide(self, loop: ControlLoop, snapshot: HostSnapshot) -> tuple[Decision | None, str | None]:
        try:
            if id(loop) in self._to_reset:
                loop.reset(snapshot)
                self._to_reset.discard(id(loop))
            return loop.step(snapshot), None
        except Exception as exc:  # a policy that fails (a bad model, a bug) hands over to the fallback
            return None, f"policy {loop.policy.name!r} failed: {_error_text(exc)}"

    def _decide_all(self, snapshot: HostSnapshot) -> tuple[dict[str, Decision | None], dict[str, str | None]]:
        """Run the configured policy, the fallback and (in shadow mode) the actor on ``snapshot``."""
        decisions: dict[str, Decision | None] = {}
        errors: dict[str, str | None] = {}
        decisions["primary"], errors["primary"] = self._decide(self.primary, snapshot)
        decisions["fallback"], errors["fallback"] = self._decide(self.fallback, snapshot)
        if self.actor is self.primary:
            decisions["actor"], errors["actor"] = decisions["primary"], errors["primary"]
        elif self.actor is self.fallback:
            decisions["actor"], errors["actor"] = decisions["fallback"], errors["fallback"]
        else:
            decisions["actor"], errors["actor"] = self._decide(self.actor, snapshot)
        return decisions, errors

    def _choose(
        self,
        states: np.ndarray,
        usable: np.ndarray,
        breaker: safety.BreakerUpdate,
        decisions: dict[str, Decision | None],
        current: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, list[str | None], list[str]]:
        """Per guest, which decision acts: ``(target, holding, choice, source name)``.

        The actor's decision, except the fallback's where the input is in fallback state, the
        breaker is open or the actor failed; the provisioned size for a guest in fallback state
        with no usable input at all; the current target (held) where there is no decision.
        """
        actor, fallback = decisions["actor"], decisions["fallback"]
        use_fallback = (states == safety.FALLBACK) | breaker.open | (actor is None)
        no_decision = (use_fallback & (fallback is None)) | (~use_fallback & (actor is None))
        actor_target = actor.target_bytes if actor is not None else current
        fallback_target = fallback.target_bytes if fallback is not None else current
        target = np.where(use_fallback, fallback_target, actor_target)
        relax_blind = ~usable & (states == safety.FALLBACK)
        target = np.where(relax_blind, self.provisioned, target)
        holding = (states == safety.HOLD) | (no_decision & ~relax_blind)
        target = np.where(~usable & ~relax_blind, current, target)
        n = len(self.specs)
        choices: list[str | None] = [
            None if relax_blind[0, g] or holding[0, g] else ("fallback" if use_fallback[0, g] else "actor")
            for g in range(n)
        ]
        names = {"actor": self.actor.policy.name, "fallback": self.fallback.policy.name}
        sources = [
            "relax (no usable input)" if relax_blind[0, g] else "hold" if choice is None else names[choice]
            for g, choice in enumerate(choices)
        ]
        return target, holding, choices, sources

    def _rails(
        self,
        target: np.ndarray,
        current: np.ndarray,
        holding: np.ndarray,
        breaker: safety.BreakerUpdate,
        oom_min_bytes: np.ndarray,
        log: safety.RailLog,
    ) -> np.ndarray:
        """The safety rails in order (module docstring of :mod:`wsrl.runner.safety`), logged."""
        cfg = self.config.safety
        target = log.add(target, safety.hold_rail(target, current, holding))
        target = log.add(
            target, safety.breaker_rail(target, current, self.provisioned, breaker.tripped, breaker.open)
        )
        target = log.add(target, safety.oom_memory_rail(target, oom_min_bytes))
        target = log.add(
            target,
            safety.rate_rail(
                target,
                current,
                self.provisioned,
                max_shrink_frac=cfg.max_shrink_frac_per_interval,
                max_growth_frac=cfg.max_growth_frac_per_interval,
                exempt=breaker.open,
            ),
        )
        capacity = self.config.host.capacity_gib * GIB
        reserve = self.config.host_reserve_bytes
        target = log.add(
            target, safety.host_reserve_rail(target, current, capacity, reserve, exempt=breaker.open)
        )
        return log.add(target, safety.floor_rail(target, self.floor, self.provisioned))

    def tick(self) -> TickOutcome:
        """Read, decide, pass the rails, apply, audit, record (see the module docstring)."""
        started_s = self._monotonic()
        self.ticks += 1
        with self._wake_lock:
            woken_by, self._wake_reasons = self._wake_reasons, []
        n = len(self.specs)
        self._reload_policy()
        clock_step_s = self._clock_step_s(started_s)
        readings, errors = self._read_all()
        inputs = safety.InputArrays.from_readings(readings)
        safety_cfg = self.config.safety
        verdict = safety.check_inputs(
            inputs,
            previous_time_ms=self._last_time_ms,
            now_ms=self._wall_clock() * 1000.0,
            stale_after_s=safety_cfg.stale_after_s,
            provisioned_bytes=self.provisioned,
            usage_factor=safety_cfg.malformed_usage_factor,
            clock_skew_s=self._clock_skew_s,
        )
        usable = verdict.usable
        newest_ms = np.fmax(inputs.time_ms, self._last_time_ms)
        if verdict.stepped_back is not None:  # a clock stepped back: the reading starts a new time line
            newest_ms = np.where(verdict.stepped_back, inputs.time_ms, newest_ms)
        self._last_time_ms = np.where(usable, newest_ms, self._last_time_ms)
        states = self.health.update(verdict.bad)
        fresh = ~verdict.bad
        self.current = np.where(fresh & np.isfinite(inputs.target_bytes), inputs.target_bytes, self.current)
        self.known_target = np.where(fresh, inputs.target_bytes, self.known_target)
        current = self.current.copy()

        snapshot = None
        decisions: dict[str, Decision | None] = {"primary": None, "fallback": None, "actor": None}
        policy_errors: dict[str, str | None] = {"primary": None, "fallback": None, "actor": None}
        time_ms = int(self._wall_clock() * 1000.0)
        if usable.any():
            time_ms = int(np.nanmax(np.where(usable, inputs.time_ms, np.nan)))
            snapshot = self._snapshot([r if usable[0, g] else None for g, r in enumerate(readings)], time_ms)
            decisions, policy_errors = self._decide_all(snapshot)
        breaker = self.breaker.update(inputs, fresh, time_ms)
        oom = breaker.oom if breaker.oom is not None else np.zeros((1, n), dtype=bool)
        oom_min_bytes = self.oom_memory.update(oom, current, self.provisioned, time_ms)
        target, holding, choices, sources = self._choose(states, usable, breaker, decisions, current)
        rails = safety.RailLog(n)
        target = self._rails(target, current, holding, breaker, oom_min_bytes, rails)
        final = [_page_bytes(target[0, g], self.floor[0, g], self.provisioned[0, g]) for g in range(n)]

        expired = safety.expiry_reason(started_s, self._monotonic(), safety_cfg.decision_expiry_s)
        outcomes, applied = self._apply(final, holding, expired, errors)
        duration_s = self._monotonic() - started_s

        recorded = [False] * n
        record_error = None
        if self.recorder is not None:
            actions = [final[g] if outcomes[g] == "applied" else None for g in range(n)]
            try:
                recorded = self.recorder.record(readings, actions, sources)
            except WsrlError as exc:  # a full disk must not stop the control loop; the rows stay buffered
                record_error = str(exc)
        guests = [
            guest_record(
                self,
                g,
                reading=readings[g],
                snapshot=snapshot if usable[0, g] else None,
                state=int(states[0, g]),
                verdict_reason=str(verdict.reasons[0, g]),
                breaker=breaker,
                decisions=decisions,
                primary_error=policy_errors["primary"],
                source=sources[g],
                choice=choices[g],
                rails=rails.entries[g],
                target_bytes=final[g],
                outcome=outcomes[g],
                applied=applied[g],
                expired=expired,
                errors=errors[g],
                recorded=recorded[g],
            )
            for g in range(n)
        ]
        record = {
            "kind": "tick",
            "tick": self.ticks,
            "time": iso_time(time_ms),
            "time_ms": time_ms,
            "mode": self.mode,
            "policy": self.primary.policy.name,
            "fallback": self.fallback.policy.name,
            "actor": self.actor.policy.name,
            "woken_by": woken_by,
            "clock_step_s": clock_step_s,
            "policy_errors": {k: v for k, v in policy_errors.items() if v},
            "record_error": record_error,
            "duration_s": round(duration_s, 6),
            "guests": guests,
        }
        self.audit.write(record)
        self.metrics.export_tick(
            readings=readings,
            snapshot=snapshot,
            usable=usable,
            states=states,
            breaker=breaker,
            rails=rails,
            target_bytes=final,
            outcomes=outcomes,
            duration_s=duration_s,
        )
        return TickOutcome(
            tick=self.ticks, time_ms=time_ms, target_bytes=final, outcomes=outcomes, record=record
        )

    def _reload_policy(self) -> None:
        """Load the exported policy again if its files changed; audit the outcome either way."""
        if self.reloader is None:
            return
        result = self.reloader.poll()
        if result is None:
            return
        before = self.primary.policy.name
        if result.policy is not None:
            loop = ControlLoop(result.policy, allocator=self.primary.allocator)
            if self.actor is self.primary:
                self.actor = loop
            self.primary = loop
            self._to_reset.add(id(loop))
        now_ms = self._wall_clock() * 1000.0
        self.audit.write(
            {
                "kind": "policy_reload",
                "time": iso_time(now_ms),
                "time_ms": int(now_ms),
                "path": str(self.reloader.directory),
                "loaded": result.policy is not None,
                "policy": self.primary.policy.name,
                "replaced": before if result.policy is not None else None,
                "error": result.error,
                "kept": before if result.policy is None else None,
            }
        )
        self.metrics.policy_reload(loaded=result.policy is not None)

    def _clock_step_s(self, monotonic_s: float) -> float | None:
        """How far the wall clock was stepped since the last tick (``None``: under a second)."""
        offset_s = self._wall_clock() - monotonic_s
        previous, self._clock_offset_s = self._clock_offset_s, offset_s
        if previous is None or abs(offset_s - previous) < 1.0:
            return None
        return round(offset_s - previous, 3)

    def _apply(
        self, final: list[int], holding: np.ndarray, expired: str | None, errors: list[list[str]]
    ) -> tuple[list[str], list[bool]]:
        outcomes: list[str] = []
        applied: list[bool] = []
        for g, backend in enumerate(self.backends):
            if self.mode == "dry-run":
                outcome = "dry_run"
            elif holding[0, g]:
                outcome = "hold"
            elif expired is not None:
                outcome = "expired"
            elif abs(final[g] - self.known_target[0, g]) < PAGE_BYTES:
                outcome = "unchanged"
            else:
                try:
                    self.calls.call(
                        g, "apply", backend.apply, final[g], timeout_s=self.config.safety.call_timeout_s
                    )
                    self.current[0, g] = final[g]
                    self.known_target[0, g] = final[g]
                    outcome = "applied"
                except Exception as exc:  # BackendError, a stall, or a backend bug: a failed apply either way
                    self.known_target[0, g] = np.nan  # a stalled apply may still land: not known
                    errors[g].append(f"apply: {_error_text(exc)}")
                    self.metrics.backend_error(g, "apply")
                    outcome = "apply_error"
            outcomes.append(outcome)
            applied.append(outcome == "applied")
        return outcomes, applied


def _page_bytes(target: float, floor: float, provisioned: float) -> int:
    """``target`` rounded up to a whole page, within ``[floor, provisioned]`` (the rails' bounds)."""
    rounded = math.ceil(target / PAGE_BYTES) * PAGE_BYTES
    return int(max(min(rounded, math.floor(provisioned)), math.ceil(floor)))


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, WsrlError) else text
