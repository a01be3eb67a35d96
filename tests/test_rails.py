"""Each rail of the control stack on crafted ``[hosts, guests]`` arrays (``wsrl.pipeline.rails``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_runner_support import reading, reading_arrays

from wsrl.pipeline import rails
from wsrl.units import GIB, PAGE_BYTES

PROV = np.array([[8.0, 4.0, 2.0]]) * GIB
FLOOR = np.array([[1.0, 1.0, 0.5]]) * GIB


def test_floor_rail_never_below_floor_nor_above_provisioned() -> None:
    target = np.array([[0.2, 9.0, math.nan]]) * GIB
    result = rails.floor_rail(target, FLOOR, PROV)
    np.testing.assert_allclose(result.values, [[1 * GIB, 4 * GIB, 2 * GIB]])
    assert result.changed.tolist() == [[True, True, True]]
    assert "floor" in result.reasons[0, 0]
    assert "provisioned" in result.reasons[0, 1]
    assert "not a number" in result.reasons[0, 2]
    inside = np.array([[2.0, 3.0, 1.0]]) * GIB
    untouched = rails.floor_rail(inside, FLOOR, PROV)
    assert not untouched.changed.any() and untouched.reasons.tolist() == [["", "", ""]]


def test_rate_rail_bounds_shrink_and_lets_growth_through() -> None:
    current = np.array([[8.0, 2.0, 1.0]]) * GIB
    target = np.array([[1.0, 4.0, 0.9]]) * GIB
    result = rails.rate_rail(target, current, PROV, elapsed_s=10.0, max_shrink_frac_per_s=0.005)
    # Shrink: at most 5 % of 8 GiB. Growth: all at once. A small shrink within the bound: as asked.
    np.testing.assert_allclose(result.values, [[7.6 * GIB, 4 * GIB, 0.9 * GIB]])
    assert result.changed.tolist() == [[True, False, False]]
    assert "shrink limited" in result.reasons[0, 0]


def test_rate_rail_growth_limit_and_breaker_exemption() -> None:
    current = np.array([[2.0, 2.0, 1.0]]) * GIB
    target = np.array([[8.0, 4.0, 2.0]]) * GIB
    exempt = np.array([[False, True, False]])
    result = rails.rate_rail(
        target,
        current,
        PROV,
        elapsed_s=10.0,
        max_shrink_frac_per_s=0.005,
        max_growth_frac_per_s=0.025,
        exempt=exempt,
    )
    np.testing.assert_allclose(result.values, [[4 * GIB, 4 * GIB, 1.5 * GIB]])
    assert "growth limited" in result.reasons[0, 0]
    assert not result.changed[0, 1]


def test_host_reserve_rail_trims_growth_only() -> None:
    current = np.array([[4.0, 2.0, 1.0]]) * GIB
    target = np.array([[6.0, 4.0, 0.5]]) * GIB  # 10.5 GiB asked; room is 12 - 4 = 8 GiB
    result = rails.host_reserve_rail(target, current, 12 * GIB, 4 * GIB)
    assert result.values.sum() == pytest.approx(8 * GIB)
    # 2.5 GiB too much: both growths (2 GiB each) lose 1.25 GiB; the shrinking guest is left alone.
    np.testing.assert_allclose(result.values, [[4.75 * GIB, 2.75 * GIB, 0.5 * GIB]])
    assert result.changed.tolist() == [[True, True, False]]
    assert "capacity - reserve" in result.reasons[0, 0]
    # An open breaker the host's kernel saw (no finite share): its growth goes last, but it goes:
    # the host never holds more than capacity - reserve, and nobody is shrunk past the rate rail
    # while growth is left to trim.
    exempt = np.array([[True, True, False]])
    kept = rails.host_reserve_rail(target, current, 12 * GIB, 4 * GIB, exempt=exempt)
    np.testing.assert_allclose(kept.values, result.values)
    assert "room the others have freed" in kept.reasons[0, 0]
    grows = np.array([[6.0, 4.0, 1.5]]) * GIB  # the unprotected guest's growth goes first
    first = rails.host_reserve_rail(grows, current, 12 * GIB, 4 * GIB, exempt=exempt)
    np.testing.assert_allclose(first.values, [[4.5 * GIB, 2.5 * GIB, 1.0 * GIB]])
    # One the guest reported itself (a finite share): protected only within its share, and trimmed
    # too (after everyone else's growth) when the room is still short; never past the room.
    one = np.array([[True, False, False]])
    fair = rails.fair_share_bytes(np.array([[2.0, 1.0, 1.0]]) * GIB, 12 * GIB, 4 * GIB)
    np.testing.assert_allclose(fair, [[4 * GIB, 2 * GIB, 2 * GIB]])
    within = rails.host_reserve_rail(target, current, 12 * GIB, 4 * GIB, exempt=one, fair_bytes=fair)
    np.testing.assert_allclose(within.values, result.values)  # already at its share: trimmed like anyone
    assert "share" in within.reasons[0, 0]
    both = rails.host_reserve_rail(
        target, current, 12 * GIB, 4 * GIB, exempt=exempt, fair_bytes=np.full((1, 3), 6.0 * GIB)
    )
    assert both.values.sum() == pytest.approx(8 * GIB)  # 2 + 2 GiB protected, 2.5 GiB too much
    assert (both.values >= np.minimum(current, target)).all()
    fits = rails.host_reserve_rail(current, current, 12 * GIB, 4 * GIB)
    assert not fits.changed.any()


def test_host_reserve_rail_shrinks_past_the_rate_only_when_already_over_the_room() -> None:
    # Limits in force of 10 GiB on a host with 8 GiB of room (a start on an overcommitted host):
    # the unprotected guests go down at once, above their floors and in proportion; an open
    # breaker's guest only after them.
    current = np.array([[4.0, 4.0, 2.0]]) * GIB
    floor = np.array([[1.0, 1.0, 1.0]]) * GIB
    exempt = np.array([[False, False, True]])
    result = rails.host_reserve_rail(current, current, 12 * GIB, 4 * GIB, floor_bytes=floor, exempt=exempt)
    np.testing.assert_allclose(result.values, [[3 * GIB, 3 * GIB, 2 * GIB]])
    assert "rate rail yields" in result.reasons[0, 0]
    tight = rails.host_reserve_rail(current, current, 7 * GIB, 2 * GIB, floor_bytes=floor, exempt=exempt)
    np.testing.assert_allclose(tight.values, [[1.5 * GIB, 1.5 * GIB, 2 * GIB]])
    # Floors are never cut, even when they alone exceed the room.
    floors_only = rails.host_reserve_rail(current, current, 2 * GIB, 0.0, floor_bytes=floor)
    np.testing.assert_allclose(floors_only.values, floor)


def test_host_reserve_rail_never_trims_a_guest_below_its_floor() -> None:
    """Found by the hostile-guest tick property: a VM claimed to hold 0 bytes, its rise to the floor
    counted as growth and was trimmed first, the floor rail then raised it after this rail and the
    targets overfilled the room by the floor. Rising to the floor is the floor: the others pay."""
    current = np.array([[6.0, 0.0, 8.0]]) * GIB
    floor = np.array([[2.0, 1.5, 1.0]]) * GIB
    target = np.array([[5.7, 1.5, 7.6]]) * GIB  # the rate rail's pace: 14.8 GiB on 14 GiB of room
    result = rails.host_reserve_rail(target, current, 16 * GIB, 2 * GIB, floor_bytes=floor)
    assert result.values[0, 1] == pytest.approx(1.5 * GIB)
    assert result.values.sum() == pytest.approx(14 * GIB)
    assert (result.values >= floor).all()
    # A target below the floor counts as the floor the floor rail will make it.
    low = np.array([[5.7, 0.5, 7.6]]) * GIB
    raised = rails.floor_rail(
        rails.host_reserve_rail(low, current, 16 * GIB, 2 * GIB, floor_bytes=floor).values, floor, PROV * 4
    )
    assert raised.values.sum() == pytest.approx(14 * GIB)


def test_hold_and_breaker_rails() -> None:
    current = np.array([[4.0, 2.0, 1.0]]) * GIB
    target = np.array([[3.0, 3.0, 0.5]]) * GIB
    held = rails.hold_rail(target, current, np.array([[True, False, False]]))
    np.testing.assert_allclose(held.values, [[4 * GIB, 3 * GIB, 0.5 * GIB]])
    assert held.changed.tolist() == [[True, False, False]]
    tripped = np.array([[False, True, False]])
    is_open = np.array([[False, True, True]])
    result = rails.breaker_rail(target, current, PROV, tripped, is_open)
    # Tripped: provisioned now. Open: no shrink. Closed: as proposed.
    np.testing.assert_allclose(result.values, [[3 * GIB, 4 * GIB, 1 * GIB]])
    assert "deflated" in result.reasons[0, 1] and "no shrinking" in result.reasons[0, 2]
    assert not result.changed[0, 0]


def test_rail_log_records_each_change_with_its_reason() -> None:
    log = rails.RailLog()
    target = np.array([[0.1, 3.0, 9.0]]) * GIB
    out = log.add(target, rails.floor_rail(target, FLOOR, PROV))
    assert out[0, 0] == FLOOR[0, 0]
    assert log.rails_of(0) == ["floor"] and log.rails_of(1) == [] and log.rails_of(2) == ["floor"]
    entry = log.of(0)[0]
    assert entry["from_bytes"] == round(0.1 * GIB) and entry["to_bytes"] == GIB
    assert entry["reason"].startswith("raised to the floor")


def test_oom_memory_remembers_the_size_killed_at_for_a_while() -> None:
    memory = rails.OomMemory((1, 2), memory_s=60, margin_frac=0.05)
    provisioned = np.full((1, 2), 8 * GIB)
    none = np.zeros((1, 2), dtype=bool)
    assert memory.update(none, np.full((1, 2), GIB), provisioned, 0.0).tolist() == [[0.0, 0.0]]
    bar = memory.update(np.array([[True, False]]), np.array([[2 * GIB, GIB]]), provisioned, 1_000.0)
    assert bar[0, 0] == pytest.approx(2 * GIB + 0.4 * GIB) and bar[0, 1] == 0.0
    # A second kill at a lower size never lowers the bar; one at a higher size raises it.
    assert (
        memory.update(np.array([[True, False]]), np.array([[GIB, GIB]]), provisioned, 2_000.0)[0, 0]
        == bar[0, 0]
    )
    higher = memory.update(np.array([[True, False]]), np.array([[3 * GIB, GIB]]), provisioned, 3_000.0)
    assert higher[0, 0] == pytest.approx(3.4 * GIB)
    assert memory.update(none, provisioned, provisioned, 62_000.0)[0, 0] == pytest.approx(3.4 * GIB)
    assert memory.update(none, provisioned, provisioned, 63_001.0)[0, 0] == 0.0  # forgotten after memory_s
    rail = rails.oom_memory_rail(np.array([[GIB, GIB]]), higher)
    assert rail.values[0].tolist() == [pytest.approx(3.4 * GIB), GIB]
    assert rail.changed[0].tolist() == [True, False] and "OOM-killed below" in rail.reasons[0, 0]
    off = rails.OomMemory((1, 1), memory_s=0, margin_frac=0.05)
    assert off.update(np.array([[True]]), np.array([[GIB]]), np.array([[8 * GIB]]), 0.0)[0, 0] == 0.0


def test_circuit_breaker_trips_on_oom_psi_refaults_and_cools_down() -> None:
    breaker = rails.CircuitBreaker((1, 3), psi_some_avg10_pct=50, refault_frac_per_min=0.1, cooldown_s=30)
    valid = np.ones((1, 3), dtype=bool)

    def tick(t_s: float, ooms: list[int], psi: list[float], refaults: list[float]) -> rails.BreakerUpdate:
        readings = [
            reading(
                time_ms=int(t_s * 1000), oom_kills_total=o, psi_some_avg10=p, refault_total=r, usage_bytes=GIB
            )
            for o, p, r in zip(ooms, psi, refaults, strict=True)
        ]
        return breaker.update(reading_arrays(*readings).signals(valid), t_s * 1000)

    first = tick(1000, [3, 0, 0], [0, 0, 0], [0, 0, 0])
    assert not first.tripped.any()  # an OOM count from before the runner started is history
    # One minute later: one new OOM kill; PSI 80 %; 20 % of 1 GiB refaulted (in 4 KiB pages): over
    # the 60 s window's average that is 20 % x (1 - 1/e) = 12.6 % a minute, over the 10 % limit.
    pages = 0.2 * GIB / PAGE_BYTES
    second = tick(1060, [4, 0, 0], [0, 80, 0], [0, 0, pages])
    assert second.tripped.tolist() == [[True, True, True]]
    assert second.reasons[0, 0] == "OOM kill"
    assert "PSI" in second.reasons[0, 1] and "refaults 12.6%" in second.reasons[0, 2]
    assert second.refault_pages_per_s[0, 2] == pytest.approx(pages / 60)
    calm = tick(1080, [4, 0, 0], [0, 0, 0], [0, 0, pages])
    assert calm.open.all() and not calm.tripped.any() and not calm.closed.any()
    after = tick(1095, [4, 0, 0], [0, 0, 0], [0, 0, pages])
    assert not after.open.any() and after.closed.all()
    assert "cooldown over" in after.reasons[0, 0]


def test_a_refault_burst_is_judged_over_the_window_not_one_tick() -> None:
    """The burst after a resize (here 70 % of usage a minute for one 5 s tick, as a real Redis
    showed on its first reclaim) is not a sustained rate: it trips nothing. The same rate kept up
    trips within half a minute, and deciding more often changes neither."""

    def run(rates: list[float], step_s: float) -> list[bool]:
        breaker = rails.CircuitBreaker((1, 1), refault_frac_per_min=0.1, refault_window_s=60)
        valid = np.ones((1, 1), dtype=bool)
        total, tripped = 0.0, []
        for i, rate in enumerate([0.0, *rates]):
            total += rate * GIB / PAGE_BYTES * step_s / 60
            signals = reading_arrays(
                reading(time_ms=int(i * step_s * 1000), refault_total=total, usage_bytes=GIB)
            ).signals(valid)
            tripped.append(bool(breaker.update(signals, i * step_s * 1000).tripped[0, 0]))
        return tripped

    assert not any(run([0.7] + [0.0] * 20, 5.0))
    sustained = run([0.7] * 10, 5.0)
    assert not sustained[1] and any(sustained[:7])  # not on the first tick; within 30 s
    assert run([0.7] * 20, 5.0).index(True) * 5 == run([0.7] * 100, 1.0).index(True) * 1


def test_disabled_breaker_never_trips() -> None:
    breaker = rails.CircuitBreaker((1, 1), enabled=False)
    valid = np.ones((1, 1), dtype=bool)
    breaker.update(reading_arrays(reading(time_ms=1000)).signals(valid), 1000)
    update = breaker.update(
        reading_arrays(reading(time_ms=2000, oom_kills_total=5, psi_some_avg10=99)).signals(valid), 2000
    )
    assert not update.tripped.any() and not update.open.any()


def test_rate_rail_is_per_second_not_per_step() -> None:
    current = np.array([[8.0, 8.0]]) * GIB
    target = np.array([[1.0, 1.0]]) * GIB
    prov = np.array([[8.0, 8.0]]) * GIB
    ten = rails.rate_rail(target, current, prov, elapsed_s=10.0, max_shrink_frac_per_s=0.005)
    one = rails.rate_rail(target, current, prov, elapsed_s=1.0, max_shrink_frac_per_s=0.005)
    np.testing.assert_allclose(ten.values, 7.6 * GIB)
    np.testing.assert_allclose(one.values, 8 * GIB - 0.04 * GIB)
    assert "0.005 of provisioned per s" in ten.reasons[0, 0]
    unbounded = rails.rate_rail(target, current, prov, elapsed_s=10.0, max_shrink_frac_per_s=None)
    np.testing.assert_allclose(unbounded.values, target)


def test_host_reserve_rail_is_per_host() -> None:
    current = np.array([[4.0, 2.0], [1.0, 1.0]]) * GIB
    target = np.array([[6.0, 4.0], [3.0, 3.0]]) * GIB  # host 0 over its 8 GiB room, host 1 within
    result = rails.host_reserve_rail(target, current, np.array([12.0, 12.0]) * GIB, 4 * GIB)
    assert result.values[0].sum() == pytest.approx(8 * GIB)
    np.testing.assert_allclose(result.values[1], target[1])
    assert result.changed.tolist() == [[True, True], [False, False]]


def test_page_rail_rounds_up_within_bounds() -> None:
    target = np.array([[GIB + 1.0, 2 * GIB - 1.0]])
    out = rails.page_rail(target, np.array([[0.5 * GIB, 0.5 * GIB]]), np.array([[4 * GIB, 2 * GIB - 1.0]]))
    assert out[0, 0] == GIB + PAGE_BYTES and out[0, 0] % PAGE_BYTES == 0
    assert out[0, 1] == 2 * GIB - 1.0  # never above provisioned
    assert not np.isnan(out).any()
