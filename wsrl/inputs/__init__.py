"""The input layer: every way a host's state reaches the control stack, as one kind of snapshot.

An input is named by a typed reference parsed once at the edge (:mod:`wsrl.inputs.ref`:
a scenario, or a trace directory as ``traces:DIR``), and set up for the simulator by
:mod:`wsrl.inputs.setup`. Whatever the input, the control stack sees a
:class:`~wsrl.pipeline.snapshot.HostSnapshot` from one interface,
:class:`~wsrl.inputs.source.SnapshotSource`:

============================  ===========================================  ==========================
module                        source                                       used by
============================  ===========================================  ==========================
:mod:`wsrl.inputs.simulated`  :class:`SimulatedHost`: a simulator's hosts  ``wsrl eval``, training,
                                                                           decision recording
:mod:`wsrl.inputs.replay`     :class:`TraceHost`: one host of a trace      behaviour-cloning datasets
:mod:`wsrl.inputs.live`       :class:`LiveHost`: a live host's readings    ``wsrl run``
============================  ===========================================  ==========================

Layer (``[tool.importlinter]`` in ``pyproject.toml``, ``docs/layers.md``): above
:mod:`wsrl.pipeline`, :mod:`wsrl.sim` and :mod:`wsrl.trace`; below :mod:`wsrl.backends` (which
produces the live readings) and :mod:`wsrl.policies`. Those and everything above them may import
it; it imports none of them.
"""
