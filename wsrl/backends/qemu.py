"""A QEMU VM as a live guest: read it and set its balloon over QMP.

:class:`QemuBackend` talks to one VM's QMP monitor socket (``-qmp unix:PATH,server=on,wait=off``;
a QMP monitor serves one client at a time, so give the backend its own) with the ``qemu.qmp``
library, on a private asyncio event loop running in a background thread: every public method is
synchronous and every wait is bounded by ``timeout_s``.

What it does on the VM:

* :meth:`~QemuBackend.start`: connects, reads the VM's RAM (``query-memory-size-summary``:
  ``base-memory`` + ``plugged-memory``, the provisioned ceiling of the guest-visible size), finds
  the balloon device in the QOM tree (``/machine/peripheral/<id>`` for ``-device
  virtio-balloon-pci,id=<id>``, or ``balloon_qom_path``) and turns on its guest statistics
  (``qom-set guest-stats-polling-interval`` = ``stats_interval_s``, whole seconds), and listens for
  ``BALLOON_CHANGE`` events, each of which calls ``notify("balloon_change")``. With an
  ``agent_socket`` it also starts a :class:`~wsrl.backends.guest_stream.GuestStreamReader` on the
  VM's virtio-serial socket for working-set histograms (its pressure reports call
  ``notify("agent_report")``).
* :meth:`~QemuBackend.apply`: ``balloon`` with ``value`` = the target GUEST-VISIBLE size in bytes
  (QEMU computes the balloon as RAM - value), rounded down to a whole 4 KiB balloon page and
  clamped to the RAM size.
* :meth:`~QemuBackend.relax`: the same with the given size, or the full RAM for ``None``.

How a reading is made (:meth:`~QemuBackend.read`):

=====================  ==========================================================================
``GuestReading``       QEMU source
=====================  ==========================================================================
``visible_bytes``      ``query-balloon`` ``actual`` (RAM minus the balloon, bytes)
``target_bytes``       the last value this backend passed to ``balloon``; before the first, the
                       size in force (``actual``): a restarted runner starts from it
``usage_bytes``        ``stat-total-memory`` - ``stat-free-memory`` (the guest's MemTotal -
                       MemFree: memory in use, page cache included, like ``memory.current``)
``refault_total``      ``stat-major-faults``, counted from the first statistics this backend saw
``psi_some_*``         the guest agent's latest ``psi_some_*`` / pressure record (NaN without one)
``histogram``          the guest stream's latest histogram, if younger than
                       ``histogram_max_age_s``
``balloon_stalled``    ``actual`` has not come closer to the target for ``stall_reads`` reads
``swap_bytes``         0: the balloon statistics only carry cumulative swap traffic
                       (``stat-swap-in`` / ``stat-swap-out``, bytes moved), not bytes in swap
``oom_kills_total``    0: not reported over the balloon
=====================  ==========================================================================

**Major faults stand in for refaults.** A VM's kernel counts refaults (``workingset_refault_*``
in ``/proc/vmstat``) but the virtio balloon does not export them. ``stat-major-faults`` (the
guest's ``pgmajfault``) counts the page faults that had to read a page back from disk or swap:
every refault that faults (a swapped-out anon page, a file page that was evicted and touched
through a mapping) is one, plus first reads of files through mappings, which makes it an upper
bound. File pages read back through ``read()`` are not faults and are missed. The counter is
reported relative to its value at the first statistics this backend saw, so a fresh backend
starts at 0 instead of reporting the guest's whole history as one burst; a guest reboot (the
counter falling) re-bases it so the total never falls. Statistics the guest has not reported yet
(``last-update`` 0) or does not support (2^64 - 1) are left out: ``usage_bytes`` is then NaN.

``notify`` is called on the backend's event-loop thread (and the stream reader's thread): it must
return quickly and must not call back into the backend (set an event, as the runner does).

Errors are :class:`~wsrl.backends.base.BackendError`, one line naming the guest, the QMP socket and
what failed. A dropped QMP connection is reconnected once per call (the guest-stats polling is set
again); a refused command (QMP ``error``) and a timeout are not retried.

``qemu.qmp`` (PyPI ``qemu.qmp``) is imported when the backend starts, so the rest of wsrl runs
without it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from wsrl.backends.base import BackendError, Notify
from wsrl.backends.guest_stream import GuestStreamReader
from wsrl.backends.vm_common import (
    BalloonStallTracker,
    MonotonicCounter,
    brief_repr,
    page_aligned_target,
    stream_fields,
)
from wsrl.inputs.live import GuestReading
from wsrl.units import MIB

log = logging.getLogger(__name__)

U64_MAX = 2**64 - 1
"""What QEMU reports for a guest statistic the guest does not support."""


# -- the event loop thread --------------------------------------------------------------------


class _LoopThread:
    """A private asyncio event loop in a daemon thread; :meth:`run` waits for a coroutine, bounded."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, Any], timeout_s: float) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer within {timeout_s:g} s") from None

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=2.0)
        if not self._thread.is_alive():
            self.loop.close()


