"""Run policies on scenarios or recorded traces and measure them: one run, or a whole grid.

A run is (policy x input x seed): the input (:data:`~wsrl.inputs.ref.InputRef`) is a scenario (name
or TOML path) or a trace directory replayed by trace-driven guests (``traces:DIR``), set up by
:mod:`wsrl.inputs.setup` and read through :class:`~wsrl.inputs.simulated.SimulatedHost`. Every run
steps the simulator through the one control stack production uses
(:class:`~wsrl.pipeline.control.ControlStack`: allocator and every rail, configured by a
:class:`~wsrl.pipeline.control.ControlSpec`) and records the fixed metrics of
:mod:`wsrl.eval.metrics`. Grids run serially, in a process pool, or on Ray; each run is a pure
function of its :class:`RunSpec`, so all three give identical results.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from wsrl.errors import WsrlError
from wsrl.eval.metrics import METRIC_NAMES, MetricsRecorder
from wsrl.inputs.ref import InputRef
from wsrl.inputs.setup import input_setup
from wsrl.inputs.simulated import SimulatedHost
from wsrl.pipeline.control import ControlSpec
from wsrl.pipeline.policy import Policy
from wsrl.policies import POLICIES, make_policy, make_stack
from wsrl.policies.learned import is_exported_policy, load_learned_policy
from wsrl.sim.arrays import SimSetup
from wsrl.sim.simulator import Simulator

SERIES_GUESTS = 8
"""Guests of the first host whose sizes over time a run keeps for the report's plots."""
SERIES_POINTS = 400
"""At most this many points per series (the run's steps, evenly thinned)."""

Executor = Literal["serial", "process", "ray"]
EXECUTORS: tuple[str, ...] = ("serial", "process", "ray")


@dataclass(frozen=True)
class RunSpec:
    """One evaluation run: what to run, on what, for how long, with which seed, under which rails."""

    policy: str
    input: InputRef
    seed: int
    duration_s: float
    control: ControlSpec = field(default_factory=ControlSpec)


@dataclass
class RunResult:
    """The metrics of one run, its per-guest breakdown and a thinned size series for plots.

    ``input`` is the run's input in its text form (``str`` of the :class:`RunSpec`'s ref).
    """

    policy: str
    input: str
    seed: int
    metrics: dict[str, float]
    per_guest: list[dict[str, Any]]
    series: dict[str, Any] = field(default_factory=dict)

    def to_json_dict(self, *, with_series: bool = False) -> dict[str, Any]:
        """Plain JSON-ready dict (without the size series unless asked)."""
        data = asdict(self)
        if not with_series:
            data.pop("series")
        return data


def policy_of(ref: str) -> Policy:
    """A run's policy: a registered name, or the path of an exported learned policy directory.

    Raises:
        WsrlError: an unknown name, or a path that is not a valid exported policy (one line).

    """
    if is_exported_policy(ref):
        return load_learned_policy(ref)
    path = Path(ref)
    if ref not in POLICIES and (path.exists() or "/" in ref or "\\" in ref):
        if path.is_dir():
            return load_learned_policy(path)  # raises: no manifest.json (names the file)
        what = "a file" if path.exists() else "no such directory"
        raise WsrlError(
            f"policy {ref!r}: {what}; a policy is a registered name or an exported policy directory "
            "(manifest.json + model.onnx, written by `wsrl export`)"
        )
    return make_policy(ref)


def run_one(spec: RunSpec) -> RunResult:
    """Run one policy on one input with one seed and measure it (a pure function of ``spec``).

    ``spec.policy`` is a registered policy name or an exported learned policy's directory.
    """
    result = evaluate_policy(policy_of(spec.policy), spec.input, spec.seed, spec.duration_s, spec.control)
    result.policy = spec.policy
    return result


def evaluate_policy(
    policy: Policy, input_ref: InputRef, seed: int, duration_s: float, control: ControlSpec | None = None
) -> RunResult:
    """Run a policy object on one input with one seed and measure it (what every run does).

    Args:
        policy: any pipeline policy (it is reset first).
        input_ref: the input: a scenario or a trace.
        seed: the demand seed.
        duration_s: simulated time, seconds.
        control: allocator and rails (default: the production runner's defaults).

    """
    return evaluate_setup(policy, input_setup(input_ref), str(input_ref), seed, duration_s, control)


