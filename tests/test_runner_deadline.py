"""Backend calls with a deadline (:mod:`wsrl.runner.deadline`): a blocked call costs one deadline, once."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from wsrl.backends.base import BackendError
from wsrl.runner.deadline import GuestCalls


def test_a_blocked_call_times_out_then_is_not_retried_until_it_returns() -> None:
    calls = GuestCalls(["a", "b"])
    release = threading.Event()
    started = time.monotonic()
    results = calls.read_all("read", [release.wait, lambda: "b-ok"], timeout_s=0.2)
    assert time.monotonic() - started < 1.0
    assert isinstance(results[0], BackendError) and "did not return within 0.2 s" in str(results[0])
    assert results[1] == "b-ok"
    assert calls.blocked_for_s(0) is not None and calls.blocked_for_s(1) is None

    started = time.monotonic()
    again = calls.read_all("read", [lambda: "never run", lambda: "b-ok"], timeout_s=0.2)
    assert time.monotonic() - started < 0.1  # no second wait on the blocked guest
    assert isinstance(again[0], BackendError) and "still blocked in read" in str(again[0])
    with pytest.raises(BackendError, match="apply not attempted: still blocked in read"):
        calls.call(0, "apply", lambda: None, timeout_s=0.2)

    release.set()  # the stalled call returns: its late result is dropped, the guest works again
    deadline = time.monotonic() + 5
    while calls.blocked_for_s(0) is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls.read_all("read", [lambda: "a-ok", lambda: "b-ok"], timeout_s=0.2) == ["a-ok", "b-ok"]
    calls.close()


def test_guests_share_one_deadline_and_errors_pass_through() -> None:
    calls = GuestCalls(["a", "b", "c"])
    block = threading.Event()

    def fails() -> str:
        raise BackendError("guest c: connection refused")

    started = time.monotonic()
    results = calls.read_all("read", [block.wait, block.wait, fails], timeout_s=0.3)
    assert time.monotonic() - started < 0.6  # two blocked guests cost one deadline, not two
    assert all(isinstance(r, BackendError) for r in results)
    assert str(results[2]) == "guest c: connection refused"

    def bug() -> None:
        raise KeyError("a backend bug")

    with pytest.raises(KeyError):  # not a BackendError: handed on as raised, for the audit log
        calls.call(2, "apply", bug, timeout_s=0.3)
    block.set()
    calls.close()


def test_a_call_blocked_forever_does_not_hold_the_process_at_exit() -> None:
    script = (
        "import threading; from wsrl.runner.deadline import GuestCalls\n"
        "calls = GuestCalls(['a'])\n"
        "print(calls.read_all('read', [threading.Event().wait], timeout_s=0.1)[0])\n"
        "calls.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "did not return within 0.1 s" in done.stdout


def test_more_stalled_guests_than_workers_still_leaves_the_others_served() -> None:
    calls = GuestCalls([f"g{i}" for i in range(6)], workers=2)
    release = threading.Event()
    stalled = [release.wait] * 5
    first = calls.read_all("read", [*stalled, lambda: "ok"], timeout_s=0.2)
    assert all(isinstance(r, BackendError) for r in first[:5])  # each stuck worker was replaced
    for _ in range(3):  # the stalled guests that started stay skipped; the others get workers again
        again = calls.read_all("read", [*stalled, lambda: "ok"], timeout_s=0.2)
        if again[5] == "ok":
            break
    assert again[5] == "ok"
    release.set()
    deadline = time.monotonic() + 5
    while any(calls.blocked_for_s(g) is not None for g in range(6)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls.read_all("read", [lambda: "back"] * 6, timeout_s=0.5) == ["back"] * 6
    deadline = time.monotonic() + 5
    while calls._pool._alive > 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls._pool._alive == 2  # stuck workers ended once their calls returned: back to its size
    calls.close()
