"""Backend calls with a deadline, so that one stalled guest cannot stall the host.

A guest's source can block instead of failing: a QEMU process that is stopped (SIGSTOP, a frozen
host thread) never answers on its QMP socket, a FUSE or NFS-backed file never returns from
``read``, a kernel interface waits on a lock. The runner must keep serving the other guests.

:class:`GuestCalls` runs backend calls on a few shared worker threads. :meth:`GuestCalls.read_all`
starts every guest's read at once and waits for all of them up to one shared deadline; a guest
whose call has not returned by then gets a :class:`~wsrl.backends.base.BackendError` saying so (the
runner masks it like any unreadable guest). The worker stays blocked in that call and a replacement
worker starts; while the call is blocked, further calls to that guest fail at once ("still
blocked"), so a stalled guest never piles up threads or delays a tick again. When the blocked call
finally returns, its result is dropped (it is late), its worker ends, and the guest's next call
runs normally. A guest has at most one call in flight.
"""

from __future__ import annotations

import concurrent.futures as cf
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from wsrl.backends.base import BackendError

T = TypeVar("T")


class _Pool:
    """Daemon worker threads serving one queue of calls; a worker lost to a blocked call is replaced.

    Daemon threads, so that a call blocked forever cannot hold the process at exit (the joined
    threads of :class:`concurrent.futures.ThreadPoolExecutor` would). A few shared workers, not one
    per guest: waking 64 threads per tick costs several times the reads themselves.

    :meth:`abandon` is told when the caller stopped waiting for a call: its worker is stuck, so a
    replacement starts; when the stuck call returns at last, its worker ends (the pool is back to
    its size).
    """

    def __init__(self, size: int, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[cf.Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._abandoned: set[cf.Future[Any]] = set()
        self._name = name
        self._alive = 0
        for _ in range(max(1, size)):
            self._spawn()

    def _spawn(self) -> None:
        self._alive += 1
        threading.Thread(target=self._serve, name=f"{self._name}-{self._alive}", daemon=True).start()

    def _serve(self) -> None:
        while (item := self._calls.get()) is not None:
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to the caller, whatever it is
                future.set_exception(exc)
            with self._lock:
                if future in self._abandoned:  # a replacement took this worker's place meanwhile
                    self._abandoned.discard(future)
                    self._alive -= 1
                    return

    def submit(self, fn: Callable[..., T], *args: Any) -> cf.Future[T]:
        future: cf.Future[T] = cf.Future()
        self._calls.put((future, fn, args))
        return future

    def abandon(self, future: cf.Future[Any]) -> None:
        """The caller gave up on ``future``: if its worker is stuck in it, start a replacement."""
        with self._lock:
            if future.running() and not future.done():
                self._abandoned.add(future)
                self._spawn()

    def stop(self) -> None:
        with self._lock:
            alive = self._alive
        for _ in range(alive):
            self._calls.put(None)


@dataclass
class _Blocked:
    what: str
    since_s: float
    future: cf.Future[Any]


class GuestCalls:
    """Backend calls on a few shared workers, each with a deadline (see the module docstring).

    Args:
        names: the guests' names (for the error messages), in backend order.
        workers: threads serving the calls (a blocked one is replaced while it is blocked).
        monotonic: the clock deadlines are measured on.

    """

    def __init__(
        self,
        names: Sequence[str],
        *,
        workers: int = 4,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.names = list(names)
        self._monotonic = monotonic
        self._pool = _Pool(min(workers, max(len(self.names), 1)), "wsrl-guest-call")
        self._blocked: list[_Blocked | None] = [None] * len(self.names)

    def blocked_for_s(self, index: int) -> float | None:
        """How long guest ``index`` has been blocked in a call (``None``: it is not)."""
        blocked = self._still_blocked(index)
        return None if blocked is None else self._monotonic() - blocked.since_s

    def _still_blocked(self, index: int) -> _Blocked | None:
        blocked = self._blocked[index]
        if blocked is not None and blocked.future.done():
            self._blocked[index] = None  # the stalled call came back: its late result is dropped
            return None
        return blocked

    def _busy_error(self, index: int, what: str) -> BackendError:
        blocked = self._blocked[index]
        assert blocked is not None
        age_s = self._monotonic() - blocked.since_s
        return BackendError(
            f"guest {self.names[index]}: {what} not attempted: still blocked in {blocked.what} "
            f"for {age_s:.0f} s (a stalled source)"
        )

    def _submit(self, index: int, what: str, fn: Callable[..., T], *args: Any) -> cf.Future[T] | BackendError:
        if self._still_blocked(index) is not None:
            return self._busy_error(index, what)
        return self._pool.submit(fn, *args)

    def _collect(
        self, index: int, what: str, future: cf.Future[T], started_s: float, timeout_s: float
    ) -> T | Exception:
        remaining_s = max(started_s + timeout_s - self._monotonic(), 0.0)
        try:
            return future.result(timeout=remaining_s)
        except cf.TimeoutError:
            if future.cancel():  # never started (every worker was stuck elsewhere): nothing blocks here
                return BackendError(
                    f"guest {self.names[index]}: {what} not started within {timeout_s:g} s "
                    "(every worker was busy with stalled calls)"
                )
            self._blocked[index] = _Blocked(what, started_s, future)
            self._pool.abandon(future)
            return BackendError(
                f"guest {self.names[index]}: {what} did not return within {timeout_s:g} s (a stalled source)"
            )
        except Exception as exc:  # the call's own error, handed on as the backend raised it
            return exc

    def call(self, index: int, what: str, fn: Callable[..., T], *args: Any, timeout_s: float) -> T:
        """Run ``fn(*args)`` on guest ``index``'s worker; raise if it fails or outlives ``timeout_s``.

        Raises:
            BackendError: the call timed out, the guest is still blocked in an earlier call, or
                ``fn`` raised a :class:`BackendError`.
            Exception: any other exception ``fn`` raised (a backend bug), as it was raised.

        """
        started_s = self._monotonic()
        submitted = self._submit(index, what, fn, *args)
        if isinstance(submitted, BackendError):
            raise submitted
        result = self._collect(index, what, submitted, started_s, timeout_s)
        if isinstance(result, Exception):
            raise result
        return result

    def read_all(self, what: str, fns: Sequence[Callable[[], T]], *, timeout_s: float) -> list[T | Exception]:
        """Start ``fns[g]()`` for every guest at once; each result or exception, by one shared deadline."""
        started_s = self._monotonic()
        submitted = [self._submit(g, what, fn) for g, fn in enumerate(fns)]
        results: list[T | Exception] = []
        for g, item in enumerate(submitted):
            if isinstance(item, BackendError):
                results.append(item)
                continue
            collected: T | Exception = self._collect(g, what, item, started_s, timeout_s)
            results.append(collected)
        return results

    def close(self) -> None:
        """Stop the workers; a worker still blocked in a call ends with the process (a daemon thread)."""
        self._pool.stop()
