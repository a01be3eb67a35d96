"""The guest-to-host stream (wire format, decoder, GuestStreamReader) and the guest agent, on the host.

The agent runs as a real process writing to a real pty (standing in for the guest's virtio-serial
port device); a relay copies the pty's other end to a real unix socket server (standing in for
QEMU's chardev socket), which GuestStreamReader reads. Inputs are copies of real lru_gen captures
(tests/data/lru_gen/real-*.txt), recounted here independently of wsrl's parser.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import typer
from testbed import frames as harness_frames
from typer.testing import CliRunner

from wsrl.agent.guest_agent import (
    AgentConfig,
    AgentError,
    GuestAgent,
    PortWriter,
    find_port,
    lru_gen_max_seqs,
    read_psi,
)
from wsrl.agent.wire import encode_dump, encode_histogram_record, encode_pressure_record
from wsrl.backends.guest_stream import GuestStreamReader, merge_lru_gen, select_memcgs
from wsrl.backends.stream_decoder import Dump, HistogramRecord, PressureRecord, StreamDecoder, parse_record
from wsrl.cli.agent_cmd import guest_agent_command
from wsrl.errors import ParseError
from wsrl.formats import FormatOptions, parse_bytes
from wsrl.histogram import ALL_NODES, Histogram, merge_nodes

pytestmark = pytest.mark.timeout(60)

DATA = Path(__file__).parent / "data"
REAL_DUMPS = sorted((DATA / "lru_gen").glob("real-lru_gen-*.txt"))
GUEST_INIT = Path(__file__).parent / "testbed" / "guest" / "init"
PAGE = 4096
PSI_CALM = (
    "some avg10=0.50 avg60=0.10 avg300=0.02 total=1000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=10\n"
)
PSI_HIGH = (
    "some avg10=42.50 avg60=9.00 avg300=2.00 total=5000000\n"
    "full avg10=20.00 avg60=4.00 avg300=1.00 total=2500000\n"
)


# -- an independent recount of an lru_gen dump --------------------------------------------------


def recount(text: str, memcg_prefix: str | None = None) -> tuple[int, int, list[int]]:
    """(anon bytes, file bytes, sorted distinct generation ages) with plain ``split``, not wsrl's parser."""
    anon = file = 0
    ages: set[int] = set()
    selected = False
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0] == "node":
            continue
        if fields[0] == "memcg":
            path = line.split(None, 2)[2] if len(fields) > 2 else ""
            selected = memcg_prefix is None or path == memcg_prefix or path.startswith(memcg_prefix + "/")
            continue
        if selected:
            ages.add(int(fields[1]))
            anon += int(fields[2]) * PAGE
            file += int(fields[3]) * PAGE
    return anon, file, sorted(ages)


def assert_matches_recount(histogram: Histogram, text: str, memcg: str | None = None) -> None:
    anon, file, ages = recount(text, memcg)
    assert histogram.total_bytes("anon") == anon
    assert histogram.total_bytes("file") == file
    assert list(histogram.edges_ms) == ages
    assert histogram.bin_bytes()[-1] == 0  # nothing is known to be older than the oldest generation


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g} s waiting for {what}"
        time.sleep(0.02)


# -- wire format --------------------------------------------------------------------------------


def test_busybox_guest_frames_decode_with_the_production_decoder(tmp_path: Path) -> None:
    """Run the guest init's own printf lines (a real shell) and decode their output."""
    script = GUEST_INIT.read_text()
    formats = re.findall(r"printf '(WSRL-[^']*)'", script)
    assert len(formats) == 2, formats
    header, trailer = formats
    body = REAL_DUMPS[0].read_bytes()
    dump_file = tmp_path / "dump"
    dump_file.write_bytes(body)
    out = subprocess.run(
        [
            "sh",
            "-c",
            f"printf '{header}' 7 lru_gen {len(body)} 12.34; cat {dump_file}; printf '{trailer}' 7 lru_gen",
        ],
        check=True,
        capture_output=True,
        timeout=10,
    ).stdout
    assert out == encode_dump(7, "lru_gen", body, 12.34)
    assert out == harness_frames.encode(7, "lru_gen", body, 12.34)
    (dump,) = harness_frames.FrameDecoder().feed(out, 1.0)
    assert (dump.seq, dump.name, dump.uptime_s, dump.data) == (7, "lru_gen", 12.34, body)


