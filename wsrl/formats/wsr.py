"""Parser for the working-set reporting (WSR) patches' ``page_age`` files, as :class:`Histogram` objects.

The format, every rule the parser enforces and the parser itself are :mod:`wsrl.agent.parse_wsr`
(standard library only: the guest agent runs the same parser in a guest). This module turns its
result into :class:`~wsrl.histogram.Histogram` objects and its errors into
:class:`~wsrl.errors.ParseError`.

The guest is ``options.guest`` (the CLI passes the file stem), or ``"memcg"``; a file without
``N<id>`` headers is one block of node ``options.node`` (0 when unset).
"""

from __future__ import annotations

from wsrl.agent.kernel_text import KernelTextError
from wsrl.agent.parse_wsr import SOURCE, parse_wsr
from wsrl.formats import FormatOptions, histograms_from_bins, parse_error_from
from wsrl.histogram import Histogram


def parse(data: bytes, options: FormatOptions) -> list[Histogram]:
    """Parse a ``memory.workingset.page_age`` or ``nodeN/workingset_report/page_age`` capture.

    Args:
        data: the raw bytes of the file.
        options: ``guest`` names the histograms (default ``"memcg"``); ``node`` is the node of a
            capture without ``N<id>`` headers (default 0).

    Returns:
        One histogram per node block, in file order.

    Raises:
        ParseError: the input does not match the format of :mod:`wsrl.agent.parse_wsr`.

    """
    try:
        bins = parse_wsr(data, options.guest, options.node)
    except KernelTextError as exc:
        raise parse_error_from(exc) from None
    return histograms_from_bins(SOURCE, bins)
