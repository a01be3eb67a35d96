"""The audit log's records: what the runner saw, decided and did for each guest, and why.

:mod:`wsrl.runner.audit` writes them; ``docs/runner.md`` documents every field. Byte values are
integers (``null`` where unknown); reasons are short sentences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from wsrl.inputs.live import GuestReading
from wsrl.pipeline.control import Decision, StackDecision
from wsrl.pipeline.rails import STATE_NAMES
from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.runner.audit import iso_time
from wsrl.runner.backend_registry import histogram_source_of
from wsrl.runner.config import RunnerConfig
from wsrl.runner.guest_state import Intake
from wsrl.slo import WORKING_SET_WINDOW_MS


@dataclass(frozen=True)
class RunnerView:
    """What the records say about the runner itself (so this module needs no :class:`Runner`)."""

    config: RunnerConfig
    mode: str
    policy: str
    fallback: str
    actor: str
    guest_names: tuple[str, ...]


COLD_AGE_MS = 120_000
"""The idle age the audit log reports cold memory at (Google far memory's cold age)."""


def _bytes(value: float | None) -> int | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value)


def _number(value: float | None, digits: int = 4) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def start_record(
    runner: RunnerView, errors: dict[str, str], time_ms: float, state: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``start`` record: mode, policies, the guests and the safety settings in force.

    ``state`` is what the previous run left: the state file, the targets restored from it, a problem.
    """
    config = runner.config
    return {
        "kind": "start",
        "time": iso_time(time_ms),
        "time_ms": int(time_ms),
        "config": config.label,
        "host": config.host.name,
        "mode": runner.mode,
        "policy": runner.policy,
        "fallback": runner.fallback,
        "actor": runner.actor,
        "interval_s": config.host.interval_s,
        "warnings": config.warnings(),
        "safety": config.safety.model_dump(mode="json"),
        "control": config.control_spec().describe(),
        "state": state,
        "guests": [
            {
                "name": spec.name,
                "backend": config.guest[g].backend.kind,
                "provisioned_bytes": _bytes(spec.provisioned_bytes),
                "floor_bytes": _bytes(spec.floor_bytes),
                "shares": spec.shares,
                "tier": spec.tier,
                "start_error": errors.get(spec.name),
                "histogram_source": histogram_source_of(config, g)[0],
            }
            for g, spec in enumerate(config.guest_specs())
        ],
    }


def inputs_summary(
    reading: GuestReading | None, snapshot: HostSnapshot | None, g: int, refault_pages_per_s: float
) -> dict[str, Any] | None:
    """The numbers the decision was based on (``None`` when the guest could not be read)."""
    if reading is None:
        return None
    summary: dict[str, Any] = {
        "time_ms": int(reading.time_ms) if math.isfinite(reading.time_ms) else None,
        "visible_bytes": _bytes(reading.visible_bytes),
        "target_bytes": _bytes(reading.target_bytes),
        "usage_bytes": _bytes(reading.usage_bytes),
        "working_set_bytes": None,
        "cold_120s_bytes": None,
        "refault_pages_per_s": _number(refault_pages_per_s),
        "psi_some_avg10": _number(reading.psi_some_avg10),
        "oom_kills_total": int(reading.oom_kills_total),
        "swap_bytes": _bytes(reading.swap_bytes),
        "balloon_stalled": bool(reading.balloon_stalled),
        "histogram": reading.histogram is not None,
        "source": dict(reading.source),
    }
    if snapshot is not None:
        summary["working_set_bytes"] = _bytes(float(snapshot.working_set_bytes(WORKING_SET_WINDOW_MS)[0, g]))
        summary["cold_120s_bytes"] = _bytes(float(snapshot.cold_bytes(COLD_AGE_MS)[0, g]))
    return summary


def decision_summary(
    decision: Decision | None, g: int, error: str | None, limited: tuple[bool, bool] = (False, False)
) -> dict[str, Any] | None:
    """One policy's decision for guest ``g``: proposal and allocator, with their reasons.

    ``limited``: whether the rate rail slowed the acting decision's shrink or growth (``guard``).
    """
    if decision is None:
        return None if error is None else {"error": error}
    allocation = decision.allocation
    allocator = [
        reason
        for reason, flag in (
            ("raised to floor", allocation.raised_to_floor),
            ("capped at provisioned", allocation.capped_at_provisioned),
            ("squeezed: host full, shared by weight", allocation.squeezed),
            (
                "raised to its claim (open breaker or OOM memory): granted before other proposals",
                allocation.raised_to_claim,
            ),
        )
        if flag is not None and flag[0, g]
    ]
    if allocation.floors_exceed_host[0]:
        allocator.append("floors alone exceed capacity - reserve")
    names = ("shrink limited", "growth limited")
    guard = [reason for reason, flag in zip(names, limited, strict=True) if flag]
    return {
        "proposal_bytes": _bytes(float(decision.proposal_bytes[0, g])),
        "allotted_bytes": _bytes(float(allocation.allotted_bytes[0, g])),
        "allocator": allocator,
        "guard": guard,
    }


@dataclass
class TickFacts:
    """Everything one tick read, decided and did (lists and arrays in config order).

    Attributes:
        intake: the sorted readings.
        snapshot: what the stack decided on (``None``: nothing was readable).
        decision: the control stack's step.
        decisions: ``primary`` (the configured policy), ``fallback`` and ``actor`` decisions.
        policy_errors: the same keys: a contained policy error, if any.
        choices: per guest ``actor``, ``fallback`` or ``None`` (held, relaxed).
        sources: per guest the audit name of what decided it.
        final: the targets, bytes.
        outcomes: per guest what the actuator did (:meth:`Actuators.apply`).
        expired: why the decision expired, if it did.
        errors: per guest backend errors.
        recorded: per guest whether the trace recorder took the row.

    """

    intake: Intake
    snapshot: HostSnapshot | None
    decision: StackDecision
    decisions: dict[str, Decision | None]
    policy_errors: dict[str, str | None]
    choices: list[str | None]
    sources: list[str]
    final: list[int]
    outcomes: list[str]
    expired: str | None
    errors: list[list[str]]
    recorded: list[bool]


_NOT_APPLIED = {
    "applied": None,
    "dry_run": "dry-run mode",
    "hold": "input not trusted (or no decision): last good target held",
    "unchanged": "target already in force",
    "apply_error": "the backend refused (see errors)",
    "deferred": "growth deferred: the limits in force leave no room (see errors)",
}


def guest_record(runner: RunnerView, g: int, facts: TickFacts) -> dict[str, Any]:
    """One guest's part of a ``tick`` record."""
    choice = facts.choices[g]
    breaker = facts.decision.breaker
    usable = bool(facts.intake.usable[0, g])
    outcome = facts.outcomes[g]
    applied = outcome == "applied"
    limited = (bool(facts.decision.shrink_limited[0, g]), bool(facts.decision.growth_limited[0, g]))
    rails = facts.decision.rails
    record: dict[str, Any] = {
        "name": runner.guest_names[g],
        "state": STATE_NAMES[int(facts.intake.states[0, g])],
        "input": str(facts.intake.verdict.reasons[0, g]) or "ok",
        "breaker": {
            "open": bool(breaker.open[0, g]),
            "tripped": bool(breaker.tripped[0, g]),
            "closed": bool(breaker.closed[0, g]),
            "reason": breaker.reason(0, g) or None,
        },
        "source": facts.sources[g],
        "inputs": inputs_summary(
            facts.intake.readings[g],
            facts.snapshot if usable else None,
            g,
            float(breaker.refault_pages_per_s[0, g]),
        ),
        "decision": decision_summary(facts.decisions[choice] if choice else None, g, None, limited),
        "rails": rails.of(g) if rails is not None else [],
        "target_bytes": int(facts.final[g]),
        "applied": applied,
        "applied_bytes": int(facts.final[g]) if applied else None,
        "not_applied": facts.expired if outcome == "expired" else _NOT_APPLIED[outcome],
        "errors": facts.errors[g],
        "recorded": facts.recorded[g],
    }
    if runner.mode == "shadow":
        record["shadow"] = {
            "policy": runner.policy,
            "decision": decision_summary(facts.decisions["primary"], g, facts.policy_errors["primary"]),
        }
    return record


def tick_record(runner: RunnerView, tick: int, facts: TickFacts, **extra: Any) -> dict[str, Any]:
    """The ``tick`` record: the tick's facts per guest, plus ``extra`` fields (wake reasons, timing)."""
    return {
        "kind": "tick",
        "tick": tick,
        "time": iso_time(facts.intake.time_ms),
        "time_ms": facts.intake.time_ms,
        "mode": runner.mode,
        "policy": runner.policy,
        "fallback": runner.fallback,
        "actor": runner.actor,
        **extra,
        "policy_errors": {k: v for k, v in facts.policy_errors.items() if v},
        "guests": [guest_record(runner, g, facts) for g in range(len(runner.guest_names))],
    }


def exit_record(
    runner: RunnerView, ticks: int, on_exit: str, guests: list[dict[str, Any]], time_ms: float
) -> dict[str, Any]:
    """The ``exit`` record: how every guest was left."""
    return {
        "kind": "exit",
        "time": iso_time(time_ms),
        "time_ms": int(time_ms),
        "mode": runner.mode,
        "on_exit": on_exit,
        "ticks": ticks,
        "guests": guests,
    }
