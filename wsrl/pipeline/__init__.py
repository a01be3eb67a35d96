"""The one control stack shared by training, evaluation and production.

snapshot (:mod:`~wsrl.pipeline.snapshot`) -> observation (:mod:`~wsrl.pipeline.observation`,
learned policies) -> policy (:mod:`~wsrl.pipeline.policy`) -> fair allocation
(:mod:`~wsrl.pipeline.allocator`) -> rails (:mod:`~wsrl.pipeline.rails`), tied together by
:class:`~wsrl.pipeline.control.ControlStack` and configured by one
:class:`~wsrl.pipeline.control.ControlSpec`. Everything works on ``[hosts, guests]`` arrays.
"""
