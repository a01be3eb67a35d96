"""Change notifications of kernfs files (sysfs, cgroup v1 and v2): :class:`KernfsWatcher`.

The cgroup backend watches the working-set reporting patches' ``memory.workingset.page_age`` with
it (see :mod:`wsrl.backends.cgroup`, **WSR push**); it works on any kernfs file that the kernel
signals, such as ``cgroup.events``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import stat
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from wsrl.backends.cgroup_files import MAX_FILE_BYTES, nofollow_error

KERNFS_MAGICS: dict[int, str] = {0x62656572: "sysfs", 0x27E0EB: "cgroup", 0x63677270: "cgroup2"}
"""``statfs`` magic numbers of the kernfs-backed file systems, whose files can signal changes."""


def kernfs_type(fd: int) -> str | None:
    """The kernfs file system (``sysfs``, ``cgroup``, ``cgroup2``) an open file is on, else None."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct statfs is 120 bytes on 64-bit Linux
        if libc.fstatfs(fd, buf) != 0:
            return None
    except (OSError, AttributeError):
        return None
    f_type = int.from_bytes(buf.raw[: ctypes.sizeof(ctypes.c_long)], sys.byteorder) & 0xFFFFFFFF
    return KERNFS_MAGICS.get(f_type)


KERNFS_RECHECK_MS = 1000
"""How often a quiet kernfs watcher checks that its file still exists, ms."""


class KernfsWatcher:
    """Calls ``on_change`` each time the kernel signals a change of one kernfs file.

    kernfs files (sysfs, cgroup v1 and v2) can wake readers through ``kernfs_notify`` (cgroup
    files through ``cgroup_file_notify``): ``cgroup.events``, ``memory.events`` and, on kernels
    with the working-set reporting patches, ``memory.workingset.page_age``. A reader sees the
    change as ``POLLPRI | POLLERR`` from ``poll()`` once it has read the file after opening it,
    and re-arms by reading it again (kernfs compares an event counter with the one seen at the
    last read). :meth:`start` opens and reads the file (so a change right after ``start`` is not
    missed) and starts a daemon thread that polls the file and a stop pipe; on each wake it
    re-reads the file from the start (bounded by ``cap_bytes``) and calls ``on_change()``.

    A file that is missing, is a symlink, is not a regular file or is not on kernfs is not
    watched: :meth:`start` returns why and no thread runs (a regular file on another file system
    never signals, so polling it would only park a thread). The thread ends on :meth:`stop`, or
    when the file cannot be read any more (its cgroup was removed): :attr:`ended_because` says why.
    An exception from ``on_change`` is kept in :attr:`ended_because` and ends the watch.

    Args:
        path: the kernfs file.
        on_change: called from the watcher thread after each signalled change.
        cap_bytes: most bytes read from the file on each re-read.
        thread_name: the watcher thread's name.

    """

    def __init__(
        self,
        path: str | Path,
        on_change: Callable[[], None],
        *,
        cap_bytes: int = MAX_FILE_BYTES,
        thread_name: str = "wsrl-kernfs-watch",
    ) -> None:
        self.path = Path(path)
        self.on_change = on_change
        self.cap_bytes = cap_bytes
        self.thread_name = thread_name
        self.wakeups = 0
        """Changes signalled so far (``on_change`` calls)."""
        self.ended_because: str | None = None
        self._fd: int | None = None
        self._stop_r: int | None = None
        self._stop_w: int | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Whether the watcher thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> str:
        """Open, read and start watching the file; returns what happened, in words.

        Returns ``"watching <path> (<fs>)"`` when the thread runs, otherwise why not (missing,
        not regular, not on kernfs). Never raises for those; :attr:`running` tells.
        """
        if self._thread is not None:
            return f"already watching {self.path}"
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            reason = "missing" if exc.errno == errno.ENOENT else (nofollow_error(exc).strerror or str(exc))
            return f"not watching {self.path}: {reason}"
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            fs = kernfs_type(fd)
            if fs is None:
                raise OSError(errno.EOPNOTSUPP, "not on kernfs (sysfs, cgroup): it never signals")
            self._drain(fd)
            self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            os.close(fd)
            return f"not watching {self.path}: {exc.strerror or exc}"
        self._fd = fd
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        return f"watching {self.path} ({fs})"

    def stop(self, timeout_s: float = 5.0) -> None:
        """End the thread (waits up to ``timeout_s``) and close the file; never raises."""
        thread, self._thread = self._thread, None
        if self._stop_w is not None:
            with contextlib.suppress(OSError):
                os.write(self._stop_w, b"x")
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
        for fd in (self._fd, self._stop_r, self._stop_w):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._stop_r = self._stop_w = None

    def _drain(self, fd: int) -> None:
        """Read the file from the start (at most ``cap_bytes``): what re-arms kernfs's signal."""
        os.lseek(fd, 0, os.SEEK_SET)
        total = 0
        while total <= self.cap_bytes:
            chunk = os.read(fd, min(64 * 1024, self.cap_bytes + 1 - total))
            if not chunk:
                return
            total += len(chunk)

    def _run(self) -> None:
        fd, stop_r = self._fd, self._stop_r
        assert fd is not None and stop_r is not None
        poller = select.poll()
        poller.register(fd, select.POLLPRI | select.POLLERR)
        poller.register(stop_r, select.POLLIN)
        while True:
            try:
                # A timeout, so that a removal whose wake-up came before this thread first polled
                # (a race seen under load) is still noticed by the existence check below.
                events = poller.poll(KERNFS_RECHECK_MS)
            except InterruptedError:
                continue
            except OSError as exc:
                self.ended_because = f"poll failed: {exc}"
                return
            if not events:
                if not os.path.exists(self.path):
                    self.ended_because = f"{self.path} unreadable (it is gone): was it removed?"
                    return
                continue
            if any(ready == stop_r for ready, _ in events):
                self.ended_because = "stopped"
                return
            flags = 0
            for ready, mask in events:
                if ready == fd:
                    flags |= mask
            if flags & (select.POLLNVAL | select.POLLHUP):
                self.ended_because = f"{self.path} closed under the watcher"
                return
            if not flags & (select.POLLPRI | select.POLLERR):
                continue
            try:
                self._drain(fd)
            except OSError as exc:
                self.ended_because = f"{self.path} unreadable ({exc.strerror or exc}): was it removed?"
                return
            self.wakeups += 1
            try:
                self.on_change()
            except Exception as exc:  # the thread must end cleanly, keeping the reason
                self.ended_because = f"on_change raised {type(exc).__name__}: {exc}"
                return
