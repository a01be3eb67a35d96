"""QemuBackend and GuestStreamReader against the real QEMU test guest (tests/testbed).

One guest boots for the module (about 10 to 20 s under TCG). The backend talks to QEMU's QMP socket
through a byte-forwarding unix proxy: QEMU offers no way to close a QMP client's connection from
its side, and the proxy can, so the reconnect test is a real server-side drop with real QEMU
behind it. Facts the backend reports are checked against the harness's own, private QMP monitor
(``QemuGuest.qmp``). The lru_gen dumps come from the guest's init over virtio-serial; the harness
hands the serial socket over to the backend's GuestStreamReader (QEMU serves one client at a time).
The tests fail, never skip, without the testbed. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from testbed import BALLOON_QOM_PATH, QemuGuest

from wsrl.backends.base import BackendError
from wsrl.backends.qemu import QemuBackend

pytestmark = [pytest.mark.realvm, pytest.mark.qemu, pytest.mark.timeout(120)]

PAGE = 4096
MIB = 2**20
GUEST_RAM = 1024 * MIB
BALLOON_S = 30.0
STREAM_S = 30.0


class UnixProxy:
    """Forwards each connection on ``listen_path`` to ``upstream_path``; can close them from its side."""

    def __init__(self, listen_path: Path, upstream_path: Path) -> None:
        self.listen_path = listen_path
        self.upstream_path = upstream_path
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(listen_path))
        self._server.listen(4)
        self._server.settimeout(0.2)
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(str(self.upstream_path))
            except OSError:
                client.close()
                upstream.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
                self.accepted += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def drop(self) -> None:
        """Close every forwarded connection, as a server that hangs up would."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for end in pair:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()

    def close(self) -> None:
        """Stop listening (the socket file goes away) and drop every connection."""
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._server.close()
        self.drop()
        with contextlib.suppress(FileNotFoundError):
            self.listen_path.unlink()


def hand_over_serial_socket(guest: QemuGuest) -> None:
    """Disconnect the harness from the virtio-serial socket so that another client can have it.

    QEMU's chardev socket serves one client; the harness connects at boot to see the first dump.
    There is no public hand-over in the harness, so its socket is shut down here; its reader thread
    then stops (``next_dump`` is not used after this).
    """
    serial = guest._serial  # private: see the docstring
    assert serial is not None, "the harness is not connected to the serial socket"
    serial.shutdown(socket.SHUT_RDWR)


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.2) -> float:
    """Poll ``check`` until it holds; return the seconds it took."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout_s, f"timed out after {timeout_s:g} s waiting for {what}"
        time.sleep(poll_s)
    return time.monotonic() - started


def recount(text: str) -> tuple[int, int, list[int]]:
    """(anon bytes, file bytes, sorted distinct generation ages) of a raw lru_gen dump, with ``split``."""
    anon = file = 0
    ages: set[int] = set()
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] not in ("memcg", "node"):
            ages.add(int(fields[1]))
            anon += int(fields[2]) * PAGE
            file += int(fields[3]) * PAGE
    return anon, file, sorted(ages)


class Notifications:
    """Thread-safe record of the reasons ``notify`` was called with."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reasons: list[str] = []

    def __call__(self, reason: str) -> None:
        with self._lock:
            self.reasons.append(reason)

    def count(self, reason: str) -> int:
        with self._lock:
            return self.reasons.count(reason)


@pytest.fixture(scope="module")
def proxy(qemu_guest: QemuGuest) -> Iterator[UnixProxy]:
    forwarder = UnixProxy(qemu_guest.qmp_socket.parent / "qmp-proxy.sock", qemu_guest.qmp_socket)
    try:
        yield forwarder
    finally:
        forwarder.close()


@pytest.fixture(scope="module")
def notifications() -> Notifications:
    return Notifications()


