"""Training throughput: env steps per second inside PPO, and the share of training time in the env.

Run with ``make bench`` or ``python benchmarks/bench_train.py [--json] [--timesteps N] [--hosts H]
[--workers W] [--device cpu|cuda] [--batch-size B] [--net-arch 64,64]``.

An env step is one guest-step (one slot of :class:`wsrl.rl.vec_env.GuestVecEnv`: one guest of one
simulated host for one 10 s control interval, histogram, observation and reward included). The
benchmark trains SB3 PPO on the ``dense`` scenario (64 memcg guests per host) replicated on
``--hosts`` hosts, stepped as one batch, and reports:

* PPO's env steps per second over the whole ``learn`` (rollouts plus gradient updates);
* the share of that time spent inside ``VecEnv.step`` (the simulator and pipeline) versus the
  policy's forward passes and updates;
* the baseline, measured in the same process: the same env stepped with random actions and no
  learner, i.e. the most PPO could reach with a free network.

On a GPU machine pass ``--device cuda --hosts 64`` (4096 guests) and large batches to see how far
the simulator keeps up with a GPU learner, and ``--workers W`` to step the hosts in W processes
(:class:`wsrl.rl.parallel_vec_env.ParallelGuestVecEnv`, the same env split W ways).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from wsrl.inputs.ref import ScenarioInput
from wsrl.rl.parallel_vec_env import ParallelGuestVecEnv
from wsrl.rl.vec_env import GuestVecEnv


class TimedVecEnv(VecEnvWrapper):
    """Counts the wall time spent inside the wrapped env's steps."""

    def __init__(self, venv: VecEnv) -> None:
        super().__init__(venv)
        self.env_s = 0.0

    def reset(self) -> np.ndarray:
        return self.venv.reset()

    def step_wait(self):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        result = self.venv.step_wait()
        self.env_s += time.perf_counter() - started
        return result


def random_actions_rate(env: VecEnv, steps: int) -> float:
    """Env steps per second with random actions and no learner (the ceiling for PPO)."""
    env.reset()
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for _ in range(steps):
        env.step(rng.uniform(-1, 1, (env.num_envs, *env.action_space.shape)).astype(np.float32))
    return steps * env.num_envs / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--timesteps", type=int, default=200_000)
    parser.add_argument("--hosts", type=int, default=4, help="dense hosts (64 guests each)")
    parser.add_argument("--workers", type=int, default=1, help="env processes (hosts split evenly)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n-steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--net-arch", default="64,64")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.hosts % args.workers:
        parser.error(f"--hosts {args.hosts} does not split evenly over --workers {args.workers}")
    if args.workers > 1:
        env: VecEnv = ParallelGuestVecEnv(
            [ScenarioInput("dense")] * args.workers,
            workers=args.workers,
            hosts_per_input=args.hosts // args.workers,
            episode_steps=360,
            seed=0,
            info_reward_terms=False,  # as wsrl train runs it
        )
    else:
        env = GuestVecEnv(
            [ScenarioInput("dense")],
            hosts_per_input=args.hosts,
            episode_steps=360,
            seed=0,
            info_reward_terms=False,
        )
    baseline = random_actions_rate(env, 50)

    timed = TimedVecEnv(env)
    model = PPO(
        "MlpPolicy",
        timed,
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        n_epochs=4,
        device=args.device,
        seed=0,
        policy_kwargs={"net_arch": [int(x) for x in args.net_arch.split(",")]},
    )
    started = time.perf_counter()
    model.learn(total_timesteps=args.timesteps)
    wall_s = time.perf_counter() - started
    result = {
        "guests": env.num_envs,
        "device": args.device,
        "env_workers": args.workers,
        "torch_threads": args.threads,
        "timesteps": int(model.num_timesteps),
        "ppo_env_steps_per_s": round(model.num_timesteps / wall_s, 1),
        "env_time_share": round(timed.env_s / wall_s, 3),
        "random_actions_env_steps_per_s": round(baseline, 1),
        "ppo_vs_random_actions": round(model.num_timesteps / wall_s / baseline, 3),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print_result(result, args.hosts, args.workers, args.device)
    env.close()


def print_result(result: dict, hosts: int, workers: int, device: str) -> None:
    print(
        f"PPO on {result['guests']} guests ({hosts} dense hosts, {workers} env processes), device {device}:"
    )
    print(f"  env steps/s inside PPO:           {result['ppo_env_steps_per_s']:>12,.0f}")
    print(f"  share of training time in the env: {result['env_time_share']:>11.1%}")
    print(f"  env alone, random actions:        {result['random_actions_env_steps_per_s']:>12,.0f} steps/s")
    print(f"  PPO / env-alone ratio:            {result['ppo_vs_random_actions']:>12.3f}")


if __name__ == "__main__":
    main()
