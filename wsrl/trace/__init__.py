"""The trace store: a host's guests over time, on disk (Parquet), versioned and crash-safe."""

from wsrl.trace.reader import TraceReader, TraceSummary
from wsrl.trace.record import GuestSample
from wsrl.trace.schema import SCHEMA_VERSION, TRACE_SCHEMA
from wsrl.trace.writer import TraceWriter

__all__ = ["SCHEMA_VERSION", "TRACE_SCHEMA", "GuestSample", "TraceReader", "TraceSummary", "TraceWriter"]
