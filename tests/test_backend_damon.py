"""DamonSource: an existing kdamond's regions, read strictly read-only, as a histogram.

Crafted trees are real directories laid out like DAMON's sysfs ABI (built from
``data/damon/sysfs_kdamond0.txt``), with every file chmod 0444 and every directory 0555. Root
ignores file modes, so the read-only promise is checked directly: a Python audit hook records
every ``open`` this process makes under the tree, and the tests assert that each was opened
without a write, create, truncate or append flag, that there were such opens at all, and that no
file's bytes or mtime changed. The real-sysfs test does the same against
``/sys/kernel/mm/damon/admin`` (which on the development host has ``nr_kdamonds`` 0: then it checks
the BackendError naming the missing kdamond).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wsrl.backends.base import BackendError
from wsrl.backends.damon import DEFAULT_ADMIN_ROOT, DamonSource
from wsrl.formats import FormatOptions
from wsrl.formats.damon import parse_sysfs_listing
from wsrl.histogram import ALL_NODES

pytestmark = pytest.mark.timeout(60)

CAPTURE = Path(__file__).parent / "data" / "damon" / "sysfs_kdamond0.txt"
ADMIN_PREFIX = "/sys/kernel/mm/damon/admin/"
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

# -- recording every open() of this process ---------------------------------------------------

_opens: list[tuple[str, int]] | None = None
_hooked = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "open" or _opens is None:
        return
    path, _mode, flags = args
    if isinstance(path, (str, bytes, os.PathLike)):
        _opens.append((os.fsdecode(path), int(flags or 0)))


@contextlib.contextmanager
def recorded_opens(under: Path) -> Iterator[list[tuple[str, int]]]:
    """Every ``(path, flags)`` opened under ``under`` while the block runs."""
    global _opens, _hooked
    if not _hooked:
        sys.addaudithook(_audit)  # audit hooks cannot be removed: it records only inside blocks
        _hooked = True
    seen: list[tuple[str, int]] = []
    _opens = seen
    mine: list[tuple[str, int]] = []
    try:
        yield mine
    finally:
        _opens = None
        prefix = str(under)
        mine.extend((p, f) for p, f in seen if p == prefix or p.startswith(prefix + "/"))


def assert_read_only(opens: list[tuple[str, int]]) -> None:
    writes = [(p, oct(f)) for p, f in opens if f & WRITE_FLAGS]
    assert not writes, f"opened for writing: {writes}"


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Bytes and mtime of every file under ``root``."""
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


# -- crafted DAMON sysfs trees ---------------------------------------------------------------


def capture_files() -> dict[str, str]:
    """The capture's ``path:value`` lines, keyed by path relative to the admin directory."""
    files = {"kdamonds/nr_kdamonds": "1"}
    for line in CAPTURE.read_text().splitlines():
        path, _, value = line.partition(":")
        files[path.removeprefix(ADMIN_PREFIX)] = value
    return files


def damon_tree(root: Path, changes: dict[str, str | None] | None = None, *, freeze: bool = True) -> Path:
    """Write the capture's tree under ``root`` (``changes``: path -> new text, None removes it).

    With ``freeze`` every file becomes 0444 and every directory 0555, as far as modes go a tree
    nobody may write. Returns ``root``.
    """
    files = capture_files()
    for path, value in (changes or {}).items():
        if value is None:
            files = {p: v for p, v in files.items() if p != path and not p.startswith(path + "/")}
        else:
            files[path] = value
    for path, value in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(value + "\n")
    if freeze:
        for path in root.rglob("*"):
            path.chmod(0o555 if path.is_dir() else 0o444)
        root.chmod(0o555)
    return root


def thaw(root: Path) -> None:
    """Undo ``freeze`` so the temporary tree can be edited or removed."""
    root.chmod(0o755)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def regions(root: Path, scheme: int = 0) -> Path:
    return root / f"kdamonds/0/contexts/0/schemes/{scheme}/tried_regions"


# -- reading a crafted tree --------------------------------------------------------------------


@pytest.mark.parametrize("scheme", [0, 1])
def test_crafted_tree_is_read_read_only_into_the_parsers_histogram(tmp_path: Path, scheme: int) -> None:
    root = damon_tree(tmp_path / "admin")
    before = snapshot(root)
    with recorded_opens(root) as opens:
        hist = DamonSource(0, 0, 0, scheme=scheme, admin_root=root, guest="vm1").read()
    assert_read_only(opens)
    assert len(opens) > 20  # state, intervals, pattern, 4 files per region ...
    assert {Path(p).name for p, _ in opens} >= {"state", "aggr_us", "sample_us", "start", "age"}
    assert snapshot(root) == before
    # The same histogram the parser makes from the capture's listing of that scheme.
    expected = parse_sysfs_listing(CAPTURE.read_text().splitlines(), FormatOptions(guest="x"))[scheme]
    assert hist.guest == "vm1" and hist.node == ALL_NODES
    assert hist.edges_ms == expected.edges_ms
    assert hist.type_bytes("anon").tolist() == expected.type_bytes("anon").tolist()
    assert hist.total_bytes("file") == 0
    if scheme == 0:  # accessed -> 0 ms; age 0 -> 200 ms; age 149 -> 30 s; age 1499 -> 300 s
        assert hist.edges_ms == (0, 200, 30_000, 300_000)
        assert hist.type_bytes("anon").tolist() == [GIB, 2 * GIB, 123 * 4096 + 256 * MIB, 5 * GIB, 0]
    assert hist.meta["operations"] == "paddr" and hist.meta["pid_target"] == "0"
    assert hist.meta["aggr_us"] == "200000" and hist.meta["sample_us"] == "5000"
    assert hist.meta["aggr_us_source"] == "capture" and hist.meta["addr_unit"] == "1"
    assert (hist.meta["kdamond"], hist.meta["context"], hist.meta["scheme"]) == ("0", "0", str(scheme))
    thaw(root)


