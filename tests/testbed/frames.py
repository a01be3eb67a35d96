"""Decode the framed dumps the test guest writes to its virtio-serial port.

The frame format is specified, encoded and decoded in production code,
:mod:`wsrl.backends.guest_stream` (``WSRL-DUMP v1`` header, raw dump, ``WSRL-END`` trailer); this
module only narrows its decoder to dumps for the test harness, so the guest, the harness and the
production reader share one definition of the format.
"""

from __future__ import annotations

from wsrl.backends.guest_stream import (
    DEFAULT_MAX_FRAME_BYTES,
    DUMP_MAGIC,
    MAX_HEADER_BYTES,
    Dump,
    StreamDecoder,
)
from wsrl.backends.guest_stream import dump_trailer as trailer
from wsrl.backends.guest_stream import encode_dump as encode

MAGIC = DUMP_MAGIC

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "MAGIC",
    "MAX_HEADER_BYTES",
    "Dump",
    "FrameDecoder",
    "encode",
    "trailer",
]


class FrameDecoder(StreamDecoder):
    """The production stream decoder, returning only the framed dumps (records are dropped)."""

    def feed(self, data: bytes, now: float) -> list[Dump]:  # type: ignore[override]
        """Add ``data`` received at host time ``now``; return the dumps it completed, in order."""
        return [unit for unit in super().feed(data, now) if isinstance(unit, Dump)]
