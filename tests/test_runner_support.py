"""Helpers shared by the runner tests (no tests here): configs, a TOML writer, fault-injecting backends.

The backends below are real :class:`~wsrl.backends.base.GuestBackend` implementations that wrap
the simulator backend and break it the way live sources break (a frozen clock, a dead socket, a
slow read): fault injection, not mocks.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from wsrl.backends.base import BackendError, GuestBackend, Notify
from wsrl.inputs.live import GuestReading, ReadingArrays
from wsrl.pipeline.policy import Policy
from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.runner.config import RunnerConfig, runner_config_from_dict
from wsrl.units import GIB

LAPTOP_GUESTS: list[dict[str, Any]] = [
    {
        "name": "desktop",
        "provisioned_gib": 6,
        "floor_gib": 2,
        "tier": "gold",
        "shares": 2000,
        "backend": {"kind": "sim"},
    },
    {"name": "android", "provisioned_gib": 4, "floor_gib": 1.5, "tier": "silver", "backend": {"kind": "sim"}},
    {
        "name": "dev",
        "provisioned_gib": 8,
        "floor_gib": 1,
        "tier": "bronze",
        "shares": 500,
        "backend": {"kind": "sim"},
    },
]
"""The bundled ``laptop`` scenario's guests, as runner guests of kind ``sim``."""

LEAK_SCENARIO = """
name = "leak"
description = "one leaking service without swap on a memcg: shrinking it hard OOM-kills it"
step_s = 10
[host]
capacity_gib = 16
reserve_gib = 1
[[guest]]
name = "leaky"
workload = "memory-leak"
provisioned_gib = 8
floor_gib = 0.25
actuator = "memcg"
swap = "none"
jitter = 0
"""


def config_data(
    tmp_path: Path,
    *,
    policy: str = "wmo",
    policy_params: dict[str, Any] | None = None,
    guests: list[dict[str, Any]] | None = None,
    scenario: str = "laptop",
    host: dict[str, Any] | None = None,
    safety: dict[str, Any] | None = None,
    breaker: dict[str, Any] | None = None,
    sim: dict[str, Any] | None = None,
    record: bool = True,
    metrics_port: int = 0,
    fallback: str | None = None,
) -> dict[str, Any]:
    """A runner config (as the dict a ``host.toml`` parses to) for the simulated ``laptop``."""
    data: dict[str, Any] = {
        "host": {"name": "sim-host", "capacity_gib": 16, "reserve_gib": 2, "interval_s": 10, **(host or {})},
        "policy": {"name_or_path": policy},
        "safety": {**(safety or {})},
        "audit": {"path": str(tmp_path / "audit.jsonl"), "fsync": False},
        "sim": {"scenario": scenario, **(sim or {})},
        "guest": copy.deepcopy(guests if guests is not None else LAPTOP_GUESTS),
    }
    if policy_params:
        data["policy"]["params"] = policy_params
    if fallback is not None:
        data["policy"]["fallback"] = fallback
    if breaker:
        data["safety"]["breaker"] = breaker
    if record:
        data["record"] = {"dir": str(tmp_path / "trace")}
    if metrics_port:
        data["metrics"] = {"port": metrics_port}
    return data


def make_config(tmp_path: Path, **kwargs: Any) -> RunnerConfig:
    """:func:`config_data`, validated (relative paths resolve against ``tmp_path``)."""
    return runner_config_from_dict(config_data(tmp_path, **kwargs), base_dir=tmp_path, label="host.toml")


def cgroup_config(
    tmp_path: Path,
    group: Path,
    *,
    name: str,
    provisioned_gib: float,
    policy: str,
    safety: dict[str, Any],
    record: bool = False,
) -> RunnerConfig:
    """One real v1 memcg ``group`` (under :data:`cgroup_fixtures.TEST_PARENT`) as the runner's only guest."""
    root = group.parent.parent
    data: dict[str, Any] = {
        "host": {
            "name": "real",
            "capacity_gib": 2,
            "reserve_gib": 0,
            "interval_s": 1,
            "cgroup_root": str(root),
        },
        "policy": {"name_or_path": policy},
        "safety": safety,
        "audit": {"path": str(tmp_path / "audit.jsonl"), "fsync": False},
        "guest": [
            {
                "name": name,
                "provisioned_gib": provisioned_gib,
                "backend": {"kind": "cgroup", "path": str(group.relative_to(root))},
            }
        ],
    }
    if record:
        data["record"] = {"dir": str(tmp_path / "trace")}
    return runner_config_from_dict(data, base_dir=tmp_path, label="host.toml")


def leak_config(tmp_path: Path, **kwargs: Any) -> RunnerConfig:
    """One leaking guest on a swapless memcg, under a policy that shrinks it to nothing (OOM)."""
    (tmp_path / "leak.toml").write_text(LEAK_SCENARIO)
    kwargs.setdefault("policy_params", {"idle_threshold_ms": 0})
    kwargs.setdefault("safety", {"max_shrink_frac_per_s": 0.05, "floor_gib": 0.25})
    kwargs.setdefault("breaker", {"on_psi": False, "on_refaults": False, "cooldown_s": 60})
    return make_config(
        tmp_path,
        scenario="leak.toml",
        guests=[{"name": "leaky", "provisioned_gib": 8, "backend": {"kind": "sim"}}],
        **kwargs,
    )


