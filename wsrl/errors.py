"""Typed errors for wsrl.

Every error a user can cause (a malformed file, a bad flag, an invalid trace) is a subclass of
:class:`WsrlError`. The CLI turns these into one line on stderr and exit status 2; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

from wsrl.agent.kernel_text import KernelTextError


class WsrlError(Exception):
    """Base class of every user-facing wsrl error."""


class ParseError(WsrlError, KernelTextError):
    """A working-set source produced input that does not match its documented format.

    Also a :class:`~wsrl.agent.kernel_text.KernelTextError`, the error of the standard-library
    parsers the guest agent shares with the host (the same four parts).

    Attributes:
        source: the format name (``wsr``, ``lru_gen``, ``crosvm``, ``virtio``, ``damon``).
        location: where in the input: ``line N`` for text, ``byte N`` or ``record N`` for binary,
            a JSON path for JSON. May name a file too (``page_age line 3``).
        field: the field that is wrong (``bin label``, ``anon pages``, ...).
        reason: what is wrong with it.

    """

    def in_file(self, path: str) -> ParseError:
        """Return the same error with the file name put in front of its location."""
        return ParseError(self.source, f"{path}: {self.location}", self.field, self.reason)


class HistogramError(WsrlError):
    """A histogram was built or combined with inconsistent edges, types or byte counts."""


class TraceError(WsrlError):
    """A trace directory or file is missing, malformed or does not match the schema."""


class ImportDataError(WsrlError):
    """A source data set being imported into the trace store is unusable."""


class ConfigError(WsrlError):
    """A workload or scenario file (or a config built in code) is malformed or inconsistent.

    Attributes:
        path: the file the problem is in (``<config>`` when there is no file).
        problems: ``(location, reason)`` pairs; a location is a dotted key path such as
            ``guest[2].provisioned_gib``, ``line 3, column 5`` for TOML syntax, or ``""`` for the
            whole file.

    """

    def __init__(self, path: str, problems: list[tuple[str, str]]) -> None:
        self.path = path
        self.problems = list(problems)
        parts = [f"{path}: {loc}: {reason}" if loc else f"{path}: {reason}" for loc, reason in self.problems]
        super().__init__("; ".join(parts))
