"""What one guest report may cost the host: caps on its sizes, linear merges, no re-binning in a tick.

A guest is untrusted and its reports reach a root daemon, so every size in a report is capped and
its processing is linear: an ``lru_gen`` dump's memcgs, nodes and generations, a record's bins, a
WSR file's nodes. A report over a cap is refused with one line naming the guest and the cap (it
counts as malformed: the latest good histogram stays and the other guests are served). Merging a
dump's memcgs costs work and memory linear in the dump however their ages interleave (the quadratic
merge took 38 s and 423 MiB for 4,000 memcgs). And the runner's backends put each histogram on the
runner's bin edges on their own threads, so that a tick's snapshot re-bins nothing.

No timings: the tests assert on caps and refusals, on results, and on memory (``tracemalloc``)."""

from __future__ import annotations

import random
import shutil
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_backend_cgroup import make_v2
from test_guest_agent import PAGE, ChardevStandIn, recount, wait_until
from test_runner_support import config_data

from wsrl.agent import parse_lru_gen as lru_gen_parser
from wsrl.agent.bins import MAX_HISTOGRAM_BINS, Bins, merge_bins, merge_lru_gen_bins, rebin_rows
from wsrl.agent.parse_lru_gen import parse_lru_gen
from wsrl.agent.parse_wsr import MAX_NODES as WSR_MAX_NODES
from wsrl.agent.wire import encode_dump, encode_histogram_record
from wsrl.backends.guest_stream import GuestStreamReader, merge_lru_gen
from wsrl.backends.stream_decoder import HistogramRecord, StreamDecoder, parse_record
from wsrl.errors import ParseError
from wsrl.formats import FormatOptions, parse_bytes
from wsrl.histogram import DEFAULT_EDGES_MS, Histogram, merge_nodes
from wsrl.inputs.live import GuestSpec, snapshot_from_readings
from wsrl.runner.backend_registry import build_backends
from wsrl.runner.config import runner_config_from_dict
from wsrl.units import GIB

DATA = Path(__file__).parent / "data"


def memcg_dump(memcgs: int, generations: int = 4, seed: int = 1) -> bytes:
    """An ``lru_gen`` dump of ``memcgs`` memcgs whose generations all have different ages."""
    rng = random.Random(seed)
    lines = []
    for index in range(memcgs):
        lines += [f"memcg {index + 1} /c{index}", " node 0"]
        base = rng.randrange(1_000, 10_000_000)
        ages = sorted(rng.sample(range(base, base + 5_000_000), generations), reverse=True)
        for seq, age in enumerate(ages):
            lines.append(f" {seq + 10} {age} {rng.randrange(10_000)} {rng.randrange(10_000)}")
    return ("\n".join(lines) + "\n").encode()


def traced_peak(work: Callable[[], Any]) -> tuple[Any, int]:
    """``work()``'s result and the most memory it held at once (bytes, as ``tracemalloc`` counts)."""
    tracemalloc.start()
    try:
        result = work()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# -- item 3: a dump's memcgs merge in linear work -----------------------------------------------


def test_a_4000_memcg_dump_merges_to_its_totals_in_bounded_memory() -> None:
    dump = memcg_dump(4000)
    histograms = parse_bytes("lru_gen", dump, FormatOptions(page_size_bytes=PAGE))
    merged, peak = traced_peak(lambda: merge_lru_gen(histograms, None, "vm"))
    anon, file, ages = recount(dump.decode())
    assert merged.total_bytes("anon") == anon and merged.total_bytes("file") == file
    assert len(ages) > MAX_HISTOGRAM_BINS  # every age differs: the union is coarsened to the cap
    assert merged.n_bins == MAX_HISTOGRAM_BINS and merged.edges_ms[-1] == ages[-1]
    assert set(merged.edges_ms) <= set(ages) and merged.bin_bytes()[-1] == 0
    assert merged.meta["memcgs"].count(",") == 3999
    # The quadratic merge held 423 MiB for such a dump; a linear one holds a few MiB.
    assert peak < 24 * 2**20, f"merging held {peak / 2**20:.0f} MiB"


def test_merging_twice_the_memcgs_holds_about_twice_the_memory() -> None:
    """Linear, not quadratic: each histogram is no longer re-binned onto the union of all ages."""
    peaks = []
    for memcgs in (300, 600):
        histograms = parse_bytes("lru_gen", memcg_dump(memcgs, seed=memcgs), FormatOptions())
        _, peak = traced_peak(lambda histograms=histograms: merge_nodes(histograms))
        peaks.append(peak)
    assert peaks[1] < 2.6 * peaks[0], f"peaks {peaks}: work grows faster than the dump"


