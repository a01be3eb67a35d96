"""Shared fixtures. The real-VM harness itself lives in the ``tests/testbed`` package."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from testbed import QemuGuest, Testbed, TestbedMissingError


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
