"""Boot the real test guest under QEMU (TCG) and talk to it.

:class:`QemuGuest` is a context manager: entering boots the guest and waits until its first
framed dump arrives over virtio-serial; leaving (also on an exception) kills QEMU and removes the
temporary folder that holds its sockets and logs. Every wait is bounded.

The guest (``tests/testbed/guest/init``) has MGLRU on, a virtio balloon (``-device
virtio-balloon-pci,id=balloon0``) and three workloads in memcgs ``/wsrl/cold``, ``/wsrl/hot`` and
``/wsrl/grow``; every ``dump_interval_s`` it sends ``lru_gen`` and ``lru_gen_full`` dumps and then
ages every memcg by one generation.

QMP: QEMU gets two QMP monitors. :attr:`QemuGuest.qmp_socket` is left free for the code under test
(a QMP monitor serves one client at a time); :meth:`QemuGuest.qmp` uses a second, private one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from .artifacts import Testbed
from .frames import Dump, FrameDecoder

SERIAL_PORT_NAME = "org.wsrl.ws.0"
BALLOON_ID = "balloon0"
BALLOON_QOM_PATH = f"/machine/peripheral/{BALLOON_ID}"
_PR_SET_PDEATHSIG = 1


class GuestError(RuntimeError):
    """The guest did not boot, stopped, or did not answer in time. The message ends with logs."""


@dataclass(frozen=True)
class GuestOptions:
    """How to run the guest. The defaults are the ones the tests were sized for."""

    memory_mib: int = 1024
    cpus: int = 1
    dump_interval_s: int = 2
    age_every: int = 1
    """Age every memcg by one generation after every N dump rounds; 0 never ages."""
    workload: bool = True
    boot_timeout_s: float = 90.0
    """From QEMU's start to the first framed dump (a TCG boot takes about 10 to 20 s)."""
    shutdown_timeout_s: float = 5.0
    extra_append: str = ""
    extra_args: tuple[str, ...] = ()