def _make_client(name: str, on_event: Callable[[Mapping[str, Any]], None]) -> Any:
    """A ``QMPClient`` that hands every event to ``on_event`` instead of queueing it.

    The library's default event listener keeps every event in a queue and a history list for as
    long as the client lives; a long-running controller must not, so events are dispatched here.
    """
    try:
        from qemu.qmp import QMPClient
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise BackendError(
            f"qemu guest {name}: the QMP library is not installed (pip install qemu.qmp): {exc}"
        ) from None

    class _EventClient(QMPClient):
        async def _event_dispatch(self, msg: Any) -> None:
            on_event(msg)

    return _EventClient(f"wsrl-{name}")


def _qmp_errors() -> tuple[type[BaseException], type[BaseException]]:
    from qemu.qmp import ExecuteError, QMPError

    return ExecuteError, QMPError


@dataclass(frozen=True)
class GuestStats:
    """The balloon's guest statistics at one instant (``qom-get guest-stats``).

    Attributes:
        values: the supported statistics (``stat-*`` keys), unsupported ones left out.
        last_update_s: host time (UNIX seconds) when the guest last reported them.

    """

    values: dict[str, int]
    last_update_s: int


# -- QMP answers to numbers ---------------------------------------------------------------------
# Pure functions of the decoded JSON answer, so they can be checked against any value a VM (or
# something posing as one) sends. Each raises BackendError, one line naming the command.

MAX_MEMORY_BYTES = 2**63 - 1
"""Largest RAM or balloon size accepted from QEMU (QEMU's own sizes are uint64 below 2^63)."""