@pytest.fixture(scope="module")
def backend(qemu_guest: QemuGuest, proxy: UnixProxy, notifications: Notifications) -> Iterator[QemuBackend]:
    hand_over_serial_socket(qemu_guest)
    vm = QemuBackend(
        "vm-1",
        proxy.listen_path,
        agent_socket=qemu_guest.serial_socket,
        stats_interval_s=1.0,
        timeout_s=10.0,
    )
    vm.start(notifications)
    try:
        yield vm
    finally:
        vm.close()


def harness_stats(guest: QemuGuest) -> tuple[int, dict[str, int]]:
    answer = guest.qmp("qom-get", {"path": BALLOON_QOM_PATH, "property": "guest-stats"})
    return int(answer["last-update"]), {k: int(v) for k, v in answer["stats"].items()}


def test_start_reads_the_ram_and_the_visible_size(backend: QemuBackend, qemu_guest: QemuGuest) -> None:
    assert backend.ram_bytes == GUEST_RAM
    assert qemu_guest.qmp("query-memory-size-summary")["base-memory"] == GUEST_RAM
    reading = backend.read()
    assert reading.name == "vm-1"
    assert reading.visible_bytes == GUEST_RAM
    assert reading.target_bytes == GUEST_RAM  # none set yet: the size in force (a restart starts from it)
    assert not reading.balloon_stalled
    assert abs(reading.time_ms - time.time() * 1000) < 10_000
    polling = qemu_guest.qmp(
        "qom-get", {"path": BALLOON_QOM_PATH, "property": "guest-stats-polling-interval"}
    )
    assert polling == 1


def test_usage_and_refaults_are_the_guest_stats(backend: QemuBackend, qemu_guest: QemuGuest) -> None:
    wait_until(lambda: backend.guest_stats() is not None, 15, "the guest's first statistics")
    for _ in range(5):  # stats refresh every second: compare two readings of the same report
        reading = backend.read()
        stats = backend.guest_stats()
        last_update, values = harness_stats(qemu_guest)
        if stats is not None and stats.last_update_s == last_update:
            break
    else:
        pytest.fail("the statistics changed between every pair of reads")
    assert stats.values == {k: v for k, v in values.items() if v != 2**64 - 1}
    total, free = values["stat-total-memory"], values["stat-free-memory"]
    assert 512 * MIB < total <= GUEST_RAM
    assert reading.usage_bytes == total - free
    assert 32 * MIB < reading.usage_bytes < total  # the workloads hold about 200 MiB
    assert reading.refault_total >= 0.0  # major faults since the backend's first statistics
    assert reading.source["stats"].startswith("guest-stats updated")


def test_balloon_follows_apply_and_notifies(
    backend: QemuBackend, qemu_guest: QemuGuest, notifications: Notifications
) -> None:
    before = notifications.count("balloon_change")
    target = 768 * MIB
    try:
        backend.apply(target + 123)  # not page aligned: rounded down to the page
        inflate_s = wait_until(
            lambda: backend.read().visible_bytes <= target, BALLOON_S, "the balloon at 768 MiB"
        )
        assert qemu_guest.qmp("query-balloon")["actual"] == target
        reading = backend.read()
        assert reading.visible_bytes == target and reading.target_bytes == target
        assert not reading.balloon_stalled
        wait_until(lambda: notifications.count("balloon_change") > before, 10, "a BALLOON_CHANGE notify")
        assert backend.last_event_actual_bytes is not None and backend.last_event_actual_bytes < GUEST_RAM
    finally:
        backend.relax(None)
    deflate_s = wait_until(
        lambda: backend.read().visible_bytes == GUEST_RAM, BALLOON_S, "the balloon deflated"
    )
    assert qemu_guest.qmp("query-balloon")["actual"] == GUEST_RAM
    assert backend.read().target_bytes == GUEST_RAM
    print(f"balloon: 1 GiB -> 768 MiB in {inflate_s:.1f} s, back in {deflate_s:.1f} s")


