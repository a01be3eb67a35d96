"""Meta's Senpai: keep a light, constant memory pressure so that memory holds only what is used.

Source: J. Weiner et al., "TMO: Transparent Memory Offloading in Datacenters", ASPLOS 2022 (20-32 %
of memory saved across Meta's fleet); the original script ``senpai.py``
(github.com/facebookincubator/senpai) and oomd's production plugin ``Senpai.cpp``
(github.com/facebookincubator/oomd, ``src/oomd/plugins/``).

Two policies:

``senpai`` (:class:`SenpaiPolicy`), the original script. Every second (one *tick*) it reads the
cgroup's ``memory.pressure`` ``some total`` (microseconds stalled) and adds the increase to an
integral. If the integral exceeds ``pressure`` (10 ms) it backs off, ``limit *= 1 + min((integral /
pressure / 20)^2 * 1.0, 1.0)``; otherwise, once ``interval`` (6) ticks have passed since the last
adjustment, it probes, ``limit *= 1 - min((pressure / max(integral, 1 us) / 10)^2 * 0.01, 0.01)``.
Each adjustment clears the integral and restarts the 6-tick countdown (``interval - 1`` after an
adjustment, ``interval`` at start, as in the script). The limit starts at ``memory.current``, is
clamped to [100 MiB, 100 GiB] and rounded down to a page; if someone else changed the limit since
the last write, the script restarts from ``memory.current``, and so does this policy (when the
target the snapshot reports differs from the policy's own limit by more than a page).

``senpai-reclaim`` (:class:`SenpaiReclaimPolicy`), oomd's "immediate backoff" mode. oomd runs its
plugins every second; after each probe the plugin waits ``interval`` (6) ticks, then on every tick
checks whether ``max(avg10, avg60)`` of memory *and* io PSI ``some`` are all below
``pressure_pct`` (0.1 %). If so, and ``memory.current`` is above ``limit_min = 100 MiB +
unreclaimable`` (never below ``memory.min``), it reclaims ``(current - limit_min) * max_probe``
(1 %) at once (``memory.high`` written and immediately reset, or ``memory.reclaim``) and restarts
the countdown; otherwise it does nothing and checks again next tick. A probe therefore happens
every 7 ticks while pressure stays low (the countdown of 6, then the acting tick), as in the code.
There is no limit to back off from: pressure only stops the reclaiming.

How the 1-second logic runs on wsrl's snapshots (``interval_s``, 10 s in the simulator):
each snapshot covers ``N = interval_s / tick_s`` ticks (a :class:`~wsrl.policies.common.TickClock`
counts whole seconds, so 2.5 s snapshots give 2 or 3 ticks). The policy replays those N ticks in
order, with the exact per-tick rules above, before proposing the limit in force at the end of the
interval for the next one. The snapshot only says how much stall accumulated over the whole
interval, not when, so ``senpai`` spreads it evenly over the N ticks (delta / N each): PSI ``total``
is a time integral and, without finer samples, an even split is the unbiased reading of it. The
decisions depend on the stall only through the integral, which sums the ticks anyway, so the even
split changes only on which of the N ticks the integral crosses ``pressure``, never by how much it
does over the interval. With 1-second snapshots the replay is the script itself, tick for tick.
``senpai-reclaim`` sees the pressure averages as they are at the snapshot on each of its N ticks
(they are averages over 10 s and 60 s, which a 10 s interval barely moves), and applies every
probe that falls in the interval, compounding (a second probe reclaims 1 % of what the first
left). Where the snapshot has no ``avg60`` the policy keeps one from ``psi_some_total_s`` with the
kernel's exponential window, ``avg60 <- avg60 exp(-dt/60) + 100 stall_frac (1 - exp(-dt/60))``.

Deviations, each forced by what the simulator offers:

* The simulator has no io PSI: ``senpai-reclaim`` treats io pressure as zero, so only memory PSI
  can stop it.
* ``memory.high`` (throttle and reclaim, never OOM) becomes the guest's target: a balloon target or
  a memcg limit that OOM-kills below what the guest needs to survive. The limit range is also
  clamped to the guest's ``[floor, provisioned]`` so that the allocator passes it through
  unchanged (otherwise every clip would look like "someone else changed the limit").
* oomd's ``unreclaimable`` is ``memory.current`` minus file cache minus all anon when swap is on;
  the snapshot gives ``usage - resident pages`` (the unevictable part), i.e. all anon counts as
  swappable, as oomd assumes.
* A one-shot reclaim leaves the workload free to grow; a target stays in force. Between probes
  ``senpai-reclaim`` therefore holds its last target raised by what the guest faulted back in, at
  least at what a stalled balloon reached, and released after an OOM kill
  (:func:`wsrl.policies.common.held_target`); it starts from the target the snapshot reports.
"""

