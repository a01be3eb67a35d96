"""The control pipeline shared by simulation, trace evaluation and production.

snapshot (:mod:`~wsrl.pipeline.snapshot`) -> policy (:mod:`~wsrl.pipeline.policy`) -> fair
allocation (:mod:`~wsrl.pipeline.allocator`) -> guard (:mod:`~wsrl.pipeline.guard`), tied together
by :class:`~wsrl.pipeline.loop.ControlLoop`. Everything works on ``[hosts, guests]`` arrays.
"""