def test_a_balloon_that_cannot_move_is_reported_stalled(backend: QemuBackend, qemu_guest: QemuGuest) -> None:
    """With the VM's vCPUs stopped (QMP ``stop``) the guest cannot inflate: a real stall."""
    target = 896 * MIB
    qemu_guest.qmp("stop")
    try:
        backend.apply(target)
        stalled = [backend.read().balloon_stalled for _ in range(4)]
        assert backend.read().visible_bytes == GUEST_RAM
        # The first read records the distance; three more without progress make a stall.
        assert stalled == [False, False, False, True]
    finally:
        qemu_guest.qmp("cont")
    try:
        wait_until(lambda: backend.read().visible_bytes <= target, BALLOON_S, "the balloon after cont")
        assert backend.read().balloon_stalled is False
    finally:
        backend.relax(None)
    wait_until(lambda: backend.read().visible_bytes == GUEST_RAM, BALLOON_S, "the balloon deflated")


def test_lru_gen_dumps_arrive_through_the_guest_stream(backend: QemuBackend) -> None:
    stream = backend.stream
    assert stream is not None
    first = stream.wait_for_sample(0, timeout_s=STREAM_S)
    assert first is not None, f"no dump from the guest within {STREAM_S:g} s: {stream.stats()}"
    # A second one, to see it is live; the first may be an lru_gen_full dump (mid-round connect).
    sample = stream.wait_for_sample(first.count, timeout_s=STREAM_S)
    assert sample is not None and sample.seq >= first.seq
    assert sample.transport == "dump" and sample.source == "lru_gen" and sample.raw is not None
    assert sample.histogram.meta["dump"] == "lru_gen"
    anon, file, ages = recount(sample.raw.decode())
    histogram = sample.histogram
    assert histogram.total_bytes("anon") == anon
    assert histogram.total_bytes("file") == file
    assert list(histogram.edges_ms) == ages
    assert histogram.guest == "vm-1"
    assert set(histogram.meta["memcgs"].split(",")) >= {"/", "/wsrl", "/wsrl/cold", "/wsrl/hot", "/wsrl/grow"}
    assert 32 * MIB <= anon + file <= GUEST_RAM  # the workloads may still be allocating
    reading = backend.read()
    assert reading.histogram is not None
    assert reading.histogram.total_bytes() > 0
    assert reading.source["histogram"].startswith("guest stream dump lru_gen seq=")
    # Framing is clean. (A dump may still fail to PARSE: in the first seconds after boot the kernel
    # can print a younger generation one jiffy older than the next, which the lru_gen parser
    # rejects; the reader logs it and keeps the previous histogram.)
    assert stream.stats().bad_frames == 0 and stream.stats().bad_records == 0


def test_a_dropped_qmp_connection_is_reconnected(
    backend: QemuBackend, proxy: UnixProxy, notifications: Notifications
) -> None:
    accepted = proxy.accepted
    proxy.drop()
    time.sleep(0.2)  # let the client see the end of the stream
    reading = backend.read()
    assert reading.visible_bytes == GUEST_RAM
    assert backend.reconnects == 1 and proxy.accepted == accepted + 1
    # Events still arrive on the new connection.
    before = notifications.count("balloon_change")
    try:
        backend.apply(GUEST_RAM - 64 * MIB)
        wait_until(
            lambda: notifications.count("balloon_change") > before, BALLOON_S, "an event after reconnecting"
        )
    finally:
        backend.relax(None)
    wait_until(lambda: backend.read().visible_bytes == GUEST_RAM, BALLOON_S, "the balloon deflated")


def test_a_qmp_socket_that_is_gone_is_a_one_line_error(backend: QemuBackend, proxy: UnixProxy) -> None:
    proxy.close()  # the socket file is removed and the connection dropped
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        backend.read()
    message = str(info.value)
    assert message.startswith(f"qemu guest vm-1: QMP socket {proxy.listen_path}: cannot connect: ")
    assert "\n" not in message
    assert time.monotonic() - started < 15.0
