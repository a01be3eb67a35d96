"""Recording and audit under faults: nothing recorded is lost, nothing planted is followed.

Real files, real symlinks and real directories throughout. A trace part that cannot be written is
played by a directory planted where the part's name goes (``os.replace`` of a file onto a
directory fails like a full disk would); another user is played with ``chown`` (the tests run as
root, like the cgroup tests).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
from test_runner_support import reading

from wsrl.errors import TraceError, WsrlError
from wsrl.inputs.live import GuestSpec
from wsrl.runner.audit import AuditLog, read_audit
from wsrl.runner.recorder import TraceRecorder
from wsrl.security import UntrustedFileError, check_trusted_directory, check_trusted_file
from wsrl.trace.reader import TraceReader
from wsrl.trace.writer import part_name
from wsrl.units import GIB

OTHER_UID = 65534  # nobody
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def root_only() -> None:
    assert os.geteuid() == 0, "these tests play another user with chown: run them as root"


# -- the trace recorder ------------------------------------------------------------------------


def _recorder(directory: Path, guests: int) -> TraceRecorder:
    specs = [GuestSpec(name=f"g{i}", provisioned_bytes=4 * GIB, floor_bytes=GIB) for i in range(guests)]
    return TraceRecorder(directory, host="h", specs=specs, meta={}, flush_rows=1, flush_interval_s=3600.0)


def test_a_failing_part_write_keeps_every_row_of_the_tick_buffered(tmp_path: Path) -> None:
    """Every append of a tick flushes (flush_rows = 1); the first part cannot be written."""
    trace = tmp_path / "trace"
    recorder = _recorder(trace, guests=3)
    blocker = trace / part_name(0)
    blocker.mkdir()
    (blocker / "keep").write_text("x")  # a non-empty directory: os.replace onto it fails
    ticks = [[reading(f"g{i}", time_ms=1_000_000 + 10_000 * t) for i in range(3)] for t in range(3)]
    for t in range(2):
        with pytest.raises(TraceError, match="could not write trace part"):
            recorder.record(ticks[t], [None] * 3, [None] * 3)
        assert recorder.writer.buffered_rows == 3 * (t + 1), "a failed flush dropped rows of the tick"
    shutil.rmtree(blocker)
    assert recorder.record(ticks[2], [None] * 3, [None] * 3) == [True] * 3
    recorder.close()
    table = TraceReader(trace).read_table(["guest", "time_ms"])
    assert table.num_rows == 9
    rows = sorted(zip(table.column("guest").to_pylist(), table.column("time_ms").to_pylist(), strict=True))
    assert rows == sorted((f"g{i}", 1_000_000 + 10_000 * t) for i in range(3) for t in range(3))


# -- the audit log -----------------------------------------------------------------------------


def test_the_recording_keeps_each_readings_histogram_horizon(tmp_path: Path) -> None:
    """A `referenced` reading's horizon goes into the trace (schema 2); exact ages leave it null."""
    recorder = _recorder(tmp_path / "trace", guests=2)
    lies = [math.nan, -5.0, 0.0]  # what a reading can never make a horizon of
    for t, bad in enumerate([math.inf, *lies]):
        ticks = [
            reading("g0", time_ms=1_000_000 + 10_000 * t, histogram_horizon_ms=120_000.0),
            reading("g1", time_ms=1_000_000 + 10_000 * t, histogram_horizon_ms=bad),
        ]
        recorder.record(ticks, [None] * 2, [None] * 2)
    recorder.close()
    table = TraceReader(tmp_path / "trace").read_table(["guest", "hist_horizon_ms"]).to_pydict()
    horizons: dict[str, set[int | None]] = {"g0": set(), "g1": set()}
    for guest, horizon in zip(table["guest"], table["hist_horizon_ms"], strict=True):
        horizons[guest].add(horizon)
    assert horizons == {"g0": {120_000}, "g1": {None}}


def test_a_torn_last_audit_line_does_not_hide_the_next_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, fsync=False)
    log.write({"kind": "start", "n": 1})
    log.write({"kind": "tick", "tick": 1})
    log.close()
    with path.open("ab") as handle:  # a crash in the middle of a record
        handle.write(b'{"kind":"tick","tick":2,"gue')
    log = AuditLog(path, fsync=False)
    log.write({"kind": "start", "n": 2})
    log.write({"kind": "tick", "tick": 1})
    log.close()
    records = read_audit(path)
    assert [r["kind"] for r in records] == ["start", "tick", "start", "tick"]
    assert records[2] == {"kind": "start", "n": 2}
    assert path.read_bytes().endswith(b"\n")


