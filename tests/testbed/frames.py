"""Decode the framed dumps the test guest writes to its virtio-serial port.

The frame format is specified and encoded in production code, :mod:`wsrl.agent.wire`
(``WSRL-DUMP v1`` header, raw dump, ``WSRL-END`` trailer), and decoded by
:mod:`wsrl.backends.stream_decoder`; this
module only narrows its decoder to dumps for the test harness, so the guest, the harness and the
production reader share one definition of the format.
"""

from __future__ import annotations

from wsrl.agent.wire import DEFAULT_MAX_FRAME_BYTES, DUMP_MAGIC, MAX_HEADER_BYTES
from wsrl.agent.wire import dump_trailer as trailer
from wsrl.agent.wire import encode_dump as encode
from wsrl.backends.stream_decoder import Dump, StreamDecoder

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
