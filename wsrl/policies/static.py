"""``static``: no overcommit. Every guest is proposed exactly its provisioned size.

The baseline every saving is measured against: the memory each guest was promised, nothing taken
back. Whether the host can hold it is the allocator's business: where the provisioned sizes add up
to more than the host has for guests (the bundled ``laptop`` scenario promises 18 GiB on a host
with 14 GiB for guests), the allocator shares the host out and the guests get less than they were
promised, refaults included.
"""

from __future__ import annotations

import numpy as np

from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.policies.common import masked


class StaticPolicy:
    """Propose the provisioned size of every guest; no state, no parameters."""

    name = "static"

    def reset(self, snapshot: HostSnapshot) -> None:
        """Nothing to forget."""

    def decide(self, snapshot: HostSnapshot) -> np.ndarray:
        """``[hosts, guests]`` provisioned bytes."""
        return masked(snapshot, snapshot.provisioned_bytes.astype(float))
