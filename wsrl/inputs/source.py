"""The one interface of every input: a host whose state now is a :class:`HostSnapshot`.

Three sources implement it, one per kind of input, and the control stack
(:class:`wsrl.pipeline.control.ControlStack`) cannot tell them apart:

* :class:`wsrl.inputs.simulated.SimulatedHost`: the simulator's hosts (evaluation, training,
  behaviour-cloning recording); time moves when the caller steps the simulator with its targets;
* :class:`wsrl.inputs.replay.TraceHost`: one host of a recorded trace (behaviour-cloning datasets,
  replay checks); time moves with :meth:`~wsrl.inputs.replay.TraceHost.advance` through the samples,
  whatever was decided (the recording's consequences are fixed);
* :class:`wsrl.inputs.live.LiveHost`: a live host's guests (the production runner); time moves when
  the runner hands it the readings of a new tick (reading, with deadlines, is the runner's I/O).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from wsrl.pipeline.snapshot import HostSnapshot


@runtime_checkable
class SnapshotSource(Protocol):
    """A host (or a batch of hosts) whose current state is a :class:`HostSnapshot`."""

    def snapshot(self) -> HostSnapshot:
        """The state now: arrays ``[hosts, guests]`` of the snapshot's fields."""
        ...
