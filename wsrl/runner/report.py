"""The audit log's records: what the runner saw, decided and did for each guest, and why.

:mod:`wsrl.runner.audit` writes them; ``docs/runner.md`` documents every field. Byte values are
integers (``null`` where unknown); reasons are short sentences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from wsrl.backends.base import GuestReading
from wsrl.pipeline.control import Decision
from wsrl.pipeline.rails import STATE_NAMES, BreakerUpdate
from wsrl.pipeline.snapshot import WORKING_SET_WINDOW_MS, HostSnapshot
from wsrl.runner.audit import iso_time
from wsrl.runner.config import RunnerConfig


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


def start_record(runner: RunnerView, errors: dict[str, str], time_ms: float) -> dict[str, Any]:
    """The ``start`` record: mode, policies, the guests and the safety settings in force."""
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
        "safety": config.safety.model_dump(mode="json"),
        "control": config.control_spec().describe(),
        "guests": [
            {
                "name": spec.name,
                "backend": config.guest[g].backend.kind,
                "provisioned_bytes": _bytes(spec.provisioned_bytes),
                "floor_bytes": _bytes(spec.floor_bytes),
                "shares": spec.shares,
                "tier": spec.tier,
                "start_error": errors.get(spec.name),
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
        )
        if flag[0, g]
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


def guest_record(
    runner: RunnerView,
    g: int,
    *,
    reading: GuestReading | None,
    snapshot: HostSnapshot | None,
    state: int,
    verdict_reason: str,
    breaker: BreakerUpdate,
    decisions: dict[str, Decision | None],
    primary_error: str | None,
    source: str,
    choice: str | None,
    rails: list[dict[str, Any]],
    limited: tuple[bool, bool],
    target_bytes: int,
    outcome: str,
    applied: bool,
    expired: str | None,
    errors: list[str],
    recorded: bool,
) -> dict[str, Any]:
    """One guest's part of a ``tick`` record."""
    decision = decisions[choice] if choice is not None else None
    not_applied = {
        "applied": None,
        "dry_run": "dry-run mode",
        "hold": "input not trusted (or no decision): last good target held",
        "expired": expired,
        "unchanged": "target already in force",
        "apply_error": "the backend refused (see errors)",
    }[outcome]
    record: dict[str, Any] = {
        "name": runner.guest_names[g],
        "state": STATE_NAMES[state],
        "input": verdict_reason or "ok",
        "breaker": {
            "open": bool(breaker.open[0, g]),
            "tripped": bool(breaker.tripped[0, g]),
            "closed": bool(breaker.closed[0, g]),
            "reason": str(breaker.reasons[0, g]) or None,
        },
        "source": source,
        "inputs": inputs_summary(reading, snapshot, g, float(breaker.refault_pages_per_s[0, g])),
        "decision": decision_summary(decision, g, None, limited),
        "rails": rails,
        "target_bytes": int(target_bytes),
        "applied": applied,
        "applied_bytes": int(target_bytes) if applied else None,
        "not_applied": not_applied,
        "errors": errors,
        "recorded": recorded,
    }
    if runner.mode == "shadow":
        record["shadow"] = {
            "policy": runner.policy,
            "decision": decision_summary(decisions["primary"], g, primary_error),
        }
    return record


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