def test_mixed_stream_decodes_byte_by_byte_after_a_mid_stream_start() -> None:
    body = REAL_DUMPS[1].read_bytes()
    histogram = merge_lru_gen(parse_bytes("lru_gen", body), None, "guest")
    frame1, frame2 = encode_dump(1, "lru_gen", body, 1.5), encode_dump(2, "lru_gen_full", b"x\n", 3.0)
    hist_line = encode_histogram_record(histogram, seq=5, time_ms=1_000, source="lru_gen", psi_some_avg10=1.5)
    pressure_line = encode_pressure_record(
        seq=6, time_ms=2_000, some={"avg10": 12.0, "total": 99}, full=None, threshold_avg10=10.0
    )
    garbage = frame1[len(frame1) // 2 :] + hist_line[10:]  # the tail of a frame and of a record
    stream = garbage + frame1 + hist_line + b"noise line\n" + pressure_line + frame2
    decoder = StreamDecoder()
    units = []
    for index in range(len(stream)):
        units += decoder.feed(stream[index : index + 1], float(index))
    assert [type(u) for u in units] == [Dump, HistogramRecord, PressureRecord, Dump]
    first, record, pressure, last = units
    assert isinstance(first, Dump) and first.data == body and first.seq == 1
    assert isinstance(record, HistogramRecord) and record.histogram("guest") == histogram
    assert record.psi_some_avg10 == 1.5 and record.psi_some_total_us is None
    assert isinstance(pressure, PressureRecord) and (pressure.some_avg10, pressure.some_total_us) == (
        12.0,
        99,
    )
    assert isinstance(last, Dump) and (last.name, last.data) == ("lru_gen_full", b"x\n")
    assert decoder.dropped_bytes == len(garbage) + len(b"noise line\n")
    assert decoder.bad_frames == 0 and decoder.bad_records == 0
    assert decoder.buffered_bytes == 0


def test_oversized_frame_is_discarded_as_it_arrives(caplog: pytest.LogCaptureFixture) -> None:
    cap = 4096
    decoder = StreamDecoder(max_frame_bytes=cap)
    big = encode_dump(1, "lru_gen", b"m" * 300_000)
    good = encode_dump(2, "lru_gen", b"memcg 1 /\n")
    units = []
    chunk = 8192
    peak = 0
    for start in range(0, len(big + good), chunk):
        units += decoder.feed((big + good)[start : start + chunk], 0.0)
        peak = max(peak, decoder.buffered_bytes)
    assert [u.seq for u in units if isinstance(u, Dump)] == [2]
    assert decoder.oversized == 1 and decoder.bad_frames == 1
    assert peak <= chunk, f"the decoder held {peak} bytes of a frame over its {cap}-byte cap"
    assert "exceeds the 4096-byte cap" in caplog.text


def test_oversized_record_line_is_discarded_and_the_next_one_read(caplog: pytest.LogCaptureFixture) -> None:
    decoder = StreamDecoder(max_record_bytes=512)
    huge = b'{"v":1,"kind":"histogram","pad":"' + b"p" * 50_000 + b'"}\n'
    histogram = Histogram("g", ALL_NODES, [1000], {"anon": [1, 2], "file": [3, 4]})
    good = encode_histogram_record(histogram, seq=1, time_ms=5, source="wsr")
    units = []
    peak = 0
    data = huge + good
    for start in range(0, len(data), 1000):
        units += decoder.feed(data[start : start + 1000], 0.0)
        peak = max(peak, decoder.buffered_bytes)
    assert len(units) == 1 and isinstance(units[0], HistogramRecord)
    assert units[0].histogram("g") == histogram
    assert decoder.bad_records == 1 and decoder.oversized == 1
    assert peak <= 1000
    assert "longer than 512 bytes" in caplog.text


GOOD_HISTOGRAM = {"v": 1, "kind": "histogram", "seq": 1, "time_ms": 1, "source": "lru_gen",
                  "edges_ms": [1], "anon": [1, 2], "file": [3, 4]}  # fmt: skip
GOOD_PRESSURE = {"v": 1, "kind": "pressure", "seq": 1, "time_ms": 1, "some_avg10": 1.0, "some_total_us": 1,
                 "threshold_avg10": 10}  # fmt: skip


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (GOOD_HISTOGRAM | {"v": 2}, "v"),
        (GOOD_HISTOGRAM | {"v": True}, "v"),
        (GOOD_HISTOGRAM | {"file": [1]}, "file"),
        (GOOD_HISTOGRAM | {"edges_ms": [5, 5], "anon": [1, 1, 1], "file": [1, 2, 3]}, "edges_ms"),
        (GOOD_HISTOGRAM | {"source": "damon"}, "source"),
        (GOOD_HISTOGRAM | {"anon": [1, -2]}, "anon[1]"),
        (GOOD_HISTOGRAM | {"seq": -1}, "seq"),
        (GOOD_PRESSURE | {"some_avg10": "high"}, "some_avg10"),
        ({k: v for k, v in GOOD_PRESSURE.items() if k != "some_total_us"}, "some_total_us"),
    ],
)
def test_malformed_records_name_their_field(record: dict[str, object], field: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_record(json.dumps(record).encode())
    assert info.value.field == field
    assert "\n" not in str(info.value)


def test_unknown_kinds_and_keys_are_ignored_not_errors() -> None:
    assert isinstance(parse_record(json.dumps(GOOD_HISTOGRAM).encode()), HistogramRecord)
    assert isinstance(parse_record(json.dumps(GOOD_PRESSURE).encode()), PressureRecord)
    assert parse_record(b'{"v":1,"kind":"future","seq":1,"time_ms":2,"x":[1]}') is None
    record = parse_record(
        b'{"v":1,"kind":"histogram","seq":3,"time_ms":4,"source":"wsr","edges_ms":[10],'
        b'"anon":[1,2],"file":[3,4],"numa":"later"}'
    )
    assert isinstance(record, HistogramRecord) and record.anon_bytes == (1, 2)
    decoder = StreamDecoder()
    assert decoder.feed(b'{"v":1,"kind":"future","seq":1,"time_ms":2}\n{not json}\n', 0.0) == []
    assert decoder.bad_records == 1


@pytest.mark.parametrize("dump", REAL_DUMPS, ids=lambda p: p.name)
def test_memcg_selection_merges_exactly_the_recounted_pages(dump: Path) -> None:
    text = dump.read_text()
    histograms = parse_bytes("lru_gen", dump.read_bytes(), FormatOptions(page_size_bytes=PAGE))
    for memcg in (None, "/", "/wsrl", "/wsrl/hot", "/wsrl/cold/"):
        merged = merge_lru_gen(histograms, memcg, "vm")
        assert merged.guest == "vm" and merged.node == ALL_NODES
        prefix = None if memcg in (None, "/") else memcg.rstrip("/")
        assert_matches_recount(merged, text, prefix)
    assert {h.guest for h in select_memcgs(histograms, "/wsrl")} == {
        "/wsrl",
        "/wsrl/cold",
        "/wsrl/hot",
        "/wsrl/grow",
    }
    with pytest.raises(ParseError, match="no memcg '/wsr' in the dump"):
        select_memcgs(histograms, "/wsr")


# -- GuestStreamReader over a real unix socket ---------------------------------------------------


class ChardevStandIn:
    """A unix socket server playing QEMU's chardev: one client at a time, fed from ``source``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.server.settimeout(10.0)
        self.client: socket.socket | None = None

    def accept(self) -> socket.socket:
        self.client, _ = self.server.accept()
        return self.client

    def drop_client(self) -> None:
        if self.client is not None:
            with contextlib.suppress(OSError):
                self.client.shutdown(socket.SHUT_RDWR)
            self.client.close()
            self.client = None

    def close(self) -> None:
        self.drop_client()
        self.server.close()


@pytest.fixture
def chardev(tmp_path: Path) -> Iterator[ChardevStandIn]:
    server = ChardevStandIn(tmp_path / "ws0.sock")
    try:
        yield server
    finally:
        server.close()


def test_reader_reconnects_when_the_socket_drops(chardev: ChardevStandIn) -> None:
    dumps = [p.read_bytes() for p in REAL_DUMPS]
    reasons: list[str] = []
    reader = GuestStreamReader(chardev.path, guest="vm", reconnect_delay_s=0.05)
    reader.start(reasons.append)
    try:
        conn = chardev.accept()
        conn.sendall(encode_dump(1, "lru_gen", dumps[0], 1.0))
        first = reader.wait_for_sample(0, timeout_s=10)
        assert first is not None and first.seq == 1 and first.transport == "dump"
        assert first.raw == dumps[0]
        assert_matches_recount(first.histogram, dumps[0].decode())

        chardev.drop_client()  # the server side closes the connection
        conn = chardev.accept()  # the reader comes back by itself
        half = encode_dump(9, "lru_gen", dumps[2])
        pressure = encode_pressure_record(
            seq=3, time_ms=7, some={"avg10": 50.0, "total": 10}, full=None, threshold_avg10=10.0
        )
        conn.sendall(half[-40:] + encode_dump(2, "lru_gen", dumps[1], 2.0) + pressure)
        second = reader.wait_for_sample(first.count, timeout_s=10)
        assert second is not None and second.seq == 2
        assert_matches_recount(second.histogram, dumps[1].decode())
        wait_until(lambda: reasons == ["agent_report"], 10, "the pressure report's notify")
        latest_pressure = reader.latest_pressure()
        assert latest_pressure is not None and latest_pressure.some_avg10 == 50.0
        stats = reader.stats()
        assert stats.connects == 2 and stats.disconnects == 1
        assert stats.dumps == 2 and stats.pressure_reports == 1 and stats.dropped_bytes == 40
    finally:
        reader.close()
    assert reader.stats().connected is False


def test_reader_keeps_the_last_histogram_when_a_dump_does_not_parse(
    chardev: ChardevStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    good = REAL_DUMPS[0].read_bytes()
    reader = GuestStreamReader(chardev.path, memcg="/wsrl/cold")
    reader.start()
    try:
        conn = chardev.accept()
        conn.sendall(
            encode_dump(1, "lru_gen", good) + encode_dump(2, "lru_gen", b"memcg 1 /\n node 0\n 5 x 1 1\n")
        )
        wait_until(lambda: reader.stats().parse_errors == 1, 10, "the bad dump")
        sample = reader.latest()
        assert sample is not None and sample.seq == 1
        assert_matches_recount(sample.histogram, good.decode(), "/wsrl/cold")
        assert "dump seq=2 name=lru_gen: lru_gen: line 3" in caplog.text
    finally:
        reader.close()


# -- the agent ----------------------------------------------------------------------------------


class PtyRelay:
    """A pty standing in for the guest's port device, relayed into the chardev stand-in's client."""

    def __init__(self, chardev: ChardevStandIn) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no newline translation: bytes pass as written
        self.port = Path(os.ttyname(self.slave))
        self.chardev = chardev
        self.forwarded = 0
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        conn = self.chardev.accept()
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            conn.sendall(data)
            self.forwarded += len(data)

    def close(self) -> None:
        os.close(self.slave)
        os.close(self.master)
        self._thread.join(timeout=5)


def test_agent_streams_real_lru_gen_through_a_pty_to_the_reader(
    chardev: ChardevStandIn, tmp_path: Path
) -> None:
    lru_gen = tmp_path / "lru_gen"
    shutil.copyfile(REAL_DUMPS[1], lru_gen)
    psi = tmp_path / "pressure"
    psi.write_text(PSI_CALM)
    relay = PtyRelay(chardev)
    reasons: list[str] = []
    reader = GuestStreamReader(chardev.path, guest="vm-1")
    reader.start(reasons.append)
    agent = subprocess.Popen(
        [
            sys.executable, "-m", "wsrl.agent",
            "--port", str(relay.port), "--lru-gen", str(lru_gen), "--pressure-file", str(psi),
            "--interval-s", "0.3", "--pressure-poll-s", "0.05", "--pressure-threshold", "10",
            "--age-every", "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        sample = reader.wait_for_sample(0, timeout_s=20)
        assert sample is not None, (
            f"no histogram; agent stderr: {agent.stderr.read1() if agent.stderr else ''}"
        )
        assert (sample.transport, sample.source, sample.histogram.guest) == ("agent", "lru_gen", "vm-1")
        assert_matches_recount(sample.histogram, lru_gen.read_text())
        assert sample.psi_some_avg10 == 0.5 and sample.psi_some_total_us == 1000
        assert sample.guest_time_ms is not None and abs(sample.guest_time_ms - time.time() * 1000) < 60_000
        assert reasons == []

        psi.write_text(PSI_HIGH)
        wait_until(lambda: reasons == ["agent_report"], 10, "the agent's pressure report")
        pressure = reader.latest_pressure()
        assert pressure is not None
        assert (pressure.some_avg10, pressure.some_total_us, pressure.full_avg10) == (42.5, 5_000_000, 20.0)
        assert pressure.threshold_avg10 == 10.0
        later = reader.wait_for_sample(reader.latest().count, timeout_s=10)  # type: ignore[union-attr]
        assert later is not None and later.psi_some_avg10 == 42.5
        time.sleep(0.3)
        assert reasons == ["agent_report"]  # one report per crossing, not one per poll
    finally:
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=10)
        reader.close()
        relay.close()
    assert agent.returncode == 0, stderr.decode()
    assert relay.forwarded > 0
    assert b"Traceback" not in stderr
    assert reader.stats().bad_records == 0 and reader.stats().bad_frames == 0


def test_agent_ages_every_memcg_as_the_busybox_guest_does(tmp_path: Path) -> None:
    port, ages = tmp_path / "port", tmp_path / "age-commands"
    port.touch()
    ages.touch()
    dump = REAL_DUMPS[2]
    config = AgentConfig(
        port=port,
        lru_gen_path=dump,
        age_path=ages,
        pressure_path=tmp_path / "absent",
        count=2,
        interval_s=0.01,
    )
    stats = GuestAgent(config).run()
    assert stats.histograms_sent == 2 and stats.records_dropped == 0
    awk_program = re.search(r"awk '(.*?)' /tmp/dump.lru_gen", GUEST_INIT.read_text(), re.S)
    assert awk_program is not None
    expected = subprocess.run(
        ["awk", awk_program.group(1), str(dump)], check=True, capture_output=True, text=True, timeout=10
    ).stdout.splitlines()
    written = ages.read_text().splitlines()
    assert len(written) == 2 * len(expected)  # one command per (memcg, node) per round
    assert sorted(written[: len(expected)]) == sorted(expected)
    assert sorted(lru_gen_max_seqs(dump.read_text())) == sorted(
        (line.split()[1], int(line.split()[2]), int(line.split()[3])) for line in expected
    )


def _decode_file(path: Path) -> list[object]:
    decoder = StreamDecoder()
    units = decoder.feed(path.read_bytes(), 0.0)
    assert decoder.bad_records == 0 and decoder.dropped_bytes == 0
    return list(units)


def test_guest_agent_command_writes_pressure_then_histograms(tmp_path: Path) -> None:
    port, psi = tmp_path / "port", tmp_path / "pressure"
    port.touch()
    psi.write_text(PSI_HIGH)
    app = typer.Typer()
    app.command()(guest_agent_command)
    result = CliRunner().invoke(
        app,
        [
            "--port", str(port), "--lru-gen", str(REAL_DUMPS[0]), "--pressure-file", str(psi),
            "--count", "2", "--interval-s", "0.05", "--age-every", "0", "--memcg", "/wsrl/hot",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    units = _decode_file(port)
    assert [type(u).__name__ for u in units] == ["PressureRecord", "HistogramRecord", "HistogramRecord"]
    assert [u.seq for u in units] == [1, 2, 3]  # type: ignore[attr-defined]
    record = units[1]
    assert isinstance(record, HistogramRecord) and record.memcg == "/wsrl/hot"
    assert_matches_recount(record.histogram("x"), REAL_DUMPS[0].read_text(), "/wsrl/hot")


def test_guest_agent_command_reads_a_wsr_page_age_file(tmp_path: Path) -> None:
    port = tmp_path / "port"
    port.touch()
    page_age = DATA / "wsr" / "memcg_page_age_two_nodes.txt"
    app = typer.Typer()
    app.command()(guest_agent_command)
    result = CliRunner().invoke(
        app,
        [
            "--port", str(port), "--source", "wsr", "--wsr-file", str(page_age),
            "--pressure-file", str(tmp_path / "no-psi"), "--count", "1",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (record,) = _decode_file(port)
    assert isinstance(record, HistogramRecord) and record.source == "wsr" and record.memcg is None
    expected = merge_nodes(parse_bytes("wsr", page_age.read_bytes(), FormatOptions(guest="x")))
    assert record.histogram("x").bytes.tolist() == expected.bytes.tolist()
    assert record.edges_ms == (1000, 10000, 60000)
    assert record.anon_bytes == (4096, 49152, 16384, 1048576 + 65536)
    assert math_isnan(record.psi_some_avg10)


def math_isnan(value: float) -> bool:
    return value != value


def test_agent_fails_in_one_line_naming_the_missing_file(tmp_path: Path) -> None:
    port = tmp_path / "port"
    port.touch()
    missing = tmp_path / "debug" / "lru_gen"
    result = subprocess.run(
        [sys.executable, "-m", "wsrl.agent", "--port", str(port), "--lru-gen", str(missing), "--count", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == [f"wsrl guest-agent: error: {missing}: cannot read: No such file or directory"]


def test_find_port_by_name(tmp_path: Path) -> None:
    ports = tmp_path / "virtio-ports"
    for entry, name in (("vport0p1", "org.qemu.guest_agent.0"), ("vport1p1", "org.wsrl.ws.0")):
        (ports / entry).mkdir(parents=True)
        (ports / entry / "name").write_text(name + "\n")
    assert find_port("org.wsrl.ws.0", ports, tmp_path / "dev") == tmp_path / "dev" / "vport1p1"
    with pytest.raises(AgentError, match=r"virtio-ports: no virtio-serial port named 'org.wsrl.other'"):
        find_port("org.wsrl.other", ports, tmp_path / "dev")
    with pytest.raises(AgentError, match="cannot list virtio-serial ports"):
        find_port("org.wsrl.ws.0", tmp_path / "absent")


def test_port_writer_gives_up_when_the_host_does_not_read() -> None:
    master, slave = os.openpty()
    try:
        tty.setraw(slave)
        writer = PortWriter(Path(os.ttyname(slave)), timeout_s=0.3)
        started = time.monotonic()
        assert writer.write(b"x" * (4 * 1024 * 1024)) is False  # nobody reads the pty's other end
        elapsed = time.monotonic() - started
        assert 0.25 <= elapsed < 3.0
        assert writer.dropped_records == 1 and writer.written_records == 0
        writer.close()
    finally:
        os.close(slave)
        os.close(master)


def test_read_psi_reads_the_host_kernel_file_and_rejects_garbage(tmp_path: Path) -> None:
    psi = read_psi(Path("/proc/pressure/memory"))
    assert set(psi["some"]) >= {"avg10", "avg60", "avg300", "total"}
    assert 0.0 <= psi["some"]["avg10"] <= 100.0
    bad = tmp_path / "memory"
    bad.write_text("some avg10=0.00 avg60=abc avg300=0.00 total=1\n")
    with pytest.raises(AgentError, match=r"memory: line 1: field 'avg60'"):
        read_psi(bad)


STANDALONE_RUN = """
import importlib.util, json, runpy, sys
sys.path[:0] = [sys.argv[1]]
assert importlib.util.find_spec("numpy") is None, "site-packages leaked into the guest interpreter"
sys.argv = ["wsrl.agent", *sys.argv[2:]]
try:
    runpy.run_module("wsrl.agent", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    if exc.code not in (0, None):
        raise
ours = [name for name in sys.modules if name == "wsrl" or name.startswith("wsrl.")]
others = [m for m in sys.modules if m.split(".")[0] not in (*sys.stdlib_module_names, "wsrl", "__main__")]
outside = sorted(others + [name for name in ours if name != "wsrl" and not name.startswith("wsrl.agent")])
print(json.dumps(outside), file=sys.stderr)
"""


def test_the_agent_runs_on_the_standard_library_alone(tmp_path: Path) -> None:
    """Only the agent's files and a python3 without site-packages: what a minimal guest has."""
    guest_root = tmp_path / "guest"
    package = Path(__file__).resolve().parents[1] / "wsrl"
    (guest_root / "wsrl" / "agent").mkdir(parents=True)
    shutil.copyfile(package / "__init__.py", guest_root / "wsrl" / "__init__.py")
    for module in (package / "agent").glob("*.py"):
        shutil.copyfile(module, guest_root / "wsrl" / "agent" / module.name)
    psi, lru_gen_port, wsr_port = tmp_path / "pressure", tmp_path / "port-lru_gen", tmp_path / "port-wsr"
    psi.write_text(PSI_HIGH)
    lru_gen_port.touch()
    wsr_port.touch()

    def run_agent(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-I", "-S", "-c", STANDALONE_RUN, str(guest_root), *args]
        return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)

    usage = run_agent("--help")
    assert usage.returncode == 0, usage.stderr
    assert "--lru-gen" in usage.stdout and "--pressure-threshold" in usage.stdout
    assert json.loads(usage.stderr.splitlines()[-1]) == []
    once = ["--pressure-file", str(psi), "--count", "1", "--age-every", "0"]
    streamed = run_agent(
        *once, "--port", str(lru_gen_port), "--lru-gen", str(REAL_DUMPS[0]), "--memcg", "/wsrl"
    )
    assert streamed.returncode == 0, streamed.stderr
    assert json.loads(streamed.stderr.splitlines()[-1]) == []  # nothing but the stdlib and the agent
    page_age = DATA / "wsr" / "memcg_page_age_two_nodes.txt"
    wsr_run = run_agent(*once, "--port", str(wsr_port), "--source", "wsr", "--wsr-file", str(page_age))
    assert wsr_run.returncode == 0, wsr_run.stderr
    pressure, lru_gen = _decode_file(lru_gen_port)
    wsr = _decode_file(wsr_port)[1]
    assert isinstance(pressure, PressureRecord) and pressure.some_avg10 == 42.5
    # The host's parsers, on numpy, read the same files to the same bins.
    assert isinstance(lru_gen, HistogramRecord) and isinstance(wsr, HistogramRecord)
    host = parse_bytes("lru_gen", REAL_DUMPS[0].read_bytes(), FormatOptions(page_size_bytes=PAGE))
    assert lru_gen.histogram("x").bytes.tolist() == merge_lru_gen(host, "/wsrl", "x").bytes.tolist()
    assert_matches_recount(lru_gen.histogram("x"), REAL_DUMPS[0].read_text(), "/wsrl")
    expected = merge_nodes(parse_bytes("wsr", page_age.read_bytes(), FormatOptions(guest="x")))
    assert (wsr.edges_ms, wsr.histogram("x").bytes.tolist()) == (expected.edges_ms, expected.bytes.tolist())


def test_reader_takes_one_histogram_per_round_preferring_plain_lru_gen(chardev: ChardevStandIn) -> None:
    full = [(DATA / "lru_gen" / f"real-lru_gen_full-{n}.txt").read_bytes() for n in (1, 2)]
    plain = (DATA / "lru_gen" / "real-lru_gen-2.txt").read_bytes()
    reader = GuestStreamReader(chardev.path)
    reader.start()
    try:
        conn = chardev.accept()
        conn.sendall(encode_dump(5, "lru_gen_full", full[0]))  # no plain dump seen yet: taken
        first = reader.wait_for_sample(0, timeout_s=10)
        assert first is not None and first.histogram.meta["dump"] == "lru_gen_full"
        conn.sendall(encode_dump(18, "lru_gen", plain) + encode_dump(18, "lru_gen_full", full[1]))
        wait_until(lambda: reader.stats().dumps == 3, 10, "three dumps")
        latest = reader.latest()
        assert latest is not None and latest.count == 2 and latest.histogram.meta["dump"] == "lru_gen"
        assert_matches_recount(latest.histogram, plain.decode())
        assert reader.stats().ignored_dumps == 1
    finally:
        reader.close()