def test_the_agent_merges_as_the_host_does_and_the_host_accepts_its_record() -> None:
    dump = memcg_dump(2000, seed=7)
    host = merge_lru_gen(parse_bytes("lru_gen", dump), None, "vm")
    agent = merge_lru_gen_bins(parse_lru_gen(dump), None, "vm")
    assert agent.edges_ms == host.edges_ms and len(agent.edges_ms) == MAX_HISTOGRAM_BINS - 1
    assert agent.bytes_by_type["anon"] == host.anon_bytes.tolist()
    assert agent.bytes_by_type["file"] == host.file_bytes.tolist()
    record = parse_record(encode_histogram_record(agent, seq=1, time_ms=1, source="lru_gen"))
    assert isinstance(record, HistogramRecord) and record.histogram("vm").total_bytes() == host.total_bytes()


def test_merging_histograms_on_the_same_edges_adds_them_bin_by_bin() -> None:
    parts = [
        Bins("a", 0, (5, 9), {"anon": [1, 2, 3], "file": [4, 5, 6]}),
        Bins("b", 1, (5, 9), {"anon": [7, 0, 1], "file": [0, 0, 9]}),
    ]
    merged = merge_bins(parts, "vm")
    assert merged.edges_ms == (5, 9)
    assert merged.bytes_by_type == {"anon": [8, 2, 4], "file": [4, 5, 15]}


def test_merging_spreads_a_bin_over_the_union_and_rounds_younger_bytes_up() -> None:
    # (0, 10] holds 10 bytes, 3/10 of them below 3 ms; b's 5 bytes idle over 3 ms go just above 3.
    merged = merge_bins([Bins("a", 0, (10,), {"anon": [10, 0]}), Bins("b", 0, (3,), {"anon": [0, 5]})], "vm")
    assert merged.edges_ms == (3, 10) and merged.bytes_by_type["anon"] == [3, 12, 0]
    # 1 byte over (0, 3]: a third below 1 ms is rounded up (never colder than the source showed).
    odd = merge_bins([Bins("a", 0, (3,), {"anon": [1, 0]}), Bins("b", 0, (1,), {"anon": [0, 0]})], "vm")
    assert odd.bytes_by_type["anon"] == [1, 0, 0]


def test_rebinning_lists_only_the_target_bins_a_source_bin_meets() -> None:
    """Re-binning a 4,096-bin histogram onto a dozen edges walks each bin once (no bins x edges table)."""
    edges = tuple(range(1_000, 1_000 * MAX_HISTOGRAM_BINS, 1_000))
    rows = {"anon": [7] * MAX_HISTOGRAM_BINS, "file": [3] * MAX_HISTOGRAM_BINS}
    (moved, peak) = traced_peak(lambda: rebin_rows(edges, rows, DEFAULT_EDGES_MS))
    assert sum(moved["anon"]) == 7 * MAX_HISTOGRAM_BINS and sum(moved["file"]) == 3 * MAX_HISTOGRAM_BINS
    assert moved["anon"][:3] == [7, 7, 21]  # (0,1s], (1s,2s], (2s,5s] each hold their source bins
    assert peak < 2 * 2**20


# -- item 3: caps, refused in one line -------------------------------------------------------------


def _over_memcgs() -> bytes:
    return memcg_dump(lru_gen_parser.MAX_MEMCGS + 1, generations=1)


def _over_nodes() -> bytes:
    nodes = "".join(f" node {n}\n 1 10 1 1\n" for n in range(lru_gen_parser.MAX_NODES + 1))
    return f"memcg 1 /\n{nodes}".encode()


