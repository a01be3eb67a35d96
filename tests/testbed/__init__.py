"""Test infrastructure for wsrl's real-component tests (not a test module itself).

* :class:`Testbed` finds what ``scripts/testbed.sh`` installed and cached (``make testbed``): a
  Debian cloud guest kernel with MGLRU, a busybox initramfs (``tests/testbed/guest/``) and QEMU.
  It raises :class:`TestbedMissingError`, with the fix in the message, when something is missing.
* :class:`QemuGuest` boots that guest under QEMU/TCG as a context manager, reads the guest's
  framed ``lru_gen`` / ``lru_gen_full`` dumps from virtio-serial (:meth:`QemuGuest.next_dump`),
  runs QMP commands (:meth:`QemuGuest.qmp`) and leaves :attr:`QemuGuest.qmp_socket` free for the
  code under test; leaving the context always kills QEMU and removes its sockets.

Example::

    with QemuGuest() as guest:
        dump = guest.next_dump("lru_gen")
        guest.qmp("balloon", {"value": 768 * 2**20})
"""

from .artifacts import Testbed, TestbedMissingError
from .frames import Dump, FrameDecoder
from .qemu_guest import (
    BALLOON_ID,
    BALLOON_QOM_PATH,
    SERIAL_PORT_NAME,
    GuestError,
    GuestOptions,
    QemuGuest,
    qmp_execute,
)

__all__ = [
    "BALLOON_ID",
    "BALLOON_QOM_PATH",
    "SERIAL_PORT_NAME",
    "Dump",
    "FrameDecoder",
    "GuestError",
    "GuestOptions",
    "QemuGuest",
    "Testbed",
    "TestbedMissingError",
    "qmp_execute",
]
