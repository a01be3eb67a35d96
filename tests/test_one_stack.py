"""One control stack: the runner, the evaluator and the training env decide identically, rails included.

The runner (simulator backend, production rails on) runs a policy that squeezes hard; every snapshot
it decided on is then fed to the evaluator's stack and to the training env's stack. All three must
give the same targets, byte for byte, with the rails (rate per second, breaker, host reserve,
floor) active along the way.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from test_runner_support import make_config

from wsrl.inputs.ref import ScenarioInput
from wsrl.inputs.setup import input_setup
from wsrl.pipeline.control import ControlSpec, GuestConditions
from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.policies import make_policy, make_stack
from wsrl.rl.batch import HostBatch
from wsrl.runner.config import RunnerConfig
from wsrl.runner.daemon import Runner

TICKS = 90
POLICY = "wmo"  # reclaims everything idle for 10 s: the rate rail is busy all along


def run_runner(config: RunnerConfig) -> tuple[list[HostSnapshot], list[np.ndarray], dict[str, int]]:
    """The runner's snapshots, its final targets per tick, and how often each rail acted."""
    runner = Runner(config)
    snapshots: list[HostSnapshot] = []
    step = runner.stack.step

    def spy(snapshot: HostSnapshot | None, conditions: GuestConditions, **kwargs: Any) -> Any:
        assert snapshot is not None and bool(conditions.usable.all())  # healthy inputs all along
        snapshots.append(copy.deepcopy(snapshot))
        return step(snapshot, conditions, **kwargs)

    runner.stack.step = spy  # type: ignore[method-assign]
    runner.start()
    targets, rails = [], {}
    for _ in range(TICKS):
        outcome = runner.tick()
        targets.append(np.array([outcome.target_bytes], dtype=float))
        for guest in outcome.record["guests"]:
            for entry in guest["rails"]:
                rails[entry["rail"]] = rails.get(entry["rail"], 0) + 1
    runner.shutdown()
    return snapshots, targets, rails


def test_runner_evaluator_and_training_env_decide_identically(tmp_path: Path) -> None:
    config = make_config(tmp_path, policy=POLICY, record=False)
    spec = config.control_spec()
    snapshots, runner_targets, rails = run_runner(config)
    assert len(snapshots) == TICKS
    assert rails.get("rate", 0) > 0, rails  # the rails acted: the comparison covers them

    # The evaluator's stack (what `wsrl eval` builds), under the same spec.
    evaluator = make_stack(POLICY, dataclasses.replace(spec, contain_policy_errors=False))
    # The training env's stack: the learned slot gets the proposals the policy makes.
    laptop = input_setup(ScenarioInput("laptop"))
    batch = HostBatch(laptop, episode_steps=TICKS, control=spec, random_start=False)
    proposer = make_policy(POLICY)
    evaluator.reset(snapshots[0])
    batch.stack.reset(snapshots[0])
    proposer.reset(snapshots[0])
    for index, snapshot in enumerate(snapshots):
        evaluated = evaluator.step(snapshot).target_bytes
        batch._policy.proposal_bytes = proposer.decide(snapshot)
        trained = batch.stack.step(snapshot).target_bytes
        np.testing.assert_array_equal(evaluated, runner_targets[index], err_msg=f"tick {index + 1}")
        np.testing.assert_array_equal(trained, runner_targets[index], err_msg=f"tick {index + 1}")


def test_training_and_evaluation_default_to_the_production_rails(tmp_path: Path) -> None:
    """What a host.toml with default [safety] asks for is what training and evaluation use."""
    production = make_config(tmp_path, record=False).control_spec()
    host_specific = {"max_rate_step_s", "host_reserve_bytes", "contain_policy_errors"}
    default = ControlSpec()
    for field in dataclasses.fields(ControlSpec):
        if field.name not in host_specific:
            assert getattr(production, field.name) == getattr(default, field.name), field.name
