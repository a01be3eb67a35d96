"""The training env split over worker processes returns exactly what the in-process env returns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsrl.inputs.ref import ScenarioInput, TraceInput
from wsrl.pipeline.action import ACTION_DIM
from wsrl.rl.parallel_vec_env import ParallelGuestVecEnv, input_shares
from wsrl.rl.reward import REWARD_TERMS
from wsrl.rl.vec_env import GuestVecEnv

REPO = Path(__file__).resolve().parent.parent
SAMPLE_TRACES = REPO / "envs" / "traces" / "bitbrains-sample"
INPUTS = [
    ScenarioInput("laptop"),
    TraceInput(SAMPLE_TRACES),
    ScenarioInput(str(REPO / "envs" / "training" / "pair.toml")),
]


def test_input_shares_are_contiguous_and_cover_every_input() -> None:
    assert input_shares(3, 2) == [range(0, 2), range(2, 3)]
    assert input_shares(2, 8) == [range(0, 1), range(1, 2)]
    shares = input_shares(10, 4)
    assert [i for share in shares for i in share] == list(range(10))


def _same_infos(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        assert x["reward_terms"] == y["reward_terms"]
        if "episode" in x:
            assert x["episode"]["r"] == y["episode"]["r"] and x["episode"]["l"] == y["episode"]["l"]
            assert x["episode_terms"] == y["episode_terms"]
            np.testing.assert_array_equal(x["terminal_observation"], y["terminal_observation"])


def test_workers_replay_the_in_process_env_exactly() -> None:
    """Same inputs, seed and actions: same observations, rewards, dones and infos, across resets."""
    local = GuestVecEnv(INPUTS, episode_steps=3, seed=7)
    split = ParallelGuestVecEnv(INPUTS, workers=2, episode_steps=3, seed=7)
    try:
        assert split.workers == 2 and split.num_envs == local.num_envs
        np.testing.assert_array_equal(split.reset(), local.reset())
        rng = np.random.default_rng(0)
        for step in range(1, 8):  # two episode ends and auto-resets
            actions = rng.uniform(-1, 1, (local.num_envs, ACTION_DIM)).astype(np.float32)
            got, want = split.step(actions), local.step(actions)
            for g, w in zip(got[:3], want[:3], strict=True):
                np.testing.assert_array_equal(g, w)
            _same_infos(got[3], want[3])
            assert got[2].all() == (step % 3 == 0)
        # An explicit seed restarts every worker's episode sequence like the local env's.
        split.seed(11)
        local.seed(11)
        np.testing.assert_array_equal(split.reset(), local.reset())
        actions = np.zeros((local.num_envs, ACTION_DIM), dtype=np.float32)
        np.testing.assert_array_equal(split.step(actions)[1], local.step(actions)[1])
    finally:
        split.close()
    assert not any(process.is_alive() for process in split._processes)
    split.close()  # idempotent


def test_a_failing_worker_is_reported_with_its_error() -> None:
    with pytest.raises(RuntimeError, match=r"worker failed(.|\n)*no-such-scenario"):
        ParallelGuestVecEnv([ScenarioInput("laptop"), ScenarioInput("no-such-scenario")], workers=2)


def test_training_infos_leave_out_per_step_terms_but_keep_episode_ends() -> None:
    env = ParallelGuestVecEnv(INPUTS[:2], workers=2, episode_steps=2, seed=1, info_reward_terms=False)
    try:
        env.reset()
        actions = np.zeros((env.num_envs, ACTION_DIM), dtype=np.float32)
        assert all(info == {} for info in env.step(actions)[3])
        infos = env.step(actions)[3]
        assert all("reward_terms" not in info and info["episode"]["l"] == 2 for info in infos)
        assert all(set(info["episode_terms"]) == set(REWARD_TERMS) for info in infos)
    finally:
        env.close()
