"""CgroupBackend against the real kernel (cgroup v1 memcg, zram swap) and crafted cgroup trees.

The real-kernel tests need root, the cgroup v1 memory controller and zram0; they fail, never skip,
when one is missing. cgroup v2 is tested on crafted directory trees only (real files with the
kernel's contents, written and read by the backend): this kernel mounts cgroup v2 without the
memory controller. Every group, swap device and process a test creates is removed in ``finally``
blocks (see ``cgroup_fixtures``).
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cgroup_fixtures import TEST_PARENT, hog, v1_memcg, zram_swap

from wsrl.backends.base import BackendError, GuestBackend, GuestSpec, snapshot_from_readings
from wsrl.backends.cgroup import (
    KERNEL_MAX_BYTES,
    LRU_EDGE_MS,
    MAX_FILE_BYTES,
    PAGE_SIZE_BYTES,
    CgroupBackend,
)
from wsrl.formats import parse_bytes
from wsrl.histogram import merge_nodes
from wsrl.units import GIB, MIB

pytestmark = pytest.mark.timeout(120)

DATA = Path(__file__).parent / "data"
UNLIMITED_V1 = str(KERNEL_MAX_BYTES)


def _read(path: Path) -> str:
    return path.read_text().strip()


def _wait_for(condition: Callable[[], bool], timeout_s: float, step_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step_s)
    return bool(condition())


# ------------------------------------------------------------------------------------------------
# The real kernel: a v1 memcg, a real process, zram swap.


@pytest.mark.cgroup
def test_real_v1_process_swaps_under_a_lowered_limit_and_survives() -> None:
    started = time.monotonic()
    with zram_swap(1 * GIB), v1_memcg("swap") as group, hog(group, 300) as child:
        backend = CgroupBackend("web", group.relative_to(TEST_PARENT.parent))
        assert isinstance(backend, GuestBackend)
        assert backend.version == "v1" and backend.dir == group
        backend.start(lambda reason: None)

        before = backend.read()
        rss = child.rss_anon_bytes()
        assert before.source["backend"] == "cgroup-v1"
        assert abs(before.usage_bytes - rss) <= 0.05 * rss + 16 * MIB, (before.usage_bytes, rss)
        assert math.isnan(before.target_bytes)  # unlimited: the kernel has no target
        assert before.visible_bytes == before.usage_bytes
        assert before.histogram is not None
        assert before.histogram.edges_ms == (LRU_EDGE_MS,)
        assert 280 * MIB <= before.histogram.total_bytes() <= before.usage_bytes
        assert before.swap_bytes == 0 and before.oom_kills_total == 0
        assert math.isnan(before.psi_some_total_s) and math.isnan(before.psi_some_avg10)

        lowered_s = time.monotonic()
        backend.apply(200 * MIB + 123)
        apply_s = time.monotonic() - lowered_s
        assert _read(group / "memory.limit_in_bytes") == str(200 * MIB)
        assert _read(group / "memory.soft_limit_in_bytes") == str(200 * MIB)
        assert _wait_for(lambda: backend.read().refault_total - before.refault_total > 10_000, 10.0)
        squeezed = backend.read()
        squeezed_after_s = time.monotonic() - lowered_s
        time.sleep(2.0)  # two sweeps at the lowered limit: the thrashing goes on, the child lives
        steady = backend.read()
        steady_refaults = steady.refault_total - squeezed.refault_total
        assert steady_refaults > 10_000, steady_refaults
        assert child.alive()
        assert squeezed.target_bytes == squeezed.visible_bytes == 200 * MIB
        assert squeezed.usage_bytes <= 200 * MIB
        assert squeezed.swap_bytes > 50 * MIB  # the rest of its 300 MiB sits in zram
        assert squeezed.oom_kills_total == 0
        assert squeezed.histogram is not None
        assert squeezed.histogram.total_bytes() <= squeezed.usage_bytes

        backend.apply(512 * MIB + PAGE_SIZE_BYTES - 1)
        assert _read(group / "memory.limit_in_bytes") == str(512 * MIB)
        assert _wait_for(lambda: backend.read().usage_bytes > 280 * MIB, 10.0)  # swapped back in
        time.sleep(1.5)  # one more sweep brings every page back; then refaults stop
        raised = backend.read()
        time.sleep(1.0)
        calm_refaults = backend.read().refault_total - raised.refault_total
        assert calm_refaults < 1_000, calm_refaults
        assert raised.target_bytes == 512 * MIB and raised.oom_kills_total == 0
        assert child.alive()

        backend.relax(None)
        assert _read(group / "memory.limit_in_bytes") == UNLIMITED_V1
        assert _read(group / "memory.soft_limit_in_bytes") == UNLIMITED_V1
        assert child.alive()
        backend.close()
        print(
            f"\nreal v1: rss {rss / MIB:.1f} MiB, usage {before.usage_bytes / MIB:.1f} MiB; "
            f"apply 200 MiB took {apply_s:.2f} s; squeezed usage {squeezed.usage_bytes / MIB:.1f} MiB, "
            f"swap {squeezed.swap_bytes / MIB:.1f} MiB, "
            f"refaults +{squeezed.refault_total - before.refault_total:.0f} pages "
            f"{squeezed_after_s:.1f} s after the apply, then +{steady_refaults:.0f} in 2 s "
            f"(swap {steady.swap_bytes / MIB:.1f} MiB); "
            f"after raising to 512 MiB: +{calm_refaults:.0f} in 1 s; "
            f"raised usage {raised.usage_bytes / MIB:.1f} MiB; total {time.monotonic() - started:.1f} s"
        )


@pytest.mark.cgroup
def test_real_v1_limit_below_unswappable_usage_is_refused_and_the_old_limit_kept() -> None:
    with v1_memcg("busy") as group:
        (group / "memory.swappiness").write_text("0")  # this group's anon can never be swapped
        with hog(group, 128) as child:
            backend = CgroupBackend("db", group.relative_to(TEST_PARENT.parent), version="v1")
            backend.apply(1 * GIB)
            usage = int(backend.read().usage_bytes)
            with pytest.raises(BackendError, match=rf"kernel refused limit {32 * MIB} below usage \d+"):
                backend.apply(32 * MIB)
            assert _read(group / "memory.limit_in_bytes") == str(1 * GIB)  # old limit kept
            assert child.alive()
            assert backend.read().usage_bytes >= 0.9 * usage


@pytest.mark.cgroup
def test_real_v1_oom_kill_is_counted() -> None:
    with v1_memcg("oom") as group:
        (group / "memory.swappiness").write_text("0")
        with hog(group, 32) as child:
            backend = CgroupBackend("batch", group.relative_to(TEST_PARENT.parent))
            assert backend.read().oom_kills_total == 0
            backend.apply(int(backend.read().usage_bytes) + 32 * MIB)
            child.send("grow 128")  # 128 MiB more of unswappable anon into 32 MiB of room
            assert not child.expect("grown"), "the child should have been OOM-killed"
            child.proc.wait(timeout=10)
            assert child.proc.returncode == -signal.SIGKILL
            after = backend.read()
            assert after.oom_kills_total == 1
            assert after.usage_bytes < 32 * MIB


# ------------------------------------------------------------------------------------------------
# Crafted trees: real files laid out like the kernel's.


V1_STAT = {
    "cache": 0,
    "rss": 0,
    "active_anon": 0,
    "hierarchical_memory_limit": KERNEL_MAX_BYTES,
    "total_active_anon": 100 * MIB,
    "total_inactive_anon": 40 * MIB,
    "total_active_file": 20 * MIB,
    "total_inactive_file": 30 * MIB,
    "total_unevictable": 2 * MIB,
    "total_workingset_refault_anon": 700,
    "total_workingset_refault_file": 300,
    "total_swap": 5 * MIB,
}
V2_STAT = {
    "anon": 140 * MIB,
    "file": 50 * MIB,
    "active_anon": 100 * MIB,
    "inactive_anon": 40 * MIB,
    "active_file": 20 * MIB,
    "inactive_file": 30 * MIB,
    "unevictable": 2 * MIB,
    "workingset_refault_anon": 70,
    "workingset_refault_file": 30,
}


def _flat(fields: dict[str, int]) -> str:
    return "".join(f"{k} {v}\n" for k, v in fields.items())


def make_v1(root: Path, rel: str = "ct", **files: str) -> Path:
    group = root / rel
    group.mkdir(parents=True)
    contents = {
        "memory.limit_in_bytes": f"{KERNEL_MAX_BYTES}\n",
        "memory.soft_limit_in_bytes": f"{KERNEL_MAX_BYTES}\n",
        "memory.usage_in_bytes": f"{200 * MIB}\n",
        "memory.memsw.usage_in_bytes": f"{212 * MIB}\n",
        "memory.stat": _flat(V1_STAT),
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
    }
    contents.update({k.replace("_", ".", 1) if k.startswith("memory_") else k: v for k, v in files.items()})
    for name, text in contents.items():
        (group / name).write_text(text)
    return group


def make_v2(root: Path, rel: str = "ct", **files: str) -> Path:
    group = root / rel
    group.mkdir(parents=True)
    contents = {
        "memory.current": f"{300 * MIB}\n",
        "memory.high": "max\n",
        "memory.max": "max\n",
        "memory.stat": _flat(V2_STAT),
        "memory.events": "low 0\nhigh 12\nmax 0\noom 1\noom_kill 2\noom_group_kill 0\n",
        "memory.pressure": "some avg10=2.50 avg60=1.00 avg300=0.20 total=1500000\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=20\n",
        "memory.swap.current": f"{8 * MIB}\n",
        "memory.reclaim": "",
    }
    contents.update({k.replace("_", ".", 1) if k.startswith("memory_") else k: v for k, v in files.items()})
    for name, text in contents.items():
        (group / name).write_text(text)
    return group


def test_path_traversal_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_v2(root, "inside")
    make_v2(tmp_path, "outside")
    (root / "link-out").symlink_to(tmp_path / "outside")
    for path in ("../outside", "inside/../../outside", "link-out", str(tmp_path / "outside"), "/etc"):
        with pytest.raises(BackendError, match=r"path='.*' resolves to .* not a group below root .*refused"):
            CgroupBackend("g", path, root=root)
    for path in (".", "", "inside/.."):  # the root itself is not a guest
        with pytest.raises(BackendError, match="not a group below root"):
            CgroupBackend("g", path, root=root)
    inside = CgroupBackend("g", str(root / "inside"), root=root)  # absolute, but below root: fine
    assert inside.dir == (root / "inside").resolve() and inside.version == "v2"


def test_missing_cgroup_and_missing_root_are_named(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"cgroup 'g': path='gone/away': .*gone/away does not exist"):
        CgroupBackend("g", "gone/away", root=tmp_path)
    with pytest.raises(BackendError, match=r"root='.*nowhere': cannot resolve"):
        CgroupBackend("g", "x", root=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackendError, match="has no memory controller files"):
        CgroupBackend("g", "empty", root=tmp_path)
    make_v1(tmp_path, "old")
    with pytest.raises(BackendError, match="is a cgroup v1 group, not v2"):
        CgroupBackend("g", "old", root=tmp_path, version="v2")
    group = make_v2(tmp_path, "vanishing")
    backend = CgroupBackend("g", "vanishing", root=tmp_path)
    shutil.rmtree(group)
    with pytest.raises(BackendError, match=r"cannot read .*vanishing/memory.stat: missing \(was the group"):
        backend.read()


def test_malformed_memory_stat_names_the_file_and_field(tmp_path: Path) -> None:
    cases = {
        "bad-value": ("active_anon 12x\n", r"memory.stat: line 1: field 'active_anon': '12x' is not"),
        "negative": ("total_swap -5\n", r"memory.stat: line 1: field 'total_swap': '-5' is not"),
        "three-tokens": ("total_swap 5 6\n", r"memory.stat: line 1: field 'total_swap': .* not 'key value'"),
        "twice": ("total_swap 5\ntotal_swap 6\n", r"memory.stat: line 2: field 'total_swap': appears twice"),
        "no-inactive-file": (
            _flat({k: v for k, v in V1_STAT.items() if k != "total_inactive_file"}),
            r"memory.stat: field 'total_inactive_file' is missing",
        ),
        "no-refaults": (
            _flat({k: v for k, v in V1_STAT.items() if "refault" not in k}),
            r"memory.stat: field 'total_workingset_refault_anon' is missing .* refusing to report 0",
        ),
        "binary": ("total_swap \xff\n", r"memory.stat: not ASCII text"),
    }
    for name, (text, pattern) in cases.items():
        make_v1(tmp_path, name)
        (tmp_path / name / "memory.stat").write_bytes(text.encode("latin-1"))
        with pytest.raises(BackendError, match=pattern):
            CgroupBackend("g", name, root=tmp_path).read()
    make_v1(tmp_path, "bad-usage", memory_usage_in_bytes="lots\n")
    with pytest.raises(BackendError, match=r"memory.usage_in_bytes: 'lots' is not a non-negative"):
        CgroupBackend("g", "bad-usage", root=tmp_path).read()
    make_v1(tmp_path, "no-oom", memory_oom_control="oom_kill_disable 0\nunder_oom 0\n")
    with pytest.raises(BackendError, match=r"memory.oom_control: field 'oom_kill' is missing"):
        CgroupBackend("g", "no-oom", root=tmp_path).read()


def test_old_kernel_single_refault_counter_is_accepted(tmp_path: Path) -> None:
    stat = {k: v for k, v in V1_STAT.items() if "refault" not in k} | {"total_workingset_refault": 1234}
    make_v1(tmp_path, "old", memory_stat=_flat(stat))
    assert CgroupBackend("g", "old", root=tmp_path).read().refault_total == 1234


def test_oversized_and_non_regular_files_are_refused(tmp_path: Path) -> None:
    group = make_v1(tmp_path, "big")
    with open(group / "memory.stat", "ab") as f:
        f.write(b"x" * (MAX_FILE_BYTES + 1))
    with pytest.raises(BackendError, match=rf"memory.stat: larger than the {MAX_FILE_BYTES}-byte limit"):
        CgroupBackend("g", "big", root=tmp_path).read()
    group = make_v1(tmp_path, "fifo")
    (group / "memory.stat").unlink()
    os.mkfifo(group / "memory.stat")
    with pytest.raises(BackendError, match=r"memory.stat: not a regular file: refused"):
        CgroupBackend("g", "fifo", root=tmp_path).read()
    group = make_v1(tmp_path, "symlinked")
    (tmp_path / "elsewhere.stat").write_text(_flat(V1_STAT))
    (group / "memory.stat").unlink()
    (group / "memory.stat").symlink_to(tmp_path / "elsewhere.stat")
    with pytest.raises(BackendError, match=r"cannot read .*memory.stat: is a symlink: refused"):
        CgroupBackend("g", "symlinked", root=tmp_path).read()


def test_crafted_v1_reading(tmp_path: Path) -> None:
    make_v1(tmp_path, "ct")
    reading = CgroupBackend("g", "ct", root=tmp_path).read()
    assert reading.name == "g"
    assert reading.usage_bytes == 200 * MIB
    assert math.isnan(reading.target_bytes) and reading.visible_bytes == 200 * MIB  # unlimited
    assert reading.refault_total == 1000
    assert reading.swap_bytes == 12 * MIB  # memsw.usage - usage, not the stat's total_swap
    assert reading.oom_kills_total == 3
    assert math.isnan(reading.psi_some_total_s) and math.isnan(reading.psi_some_avg10)
    hist = reading.histogram
    assert hist is not None and hist.guest == "g" and hist.edges_ms == (LRU_EDGE_MS,)
    assert list(hist.anon_bytes) == [102 * MIB, 40 * MIB]  # active + unevictable, inactive
    assert list(hist.file_bytes) == [20 * MIB, 30 * MIB]
    # Conservative: inactive counts as cold only at thresholds up to the edge, never beyond it.
    assert hist.cold_bytes(LRU_EDGE_MS) == 70 * MIB
    assert hist.cold_bytes(10_000) == hist.cold_bytes(120_000) == 0

    stat = V1_STAT | {"hierarchical_memory_limit": 150 * MIB}
    make_v1(tmp_path, "limited", memory_limit_in_bytes=f"{256 * MIB}\n", memory_stat=_flat(stat))
    (tmp_path / "limited" / "memory.memsw.usage_in_bytes").unlink()
    limited = CgroupBackend("g", "limited", root=tmp_path).read()
    assert limited.target_bytes == 256 * MIB  # what wsrl set on this group
    assert limited.visible_bytes == 150 * MIB  # what is in force: an ancestor's smaller limit
    assert limited.swap_bytes == 5 * MIB  # no memsw accounting: the stat's total_swap

    snapshot = snapshot_from_readings(
        [reading, limited],
        [GuestSpec("g", 1 * GIB, 64 * MIB), GuestSpec("h", 1 * GIB, 64 * MIB)],
        host_name="host",
        capacity_bytes=4 * GIB,
        reserve_bytes=0,
        interval_s=10,
        time_ms=reading.time_ms,
    )
    assert snapshot.target_bytes[0].tolist() == [200 * MIB, 256 * MIB]
    assert snapshot.hist_bytes[0, 0].sum() == 192 * MIB


def test_crafted_v1_apply_and_relax(tmp_path: Path) -> None:
    group = make_v1(tmp_path, "ct")
    backend = CgroupBackend("g", "ct", root=tmp_path)
    backend.apply(300 * MIB + 5)
    assert _read(group / "memory.limit_in_bytes") == str(300 * MIB)
    assert _read(group / "memory.soft_limit_in_bytes") == str(300 * MIB)
    backend.apply(2**64)  # at or above the kernel's ceiling: unlimited
    assert _read(group / "memory.limit_in_bytes") == "-1"
    for bad in (PAGE_SIZE_BYTES - 1, 0, -5, math.nan):
        with pytest.raises(BackendError, match=r"below one page|not a finite"):
            backend.apply(bad)  # type: ignore[arg-type]
    assert _read(group / "memory.limit_in_bytes") == "-1"  # nothing written
    backend.relax(128 * MIB + 1)
    assert _read(group / "memory.limit_in_bytes") == str(128 * MIB)
    assert _read(group / "memory.soft_limit_in_bytes") == "-1"
    backend.relax(None)
    assert _read(group / "memory.limit_in_bytes") == "-1"


def test_crafted_v2_reading(tmp_path: Path) -> None:
    parent = make_v2(tmp_path, "slice", memory_max=f"{256 * MIB}\n")
    group = make_v2(parent, "ct", memory_max=f"{1 * GIB}\n")
    backend = CgroupBackend("g", "slice/ct", root=tmp_path)
    assert backend.version == "v2"
    reading = backend.read()
    assert reading.source["backend"] == "cgroup-v2"
    assert reading.usage_bytes == 300 * MIB
    assert reading.target_bytes == 1 * GIB  # memory.high is max: memory.max is the target
    assert reading.visible_bytes == 256 * MIB  # the parent's memory.max is what is in force
    assert reading.refault_total == 100
    assert reading.swap_bytes == 8 * MIB
    assert reading.oom_kills_total == 2
    assert reading.psi_some_total_s == 1.5 and reading.psi_some_avg10 == 2.5
    assert reading.histogram is not None and reading.histogram.total_bytes() == 192 * MIB

    (group / "memory.high").write_text(f"{200 * MIB}\n")
    high = backend.read()
    assert high.target_bytes == high.visible_bytes == 200 * MIB

    make_v2(tmp_path, "free")
    (tmp_path / "free" / "memory.swap.current").unlink()  # no swap accounting
    free = CgroupBackend("g", "free", root=tmp_path).read()
    assert math.isnan(free.target_bytes) and free.visible_bytes == free.usage_bytes == 300 * MIB
    assert free.swap_bytes == 0


def test_crafted_v2_pressure(tmp_path: Path) -> None:
    make_v2(tmp_path, "no-psi")
    (tmp_path / "no-psi" / "memory.pressure").unlink()  # a kernel without PSI
    reading = CgroupBackend("g", "no-psi", root=tmp_path).read()
    assert math.isnan(reading.psi_some_total_s) and math.isnan(reading.psi_some_avg10)
    cases = {
        "no-total": ("some avg10=0.00 avg60=0.00 avg300=0.00\n", r"field 'some total': missing"),
        "bad-avg": ("some avg10=x avg60=0.00 avg300=0.00 total=5\n", r"field 'some avg10': 'x' is not"),
        "no-some": ("full avg10=0.00 avg60=0.00 avg300=0.00 total=5\n", r"field 'some': no 'some' line"),
    }
    for name, (text, pattern) in cases.items():
        make_v2(tmp_path, name, memory_pressure=text)
        with pytest.raises(BackendError, match=rf"{name}/memory.pressure: line 1: {pattern}"):
            CgroupBackend("g", name, root=tmp_path).read()


def test_crafted_v2_apply_writes_high_and_reclaims_the_excess(tmp_path: Path) -> None:
    group = make_v2(tmp_path, "ct", memory_max=f"{1 * GIB}\n")
    backend = CgroupBackend("g", "ct", root=tmp_path)
    backend.apply(200 * MIB + 100)
    assert _read(group / "memory.high") == str(200 * MIB)
    assert _read(group / "memory.max") == str(1 * GIB)  # the operator's cap: never touched
    assert _read(group / "memory.reclaim") == str(100 * MIB)  # memory.current 300 MiB - 200 MiB

    (group / "memory.reclaim").write_text("")
    backend.apply(400 * MIB)  # above the usage: nothing to reclaim
    assert _read(group / "memory.high") == str(400 * MIB)
    assert _read(group / "memory.reclaim") == ""

    quiet = CgroupBackend("g", "ct", root=tmp_path, proactive_reclaim=False)
    quiet.apply(100 * MIB)
    assert _read(group / "memory.high") == str(100 * MIB)
    assert _read(group / "memory.reclaim") == ""

    (group / "memory.reclaim").unlink()  # a kernel before 5.19
    backend.apply(150 * MIB)
    assert _read(group / "memory.high") == str(150 * MIB)

    backend.relax(512 * MIB)
    assert _read(group / "memory.high") == str(512 * MIB)
    backend.relax(None)
    assert _read(group / "memory.high") == "max"
    backend.apply(KERNEL_MAX_BYTES)
    assert _read(group / "memory.high") == "max"
    assert _read(group / "memory.max") == str(1 * GIB)


def test_lru_gen_histogram_from_a_real_guest_capture(tmp_path: Path) -> None:
    capture = tmp_path / "lru_gen"
    shutil.copy(DATA / "lru_gen" / "real-lru_gen-1.txt", capture)
    make_v2(tmp_path / "cg", "wsrl/hot")
    backend = CgroupBackend(
        "hot", "wsrl/hot", root=tmp_path / "cg", histogram_source="lru_gen", lru_gen_path=capture
    )
    hist = backend.read().histogram
    expected = merge_nodes(
        [h for h in parse_bytes("lru_gen", capture.read_bytes()) if h.guest == "/wsrl/hot"]
    )
    assert hist is not None and hist.guest == "hot"
    assert hist.edges_ms == expected.edges_ms == (2032, 4184, 6364, 8552)
    assert list(hist.anon_bytes) == list(expected.anon_bytes)
    assert hist.total_bytes("anon") == (21 + 4107 + 1613) * 4096
    assert hist.meta["memcg_id"] == "4"

    make_v2(tmp_path / "cg", "other")
    with pytest.raises(BackendError, match=r"lru_gen: no entry for memcg /other"):
        CgroupBackend(
            "o", "other", root=tmp_path / "cg", histogram_source="lru_gen", lru_gen_path=capture
        ).read()

    # Kernels since 2025 print the cgroup's inode number as the memcg id: matched when the path is not.
    inode = (tmp_path / "cg" / "other").stat().st_ino
    by_id = tmp_path / "lru_gen_by_id"
    by_id.write_text(f"memcg {inode} /renamed\n node     0\n          4       8552         10           0\n")
    hist = (
        CgroupBackend("o", "other", root=tmp_path / "cg", histogram_source="lru_gen", lru_gen_path=by_id)
        .read()
        .histogram
    )
    assert hist is not None and hist.total_bytes() == 10 * 4096

    truncated = tmp_path / "truncated"
    truncated.write_text(capture.read_text().replace(" node     0\n", "", 1))
    with pytest.raises(BackendError, match=r"truncated: lru_gen: line 2: "):
        CgroupBackend(
            "hot", "wsrl/hot", root=tmp_path / "cg", histogram_source="lru_gen", lru_gen_path=truncated
        ).read()
    with pytest.raises(BackendError, match=r"cannot read .*missing-file"):
        CgroupBackend(
            "hot",
            "wsrl/hot",
            root=tmp_path / "cg",
            histogram_source="lru_gen",
            lru_gen_path=tmp_path / "missing-file",
        ).read()


def test_wsr_histogram_from_the_memcg_page_age_file(tmp_path: Path) -> None:
    text = (DATA / "wsr" / "memcg_page_age_two_nodes.txt").read_text()
    make_v1(tmp_path, "ct", **{"memory.workingset.page_age": text})
    hist = CgroupBackend("g", "ct", root=tmp_path, histogram_source="wsr").read().histogram
    assert hist is not None and hist.guest == "g" and hist.node == -1
    assert hist.edges_ms == (1000, 10000, 60000)
    assert hist.total_bytes("anon") == 4096 + 40960 + 1048576 + 8192 + 16384 + 65536
    assert hist.total_bytes("file") == 8192 + 12288 + 2097152 + 4096 + 8192 + 131072
    make_v1(tmp_path, "bad", **{"memory.workingset.page_age": "N0\n1000 anon=1 file=2\n"})
    with pytest.raises(BackendError, match=r"bad/memory.workingset.page_age: wsr: .*truncated input"):
        CgroupBackend("g", "bad", root=tmp_path, histogram_source="wsr").read()


def test_invalid_settings_are_refused(tmp_path: Path) -> None:
    make_v2(tmp_path, "ct")
    with pytest.raises(BackendError, match="version='v3'"):
        CgroupBackend("g", "ct", root=tmp_path, version="v3")  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="histogram_source='damon'"):
        CgroupBackend("g", "ct", root=tmp_path, histogram_source="damon")  # type: ignore[arg-type]