def evaluate_setup(
    policy: Policy,
    setup: SimSetup,
    input_label: str,
    seed: int,
    duration_s: float,
    control: ControlSpec | None = None,
) -> RunResult:
    """:func:`evaluate_policy` on a built simulation set-up (``input_label`` names it in the result).

    For callers that change a set-up before running it (an ablation of the model, a what-if).
    """
    sim = Simulator(setup)
    sim.reset(seed)
    host = SimulatedHost(sim)
    snapshot = host.snapshot()
    stack = make_stack(policy, control)
    stack.reset(snapshot)
    recorder = MetricsRecorder(snapshot)
    steps = max(1, math.ceil(duration_s / sim.step_s))
    every = max(1, steps // SERIES_POINTS)
    shown = np.flatnonzero(setup.guests.mask[0])[:SERIES_GUESTS]
    series: dict[str, Any] = {
        "guests": [str(setup.guests.names[0, g]) for g in shown],
        "provisioned_bytes": [float(setup.guests.provisioned_bytes[0, g]) for g in shown],
        "time_h": [],
        "visible_bytes": [],
        "demand_bytes": [],
    }
    for index in range(steps):
        decision = stack.step(snapshot)
        sim.step(decision.target_bytes)
        snapshot = host.snapshot()
        recorder.observe(snapshot)
        if index % every == 0 or index == steps - 1:
            series["time_h"].append(sim.time_s / 3600.0)
            series["visible_bytes"].append(sim.model.visible_bytes[0, shown].tolist())
            series["demand_bytes"].append(sim.model.demand_bytes[0, shown].tolist())
    metrics = recorder.result()
    scalars = metrics.to_json_dict()
    return RunResult(
        policy=policy.name,
        input=input_label,
        seed=seed,
        metrics={name: float(scalars[name]) for name in METRIC_NAMES},
        per_guest=list(scalars.get("per_guest", [])),
        series=series,
    )


RAILS: dict[str, ControlSpec] = {"production": ControlSpec(), "none": ControlSpec.unguarded()}
"""``wsrl eval --rails``: the production runner's default rails, or none (each policy as published)."""


def rails_spec(name: str) -> ControlSpec:
    """The control spec named by ``--rails`` (one-line error for another name)."""
    if name not in RAILS:
        raise WsrlError(f"option --rails: {name!r} is not one of {', '.join(RAILS)}")
    return RAILS[name]


def grid(
    policies: Sequence[str],
    inputs: Sequence[InputRef],
    seeds: int,
    duration_s: float,
    control: ControlSpec | None = None,
) -> list[RunSpec]:
    """Every (policy x input x seed) run, in a fixed order, all under ``control`` (default rails)."""
    if seeds < 1:
        raise WsrlError(f"--seeds must be >= 1, got {seeds}")
    control = control or ControlSpec()
    return [
        RunSpec(policy=p, input=i, seed=s, duration_s=duration_s, control=control)
        for i in inputs
        for p in policies
        for s in range(seeds)
    ]


def check_specs(specs: Sequence[RunSpec]) -> None:
    """Fail early, in this process, on inputs and policies that do not exist (clear errors)."""
    for ref in dict.fromkeys(spec.input for spec in specs):
        input_setup(ref)
    for name in dict.fromkeys(spec.policy for spec in specs):
        policy_of(name)


def run_grid(
    specs: Sequence[RunSpec],
    *,
    executor: Executor = "serial",
    address: str | None = None,
    workers: int | None = None,
    on_done: Callable[[int, int], None] | None = None,
) -> list[RunResult]:
    """Run every spec and return results in the order of ``specs``.

    Args:
        specs: the runs.
        executor: ``serial`` (this process), ``process`` (a local process pool) or ``ray`` (Ray,
            local unless ``address`` names a cluster).
        address: Ray cluster address (``ray`` only).
        workers: pool size for ``process`` (default: the machine's CPUs).
        on_done: called as ``on_done(finished, total)`` after each run finishes.

    """
    check_specs(specs)
    total = len(specs)
    if executor == "serial":
        results = []
        for spec in specs:
            results.append(run_one(spec))
            if on_done:
                on_done(len(results), total)
        return results
    if executor == "process":
        return _run_processes(specs, workers, on_done)
    if executor == "ray":
        return _run_ray(specs, address, on_done)
    raise WsrlError(f"unknown executor {executor!r} (choose from {', '.join(EXECUTORS)})")


def _run_processes(
    specs: Sequence[RunSpec], workers: int | None, on_done: Callable[[int, int], None] | None
) -> list[RunResult]:
    import concurrent.futures
    import multiprocessing

    # "spawn": a fresh interpreter per worker, so no state leaks from this process into runs.
    context = multiprocessing.get_context("spawn")
    results: list[RunResult | None] = [None] * len(specs)
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(run_one, spec): index for index, spec in enumerate(specs)}
        for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
            results[futures[future]] = future.result()
            if on_done:
                on_done(done, len(specs))
    return [r for r in results if r is not None]


def _run_ray(
    specs: Sequence[RunSpec], address: str | None, on_done: Callable[[int, int], None] | None
) -> list[RunResult]:
    try:
        import ray
    except ImportError:
        raise WsrlError("the ray executor needs Ray: pip install 'wsrl[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        remote_run = ray.remote(run_one)
        refs = [remote_run.remote(spec) for spec in specs]
        index_of = {ref: index for index, ref in enumerate(refs)}
        results: list[RunResult | None] = [None] * len(specs)
        pending = list(refs)
        done_count = 0
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                results[index_of[ref]] = ray.get(ref)
                done_count += 1
                if on_done:
                    on_done(done_count, len(specs))
        return [r for r in results if r is not None]
    finally:
        if started_here:
            ray.shutdown()


def summarize(results: Sequence[RunResult]) -> dict[str, dict[str, float]]:
    """Per policy, the mean of every metric over its runs (inputs and seeds)."""
    by_policy: dict[str, list[RunResult]] = {}
    for result in results:
        by_policy.setdefault(result.policy, []).append(result)
    return {
        policy: {name: float(np.mean([r.metrics[name] for r in runs])) for name in METRIC_NAMES}
        for policy, runs in by_policy.items()
    }
