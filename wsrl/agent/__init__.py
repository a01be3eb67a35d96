"""Code that runs inside a guest, on the standard library alone, and the pieces the host shares.

The guest agent (:mod:`wsrl.agent.guest_agent`; run it as ``wsrl guest-agent`` or
``python -m wsrl.agent``) streams working-set histograms to the host. Everything here imports only
the standard library and this package, so a guest with nothing but python3 runs it: the wire
format (:mod:`wsrl.agent.wire`), the kernel-file parsers (:mod:`wsrl.agent.parse_lru_gen`,
:mod:`wsrl.agent.parse_wsr`, :mod:`wsrl.agent.kernel_text`) and the integer bins they produce
(:mod:`wsrl.agent.bins`). The host builds on the same code: :mod:`wsrl.formats` and
:mod:`wsrl.histogram` parse and re-bin with it, and :mod:`wsrl.backends.stream_decoder` decodes
the wire format.
"""