def _die_with_parent() -> None:
    """Run in the QEMU child before exec: SIGKILL it if the test process dies (Linux only)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class QemuGuest:
    """A running QEMU guest with MGLRU, a virtio balloon and a virtio-serial dump channel."""

    def __init__(self, testbed: Testbed | None = None, options: GuestOptions | None = None) -> None:
        self.testbed = testbed or Testbed.load()
        self.options = options or GuestOptions()
        self._workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._serial: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._dumps: collections.deque[Dump] = collections.deque(maxlen=256)
        self._reader_error: str | None = None
        self.decoder = FrameDecoder()

    # -- paths -------------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        if self._workdir is None:
            raise GuestError("the guest is not started")
        return self._workdir / name

    @property
    def qmp_socket(self) -> Path:
        """QMP unix socket left free for the code under test (one client at a time)."""
        return self._path("qmp.sock")

    @property
    def serial_socket(self) -> Path:
        """Host end of the virtio-serial port; the harness is connected to it while running."""
        return self._path("ws0.sock")

    @property
    def console_log(self) -> Path:
        """The guest's serial console (kernel messages and ``wsrl-guest:`` lines)."""
        return self._path("console.log")

    @property
    def pid(self) -> int | None:
        """QEMU's process id while it runs."""
        return self._proc.pid if self._proc else None

    def command_line(self) -> list[str]:
        """The QEMU command line this guest runs."""
        opts = self.options
        append = (
            f"console=ttyS0 panic=-1 wsrl.interval={opts.dump_interval_s} "
            f"wsrl.age_every={opts.age_every} wsrl.workload={int(opts.workload)} {opts.extra_append}"
        ).strip()
        return [
            str(self.testbed.qemu),
            "-accel", "tcg", "-cpu", "max",
            "-m", str(opts.memory_mib), "-smp", str(opts.cpus),
            "-nographic", "-monitor", "none", "-serial", f"file:{self.console_log}",
            "-no-reboot", "-nic", "none",
            "-kernel", str(self.testbed.kernel), "-initrd", str(self.testbed.initrd),
            "-append", append,
            "-device", f"virtio-balloon-pci,id={BALLOON_ID}",
            "-qmp", f"unix:{self.qmp_socket},server=on,wait=off",
            "-qmp", f"unix:{self._path('harness-qmp.sock')},server=on,wait=off",
            "-device", "virtio-serial",
            "-chardev", f"socket,id=ws0,path={self.serial_socket},server=on,wait=off",
            "-device", f"virtserialport,chardev=ws0,name={SERIAL_PORT_NAME}",
            *opts.extra_args,
        ]  # fmt: skip

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> QemuGuest:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start QEMU and wait for the first dump; on any failure clean up and raise GuestError."""
        if self._proc is not None:
            raise GuestError("the guest is already started")
        self._stop.clear()
        self._reader_error = None
        self._dumps.clear()
        self._workdir = Path(tempfile.mkdtemp(prefix="wsrl-vm-"))
        try:
            self._launch()
            deadline = time.monotonic() + self.options.boot_timeout_s
            self._serial = self._connect_serial(deadline)
            self._reader = threading.Thread(target=self._read_loop, name="wsrl-vm-serial", daemon=True)
            self._reader.start()
            self._wait_for(lambda: bool(self._dumps), deadline, "the guest's first dump")
        except BaseException:
            self.close()
            raise

    def _launch(self) -> None:
        with self._path("qemu.log").open("wb") as qemu_log:
            self._proc = subprocess.Popen(
                self.command_line(),
                stdin=subprocess.DEVNULL,
                stdout=qemu_log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )

    def _connect_serial(self, deadline: float) -> socket.socket:
        while True:
            self._check_running("connecting to the virtio-serial socket")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.serial_socket))
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise self._error("the virtio-serial socket never accepted a connection") from None
                time.sleep(0.1)
                continue
            sock.settimeout(0.2)
            return sock

    def _read_loop(self) -> None:
        sock = self._serial
        assert sock is not None
        while not self._stop.is_set():
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                self._reader_failed(f"virtio-serial read failed: {exc}")
                return
            if not data:
                self._reader_failed("virtio-serial socket closed by QEMU")
                return
            frames = self.decoder.feed(data, time.monotonic())
            if frames:
                with self._cond:
                    self._dumps.extend(frames)
                    self._cond.notify_all()

    def _reader_failed(self, reason: str) -> None:
        with self._cond:
            self._reader_error = reason
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the reader, kill QEMU and remove the sockets and logs. Safe to call twice."""
        self._stop.set()
        if self._serial is not None:
            with contextlib.suppress(OSError):
                self._serial.shutdown(socket.SHUT_RDWR)
            self._serial.close()
            self._serial = None
        if self._reader is not None:
            self._reader.join(timeout=2.0)
            self._reader = None
        self._stop_qemu()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def _stop_qemu(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=self.options.shutdown_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=self.options.shutdown_timeout_s)

    # -- diagnostics -------------------------------------------------------------------------

    def console_tail(self, lines: int = 40) -> str:
        """The last lines of the guest console (empty before start and after close)."""
        return _tail(self.console_log, lines) if self._workdir else ""

    def _error(self, what: str) -> GuestError:
        proc = self._proc
        if proc is not None and self._reader_error is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1.0)  # the socket closed: QEMU is most likely on its way out
        state = (
            "not started"
            if proc is None
            else ("running" if proc.poll() is None else f"exited with status {proc.returncode}")
        )
        return GuestError(
            f"{what} (QEMU {state}; timeouts: boot {self.options.boot_timeout_s:g} s)\n"
            f"--- QEMU output ---\n{_tail(self._path('qemu.log'), 20)}\n"
            f"--- guest console (last 40 lines) ---\n{self.console_tail()}"
        )

    def _check_running(self, doing: str) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise self._error(f"QEMU stopped while {doing}")

    def _wait_for(self, ready: Callable[[], bool], deadline: float, what: str) -> None:
        with self._cond:
            while not ready():
                if self._reader_error is not None:
                    raise self._error(f"waiting for {what}: {self._reader_error}")
                self._check_running(f"waiting for {what}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._error(f"timed out waiting for {what}")
                self._cond.wait(timeout=min(remaining, 0.5))

    # -- dumps -------------------------------------------------------------------------------

    def next_dump(self, name: str = "lru_gen", timeout_s: float | None = None) -> Dump:
        """Wait for the next dump of ``name`` that arrives after this call (a live one).

        The default timeout is three dump intervals plus 10 s (TCG is slow).
        """
        if timeout_s is None:
            timeout_s = 3 * self.options.dump_interval_s + 10.0
        since = time.monotonic()
        found: list[Dump] = []

        def arrived() -> bool:
            found[:] = [d for d in self._dumps if d.name == name and d.received_at >= since]
            return bool(found)

        self._wait_for(arrived, since + timeout_s, f"a fresh {name} dump")
        return found[0]

    def latest_dump(self, name: str = "lru_gen") -> Dump | None:
        """The most recent dump of ``name`` received so far, if any."""
        with self._cond:
            return next((d for d in reversed(self._dumps) if d.name == name), None)

    # -- QMP ---------------------------------------------------------------------------------

    def qmp(
        self, command: str, arguments: Mapping[str, object] | None = None, timeout_s: float = 10.0
    ) -> Any:
        """Run one QMP command on the harness's private monitor and return its result."""
        self._check_running(f"sending QMP {command}")
        return asyncio.run(qmp_execute(self._path("harness-qmp.sock"), command, arguments, timeout_s))


async def qmp_execute(
    socket_path: Path, command: str, arguments: Mapping[str, object] | None, timeout_s: float
) -> Any:
    """Connect to a QMP unix socket with ``qemu.qmp``, run one command, disconnect.

    A monitor that is polled in a loop while the balloon moves can hand the next client an event
    left over from the previous connection before its greeting (seen once, in a CI run:
    ``BALLOON_CHANGE`` where ``{"QMP": ...}`` belongs); ``qemu.qmp`` then refuses the session. The
    connection is retried, a few times within ``timeout_s``, for that case only.
    """
    from qemu.qmp import ConnectError, QMPClient  # a dev dependency of the real-VM tests only
    from qemu.qmp.qmp_client import GreetingError

    deadline = asyncio.get_running_loop().time() + timeout_s
    for attempt in range(5):
        client = QMPClient("wsrl-testbed")
        try:
            left_s = max(deadline - asyncio.get_running_loop().time(), 0.1)
            await asyncio.wait_for(client.connect(str(socket_path)), left_s)
            return await asyncio.wait_for(client.execute(command, arguments), timeout_s)
        except ConnectError as exc:
            if not isinstance(exc.exc, GreetingError) or attempt == 4:
                raise
        finally:
            await client.disconnect()
    raise AssertionError("unreachable: the last attempt returns or raises")
