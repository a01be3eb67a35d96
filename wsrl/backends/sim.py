"""The simulator as a live backend: a runner config runs end to end with no host.

One :class:`SimWorld` holds one :class:`~wsrl.sim.simulator.Simulator` built from a scenario (a
name in ``envs/scenarios`` or a TOML path); each runner guest of kind ``"sim"`` is a
:class:`SimBackend` bound to the scenario guest of the same name on the scenario's first host.

**Time.** A reading's ``time_ms`` is the wall-clock time the world was created plus the simulated
time, so readings look like a live host's. With the ``simulated`` clock the world advances by
``seconds_per_tick`` (rounded to whole simulator steps, at least one) each time a runner tick
starts reading again, i.e. when a guest is read a second time since the last advance; the first
reads see the primed state at time 0. With the ``real`` clock it advances, whenever it is read,
by the whole steps the wall clock has moved since it was created. Either way a step uses the
targets applied since the previous one.

**Pushes.** After a step in which a guest was OOM-killed, its backend calls ``notify("oom")``, as a
guest agent would report it.

**State file.** When ``state_file`` is set, every :meth:`SimBackend.close` writes the simulated
guests' sizes and counters there (JSON, atomically): what the guests were left at when the runner
stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from wsrl.backends.base import BackendError, Notify
from wsrl.histogram import ALL_NODES, Histogram
from wsrl.inputs.live import GuestReading
from wsrl.sim.build import build_setup
from wsrl.sim.config import load_scenario
from wsrl.sim.simulator import Simulator

SimClock = Literal["simulated", "real"]


class SimWorld:
    """One simulated host shared by every :class:`SimBackend` of a runner (see the module docstring).

    Args:
        scenario: scenario name or TOML path.
        seed: demand seed.
        clock: ``simulated`` (advance per tick) or ``real`` (follow the wall clock).
        seconds_per_tick: simulated seconds per tick with the ``simulated`` clock.
        state_file: where :meth:`write_state` writes the guests' final state (``None``: nowhere).
        wall_clock: seconds since the epoch (``time.time``).

    Raises:
        ConfigError: the scenario cannot be loaded.

    """

    def __init__(
        self,
        scenario: str | Path,
        *,
        seed: int = 0,
        clock: SimClock = "simulated",
        seconds_per_tick: float = 10.0,
        state_file: str | Path | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if clock not in ("simulated", "real"):
            raise ValueError(f"clock must be 'simulated' or 'real', got {clock!r}")
        self.sim = Simulator(build_setup(load_scenario(scenario)))
        self.sim.reset(seed)
        self.clock = clock
        self.steps_per_tick = max(1, round(seconds_per_tick / self.sim.step_s))
        self.state_file = None if state_file is None else Path(state_file)
        self._wall_clock = wall_clock
        self.anchor_ms = int(wall_clock() * 1000)
        self._targets = self.sim.model.target_bytes.copy()
        self._read_since_step: set[str] = set()
        self._notify: dict[str, Notify] = {}
        self._lock = threading.Lock()
        names = self.sim.setup.guests.names[0]
        self._index = {str(n): g for g, n in enumerate(names) if self.sim.setup.guests.mask[0, g]}

    @property
    def guest_names(self) -> list[str]:
        """Names of the scenario's guests on its first host."""
        return list(self._index)

    def index_of(self, guest: str) -> int:
        """Slot of ``guest`` on the first host. Raises :class:`BackendError` for an unknown name."""
        if guest not in self._index:
            raise BackendError(
                f"sim: scenario {self.sim.setup.scenario!r} has no guest {guest!r} "
                f"(its guests: {', '.join(self._index)})"
            )
        return self._index[guest]

    def time_ms(self) -> int:
        """The simulated state's time as a wall-clock time, ms since the epoch."""
        return self.anchor_ms + round(self.sim.time_s * 1000.0)

    def subscribe(self, guest: str, notify: Notify) -> None:
        """Call ``notify`` when ``guest`` has news (an OOM kill)."""
        with self._lock:
            self._notify[guest] = notify

    def _advance(self, steps: int) -> None:
        for _ in range(steps):
            result = self.sim.step(self._targets)
            for guest, g in self._index.items():
                if result.oom_kills[0, g] and guest in self._notify:
                    self._notify[guest]("oom")

    def _catch_up(self, guest: str) -> None:
        if self.clock == "real":
            due = math.floor((self._wall_clock() * 1000 - self.anchor_ms) / (self.sim.step_s * 1000.0))
            self._advance(max(due - self.sim.steps, 0))
        elif guest in self._read_since_step:
            self._advance(self.steps_per_tick)
            self._read_since_step.clear()
        self._read_since_step.add(guest)

    def read(self, guest: str) -> GuestReading:
        """Advance as the clock says, then ``guest``'s reading."""
        g = self.index_of(guest)
        with self._lock:
            self._catch_up(guest)
            model = self.sim.model
            # At the guest's histogram source's resolution, as a real host's backend reads it.
            observed = self.sim.observed_histograms()[0, g]
            hist = np.clip(np.rint(observed), 0, None).astype(np.int64)
            horizons = self.sim.observed.horizon_ms()
            last = self.sim.last
            return GuestReading(
                name=guest,
                time_ms=self.time_ms(),
                visible_bytes=float(model.visible_bytes[0, g]),
                target_bytes=float(model.target_bytes[0, g]),
                usage_bytes=float(model.resident_bytes[0, g]),
                histogram=Histogram(
                    guest, ALL_NODES, [int(e) for e in self.sim.edges_ms], {"anon": hist[0], "file": hist[1]}
                ),
                refault_total=float(model.refault_anon_total[0, g] + model.refault_file_total[0, g]),
                swap_bytes=float(model.swap_bytes[0, g]),
                psi_some_total_s=float(model.psi_some_total_s[0, g]),
                psi_some_avg10=float(model.psi_some_avg10[0, g]),
                oom_kills_total=int(model.oom_kills_total[0, g]),
                balloon_stalled=bool(last is not None and last.balloon_stalled[0, g]),
                histogram_horizon_ms=math.inf if horizons is None else float(horizons[0, g]),
                source={"kind": "sim", "scenario": self.sim.setup.scenario},
            )

    def set_target(self, guest: str, target_bytes: float) -> None:
        """The target the next step uses (clamped by the model to ``[0, provisioned]``)."""
        g = self.index_of(guest)
        if not math.isfinite(target_bytes) or target_bytes < 0:
            raise BackendError(f"sim {guest!r}: target {target_bytes!r} is not a size")
        with self._lock:
            self._targets[0, g] = float(target_bytes)

    def provisioned_bytes(self, guest: str) -> float:
        """The scenario's provisioned size of ``guest``."""
        return float(self.sim.setup.guests.provisioned_bytes[0, self.index_of(guest)])

    def state(self) -> dict[str, object]:
        """The simulated guests' sizes and counters now."""
        model = self.sim.model
        return {
            "scenario": self.sim.setup.scenario,
            "time_ms": self.time_ms(),
            "steps": self.sim.steps,
            "guests": {
                guest: {
                    "pending_target_bytes": float(self._targets[0, g]),
                    "target_bytes": float(model.target_bytes[0, g]),
                    "visible_bytes": float(model.visible_bytes[0, g]),
                    "provisioned_bytes": float(self.sim.setup.guests.provisioned_bytes[0, g]),
                    "oom_kills_total": int(model.oom_kills_total[0, g]),
                }
                for guest, g in self._index.items()
            },
        }

    def write_state(self) -> None:
        """Write :meth:`state` to ``state_file`` atomically (no-op without one)."""
        if self.state_file is None:
            return
        with self._lock:
            text = json.dumps(self.state(), indent=2)
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, self.state_file)


