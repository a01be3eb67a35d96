"""The one control stack: snapshot -> policy -> allocator -> rails -> targets, everywhere.

Training (:class:`wsrl.rl.batch.HostBatch`), evaluation (:func:`wsrl.eval.runner.evaluate_policy`),
behaviour-cloning recording (:func:`wsrl.rl.bc.record_decisions`) and production
(:class:`wsrl.runner.daemon.Runner`) all decide through :meth:`ControlStack.step`. Only the input
that builds the snapshot and the actuator that applies the targets differ between them.

One step, per guest:

1. the configured policy and the fallback policy each propose sizes, and the allocator makes each
   set fit its host (:class:`PolicyStage`; the fallback runs every step, so it is warm when it
   takes over), granting first the *claims* of guests whose breaker is open or that were
   OOM-killed recently (up to each guest's share of the room); where some guests are on the
   fallback and others on the policy, one allocation over what acts for each guest replaces the
   two;
2. the acting decision is chosen: the policy's, the fallback's where the guest's input state is
   ``FALLBACK``, its circuit breaker is open, the policy failed or its output was rejected
   (:mod:`wsrl.pipeline.output_check`), the current target where the
   input is held;
3. the rails of :mod:`wsrl.pipeline.rails` run in order: hold, breaker, OOM memory, rate (per
   second of control time), host reserve, floor/provisioned, whole pages. The targets never add
   up to more than capacity - reserve.

Everything is configured by one :class:`ControlSpec`. The state the rails keep between steps (the
breaker's cooldowns, remembered OOM sizes) lives in the stack.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from wsrl.errors import WsrlError
from wsrl.pipeline import rails
from wsrl.pipeline.allocator import DEFAULT_IDLE_TAX, Allocation, Allocator
from wsrl.pipeline.output_check import OutputCheck, OutputVerdict
from wsrl.pipeline.policy import Policy
from wsrl.pipeline.rails import FALLBACK, HOLD, Array, BreakerUpdate, GuestSignals, RailLog
from wsrl.pipeline.snapshot import HostSnapshot

AllocatorMode = Literal["max-min", "idle-tax"]

ACTOR, FALLBACK_POLICY, HELD, RELAXED = 0, 1, 2, 3
"""Where each guest's target came from (:attr:`StackDecision.source`)."""


