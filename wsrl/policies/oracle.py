"""``oracle``: knows the future demand; the upper bound on savings with zero violations (simulation only).

Each guest is proposed the smallest size that causes no refault and no OOM over the next interval:
the demand of the next step (every page population's size, after any OOM restart ramp, plus the
unevictable part) and one page of slack against rounding. Nothing is ever evicted, so nothing
comes back. A balloon can only deflate at its finite speed, so for balloon guests the oracle looks
``lookahead_steps`` ahead and proposes ``max_k (demand_{t+k} - (k - 1) * deflate_per_step)``: just
enough that the balloon can still keep up with every coming peak. memcg limits act at once and
need only the next step. Floors, the host's capacity (the allocator) and host swap can still cost
refaults the oracle cannot avoid; on the bundled scenarios they do not.

Peeking without disturbing the run: demand sources draw random numbers (bursts, app switches) as
they are stepped, so calling the simulator's own source would change the run. The oracle steps a
``copy.deepcopy`` of the source instead (its random generators included) through the same calls
the simulator makes (``at(n * step_s, step_s)`` for step ``n``): the copy then yields exactly the
demand the simulator will see. The copy is taken once, kept a few steps ahead and re-taken when the
simulator was reset, replaced, or stepped without the oracle seeing it in between in a way it
cannot follow (its step counter went backwards).
"""

from __future__ import annotations

import copy

import numpy as np

from wsrl.errors import WsrlError
from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.policies.common import masked
from wsrl.sim.arrays import ACTUATOR_BALLOON, DemandSource
from wsrl.sim.che import population_sum
from wsrl.sim.simulator import Simulator
from wsrl.units import PAGE_BYTES


def simulator_of(snapshot: HostSnapshot) -> Simulator:
    """The simulator behind a snapshot; :class:`WsrlError` when the snapshot comes from elsewhere."""
    sim = snapshot.extra.get("simulator")
    if not isinstance(sim, Simulator):
        raise WsrlError(
            "policy 'oracle' needs the simulator in snapshot.extra['simulator'] (it reads future "
            "demand, so it runs only in simulation); this snapshot has none "
            f"(extra keys: {sorted(snapshot.extra) or 'none'})"
        )
    return sim


class OraclePolicy:
    """Propose next-step demand plus unevictable memory (see the module docstring).

    Args:
        lookahead_steps: steps of future demand a balloon guest is prepared for.
        margin_bytes: slack added to every proposal (one page: guards against float rounding).

    """

    name = "oracle"

    def __init__(self, *, lookahead_steps: int = 30, margin_bytes: float = PAGE_BYTES) -> None:
        if lookahead_steps < 1 or margin_bytes < 0:
            raise ValueError("lookahead_steps must be >= 1 and margin_bytes >= 0")
        self.lookahead_steps = int(lookahead_steps)
        self.margin_bytes = float(margin_bytes)
        self._sim: Simulator | None = None

    def reset(self, snapshot: HostSnapshot) -> None:
        """Copy the simulator's demand source as it is now."""
        self._sync(simulator_of(snapshot))

    def _sync(self, sim: Simulator) -> None:
        self._sim = sim
        self._seed = sim.seed
        self._shadow: DemandSource = copy.deepcopy(sim.setup.demand)
        self._produced = sim.steps
        self._seen = sim.steps
        self._future: dict[int, np.ndarray] = {}

    def _demand_sizes(self, sim: Simulator, steps: int) -> np.ndarray:
        """``[k, hosts, guests, populations]`` population sizes for steps ``n+1 .. n+steps``."""
        now = sim.steps
        while self._produced < now + steps:
            self._produced += 1
            size, _ = self._shadow.at(self._produced * sim.step_s, sim.step_s)
            if self._produced > now:
                self._future[self._produced] = np.array(size, dtype=float)
        for old in [k for k in self._future if k < now]:
            del self._future[old]
        return np.stack([self._future[now + k] for k in range(1, steps + 1)])

    def _agrees(self, sim: Simulator) -> bool:
        """Whether the demand the copy predicted for the current step is what the simulator has.

        Compared on file populations, which OOM kills and restarts leave alone; a mismatch means
        the simulator was reset or stepped in a way the copy did not follow.
        """
        predicted = self._future.get(sim.steps)
        if predicted is None:
            return True
        files = ~sim.model.pop_is_anon
        return bool(np.allclose(predicted[files], sim.model.size_bytes[files], rtol=1e-12, atol=0.0))

    def decide(self, snapshot: HostSnapshot) -> np.ndarray:
        """The smallest sizes with no refault over the next interval(s)."""
        sim = simulator_of(snapshot)
        if sim is not self._sim or sim.seed != self._seed or sim.steps < self._seen or not self._agrees(sim):
            self._sync(sim)
        self._seen = sim.steps
        guests = sim.setup.guests
        model = sim.model
        is_balloon = guests.actuator == ACTUATOR_BALLOON
        steps = self.lookahead_steps if is_balloon[guests.mask].any() else 1
        sizes = self._demand_sizes(sim, steps)
        # The OOM restart ramp: a killed workload's anon comes back over oom_restart_s (the model
        # scales anon sizes by the ramp before anything else).
        k = np.arange(1, steps + 1)[:, None, None]
        restart_s = np.maximum(guests.oom_restart_s, 1e-9)
        ramp = np.minimum(1.0, model.restart_frac[None] + k * sim.step_s / restart_s)
        sizes = sizes * np.where(model.pop_is_anon[None], ramp[..., None], 1.0)
        need = population_sum(sizes) + np.where(guests.mask, guests.unevictable_bytes, 0.0)[None]
        # memcg limits act at once: a huge finite "speed" keeps only the k = 1 term (need itself).
        instant = np.finfo(float).max / (steps + 1)
        deflate_per_step = np.where(is_balloon, guests.deflate_bytes_per_s * sim.step_s, instant)
        reachable = need - (k - 1) * deflate_per_step[None]
        target = reachable.max(axis=0) + self.margin_bytes
        return masked(snapshot, np.minimum(target, snapshot.provisioned_bytes))
