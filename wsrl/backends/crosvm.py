"""A crosvm VM as a live guest, through the ``crosvm`` control commands.

:class:`CrosvmBackend` runs the ``crosvm`` binary against the VM's control socket (``crosvm run
--socket PATH``), one short-lived process per request, each bounded by ``timeout_s`` and with its
output capped at ``max_output_bytes``:

* ``crosvm balloon SIZE VM_SOCKET``: sets the BALLOON size to ``SIZE`` bytes (crosvm's
  ``BalloonCommand { num_bytes }``: "Set balloon size of the crosvm instance to SIZE bytes"). The
  backend works in guest-visible bytes like every backend, so it passes
  ``SIZE = ram_bytes - target`` (the target rounded down to a 4 KiB balloon page and clamped to
  the RAM). It prints nothing on success and exits non-zero on failure.
* ``crosvm balloon_stats VM_SOCKET``: prints ``VmResponse::BalloonStats`` as pretty JSON::

      {"BalloonStats": {"stats": {"swap_in": 0, "swap_out": 0, "major_faults": 12,
        "minor_faults": 3400, "free_memory": 800000000, "total_memory": 1020000000,
        "available_memory": 790000000, "disk_caches": 5000000, "hugetlb_allocations": 0,
        "hugetlb_failures": 0, "shared_memory": 0, "unevictable_memory": 0},
        "balloon_actual": 268435456}}

  Every statistic is ``Option<u64>`` (``null`` when the guest did not report it); the set of keys
  grows between crosvm versions, so unknown keys are ignored. ``balloon_actual`` is the balloon's
  size in bytes: guest-visible = ``ram_bytes - balloon_actual``.
* ``crosvm balloon_ws VM_SOCKET``: the working-set histogram, parsed by
  :mod:`wsrl.formats.crosvm` (``bytes`` order per ``bytes_order``). The crosvm maintainers say the
  guest side of this is enabled nowhere, so a failure here is not an error: the reading simply
  has no histogram and says why in ``source``. Pass ``working_set=False`` to not ask, and
  ``agent_socket`` to read histograms from the guest agent's stream instead (see
  :mod:`wsrl.backends.guest_stream`).

The mapping of statistics to a reading is the QEMU backend's (:mod:`wsrl.backends.qemu`):
``usage_bytes`` = ``total_memory - free_memory``; ``refault_total`` = ``major_faults`` (major
faults stand in for refaults in a VM), counted from the first value this backend saw;
``swap_bytes`` = 0 (``swap_in`` / ``swap_out`` are cumulative traffic, not bytes in swap);
``balloon_stalled`` when the visible size has not come closer to the target for ``stall_reads``
reads; ``target_bytes`` the last size this backend set, and before the first the visible size in
force (a restarted runner starts from it, not from the RAM size).

The RAM size is a setting (``ram_bytes``): crosvm's control socket does not report it.

crosvm is not installed on the machines wsrl is developed and tested on: no real crosvm runs in
wsrl's tests. They run this backend against an executable stand-in that records its argv and prints
the output formats above (taken from crosvm's sources and the goldens in ``tests/data/crosvm``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from wsrl.backends.base import BackendError, Notify
from wsrl.backends.guest_stream import GuestStreamReader
from wsrl.backends.vm_common import (
    BALLOON_PAGE_BYTES,
    BalloonStallTracker,
    MonotonicCounter,
    brief_repr,
    page_aligned_target,
    stream_fields,
)
from wsrl.errors import ParseError
from wsrl.formats import FormatOptions
from wsrl.formats import crosvm as crosvm_format
from wsrl.histogram import Histogram
from wsrl.inputs.live import GuestReading
from wsrl.units import MIB

log = logging.getLogger(__name__)

DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024
"""Cap on what one crosvm command may print (its JSON is a few hundred bytes)."""
STATS_KEYS: tuple[str, ...] = (
    "swap_in",
    "swap_out",
    "major_faults",
    "minor_faults",
    "free_memory",
    "total_memory",
    "available_memory",
    "disk_caches",
    "hugetlb_allocations",
    "hugetlb_failures",
    "shared_memory",
    "unevictable_memory",
)
"""``balloon_control::BalloonStats`` fields as of 2024 (older crosvm prints the first ten)."""
_U64_MAX = 2**64 - 1


@dataclass(frozen=True)
class CommandResult:
    """What one crosvm command did."""

    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes


@dataclass(frozen=True)
class BalloonStats:
    """Parsed ``crosvm balloon_stats`` output.

    Attributes:
        stats: the statistics the guest reported (``null`` ones left out), by crosvm's key names.
        balloon_actual_bytes: the balloon's size now, bytes.

    """

    stats: dict[str, int]
    balloon_actual_bytes: int


def parse_balloon_stats(data: bytes) -> BalloonStats:
    """Parse what ``crosvm balloon_stats`` prints (see the module docstring).

    Raises:
        ParseError: not JSON of that shape; the error names the JSON path.

    """
    if len(data) > DEFAULT_MAX_OUTPUT_BYTES:
        raise ParseError(
            "crosvm", "byte 0", "output", f"{len(data)} bytes exceeds {DEFAULT_MAX_OUTPUT_BYTES}"
        )
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ParseError("crosvm", "line 1", "text", f"not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ParseError("crosvm", f"line {exc.lineno} column {exc.colno}", "JSON", exc.msg) from None
    except RecursionError:
        raise ParseError("crosvm", "$", "JSON", "arrays or objects nested too deeply") from None
    except ValueError as exc:  # an integer longer than int() converts (sys.get_int_max_str_digits)
        raise ParseError("crosvm", "$", "JSON", str(exc)[:120]) from None
    if not isinstance(document, dict) or list(document) != ["BalloonStats"]:
        got = f"keys {list(document)}" if isinstance(document, dict) else type(document).__name__
        raise ParseError("crosvm", "$", "response", f'expected {{"BalloonStats": ...}}, got {got}'[:200])
    body = document["BalloonStats"]
    if not isinstance(body, dict) or not isinstance(body.get("stats"), dict):
        raise ParseError("crosvm", "$.BalloonStats", "stats", "expected an object with a 'stats' object")
    actual = body.get("balloon_actual")
    if isinstance(actual, bool) or not isinstance(actual, int) or not 0 <= actual < 2**63:
        raise ParseError(
            "crosvm",
            "$.BalloonStats.balloon_actual",
            "balloon_actual",
            f"expected bytes, got {brief_repr(actual)[:40]}",
        )
    stats: dict[str, int] = {}
    for key, value in body["stats"].items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U64_MAX:
            # The key is crosvm's text: escaped and bounded, so the message stays one line.
            shown = key if key.isidentifier() else json.dumps(key)[:40]
            raise ParseError(
                "crosvm",
                f"$.BalloonStats.stats.{shown}" if key.isidentifier() else f"$.BalloonStats.stats[{shown}]",
                shown,
                f"expected an unsigned integer or null, got {brief_repr(value)[:40]}",
            )
        if value != _U64_MAX:
            stats[str(key)] = value
    return BalloonStats(stats=stats, balloon_actual_bytes=actual)


def run_capped(argv: Sequence[str], timeout_s: float, max_output_bytes: int) -> CommandResult:
    """Run ``argv``, waiting at most ``timeout_s`` and keeping at most ``max_output_bytes`` per stream.

    Raises:
        TimeoutError: it ran longer (it is killed, with its process group).
        OverflowError: it printed more than the cap (it is killed).
        OSError: it could not be started.

    """
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    out = {"stdout": bytearray(), "stderr": bytearray()}
    deadline = time.monotonic() + timeout_s
    problem: BaseException | None = None
    with selectors.DefaultSelector() as selector:
        assert proc.stdout is not None and proc.stderr is not None
        selector.register(proc.stdout, selectors.EVENT_READ, "stdout")
        selector.register(proc.stderr, selectors.EVENT_READ, "stderr")
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                problem = TimeoutError(f"no result within {timeout_s:g} s")
                break
            for key, _ in selector.select(timeout=remaining):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buffer = out[key.data]
                buffer += chunk
                if len(buffer) > max_output_bytes:
                    problem = OverflowError(f"{key.data} exceeded {max_output_bytes} bytes")
                    break
            if problem is not None:
                break
    try:
        if problem is None:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.05))
            except subprocess.TimeoutExpired:
                problem = TimeoutError(f"no exit within {timeout_s:g} s")
        if problem is not None:
            _kill_group(proc)
            raise problem
    finally:
        proc.stdout.close()
        proc.stderr.close()
    return CommandResult(tuple(argv), proc.returncode, bytes(out["stdout"]), bytes(out["stderr"]))


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    try:
        proc.wait(timeout=2.0)
    except subprocess.TimeoutExpired:  # pragma: no cover - a process that survives SIGKILL
        log.error("crosvm command pid %d did not exit after SIGKILL", proc.pid)


class CrosvmBackend:
    """One crosvm VM's balloon and statistics through the ``crosvm`` CLI (see the module docstring).

    Args:
        name: the guest's configured name.
        control_socket: the VM's control socket (``crosvm run --socket``).
        crosvm_bin: the ``crosvm`` executable (a name on ``PATH`` or a path).
        ram_bytes: the VM's RAM (``crosvm run --mem``), the largest guest-visible size.
        timeout_s: the bound on each crosvm command.
        working_set: ask ``balloon_ws`` for a histogram on every read.
        bytes_order: meaning of ``balloon_ws`` ``bytes`` [A, B] (crosvm's own code: file, anon).
        agent_socket: the guest agent's stream socket for histograms (takes precedence over
            ``balloon_ws`` when it has a fresh histogram).
        memcg: memcgs of the guest's lru_gen dumps to merge (stream only; ``None``: all).
        max_output_bytes: cap on a command's output.
        stall_reads: reads without progress before ``balloon_stalled`` is set.
        stall_tolerance_bytes: distance from the target that counts as reached.
        histogram_max_age_s: an older histogram from the stream is not reported.
        edges_ms: bin edges every histogram is re-binned onto when it is read or arrives (the
            runner's, so a tick does no re-binning); ``None`` keeps the source's edges.

    """

    def __init__(
        self,
        name: str,
        control_socket: str | Path,
        *,
        crosvm_bin: str = "crosvm",
        ram_bytes: int,
        timeout_s: float = 5.0,
        working_set: bool = True,
        bytes_order: Literal["file,anon", "anon,file"] = "file,anon",
        agent_socket: str | Path | None = None,
        memcg: str | None = None,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        stall_reads: int = 3,
        stall_tolerance_bytes: int = MIB,
        histogram_max_age_s: float = 30.0,
        edges_ms: Sequence[int] | None = None,
    ) -> None:
        if ram_bytes <= 0:
            raise ValueError("ram_bytes must be positive")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.name = name
        self.control_socket = Path(control_socket)
        self.crosvm_bin = crosvm_bin
        self.ram_bytes = int(ram_bytes)
        self.timeout_s = timeout_s
        self.working_set = working_set
        self.agent_socket = Path(agent_socket) if agent_socket is not None else None
        self.memcg = memcg
        self.max_output_bytes = max_output_bytes
        self.histogram_max_age_s = histogram_max_age_s
        self.edges_ms = None if edges_ms is None else tuple(edges_ms)
        self._format_options = FormatOptions(guest=name, crosvm_bytes_order=bytes_order)
        self._stall = BalloonStallTracker(stall_reads, stall_tolerance_bytes)
        self._major_faults = MonotonicCounter()
        self._target_bytes: int | None = None
        self._stream: GuestStreamReader | None = None
        self._ws_error_logged = False

    def _error(self, what: str) -> BackendError:
        return BackendError(f"crosvm guest {self.name}: control socket {self.control_socket}: {what}")

    def _run(self, *args: str) -> CommandResult:
        """Run ``crosvm ARGS... SOCKET``; any failure is a BackendError naming the command and socket."""
        argv = (self.crosvm_bin, *args, str(self.control_socket))
        command = f"crosvm {args[0]}"
        try:
            result = run_capped(argv, self.timeout_s, self.max_output_bytes)
        except FileNotFoundError:
            raise self._error(f"{command}: executable {self.crosvm_bin!r} not found") from None
        except (TimeoutError, OverflowError, OSError) as exc:
            raise self._error(f"{command}: {exc}") from None
        if result.returncode != 0:
            detail = " ".join(result.stderr.decode("utf-8", "replace").split())[-200:] or "no message"
            raise self._error(f"{command} exited with status {result.returncode}: {detail}")
        return result

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, notify: Notify) -> None:
        """Check the VM answers and start the guest stream reader, if any.

        The ``balloon_stats`` this runs gives the major-fault count the refault total starts from.
        """
        stats = self.balloon_stats()
        if "major_faults" in stats.stats:
            self._major_faults.update(float(stats.stats["major_faults"]))
        if self.agent_socket is not None:
            self._stream = GuestStreamReader(
                self.agent_socket, guest=self.name, memcg=self.memcg, edges_ms=self.edges_ms
            )
            self._stream.start(notify)

    def close(self) -> None:
        """Stop the stream reader (never raises; crosvm commands hold no connection)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    # -- reading -------------------------------------------------------------------------------

    def balloon_stats(self) -> BalloonStats:
        """Run ``crosvm balloon_stats`` and parse it."""
        result = self._run("balloon_stats")
        try:
            return parse_balloon_stats(result.stdout)
        except ParseError as exc:
            raise self._error(f"crosvm balloon_stats: {exc}") from None

    def balloon_ws(self) -> Histogram:
        """Run ``crosvm balloon_ws`` and parse it into one histogram."""
        result = self._run("balloon_ws")
        try:
            return crosvm_format.parse(result.stdout, self._format_options)[0]
        except ParseError as exc:
            raise self._error(f"crosvm balloon_ws: {exc}") from None

    def read(self) -> GuestReading:
        """The VM's state now. Raises BackendError when ``balloon_stats`` fails."""
        stats = self.balloon_stats()
        time_ms = int(time.time() * 1000)
        visible = max(self.ram_bytes - stats.balloon_actual_bytes, 0)
        stalled = self._stall.update(visible)
        source: dict[str, str] = {
            "visible": f"crosvm balloon_stats {self.control_socket}: ram - balloon_actual",
            "stats": " ".join(f"{k}={v}" for k, v in sorted(stats.stats.items())) or "none reported",
        }
        usage = math.nan
        total, free = stats.stats.get("total_memory"), stats.stats.get("free_memory")
        if total is not None and free is not None:
            usage = float(max(total - free, 0))
        if "major_faults" in stats.stats:
            self._major_faults.update(float(stats.stats["major_faults"]))
        sample, psi_avg10, psi_total_s, stream_source = stream_fields(self._stream, self.histogram_max_age_s)
        source.update(stream_source)
        histogram = sample.histogram if sample is not None else None
        if histogram is None and self.working_set:
            histogram = self._read_working_set(source)
        return GuestReading(
            name=self.name,
            time_ms=time_ms,
            visible_bytes=float(visible),
            target_bytes=float(self._target_bytes if self._target_bytes is not None else visible),
            usage_bytes=usage,
            histogram=histogram,
            refault_total=self._major_faults.total,
            swap_bytes=0.0,
            psi_some_total_s=psi_total_s,
            psi_some_avg10=psi_avg10,
            oom_kills_total=0,
            balloon_stalled=stalled,
            self_reported=True,  # the guest's own figures: they protect it only within its share
            source=source,
        )

    def _read_working_set(self, source: dict[str, str]) -> Histogram | None:
        try:
            histogram = self.balloon_ws()
        except BackendError as exc:
            source["histogram"] = f"none: {exc}"
            if not self._ws_error_logged:
                log.warning("%s (further balloon_ws failures are not logged)", exc)
                self._ws_error_logged = True
            return None
        source["histogram"] = f"crosvm balloon_ws {self.control_socket}"
        return histogram if self.edges_ms is None else histogram.rebin(self.edges_ms)

    # -- acting --------------------------------------------------------------------------------

    def apply(self, target_bytes: int) -> None:
        """Set the guest-visible size: ``crosvm balloon (ram_bytes - target) SOCKET``."""
        target = page_aligned_target(self.name, target_bytes, self.ram_bytes)
        full = self.ram_bytes - self.ram_bytes % BALLOON_PAGE_BYTES
        balloon_bytes = 0 if target >= full else self.ram_bytes - target
        self._run("balloon", str(balloon_bytes))
        self._target_bytes = target
        self._stall.set_target(target)

    def relax(self, target_bytes: int | None) -> None:
        """Give the guest ``target_bytes`` (at most its RAM), or all its RAM (balloon 0) for ``None``."""
        self.apply(self.ram_bytes if target_bytes is None else min(int(target_bytes), self.ram_bytes))

    @property
    def stream(self) -> GuestStreamReader | None:
        """The guest stream reader, when ``agent_socket`` was given and the backend started."""
        return self._stream
