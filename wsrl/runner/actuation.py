"""The runner's actuators: apply each guest's target, and leave every guest safe on exit.

Every backend call runs on the shared worker with a deadline (:mod:`wsrl.runner.deadline`); one
guest's failure never keeps the others from being served.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from wsrl.backends.base import GuestBackend
from wsrl.pipeline.control import error_line
from wsrl.runner.deadline import GuestCalls
from wsrl.runner.guest_state import GuestState
from wsrl.runner.metrics import RunnerMetrics
from wsrl.units import PAGE_BYTES

OnExit = Literal["relax", "hold", "unlimited"]


class Actuators:
    """Applies targets through the backends (never in dry-run mode).

    Args:
        backends: one per guest, in config order.
        calls: the deadline-bounded worker.
        metrics: counts backend errors.
        state: updated with what each actuator holds.
        dry_run: apply nothing.
        timeout_s: the longest wait for one call.

    """

    def __init__(
        self,
        backends: Sequence[GuestBackend],
        calls: GuestCalls,
        metrics: RunnerMetrics,
        state: GuestState,
        *,
        dry_run: bool,
        timeout_s: float,
    ) -> None:
        self.backends = list(backends)
        self.calls = calls
        self.metrics = metrics
        self.state = state
        self.dry_run = dry_run
        self.timeout_s = timeout_s

    def apply(
        self, final: list[int], holding: NDArray[np.bool_], expired: str | None, errors: list[list[str]]
    ) -> tuple[list[str], list[bool]]:
        """Apply ``final`` per guest; returns each guest's outcome and whether it was applied.

        Shrinks go first, growths after them and only into room the limits in force leave under
        capacity - reserve: where a shrink failed (a memcg that could not reclaim in time, a
        stalled balloon), a growth is cut to what fits (``final`` is updated to what was set) or
        deferred, so that the limits in force never add up to more than the room because one
        backend fell behind.

        Outcomes: ``dry_run``, ``hold`` (input not trusted), ``expired`` (the decision came too
        late), ``unchanged`` (already in force), ``applied``, ``deferred`` (a growth with no room
        in force yet) or ``apply_error`` (added to ``errors``).
        """
        state = self.state
        current = np.where(np.isfinite(state.current[0]), state.current[0], state.provisioned[0])
        in_force = current.astype(float)
        room = state.capacity_bytes - state.reserve_bytes
        outcomes = [""] * len(self.backends)
        growing = [final[g] > current[g] for g in range(len(self.backends))]
        order = [g for g in range(len(self.backends)) if not growing[g]]
        order += [g for g in range(len(self.backends)) if growing[g]]
        for g in order:
            backend = self.backends[g]
            if self.dry_run:
                outcome = "dry_run"
            elif holding[0, g]:
                outcome = "hold"
            elif expired is not None:
                outcome = "expired"
            elif state.unchanged(g, final[g], PAGE_BYTES):
                outcome = "unchanged"
            else:
                if growing[g]:
                    fits = room - (in_force.sum() - in_force[g])
                    if final[g] > fits:
                        allowed = int(max(fits, current[g]) // PAGE_BYTES * PAGE_BYTES)
                        errors[g].append(
                            f"growth to {final[g]} bytes cut to {max(allowed, int(current[g]))}: the limits "
                            "in force leave no more room (another guest's shrink did not take effect)"
                        )
                        final[g] = max(allowed, int(current[g]))
                if growing[g] and final[g] <= current[g]:
                    outcome = "deferred"
                else:
                    outcome = self._apply_one(g, backend, final[g], errors)
                    # a failed call may still land: count the larger of the two sizes as in force
                    in_force[g] = final[g] if outcome == "applied" else max(in_force[g], final[g])
            outcomes[g] = outcome
        return outcomes, [outcome == "applied" for outcome in outcomes]

    def _apply_one(self, g: int, backend: GuestBackend, target_bytes: int, errors: list[list[str]]) -> str:
        try:
            self.calls.call(g, "apply", backend.apply, target_bytes, timeout_s=self.timeout_s)
        except Exception as exc:  # BackendError, a stall, or a backend bug: a failed apply either way
            self.state.apply_failed(g)
            errors[g].append(f"apply: {error_line(exc)}")
            self.metrics.backend_error(g, "apply")
            return "apply_error"
        self.state.applied(g, target_bytes)
        return "applied"

    def leave(self, on_exit: OnExit, *, relax: bool) -> list[dict[str, Any]]:
        """Leave every guest as ``on_exit`` says; returns the ``exit`` record's per-guest entries.

        ``relax`` gives each guest its provisioned size, ``hold`` keeps the target in force,
        ``unlimited`` removes the limit. Dry-run mode changed nothing, so it relaxes nothing;
        ``relax=False`` (a one-shot run) keeps the targets.
        """
        results: list[dict[str, Any]] = []
        for g, backend in enumerate(self.backends):
            entry: dict[str, Any] = {"name": backend.name, "relaxed_to_bytes": None, "error": None}
            if not relax or self.dry_run:
                entry["skipped"] = "dry-run: nothing was applied" if relax else "one-shot run: targets kept"
            else:
                size = {
                    "relax": int(self.state.provisioned[0, g]),
                    "hold": int(self.state.current[0, g]),
                    "unlimited": None,
                }[on_exit]
                try:
                    self.calls.call(g, "relax", backend.relax, size, timeout_s=self.timeout_s)
                    entry["relaxed_to_bytes"] = size
                    entry["relaxed_to"] = "unlimited" if size is None else on_exit
                except Exception as exc:  # one guest's failure must not keep the others unrelaxed
                    entry["error"] = error_line(exc)
                    self.metrics.backend_error(g, "relax")
            results.append(entry)
        return results
