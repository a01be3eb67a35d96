"""The production runner: reads live guests, runs the shared pipeline and the safety rails, applies.

:mod:`~wsrl.runner.config` reads ``host.toml``; :mod:`~wsrl.runner.daemon` holds the
:class:`~wsrl.runner.daemon.Runner` (one tick: read -> snapshot -> policy -> allocator -> guard ->
rails -> apply); :mod:`~wsrl.runner.safety` holds the rails, each a small function or class on
``[1, guests]`` arrays that records why it changed a value; :mod:`~wsrl.runner.audit`,
:mod:`~wsrl.runner.metrics` and :mod:`~wsrl.runner.recorder` write the JSONL audit log, the
Prometheus metrics and the trace. ``docs/runner.md`` is the operator's guide. Nothing here imports
torch: learned policies run through onnxruntime.
"""
