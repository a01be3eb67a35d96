"""The evaluation metrics (wsrl.eval.metrics) on hand-built snapshot sequences with known answers."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from wsrl.eval.metrics import METRIC_NAMES, PER_GUEST_KEYS, MetricsRecorder, RunMetrics, jain_index
from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.slo import Slo
from wsrl.units import GIB, PAGE_BYTES

EDGES_MS = np.array([60_000, 120_000, 600_000])

Value = float | Sequence[float] | np.ndarray


def snapshot(
    t_s: float,
    provisioned_bytes: Value,
    *,
    visible_bytes: Value | None = None,
    target_bytes: Value | None = None,
    working_set_bytes: Value = GIB,
    refault_pages: Value = 0.0,
    psi_s: Value = 0.0,
    oom_kills: Value = 0,
    mask: Sequence[Sequence[bool]] | np.ndarray | None = None,
) -> HostSnapshot:
    """A snapshot at ``t_s``; scalars and 1-D values broadcast to ``[1, guests]``, 2-D ones are kept.

    The working set is anon touched within 60 s; what else is visible is idle for over 10 minutes.
    Counters (``refault_pages``, ``psi_s``, ``oom_kills``) are cumulative.
    """
    prov = np.atleast_2d(np.asarray(provisioned_bytes, dtype=float))
    shape = prov.shape

    def full(value: Value | None, default: np.ndarray, dtype: type = float) -> np.ndarray:
        return np.array(np.broadcast_to(default if value is None else np.asarray(value, dtype=dtype), shape))

    visible = full(visible_bytes, prov)
    ws = np.minimum(full(working_set_bytes, prov), visible)
    hist = np.zeros((*shape, 2, len(EDGES_MS) + 1))
    hist[:, :, 0, 0] = ws
    hist[:, :, 1, -1] = visible - ws
    hosts = shape[0]
    return HostSnapshot(
        time_ms=round(1_700_000_000_000 + t_s * 1000),
        interval_s=10.0,
        mask=np.ones(shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool),
        names=np.array([[f"g{h}.{g}" for g in range(shape[1])] for h in range(hosts)]),
        host_names=[f"host{h}" for h in range(hosts)],
        capacity_bytes=prov.sum(axis=1),
        reserve_bytes=np.zeros(hosts),
        provisioned_bytes=prov,
        floor_bytes=np.zeros(shape),
        shares=np.full(shape, 1000.0),
        tier=np.zeros(shape, dtype=np.int8),
        visible_bytes=visible,
        target_bytes=full(target_bytes, visible),
        usage_bytes=visible.copy(),
        edges_ms=EDGES_MS,
        hist_bytes=hist,
        refault_total=full(refault_pages, np.zeros(shape)),
        swap_bytes=np.zeros(shape),
        psi_some_total_s=full(psi_s, np.zeros(shape)),
        psi_some_avg10=np.zeros(shape),
        oom_kills_total=full(oom_kills, np.zeros(shape), np.int64),
        balloon_stalled=np.zeros(shape, dtype=bool),
    )


def record(snapshots: Sequence[HostSnapshot], slo: Slo | None = None) -> RunMetrics:
    recorder = MetricsRecorder(snapshots[0], slo)
    for s in snapshots[1:]:
        recorder.observe(s)
    return recorder.result()


def run(steps: int, step_s: float, make: Callable[[int, float], HostSnapshot], slo: Slo | None = None):
    """Record ``make(k, t_s)`` for ``k = 0 .. steps`` at ``t_s = k * step_s``."""
    return record([make(k, k * step_s) for k in range(steps + 1)], slo)


def test_half_the_provisioned_size_saves_half():
    result = run(60, 10.0, lambda k, t: snapshot(t, [4 * GIB, 8 * GIB], visible_bytes=[2 * GIB, 4 * GIB]))
    assert result.memory_saved_frac == pytest.approx(0.5)
    assert result.mean_allotted_frac == pytest.approx(0.5)
    assert [g["memory_saved_frac"] for g in result.per_guest] == pytest.approx([0.5, 0.5])
    assert [g["mean_allotted_bytes"] for g in result.per_guest] == pytest.approx([2 * GIB, 4 * GIB])
    assert result.guests == 2 and result.steps == 60 and result.duration_s == pytest.approx(600.0)
    assert result.intervals == 10


def test_memory_saved_is_byte_weighted_and_time_integrated():
    # Guest 0 (4 GiB) at 1 GiB, guest 1 (12 GiB) at full size for the first half, at half size after.
    def make(k: int, t: float) -> HostSnapshot:
        second = 12 * GIB if k <= 30 else 6 * GIB
        return snapshot(t, [4 * GIB, 12 * GIB], visible_bytes=[1 * GIB, second])

    result = run(60, 10.0, make)
    allotted = (1.0 + 0.5 * 12 + 0.5 * 6) / 16
    assert result.memory_saved_frac == pytest.approx(1 - allotted)
    assert result.mean_allotted_frac == pytest.approx((0.25 + 0.75) / 2)
    assert result.per_guest[1]["memory_saved_frac"] == pytest.approx(0.25)


def test_a_refault_burst_breaks_exactly_its_interval():
    ws = 1 * GIB
    limit_pages_per_min = 0.002 * ws / PAGE_BYTES  # 524.288 pages/min
    background = 0.7 * limit_pages_per_min / 6  # per 10 s step: 70 % of the limit
    burst_step = 27  # ends at 270 s: the interval (240 s, 300 s]

    def make(k: int, t: float) -> HostSnapshot:
        pages = background * k + (limit_pages_per_min if k >= burst_step else 0.0)
        return snapshot(t, [4 * GIB, 4 * GIB], working_set_bytes=ws, refault_pages=[pages, 0.0])

    result = run(60, 10.0, make)
    assert result.intervals == 10
    assert result.per_guest[0]["violation_frac"] == pytest.approx(0.1)
    assert result.per_guest[1]["violation_frac"] == 0
    assert result.violation_frac == pytest.approx(0.05)
    total = background * 60 + limit_pages_per_min
    assert result.refaults_per_guest_hour == pytest.approx(total / 2 / (600 / 3600))
    assert result.per_guest[0]["refaults_per_hour"] == pytest.approx(total * 6)

    # Which interval: the burst's own (a recorder that stops before it sees no violation).
    recorder = MetricsRecorder(make(0, 0.0))
    for k in range(1, 61):
        recorder.observe(make(k, 10.0 * k))
        if k in (24, 30):
            assert recorder.result().per_guest[0]["violation_frac"] == (0 if k == 24 else pytest.approx(0.2))


def test_the_promotion_limit_is_relative_to_the_working_set():
    ws = 2 * GIB
    limit_pages_per_min = 0.002 * ws / PAGE_BYTES

    def make(rate: float) -> Callable[[int, float], HostSnapshot]:
        return lambda k, t: snapshot(t, 8 * GIB, working_set_bytes=ws, refault_pages=rate * k / 6)

    assert run(12, 10.0, make(0.99 * limit_pages_per_min)).violation_frac == 0
    assert run(12, 10.0, make(1.01 * limit_pages_per_min)).violation_frac == 1
    strict = Slo(promotion_frac_per_min=0.001)
    assert run(12, 10.0, make(0.6 * limit_pages_per_min), strict).violation_frac == 1


def test_an_oom_is_an_event_and_a_violation():
    def make(k: int, t: float) -> HostSnapshot:
        return snapshot(t, [4 * GIB, 4 * GIB, 4 * GIB], oom_kills=[int(k >= 14), 0, 2 * int(k >= 50)])

    result = run(60, 10.0, make)
    assert result.oom_events == 3
    assert [g["oom_events"] for g in result.per_guest] == [1, 0, 2]
    assert [g["violation_frac"] for g in result.per_guest] == pytest.approx([0.1, 0.0, 0.1])
    lenient = run(60, 10.0, make, Slo(oom_violates=False))
    assert lenient.violation_frac == 0 and lenient.oom_events == 3


@pytest.mark.parametrize(
    ("step_s", "intervals", "burst_step", "broken"),
    [
        (45.0, 6, 3, 1),  # steps end at 45, 90, | 135, 180 | 225 ...: a 2-step interval
        (90.0, 4, 2, 1),  # one step per interval; intervals no step ends in do not exist
        (7.0, 6, 9, 1),  # ends at 63 s: the second interval
        (60.0, 6, 1, 1),
    ],
)
def test_steps_that_do_not_divide_the_interval(step_s, intervals, burst_step, broken):
    ws = 1 * GIB

    def make(k: int, t: float) -> HostSnapshot:
        return snapshot(t, 4 * GIB, working_set_bytes=ws, refault_pages=5000.0 * (k >= burst_step))

    steps = round(360 / step_s)
    result = run(steps, step_s, make)
    assert result.intervals == intervals
    assert result.violation_frac == pytest.approx(broken / intervals)


def test_stall_percentiles_over_guest_steps():
    # 100 steps of 10 s: guest 0 stalls 20 %, guest 1 50 % in 4 steps and never else, guest 2 10 %.
    def make(k: int, t: float) -> HostSnapshot:
        spikes = sum(5.0 for step in (10, 20, 30, 40) if k >= step)
        return snapshot(t, [4 * GIB] * 3, psi_s=[2.0 * k, spikes, 1.0 * k])

    result = run(100, 10.0, make)
    # Sorted guest-steps: 96 x 0, 100 x 0.1, 100 x 0.2, 4 x 0.5 (nearest rank: 150th, 297th).
    assert result.stall_frac_p50 == pytest.approx(0.1)
    assert result.stall_frac_p99 == pytest.approx(0.5)
    assert [g["stall_frac_p99"] for g in result.per_guest] == pytest.approx([0.2, 0.5, 0.1])
    assert [g["mean_stall_frac"] for g in result.per_guest] == pytest.approx([0.2, 0.02, 0.1])
    assert result.per_guest[2]["slowdown"] == pytest.approx(1 / 0.9)


def test_stall_percentiles_are_within_one_bin_of_exact():
    rng = np.random.default_rng(7)
    fractions = rng.uniform(0, 1, size=(200, 1, 5)) ** 4  # [steps, hosts, guests]
    psi = np.concatenate([np.zeros((1, 1, 5)), np.cumsum(fractions * 10.0, axis=0)])
    result = record([snapshot(10.0 * k, np.full((1, 5), GIB), psi_s=psi[k]) for k in range(201)])
    for q, got in ((50, result.stall_frac_p50), (99, result.stall_frac_p99)):
        exact = np.percentile(fractions, q, method="inverted_cdf")
        assert exact * (1 - 1e-9) <= got <= exact * 1.024
    for g, entry in enumerate(result.per_guest):
        exact = np.percentile(fractions[:, 0, g], 99, method="inverted_cdf")
        assert exact * (1 - 1e-9) <= entry["stall_frac_p99"] <= exact * 1.024


def test_jain_fairness_of_slowdowns():
    assert jain_index(np.full(7, 3.0)) == pytest.approx(1.0)
    assert jain_index(np.array([1.0, 0.0, 0.0, 0.0])) == pytest.approx(0.25)
    equal = run(12, 10.0, lambda k, t: snapshot(t, [GIB] * 4, psi_s=2.0 * k))
    assert equal.jain_fairness == pytest.approx(1.0)
    # One guest of four stalled half the time: slowdowns 2, 1, 1, 1.
    one = run(12, 10.0, lambda k, t: snapshot(t, [GIB] * 4, psi_s=[5.0 * k, 0, 0, 0]))
    assert one.jain_fairness == pytest.approx((2 + 3) ** 2 / (4 * (4 + 3)))
    # Per host, then averaged over hosts: the first host as above, the second one fair.
    psi = np.array([[5.0, 0, 0, 0], [1.0, 1.0, 1.0, 1.0]])
    two = run(12, 10.0, lambda k, t: snapshot(t, np.full((2, 4), GIB), psi_s=psi * k))
    assert two.jain_fairness == pytest.approx((25 / 28 + 1) / 2)
    # A guest stalled all the time has a large but finite slowdown.
    stuck = run(12, 10.0, lambda k, t: snapshot(t, [GIB] * 2, psi_s=[10.0 * k, 0.0]))
    assert 0.5 < stuck.jain_fairness < 0.501


def test_churn_of_a_target_that_alternates_by_ten_percent():
    prov = 10 * GIB

    def make(k: int, t: float) -> HostSnapshot:
        moving = prov if k % 2 == 0 else 0.9 * prov
        return snapshot(t, [prov, prov], target_bytes=[moving, 0.5 * prov])

    result = run(360, 10.0, make)  # one hour: 360 moves of 10 %
    assert [g["churn"] for g in result.per_guest] == pytest.approx([36.0, 0.0])
    assert result.churn == pytest.approx(18.0)
    half = run(180, 10.0, make)  # per hour, whatever the run's length
    assert half.churn == pytest.approx(18.0)


def test_padding_guests_are_ignored():
    def make(padded: bool) -> Callable[[int, float], HostSnapshot]:
        def build(k: int, t: float) -> HostSnapshot:
            prov = [4 * GIB, 8 * GIB, 64 * GIB] if padded else [4 * GIB, 8 * GIB]
            junk = [GIB, GIB, 1e9 * k] if padded else [GIB, GIB]
            return snapshot(
                t,
                prov,
                visible_bytes=[3 * GIB, 6 * GIB, 1.0][: len(prov)],
                target_bytes=[3 * GIB, 6 * GIB, 7.0 * k][: len(prov)],
                refault_pages=[100.0 * k, 0.0, 1e9 * k][: len(prov)],
                psi_s=[0.5 * k, 0.0, 9.0 * k][: len(prov)],
                oom_kills=[0, int(k > 30), k][: len(prov)],
                working_set_bytes=junk,
                mask=[[True, True, False]] if padded else None,
            )

        return build

    plain, padded = run(60, 10.0, make(False)), run(60, 10.0, make(True))
    assert plain.scalars() == pytest.approx(padded.scalars())
    assert plain.per_guest == padded.per_guest
    assert padded.guests == 2 and len(padded.per_guest) == 2


def test_counter_resets_count_as_zero():
    pages = [0.0, 100.0, 200.0, 10.0, 110.0]  # the counter restarted after step 2
    result = record([snapshot(10.0 * k, GIB, refault_pages=p) for k, p in enumerate(pages)])
    assert result.per_guest[0]["refaults_per_hour"] == pytest.approx(300.0 * 90)  # 10 pages lost


def test_results_are_json_ready_and_named():
    result = run(6, 10.0, lambda k, t: snapshot(t, [GIB, 2 * GIB], psi_s=0.1 * k))
    document = json.loads(json.dumps(result.to_json_dict()))
    assert set(METRIC_NAMES) <= set(document)
    assert list(result.scalars()) == list(METRIC_NAMES)
    assert all(math.isfinite(document[name]) for name in METRIC_NAMES)
    assert set(document["per_guest"][0]) == set(PER_GUEST_KEYS)
    assert document["per_guest"][1]["name"] == "g0.1" and document["per_guest"][1]["host"] == "host0"
    assert document["slo"]["promotion_frac_per_min"] == 0.002


def test_misuse_is_refused():
    first = snapshot(0.0, [GIB, GIB])
    recorder = MetricsRecorder(first)
    with pytest.raises(ValueError, match="no step"):
        recorder.result()
    with pytest.raises(ValueError, match="advance"):
        recorder.observe(snapshot(0.0, [GIB, GIB]))
    with pytest.raises(ValueError, match="mask"):
        recorder.observe(snapshot(10.0, [GIB, GIB], mask=[[True, False]]))
    with pytest.raises(ValueError, match="interval_s"):
        Slo(interval_s=0)
    with pytest.raises(ValueError, match="promotion"):
        Slo(promotion_frac_per_min=-1)
    with pytest.raises(ValueError, match="no guest"):
        empty = snapshot(0.0, [GIB], mask=[[False]])
        recorder = MetricsRecorder(empty)
        recorder.observe(snapshot(10.0, [GIB], mask=[[False]]))
        recorder.result()


def test_end_to_end_on_the_laptop_scenario():
    """A policy asking for 60 % of provisioned, through the control loop, for one simulated hour."""
    from wsrl.inputs.simulated import snapshot_from_simulator
    from wsrl.pipeline.control import ControlSpec
    from wsrl.sim.build import build_setup
    from wsrl.sim.config import load_scenario
    from wsrl.sim.simulator import Simulator

    class SixtyPercent:
        name = "sixty-percent"

        def reset(self, snapshot: HostSnapshot) -> None:
            pass

        def decide(self, snapshot: HostSnapshot) -> np.ndarray:
            return 0.6 * snapshot.provisioned_bytes

    sim = Simulator(build_setup(load_scenario("laptop")))
    sim.reset(3)
    snap = snapshot_from_simulator(sim)
    from wsrl.policies import make_stack

    loop = make_stack(SixtyPercent(), ControlSpec.unguarded())
    loop.reset(snap)
    recorder = MetricsRecorder(snap)
    visible, provisioned = [], []
    for _ in range(360):
        sim.step(loop.step(snap).target_bytes)
        snap = snapshot_from_simulator(sim)
        recorder.observe(snap)
        visible.append(snap.visible_bytes[snap.mask])
        provisioned.append(snap.provisioned_bytes[snap.mask])
    result = recorder.result()

    assert result.guests == 3 and result.steps == 360 and result.intervals == 60
    assert result.duration_s == pytest.approx(3600.0)
    assert result.memory_saved_frac == pytest.approx(1 - np.sum(visible) / np.sum(provisioned), rel=1e-12)
    assert 0.0 < result.memory_saved_frac <= 0.4 + 1e-9
    assert 0.6 - 1e-9 <= result.mean_allotted_frac < 1.0
    assert 0.0 <= result.violation_frac <= 1.0
    assert 0.0 <= result.stall_frac_p50 <= result.stall_frac_p99 <= 1.0
    assert result.jain_fairness >= 1 / 3 and result.jain_fairness <= 1.0  # Jain over 3 guests
    assert result.oom_events == int(sim.model.oom_kills_total.sum())
    # Targets move from 100 % to 60 % once (0.4 per guest), then stay: churn 0.4 per guest-hour.
    assert result.churn == pytest.approx(0.4)
    refaults = sim.model.refault_anon_total + sim.model.refault_file_total
    assert result.refaults_per_guest_hour == pytest.approx(refaults[sim.mask].sum() / 3)
    assert len(result.per_guest) == 3
    assert {g["name"] for g in result.per_guest} == {"desktop", "android", "dev"}
