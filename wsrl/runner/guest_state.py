"""What the runner knows about its guests between ticks: trust in their readings, the targets in force.

:class:`GuestState` turns one tick's readings into an :class:`Intake` (which readings are usable,
each guest's input state) and into the :class:`~wsrl.pipeline.control.GuestConditions` the control
stack decides with. It remembers, per guest, the target in force (the rails' starting point), what
the actuator is known to hold, and the newest reading time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from wsrl.inputs.live import GuestReading, GuestSpec, ReadingArrays
from wsrl.pipeline.control import GuestConditions
from wsrl.runner import safety
from wsrl.runner.config import SafetySection


@dataclass
class Intake:
    """One tick's readings, sorted (arrays ``[1, guests]``).

    Attributes:
        readings: the readings (``None``: the guest could not be read).
        inputs: their numbers.
        verdict: missing, stale, malformed, with reasons.
        states: ``OK``, ``HOLD`` or ``FALLBACK`` per guest.
        time_ms: the control clock: the newest usable reading's time, else the host clock.

    """

    readings: list[GuestReading | None]
    inputs: ReadingArrays
    verdict: safety.InputVerdict
    states: NDArray[np.int64]
    time_ms: int

    @property
    def usable(self) -> NDArray[np.bool_]:
        """Readings that may enter the snapshot."""
        return self.verdict.usable

    @property
    def fresh(self) -> NDArray[np.bool_]:
        """Readings that are trusted this tick (usable and not stale)."""
        return ~self.verdict.bad

    def usable_readings(self) -> list[GuestReading | None]:
        """The readings, ``None`` where not usable."""
        return [r if self.usable[0, g] else None for g, r in enumerate(self.readings)]


class GuestState:
    """Per guest: the target in force, what the actuator holds, the newest reading, input health.

    Args:
        specs: the configured guests, in config order.
        safety_config: the ``[safety]`` section.
        capacity_bytes: the host's memory.
        reserve_bytes: what the host keeps for itself (``host.reserve_gib``).
        clock_skew_s: how far ahead of the host clock a reading may be (``inf``: a simulated clock).

    """

    def __init__(
        self,
        specs: Sequence[GuestSpec],
        safety_config: SafetySection,
        *,
        capacity_bytes: float,
        reserve_bytes: float,
        clock_skew_s: float,
    ) -> None:
        n = len(specs)
        self.safety = safety_config
        self.capacity_bytes = capacity_bytes
        self.reserve_bytes = reserve_bytes
        self.clock_skew_s = clock_skew_s
        self.provisioned: NDArray[np.float64] = np.array([[s.provisioned_bytes for s in specs]], dtype=float)
        self.floor: NDArray[np.float64] = np.array([[s.floor_bytes for s in specs]], dtype=float)
        self.current: NDArray[np.float64] = self.provisioned.copy()
        """Each guest's target in force, the rails' starting point: from its last good reading or the
        last successful apply (until one is known, the provisioned size, so the shrink rail starts
        from there; an unlimited group counts as provisioned too)."""
        self.known_target: NDArray[np.float64] = np.full((1, n), np.nan)
        """What the actuator is known to hold (NaN: unknown or unlimited), to skip needless applies."""
        self.last_time_ms: NDArray[np.float64] = np.full((1, n), np.nan)
        self.health = safety.InputHealth(n, safety_config.hold_intervals_before_fallback)

    def take(self, readings: list[GuestReading | None], now_ms: float) -> Intake:
        """Sort this tick's readings and update what is known (see :func:`safety.check_inputs`)."""
        inputs = ReadingArrays.from_readings(readings)
        verdict = safety.check_inputs(
            inputs,
            previous_time_ms=self.last_time_ms,
            now_ms=now_ms,
            stale_after_s=self.safety.stale_after_s,
            provisioned_bytes=self.provisioned,
            usage_factor=self.safety.malformed_usage_factor,
            clock_skew_s=self.clock_skew_s,
        )
        usable = verdict.usable
        newest_ms = np.fmax(inputs.time_ms, self.last_time_ms)
        if verdict.stepped_back is not None:  # a clock stepped back: the reading starts a new time line
            newest_ms = np.where(verdict.stepped_back, inputs.time_ms, newest_ms)
        self.last_time_ms = np.where(usable, newest_ms, self.last_time_ms)
        states = self.health.update(verdict.bad)
        fresh = ~verdict.bad
        self.current = np.where(fresh & np.isfinite(inputs.target_bytes), inputs.target_bytes, self.current)
        self.known_target = np.where(fresh, inputs.target_bytes, self.known_target)
        time_ms = int(now_ms)
        if usable.any():
            time_ms = int(np.nanmax(np.where(usable, inputs.time_ms, np.nan)))
        return Intake(readings=readings, inputs=inputs, verdict=verdict, states=states, time_ms=time_ms)

    def conditions(self, intake: Intake) -> GuestConditions:
        """What the control stack needs beyond the snapshot: trust, input states, targets in force."""
        usable = intake.usable
        return GuestConditions(
            configured=np.ones_like(usable),
            usable=usable,
            current_bytes=self.current.copy(),
            provisioned_bytes=self.provisioned,
            floor_bytes=np.minimum(self.floor, self.provisioned),
            input_state=intake.states,
            signals=intake.inputs.signals(intake.fresh),
            capacity_bytes=np.array([self.capacity_bytes]),
            reserve_bytes=np.array([self.reserve_bytes]),
        )

    def applied(self, guest: int, target_bytes: int) -> None:
        """The actuator took ``target_bytes``."""
        self.current[0, guest] = target_bytes
        self.known_target[0, guest] = target_bytes

    def apply_failed(self, guest: int) -> None:
        """An apply failed or stalled: it may still land, so what the actuator holds is unknown."""
        self.known_target[0, guest] = np.nan

    def unchanged(self, guest: int, target_bytes: int, page_bytes: int) -> bool:
        """The actuator is known to hold ``target_bytes`` already (within a page)."""
        known = float(self.known_target[0, guest])
        return math.isfinite(known) and abs(target_bytes - known) < page_bytes
