"""``wsrl/LiveHost-v0``: live guests behind the runner's rails, on the simulator backend and on a real
memory cgroup holding a real memory-hungry process (zram swap on)."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from cgroup_fixtures import hog, v1_memcg, zram_swap
from gymnasium.utils.env_checker import check_env
from test_runner_support import cgroup_config, config_data

from wsrl.pipeline.action import ACTION_DIM
from wsrl.pipeline.observation import FEATURE_COUNT
from wsrl.rl.reward import REWARD_TERMS
from wsrl.runner.config import runner_config_from_dict
from wsrl.units import GIB, MIB


def sim_config(tmp_path, **kwargs):  # type: ignore[no-untyped-def]
    data = config_data(tmp_path, record=False, **kwargs)
    return runner_config_from_dict(data, base_dir=tmp_path, label="host.toml")


def test_live_env_is_registered_and_passes_the_checker(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = gym.make("wsrl/LiveHost-v0", config=sim_config(tmp_path), pace=False, episode_steps=4)
    check_env(env.unwrapped)
    obs, info = env.reset(seed=0)
    assert obs["guests"].shape == (3, FEATURE_COUNT) and obs["mask"].tolist() == [1, 1, 1]
    truncated, steps = False, 0
    while not truncated:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        steps += 1
        assert not terminated and np.isfinite(reward)
        assert set(info["reward_terms"]) == set(REWARD_TERMS)
    assert steps == 4
    env.close()


def test_rails_stay_on_whatever_the_agent_asks(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The tightest action every step: shrinks are bounded per interval and no guest crosses its floor;
    then the loosest action: growth is immediate."""
    # The breaker would deflate a squeezed guest on its refaults (tested with the runner); off here
    # so the agent keeps squeezing and the rate and floor rails are what stop it.
    config = sim_config(
        tmp_path,
        safety={"max_shrink_frac_per_s": 0.005},
        breaker={"on_psi": False, "on_refaults": False},
    )
    env = gym.make("wsrl/LiveHost-v0", config=config, pace=False, episode_steps=40).unwrapped
    env.reset(seed=0)
    provisioned = np.array([6, 4, 8]) * GIB
    floors = np.array([2, 1.5, 1]) * GIB
    room = 14 * GIB  # the laptop's 16 GiB less 2 GiB reserve: less than the 18 GiB promised
    previous = provisioned.astype(float)
    for _ in range(30):
        _, _, _, _, info = env.step(-np.ones((3, ACTION_DIM), dtype=np.float32))
        targets = info["target_bytes"]
        assert (targets >= floors - 4096).all()
        assert targets.sum() <= room
        if previous.sum() <= room:  # the first step brings the promises into the room at once
            assert (previous - targets <= 0.05 * provisioned + 4096).all()
        previous = targets
    assert (previous < provisioned).all()
    _, _, _, _, info = env.step(np.ones((3, ACTION_DIM), dtype=np.float32))
    assert (info["target_bytes"] > previous).any()
    env.close()


@pytest.mark.cgroup
def test_live_env_on_a_real_memory_cgroup(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A real 300 MiB process in a v1 memcg with zram swap: the agent's tightest action lowers its limit
    step by step (bounded, never below the floor), the process survives, and the loosest
    action raises the limit again. The floor (328 MiB) sits just above what the process touches
    every second: a v1 memcg squeezed far below that can OOM-kill it in a reclaim-speed race even
    with swap on (testbed.md), which the rails cannot prevent below a floor set too low."""
    with zram_swap(1 * GIB), v1_memcg("live") as group, hog(group, 300) as child:
        safety = {"max_shrink_frac_per_s": 0.1, "floor_gib": 0.32, "stale_after_s": 30}
        config = cgroup_config(
            tmp_path, group, name="hog", provisioned_gib=0.5, policy="static", safety=safety
        )
        env = gym.make("wsrl/LiveHost-v0", config=config, episode_steps=8).unwrapped
        obs, _ = env.reset(seed=0)
        assert obs["mask"].tolist() == [1]
        limits = []
        for _ in range(5):
            _, reward, _, _, info = env.step(-np.ones((1, ACTION_DIM), dtype=np.float32))
            limit = int((group / "memory.limit_in_bytes").read_text())
            limits.append(limit)
            assert limit == info["target_bytes"][0]
            assert limit >= 0.32 * GIB - 4096
            assert np.isfinite(reward)
        steps = np.diff([512 * MIB, *limits])
        assert (-steps <= 0.1 * 512 * MIB + 4096).all()  # each shrink bounded by the rate rail
        assert min(limits) < 400 * MIB  # squeezed below the process's 300 MiB + interpreter
        assert child.alive()
        # Squeezed below what it touches every second, the process thrashes; the breaker sees the
        # refault spike and deflates it to its provisioned size (whatever the agent keeps asking).
        ticks = [
            r
            for r in map(json.loads, (tmp_path / "audit.jsonl").read_text().splitlines())
            if r["kind"] == "tick"
        ]
        for limit, previous, tick in zip(limits, [512 * MIB, *limits], ticks, strict=False):
            if limit > previous:
                assert limit == 512 * MIB and "breaker" in json.dumps(tick), tick
        _, _, _, _, info = env.step(np.ones((1, ACTION_DIM), dtype=np.float32))
        assert int((group / "memory.limit_in_bytes").read_text()) > min(limits)
        assert child.alive()
        env.close()
        # Closing relaxes to the provisioned size (on_exit = relax).
        assert int((group / "memory.limit_in_bytes").read_text()) == 512 * MIB