def test_region_type_file_and_addr_unit_scale_the_bytes(tmp_path: Path) -> None:
    root = damon_tree(tmp_path / "admin", {"kdamonds/0/contexts/0/addr_unit": "4"})
    hist = DamonSource(0, admin_root=root, region_type="file").read()
    assert hist.total_bytes("anon") == 0
    assert hist.type_bytes("file").tolist() == [4 * GIB, 8 * GIB, 4 * (123 * 4096 + 256 * MIB), 20 * GIB, 0]
    assert hist.meta["addr_unit"] == "4"
    thaw(root)


@pytest.mark.parametrize(
    ("changes", "indexes", "pattern"),
    [
        ({"kdamonds/0/state": "off"}, (0, 0, 0, 0), r"^DAMON kdamond 0 is off: .*never starts"),
        ({}, (3, 0, 0, 0), r"DAMON kdamond 3 does not exist: no .*kdamonds/3 \(nr_kdamonds is 1\)"),
        ({}, (0, 2, 0, 0), r"kdamond 0: context 2 does not exist: .*\(nr_contexts is 1\)"),
        ({}, (0, 0, 1, 0), r"kdamond 0: target 1 does not exist: .*\(nr_targets is 1\)"),
        ({}, (0, 0, 0, 5), r"kdamond 0: scheme 5 does not exist: .*\(nr_schemes is 2\)"),
        (
            {
                "kdamonds/0/contexts/0/targets/nr_targets": "2",
                "kdamonds/0/contexts/0/targets/1/pid_target": "4242",
            },
            (0, 0, 0, 0),
            r"context 0 has 2 targets: .*mix them",
        ),
        (
            {"kdamonds/0/contexts/0/schemes/0/access_pattern/age/min": "50"},
            (0, 0, 0, 0),
            r"scheme 0's access pattern .* tries only some regions: age 50\.\.4294967295",
        ),
        (
            {"kdamonds/0/contexts/0/schemes/0/access_pattern/nr_accesses/max": "39"},
            (0, 0, 0, 0),
            r"nr_accesses 0\.\.39 \(all is 0\.\.40\)",
        ),
        (
            {"kdamonds/0/contexts/0/schemes/0/access_pattern/sz/max": str(GIB)},
            (0, 0, 0, 0),
            r"sz 0\.\.1073741824",
        ),
        (
            {"kdamonds/0/contexts/0/schemes/0/tried_regions": None},
            (0, 0, 0, 0),
            r"tried_regions: missing",
        ),
        (
            {"kdamonds/0/contexts/0/monitoring_attrs/intervals/aggr_us": "0"},
            (0, 0, 0, 0),
            r"sample_us and aggr_us must be above 0",
        ),
        (
            {"kdamonds/0/contexts/0/schemes/0/tried_regions/2/age": "old"},
            (0, 0, 0, 0),
            r"tried_regions/2/age: 'old' is not an unsigned integer",
        ),
        (
            {"kdamonds/0/contexts/0/schemes/0/tried_regions/2/end": None},
            (0, 0, 0, 0),
            r"tried_regions/2/end: missing",
        ),
        (
            {"kdamonds/0/contexts/0/schemes/0/tried_regions/total_bytes": "1"},
            (0, 0, 0, 0),
            r"tried_regions: damon: line \d+: total_bytes: 1 differs from the regions' sum",
        ),
        (
            {"kdamonds/0/contexts/0/schemes/0/tried_regions/1/end": "5368709120"},
            (0, 0, 0, 0),
            r"end 5368709120 is not above start 5368709120",
        ),
    ],
    ids=[
        "off",
        "no-kdamond",
        "no-context",
        "no-target",
        "no-scheme",
        "two-targets",
        "age-pattern",
        "nr-accesses-pattern",
        "sz-pattern",
        "no-tried-regions",
        "aggr-zero",
        "bad-age",
        "missing-end",
        "total-bytes",
        "empty-region",
    ],
)
def test_refusals_name_the_kdamond_and_the_file(
    tmp_path: Path, changes: dict[str, str | None], indexes: tuple[int, int, int, int], pattern: str
) -> None:
    root = damon_tree(tmp_path / "admin", changes)
    kdamond, context, target, scheme = indexes
    source = DamonSource(kdamond, context, target, scheme=scheme, admin_root=root)
    before = snapshot(root)
    with recorded_opens(root) as opens, pytest.raises(BackendError, match=pattern):
        source.read()
    assert opens, "nothing was read"
    assert_read_only(opens)
    assert snapshot(root) == before
    thaw(root)