def _over_generations() -> bytes:
    count = lru_gen_parser.MAX_GENERATIONS + 1
    generations = "".join(f" {seq} {10 * (count - seq)} 1 1\n" for seq in range(count))
    return f"memcg 1 /\n node 0\n{generations}".encode()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_over_memcgs, f"more than {lru_gen_parser.MAX_MEMCGS} memcgs: over the cap on one dump"),
        (_over_nodes, f"memcg 1 has more than {lru_gen_parser.MAX_NODES} nodes (the cap)"),
        (_over_generations, f"node 0 has more than {lru_gen_parser.MAX_GENERATIONS} generations (the cap"),
    ],
    ids=["memcgs", "nodes", "generations"],
)
def test_a_dump_over_a_cap_is_refused_naming_the_cap(make: Callable[[], bytes], reason: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_bytes("lru_gen", make())
    assert reason in str(info.value) and "\n" not in str(info.value)


def test_a_wsr_file_over_the_node_cap_is_refused() -> None:
    blocks = "".join(
        f"N{n}\n1000 anon=1 file=1\n18446744073709551615 anon=0 file=0\n" for n in range(WSR_MAX_NODES + 1)
    )
    with pytest.raises(ParseError, match=f"more than {WSR_MAX_NODES} nodes"):
        parse_bytes("wsr", blocks.encode())


def _record(bins: int) -> bytes:
    edges = list(range(1, bins))
    return encode_histogram_record(
        Histogram("g", -1, edges, {"anon": [1] * bins, "file": [0] * bins}), seq=3, time_ms=5, source="wsr"
    )


def test_a_record_over_the_bin_cap_is_refused_and_counted_as_bad(caplog: pytest.LogCaptureFixture) -> None:
    assert isinstance(parse_record(_record(MAX_HISTOGRAM_BINS)), HistogramRecord)
    with pytest.raises(ParseError, match=f"over the cap of {MAX_HISTOGRAM_BINS} bins per histogram"):
        parse_record(_record(MAX_HISTOGRAM_BINS + 1))
    decoder = StreamDecoder(name="vm-7")
    assert decoder.feed(_record(MAX_HISTOGRAM_BINS + 1) + _record(2), 0.0)[0].edges_ms == (1,)
    assert decoder.bad_records == 1
    assert (
        "guest stream vm-7: bad record dropped: guest_stream: record seq=3: "
        f"edges_ms: {MAX_HISTOGRAM_BINS} values" in caplog.text
    )


def test_the_reader_refuses_a_dump_over_a_cap_and_reads_the_next(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = (DATA / "lru_gen" / "real-lru_gen-1.txt").read_bytes()
    chardev = ChardevStandIn(tmp_path / "ws0.sock")  # QEMU's end of the guest's port
    reader = GuestStreamReader(chardev.path, guest="vm-3")
    reader.start()
    try:
        conn = chardev.accept()
        conn.sendall(encode_dump(1, "lru_gen", _over_generations()) + encode_dump(2, "lru_gen", good))
        sample = reader.wait_for_sample(0, timeout_s=10)
        wait_until(lambda: reader.stats().parse_errors == 1, 10, "the refused dump")
        assert sample is not None and sample.seq == 2
        anon, file, _ = recount(good.decode())
        assert sample.histogram.total_bytes("anon") == anon and sample.histogram.total_bytes("file") == file
        refusals = [r.getMessage() for r in caplog.records if "generations (the cap" in r.getMessage()]
        assert len(refusals) == 1 and refusals[0].startswith(
            f"guest stream vm-3 ({chardev.path}): dump seq=1"
        )
    finally:
        reader.close()
        chardev.close()


# -- item 5: re-binning happens where the report is read, not in the tick --------------------------


def test_the_reader_puts_histograms_on_the_runners_edges_as_they_arrive(tmp_path: Path) -> None:
    chardev = ChardevStandIn(tmp_path / "ws0.sock")
    reader = GuestStreamReader(chardev.path, guest="vm", edges_ms=DEFAULT_EDGES_MS)
    reader.start()
    try:
        conn = chardev.accept()
        conn.sendall(_record(MAX_HISTOGRAM_BINS))
        sample = reader.wait_for_sample(0, timeout_s=10)
        assert sample is not None and sample.transport == "agent"
        assert sample.histogram.edges_ms == DEFAULT_EDGES_MS
        assert sample.histogram.total_bytes("anon") == MAX_HISTOGRAM_BINS
        assert sample.histogram.meta["transport"] == "agent"
    finally:
        reader.close()
        chardev.close()


def test_a_tick_does_no_rebinning_for_what_the_runners_backends_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    capture = tmp_path / "lru_gen"
    shutil.copy(DATA / "lru_gen" / "real-lru_gen-1.txt", capture)
    make_v2(tmp_path / "cg", "wsrl/hot")
    edges = [3_000, 7_000, 60_000]
    guest = {
        "name": "hot",
        "provisioned_gib": 1,
        "floor_gib": 0.25,
        "backend": {
            "kind": "cgroup",
            "path": "wsrl/hot",
            "root": str(tmp_path / "cg"),
            "version": "v2",
            "histogram_source": "lru_gen",
            "lru_gen_path": str(capture),
        },
    }
    data = config_data(tmp_path, guests=[guest], record=False, host={"histogram_edges_ms": edges})
    data.pop("sim")
    [backend] = build_backends(runner_config_from_dict(data, base_dir=tmp_path))
    try:
        reading = backend.read()  # what GuestCalls runs on a worker, under the read deadline
    finally:
        backend.close()
    assert reading.histogram is not None and reading.histogram.edges_ms == tuple(edges)
    assert reading.histogram.total_bytes("anon") == (21 + 4107 + 1613) * 4096

    rebinned: list[tuple[int, ...]] = []
    original = Histogram.rebin

    def counting_rebin(self: Histogram, edges_ms: Any) -> Histogram:
        if tuple(edges_ms) != self.edges_ms:
            rebinned.append(self.edges_ms)
        return original(self, edges_ms)

    monkeypatch.setattr(Histogram, "rebin", counting_rebin)
    snapshot = snapshot_from_readings(
        [reading],
        [GuestSpec("hot", GIB, GIB / 4)],
        host_name="h",
        capacity_bytes=4 * GIB,
        reserve_bytes=0,
        interval_s=10,
        time_ms=reading.time_ms,
        edges_ms=edges,
    )
    assert rebinned == [], "the tick re-binned a histogram its backend had read"
    assert snapshot.hist_bytes[0, 0, 0].tolist() == reading.histogram.anon_bytes.tolist()
