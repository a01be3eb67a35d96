"""The production runner end to end on real components started here: a real memory cgroup holding a
real memory-hungry process (zram swap on), and a real QEMU guest with a virtio balloon whose MGLRU
``lru_gen`` dumps reach the runner over virtio-serial."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from cgroup_fixtures import hog, v1_memcg, zram_swap
from hostile import Squeeze
from test_backend_qemu import hand_over_serial_socket, wait_until
from test_runner_support import ClockShiftBackend, cgroup_config
from testbed import QemuGuest

from wsrl.pipeline.action import ACTION_DIM
from wsrl.runner.backend_registry import build_backends
from wsrl.runner.config import runner_config_from_dict
from wsrl.runner.daemon import Runner
from wsrl.units import GIB, MIB


def audit(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


@pytest.mark.cgroup
def test_runner_lowers_and_raises_a_real_cgroup_limit(tmp_path: Path) -> None:
    """wmo on the cgroup's LRU histogram lowers the limit toward what the process uses (bounded per
    tick, never below the floor); when the process then grows past it and thrashes, the breaker sees
    the refaults and raises the limit to the provisioned size. The process survives throughout."""
    with zram_swap(1 * GIB), v1_memcg("runner") as group, hog(group, 300) as child:
        safety = {"max_shrink_frac_per_s": 0.1, "floor_gib": 0.25}
        config = cgroup_config(
            tmp_path, group, name="hog", provisioned_gib=0.75, policy="wmo", safety=safety, record=True
        )
        limit_file = group / "memory.limit_in_bytes"
        with Runner(config) as runner:
            runner.start()
            limits = []
            for _ in range(8):
                runner.tick()
                limits.append(int(limit_file.read_text()))
                time.sleep(1.0)
            provisioned = int(0.75 * GIB)
            shrinks = -np.diff([provisioned, *limits])
            assert (shrinks <= 0.1 * provisioned + 4096).all()  # the rate rail, every tick
            assert min(limits) >= 0.25 * GIB - 4096  # the floor
            assert min(limits) < 450 * MIB  # lowered toward the ~310 MiB the process uses
            assert child.alive()

            child.send("grow 250")  # now ~560 MiB touched every second, far over the limit
            raised = 0
            for _ in range(12):
                runner.tick()
                if int(limit_file.read_text()) == provisioned:
                    raised += 1
                    break
                time.sleep(1.0)
            assert raised, "the limit was not raised after the process outgrew it"
            assert child.alive()
            runner.shutdown()
        ticks = [r for r in audit(tmp_path) if r["kind"] == "tick"]
        assert "breaker" in json.dumps(ticks[-1])
        assert int(limit_file.read_text()) == int(0.75 * GIB)  # relaxed on exit
        assert (tmp_path / "trace").is_dir()


@pytest.mark.cgroup
def test_runner_rides_out_clock_jumps_on_a_real_cgroup(tmp_path: Path) -> None:
    """A source stamped two hours ahead is refused and held, and the next true reading is served at
    once (trusting it would have made every later reading look stale for two hours); a host clock
    stepped back an hour (the readings and the runner's clock together) starts a new time line."""
    with v1_memcg("clock") as group:
        safety = {"floor_gib": 0.25, "hold_intervals_before_fallback": 3}
        config = cgroup_config(tmp_path, group, name="cg", provisioned_gib=0.5, policy="wmo", safety=safety)
        shifted = ClockShiftBackend(build_backends(config)[0])
        step_s = 0.0
        with Runner(config, backends=[shifted], wall_clock=lambda: time.time() + step_s) as runner:
            runner.start()

            def tick() -> dict[str, Any]:
                time.sleep(0.02)  # readings are stamped in ms: let each one advance
                return runner.tick().record["guests"][0]

            assert [tick()["state"] for _ in range(2)] == ["ok", "ok"]
            shifted.offset_ms = 2 * 3600 * 1000
            ahead = [tick() for _ in range(2)]
            shifted.offset_ms = 0
            back = tick()
            step_s = -3600.0  # the host clock is stepped back an hour: readings and runner alike
            shifted.offset_ms = -3600 * 1000
            stepped = tick()
            after = tick()
            runner.shutdown()
    for guest in ahead:
        assert guest["state"] == "hold" and "ahead of the host clock" in guest["input"]
        assert not guest["applied"]
    assert back["state"] == "ok" and back["input"] == "ok"
    assert stepped["state"] == "ok" and after["state"] == "ok"
    ticks = [r for r in audit(tmp_path) if r["kind"] == "tick"]
    assert ticks[-2]["clock_step_s"] == pytest.approx(-3600.0, abs=1.0)


@pytest.mark.realvm
@pytest.mark.qemu
def test_runner_inflates_and_deflates_a_real_balloon_from_lru_gen(tmp_path: Path) -> None:
    """The real guest's lru_gen dumps reach the runner over virtio-serial and make its histograms;
    wmo's decisions inflate the balloon tick by tick (down to the floor) and the exit relaxes it;
    query-balloon follows every decision."""
    with QemuGuest() as guest:
        hand_over_serial_socket(guest)
        data = {
            "host": {"name": "vm-host", "capacity_gib": 2, "reserve_gib": 0, "interval_s": 1},
            "policy": {"name_or_path": "wmo"},
            "safety": {"max_shrink_frac_per_s": 0.1, "floor_gib": 0.625},
            "audit": {"path": str(tmp_path / "audit.jsonl"), "fsync": False},
            "guest": [
                {
                    "name": "vm",
                    "provisioned_gib": 1,
                    "backend": {
                        "kind": "qemu",
                        "qmp_socket": str(guest.qmp_socket),
                        "agent_socket": str(guest.serial_socket),
                        "stats_interval_s": 1,
                        "timeout_s": 10,
                    },
                }
            ],
        }
        config = runner_config_from_dict(data, base_dir=tmp_path, label="host.toml")
        with Runner(config) as runner:
            runner.start()
            wait_until(lambda: runner.observe().hist_bytes.sum() > 0, 30.0, "a histogram from lru_gen")
            snapshot = runner.observe()
            assert snapshot.mask.all() and snapshot.hist_bytes.sum() > 0
            targets = []
            for _ in range(6):
                outcome = runner.tick()
                targets.append(outcome.target_bytes[0])
                time.sleep(1.0)
            assert targets[-1] < GIB and min(targets) >= 0.625 * GIB - 4096
            assert (-np.diff([GIB, *targets]) <= 0.1 * GIB + 4096).all()
            wait_until(
                lambda: abs(guest.qmp("query-balloon")["actual"] - targets[-1]) <= 4 * MIB,
                30.0,
                "query-balloon to reach the last decision",
            )
            runner.shutdown()  # on_exit = relax: the balloon deflates to the full 1 GiB
        wait_until(lambda: guest.qmp("query-balloon")["actual"] == GIB, 30.0, "the balloon to deflate")
        ticks = [r for r in audit(tmp_path) if r["kind"] == "tick"]
        assert len(ticks) == 6

        # The same guest as wsrl/LiveHost-v0: an agent's tightest action inflates the balloon within
        # the rails (bounded shrink, floor), in real time; closing the env deflates it again.
        env = gym.make("wsrl/LiveHost-v0", config=config, episode_steps=3).unwrapped
        obs, _ = env.reset(seed=0)
        assert obs["mask"].tolist() == [1]
        wait_until(lambda: env.runner.observe().hist_bytes.sum() > 0, 30.0, "the env's first histogram")
        truncated, decided = False, []
        while not truncated:
            obs, reward, _, truncated, info = env.step(-np.ones((1, ACTION_DIM), dtype=np.float32))
            decided.append(info["target_bytes"][0])
            assert np.isfinite(reward) and obs["mask"].tolist() == [1]
        assert min(decided) >= 0.625 * GIB - 4096 and decided[-1] < GIB
        wait_until(
            lambda: abs(guest.qmp("query-balloon")["actual"] - decided[-1]) <= 4 * MIB,
            30.0,
            "query-balloon to follow the agent",
        )
        env.close()
        wait_until(lambda: guest.qmp("query-balloon")["actual"] == GIB, 30.0, "the env's exit to deflate")


@pytest.mark.realvm
@pytest.mark.qemu
def test_a_restarted_runner_starts_from_the_real_balloon(tmp_path: Path) -> None:
    """A runner shrinks a real VM's balloon and is killed (no relax). A new runner, with no state
    file, squeezing as hard as the rails allow, starts from the balloon size QMP reports: its first
    target is one rate step below it. Before issue 16 the QEMU backend reported no target until
    it set one, the runner started from the provisioned 1 GiB and its first tick inflated the
    guest back to 0.9 GiB."""
    with QemuGuest() as guest:
        data = {
            "host": {"name": "vm-host", "capacity_gib": 2, "reserve_gib": 0, "interval_s": 1},
            "policy": {"name_or_path": "static"},
            "safety": {"max_shrink_frac_per_s": 0.1, "floor_gib": 0.5},
            "audit": {"path": str(tmp_path / "audit.jsonl"), "fsync": False},
            "guest": [
                {
                    "name": "vm",
                    "provisioned_gib": 1,
                    "backend": {"kind": "qemu", "qmp_socket": str(guest.qmp_socket), "timeout_s": 10},
                }
            ],
        }
        config = runner_config_from_dict(data, base_dir=tmp_path, label="host.toml")
        first = Runner(config, policy=Squeeze())
        first.start()
        for _ in range(4):
            left = first.tick().target_bytes[0]
            time.sleep(1.0)
        first.close()  # killed: nothing relaxed
        assert left <= 0.61 * GIB
        wait_until(lambda: guest.qmp("query-balloon")["actual"] == left, 30.0, "the balloon at its target")
        config.state_path().unlink()  # the VMM's own report alone must be enough

        second = Runner(config, policy=Squeeze())
        second.start()
        time.sleep(1.0)
        outcome = second.tick()
        second.shutdown()  # relax: the balloon deflates to 1 GiB
        assert outcome.target_bytes[0] == pytest.approx(max(left - 0.1 * GIB, 0.5 * GIB), abs=4096)
        wait_until(lambda: guest.qmp("query-balloon")["actual"] == GIB, 30.0, "the balloon to deflate")