def _is_size(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_MEMORY_BYTES


def _unexpected(command: str, answer: object) -> BackendError:
    return BackendError(f"{command}: unexpected answer {brief_repr(answer)}")


def parse_memory_size_summary(answer: object) -> int:
    """The VM's RAM in bytes (``base-memory`` + ``plugged-memory``) from ``query-memory-size-summary``.

    Raises:
        BackendError: the answer is not an object with a positive ``base-memory`` and an optional
            ``plugged-memory``, both integers in ``[0, 2^63)``, summing below ``2^63``.

    """
    if not isinstance(answer, Mapping):
        raise _unexpected("query-memory-size-summary", answer)
    base = answer.get("base-memory")
    plugged = answer.get("plugged-memory", 0)
    if not _is_size(base) or not _is_size(plugged) or base <= 0 or base + plugged > MAX_MEMORY_BYTES:
        raise _unexpected("query-memory-size-summary", answer)
    return int(base + plugged)


def parse_query_balloon(answer: object) -> int:
    """``actual`` (the guest-visible size, bytes) from a ``query-balloon`` answer.

    Raises:
        BackendError: not an object with an integer ``actual`` in ``[0, 2^63)``.

    """
    actual = answer.get("actual") if isinstance(answer, Mapping) else None
    if not _is_size(actual):
        raise _unexpected("query-balloon", answer)
    return int(actual)


def parse_guest_stats(answer: object) -> GuestStats | None:
    """The balloon statistics from a ``qom-get guest-stats`` answer; ``None`` before the guest's first report.

    Statistics that are not integers in ``[0, 2^64 - 1)`` (2^64 - 1: not supported by the guest)
    are left out; keys are kept as strings.

    Raises:
        BackendError: not an object with a ``stats`` object.

    """
    if not isinstance(answer, Mapping) or not isinstance(answer.get("stats"), Mapping):
        raise _unexpected("qom-get guest-stats", answer)
    last_update = answer.get("last-update", 0)
    if isinstance(last_update, bool) or not isinstance(last_update, int) or last_update <= 0:
        return None
    values = {
        str(key): int(value)
        for key, value in answer["stats"].items()
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < U64_MAX
    }
    return GuestStats(values=values, last_update_s=last_update)


def find_balloon_child(children: object, container: str) -> str | None:
    """The QOM path of the first virtio-balloon device in a ``qom-list`` answer for ``container``.

    Entries that are not objects with string ``name`` and ``type`` are skipped.
    """
    if not isinstance(children, list):
        return None
    for child in children:
        if not isinstance(child, Mapping):
            continue
        kind, name = child.get("type"), child.get("name")
        is_balloon = isinstance(kind, str) and kind.startswith("child<virtio-balloon")
        if is_balloon and isinstance(name, str) and name:
            return f"{container}/{name}"
    return None


class QemuBackend:
    """One QEMU VM's balloon and statistics over QMP (see the module docstring).

    Args:
        name: the guest's configured name.
        qmp_socket: the VM's QMP unix socket (one used by nothing else).
        agent_socket: the host end of the VM's ``org.wsrl.ws.0`` virtio-serial port, for
            histograms; ``None`` reads no histogram.
        memcg: which memcgs of the guest's lru_gen dumps make the histogram (``None``: all).
        stats_interval_s: guest-stats polling interval (whole seconds, at least 1); 0 leaves
            polling as it is and reads no statistics.
        timeout_s: the bound on every QMP exchange (connecting included).
        balloon_qom_path: QOM path of the balloon device; found by itself when ``None``.
        stall_reads: reads without progress before ``balloon_stalled`` is set.
        stall_tolerance_bytes: distance from the target that counts as reached.
        histogram_max_age_s: an older histogram from the stream is not reported.
        page_size_bytes: the guest's page size (for lru_gen dumps).
        edges_ms: bin edges the stream's histograms are re-binned onto as they arrive (the
            runner's, so a tick does no re-binning); ``None`` keeps the source's edges.

    """

    def __init__(
        self,
        name: str,
        qmp_socket: str | Path,
        *,
        agent_socket: str | Path | None = None,
        memcg: str | None = None,
        stats_interval_s: float = 2.0,
        timeout_s: float = 5.0,
        balloon_qom_path: str | None = None,
        stall_reads: int = 3,
        stall_tolerance_bytes: int = MIB,
        histogram_max_age_s: float = 30.0,
        page_size_bytes: int = 4096,
        edges_ms: Sequence[int] | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.name = name
        self.edges_ms = None if edges_ms is None else tuple(edges_ms)
        self.qmp_socket = Path(qmp_socket)
        self.agent_socket = Path(agent_socket) if agent_socket is not None else None
        self.memcg = memcg
        self.stats_interval_s = stats_interval_s
        self.timeout_s = timeout_s
        self.balloon_qom_path = balloon_qom_path
        self.histogram_max_age_s = histogram_max_age_s
        self.page_size_bytes = page_size_bytes
        self._stall = BalloonStallTracker(stall_reads, stall_tolerance_bytes)
        self._major_faults = MonotonicCounter()
        self._notify: Notify | None = None
        self._loop: _LoopThread | None = None
        self._client: Any = None
        self._lock = threading.RLock()
        self._ram_bytes: int | None = None
        self._target_bytes: int | None = None
        self._stats_path: str | None = None
        self._stream: GuestStreamReader | None = None
        self.events_seen = 0
        """``BALLOON_CHANGE`` events received so far."""
        self.last_event_actual_bytes: int | None = None
        """``actual`` of the latest ``BALLOON_CHANGE`` event."""
        self.reconnects = 0
        """How many times a dropped QMP connection was re-established."""

    # -- small helpers -------------------------------------------------------------------------

    def _error(self, what: str) -> BackendError:
        return BackendError(f"qemu guest {self.name}: QMP socket {self.qmp_socket}: {what}")

    @property
    def ram_bytes(self) -> int:
        """The VM's RAM (base + hot-plugged memory), the largest guest-visible size. Known after start."""
        if self._ram_bytes is None:
            raise self._error("not started")
        return self._ram_bytes

    @property
    def stream(self) -> GuestStreamReader | None:
        """The guest stream reader (when ``agent_socket`` was given and the backend started)."""
        return self._stream

    def _on_event(self, msg: Mapping[str, Any]) -> None:
        """Runs on the event loop thread for every QMP event."""
        if msg.get("event") != "BALLOON_CHANGE":
            return
        data = msg.get("data")
        actual = data.get("actual") if isinstance(data, Mapping) else None
        self.events_seen += 1
        if _is_size(actual):
            self.last_event_actual_bytes = actual
        notify = self._notify
        if notify is not None:
            try:
                notify("balloon_change")
            except Exception:  # the callback must not break the QMP reader
                log.exception("qemu guest %s: notify('balloon_change') failed", self.name)

    # -- connection ----------------------------------------------------------------------------

    def start(self, notify: Notify) -> None:
        """Connect, read the RAM size, enable guest statistics, listen for balloon events."""
        with self._lock:
            if self._loop is not None:
                raise self._error("already started")
            self._notify = notify
            self._loop = _LoopThread(f"wsrl-qmp-{self.name}")
            try:
                self._open_session()
                self._ram_bytes = self._read_ram_bytes()
                self._stats_path = self._find_balloon()
                self._enable_stats()
            except BaseException:
                self.close()
                raise
            if self.agent_socket is not None:
                self._stream = GuestStreamReader(
                    self.agent_socket,
                    guest=self.name,
                    memcg=self.memcg,
                    page_size_bytes=self.page_size_bytes,
                    edges_ms=self.edges_ms,
                )
                self._stream.start(notify)
            log.info(
                "qemu guest %s: connected to %s, RAM %d bytes, balloon stats %s",
                self.name,
                self.qmp_socket,
                self._ram_bytes,
                self._stats_path or "unavailable",
            )

    def _run(self, coro: Coroutine[Any, Any, Any], timeout_s: float | None = None) -> Any:
        if self._loop is None:
            coro.close()
            raise self._error("not started")
        return self._loop.run(coro, (timeout_s or self.timeout_s) + 1.0)

    def _open_session(self) -> None:
        """Connect a fresh client (the old one, if any, is dropped first)."""
        self._drop_client()
        timeout_s = self.timeout_s
        on_event = self._on_event

        async def connect() -> Any:
            client = _make_client(self.name, on_event)
            try:
                await asyncio.wait_for(client.connect(str(self.qmp_socket)), timeout_s)
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.disconnect(), timeout_s)
                raise
            return client

        try:
            self._client = self._run(connect())
        except BackendError:
            raise
        except Exception as exc:  # OSError, TimeoutError, any QMPError: all mean "cannot connect"
            raise self._error(f"cannot connect: {_describe(exc)}") from None

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is None or self._loop is None:
            return

        async def disconnect() -> None:
            await asyncio.wait_for(client.disconnect(), self.timeout_s)

        with contextlib.suppress(Exception):
            self._run(disconnect())

    def _execute(self, command: str, arguments: Mapping[str, object] | None = None) -> Any:
        """Run one QMP command; reconnect once if the connection dropped."""
        execute_error, qmp_error = _qmp_errors()
        timeout_s = self.timeout_s
        with self._lock:
            for attempt in (1, 2):
                client = self._client
                try:
                    if client is None:
                        raise ConnectionError("not connected")

                    async def call(client: Any = client) -> Any:
                        return await asyncio.wait_for(client.execute(command, arguments), timeout_s)

                    return self._run(call())
                except execute_error as exc:
                    raise self._error(f"{command} refused: {_describe(exc)}") from None
                except TimeoutError as exc:
                    self._drop_client()  # the next call starts from a fresh connection
                    raise self._error(f"{command}: {_describe(exc)}") from None
                except (qmp_error, OSError, EOFError) as exc:
                    self._drop_client()
                    if attempt == 2:
                        raise self._error(
                            f"{command} failed again after reconnecting: {_describe(exc)}"
                        ) from None
                    log.warning(
                        "qemu guest %s: QMP connection to %s lost (%s); reconnecting",
                        self.name,
                        self.qmp_socket,
                        _describe(exc),
                    )
                    self._open_session()  # raises BackendError naming the socket when it cannot
                    self.reconnects += 1
                    if self._stats_path is not None:
                        self._enable_stats()
            raise AssertionError("unreachable")

    # -- setup ---------------------------------------------------------------------------------

    def _read_ram_bytes(self) -> int:
        answer = self._execute("query-memory-size-summary")
        try:
            return parse_memory_size_summary(answer)
        except BackendError as exc:
            raise self._error(str(exc)) from None

    def _find_balloon(self) -> str | None:
        """The balloon device's QOM path (``None`` when the VM has none with statistics)."""
        if self.balloon_qom_path is not None:
            return self.balloon_qom_path
        for container in ("/machine/peripheral", "/machine/peripheral-anon"):
            try:
                children = self._execute("qom-list", {"path": container})
            except BackendError as exc:
                log.debug("qemu guest %s: %s", self.name, exc)
                continue
            found = find_balloon_child(children, container)
            if found is not None:
                return found
        log.warning("qemu guest %s: no virtio-balloon device in the QOM tree: no guest statistics", self.name)
        return None

    def _enable_stats(self) -> None:
        if self._stats_path is None or self.stats_interval_s <= 0:
            return
        interval_s = max(1, math.ceil(self.stats_interval_s))
        self._execute(
            "qom-set",
            {"path": self._stats_path, "property": "guest-stats-polling-interval", "value": interval_s},
        )

    # -- reading -------------------------------------------------------------------------------

    def guest_stats(self) -> GuestStats | None:
        """The balloon's guest statistics, or ``None`` before the guest's first report."""
        if self._stats_path is None or self.stats_interval_s <= 0:
            return None
        answer = self._execute("qom-get", {"path": self._stats_path, "property": "guest-stats"})
        try:
            return parse_guest_stats(answer)
        except BackendError as exc:
            raise self._error(str(exc)) from None

    def balloon_actual_bytes(self) -> int:
        """``query-balloon`` ``actual``: the guest-visible size now, bytes."""
        answer = self._execute("query-balloon")
        try:
            return parse_query_balloon(answer)
        except BackendError as exc:
            raise self._error(str(exc)) from None

    def read(self) -> GuestReading:
        """The VM's state now (see the table in the module docstring). Raises BackendError."""
        with self._lock:
            actual = self.balloon_actual_bytes()
            stats = self.guest_stats()
            stalled = self._stall.update(actual)
            time_ms = int(time.time() * 1000)
        source: dict[str, str] = {"visible": f"qmp query-balloon {self.qmp_socket}"}
        usage = math.nan
        if stats is None:
            source["stats"] = (
                "guest-stats: none reported yet" if self._stats_path else "guest-stats: no balloon"
            )
        else:
            total = stats.values.get("stat-total-memory")
            free = stats.values.get("stat-free-memory")
            if total is not None and free is not None:
                usage = float(max(total - free, 0))
            faults = stats.values.get("stat-major-faults")
            if faults is not None:
                self._major_faults.update(float(faults))
            source["stats"] = (
                f"guest-stats updated {max(time.time() - stats.last_update_s, 0):.0f}s ago: "
                + " ".join(f"{k}={v}" for k, v in sorted(stats.values.items()))
            )
        sample, psi_avg10, psi_total_s, stream_source = stream_fields(self._stream, self.histogram_max_age_s)
        source.update(stream_source)
        return GuestReading(
            name=self.name,
            time_ms=time_ms,
            visible_bytes=float(actual),
            target_bytes=float(self._target_bytes if self._target_bytes is not None else actual),
            usage_bytes=usage,
            histogram=sample.histogram if sample is not None else None,
            refault_total=self._major_faults.total,
            swap_bytes=0.0,
            psi_some_total_s=psi_total_s,
            psi_some_avg10=psi_avg10,
            oom_kills_total=0,
            balloon_stalled=stalled,
            self_reported=True,  # the guest's own figures: they protect it only within its share
            source=source,
        )

    # -- acting --------------------------------------------------------------------------------

    def apply(self, target_bytes: int) -> None:
        """Set the guest-visible size to ``target_bytes`` (page-aligned down, at most the RAM)."""
        with self._lock:
            value = page_aligned_target(self.name, target_bytes, self.ram_bytes)
            self._execute("balloon", {"value": value})
            self._target_bytes = value
            self._stall.set_target(value)

    def relax(self, target_bytes: int | None) -> None:
        """Give the guest ``target_bytes`` (at most its RAM), or all its RAM for ``None``."""
        self.apply(self.ram_bytes if target_bytes is None else min(int(target_bytes), self.ram_bytes))

    def close(self) -> None:
        """Stop the stream reader, disconnect and stop the event loop (never raises)."""
        with self._lock:
            stream, self._stream = self._stream, None
            if stream is not None:
                stream.close()
            with contextlib.suppress(Exception):
                self._drop_client()
            loop, self._loop = self._loop, None
            if loop is not None:
                loop.stop()


def _describe(exc: BaseException) -> str:
    """One line: the exception's class and message."""
    text = " ".join(str(exc).split()) or "no detail"
    return f"{type(exc).__name__}: {text}"[:300]
