"""Shared fixtures and the hypothesis profiles. The real-VM harness lives in ``tests/testbed``."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings
from testbed import QemuGuest, Testbed, TestbedMissingError

# `make test` (and CI) replays the same generated inputs every run, so a red run means a change
# broke something, not that the fuzzer drew a new case that day. `make fuzz` explores: fresh random
# inputs, 500 per test unless a test sets its own; what it finds becomes an @example (a pinned
# regression case).
settings.register_profile("replay", derandomize=True, database=None)
settings.register_profile("explore", max_examples=500)
settings.load_profile(os.environ.get("WSRL_HYPOTHESIS_PROFILE", "replay"))


@pytest.fixture(scope="module")
def qemu_guest() -> Iterator[QemuGuest]:
    """A booted test guest, one per test module. Fails, never skips, when the testbed is missing."""
    try:
        testbed = Testbed.load()
    except TestbedMissingError as exc:
        missing = str(exc)
    else:
        missing = ""
    if missing:
        pytest.fail(f"real-VM testbed unavailable: {missing}", pytrace=False)
    with QemuGuest(testbed) as guest:
        yield guest
