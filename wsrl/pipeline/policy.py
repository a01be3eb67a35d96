"""The policy interface: reference heuristics and learned models implement the same two methods.

A policy proposes a target guest-visible size for every guest of a :class:`HostSnapshot`; the
allocator then makes the proposals fit the host and the rails bound how fast they move
(:class:`~wsrl.pipeline.control.ControlStack`). Policies
keep their own state as arrays shaped like the snapshot, so one instance serves a whole batch.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from wsrl.pipeline.snapshot import HostSnapshot


@runtime_checkable
class Policy(Protocol):
    """Proposes target sizes.

    Attributes:
        name: the policy's registry name (``senpai``, ``far-memory`` ...).

    """

    name: str

    def reset(self, snapshot: HostSnapshot) -> None:
        """Forget all history; ``snapshot`` is the first state the policy will see."""
        ...

    def decide(self, snapshot: HostSnapshot) -> np.ndarray:
        """Proposed guest-visible target bytes, ``[hosts, guests]``, for the next interval."""
        ...
