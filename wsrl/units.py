"""Byte and time units, and durations as people write them (``90s``, ``15m``, ``6h``, ``1h30m``)."""

from __future__ import annotations

import math
import re

KIB = 1024
MIB = 1024**2
GIB = 1024**3
PAGE_BYTES = 4096
"""Base page size of x86-64 and arm64 kernels: the unit of refault and fault counters."""

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_SECONDS_PER_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration_s(text: str | float | int) -> float:
    """Seconds in a duration: a number of seconds, or ``90s``, ``15m``, ``6h``, ``2d``, ``1w``, ``1h30m``.

    Raises:
        ValueError: not a positive, finite duration in one of those forms (the message says which
            forms are accepted).

    """
    if isinstance(text, bool):
        raise ValueError(f"cannot read duration {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        cleaned = text.strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(?:\.\d+)?", cleaned):
            value = float(cleaned)
        elif cleaned and _DURATION_PART.sub("", cleaned) == "":
            value = sum(float(n) * _SECONDS_PER_UNIT[u] for n, u in _DURATION_PART.findall(cleaned))
        else:
            raise ValueError(f"cannot read duration {text!r}: use seconds or e.g. 90s, 15m, 6h, 2d, 1h30m")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"duration must be positive, got {text!r}")
    return value