def test_the_audit_reader_skips_a_torn_line_with_broken_utf8(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"kind":"start"}\n{"kind":"tick","x":"\xc3')
    assert read_audit(path) == [{"kind": "start"}]


def test_the_audit_log_does_not_follow_a_symlink_planted_by_another_user(
    tmp_path: Path, root_only: None
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o1777)
    os.chmod(logs, 0o1777)  # a sticky, world-writable folder such as /tmp
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    planted = logs / "audit.jsonl"
    planted.symlink_to(victim)
    os.lchown(planted, OTHER_UID, OTHER_UID)
    with pytest.raises(WsrlError) as info:
        AuditLog(planted, fsync=False)
    message = str(info.value)
    assert message.startswith("audit.path: ") and "symlink" in message and "\n" not in message
    assert victim.read_text() == "precious\n"


def test_the_audit_log_refuses_a_file_owned_by_another_user(tmp_path: Path, root_only: None) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text("")
    os.chown(path, OTHER_UID, OTHER_UID)
    with pytest.raises(WsrlError, match=r"^audit\.path: .*owned by uid 65534"):
        AuditLog(path, fsync=False)


def test_the_audit_log_refuses_a_folder_another_user_can_replace(tmp_path: Path, root_only: None) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir()
    os.chown(folder, OTHER_UID, OTHER_UID)
    with pytest.raises(WsrlError, match=r"^audit\.path: .*owned by uid 65534"):
        AuditLog(folder / "logs" / "audit.jsonl", fsync=False)
    assert not (folder / "logs").exists(), "the log's folder was created inside an untrusted folder"


def test_an_own_symlink_to_the_audit_log_is_followed(tmp_path: Path) -> None:
    real = tmp_path / "real.jsonl"
    link = tmp_path / "audit.jsonl"
    link.symlink_to(real)
    log = AuditLog(link, fsync=False)
    log.write({"kind": "start"})
    log.close()
    assert json.loads(real.read_text()) == {"kind": "start"}


# -- trust checks: every ancestor, and group-writable directories --------------------------------


def test_an_ancestor_owned_by_another_user_is_refused(tmp_path: Path, root_only: None) -> None:
    top = tmp_path / "top"
    inner = top / "etc" / "wsrl"
    inner.mkdir(parents=True)
    config = inner / "host.toml"
    config.write_text("x")
    check_trusted_file(config, "config file")
    os.chown(top, OTHER_UID, OTHER_UID)  # whoever owns top can rename etc/ and plant another
    with pytest.raises(UntrustedFileError, match=rf"directory {top} is owned by uid 65534"):
        check_trusted_file(config, "config file")


def test_a_group_writable_directory_is_refused_anywhere_on_the_path(tmp_path: Path) -> None:
    top = tmp_path / "top"
    inner = top / "wsrl"
    inner.mkdir(parents=True)
    config = inner / "host.toml"
    config.write_text("x")
    for folder in (inner, top):
        os.chmod(folder, 0o775)
        with pytest.raises(UntrustedFileError, match=rf"directory {folder} is group-writable"):
            check_trusted_file(config, "config file")
        os.chmod(folder, 0o755)
    os.chmod(top, 0o1775)  # with the sticky bit, nobody can replace what they do not own
    check_trusted_file(config, "config file")


def test_an_ancestor_reached_through_a_symlink_is_checked_where_it_leads(
    tmp_path: Path, root_only: None
) -> None:
    theirs = tmp_path / "theirs"
    (theirs / "conf").mkdir(parents=True)
    (theirs / "conf" / "host.toml").write_text("x")
    os.chown(theirs, OTHER_UID, OTHER_UID)
    link = tmp_path / "mine"
    link.symlink_to(theirs)  # owned by this user, but it leads into a folder another user owns
    with pytest.raises(UntrustedFileError, match=rf"directory {theirs} is owned by uid 65534"):
        check_trusted_file(link / "conf" / "host.toml", "config file")


def test_a_symlinked_ancestor_owned_by_another_user_is_refused(tmp_path: Path, root_only: None) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "host.toml").write_text("x")
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o1777)
    os.chmod(shared, 0o1777)
    link = shared / "conf"
    link.symlink_to(real)
    os.lchown(link, OTHER_UID, OTHER_UID)
    with pytest.raises(UntrustedFileError, match=rf"symlink {link} is owned by uid 65534"):
        check_trusted_file(link / "host.toml", "config file")


def test_check_trusted_directory(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    check_trusted_directory(folder, "socket directory")
    os.chmod(folder, 0o777)
    with pytest.raises(UntrustedFileError, match="world-writable without the sticky bit"):
        check_trusted_directory(folder, "socket directory")
    with pytest.raises(UntrustedFileError, match="not a directory"):
        check_trusted_directory(Path(os.devnull), "socket directory")


def test_the_trace_directory_must_be_trusted(tmp_path: Path, root_only: None) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, OTHER_UID, OTHER_UID)
    with pytest.raises(WsrlError, match=r"^record\.dir: .*trace directory refused: .*owned by uid 65534"):
        _recorder(theirs / "trace", guests=1)
    assert not (theirs / "trace").exists()
    recorder = _recorder(tmp_path / "mine" / "trace", guests=1)  # made, folders included
    recorder.close()


def test_a_planted_lock_symlink_is_not_followed(tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    _recorder(trace, guests=1).close()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (trace / ".lock").unlink()
    (trace / ".lock").symlink_to(victim)
    with pytest.raises(TraceError, match="cannot open the lock"):
        _recorder(trace, guests=1)
    assert victim.read_text() == "precious\n"
