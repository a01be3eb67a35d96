"""The production runner: reads live guests, decides through the one control stack, applies.

:mod:`~wsrl.runner.config` reads ``host.toml`` (and maps it onto a
:class:`~wsrl.pipeline.control.ControlSpec`); :mod:`~wsrl.runner.daemon` holds the
:class:`~wsrl.runner.daemon.Runner` (one tick: read -> input health -> snapshot -> the control
stack: policy, fallback, allocator, rails -> apply); :mod:`~wsrl.runner.safety` and
:mod:`~wsrl.runner.guest_state` judge the readings; :mod:`~wsrl.runner.actuation` applies;
:mod:`~wsrl.runner.audit`,
:mod:`~wsrl.runner.metrics` and :mod:`~wsrl.runner.recorder` write the JSONL audit log, the
Prometheus metrics and the trace. ``docs/runner.md`` is the operator's guide. Nothing here imports
torch: learned policies run through onnxruntime.
"""
