"""CrosvmBackend against an executable stand-in for ``crosvm``.

crosvm is not installed here, so no real crosvm runs: each test writes a real executable script
into tmp_path that records its argv and prints crosvm's documented output (``balloon_stats`` in the
layout of crosvm's ``VmResponse::BalloonStats``, ``balloon_ws`` from the goldens in
tests/data/crosvm), keeping the balloon size it was last given. The backend runs it as a
subprocess exactly as it would run crosvm.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import time
from pathlib import Path

import pytest

from wsrl.agent.wire import encode_dump
from wsrl.backends.base import BackendError
from wsrl.backends.crosvm import CrosvmBackend, parse_balloon_stats
from wsrl.errors import ParseError
from wsrl.formats import FormatOptions
from wsrl.formats import crosvm as crosvm_format

pytestmark = pytest.mark.timeout(60)

DATA = Path(__file__).parent / "data"
GIB, MIB = 2**30, 2**20
RAM = 2 * GIB

STUB = """#!{python}
import json, os, sys, time
from pathlib import Path

state = Path({state!r})
with open(state / "argv.log", "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
mode = (state / "mode").read_text().strip() if (state / "mode").exists() else "ok"
command = sys.argv[1]
if mode == "hang":
    (state / "hung.pid").write_text(str(os.getpid()))
    time.sleep(120)
if mode == "flood":
    while True:
        sys.stdout.write("x" * 65536)
if mode == "refuse":
    print("[ERROR] failed to connect to " + sys.argv[-1], file=sys.stderr)
    sys.exit(1)
if command == "balloon":
    (state / "balloon").write_text(sys.argv[2])
    sys.exit(0)
if command == "balloon_stats":
    faults = int((state / "faults").read_text()) if (state / "faults").exists() else 100
    (state / "faults").write_text(str(faults + 25))
    actual = int((state / "balloon").read_text()) if (state / "balloon").exists() else 0
    if mode == "stuck":
        actual = 64 * 2**20
    stats = {{"swap_in": 0, "swap_out": 0, "major_faults": faults, "minor_faults": 3400,
              "free_memory": 1500000000, "total_memory": 2000000000, "available_memory": 1600000000,
              "disk_caches": 300000000, "hugetlb_allocations": None, "hugetlb_failures": None,
              "shared_memory": None, "unevictable_memory": 0}}
    print(json.dumps({{"BalloonStats": {{"stats": stats, "balloon_actual": actual}}}}, indent=2))
    sys.exit(0)
if command == "balloon_ws":
    if mode == "no_ws":
        print(json.dumps({{"Err": 95}}, indent=2))
        sys.exit(1)
    sys.stdout.write(Path({golden!r}).read_text())
    sys.exit(0)
print("unknown command " + command, file=sys.stderr)
sys.exit(2)
"""


class CrosvmStandIn:
    """The stand-in executable and the state it keeps."""

    def __init__(self, root: Path) -> None:
        self.state = root / "state"
        self.state.mkdir()
        self.golden = DATA / "crosvm" / "balloon_ws_4_bins.json"
        self.path = root / "crosvm"
        self.path.write_text(
            STUB.format(python=sys.executable, state=str(self.state), golden=str(self.golden))
        )
        self.path.chmod(self.path.stat().st_mode | stat.S_IXUSR)
        self.socket = root / "crosvm.sock"

    def set_mode(self, mode: str) -> None:
        (self.state / "mode").write_text(mode)

    def calls(self) -> list[list[str]]:
        log = self.state / "argv.log"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def crosvm(tmp_path: Path) -> CrosvmStandIn:
    return CrosvmStandIn(tmp_path)


def backend(crosvm: CrosvmStandIn, **kwargs: object) -> CrosvmBackend:
    options: dict[str, object] = {"crosvm_bin": str(crosvm.path), "ram_bytes": RAM, "timeout_s": 10.0}
    options.update(kwargs)
    return CrosvmBackend("vm-a", crosvm.socket, **options)  # type: ignore[arg-type]


def test_apply_sets_the_balloon_to_ram_minus_target(crosvm: CrosvmStandIn) -> None:
    vm = backend(crosvm)
    vm.start(lambda reason: None)
    vm.apply(768 * MIB + 100)  # rounded down to a 4 KiB balloon page
    vm.relax(GIB)
    vm.relax(None)
    vm.close()
    sock = str(crosvm.socket)
    assert crosvm.calls() == [
        ["balloon_stats", sock],
        ["balloon", str(RAM - 768 * MIB), sock],
        ["balloon", str(RAM - GIB), sock],
        ["balloon", "0", sock],
    ]


def test_read_maps_balloon_stats_and_balloon_ws(crosvm: CrosvmStandIn) -> None:
    vm = backend(crosvm)
    vm.start(lambda reason: None)
    first = vm.read()
    assert first.visible_bytes == RAM and first.target_bytes == RAM  # none set yet: the size in force
    vm.apply(GIB)
    reading = vm.read()
    assert reading.name == "vm-a"
    assert reading.visible_bytes == GIB  # ram - balloon_actual, the size the stand-in was given
    assert reading.target_bytes == GIB
    assert reading.usage_bytes == 2_000_000_000 - 1_500_000_000  # total_memory - free_memory
    # major_faults rose by 25 per call; counted from the first value seen (start's call).
    assert (first.refault_total, reading.refault_total) == (25.0, 50.0)
    assert reading.swap_bytes == 0.0 and not reading.balloon_stalled
    expected = crosvm_format.parse(crosvm.golden.read_bytes(), FormatOptions(guest="vm-a"))[0]
    assert reading.histogram == expected
    assert reading.histogram is not None and reading.histogram.total_bytes("file") == 1_048_576_000
    assert "balloon_ws" in reading.source["histogram"]
    assert "major_faults=" in reading.source["stats"] and "shared_memory" not in reading.source["stats"]
    assert [c[0] for c in crosvm.calls()] == [
        "balloon_stats", "balloon_stats", "balloon_ws", "balloon", "balloon_stats", "balloon_ws",
    ]  # fmt: skip


def test_a_vm_without_working_set_reporting_still_reads(crosvm: CrosvmStandIn) -> None:
    crosvm.set_mode("no_ws")
    vm = backend(crosvm)
    vm.start(lambda reason: None)
    reading = vm.read()
    assert reading.histogram is None and reading.visible_bytes == RAM
    assert reading.source["histogram"].startswith("none: crosvm guest vm-a: control socket")
    assert "crosvm balloon_ws exited with status 1" in reading.source["histogram"]
    quiet = backend(crosvm, working_set=False)
    assert quiet.read().histogram is None
    assert [c[0] for c in crosvm.calls()][-1] == "balloon_stats"


def test_a_balloon_that_does_not_move_is_reported_stalled(crosvm: CrosvmStandIn) -> None:
    crosvm.set_mode("stuck")
    vm = backend(crosvm, working_set=False, stall_reads=3)
    vm.apply(GIB)
    stalled = [vm.read().balloon_stalled for _ in range(4)]
    assert stalled == [False, False, False, True]  # the first read sets the closest distance
    vm.apply(RAM - 64 * MIB)  # a target it already holds
    assert vm.read().balloon_stalled is False


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("refuse", "crosvm balloon_stats exited with status 1: [ERROR] failed to connect to"),
        ("flood", "crosvm balloon_stats: stdout exceeded 65536 bytes"),
    ],
)
def test_failures_are_one_line_naming_the_socket(crosvm: CrosvmStandIn, mode: str, message: str) -> None:
    crosvm.set_mode(mode)
    vm = backend(crosvm, max_output_bytes=65536)
    with pytest.raises(BackendError) as info:
        vm.read()
    text = str(info.value)
    assert text.startswith(f"crosvm guest vm-a: control socket {crosvm.socket}: ")
    assert message in text and "\n" not in text


def test_a_hung_crosvm_is_killed_after_the_timeout(crosvm: CrosvmStandIn) -> None:
    crosvm.set_mode("hang")
    vm = backend(crosvm, timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(BackendError, match=r"crosvm balloon: no result within 1 s"):
        vm.apply(GIB)
    assert time.monotonic() - started < 5.0
    pid = int((crosvm.state / "hung.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_missing_crosvm_binary_is_named(tmp_path: Path) -> None:
    vm = CrosvmBackend("vm-b", tmp_path / "s.sock", crosvm_bin=str(tmp_path / "no-crosvm"), ram_bytes=RAM)
    with pytest.raises(
        BackendError, match=r"crosvm guest vm-b: control socket .*s\.sock: crosvm balloon_stats: "
    ):
        vm.start(lambda reason: None)
    with pytest.raises(BackendError, match="below one 4096-byte balloon page"):
        vm.apply(100)


def test_the_guest_stream_histogram_is_preferred_over_balloon_ws(
    crosvm: CrosvmStandIn, tmp_path: Path
) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "ws0.sock"))
    server.listen(1)
    server.settimeout(10)
    dump = (DATA / "lru_gen" / "real-lru_gen-1.txt").read_bytes()
    vm = backend(crosvm, agent_socket=tmp_path / "ws0.sock", memcg="/wsrl/cold")
    try:
        vm.start(lambda reason: None)
        conn, _ = server.accept()
        conn.sendall(encode_dump(4, "lru_gen", dump, 9.0))
        assert vm.stream is not None and vm.stream.wait_for_sample(0, timeout_s=10) is not None
        reading = vm.read()
        assert reading.histogram is not None
        assert reading.histogram.meta["memcgs"] == "/wsrl/cold"
        assert reading.histogram.total_bytes("anon") == 24576 * 4096  # /wsrl/cold in real-lru_gen-1
        assert reading.source["histogram"].startswith("guest stream dump lru_gen seq=4")
        assert "balloon_ws" not in [c[0] for c in crosvm.calls()]
        conn.close()
    finally:
        vm.close()
        server.close()


def test_parse_balloon_stats_is_strict_about_shape() -> None:
    parsed = parse_balloon_stats(
        b'{"BalloonStats": {"stats": {"total_memory": 5, "free_memory": null, "future_stat": 1},'
        b' "balloon_actual": 4096}}'
    )
    assert parsed.stats == {"total_memory": 5, "future_stat": 1} and parsed.balloon_actual_bytes == 4096
    for bad, location in (
        (b'{"BalloonWS": {}}', "$"),
        (
            b'{"BalloonStats": {"stats": {"total_memory": -1}, "balloon_actual": 0}}',
            "$.BalloonStats.stats.total_memory",
        ),
        (b'{"BalloonStats": {"stats": {}, "balloon_actual": 1.5}}', "$.BalloonStats.balloon_actual"),
        (b"{", "line 1 column 2"),
    ):
        with pytest.raises(ParseError) as info:
            parse_balloon_stats(bad)
        assert info.value.location == location


def test_the_refault_count_survives_a_guest_reboot(crosvm: CrosvmStandIn) -> None:
    vm = backend(crosvm, working_set=False)
    vm.start(lambda reason: None)  # major_faults 100: the count starts here
    assert [vm.read().refault_total for _ in range(2)] == [25.0, 50.0]  # 125, 150
    (crosvm.state / "faults").write_text("10")  # the guest rebooted: its counter restarted
    assert vm.read().refault_total == 60.0  # 50 before the reboot + 10 since
    assert vm.read().refault_total == 85.0
