"""Parser for MGLRU's ``/sys/kernel/debug/lru_gen`` and ``lru_gen_full``, as :class:`Histogram` objects.

The format, every rule the parser enforces and the parser itself are
:mod:`wsrl.agent.parse_lru_gen` (standard library only: the guest agent runs the same parser in a
guest). This module turns its result into :class:`~wsrl.histogram.Histogram` objects and its errors
into :class:`~wsrl.errors.ParseError`.

One histogram per (memcg, node), in file order: guest = the memcg path (``memcg:<id>`` when the
path is empty), node = the node id, meta ``{"memcg_id": "<id>"}``. ``options.guest`` and
``options.node`` are not used: the file names both.
"""

from __future__ import annotations

from wsrl.agent.kernel_text import KernelTextError
from wsrl.agent.parse_lru_gen import SOURCE, parse_lru_gen
from wsrl.formats import FormatOptions, histograms_from_bins, parse_error_from
from wsrl.histogram import Histogram


def parse(data: bytes, options: FormatOptions) -> list[Histogram]:
    """Parse an ``lru_gen`` or ``lru_gen_full`` dump.

    Args:
        data: the raw bytes of the dump.
        options: ``page_size_bytes`` converts page counts to bytes (default 4096).

    Returns:
        One histogram per (memcg, node) block, in file order.

    Raises:
        ParseError: the input does not match the format of :mod:`wsrl.agent.parse_lru_gen`.

    """
    try:
        bins = parse_lru_gen(data, options.page_size_bytes)
    except KernelTextError as exc:
        raise parse_error_from(exc) from None
    return histograms_from_bins(SOURCE, bins)
