"""What the kernel-file parsers share: their error, text decoding and strict decimal integers.

Standard library only (the parsers run inside a guest too). :mod:`wsrl.formats` turns a
:class:`KernelTextError` into a :class:`wsrl.errors.ParseError` with the same four parts.
"""

from __future__ import annotations

MAX_INPUT_BYTES = 64 * 1024 * 1024
"""Largest capture a parser accepts: a real dump is kilobytes; a giant file is refused, not read."""

MAX_DIGITS = 20
"""Digits of the longest counter the kernel prints (2**64 - 1): a longer token is out of range."""


class KernelTextError(Exception):
    """A kernel file does not read as its format says: ``source: location: field: reason``.

    :class:`wsrl.errors.ParseError` (what the host's parsers raise) is one too.

    Attributes:
        source: the format (``lru_gen``, ``wsr``).
        location: where in the input (``line 12``).
        field: the field that is wrong.
        reason: what is wrong with it.

    """

    def __init__(self, source: str, location: str, field: str, reason: str) -> None:
        self.source = source
        self.location = location
        self.field = field
        self.reason = reason
        super().__init__(f"{source}: {location}: {field}: {reason}")


def decode_lines(source: str, data: bytes) -> list[str]:
    """Decode a text capture as ASCII/UTF-8 and split it into lines, or raise a KernelTextError."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise KernelTextError(source, f"line {line}", "text", f"not UTF-8 text (byte {exc.start})") from None
    return text.splitlines()


def parse_uint(source: str, token: str, location: str, field_name: str, max_value: int) -> int:
    """A plain decimal integer in [0, max_value], or a KernelTextError saying what is wrong."""
    if not token.isascii() or not token.isdigit():
        if token.startswith("-") and token[1:].isascii() and token[1:].isdigit():
            raise KernelTextError(source, location, field_name, f"{token!r} is negative")
        raise KernelTextError(source, location, field_name, f"{token!r} is not a decimal integer")
    if len(token.lstrip("0")) > MAX_DIGITS or int(token) > max_value:
        raise KernelTextError(source, location, field_name, f"{token} is out of range [0, {max_value}]")
    return int(token)