def audit_records(tmp_path: Path, kind: str = "tick") -> list[dict[str, Any]]:
    """The audit log's records of one kind."""
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


# -- TOML -----------------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(data: dict[str, Any]) -> str:
    """A config dict as TOML: top-level tables, one nested level, arrays of tables, inline dicts."""
    lines: list[str] = []

    def table(name: str, body: dict[str, Any]) -> None:
        lines.append(f"[{name}]")
        nested = {k: v for k, v in body.items() if isinstance(v, dict) and k != "backend" and k != "params"}
        for key, value in body.items():
            if key not in nested:
                lines.append(f"{key} = {_toml_value(value)}")
        for key, value in nested.items():
            table(f"{name}.{key}", value)

    for name, body in data.items():
        if isinstance(body, list):
            for item in body:
                lines.append(f"[[{name}]]")
                lines.extend(f"{k} = {_toml_value(v)}" for k, v in item.items())
        else:
            table(name, body)
    return "\n".join(lines) + "\n"


# -- fault-injecting backends --------------------------------------------------------------------


class WrappedBackend:
    """Passes every call through to ``inner`` (the base of the fault-injecting backends)."""

    def __init__(self, inner: GuestBackend) -> None:
        self.inner = inner
        self.name = inner.name

    def start(self, notify: Notify) -> None:
        self.inner.start(notify)

    def read(self) -> GuestReading:
        return self.inner.read()

    def apply(self, target_bytes: int) -> None:
        self.inner.apply(target_bytes)

    def relax(self, target_bytes: int | None) -> None:
        self.inner.relax(target_bytes)

    def close(self) -> None:
        self.inner.close()


class FreezableBackend(WrappedBackend):
    """Wraps a backend; while ``frozen``, every read returns the last reading again (a stuck source)."""

    def __init__(self, inner: GuestBackend) -> None:
        super().__init__(inner)
        self.frozen = False
        self._last: GuestReading | None = None

    def read(self) -> GuestReading:
        reading = self.inner.read()  # the world still advances: only this source is stuck
        if self.frozen and self._last is not None:
            return self._last
        self._last = reading
        return reading


class BrokenBackend(FreezableBackend):
    """Wraps a backend; while ``broken``, reads fail as an unreachable socket does."""

    def __init__(self, inner: GuestBackend) -> None:
        super().__init__(inner)
        self.broken = False

    def read(self) -> GuestReading:
        reading = self.inner.read()
        if self.broken:
            raise BackendError(f"guest {self.name}: connection refused")
        return reading


class SlowBackend(FreezableBackend):
    """Wraps a backend; while ``delay_s`` > 0, every read takes that long (an overloaded agent)."""

    def __init__(self, inner: GuestBackend) -> None:
        super().__init__(inner)
        self.delay_s = 0.0

    def read(self) -> GuestReading:
        if self.delay_s > 0:
            time.sleep(self.delay_s)
        return self.inner.read()


class ClockShiftBackend(FreezableBackend):
    """Wraps a backend; its readings are stamped ``offset_ms`` off (a source whose clock jumped)."""

    def __init__(self, inner: GuestBackend) -> None:
        super().__init__(inner)
        self.offset_ms = 0

    def current_offset_ms(self) -> int:
        """The shift applied to the next reading (subclasses may read it from elsewhere)."""
        return self.offset_ms

    def read(self) -> GuestReading:
        reading = self.inner.read()
        offset = self.current_offset_ms()
        return dataclasses.replace(reading, time_ms=reading.time_ms + offset) if offset else reading


class SlowPolicy:
    """Wraps a policy; while ``delay_s`` > 0, every decision takes that long (an overloaded host)."""

    def __init__(self, inner: Policy) -> None:
        self.inner = inner
        self.name = inner.name
        self.delay_s = 0.0

    def reset(self, snapshot: HostSnapshot) -> None:
        self.inner.reset(snapshot)

    def decide(self, snapshot: HostSnapshot) -> np.ndarray:
        if self.delay_s > 0:
            time.sleep(self.delay_s)
        return self.inner.decide(snapshot)


def reading(name: str = "g", **values: Any) -> GuestReading:
    """A guest's reading at t = 1000 s: 2 GiB visible, 1 GiB used, ``values`` overriding."""
    base: dict[str, Any] = {"time_ms": 1_000_000, "visible_bytes": 2 * GIB, "usage_bytes": GIB}
    base.update(values)
    return GuestReading(name=name, **base)


def reading_arrays(*readings: GuestReading | None) -> ReadingArrays:
    """The readings as the runner's input checks and the circuit breaker see them."""
    return ReadingArrays.from_readings(list(readings))