class SimBackend:
    """One simulated guest behind the :class:`~wsrl.backends.base.GuestBackend` interface.

    Args:
        name: the runner's name for the guest.
        world: the shared simulated host.
        guest: the scenario guest's name (default ``name``).

    """

    def __init__(self, name: str, world: SimWorld, *, guest: str | None = None) -> None:
        self.name = name
        self.world = world
        self.guest = guest or name
        world.index_of(self.guest)  # fail at build time on an unknown name

    def start(self, notify: Notify) -> None:
        """Subscribe to the world's pushed reports."""
        self.world.subscribe(self.guest, notify)

    def read(self) -> GuestReading:
        """The simulated guest's reading (named as the runner names it)."""
        reading = self.world.read(self.guest)
        reading.name = self.name
        return reading

    def apply(self, target_bytes: int) -> None:
        """Set the simulated guest's target for the next step."""
        self.world.set_target(self.guest, float(target_bytes))

    def relax(self, target_bytes: int | None) -> None:
        """Leave the guest at ``target_bytes`` (``None``: its provisioned size, the sim's "no limit")."""
        size = self.world.provisioned_bytes(self.guest) if target_bytes is None else float(target_bytes)
        self.world.set_target(self.guest, size)

    def close(self) -> None:
        """Write the world's state file (if configured); never raises."""
        with contextlib.suppress(OSError):
            self.world.write_state()
