"""What every live backend implements: read one guest's state, apply one target, relax on exit.

A live host is a set of guests, each behind a :class:`GuestBackend` (a memory cgroup, a QEMU VM over
QMP, a crosvm VM, a simulated guest). The runner reads every backend into a
:class:`~wsrl.inputs.live.GuestReading`, assembles the readings into a
:class:`~wsrl.pipeline.snapshot.HostSnapshot` through its :class:`~wsrl.inputs.live.LiveHost` (one
host, guests in config order; the input layer, :mod:`wsrl.inputs`), runs the one control stack, and
hands each guest its target through :meth:`GuestBackend.apply`. Sizes are guest-visible bytes
everywhere: a balloon backend converts to and from balloon sizes itself.

Backends may also push: a QMP ``BALLOON_CHANGE`` event, a guest agent reporting pressure unprompted.
They do so by calling the ``notify`` callback given to :meth:`GuestBackend.start`, which wakes the
runner before its next tick.

Errors: a backend raises :class:`BackendError` (one line, naming the guest and what failed) for
anything it cannot read or apply; the runner keeps serving the other guests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from wsrl.errors import WsrlError
from wsrl.inputs.live import GuestReading

Notify = Callable[[str], None]
"""Called by a backend with a reason (``"balloon_change"``, ``"agent_report"`` ...) to wake the runner."""


class BackendError(WsrlError):
    """A live source or actuator failed (unreachable, malformed, refused)."""


@runtime_checkable
class GuestBackend(Protocol):
    """One guest's source and actuator."""

    name: str

    def start(self, notify: Notify) -> None:
        """Connect; keep ``notify`` to wake the runner on pushed reports."""
        ...

    def read(self) -> GuestReading:
        """The guest's state now. Raises :class:`BackendError`."""
        ...

    def apply(self, target_bytes: int) -> None:
        """Set the guest-visible target. Raises :class:`BackendError`."""
        ...

    def relax(self, target_bytes: int | None) -> None:
        """Leave the guest in a safe state (the configured exit size, or no limit when ``None``)."""
        ...

    def close(self) -> None:
        """Disconnect and release resources (never raises)."""
        ...
