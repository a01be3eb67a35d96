"""The simulation setup of an input: what the simulator runs for a scenario or a replayed trace.

Evaluation (:mod:`wsrl.eval.runner`), the training envs (:mod:`wsrl.rl`) and behaviour-cloning
recording all build their setups here, from a typed :data:`~wsrl.inputs.ref.InputRef`.

A trace input replays every guest of the trace through trace-driven guests, packed onto hosts of
at most :data:`TRACE_GUESTS_PER_HOST` in the trace's order; each host's capacity is the sum of its
guests' provisioned sizes (no overcommit at the provisioned size), so a policy can only save what
the guests leave idle.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np

from wsrl.inputs.ref import TRACE_PREFIX, InputRef, TraceInput
from wsrl.sim.arrays import SimSetup
from wsrl.sim.build import build_setup
from wsrl.sim.config import load_scenario, scenario_from_dict

TRACE_GUESTS_PER_HOST = 16
"""Trace guests are packed onto hosts of at most this many guests, in the trace's order."""


@functools.lru_cache(maxsize=4)
def input_setup(ref: InputRef) -> SimSetup:
    """The setup of an input with the scenario's own host count (a trace: all its guests).

    Cached per process: building a setup from a long trace costs far more than a run's first
    steps, and a setup is never changed by a run (``Simulator.reset`` restarts its demand).

    Raises:
        WsrlError: the scenario or trace directory is missing or invalid (a clear one-line message).

    """
    if isinstance(ref, TraceInput):
        return trace_setup(ref.directory)
    return build_setup(load_scenario(ref.name_or_path))


def input_setup_with_hosts(ref: InputRef, hosts: int = 1) -> SimSetup:
    """A fresh setup of a scenario with ``hosts`` hosts, or of a trace (all its guests; ``hosts`` unused)."""
    if isinstance(ref, TraceInput):
        return trace_setup(ref.directory)
    return build_setup(load_scenario(ref.name_or_path), hosts=hosts)


def trace_setup(trace_dir: Path, guests_per_host: int = TRACE_GUESTS_PER_HOST) -> SimSetup:
    """Replay every guest of a recorded trace, packed onto hosts of ``guests_per_host`` guests.

    When the last host has room left, it replays the trace's first guests again (the scenario
    rule for copies).
    """
    directory = trace_dir.resolve()
    label = str(trace_dir)
    names = trace_guest_names(directory, label=label)
    per_host = max(1, min(guests_per_host, len(names)))
    hosts = math.ceil(len(names) / per_host)
    spec = trace_scenario(directory, per_host, hosts)
    return _sized_by_guests(build_setup(scenario_from_dict(spec, label=label)))


def trace_host_setup(trace_dir: Path, guests: list[str]) -> SimSetup:
    """One host replaying the named guests of a trace (``guests`` from :func:`trace_guest_names`)."""
    directory = trace_dir.resolve()
    spec = trace_scenario(directory, len(guests), 1)
    spec["guest"][0]["trace_guests"] = list(guests)
    return _sized_by_guests(build_setup(scenario_from_dict(spec, label=str(directory))))


def trace_guest_names(trace_dir: Path, *, label: str | None = None) -> list[str]:
    """The guests a replay of the trace drives, in the trace's order.

    Raises:
        WsrlError: not a readable trace directory (one line, naming ``label``, default the directory).

    """
    directory = trace_dir.resolve()
    probe = scenario_from_dict(trace_scenario(directory, 1, 1), label=label or str(directory))
    return probe.trace_guests_of(0)


def trace_scenario(directory: Path, per_host: int, hosts: int) -> dict[str, Any]:
    """A scenario replaying the trace; its host capacity is a placeholder the setup functions replace."""
    return {
        "name": f"{TRACE_PREFIX}{directory.name}",
        "description": f"replay of the trace in {directory}",
        "host": {"capacity_gib": 1e6, "reserve_gib": 0.0, "count": hosts},
        "guest": [
            {"name": "vm", "trace": str(directory), "count": per_host, "trace_fallback_provisioned_gib": 4.0}
        ],
    }


def _sized_by_guests(setup: SimSetup) -> SimSetup:
    """The setup with each host's capacity the sum of its guests' provisioned sizes (from the trace)."""
    provisioned = np.where(setup.guests.mask, setup.guests.provisioned_bytes, 0.0)
    setup.hosts.capacity_bytes = provisioned.sum(axis=1)
    return setup