from __future__ import annotations

import numpy as np

from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.policies.common import (
    TickClock,
    counter_delta,
    elapsed_s,
    held_target,
    masked,
    oom_since,
    page_floor,
    refault_bytes,
    unevictable_bytes,
)
from wsrl.units import GIB, MIB, PAGE_BYTES

AVG60_WINDOW_S = 60.0
"""The kernel's PSI ``avg60`` window."""


def _check_positive(**values: float) -> None:
    for key, value in values.items():
        if not value > 0:
            raise ValueError(f"{key} must be > 0, got {value}")


class SenpaiPolicy:
    """The original Senpai script (see the module docstring), batched over ``[hosts, guests]``.

    Args:
        pressure_us: target stall per adjustment window, microseconds (``--pressure``, 10 ms).
        interval_ticks: ticks between probes (``--interval``, 6).
        tick_s: seconds per tick (the script's ``time.sleep(1)``).
        max_probe: largest downward step (``--max-probe``, 0.01).
        max_backoff: largest upward step (``--max-backoff``, 1.0).
        coeff_probe: ``--coeff-probe`` (10): the probe reaches ``max_probe`` when the stall falls
            to ``pressure / coeff_probe``.
        coeff_backoff: ``--coeff-backoff`` (20): the backoff reaches ``max_backoff`` when the
            stall reaches ``pressure * coeff_backoff``.
        min_size_bytes: ``--min-size`` (100 MiB).
        max_size_bytes: ``--max-size`` (100 GiB).

    """

    name = "senpai"

    def __init__(
        self,
        *,
        pressure_us: float = 10_000.0,
        interval_ticks: int = 6,
        tick_s: float = 1.0,
        max_probe: float = 0.01,
        max_backoff: float = 1.0,
        coeff_probe: float = 10.0,
        coeff_backoff: float = 20.0,
        min_size_bytes: float = 100 * MIB,
        max_size_bytes: float = 100 * GIB,
    ) -> None:
        _check_positive(
            pressure_us=pressure_us,
            interval_ticks=interval_ticks,
            tick_s=tick_s,
            coeff_probe=coeff_probe,
            coeff_backoff=coeff_backoff,
            max_size_bytes=max_size_bytes,
        )
        if not 0 <= max_probe < 1 or max_backoff < 0 or min_size_bytes < 0:
            raise ValueError("max_probe must be in [0, 1), max_backoff and min_size_bytes >= 0")
        self.pressure_us = float(pressure_us)
        self.interval_ticks = int(interval_ticks)
        self.tick_s = float(tick_s)
        self.max_probe = float(max_probe)
        self.max_backoff = float(max_backoff)
        self.coeff_probe = float(coeff_probe)
        self.coeff_backoff = float(coeff_backoff)
        self.min_size_bytes = float(min_size_bytes)
        self.max_size_bytes = float(max_size_bytes)
        self.limit_bytes: np.ndarray | None = None

    def _bounds(self, snapshot: HostSnapshot) -> tuple[np.ndarray, np.ndarray]:
        upper = np.minimum(self.max_size_bytes, snapshot.provisioned_bytes)
        lower = np.minimum(np.maximum(self.min_size_bytes, snapshot.floor_bytes), upper)
        return lower, upper

    @staticmethod
    def _clamp(limit: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
        clamped: np.ndarray = np.maximum(page_floor(np.clip(limit, lower, upper)), lower)
        return clamped

    def reset(self, snapshot: HostSnapshot) -> None:
        """Start as the script does: limit at ``memory.current``, integral 0, ``interval`` ticks to wait."""
        lower, upper = self._bounds(snapshot)
        self.limit_bytes = masked(snapshot, self._clamp(snapshot.usage_bytes, lower, upper))
        self.integral_us = np.zeros(snapshot.shape)
        self.grace_ticks = np.full(snapshot.shape, self.interval_ticks, dtype=np.int64)
        self._last_total_s = np.asarray(snapshot.psi_some_total_s, dtype=float).copy()
        self._clock = TickClock(snapshot.time_ms, self.tick_s)

    def decide(self, snapshot: HostSnapshot) -> np.ndarray:
        """Replay the ticks since the last snapshot; propose the limit in force at their end."""
        if self.limit_bytes is None:
            self.reset(snapshot)
        assert self.limit_bytes is not None
        ticks = self._clock.advance(snapshot.time_ms)
        if ticks:
            lower, upper = self._bounds(snapshot)
            # read_limit() != self.limit: another writer (the allocator squeezing the guest, an
            # operator) changed the limit; the script then restarts from memory.current.
            external = snapshot.mask & (np.abs(snapshot.target_bytes - self.limit_bytes) > PAGE_BYTES)
            # The kernel counts whole microseconds; rounding also keeps float noise off the ties.
            stall_us = np.round(counter_delta(snapshot.psi_some_total_s, self._last_total_s) * 1e6)
            self._last_total_s = np.asarray(snapshot.psi_some_total_s, dtype=float).copy()
            per_tick_us = stall_us / ticks
            for _ in range(ticks):
                self._tick(snapshot, per_tick_us, external, lower, upper)
        return masked(snapshot, self.limit_bytes)

    def _tick(
        self,
        snapshot: HostSnapshot,
        stall_us: np.ndarray,
        external: np.ndarray,
        lower: np.ndarray,
        upper: np.ndarray,
    ) -> None:
        """One second of the script for every guest at once (``external`` is updated in place)."""
        assert self.limit_bytes is not None
        self.integral_us = self.integral_us + stall_us
        backoff = self.integral_us > self.pressure_us
        probe = ~backoff & (self.grace_ticks <= 0)
        wait = ~backoff & ~probe
        err_up = self.integral_us / self.pressure_us
        up = np.minimum((err_up / self.coeff_backoff) ** 2 * self.max_backoff, self.max_backoff)
        err_down = self.pressure_us / np.maximum(self.integral_us, 1.0)
        down = np.minimum((err_down / self.coeff_probe) ** 2 * self.max_probe, self.max_probe)
        factor = np.where(backoff, up, -down)
        act = snapshot.mask & (backoff | probe)
        scaled = np.where(external, snapshot.usage_bytes, self.limit_bytes * (1.0 + factor))
        self.limit_bytes = np.where(act, self._clamp(scaled, lower, upper), self.limit_bytes)
        self.integral_us = np.where(act, 0.0, self.integral_us)
        self.grace_ticks = np.where(
            act, self.interval_ticks - 1, np.where(wait, self.grace_ticks - 1, self.grace_ticks)
        )
        external &= ~act


class SenpaiReclaimPolicy:
    """oomd's Senpai in immediate-backoff mode (see the module docstring), batched.

    Args:
        pressure_pct: reclaim only while every PSI ``some`` average is below this, percent (0.1).
        interval_ticks: ticks to wait after a probe (``interval``, 6).
        tick_s: seconds per oomd tick (1).
        max_probe: fraction of ``current - limit_min`` reclaimed per probe (0.01).
        min_size_bytes: ``limit_min_bytes`` (100 MiB), added to the unreclaimable memory.

    Attributes:
        avg60_pct: the memory PSI ``some`` avg60 the policy keeps (or read from the snapshot).

    """

    name = "senpai-reclaim"

    def __init__(
        self,
        *,
        pressure_pct: float = 0.1,
        interval_ticks: int = 6,
        tick_s: float = 1.0,
        max_probe: float = 0.01,
        min_size_bytes: float = 100 * MIB,
    ) -> None:
        _check_positive(pressure_pct=pressure_pct, tick_s=tick_s)
        if interval_ticks < 0 or not 0 < max_probe < 1 or min_size_bytes < 0:
            raise ValueError("interval_ticks and min_size_bytes must be >= 0, max_probe in (0, 1)")
        self.pressure_pct = float(pressure_pct)
        self.interval_ticks = int(interval_ticks)
        self.tick_s = float(tick_s)
        self.max_probe = float(max_probe)
        self.min_size_bytes = float(min_size_bytes)
        self.target_bytes: np.ndarray | None = None

    def reset(self, snapshot: HostSnapshot) -> None:
        """Hold the current target; wait ``interval`` ticks before the first probe, as oomd does."""
        self.target_bytes = masked(snapshot, np.asarray(snapshot.target_bytes, dtype=float).copy())
        self.countdown_ticks = np.full(snapshot.shape, self.interval_ticks, dtype=np.int64)
        avg60 = getattr(snapshot, "psi_some_avg60", None)
        self.avg60_pct = np.asarray(snapshot.psi_some_avg10 if avg60 is None else avg60, dtype=float).copy()
        self._last_total_s = np.asarray(snapshot.psi_some_total_s, dtype=float).copy()
        self._last_refault = np.asarray(snapshot.refault_total, dtype=float).copy()
        self._last_oom = np.asarray(snapshot.oom_kills_total, dtype=float).copy()
        self._last_ms = int(snapshot.time_ms)
        self._clock = TickClock(snapshot.time_ms, self.tick_s)

    def _update_avg60(self, snapshot: HostSnapshot) -> np.ndarray:
        given = getattr(snapshot, "psi_some_avg60", None)
        dt = elapsed_s(self._last_ms, snapshot)
        if dt > 0:
            stall_frac = np.clip(counter_delta(snapshot.psi_some_total_s, self._last_total_s) / dt, 0.0, 1.0)
            decay = np.exp(-dt / AVG60_WINDOW_S)
            self.avg60_pct = self.avg60_pct * decay + 100.0 * stall_frac * (1.0 - decay)
            self._last_total_s = np.asarray(snapshot.psi_some_total_s, dtype=float).copy()
            self._last_ms = int(snapshot.time_ms)
        if given is not None:
            self.avg60_pct = np.asarray(given, dtype=float).copy()
        return self.avg60_pct

    def decide(self, snapshot: HostSnapshot) -> np.ndarray:
        """Replay oomd's ticks since the last snapshot; propose the size after any reclaim."""
        if self.target_bytes is None:
            self.reset(snapshot)
        assert self.target_bytes is not None
        avg60 = self._update_avg60(snapshot)
        io_pressure_pct = 0.0  # the simulator has no io PSI
        worst = np.maximum(np.maximum(snapshot.psi_some_avg10, avg60), io_pressure_pct)
        quiet = snapshot.mask & (worst < self.pressure_pct)
        grown = refault_bytes(snapshot, self._last_refault)
        oom = oom_since(snapshot, self._last_oom)
        self._last_refault = np.asarray(snapshot.refault_total, dtype=float).copy()
        self._last_oom = np.asarray(snapshot.oom_kills_total, dtype=float).copy()
        held = held_target(snapshot, self.target_bytes, grown, oom)
        limit_min = np.maximum(self.min_size_bytes + unevictable_bytes(snapshot), snapshot.floor_bytes)
        current = np.asarray(snapshot.usage_bytes, dtype=float).copy()
        reclaimed = np.zeros(snapshot.shape, dtype=bool)
        for _ in range(self._clock.advance(snapshot.time_ms)):
            waiting = self.countdown_ticks > 0
            self.countdown_ticks = np.where(waiting, self.countdown_ticks - 1, self.countdown_ticks)
            act = ~waiting & quiet & ~oom & (current > limit_min)
            probed = page_floor(limit_min + (current - limit_min) * (1.0 - self.max_probe))
            current = np.where(act, probed, current)
            self.countdown_ticks = np.where(act, self.interval_ticks, self.countdown_ticks)
            reclaimed |= act
        self.target_bytes = masked(snapshot, np.where(reclaimed, np.minimum(current, held), held))
        return self.target_bytes.copy()
