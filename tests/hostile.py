"""Guests that fight the runner, for the hostile-guest tests and soak (no tests here).

Each backend is a real :class:`~wsrl.backends.base.GuestBackend` wrapping another one (the
simulator's, in the tests) and bending what the runner reads the way a guest, or a VMM, can: claims
about its own pressure, sizes, clock and histograms; a source that cannot tell the target in force.
Fault injection, not mocks: everything behind the wrapper runs for real. :class:`Squeeze` is the
policy that leaves every decision to the rails.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from test_runner_support import WrappedBackend

from wsrl.backends.base import GuestBackend
from wsrl.inputs.live import GuestReading
from wsrl.pipeline.snapshot import HostSnapshot


class LyingBackend(WrappedBackend):
    """A VM that reports what it likes: every field given in ``lies`` replaces the real one.

    Its figures are marked ``self_reported``, as QEMU's and crosvm's backends mark a VM's.
    """

    def __init__(self, inner: GuestBackend, **lies: Any) -> None:
        super().__init__(inner)
        self.lies = lies

    def read(self) -> GuestReading:
        return dataclasses.replace(self.inner.read(), **{"self_reported": True, **self.lies})


class VmmLikeBackend(WrappedBackend):
    """A source that cannot tell the target in force until it set one itself, as QEMU's and crosvm's
    backends could not before issue 16: the target reads NaN until this instance applies."""

    def __init__(self, inner: GuestBackend) -> None:
        super().__init__(inner)
        self.applied = False

    def read(self) -> GuestReading:
        reading = self.inner.read()
        return reading if self.applied else dataclasses.replace(reading, target_bytes=math.nan)

    def apply(self, target_bytes: int) -> None:
        self.inner.apply(target_bytes)
        self.applied = True


class Squeeze:
    """A policy that proposes nothing for every guest: the rails alone decide how far each shrinks."""

    name = "squeeze"

    def reset(self, snapshot: HostSnapshot) -> None:
        """Nothing to forget."""

    def decide(self, snapshot: HostSnapshot) -> np.ndarray:
        """Zeros."""
        return np.zeros(snapshot.shape)
