"""Decode the framed dumps the test guest writes to its virtio-serial port.

A frame is byte exact: the header line gives the length of the raw dump that follows, then a
trailer line repeats the sequence number and name::

    WSRL-DUMP v1 seq=SEQ name=NAME len=LEN uptime=SECONDS\\n
    <LEN raw bytes, as the guest kernel printed them>
    WSRL-END seq=SEQ name=NAME\\n

A host that connects mid-stream, or a guest write cut short, leaves partial frames: the decoder
skips to the next header and drops any frame whose trailer does not match, counting what it drops.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAGIC = b"WSRL-DUMP v1 "
_HEADER = re.compile(rb"WSRL-DUMP v1 seq=(\d+) name=([A-Za-z0-9_.-]+) len=(\d+) uptime=([0-9.]+)\n")
MAX_HEADER_BYTES = 256
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Dump:
    """One dump read from the guest.

    Attributes:
        seq: the guest's dump round (the same for every file dumped in one round).
        name: the file dumped (``lru_gen``, ``lru_gen_full``).
        uptime_s: guest uptime when the dump was taken.
        data: the file's bytes, exactly as the kernel printed them.
        received_at: host ``time.monotonic()`` when the frame was complete.

    """

    seq: int
    name: str
    uptime_s: float
    data: bytes
    received_at: float


def trailer(seq: int, name: str) -> bytes:
    """The trailer line that closes frame ``seq`` of ``name``."""
    return b"WSRL-END seq=%d name=%s\n" % (seq, name.encode())


def encode(seq: int, name: str, data: bytes, uptime_s: float = 0.0) -> bytes:
    """Build a frame the way the guest does (for tests of the decoder)."""
    header = b"WSRL-DUMP v1 seq=%d name=%s len=%d uptime=%.2f\n" % (
        seq,
        name.encode(),
        len(data),
        uptime_s,
    )
    return header + data + trailer(seq, name)


class FrameDecoder:
    """Incremental decoder: :meth:`feed` it bytes as they arrive, get back complete frames."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._buf = bytearray()
        self._max_frame_bytes = max_frame_bytes
        self.dropped_bytes = 0
        """Bytes skipped while looking for a header (partial frames, noise)."""
        self.bad_frames = 0
        """Frames dropped for a malformed header, an oversize length or a wrong trailer."""

    def feed(self, data: bytes, now: float) -> list[Dump]:
        """Add ``data`` received at host time ``now``; return the frames it completed, in order."""
        self._buf += data
        frames: list[Dump] = []
        while (frame := self._next_frame(now)) is not None:
            frames.append(frame)
        return frames

    def _skip(self, count: int) -> None:
        del self._buf[:count]
        self.dropped_bytes += count

    def _reject(self) -> None:
        """Drop one byte of a bad frame's magic so the search moves on to the next header."""
        self.bad_frames += 1
        self._skip(1)

    def _next_frame(self, now: float) -> Dump | None:
        """Take one complete frame off the buffer, or return None when more bytes are needed."""
        while True:
            start = self._buf.find(MAGIC)
            if start < 0:
                keep = len(MAGIC) - 1
                if len(self._buf) > keep:
                    self._skip(len(self._buf) - keep)
                return None
            self._skip(start)
            newline = self._buf.find(b"\n", 0, MAX_HEADER_BYTES)
            if newline < 0:
                if len(self._buf) >= MAX_HEADER_BYTES:
                    self._reject()
                    continue
                return None
            match = _HEADER.fullmatch(bytes(self._buf[: newline + 1]))
            if match is None or int(match.group(3)) > self._max_frame_bytes:
                self._reject()
                continue
            seq, name = int(match.group(1)), match.group(2).decode()
            length = int(match.group(3))
            body_start = newline + 1
            closing = trailer(seq, name)
            end = body_start + length + len(closing)
            if len(self._buf) < end:
                return None
            if bytes(self._buf[body_start + length : end]) != closing:
                self._reject()
                continue
            dump = Dump(
                seq=seq,
                name=name,
                uptime_s=float(match.group(4)),
                data=bytes(self._buf[body_start : body_start + length]),
                received_at=now,
            )
            del self._buf[:end]
            return dump