def test_empty_tried_regions_says_the_owner_must_refresh_them(tmp_path: Path) -> None:
    root = damon_tree(
        tmp_path / "admin",
        {f"kdamonds/0/contexts/0/schemes/0/tried_regions/{r}": None for r in range(5)},
    )
    with pytest.raises(BackendError, match=r"holds no regions: .*update_schemes_tried_regions.*never writes"):
        DamonSource(0, admin_root=root).read()
    thaw(root)


def test_missing_admin_directory_names_the_kdamond(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"DAMON kdamond 0 does not exist: .*kdamonds is missing"):
        DamonSource(0, admin_root=tmp_path / "no-damon").read()


def test_symlinked_state_is_refused(tmp_path: Path) -> None:
    root = damon_tree(tmp_path / "admin", freeze=False)
    (tmp_path / "elsewhere").write_text("on\n")
    (root / "kdamonds/0/state").unlink()
    (root / "kdamonds/0/state").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(BackendError, match=r"kdamonds/0/state: is a symlink: refused"):
        DamonSource(0, admin_root=root).read()


def test_max_files_bounds_the_region_directories_before_any_is_read(tmp_path: Path) -> None:
    base = "kdamonds/0/contexts/0/schemes/0/tried_regions"
    changes: dict[str, str | None] = {f"{base}/total_bytes": None}
    for r in range(5, 3000):  # 3000 regions of one page each, above the capture's five
        start = 2**40 + r * 4096
        changes |= {f"{base}/{r}/start": str(start), f"{base}/{r}/end": str(start + 4096)}
        changes |= {f"{base}/{r}/nr_accesses": "0", f"{base}/{r}/age": "0"}
    root = damon_tree(tmp_path / "admin", changes)
    with recorded_opens(root) as opens, pytest.raises(BackendError, match=r"more than max_files=1000 region"):
        DamonSource(0, admin_root=root, max_files=1000).read()
    assert opens
    assert not [p for p, _ in opens if "/tried_regions/" in p], "regions were read before the bound"
    hist = DamonSource(0, admin_root=root, max_files=3000).read()
    assert hist.total_bytes() == 8 * GIB + 123 * 4096 + 256 * MIB + 2995 * 4096
    thaw(root)


def test_invalid_arguments_are_refused() -> None:
    for args, pattern in [
        ((-1,), "kdamond=-1"),
        ((0, True), "context=True"),
        ((0, 0, "0"), "target='0'"),
    ]:
        with pytest.raises(BackendError, match=pattern):
            DamonSource(*args)  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="max_files=0"):
        DamonSource(0, max_files=0)
    with pytest.raises(BackendError, match="region_type='swap'"):
        DamonSource(0, region_type="swap")  # type: ignore[arg-type]


# -- the real DAMON sysfs tree ------------------------------------------------------------------


def test_real_damon_sysfs_is_only_read() -> None:
    """Against this kernel's DAMON: never a write; a missing kdamond is named; live ones read."""
    admin = DEFAULT_ADMIN_ROOT
    if not (admin / "kdamonds").is_dir():
        with (
            recorded_opens(admin) as opens,
            pytest.raises(BackendError, match=r"DAMON kdamond 0 does not exist"),
        ):
            DamonSource(0).read()
        assert_read_only(opens)
        print(f"\nreal DAMON: {admin}/kdamonds missing; the error names kdamond 0")
        return
    count = int((admin / "kdamonds" / "nr_kdamonds").read_text())
    states = {k: (admin / f"kdamonds/{k}/state").read_text() for k in range(count)}
    with recorded_opens(admin) as opens:
        with pytest.raises(
            BackendError, match=rf"DAMON kdamond {count} does not exist: .*nr_kdamonds is {count}\)"
        ):
            DamonSource(count).read()
        outcomes = []
        for k in range(count):  # a kdamond someone else runs: read it, or be told clearly why not
            try:
                hist = DamonSource(k).read()
            except BackendError as exc:
                assert str(exc).startswith(f"DAMON kdamond {k}"), exc
                outcomes.append(f"kdamond {k}: {exc}")
            else:
                assert hist.total_bytes() > 0 and hist.meta["kdamond"] == str(k)
                outcomes.append(f"kdamond {k}: {hist.total_bytes()} bytes, edges {hist.edges_ms}")
    assert opens and all(Path(p).is_relative_to(admin) for p, _ in opens)
    assert_read_only(opens)
    assert int((admin / "kdamonds" / "nr_kdamonds").read_text()) == count
    assert {k: (admin / f"kdamonds/{k}/state").read_text() for k in range(count)} == states
    print(f"\nreal DAMON: nr_kdamonds {count}; " + "; ".join(outcomes or ["no kdamond runs"]))
