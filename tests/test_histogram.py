"""The canonical histogram: construction rules, the cold-memory curve, exact re-binning and merging."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from wsrl.errors import HistogramError
from wsrl.histogram import ALL_NODES, DEFAULT_EDGES_MS, Histogram, merge_nodes

# The WSR example from the working-set reporting patch documentation (values are bytes).
WSR_EXAMPLE = Histogram(
    "memcg", 0, [1000, 20000], {"anon": [137368, 34342, 4925624], "file": [24530, 0, 1835328]}
)

edges_strategy = st.lists(st.integers(0, 10**9), max_size=12, unique=True).map(sorted)


@st.composite
def histograms(draw: st.DrawFn, extra_types: bool = True) -> Histogram:
    edges = draw(edges_strategy)
    n_bins = len(edges) + 1
    byte_lists = st.lists(st.integers(0, 2**50), min_size=n_bins, max_size=n_bins)
    rows = {"anon": draw(byte_lists), "file": draw(byte_lists)}
    if extra_types and draw(st.booleans()):
        rows["slab"] = draw(byte_lists)
    return Histogram(draw(st.text(min_size=1, max_size=5)), draw(st.integers(-1, 3)), edges, rows)


def test_wsr_example_totals_and_shape() -> None:
    h = WSR_EXAMPLE
    assert h.n_bins == 3
    assert h.max_age_ms == [1000, 20000, None]
    assert h.total_bytes("anon") == 137368 + 34342 + 4925624
    assert h.total_bytes("file") == 24530 + 1835328
    assert h.total_bytes() == h.total_bytes("anon") + h.total_bytes("file")
    assert h.bin_bytes() == [161898, 34342, 6760952]
    assert h.known_up_to_ms == 20000


def test_cold_bytes_interpolates_inside_bins_and_stops_at_the_open_bin() -> None:
    h = WSR_EXAMPLE
    assert h.cold_bytes(0) == h.total_bytes()
    assert h.cold_bytes(1000) == 34342 + 6760952
    # Halfway through (1000, 20000]: half of that bin's 34342 bytes (uniform ages).
    assert h.cold_bytes(10500) == 34342 // 2 + 6760952
    assert h.cold_bytes(20000) == 6760952
    # Beyond the last finite edge the source says nothing: the open bin no longer counts.
    assert h.cold_bytes(20001) == 0
    assert h.cold_bytes(1000, "file") == 1835328
    assert list(h.cold_curve([0, 1000, 20000])) == [h.total_bytes(), 34342 + 6760952, 6760952]


def test_rebin_splits_proportionally_and_is_exact() -> None:
    h = Histogram("g", 0, [1000], {"anon": [1000, 50], "file": [3, 0]})
    r = h.rebin([250, 1000, 5000])
    assert list(r.anon_bytes) == [250, 750, 50, 0]  # open bin goes to the bin just above 1000 ms
    assert r.total_bytes("file") == 3
    assert list(r.file_bytes) == [1, 2, 0, 0]  # 0.75 and 2.25 rounded by largest remainder


def test_zero_width_first_bin_is_a_point_mass_at_age_zero() -> None:
    h = Histogram("g", 0, [0, 100], {"anon": [7, 10, 0], "file": [0, 0, 0]})
    assert list(h.rebin([50]).anon_bytes) == [12, 5]


@pytest.mark.parametrize(
    ("edges", "rows", "message"),
    [
        ([10, 10], {"anon": [1, 1, 1], "file": [0, 0, 0]}, "strictly increasing"),
        ([10], {"anon": [1, 1]}, "lacks memory type"),
        ([10], {"anon": [1], "file": [0, 0]}, "expected 2"),
        ([10], {"anon": [-1, 1], "file": [0, 0]}, "out of range"),
        ([-5], {"anon": [1, 1], "file": [0, 0]}, "out of range"),
        ([10], {"anon": [2**63, 0], "file": [0, 0]}, "out of range"),
        ([10], {"anon": [1.5, 0], "file": [0, 0]}, "integer"),
    ],
)
def test_invalid_histograms_are_refused(edges: list, rows: dict, message: str) -> None:
    with pytest.raises(HistogramError, match=message):
        Histogram("g", 0, edges, rows)


def test_json_round_trip_keeps_extra_types() -> None:
    h = Histogram("g", 1, [5, 9], {"anon": [1, 2, 3], "file": [4, 5, 6], "slab": [7, 8, 9]}, {"k": "v"})
    data = h.to_json_dict()
    assert data["bins"][-1] == {"max_age_ms": None, "anon_bytes": 3, "file_bytes": 6, "slab_bytes": 9}
    assert Histogram.from_json_dict(data) == h


@settings(max_examples=200, deadline=None)
@given(histograms(), edges_strategy)
def test_rebin_conserves_every_type_exactly(h: Histogram, target: list[int]) -> None:
    r = h.rebin(target)
    assert r.totals_by_type() == h.totals_by_type()
    assert r.edges_ms == tuple(target)
    assert (r.bytes >= 0).all()


@settings(max_examples=200, deadline=None)
@given(histograms(extra_types=False), edges_strategy)
@example(  # found by hypothesis: two types, each split with its own rounding, 3 bytes over
    Histogram("0", 0, [1878082], {"anon": [283993565, 0], "file": [283993565, 0]}),
    [417, 1719, 34361, 65536],
)
def test_rebin_never_claims_more_cold_memory_than_the_source(h: Histogram, target: list[int]) -> None:
    r = h.rebin(target)
    # Equal up to rounding: every type splits every source bin over the target bins by largest
    # remainder (each part off by under a byte), and the source's cold bytes round down per bin.
    rounding = len(h.types) * h.n_bins * (len(target) + 1) + h.n_bins
    for idle_ms in target:
        assert r.cold_bytes(idle_ms) <= h.cold_bytes(idle_ms) + rounding


@settings(max_examples=150, deadline=None)
@given(histograms())
def test_rebin_onto_a_refinement_and_back_is_the_identity(h: Histogram) -> None:
    finer = sorted(set(h.edges_ms) | set(DEFAULT_EDGES_MS))
    assert h.rebin(finer).rebin(h.edges_ms) == h


@settings(max_examples=150, deadline=None)
@given(st.lists(histograms(), min_size=1, max_size=4))
def test_merge_nodes_conserves_bytes(parts: list[Histogram]) -> None:
    merged = merge_nodes(parts)
    assert merged.node == ALL_NODES
    for type_name in {t for h in parts for t in h.types}:
        assert merged.total_bytes(type_name) == sum(h.total_bytes(type_name) for h in parts)
    assert merged.total_bytes() == sum(h.total_bytes() for h in parts)


@settings(max_examples=150, deadline=None)
@given(histograms(), histograms())
def test_distance_is_a_bounded_symmetric_measure(a: Histogram, b: Histogram) -> None:
    d = a.distance(b)
    assert 0.0 <= d <= 1.0 + 1e-12
    assert d == pytest.approx(b.distance(a))
    assert a.distance(a) == 0.0


@settings(max_examples=100, deadline=None)
@given(histograms())
def test_normalised_sums_to_one(h: Histogram) -> None:
    shares = h.normalised()
    assert shares.shape == h.bytes.shape
    assert shares.sum() == pytest.approx(1.0 if h.total_bytes() else 0.0)


def test_merging_two_nodes_of_the_same_edges_adds_bins() -> None:
    n0 = Histogram("vm", 0, [1000], {"anon": [1, 2], "file": [3, 4]})
    n1 = Histogram("vm", 1, [1000], {"anon": [10, 20], "file": [30, 40]})
    merged = merge_nodes([n0, n1])
    assert merged.guest == "vm"
    assert list(merged.anon_bytes) == [11, 22]
    assert list(merged.file_bytes) == [33, 44]


def test_histograms_with_different_extra_types_merge_and_compare_by_type() -> None:
    a = Histogram("vm", 0, [10], {"anon": [1, 0], "file": [0, 0], "slab": [5, 0]})
    b = Histogram("vm", 1, [10], {"anon": [2, 0], "file": [0, 0], "shmem": [7, 0]})
    merged = merge_nodes([a, b])
    assert merged.totals_by_type() == {"anon": 3, "file": 0, "slab": 5, "shmem": 7}
    assert a.distance(b) == pytest.approx(0.5 * (abs(1 / 6 - 2 / 9) + 5 / 6 + 7 / 9))


def test_cold_weights_agree_with_cold_bytes():
    from wsrl.histogram import cold_weights

    rng = np.random.default_rng(5)
    edges = [1_000, 10_000, 40_000, 120_000, 600_000]
    for _ in range(50):
        anon = rng.integers(0, 10**9, len(edges) + 1)
        file = rng.integers(0, 10**9, len(edges) + 1)
        hist = Histogram("g", 0, edges, {"anon": anon, "file": file})
        for idle_ms in (0, 500, 1_000, 25_000, 120_000, 599_999, 600_000, 10**7):
            expected = hist.cold_bytes(idle_ms)
            got = float((anon + file) @ cold_weights(edges, idle_ms))
            assert abs(got - expected) <= len(edges) + 1  # cold_bytes rounds each bin down
