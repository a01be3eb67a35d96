"""The trace store: a host's guests over time, on disk (Parquet), versioned and crash-safe.

The names below load on first use: the production runner only writes traces, and the reader pulls
in ``pyarrow.dataset`` (and with it pandas, ~100 MB) which a writer does not need.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SCHEMA_VERSION": "wsrl.trace.schema",
    "TRACE_SCHEMA": "wsrl.trace.schema",
    "GuestSample": "wsrl.trace.record",
    "TraceReader": "wsrl.trace.reader",
    "TraceSummary": "wsrl.trace.reader",
    "TraceWriter": "wsrl.trace.writer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'wsrl.trace' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