def _positive(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{name} must be > 0 or None, got {value}")


@dataclass(frozen=True)
class BreakerSpec:
    """The circuit breaker (production defaults).

    Attributes:
        enabled: ``False`` never trips.
        on_oom: a new OOM kill trips.
        psi_some_avg10_pct: memory PSI "some" avg10 above this trips (``None``: off).
        refault_frac_per_min: refaulted bytes per minute above this share of usage trips (``None``: off).
        refault_window_s: the refault rate is averaged over this window, as the kernel's PSI avg60
            averages stall (an exponential average with this time constant): the burst that follows
            a resize is not a sustained rate, and one tick's burst alone does not trip.
        cooldown_s: seconds the breaker stays open after the last trip.

    """

    enabled: bool = True
    on_oom: bool = True
    psi_some_avg10_pct: float | None = 60.0
    refault_frac_per_min: float | None = 0.10
    refault_window_s: float = 60.0
    cooldown_s: float = 600.0

    def __post_init__(self) -> None:
        _positive("breaker.psi_some_avg10_pct", self.psi_some_avg10_pct)
        _positive("breaker.refault_frac_per_min", self.refault_frac_per_min)
        _positive("breaker.refault_window_s", self.refault_window_s)
        _positive("breaker.cooldown_s", self.cooldown_s)


@dataclass(frozen=True)
class ControlSpec:
    """How a stack turns snapshots into targets: allocator, fallback and every rail.

    The defaults are the production runner's defaults, so that a policy is trained and ranked under
    the rails it later runs under. :meth:`unguarded` is the stack with no rail but the
    ``[floor, provisioned]`` clamp: each policy as its paper publishes it.

    Attributes:
        allocator: ``max-min`` (weights = shares x tier weight) or ``idle-tax`` (ESX's idle tax).
        idle_tax: the tax rate in ``idle-tax`` mode.
        fallback: the reference policy that takes over guests with bad input or an open breaker.
        fallback_params: its constructor parameters.
        max_shrink_frac_per_s: shrink by at most this share of the provisioned size per second
            (``None``: unbounded). 0.005 is 5 % per 10-second tick.
        max_growth_frac_per_s: grow by at most this share per second (``None``: at once; growing is
            the safe direction).
        max_rate_step_s: the longest stretch of control time one step's rate allowance covers
            (``None``: the whole time since the previous step). The runner sets its tick interval:
            ticks woken early shrink less, a tick after a stall never more than one interval's worth.
        host_reserve_bytes: what the host-reserve rail keeps free on each host (``None``: the
            snapshot's reserve).
        oom_memory_s: how long a guest is not shrunk back to a size it was OOM-killed at (0: off).
        oom_margin_frac: the margin above that size, as a share of provisioned.
        breaker: the circuit breaker.
        contain_policy_errors: a policy that raises hands its guests to the fallback (production);
            otherwise the error propagates (training and evaluation: a failing policy is a bug).
        max_proposal_jump_frac: the policy's output check (SOL, ASPLOS 2022: assess a model's
            outputs online, fall back when they look wrong). A proposal that is not finite or is
            negative is never acted on; one that falls more than this share of the provisioned size
            below the policy's previous proposal for the guest is acted on only when the next
            proposal confirms it; until then the fallback decides that guest. ``None``: no jump
            check (training: sampled exploration is not a malfunction).

    """

    allocator: AllocatorMode = "max-min"
    idle_tax: float = DEFAULT_IDLE_TAX
    fallback: str = "static"
    fallback_params: tuple[tuple[str, Any], ...] = ()
    max_shrink_frac_per_s: float | None = 0.005
    max_growth_frac_per_s: float | None = None
    max_rate_step_s: float | None = None
    host_reserve_bytes: float | None = None
    oom_memory_s: float = 21_600.0
    oom_margin_frac: float = 0.05
    breaker: BreakerSpec = BreakerSpec()
    contain_policy_errors: bool = False
    max_proposal_jump_frac: float | None = 0.5

    def __post_init__(self) -> None:
        if self.allocator not in ("max-min", "idle-tax"):
            raise ValueError(f"allocator must be 'max-min' or 'idle-tax', got {self.allocator!r}")
        _positive("max_shrink_frac_per_s", self.max_shrink_frac_per_s)
        _positive("max_growth_frac_per_s", self.max_growth_frac_per_s)
        _positive("max_rate_step_s", self.max_rate_step_s)
        _positive("max_proposal_jump_frac", self.max_proposal_jump_frac)
        for name in ("host_reserve_bytes", "oom_memory_s", "oom_margin_frac"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")

    @classmethod
    def unguarded(cls) -> ControlSpec:
        """No rail but the ``[floor, provisioned]`` clamp and whole pages (policies as published)."""
        return cls(
            max_shrink_frac_per_s=None,
            oom_memory_s=0.0,
            breaker=BreakerSpec(enabled=False),
            max_proposal_jump_frac=None,
        )

    @classmethod
    def for_training(cls) -> ControlSpec:
        """The production rails without the output check's jump test.

        A learner's sampled exploration is not a malfunction, and the step it is paid for must be
        the one it sampled.
        """
        return cls(max_proposal_jump_frac=None)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready dict of every setting (for run records and model cards)."""
        data = dataclasses.asdict(self)
        data["fallback_params"] = dict(self.fallback_params)
        return data


@dataclass
class GuestConditions:
    """What the input knows about each guest beyond the snapshot (arrays ``[hosts, guests]``).

    A simulated or replayed host knows everything (:meth:`from_snapshot`); a live runner knows
    which readings it trusts, the target in force for guests it could not read, and each reading's
    own clock.

    Attributes:
        configured: a guest sits in this slot (its target is meaningful even if it was not read).
        usable: its reading entered the snapshot.
        current_bytes: the target in force: the rails' starting point.
        provisioned_bytes: what it was promised (also where it could not be read).
        floor_bytes: its floor (also where it could not be read).
        input_state: ``OK``, ``HOLD`` or ``FALLBACK`` (:data:`wsrl.pipeline.rails.OK` ...).
        signals: what the circuit breaker watches.
        capacity_bytes: each host's memory, ``[hosts]``.
        reserve_bytes: what each host keeps for itself, ``[hosts]``.

    """

    configured: Array
    usable: Array
    current_bytes: Array
    provisioned_bytes: Array
    floor_bytes: Array
    input_state: Array
    signals: GuestSignals
    capacity_bytes: Array
    reserve_bytes: Array

    @classmethod
    def from_snapshot(cls, snapshot: HostSnapshot) -> GuestConditions:
        """Everything known and trusted: the snapshot's own values."""
        mask = snapshot.mask
        return cls(
            configured=mask,
            usable=mask,
            current_bytes=snapshot.target_bytes,
            provisioned_bytes=snapshot.provisioned_bytes,
            floor_bytes=np.minimum(snapshot.floor_bytes, snapshot.provisioned_bytes),
            input_state=np.zeros(snapshot.shape, dtype=np.int8),
            signals=GuestSignals(
                valid=mask,
                time_ms=np.full(snapshot.shape, float(snapshot.time_ms)),
                usage_bytes=snapshot.usage_bytes,
                refault_total=snapshot.refault_total,
                psi_some_avg10=snapshot.psi_some_avg10,
                oom_kills_total=snapshot.oom_kills_total,
            ),
            capacity_bytes=np.asarray(snapshot.capacity_bytes, dtype=float),
            reserve_bytes=np.asarray(snapshot.reserve_bytes, dtype=float),
        )


@dataclass
class Decision:
    """One policy's proposal and what the allocator granted it (arrays ``[hosts, guests]``)."""

    proposal_bytes: Array
    allocation: Allocation
    granted_bytes: Array | None = None
    """What the allocator was asked (the proposal with rejected guests' replaced; ``None``: the
    proposal itself)."""

    @property
    def allotted_bytes(self) -> Array:
        """The allocator's grant."""
        return self.allocation.allotted_bytes


class PolicyStage:
    """A policy and the allocator: proposals made to fit each host.

    Args:
        policy: any :class:`~wsrl.pipeline.policy.Policy`.
        allocator: the shared allocator.

    """

    def __init__(self, policy: Policy, allocator: Allocator) -> None:
        self.policy = policy
        self.allocator = allocator

    def reset(self, snapshot: HostSnapshot) -> None:
        """Start the policy over from ``snapshot``."""
        self.policy.reset(snapshot)

    def propose(self, snapshot: HostSnapshot) -> Array:
        """The policy's proposal for ``snapshot`` (shape checked)."""
        proposal: Array = np.asarray(self.policy.decide(snapshot), dtype=float)
        if proposal.shape != snapshot.shape:
            raise ValueError(
                f"policy {self.policy.name!r} proposed shape {proposal.shape}, expected {snapshot.shape}"
            )
        return proposal

    def allocate(
        self, proposal_bytes: Array, snapshot: HostSnapshot, claim_bytes: Array | None = None
    ) -> Decision:
        """The allocator's grant for a proposal of this stage's policy (``claim_bytes``: granted first)."""
        return Decision(proposal_bytes, self.allocator.allocate(proposal_bytes, snapshot, claim_bytes))

    def step(self, snapshot: HostSnapshot) -> Decision:
        """The policy's proposal and the allocator's grant for ``snapshot``."""
        return self.allocate(self.propose(snapshot), snapshot)


@dataclass
class StackDecision:
    """One step of the stack (arrays ``[hosts, guests]``).

    Attributes:
        target_bytes: the sizes to apply: within ``[floor, provisioned]``, whole pages, 0 where no
            guest sits.
        actor: the configured policy's decision (``None`` if it failed or nothing was readable).
        fallback: the fallback policy's decision, where some guest acts on it (``None`` otherwise:
            the fallback proposes every step, so it is warm when it takes over, but the allocator
            shares the host out for it only when its grant is used).
        source: where each target came from (:data:`ACTOR`, :data:`FALLBACK_POLICY`, :data:`HELD`,
            :data:`RELAXED`).
        breaker: the circuit breaker's step.
        shrink_limited: the rate rail slowed a shrink.
        growth_limited: the rate rail or the host reserve held back growth.
        rails: what each rail did and why (only when the step was asked to log).
        errors: ``{"actor": ..., "fallback": ...}`` a contained policy error (one line), if any;
            ``"actor"`` also names proposals the output check rejected.
        output: the output check of the configured policy's proposals (``None``: it proposed nothing).

    """

    target_bytes: Array
    actor: Decision | None
    fallback: Decision | None
    source: Array
    breaker: BreakerUpdate
    shrink_limited: Array
    growth_limited: Array
    rails: RailLog | None
    errors: dict[str, str]
    output: OutputVerdict | None = None

    @property
    def proposal_bytes(self) -> Array:
        """The configured policy's proposal (NaN where it made none)."""
        if self.actor is None:
            return np.full(self.target_bytes.shape, np.nan)
        return self.actor.proposal_bytes


class ControlStack:
    """The control stack of one batch of hosts (see the module docstring).

    Args:
        policy: the acting policy.
        fallback: the policy that takes over guests with bad input or an open breaker (build it
            from ``spec.fallback`` with :func:`wsrl.policies.make_stack`).
        spec: allocator and rails.

    """

    def __init__(self, policy: Policy, fallback: Policy, spec: ControlSpec | None = None) -> None:
        self.spec = spec or ControlSpec()
        self.allocator = Allocator(mode=self.spec.allocator, idle_tax=self.spec.idle_tax)
        self.actor = PolicyStage(policy, self.allocator)
        self.fallback = PolicyStage(fallback, self.allocator)
        self._needs_reset = {id(self.actor), id(self.fallback)}
        self.output_check = OutputCheck(self.spec.max_proposal_jump_frac)
        self.breaker: rails.CircuitBreaker | None = None
        self.oom_memory: rails.OomMemory | None = None
        self._last_time_ms: float | None = None

    @property
    def policy(self) -> Policy:
        """The acting policy."""
        return self.actor.policy

    def replace_policy(self, policy: Policy) -> None:
        """Act with ``policy`` from the next step on (it is reset on that step's snapshot)."""
        self.actor = PolicyStage(policy, self.allocator)
        self._needs_reset.add(id(self.actor))
        self.output_check.reset()

    def reset(self, snapshot: HostSnapshot) -> None:
        """Start over: both policies from ``snapshot``, the rails' memory empty."""
        self.actor.reset(snapshot)
        self.fallback.reset(snapshot)
        self._needs_reset.clear()
        self.output_check.reset()
        self._start_rails(snapshot.shape)

    def _start_rails(self, shape: tuple[int, int]) -> None:
        spec = self.spec
        breaker = spec.breaker
        self.breaker = rails.CircuitBreaker(
            shape,
            on_oom=breaker.on_oom,
            psi_some_avg10_pct=breaker.psi_some_avg10_pct,
            refault_frac_per_min=breaker.refault_frac_per_min,
            refault_window_s=breaker.refault_window_s,
            cooldown_s=breaker.cooldown_s,
            enabled=breaker.enabled,
        )
        self.oom_memory = rails.OomMemory(shape, memory_s=spec.oom_memory_s, margin_frac=spec.oom_margin_frac)
        self._last_time_ms = None

    def step(
        self,
        snapshot: HostSnapshot | None,
        conditions: GuestConditions | None = None,
        *,
        time_ms: float | None = None,
        log: bool = False,
    ) -> StackDecision:
        """Decide the next targets.

        Args:
            snapshot: what is known (``None``: nothing could be read; ``conditions`` must be given).
            conditions: what the input knows beyond the snapshot (default: trust the snapshot).
            time_ms: the control clock (default: the snapshot's time).
            log: keep what each rail did and why (:attr:`StackDecision.rails`).

        """
        if conditions is None:
            if snapshot is None:
                raise ValueError("step() needs a snapshot or conditions")
            conditions = GuestConditions.from_snapshot(snapshot)
        if time_ms is None:
            if snapshot is None:
                raise ValueError("step() without a snapshot needs time_ms")
            time_ms = snapshot.time_ms
        now_ms = float(time_ms)
        shape = conditions.configured.shape
        if self.breaker is None or self.breaker.open_until_ms.shape != shape:
            self._start_rails(shape)
        assert self.breaker is not None and self.oom_memory is not None
        current = conditions.current_bytes
        breaker = self.breaker.update(conditions.signals, now_ms)
        oom_min_bytes = self.oom_memory.update(breaker.oom, current, conditions.provisioned_bytes, now_ms)
        share = self._share_bytes(conditions)
        fair = self._fair_bytes(conditions, share)
        claims = _claims(breaker, current, share, oom_min_bytes)
        actor, output, fallback_proposal, errors = self._decide(snapshot, claims)
        rejected = output.rejected if output is not None else np.zeros(shape, dtype=bool)
        fallback = None
        if snapshot is not None and fallback_proposal is not None:
            acting = (conditions.input_state == FALLBACK) | breaker.open | rejected | (actor is None)
            if (acting & conditions.configured).any():
                if actor is not None and (~acting & conditions.configured).any():
                    actor, fallback = self._share_out(snapshot, acting, actor, fallback_proposal, claims)
                else:
                    fallback = self.fallback.allocate(fallback_proposal, snapshot, claims)
        target, source = _choose(conditions, breaker, rejected, actor, fallback)
        elapsed_s = self._elapsed_s(snapshot, now_ms)
        log_to = RailLog() if log else None
        target, shrink_limited, growth_limited = self._rails(
            target, source, conditions, breaker, oom_min_bytes, fair, elapsed_s, log_to
        )
        return StackDecision(
            target_bytes=target,
            actor=actor,
            fallback=fallback,
            source=source,
            breaker=breaker,
            shrink_limited=shrink_limited,
            growth_limited=growth_limited,
            rails=log_to,
            errors=errors,
            output=output,
        )

    def _share_out(
        self, snapshot: HostSnapshot, acting: Array, actor: Decision, fallback_proposal: Array, claims: Array
    ) -> tuple[Decision, Decision]:
        """One allocation over what acts for each guest, where some guests are on the fallback.

        Each policy's own allocation shares the host as if every guest followed it (the fallback's
        ``static`` asks every guest's provisioned size), so mixing the two per guest leaves room
        unused or gives a guest on the fallback less than the others' real asks leave it. Here the
        allocator sees, per guest, the proposal that acts for it (the actor's as granted for the
        output check, the fallback's where ``acting``), with the claims, and both decisions carry
        that one grant.
        """
        assert actor.granted_bytes is not None
        asks = np.where(acting, fallback_proposal, actor.granted_bytes)
        shared = self.allocator.allocate(asks, snapshot, claims)
        actor_decision = Decision(actor.proposal_bytes, shared, actor.granted_bytes)
        return actor_decision, Decision(fallback_proposal, shared)

    def _elapsed_s(self, snapshot: HostSnapshot | None, now_ms: float) -> float:
        """Control time since the previous step (the snapshot's interval on the first one)."""
        previous, self._last_time_ms = self._last_time_ms, now_ms
        if previous is not None and now_ms > previous:
            elapsed_s = (now_ms - previous) / 1000.0
        else:
            elapsed_s = float(snapshot.interval_s) if snapshot is not None else 0.0
        cap_s = self.spec.max_rate_step_s
        return elapsed_s if cap_s is None else min(elapsed_s, cap_s)

    def _reserve_bytes(self, conditions: GuestConditions) -> Array | float:
        spec = self.spec
        return spec.host_reserve_bytes if spec.host_reserve_bytes is not None else conditions.reserve_bytes

    def _share_bytes(self, conditions: GuestConditions) -> Array:
        """Each guest's share of its host's room (:func:`~wsrl.pipeline.rails.fair_share_bytes`)."""
        promised = np.where(conditions.configured, conditions.provisioned_bytes, 0.0)
        return rails.fair_share_bytes(promised, conditions.capacity_bytes, self._reserve_bytes(conditions))

    @staticmethod
    def _fair_bytes(conditions: GuestConditions, share: Array) -> Array:
        """Per guest, how far its own word protects it in the rails.

        Its share of the host where its signals are self-reported (a VM's PSI and faults), ``inf``
        where the host's kernel saw them.
        """
        claimed = conditions.signals.self_reported
        return np.where(claimed, share, np.inf) if claimed is not None else np.full(share.shape, np.inf)

    def _decide(
        self, snapshot: HostSnapshot | None, claims: Array | None = None
    ) -> tuple[Decision | None, OutputVerdict | None, Array | None, dict[str, str]]:
        """The actor's decision, its output check and the fallback's proposal.

        Each is ``None`` without a snapshot, or where the policy failed. A rejected proposal is
        recorded as proposed, but the allocator shares the host out with the fallback's proposal in
        its place (the provisioned size if the fallback failed too).
        """
        errors: dict[str, str] = {}
        proposals: list[Array | None] = []
        for name, stage in (("actor", self.actor), ("fallback", self.fallback)):
            if snapshot is None:
                proposals.append(None)
                continue
            try:
                if id(stage) in self._needs_reset:
                    stage.reset(snapshot)
                    self._needs_reset.discard(id(stage))
                proposals.append(stage.propose(snapshot))
            except Exception as exc:  # a bad model or a policy bug: its guests go to the fallback
                if not self.spec.contain_policy_errors:
                    raise
                errors[name] = f"policy {stage.policy.name!r} failed: {error_line(exc)}"
                proposals.append(None)
        actor_proposal, fallback_proposal = proposals
        actor = output = None
        if snapshot is not None and actor_proposal is not None:
            output = self.output_check.check(actor_proposal, snapshot)
            granted = actor_proposal
            if output.rejected.any():
                stand_in = fallback_proposal if fallback_proposal is not None else snapshot.provisioned_bytes
                granted = np.where(output.rejected, stand_in, actor_proposal)
                errors.setdefault("actor", output.summary(self.actor.policy.name) or "")
            actor = Decision(actor_proposal, self.allocator.allocate(granted, snapshot, claims), granted)
        return actor, output, fallback_proposal, errors

    def _rails(
        self,
        target: Array,
        source: Array,
        conditions: GuestConditions,
        breaker: BreakerUpdate,
        oom_min_bytes: Array,
        fair: Array,
        elapsed_s: float,
        log: RailLog | None,
    ) -> tuple[Array, Array, Array]:
        spec = self.spec
        current = conditions.current_bytes
        provisioned = conditions.provisioned_bytes
        floor = conditions.floor_bytes

        def add(before: Array, result: rails.RailResult) -> Array:
            return log.add(before, result) if log is not None else result.values

        reserve = self._reserve_bytes(conditions)
        configured = conditions.configured
        granted = target
        # A breaker tripped by what a guest says about itself protects it only within its share.
        target = add(target, rails.hold_rail(target, current, source == HELD))
        target = add(
            target,
            rails.breaker_rail(target, current, provisioned, breaker.tripped, breaker.open, fair_bytes=fair),
        )
        target = add(target, rails.oom_memory_rail(target, oom_min_bytes))
        rate = rails.rate_rail(
            target,
            current,
            provisioned,
            elapsed_s=elapsed_s,
            max_shrink_frac_per_s=spec.max_shrink_frac_per_s,
            max_growth_frac_per_s=spec.max_growth_frac_per_s,
            exempt=breaker.open,
        )
        shrink_limited = rate.changed & (rate.values > target)
        growth_limited = rate.changed & (rate.values < target)
        target = add(target, rate)
        room = rails.host_reserve_rail(
            target,
            current,
            conditions.capacity_bytes,
            reserve,
            floor_bytes=floor,
            granted_bytes=granted,
            exempt=breaker.open | (oom_min_bytes > 0),
            fair_bytes=fair,
            fixed=source == HELD,
        )
        growth_limited = growth_limited | (room.changed & (room.values >= current))
        shrink_limited = shrink_limited & ~(room.changed & (room.values < current))
        target = add(target, room)
        target = add(target, rails.floor_rail(target, floor, provisioned))
        hosts = target.shape[0]
        room_bytes = np.broadcast_to(conditions.capacity_bytes, (hosts,)) - np.broadcast_to(reserve, (hosts,))
        target = rails.page_rail(target, floor, provisioned, room_bytes[:, None])
        return np.where(configured, target, 0.0), shrink_limited & configured, growth_limited & configured


def _claims(breaker: BreakerUpdate, current: Array, share: Array, oom_min_bytes: Array) -> Array:
    """What the allocator grants first (``[hosts, guests]``, 0: nothing).

    A tripped guest its provisioned size, an open breaker's guest what it has, a guest OOM-killed
    recently the size it was killed at: each up to its ``share`` of the host's room (provisioned
    sizes and more on a host that holds every promise). On a host that cannot, a claim beyond the
    share would squeeze the others below theirs and trip them in turn (measured on ``laptop``:
    the learned policy's SLO violations 70 % of guest-minutes with whole claims, 33 % with shares).
    """
    breaker_claim = np.where(breaker.tripped, share, np.where(breaker.open, np.minimum(current, share), 0.0))
    claim: Array = np.minimum(np.maximum(np.nan_to_num(breaker_claim), oom_min_bytes), share)
    return claim


def _choose(
    conditions: GuestConditions,
    breaker: BreakerUpdate,
    rejected: Array,
    actor: Decision | None,
    fallback: Decision | None,
) -> tuple[Array, Array]:
    """Per guest, the acting target and its source (see the module docstring).

    The actor's grant, except the fallback's where the input is in fallback state, the breaker is
    open, the actor failed or its proposal was rejected; the provisioned size for a guest in
    fallback state with no usable input at all; the current target (held) where the input is held
    or there is no decision.
    """
    current = conditions.current_bytes
    state = conditions.input_state
    usable = conditions.usable
    use_fallback = (state == FALLBACK) | breaker.open | rejected | (actor is None)
    no_decision = (use_fallback & (fallback is None)) | (~use_fallback & (actor is None))
    actor_target = actor.allotted_bytes if actor is not None else current
    fallback_target = fallback.allotted_bytes if fallback is not None else current
    target = np.where(use_fallback, fallback_target, actor_target)
    relax_blind = ~usable & (state == FALLBACK)
    target = np.where(relax_blind, conditions.provisioned_bytes, target)
    holding = (state == HOLD) | (no_decision & ~relax_blind)
    target = np.where(~usable & ~relax_blind, current, target)  # unread: nothing new is known
    source = np.where(use_fallback, FALLBACK_POLICY, ACTOR)
    source = np.where(holding, HELD, np.where(relax_blind, RELAXED, source)).astype(np.int8)
    return target, source


def error_line(exc: BaseException) -> str:
    """An exception as one line: ``Type: first line`` (a :class:`~wsrl.errors.WsrlError`: its text)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, WsrlError) else f"{type(exc).__name__}: {text}"
