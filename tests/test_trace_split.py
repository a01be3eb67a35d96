"""The VM-disjoint, time-forward train / holdout split, on real Bitbrains data.

The bundled slice (8 real VMs, 3 days) checks every property exactly; one test splits the whole
shared history. Counts are recomputed here from the source's Parquet parts with pyarrow and the
documented hash rule, not taken from the splitter.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from test_cli_trace import assert_user_error, wsrl

from wsrl.errors import TraceError, WsrlError
from wsrl.inputs.setup import trace_setup
from wsrl.trace import SCHEMA_VERSION, TraceReader, TraceWriter
from wsrl.trace.bitbrains import import_bitbrains
from wsrl.trace.split import SPLIT_FILE_NAME, read_split, split_trace
from wsrl.trace.validate import validate_trace

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "envs" / "traces" / "bitbrains-sample"
SHARED = REPO.parent / "shared" / "data" / "bitbrains-rnd" / "memory.parquet"
SALT = "wsrl-split-v1"
BUNDLED_GUESTS = {"vm1", "vm2", "vm20", "vm24", "vm38", "vm127", "vm154", "vm200"}


def held_out(guest: str, frac: float, salt: str = SALT) -> bool:
    """The documented rule, written out independently of wsrl.trace.split."""
    digest = hashlib.sha256(salt.encode() + b"\0" + guest.encode()).digest()
    return int.from_bytes(digest[:8], "big") < frac * 2**64


def source_keys(directory: Path) -> pa.Table:
    """guest and time_ms of every committed part, read straight from the Parquet files."""
    parts = sorted(directory.glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(p, columns=["guest", "time_ms"]) for p in parts])


def expected_sides(directory: Path, holdout_frac: float, cutoff_frac: float) -> dict[str, object]:
    keys = source_keys(directory)
    times = keys.column("time_ms").to_numpy()
    cutoff = times.min() + cutoff_frac * (times.max() - times.min())
    guests = set(pc.unique(keys.column("guest")).to_pylist())
    holdout = sorted(g for g in guests if held_out(g, holdout_frac))
    is_holdout = pc.is_in(keys.column("guest"), value_set=pa.array(holdout, pa.string())).to_numpy(
        zero_copy_only=False
    )
    before = times < cutoff
    return {
        "cutoff": cutoff,
        "guests": guests,
        "holdout_guests": set(holdout),
        "train_samples": int((~is_holdout & before).sum()),
        "holdout_samples": int((is_holdout & ~before).sum()),
        "total": len(times),
    }


def copy_of(rows: pa.Table, directory: Path, *, part_per_guest: bool = False) -> Path:
    """Write ``rows`` as a new trace (one part per guest, in reverse guest order, if asked)."""
    with TraceWriter(directory, source="import:bitbrains", meta={"dataset": "test copy"}) as writer:
        if part_per_guest:
            for guest in sorted(set(rows.column("guest").to_pylist()), reverse=True):
                writer.append_table(rows.filter(pc.equal(rows.column("guest"), guest)))
                writer.flush()
        else:
            writer.append_table(rows)
    return directory


# -- the bundled slice ------------------------------------------------------------------------


@pytest.mark.parametrize("holdout_frac", [0.25, 0.5])
def test_split_of_the_bundled_slice_is_vm_disjoint_and_time_forward(
    tmp_path: Path, holdout_frac: float
) -> None:
    train_dir, holdout_dir = tmp_path / "train", tmp_path / "holdout"
    summary = split_trace(BUNDLED, train_dir, holdout_dir, holdout_frac=holdout_frac, cutoff_frac=0.7)
    expected = expected_sides(BUNDLED, holdout_frac, 0.7)

    # VM-disjoint: the assignment follows the documented hash, covers every guest exactly once.
    train_guests, holdout_guests = set(summary.train.guests), set(summary.holdout.guests)
    assert expected["guests"] == BUNDLED_GUESTS
    assert holdout_guests == expected["holdout_guests"] == {"vm1", "vm200"}
    assert not train_guests & holdout_guests
    assert train_guests | holdout_guests == BUNDLED_GUESTS

    # Time-forward: every train sample before the cutoff, every holdout sample at or after it.
    assert summary.cutoff_ms == math.ceil(expected["cutoff"])
    train = TraceReader(train_dir).read_table()
    holdout = TraceReader(holdout_dir).read_table()
    assert set(train.column("guest").to_pylist()) <= train_guests
    assert set(holdout.column("guest").to_pylist()) <= holdout_guests
    assert pc.max(train.column("time_ms")).as_py() < expected["cutoff"]
    assert pc.min(holdout.column("time_ms")).as_py() >= expected["cutoff"]

    # Counts: what falls on each side of the source, counted independently.
    assert (train.num_rows, holdout.num_rows) == (expected["train_samples"], expected["holdout_samples"])
    assert (summary.train.samples, summary.holdout.samples) == (train.num_rows, holdout.num_rows)
    assert summary.source_samples == expected["total"] == 4644
    assert (
        summary.train.samples
        + summary.holdout.samples
        + summary.dropped_train_guest_samples
        + summary.dropped_holdout_guest_samples
        == expected["total"]
    )

    # Every column and flag preserved: the sides are exactly the source's rows on that side.
    source = TraceReader(BUNDLED)
    assert train.equals(source.read_table(guests=sorted(train_guests), end_ms=summary.cutoff_ms))
    assert holdout.equals(source.read_table(guests=sorted(holdout_guests), start_ms=summary.cutoff_ms))
    assert pc.count(pc.list_flatten(train.column("flags"))).as_py() > 0

    # The store's validation accepts both, and the manifest keeps the source's metadata.
    for side, directory in (("train", train_dir), ("holdout", holdout_dir)):
        assert validate_trace(directory).ok
        result = wsrl("trace", "validate", str(directory))
        assert result.returncode == 0 and "valid" in result.stdout, result.stdout + result.stderr
        manifest = json.loads((directory / "trace.json").read_text())
        assert manifest["source"] == "import:bitbrains"
        assert manifest["meta"]["dataset"].startswith("Bitbrains GWA-T-12")
        assert manifest["meta"]["split"]["side"] == side
        assert manifest["meta"]["split"]["cutoff_ms"] == summary.cutoff_ms

    # split.json: the same record beside both outputs.
    record = read_split(train_dir)
    assert record == read_split(holdout_dir) == json.loads((holdout_dir / SPLIT_FILE_NAME).read_text())
    assert record["source"] == str(BUNDLED) and record["salt"] == SALT
    assert (record["holdout_frac"], record["cutoff_frac"]) == (holdout_frac, 0.7)
    assert record["cutoff_ms"] == summary.cutoff_ms
    assert record["cutoff_utc"] == "2013-07-17T02:21:14+00:00"
    assert set(record["train"]["guests"]) == train_guests
    assert set(record["holdout"]["guests"]) == holdout_guests
    assert (record["train"]["samples"], record["holdout"]["samples"]) == (train.num_rows, holdout.num_rows)


def test_both_sides_replay_in_the_simulator(tmp_path: Path) -> None:
    summary = split_trace(BUNDLED, tmp_path / "train", tmp_path / "holdout", holdout_frac=0.25)
    train = trace_setup(tmp_path / "train")
    holdout = trace_setup(tmp_path / "holdout")
    replayed_train = {str(n).removeprefix("vm-") for n in train.guests.names[train.guests.mask]}
    replayed_holdout = {str(n).removeprefix("vm-") for n in holdout.guests.names[holdout.guests.mask]}
    assert replayed_train == set(summary.train.guests)
    assert replayed_holdout == set(summary.holdout.guests)
    assert (holdout.hosts.capacity_bytes > 0).all()


def test_split_is_deterministic_and_independent_of_guest_order(tmp_path: Path) -> None:
    first = split_trace(BUNDLED, tmp_path / "a-train", tmp_path / "a-holdout", holdout_frac=0.5)
    again = split_trace(BUNDLED, tmp_path / "b-train", tmp_path / "b-holdout", holdout_frac=0.5)
    assert (again.train.guests, again.holdout.guests) == (first.train.guests, first.holdout.guests)
    assert (
        TraceReader(tmp_path / "b-holdout")
        .read_table()
        .equals(TraceReader(tmp_path / "a-holdout").read_table())
    )

    # The same rows, written one part per guest in reverse order: the same split.
    rows = TraceReader(BUNDLED).read_table(sort=False)
    shuffled = copy_of(rows, tmp_path / "reordered", part_per_guest=True)
    assert len(list(shuffled.glob("part-*.parquet"))) == len(BUNDLED_GUESTS)
    reordered = split_trace(shuffled, tmp_path / "c-train", tmp_path / "c-holdout", holdout_frac=0.5)
    assert (reordered.train.guests, reordered.holdout.guests) == (first.train.guests, first.holdout.guests)
    assert reordered.cutoff_ms == first.cutoff_ms
    for side in ("train", "holdout"):
        assert (
            TraceReader(tmp_path / f"c-{side}")
            .read_table()
            .equals(TraceReader(tmp_path / f"a-{side}").read_table())
        )

    # Fewer guests: every remaining guest keeps its side.
    kept = ["vm1", "vm2", "vm20", "vm200"]
    subset = copy_of(rows.filter(pc.is_in(rows.column("guest"), pa.array(kept))), tmp_path / "subset")
    fewer = split_trace(subset, tmp_path / "d-train", tmp_path / "d-holdout", holdout_frac=0.5)
    assert set(fewer.holdout.guests) == set(first.holdout.guests) & set(kept)
    assert set(fewer.train.guests) == set(first.train.guests) & set(kept)

    # Another salt is another split of the same guests.
    salted = split_trace(BUNDLED, tmp_path / "e-train", tmp_path / "e-holdout", holdout_frac=0.5, salt="x")
    assert set(salted.holdout.guests) == {g for g in BUNDLED_GUESTS if held_out(g, 0.5, "x")}


# -- refusals ---------------------------------------------------------------------------------


def test_refuses_non_empty_outputs_and_overlapping_paths(tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    with pytest.raises(TraceError, match=r"busy: train output directory is not empty"):
        split_trace(BUNDLED, busy, tmp_path / "holdout")
    with pytest.raises(TraceError, match=r"busy: holdout output directory is not empty"):
        split_trace(BUNDLED, tmp_path / "train", busy)
    assert (busy / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / "train").exists() and not (tmp_path / "holdout").exists()
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(TraceError, match=r"file: train output exists and is not a directory"):
        split_trace(BUNDLED, a_file, tmp_path / "holdout")
    with pytest.raises(TraceError, match=r"same: holdout output must not be the train output"):
        split_trace(BUNDLED, tmp_path / "same", tmp_path / "same")
    with pytest.raises(TraceError, match=r"must not be the source trace or lie inside or above it"):
        split_trace(BUNDLED, BUNDLED / "train", tmp_path / "holdout")
    assert not (BUNDLED / "train").exists()


def test_refuses_a_source_that_is_not_a_trace(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match=r"nope: no such trace directory"):
        split_trace(tmp_path / "nope", tmp_path / "train", tmp_path / "holdout")
    not_a_trace = tmp_path / "loose"
    not_a_trace.mkdir()
    shutil.copy(next(BUNDLED.glob("part-*.parquet")), not_a_trace)
    with pytest.raises(TraceError, match=r"loose: not a trace directory \(no trace.json\)"):
        split_trace(not_a_trace, tmp_path / "train", tmp_path / "holdout")
    empty = copy_of(TraceReader(BUNDLED).read_table().slice(0, 0), tmp_path / "empty")
    with pytest.raises(TraceError, match=r"empty: trace holds no samples"):
        split_trace(empty, tmp_path / "train", tmp_path / "holdout")
    assert not (tmp_path / "train").exists()


def test_refuses_a_side_that_would_be_empty(tmp_path: Path) -> None:
    # No guest of the bundled slice hashes below 0.01 (vm1 is lowest, ~0.04), none above 0.72.
    with pytest.raises(TraceError, match=r"holdout: holdout side would hold no guest \(8 guest"):
        split_trace(BUNDLED, tmp_path / "train", tmp_path / "holdout", holdout_frac=0.01)
    with pytest.raises(TraceError, match=r"train: train side would hold no guest"):
        split_trace(BUNDLED, tmp_path / "train", tmp_path / "holdout", holdout_frac=0.9)
    # The held-out guests' real rows of the first day only: nothing of theirs after a late cutoff.
    rows = TraceReader(BUNDLED).read_table()
    first_day_end_ms = pc.min(rows.column("time_ms")).as_py() + 86_400_000
    holdout_guests = pa.array(["vm1", "vm200"])
    early = pc.or_(
        pc.invert(pc.is_in(rows.column("guest"), holdout_guests)),
        pc.less(rows.column("time_ms"), first_day_end_ms),
    )
    source = copy_of(rows.filter(early), tmp_path / "early")
    with pytest.raises(TraceError, match=r"holdout side would hold no sample: none of its 2 guest"):
        split_trace(source, tmp_path / "train", tmp_path / "holdout", holdout_frac=0.25, cutoff_frac=0.5)
    assert not (tmp_path / "train").exists() and not (tmp_path / "holdout").exists()
    # And the reverse: the train guests' rows of the last day only, before an early cutoff.
    late = pc.or_(
        pc.is_in(rows.column("guest"), holdout_guests),
        pc.greater_equal(rows.column("time_ms"), first_day_end_ms + 86_400_000),
    )
    source = copy_of(rows.filter(late), tmp_path / "late")
    with pytest.raises(TraceError, match=r"train side would hold no sample: none of its 6 guest"):
        split_trace(source, tmp_path / "train", tmp_path / "holdout", holdout_frac=0.25, cutoff_frac=0.3)


@pytest.mark.parametrize("value", [0.0, 1.0, -0.2, 1.5])
def test_refuses_fractions_outside_the_open_unit_interval(tmp_path: Path, value: float) -> None:
    with pytest.raises(WsrlError, match=r"holdout_frac must be strictly between 0 and 1"):
        split_trace(BUNDLED, tmp_path / "train", tmp_path / "holdout", holdout_frac=value)
    with pytest.raises(WsrlError, match=r"cutoff_frac must be strictly between 0 and 1"):
        split_trace(BUNDLED, tmp_path / "train", tmp_path / "holdout", cutoff_frac=value)


# -- the command line -------------------------------------------------------------------------


def test_cli_split_prints_a_summary_and_json(tmp_path: Path) -> None:
    train, holdout = tmp_path / "train", tmp_path / "holdout"
    result = wsrl(
        "trace",
        "split",
        str(BUNDLED),
        "--train",
        str(train),
        "--holdout",
        str(holdout),
        "--holdout-frac",
        "0.25",
    )
    assert result.returncode == 0, result.stderr
    assert "8 guests, 4,644 samples) at 2013-07-17T02:21:14" in result.stdout
    assert "train   6 guests, 2,831 samples before the cutoff" in result.stdout
    assert "holdout 2 guests, 103 samples at or after the cutoff" in result.stdout
    as_json = wsrl(
        "trace",
        "split",
        str(BUNDLED),
        "--train",
        str(tmp_path / "t2"),
        "--holdout",
        str(tmp_path / "h2"),
        "--holdout-frac",
        "0.25",
        "--json",
    )
    assert as_json.returncode == 0, as_json.stderr
    record = json.loads(as_json.stdout)
    assert record == read_split(tmp_path / "h2")
    first = read_split(train)
    for key in ("cutoff_ms", "source_samples"):
        assert record[key] == first[key]
    assert record["holdout"]["guests"] == first["holdout"]["guests"] == ["vm1", "vm200"]


def test_cli_split_refusals_exit_2_with_one_line(tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("")
    assert_user_error(
        wsrl("trace", "split", str(BUNDLED), "--train", str(busy), "--holdout", str(tmp_path / "h")),
        str(busy),
        "not empty",
    )
    assert_user_error(
        wsrl(
            "trace", "split", str(tmp_path), "--train", str(tmp_path / "t"), "--holdout", str(tmp_path / "h")
        ),
        str(tmp_path),
        "not a trace directory",
    )
    assert_user_error(
        wsrl(
            "trace",
            "split",
            str(BUNDLED),
            "--train",
            str(tmp_path / "t"),
            "--holdout",
            str(tmp_path / "h"),
            "--holdout-frac",
            "0.01",
        ),
        "holdout side would hold no guest",
    )
    assert_user_error(
        wsrl(
            "trace",
            "split",
            str(BUNDLED),
            "--train",
            str(tmp_path / "t"),
            "--holdout",
            str(tmp_path / "h"),
            "--cutoff-frac",
            "1",
        ),
        "cutoff_frac must be strictly between 0 and 1",
    )
    assert not (tmp_path / "t").exists()


# -- the whole shared history -----------------------------------------------------------------


def test_split_of_the_full_shared_bitbrains_history(tmp_path: Path) -> None:
    if not SHARED.is_file():
        pytest.fail(
            f"the shared Bitbrains data set is missing: {SHARED} (it belongs beside the checkout, "
            "../shared/data/bitbrains-rnd/memory.parquet)",
            pytrace=False,
        )
    source = tmp_path / "all"
    import_bitbrains(SHARED, source)
    summary = split_trace(source, tmp_path / "train", tmp_path / "holdout")
    expected = expected_sides(source, 0.2, 0.7)

    train_guests, holdout_guests = set(summary.train.guests), set(summary.holdout.guests)
    assert len(expected["guests"]) == 397
    assert holdout_guests == expected["holdout_guests"]
    assert not train_guests & holdout_guests and train_guests | holdout_guests == expected["guests"]
    assert 0.1 * 397 < len(holdout_guests) < 0.3 * 397
    assert summary.cutoff_utc.startswith("2013-09-02")

    train = source_keys(tmp_path / "train")
    holdout = source_keys(tmp_path / "holdout")
    assert (train.num_rows, holdout.num_rows) == (expected["train_samples"], expected["holdout_samples"])
    assert pc.max(train.column("time_ms")).as_py() < expected["cutoff"]
    assert pc.min(holdout.column("time_ms")).as_py() >= expected["cutoff"]
    assert set(pc.unique(train.column("guest")).to_pylist()) <= train_guests
    assert set(pc.unique(holdout.column("guest")).to_pylist()) <= holdout_guests
    assert read_split(tmp_path / "train") == read_split(tmp_path / "holdout")
    report = validate_trace(tmp_path / "holdout")
    assert report.ok and report.rows_checked == holdout.num_rows, report.problems
    # The train side's full validation takes ~5 s more; here its parts' schema (with the field
    # descriptions and the schema version) must be the source's, the row rules are checked on the
    # bundled slice above.
    source_schema = pq.read_schema(next(source.glob("part-*.parquet")))
    assert source_schema.metadata == {b"wsrl.schema_version": str(SCHEMA_VERSION).encode()}
    for part in sorted((tmp_path / "train").glob("part-*.parquet")):
        assert pq.read_schema(part).equals(source_schema, check_metadata=True), part
