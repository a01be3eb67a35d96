"""The runner: every interval, read the guests, decide through the shared pipeline, pass the rails, apply.

One :meth:`Runner.tick`:

1. read every guest (a guest that fails is masked out; its error is audited; the others are served);
2. sort the readings (:func:`~wsrl.runner.safety.check_inputs`): missing, stale or malformed inputs
   put a guest on hold, then on the fallback policy (:class:`~wsrl.runner.safety.InputHealth`);
3. build one :class:`~wsrl.pipeline.snapshot.HostSnapshot` with
   its :class:`~wsrl.inputs.live.LiveHost` (usable readings only) and decide through the
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

from wsrl.backends.base import GuestBackend
from wsrl.errors import WsrlError
from wsrl.inputs.live import GuestReading, LiveHost
from wsrl.pipeline.control import (
    ACTOR,
    FALLBACK_POLICY,
    HELD,
    RELAXED,
    ControlStack,
    Decision,
    PolicyStage,
    StackDecision,
    error_line,
)
from wsrl.pipeline.policy import Policy
from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.runner import safety
from wsrl.runner.actuation import Actuators
from wsrl.runner.audit import AuditLog, iso_time
from wsrl.runner.config import SIM_ONLY_POLICIES, RunnerConfig
from wsrl.runner.deadline import GuestCalls
from wsrl.runner.guest_state import GuestState
from wsrl.runner.metrics import RunnerMetrics
from wsrl.runner.policy_reload import PolicyReloader, reloader_for
from wsrl.runner.recorder import TraceRecorder
from wsrl.runner.report import RunnerView, TickFacts, exit_record, start_record, tick_record
from wsrl.runner.target_store import TargetStore
from wsrl.units import GIB

Mode = Literal["normal", "dry-run", "shadow"]
MODES: tuple[str, ...] = ("normal", "dry-run", "shadow")
POLL_S = 0.25
"""Longest sleep between checks of the stop event in :meth:`Runner.run`."""
MAX_WAKE_REASONS = 16
"""Distinct wake reasons counted between two ticks; more are counted under ``"other"``."""
MAX_WAKE_REASON_CHARS = 64


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
        if mode not in MODES:
            raise WsrlError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.config = config
        self.mode: Mode = mode
        self.specs = config.guest_specs()
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._closables: list[Any] = []
        self.reloader: PolicyReloader | None = None
        self.stack, self.shadowed = self._build_stack(policy, shadow_actor)
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
        simulated = config.sim is not None and config.sim.clock == "simulated"
        self.state = GuestState(
            self.specs,
            config.safety,
            capacity_bytes=config.host.capacity_gib * GIB,
            reserve_bytes=config.host_reserve_bytes,  # what the rails keep free (the actuators too)
            # A simulated clock runs ahead of the host's by design: only real clocks are held to the skew.
            clock_skew_s=math.inf if simulated else config.safety.clock_skew_s,
        )
        self._clock_offset_s: float | None = None
        self.live = LiveHost(
            self.specs,
            host_name=config.host.name,
            capacity_bytes=config.host.capacity_gib * GIB,
            reserve_bytes=config.host.reserve_gib * GIB,
            interval_s=config.host.interval_s,
            edges_ms=config.host.histogram_edges_ms,
        )
        """The input: each tick's usable readings as the host's snapshot."""
        self._started = False
        self._closed = False
        self.ticks = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._wake_lock = threading.Lock()
        self._wake_reasons: dict[str, int] = {}
        try:
            self._open_outputs()
        except BaseException:
            self.close()
            raise

    def _open_outputs(self) -> None:
        """The audit log, the metrics endpoint, the actuators and the trace recorder."""
        config, mode = self.config, self.mode
        self.audit = AuditLog(config.resolve(config.audit.path), fsync=config.audit.fsync)
        self._closables.append(self.audit)
        self.targets = TargetStore(
            config.state_path(), host=config.host.name, specs=self.specs, fsync=config.audit.fsync
        )
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
        self.actuators = Actuators(
            self.backends,
            self.calls,
            self.metrics,
            self.state,
            dry_run=mode == "dry-run",
            timeout_s=config.safety.call_timeout_s,
        )
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

    def _build_stack(
        self, policy: Policy | None, shadow_actor: str | None
    ) -> tuple[ControlStack, PolicyStage | None]:
        """The control stack of the acting policy and, in shadow mode, the configured policy beside it."""
        from wsrl.policies import POLICIES, make_policy, make_stack

        config = self.config
        if policy is None and config.policy.reload and config.policy.name_or_path not in POLICIES:
            # Watch before loading: a change while the first load runs is then loaded again.
            self.reloader = reloader_for(config.resolve(config.policy.name_or_path))
        configured = policy if policy is not None else load_policy(config)
        if self.mode != "shadow":
            return make_stack(configured, config.control_spec()), None
        actor_name = shadow_actor or config.policy.shadow_actor or config.policy.fallback
        if actor_name in SIM_ONLY_POLICIES:
            raise WsrlError(f"shadow actor {actor_name!r} reads the simulator's future: not for a host")
        params = config.policy.fallback_params if actor_name == config.policy.fallback else {}
        stack = make_stack(make_policy(actor_name, **params), config.control_spec())
        self._shadow_needs_reset = True
        return stack, PolicyStage(configured, stack.allocator)

    def _build_backends(self) -> list[GuestBackend]:
        from wsrl.runner.backend_registry import build_backends

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
        restored, problem = self.targets.load()
        self.state.restore(restored)
        state = {"path": str(self.targets.path), "restored_bytes": restored, "problem": problem}
        self.audit.write(start_record(self.view(), errors, self._wall_clock() * 1000.0, state))

    def notify(self, reason: str) -> None:
        """Wake the runner before its next tick (backends call this from any thread).

        Wake-ups are coalesced: the next tick comes no sooner than ``min_tick_gap_s`` after the
        last, and its record counts the reasons (at most :data:`MAX_WAKE_REASONS` distinct ones,
        each cut to :data:`MAX_WAKE_REASON_CHARS`), so a flood costs neither ticks nor audit space.
        """
        key = str(reason)[:MAX_WAKE_REASON_CHARS]
        with self._wake_lock:
            reasons = self._wake_reasons
            if key not in reasons and len(reasons) >= MAX_WAKE_REASONS:
                key = "other"
            reasons[key] = reasons.get(key, 0) + 1
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
        results = self.actuators.leave(on_exit, relax=relax)
        if relax and self.mode != "dry-run":
            left = {
                e["name"]: float(e["relaxed_to_bytes"]) for e in results if e["relaxed_to_bytes"] is not None
            }
            with contextlib.suppress(WsrlError):  # the exit record still says what each guest was left at
                self.targets.save(left, self._wall_clock() * 1000.0)
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
        self.live.observe(readings, time_ms)
        return self.live.snapshot()

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
            woken_by, self._wake_reasons = self._wake_reasons, {}
        n = len(self.specs)
        self._reload_policy()
        clock_step_s = self._clock_step_s(started_s)
        readings, errors = self._read_all()
        intake = self.state.take(readings, self._wall_clock() * 1000.0)
        usable, states, time_ms = intake.usable, intake.states, intake.time_ms
        snapshot = self._snapshot(intake.usable_readings(), time_ms) if usable.any() else None
        decision = self.stack.step(snapshot, self.state.conditions(intake), time_ms=time_ms, log=True)
        if decision.output is not None:
            for g in np.flatnonzero(decision.output.rejected[0]):
                errors[g].append(f"policy output rejected: {decision.output.reason(0, int(g))}")
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
        rails = decision.rails
        assert rails is not None  # stepped with log=True
        final = [int(decision.target_bytes[0, g]) for g in range(n)]

        expiry_s = self.config.safety.decision_expiry_s
        expired = safety.expiry_reason(started_s, self._monotonic(), expiry_s)
        outcomes, applied = self.actuators.apply(final, holding, expired, errors)
        state_error = self._save_targets() if any(applied) else None
        duration_s = self._monotonic() - started_s

        recorded = [False] * n
        record_error = None
        if self.recorder is not None:
            actions = [final[g] if outcomes[g] == "applied" else None for g in range(n)]
            try:
                recorded = self.recorder.record(readings, actions, sources)
            except WsrlError as exc:  # a full disk must not stop the control loop; the rows stay buffered
                record_error = str(exc)
        facts = TickFacts(
            intake=intake,
            snapshot=snapshot,
            decision=decision,
            decisions=decisions,
            policy_errors=policy_errors,
            choices=choices,
            sources=sources,
            final=final,
            outcomes=outcomes,
            expired=expired,
            errors=errors,
            recorded=recorded,
        )
        record = tick_record(
            self.view(),
            self.ticks,
            facts,
            woken_by=woken_by,
            clock_step_s=clock_step_s,
            record_error=record_error,
            state_error=state_error,
            duration_s=round(duration_s, 6),
        )
        self.audit.write(record)
        self.metrics.export_tick(
            readings=readings,
            snapshot=snapshot,
            usable=usable,
            states=states,
            breaker=decision.breaker,
            rails=rails,
            target_bytes=final,
            outcomes=outcomes,
            duration_s=duration_s,
        )
        return TickOutcome(
            tick=self.ticks, time_ms=time_ms, target_bytes=final, outcomes=outcomes, record=record
        )

    def _save_targets(self) -> str | None:
        """Keep the targets the actuators are known to hold (:mod:`~wsrl.runner.target_store`).

        Returns a one-line error, if any: a full disk must not stop the control loop.
        """
        known = self.state.known_target[0]
        targets = {spec.name: float(known[g]) for g, spec in enumerate(self.specs)}
        try:
            self.targets.save(targets, self._wall_clock() * 1000.0)
        except WsrlError as exc:
            return str(exc)
        return None

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
