"""What the runner knows about its guests between ticks: trust in their readings, the targets in force.

:class:`GuestState` turns one tick's readings into an :class:`Intake` (which readings are usable,
each guest's input state) and into the :class:`~wsrl.pipeline.control.GuestConditions` the control
stack decides with. It remembers, per guest, the target in force (the rails' starting point), what
the actuator is known to hold, and the newest reading time. A restarted runner starts each guest
from the size really in force (:meth:`GuestState.restore`), never from its provisioned size.
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
from wsrl.units import MIB

RESTORE_TOLERANCE_FRAC = 0.01
"""A reported size this close below the restored target (share of provisioned, at least 32 MiB) agrees."""


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
        self.set_bytes: NDArray[np.float64] = np.full((1, n), np.nan)
        """The last target this run set (NaN: none yet). A reading that reports more in force than
        that does not move the rails' starting point up (see :meth:`take`)."""
        self.last_time_ms: NDArray[np.float64] = np.full((1, n), np.nan)
        self.health = safety.InputHealth(n, safety_config.hold_intervals_before_fallback)
        self.names = [s.name for s in specs]
        self.restored: NDArray[np.float64] = np.full((1, n), np.nan)
        """The targets a previous run left (NaN: none), until each guest's first trusted reading."""
        self._anchored: NDArray[np.bool_] = np.zeros((1, n), dtype=bool)

    def restore(self, targets_bytes: dict[str, float]) -> None:
        """The targets the previous run set (from its :class:`~wsrl.runner.target_store.TargetStore`).

        On a guest's first trusted reading the target in force is what its backend reports (the
        cgroup's limit, the VMM's balloon size), except where the reported size lies between the
        restored target (less a tolerance) and just below the provisioned size: the VMM is still
        moving towards the target the previous run set (a balloon inflating), so that target is in
        force. A size at the provisioned one (a VM booted again, a group relaxed) or below the
        restored target (someone else shrank it) is what is in force. A source that cannot tell
        (no target reported) is taken to hold the restored target, and so is a guest until its
        first trusted reading.
        """
        self.restored = np.array([[targets_bytes.get(name, np.nan) for name in self.names]], dtype=float)
        self.current = np.where(np.isfinite(self.restored) & ~self._anchored, self.restored, self.current)

    def _in_force(self, reported: NDArray[np.float64], first: NDArray[np.bool_]) -> NDArray[np.float64]:
        """The target in force on each guest's first trusted reading (see :meth:`restore`)."""
        tolerance = np.maximum(RESTORE_TOLERANCE_FRAC * self.provisioned, 32 * MIB)
        restored = self.restored
        with np.errstate(invalid="ignore"):
            agrees = (reported >= restored - tolerance) & (reported <= self.provisioned - tolerance)
        use_restored = first & np.isfinite(restored) & (agrees | np.isnan(reported))
        return np.where(use_restored, restored, reported)

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
        reported = self._in_force(inputs.target_bytes, fresh & ~self._anchored)
        self._anchored |= fresh
        # A size reported above the last target this run set is never the rails' starting point:
        # a balloon still inflating holds the target it was given, and a guest that claims more
        # (a lie: a VMM's balloon size is what the guest's driver says) must not turn growth into
        # a rate-limited "shrink" that the host-reserve rail then pays for with the other guests.
        with np.errstate(invalid="ignore"):
            started = np.where(reported > self.set_bytes, self.set_bytes, reported)
        self.current = np.where(fresh & np.isfinite(started), started, self.current)
        self.known_target = np.where(fresh, reported, self.known_target)
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
        self.set_bytes[0, guest] = target_bytes

    def apply_failed(self, guest: int) -> None:
        """An apply failed or stalled: it may still land, so what the actuator holds is unknown."""
        self.known_target[0, guest] = np.nan

    def unchanged(self, guest: int, target_bytes: int, page_bytes: int) -> bool:
        """The actuator is known to hold ``target_bytes`` already (within a page)."""
        known = float(self.known_target[0, guest])
        return math.isfinite(known) and abs(target_bytes - known) < page_bytes
