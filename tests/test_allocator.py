"""Property tests for the fair allocator (wsrl.pipeline.allocator) on random hosts, both modes."""

from __future__ import annotations

from dataclasses import replace

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsrl.pipeline.allocator import Allocation, Allocator
from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.units import GIB, MIB

EDGES_MS = np.array([10_000, 60_000, 120_000, 600_000])
"""Bins: (0, 10 s], (10, 60], (60, 120], (120, 600], (600, inf): the first three are the working set."""
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BYTE_SLACK = 64.0
"""Bytes of float slack allowed on sums of up to 64 guests of up to 64 GiB."""


def make_snapshot(
    *,
    provisioned_bytes: np.ndarray,
    capacity_bytes: np.ndarray,
    mask: np.ndarray | None = None,
    reserve_bytes: np.ndarray | None = None,
    floor_bytes: np.ndarray | None = None,
    shares: np.ndarray | None = None,
    tier: np.ndarray | None = None,
    visible_bytes: np.ndarray | None = None,
    working_set_bytes: np.ndarray | None = None,
) -> HostSnapshot:
    """A snapshot of ``[hosts, guests]`` guests; memory not in the working set is idle for 10 min+."""
    prov = np.asarray(provisioned_bytes, dtype=float)
    shape = prov.shape
    mask = np.ones(shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    visible = prov.copy() if visible_bytes is None else np.asarray(visible_bytes, dtype=float)
    ws = 0.5 * visible if working_set_bytes is None else np.asarray(working_set_bytes, dtype=float)
    hist = np.zeros((*shape, 2, len(EDGES_MS) + 1))
    hist[:, :, 0, 0] = 0.5 * ws  # anon touched within 10 s
    hist[:, :, 1, 2] = 0.5 * ws  # file touched within 60-120 s
    hist[:, :, 0, -1] = np.maximum(visible - ws, 0.0)  # idle for over 10 minutes
    hosts = shape[0]
    zeros = np.zeros(shape)
    return HostSnapshot(
        time_ms=0,
        interval_s=10.0,
        mask=mask,
        names=np.array([[f"h{h}g{g}" for g in range(shape[1])] for h in range(hosts)]),
        host_names=[f"h{h}" for h in range(hosts)],
        capacity_bytes=np.asarray(capacity_bytes, dtype=float),
        reserve_bytes=np.zeros(hosts) if reserve_bytes is None else np.asarray(reserve_bytes, dtype=float),
        provisioned_bytes=np.where(mask, prov, 0.0),
        floor_bytes=np.where(mask, zeros if floor_bytes is None else floor_bytes, 0.0),
        shares=np.full(shape, 1000.0) if shares is None else np.asarray(shares, dtype=float),
        tier=np.zeros(shape, dtype=np.int8) if tier is None else np.asarray(tier, dtype=np.int8),
        visible_bytes=visible,
        target_bytes=visible.copy(),
        usage_bytes=hist.sum(axis=(2, 3)),
        edges_ms=EDGES_MS,
        hist_bytes=hist,
        refault_total=zeros.copy(),
        swap_bytes=zeros.copy(),
        psi_some_total_s=zeros.copy(),
        psi_some_avg10=zeros.copy(),
        oom_kills_total=np.zeros(shape, dtype=np.int64),
        balloon_stalled=np.zeros(shape, dtype=bool),
    )


@st.composite
def cases(draw: st.DrawFn) -> tuple[HostSnapshot, np.ndarray, Allocator]:
    """A random batch of 1-3 hosts with 1-64 guest slots each, proposals, and an allocator."""
    hosts = draw(st.integers(1, 3))
    guests = draw(st.integers(1, 64))
    shape = (hosts, guests)

    def floats(lo: float, hi: float) -> np.ndarray:
        return draw(hnp.arrays(float, shape, elements=st.floats(lo, hi, allow_nan=False)))

    mask = draw(hnp.arrays(bool, shape, elements=st.booleans() | st.just(True)))
    prov = np.round(floats(1 / 16, 64) * GIB / MIB) * MIB
    floor_frac = floats(0.0, 1.0) * draw(hnp.arrays(bool, shape))  # about half the guests have none
    # Proposals range from below zero to above provisioned; some are exactly at the floor or ceiling.
    proposal = floats(-0.25, 1.5) * prov
    visible = floats(0.05, 1.0) * prov
    ws = floats(0.0, 1.0) * visible
    prov_total = np.where(mask, prov, 0.0).sum(axis=1)
    capacity = draw(hnp.arrays(float, hosts, elements=st.floats(0.05, 1.5))) * prov_total + GIB
    reserve = draw(hnp.arrays(float, hosts, elements=st.floats(0.0, 0.2))) * capacity
    snapshot = make_snapshot(
        mask=mask,
        provisioned_bytes=prov,
        capacity_bytes=capacity,
        reserve_bytes=reserve,
        floor_bytes=floor_frac * prov,
        shares=np.round(floats(1.0, 10_000.0)),
        tier=draw(hnp.arrays(np.int8, shape, elements=st.integers(0, 2))),
        visible_bytes=visible,
        working_set_bytes=ws,
    )
    mode = draw(st.sampled_from(["max-min", "idle-tax"]))
    allocator = Allocator(mode, idle_tax=draw(st.sampled_from([0.0, 0.5, 0.75, 0.95])))
    return snapshot, proposal, allocator


def available_bytes(snapshot: HostSnapshot) -> np.ndarray:
    return snapshot.capacity_bytes - snapshot.reserve_bytes


def clipped(proposal: np.ndarray, snapshot: HostSnapshot) -> np.ndarray:
    floor = np.minimum(snapshot.floor_bytes, snapshot.provisioned_bytes)
    return np.where(snapshot.mask, np.clip(proposal, floor, snapshot.provisioned_bytes), 0.0)


def squeezed_hosts(proposal: np.ndarray, snapshot: HostSnapshot, allocation: Allocation) -> np.ndarray:
    """``[hosts]``: the clipped proposals do not fit but the floors do."""
    over = clipped(proposal, snapshot).sum(axis=1) > available_bytes(snapshot)
    return over & ~allocation.floors_exceed_host


@SETTINGS
@given(cases())
def test_capacity_floors_and_ceilings(case):
    snapshot, proposal, allocator = case
    allocation = allocator.allocate(proposal, snapshot)
    allotted = allocation.allotted_bytes
    mask = snapshot.mask
    floor = np.where(mask, np.minimum(snapshot.floor_bytes, snapshot.provisioned_bytes), 0.0)
    available = available_bytes(snapshot)

    assert np.isfinite(allotted).all()
    assert np.all(allotted[~mask] == 0)
    assert np.all(allotted >= floor)
    assert np.all(allotted <= snapshot.provisioned_bytes)
    floors_exceed = floor.sum(axis=1) > available
    np.testing.assert_array_equal(allocation.floors_exceed_host, floors_exceed)
    for h in range(snapshot.shape[0]):
        if floors_exceed[h]:  # floors are a promise: everyone gets exactly the floor
            np.testing.assert_array_equal(allotted[h], floor[h])
        else:
            assert allotted[h].sum() <= available[h] + BYTE_SLACK


@SETTINGS
@given(cases())
def test_proposals_that_fit_are_granted_exactly(case):
    snapshot, proposal, allocator = case
    allocation = allocator.allocate(proposal, snapshot)
    asked = clipped(proposal, snapshot)
    fits = asked.sum(axis=1) <= available_bytes(snapshot)
    np.testing.assert_array_equal(allocation.allotted_bytes[fits], asked[fits])
    assert not allocation.squeezed[fits].any()
    mask = snapshot.mask
    floor = np.minimum(snapshot.floor_bytes, snapshot.provisioned_bytes)
    np.testing.assert_array_equal(allocation.raised_to_floor, mask & (proposal < floor))
    capped = mask & (proposal > snapshot.provisioned_bytes)
    np.testing.assert_array_equal(allocation.capped_at_provisioned, capped)


@SETTINGS
@given(cases())
def test_squeezed_hosts_are_filled_exactly_at_one_weighted_level(case):
    """Weighted max-min: every squeezed guest sits at the same level x weight above its floor."""
    snapshot, proposal, allocator = case
    allocation = allocator.allocate(proposal, snapshot)
    allotted = allocation.allotted_bytes
    asked = clipped(proposal, snapshot)
    floor = np.where(snapshot.mask, np.minimum(snapshot.floor_bytes, snapshot.provisioned_bytes), 0.0)
    weight = allocator.weights(snapshot)
    available = available_bytes(snapshot)
    for h in np.flatnonzero(squeezed_hosts(proposal, snapshot, allocation)):
        assert abs(allotted[h].sum() - available[h]) <= BYTE_SLACK
        squeezed = allocation.squeezed[h]
        assert squeezed.any()
        levels = (allotted[h] - floor[h])[squeezed] / weight[h][squeezed]
        level = levels.max()
        np.testing.assert_allclose(levels, level, rtol=1e-9, atol=1.0 / weight[h][squeezed].min())
        # Guests that got all they asked asked for no more than that level would give them.
        granted = snapshot.mask[h] & ~squeezed
        np.testing.assert_allclose(allotted[h][granted], asked[h][granted], rtol=1e-12)  # floor + rest
        assert np.all((asked[h] - floor[h])[granted] <= level * weight[h][granted] * (1 + 1e-9) + BYTE_SLACK)


@SETTINGS
@given(cases(), st.data())
def test_equal_guests_get_equal_sizes(case, data):
    snapshot, proposal, allocator = case
    h = data.draw(st.integers(0, snapshot.shape[0] - 1))
    slots = snapshot.shape[1]
    i, j = data.draw(st.integers(0, slots - 1)), data.draw(st.integers(0, slots - 1))
    twin = replace(snapshot)
    for name in (
        "mask",
        "provisioned_bytes",
        "floor_bytes",
        "shares",
        "tier",
        "visible_bytes",
        "target_bytes",
        "usage_bytes",
        "hist_bytes",
    ):
        array = getattr(snapshot, name).copy()
        array[h, j] = array[h, i]
        setattr(twin, name, array)
    twin.mask[h, i] = twin.mask[h, j] = True
    proposal = proposal.copy()
    proposal[h, j] = proposal[h, i]
    allotted = allocator.allocate(proposal, twin).allotted_bytes
    assert allotted[h, i] == allotted[h, j]


@SETTINGS
@given(cases(), st.data(), st.floats(1.001, 100.0))
def test_more_shares_never_means_less_memory(case, data, factor):
    snapshot, proposal, allocator = case
    real = np.argwhere(snapshot.mask)
    if len(real) == 0:
        return
    h, g = real[data.draw(st.integers(0, len(real) - 1))]
    before = allocator.allocate(proposal, snapshot).allotted_bytes
    shares = snapshot.shares.copy()
    shares[h, g] *= factor
    after = allocator.allocate(proposal, replace(snapshot, shares=shares)).allotted_bytes
    assert after[h, g] >= before[h, g] - 1.0
    # What it gains comes from its neighbours on the same host, never from another host.
    others = np.ones(snapshot.shape[0], dtype=bool)
    others[h] = False
    np.testing.assert_array_equal(after[others], before[others])


@SETTINGS
@given(
    st.integers(2, 64),
    st.floats(0.05, 0.95),
    st.sampled_from([0.25, 0.5, 0.75, 0.9]),
    st.floats(0.0, 0.6),
    st.floats(0.0, 1.0),
)
def test_idle_tax_takes_more_from_the_idle_guest(guests, squeeze, tax, floor_frac, proposal_frac):
    """Two guests alike in all but their working sets, plus identical neighbours: idle gives more."""
    prov = np.full((1, guests), 4.0 * GIB)
    ws = np.full((1, guests), 2.0 * GIB)
    ws[0, 0] = 0.1 * GIB  # idle
    ws[0, 1] = 3.9 * GIB  # active
    snapshot = make_snapshot(
        provisioned_bytes=prov,
        capacity_bytes=np.array([squeeze * prov.sum()]),
        floor_bytes=floor_frac * prov,
        working_set_bytes=ws,
    )
    proposal = np.maximum(proposal_frac, floor_frac) * prov
    idle_tax = Allocator("idle-tax", idle_tax=tax).allocate(proposal, snapshot)
    max_min = Allocator("max-min").allocate(proposal, snapshot)
    idle, active = idle_tax.allotted_bytes[0, :2]
    assert idle <= active
    room = snapshot.capacity_bytes[0] - snapshot.floor_bytes.sum()
    if idle_tax.squeezed[0, 0] and room > MIB:  # squeezed above its floor, not just held at it
        assert idle < active
        assert idle < max_min.allotted_bytes[0, 0]
    # Max-min ignores working sets: the two get the same.
    assert max_min.allotted_bytes[0, 0] == max_min.allotted_bytes[0, 1]


@SETTINGS
@given(cases(), st.data())
def test_claims_are_granted_first_and_never_beyond_the_host(case, data):
    """A claim (an open breaker's protection) is held wherever the claims fit next to the floors;
    the host never holds more than it has; a guest whose claim is below what it would get anyway
    gets no more for it; the others only lose what the claims take."""
    snapshot, proposal, allocator = case
    shape = proposal.shape
    claimed = data.draw(hnp.arrays(bool, shape)) & snapshot.mask
    claim = np.where(claimed, data.draw(hnp.arrays(float, shape, elements=st.floats(0, 1.2))), 0.0)
    claim = claim * snapshot.provisioned_bytes
    plain = allocator.allocate(proposal, snapshot).allotted_bytes
    allotted = allocator.allocate(proposal, snapshot, claim).allotted_bytes
    floor = np.where(snapshot.mask, np.minimum(snapshot.floor_bytes, snapshot.provisioned_bytes), 0.0)
    available = available_bytes(snapshot)
    floors_fit = floor.sum(axis=1) <= available
    assert np.all(allotted >= floor) and np.all(allotted <= snapshot.provisioned_bytes)
    assert np.all(allotted.sum(axis=1)[floors_fit] <= available[floors_fit] + BYTE_SLACK)
    wanted = np.maximum(np.clip(claim, floor, snapshot.provisioned_bytes), floor)
    claims_fit = (wanted.sum(axis=1) <= available)[:, None]
    assert np.all(np.where(claims_fit, allotted >= wanted - BYTE_SLACK, True))
    # Unclaimed guests never gain from someone else's claim.
    assert np.all(np.where(claimed, True, allotted <= plain + BYTE_SLACK))
    # A claim below the guest's plain grant changes nothing for it.
    low = claimed & (wanted <= plain) & claims_fit
    assert np.all(np.where(low, allotted <= plain + BYTE_SLACK * 1024, True))


def test_a_claim_takes_from_the_others_not_from_the_host():
    """Three guests of 8 GiB on 12 GiB: equal shares of 4 GiB; one claims all 8 GiB (its breaker
    tripped): it gets them, the other two share the 4 GiB left."""
    eight = np.full((1, 3), 8.0 * GIB)
    snapshot = make_snapshot(provisioned_bytes=eight, capacity_bytes=np.array([12.0 * GIB]))
    allocator = Allocator()
    plain = allocator.allocate(np.full((1, 3), 8.0 * GIB), snapshot).allotted_bytes
    np.testing.assert_allclose(plain, 4 * GIB)
    claim = np.array([[8.0 * GIB, 0.0, np.nan]])
    allotted = allocator.allocate(np.full((1, 3), 8.0 * GIB), snapshot, claim).allotted_bytes
    np.testing.assert_allclose(allotted, [[8 * GIB, 2 * GIB, 2 * GIB]])
    small = allocator.allocate(np.full((1, 3), 8.0 * GIB), snapshot, np.array([[GIB, 0, 0]])).allotted_bytes
    np.testing.assert_allclose(small, plain)


def test_idle_tax_example_and_tiers():
    """A worked example: 8 GiB for two guests asking for 8 GiB each, above 1 GiB floors."""
    prov = np.full((1, 2), 8.0 * GIB)
    snapshot = make_snapshot(
        provisioned_bytes=prov,
        capacity_bytes=np.array([8.0 * GIB]),
        floor_bytes=np.full((1, 2), 1.0 * GIB),
        working_set_bytes=np.array([[0.0, 8.0 * GIB]]),
    )
    # Idle guest: f = 0, k = 4: weight 1/4 of the active one's. 6 GiB above floors split 1:4.
    allotted = Allocator("idle-tax", idle_tax=0.75).allocate(prov, snapshot).allotted_bytes
    np.testing.assert_allclose(allotted, [[1.0 * GIB + 1.2 * GIB, 1.0 * GIB + 4.8 * GIB]], rtol=1e-12)
    # Max-min: equal halves; a gold guest next to a bronze one gets 4x the room above its floor.
    np.testing.assert_allclose(Allocator().allocate(prov, snapshot).allotted_bytes, 4.0 * GIB, rtol=1e-12)
    tiers = replace(snapshot, tier=np.array([[0, 2]], dtype=np.int8))
    np.testing.assert_allclose(
        Allocator().allocate(prov, tiers).allotted_bytes, [[5.8 * GIB, 2.2 * GIB]], rtol=1e-12
    )


def test_floors_over_the_host_are_kept_and_flagged():
    prov = np.full((2, 3), 4.0 * GIB)
    snapshot = make_snapshot(
        provisioned_bytes=prov,
        capacity_bytes=np.array([8.0 * GIB, 20.0 * GIB]),
        reserve_bytes=np.array([1.0 * GIB, 1.0 * GIB]),
        floor_bytes=np.full((2, 3), 3.0 * GIB),
    )
    allocation = Allocator().allocate(np.zeros((2, 3)), snapshot)
    np.testing.assert_array_equal(allocation.floors_exceed_host, [True, False])
    np.testing.assert_array_equal(allocation.allotted_bytes, 3.0 * GIB)
    assert allocation.raised_to_floor.all()


def test_bad_modes_are_refused():
    with pytest.raises(ValueError, match="mode"):
        Allocator("fair")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="idle_tax"):
        Allocator("idle-tax", idle_tax=1.0)
