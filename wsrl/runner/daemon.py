"""The runner: every interval, read the guests, decide through the shared pipeline, pass the rails, apply.

One :meth:`Runner.tick`:

1. read every guest (a guest that fails is masked out; its error is audited; the others are served);
2. sort the readings (:func:`~wsrl.runner.safety.check_inputs`): missing, stale or malformed inputs
   put a guest on hold, then on the fallback policy (:class:`~wsrl.runner.safety.InputHealth`);
3. build one :class:`~wsrl.pipeline.snapshot.HostSnapshot` with
   :func:`~wsrl.backends.base.snapshot_from_readings` (usable readings only) and decide through the
   one control stack (:class:`~wsrl.pipeline.control.ControlStack`: the acting policy and the
   fallback beside it, the allocator, the choice per guest, and every rail: hold, breaker, OOM
   memory, rate per second, host reserve, floor/ceiling), exactly as training and evaluation do;
   the runner adds only what it knows about its inputs (:class:`~wsrl.pipeline.control.GuestConditions`);
   in shadow mode the configured policy is computed beside the acting one for the audit;
4. drop the whole decision if it expired (inputs older than ``decision_expiry_s``), else apply
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
from wsrl.pipeline.control import (
    ACTOR,
    FALLBACK_POLICY,
    HELD,
    RELAXED,
    Decision,
    GuestConditions,
    PolicyStage,
    StackDecision,
    error_line,
)
from wsrl.pipeline.policy import Policy
from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.runner import safety
from wsrl.runner.audit import AuditLog, iso_time
from wsrl.runner.config import SIM_ONLY_POLICIES, RunnerConfig
from wsrl.runner.deadline import GuestCalls
from wsrl.runner.metrics import RunnerMetrics
from wsrl.runner.policy_reload import PolicyReloader, reloader_for
from wsrl.runner.recorder import TraceRecorder
from wsrl.runner.report import RunnerView, exit_record, guest_record, start_record
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
        from wsrl.policies import POLICIES, make_policy, make_stack

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
        self.reloader: PolicyReloader | None = None
        if policy is None and config.policy.reload and config.policy.name_or_path not in POLICIES:
            # Watch before loading: a change while the first load runs is then loaded again.
            self.reloader = reloader_for(config.resolve(config.policy.name_or_path))
        configured = policy if policy is not None else load_policy(config)
        acting = configured
        if mode == "shadow":
            actor_name = shadow_actor or config.policy.shadow_actor or config.policy.fallback
            if actor_name in SIM_ONLY_POLICIES:
                raise WsrlError(f"shadow actor {actor_name!r} reads the simulator's future: not for a host")
            params = config.policy.fallback_params if actor_name == config.policy.fallback else {}
            acting = make_policy(actor_name, **params)
        self.stack = make_stack(acting, config.control_spec())
        """The one control stack (policy, fallback, allocator, rails) training and evaluation use too."""
        self.shadowed: PolicyStage | None = None
        """In shadow mode: the configured policy, computed beside the acting one for the audit only."""
        if mode == "shadow":
            self.shadowed = PolicyStage(configured, self.stack.allocator)
            self._shadow_needs_reset = True
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
        self.health = safety.InputHealth(n, config.safety.hold_intervals_before_fallback)
        self._clock_offset_s: float | None = None
        simulated = config.sim is not None and config.sim.clock == "simulated"
        self._clock_skew_s = math.inf if simulated else config.safety.clock_skew_s
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
                errors[backend.name] = error_line(exc)
                self.metrics.backend_error(g, "start")
        self.audit.write(start_record(self.view(), errors, self._wall_clock() * 1000.0))

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
                    entry["error"] = error_line(exc)
                    self.metrics.backend_error(g, "relax")
            results.append(entry)
        record = exit_record(self.view(), self.ticks, on_exit, results, self._wall_clock() * 1000.0)
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
                errors.append([f"read: {error_line(result)}"])
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

    def view(self) -> RunnerView:
        """What the audit records say about this runner."""
        return RunnerView(
            config=self.config,
            mode=self.mode,
            policy=self.primary.policy.name,
            fallback=self.fallback.policy.name,
            actor=self.actor.policy.name,
            guest_names=tuple(s.name for s in self.specs),
        )

    @property
    def actor(self) -> PolicyStage:
        """The acting policy (the configured one, or the shadow actor in shadow mode)."""
        return self.stack.actor

    @property
    def primary(self) -> PolicyStage:
        """The configured policy (in shadow mode computed for the audit only)."""
        return self.shadowed if self.shadowed is not None else self.stack.actor

    @property
    def fallback(self) -> PolicyStage:
        """The fallback policy."""
        return self.stack.fallback

    def _conditions(
        self, usable: np.ndarray, current: np.ndarray, states: np.ndarray, signals: safety.GuestSignals
    ) -> GuestConditions:
        """What the runner knows beyond the snapshot: its trust in each reading and the targets in force."""
        return GuestConditions(
            configured=np.ones_like(usable),
            usable=usable,
            current_bytes=current,
            provisioned_bytes=self.provisioned,
            floor_bytes=np.minimum(self.floor, self.provisioned),
            input_state=states,
            signals=signals,
            capacity_bytes=np.array([self.config.host.capacity_gib * GIB]),
            reserve_bytes=np.array([self.config.host.reserve_gib * GIB]),
        )

    def _shadow_decision(self, snapshot: HostSnapshot | None) -> tuple[Decision | None, str | None]:
        """In shadow mode, the configured policy's decision (a failure is audited, never acted on)."""
        if self.shadowed is None or snapshot is None:
            return None, None
        try:
            if self._shadow_needs_reset:
                self.shadowed.reset(snapshot)
                self._shadow_needs_reset = False
            return self.shadowed.step(snapshot), None
        except Exception as exc:  # a bad model: audited beside the acting policy's decision
            return None, f"policy {self.shadowed.policy.name!r} failed: {error_line(exc)}"

    def _sources(self, decision: StackDecision) -> tuple[list[str | None], list[str]]:
        """Per guest, which decision acted (``actor``/``fallback``/None) and its audit name."""
        names = {
            ACTOR: self.actor.policy.name,
            FALLBACK_POLICY: self.fallback.policy.name,
            HELD: "hold",
            RELAXED: "relax (no usable input)",
        }
        codes = [int(c) for c in decision.source[0]]
        choices: list[str | None] = [
            "actor" if c == ACTOR else "fallback" if c == FALLBACK_POLICY else None for c in codes
        ]
        return choices, [names[c] for c in codes]

    def tick(self) -> TickOutcome:
        """Read, decide through the control stack, apply, audit, record (see the module docstring)."""
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

        snapshot = None
        time_ms = int(self._wall_clock() * 1000.0)
        if usable.any():
            time_ms = int(np.nanmax(np.where(usable, inputs.time_ms, np.nan)))
            snapshot = self._snapshot([r if usable[0, g] else None for g, r in enumerate(readings)], time_ms)
        conditions = self._conditions(usable, self.current.copy(), states, inputs.signals(fresh))
        decision = self.stack.step(snapshot, conditions, time_ms=time_ms, log=True)
        shadow_decision, shadow_error = self._shadow_decision(snapshot)
        decisions: dict[str, Decision | None] = {
            "primary": shadow_decision if self.shadowed is not None else decision.actor,
            "fallback": decision.fallback,
            "actor": decision.actor,
        }
        policy_errors: dict[str, str | None] = {
            "primary": shadow_error if self.shadowed is not None else decision.errors.get("actor"),
            "fallback": decision.errors.get("fallback"),
            "actor": decision.errors.get("actor"),
        }
        choices, sources = self._sources(decision)
        holding = decision.source == HELD
        rails = decision.rails if decision.rails is not None else safety.RailLog((1, n))
        final = [int(decision.target_bytes[0, g]) for g in range(n)]

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
        breaker = decision.breaker
        view = self.view()
        guests = [
            guest_record(
                view,
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
                rails=rails.of(g),
                limited=(bool(decision.shrink_limited[0, g]), bool(decision.growth_limited[0, g])),
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
            if self.shadowed is not None:
                self.shadowed = PolicyStage(result.policy, self.stack.allocator)
                self._shadow_needs_reset = True
            else:
                self.stack.replace_policy(result.policy)
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
                    errors[g].append(f"apply: {error_line(exc)}")
                    self.metrics.backend_error(g, "apply")
                    outcome = "apply_error"
            outcomes.append(outcome)
            applied.append(outcome == "applied")
        return outcomes, applied
