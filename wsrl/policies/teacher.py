"""Teachers for behaviour cloning and distillation, not reference policies.

``oracle-steady`` (simulation only, :class:`SteadyOracleTeacher`) is cloned from recorded decisions
(``wsrl bc``); ``refined`` (:class:`RefinedTeacher`) is distilled in action space (``wsrl distill``).

**oracle-steady.** Behaviour cloning copies a teacher's decisions into a learned policy's warm start.
The budget oracle (:class:`~wsrl.policies.oracle.OraclePolicy`) is the best teacher where a
guest's future follows from its past, and a misleading one where it does not: it shrinks a bursty
guest right up to its next burst, which it knows is coming and a causal student cannot know. A
student that copies that breaks the SLO on exactly those guests (docs/learning.md).

This teacher is the oracle on steady guests. On a bursty guest it keeps the larger of the oracle's
size and vpa's (:class:`~wsrl.policies.vpa.VpaPolicy`, which holds a percentile of window peaks):
what a causal policy can do there is hold the memory the last burst needed. A guest counts as
bursty while its working-set peak over the last ``window_s`` (2 h) is more than ``burst_ratio``
times its current working set. Both are features the student sees (``working_set_peak_120m_frac``
and ``working_set_frac``), so it can learn when the teacher switches.

Why 2.0: over 4 h of ``dense`` and ``datacenter`` driven by the oracle, the ratio exceeds 2 in
83-86 % of the bursty guests' steps and 30-32 % of the build VMs' (idle between compiles), and
never for the web, cache, database, VDI or leaking guests; the JVM heaps' garbage-collection
sawtooth reaches 1.7 (p90). At 1.25 or 1.5 the JVMs count as bursty and the teacher gives up a
point or two of savings on them.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from wsrl.inputs.simulated import exact_snapshot
from wsrl.pipeline.action import (
    ACTION_DIM,
    MAX_HEADROOM_FRAC,
    cold_age_action,
    cold_age_action_reclaiming,
    headroom_action,
)
from wsrl.pipeline.observation import FEATURE_COUNT
from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.policies.far_memory import FarMemoryPolicy
from wsrl.policies.learned import LearnedPolicy
from wsrl.policies.oracle import OraclePolicy
from wsrl.policies.vpa import VpaPolicy
from wsrl.sim.arrays import TIER_NAMES

BRONZE_TIER = TIER_NAMES.index("bronze")


class BurstyGuests:
    """Which guests are bursty now (the rule of the module docstring, and why 2.0).

    A guest is bursty while its working-set peak over the last ``window_s`` is above ``burst_ratio``
    times its current working set.

    Args:
        burst_ratio: the peak-to-current ratio above which a guest is bursty (> 1).
        window_s: the peak's window, seconds.

    """

    def __init__(self, *, burst_ratio: float = 2.0, window_s: float = 7200.0) -> None:
        if not burst_ratio > 1.0:
            raise ValueError(f"burst_ratio must be > 1, got {burst_ratio}")
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.burst_ratio = float(burst_ratio)
        self.window_ms = int(window_s * 1000)
        self._working_sets: deque[tuple[int, np.ndarray]] = deque()

    def reset(self) -> None:
        """Forget the working-set history."""
        self._working_sets.clear()

    def update(self, snapshot: HostSnapshot) -> np.ndarray:
        """``[hosts, guests]`` whether each guest counts as bursty now (adds ``snapshot`` to the history)."""
        working_set = snapshot.working_set_bytes()
        now_ms = int(snapshot.time_ms)
        self._working_sets.append((now_ms, working_set))
        while self._working_sets and self._working_sets[0][0] < now_ms - self.window_ms:
            self._working_sets.popleft()
        peak = np.max(np.stack([ws for _, ws in self._working_sets]), axis=0)
        bursty: np.ndarray = peak > self.burst_ratio * np.maximum(working_set, 1.0)
        return bursty


class SteadyOracleTeacher:
    """The oracle on steady guests, the larger of oracle and vpa on bursty ones (module docstring).

    Args:
        burst_ratio: a guest is bursty while its ``window_s`` working-set peak exceeds this many
            times its current working set (> 1).
        window_s: the peak's window, seconds.

    """

    name = "oracle-steady"

    def __init__(self, *, burst_ratio: float = 2.0, window_s: float = 7200.0) -> None:
        self._bursty = BurstyGuests(burst_ratio=burst_ratio, window_s=window_s)
        self.oracle = OraclePolicy()
        self.oracle.name = self.name  # its "needs the simulator" error names the policy the user chose
        self.vpa = VpaPolicy()

    def reset(self, snapshot: HostSnapshot) -> None:
        """Reset both policies and forget the working-set history."""
        self.oracle.reset(snapshot)
        self.vpa.reset(snapshot)
        self._bursty.reset()

    def bursty(self, snapshot: HostSnapshot) -> np.ndarray:
        """``[hosts, guests]`` whether each guest counts as bursty now (updates the history)."""
        return self._bursty.update(snapshot)

    def decide(self, snapshot: HostSnapshot) -> np.ndarray:
        """The oracle's proposal, raised to vpa's on bursty guests."""
        oracle = self.oracle.decide(snapshot)
        vpa = self.vpa.decide(snapshot)
        return np.where(self.bursty(snapshot), np.maximum(oracle, vpa), oracle)


class RefinedTeacher:
    """A learned policy's own actions, tightened by two rules: the teacher of ``wsrl distill``.

    PPO leaves two things on the table that rules can take (docs/learning.md, "Refinement"):

    * **Cold age on steady guests.** The policy trained from vpa's decisions keeps its ``cold_age``
      knob at the top of its range (2 h) on every kind of guest and sizes with headroom alone, so
      memory idle for minutes is never handed back. Far memory's control plane
      (:class:`~wsrl.policies.far_memory.FarMemoryPolicy`, Lagar-Cavilla et al., ASPLOS'19) picks a
      per-guest threshold whose promotion rate meets the same refault SLO; here it caps the
      network's ``cold_age``. Not on bursty guests (:class:`BurstyGuests`): between a build's
      compiles or a service's bursts their memory looks idle and is not, and the network holds it.
      Where the snapshot's histograms are a source's coarser view (``referenced``, ``memory_stat``:
      :mod:`wsrl.sim.observed`), far memory chooses on the simulator's exact ages (a privileged
      teacher: on ``referenced`` it could choose nothing past the source's 120 s horizon and kept
      idle guests whole) and the cap is the ``cold_age`` that takes as much memory on the
      snapshot the student sees (:func:`~wsrl.pipeline.action.cold_age_action_reclaiming`).
    * **Bronze guests share burst room.** On a host provisioned beyond ``overcommit_min`` times
      what it can give (``capacity - reserve``), a bronze guest's ``headroom`` is capped at
      ``burst_headroom_frac`` of its size: its bursts are served from the memory the host keeps
      free, shared by all, rather than from room it holds for itself, which on a full host is
      memory no one else may use. Bronze is the tier an operator marks as yielding first (the
      allocator weighs it a quarter of gold); gold and silver guests keep their own room. The cap
      (0.17) was chosen on a training host, ``envs/training/dense-containers.toml``, as the one
      that met the acceptance rule there with the widest margin (docs/learning.md).

    Everything else (the ``peak_keep`` floor, headroom elsewhere) is the network's own. The teacher
    works in action space so that a student initialised from the same network only has to learn
    the two caps: :meth:`decide` leaves the observation rows and the actions it chose in
    :attr:`last_rows` and :attr:`last_actions`.

    Args:
        base: the learned policy refined (feed-forward; its observation builder is the student's).
        overcommit_min: provisioned / (capacity - reserve) above which a host counts as
            overcommitted (> 0).
        burst_headroom_frac: the bronze guests' headroom cap on such hosts, a share of the
            provisioned size (0 to :data:`~wsrl.pipeline.action.MAX_HEADROOM_FRAC`).

    """

    name = "refined"

    def __init__(
        self, base: LearnedPolicy, *, overcommit_min: float = 1.1, burst_headroom_frac: float = 0.17
    ) -> None:
        if base.recurrent_state is not None:
            raise ValueError(f"policy {base.name!r} is recurrent; the teacher needs a feed-forward one")
        if not overcommit_min > 0:
            raise ValueError(f"overcommit_min must be > 0, got {overcommit_min}")
        if not 0.0 <= burst_headroom_frac <= MAX_HEADROOM_FRAC:
            raise ValueError(f"burst_headroom_frac out of [0, {MAX_HEADROOM_FRAC}]: {burst_headroom_frac}")
        self.base = base
        self.far_memory = FarMemoryPolicy()
        self.bursty = BurstyGuests()
        self.overcommit_min = float(overcommit_min)
        self.burst_headroom_frac = float(burst_headroom_frac)
        self.last_rows = np.zeros((0, FEATURE_COUNT), dtype=np.float32)
        self.last_actions = np.zeros((0, ACTION_DIM), dtype=np.float32)

    def reset(self, snapshot: HostSnapshot) -> None:
        """Reset the base policy and far memory's thresholds."""
        self.base.reset(snapshot)
        self.far_memory.reset(snapshot)
        self.bursty.reset()

    def overcommitted(self, snapshot: HostSnapshot) -> np.ndarray:
        """``[hosts]`` whether each host is provisioned beyond ``overcommit_min`` x what it can give."""
        return snapshot.overcommit() > self.overcommit_min

    def actions(self, snapshot: HostSnapshot) -> np.ndarray:
        """``[hosts, guests, ACTION_DIM]`` the base network's actions with both caps applied.

        Advances the base policy's observation history, far memory's thresholds and the burst
        history: call once per snapshot (:meth:`decide` does).
        """
        rows, actions = self.base.act(snapshot)
        exact = exact_snapshot(snapshot)
        self.far_memory.decide(exact)  # advances its per-guest thresholds
        actions = actions.astype(np.float64)
        threshold_ms = self.far_memory.threshold_ms
        if exact is snapshot:
            cap = cold_age_action(threshold_ms)
        else:  # the memory far memory takes on exact ages, in the terms of what the student sees
            wanted = np.zeros(threshold_ms.shape)
            for t_ms in np.unique(threshold_ms[np.isfinite(threshold_ms)]):
                wanted = np.where(threshold_ms == t_ms, exact.cold_bytes(int(t_ms)), wanted)
            cap = cold_age_action_reclaiming(snapshot, wanted)
        capped_age = np.minimum(actions[..., 0], cap)
        actions[..., 0] = np.where(self.bursty.update(snapshot), actions[..., 0], capped_age)
        cap = headroom_action(np.asarray(self.burst_headroom_frac, dtype=float))
        yields = self.overcommitted(snapshot)[:, None] & (np.asarray(snapshot.tier) >= BRONZE_TIER)
        actions[..., 1] = np.where(yields, np.minimum(actions[..., 1], cap), actions[..., 1])
        mask = np.asarray(snapshot.mask, dtype=bool)
        self.last_rows = rows
        self.last_actions = actions[mask].astype(np.float32)
        return actions

    def decide(self, snapshot: HostSnapshot) -> np.ndarray:
        """The proposals of the capped actions."""
        return self.base.targets(self.actions(snapshot), snapshot)
