"""The training vector env split over worker processes, for machines with more cores than one.

One :class:`~wsrl.rl.vec_env.GuestVecEnv` steps all its inputs in one process: at 4,096 guests that
is about 200,000 guest-steps/s on one core, less than a GPU learner consumes. A
:class:`ParallelGuestVecEnv` gives each of ``workers`` processes a contiguous share of the inputs
(each worker holds an ordinary ``GuestVecEnv`` over its share) and steps them at the same time.

It is the same env, not an approximation of it: every input keeps its global batch number in the
episode seeds, so for the same inputs, seed and actions it returns exactly what the in-process env
returns (tested). Only arrays cross the pipes; the per-slot ``info`` dicts are built here, once.
To spread one scenario's hosts over workers, list it several times with fewer hosts each
(``["dense"] * 8`` with ``hosts_per_input=8`` is 64 dense hosts in 8 shares).
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import traceback
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from wsrl.inputs.ref import InputRef
from wsrl.pipeline.control import ControlSpec
from wsrl.rl.reward import RewardWeights
from wsrl.rl.spaces import guest_action_space, guest_observation_space
from wsrl.rl.vec_env import GuestVecEnv, SlotsShareOneEnv, StepArrays, step_infos


def input_shares(count: int, workers: int) -> list[range]:
    """Contiguous, near-equal shares of ``count`` inputs over at most ``workers`` processes."""
    workers = max(1, min(workers, count))
    bounds = np.linspace(0, count, workers + 1).round().astype(int)
    return [range(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


def _worker(conn: Connection, kwargs: dict[str, Any]) -> None:
    """Serve one share: build its env, then answer ``reset``/``step``/``close`` until closed."""
    try:
        env = GuestVecEnv(**kwargs)
        conn.send(("ready", env.num_envs))
        while True:
            command, payload = conn.recv()
            if command == "step":
                conn.send(("ok", env.step_arrays(payload)))
            elif command == "reset":
                if payload is not None:  # VecEnv.seed(None) would draw a random seed
                    env.seed(payload)
                conn.send(("ok", env.reset()))
            elif command == "close":
                conn.send(("ok", None))
                return
    except (EOFError, KeyboardInterrupt):
        return
    except Exception as exc:  # sent back to the parent, which raises it with the worker's traceback
        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


class ParallelGuestVecEnv(SlotsShareOneEnv):
    """:class:`~wsrl.rl.vec_env.GuestVecEnv` with its inputs stepped in ``workers`` processes.

    Args:
        inputs: the inputs (scenarios and traces), as for ``GuestVecEnv``.
        workers: processes to split the inputs over (at most one per input).
        hosts_per_input, episode_steps, seed, reward, random_start, info_reward_terms,
            histogram_sources, control: as for
            ``GuestVecEnv``.

    """

    def __init__(
        self,
        inputs: Sequence[InputRef],
        *,
        workers: int,
        hosts_per_input: int = 1,
        episode_steps: int = 360,
        seed: int = 0,
        reward: RewardWeights | None = None,
        random_start: bool = True,
        info_reward_terms: bool = True,
        histogram_sources: Sequence[str] = (),
        control: ControlSpec | None = None,
    ) -> None:
        if not inputs:
            raise ValueError("ParallelGuestVecEnv needs at least one input")
        self.inputs = list(inputs)
        self.base_seed = int(seed)
        self.info_reward_terms = info_reward_terms
        # spawn: the parent usually holds torch's thread pools, which a plain fork can deadlock, and
        # a fresh interpreter takes the one-thread environment set below.
        context = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._processes: list[multiprocessing.process.BaseProcess] = []
        self._offsets = [0]
        self._closed = False
        for share in input_shares(len(self.inputs), workers):
            kwargs = {
                "inputs": [self.inputs[i] for i in share],
                "batch_ids": list(share),
                "hosts_per_input": hosts_per_input,
                "episode_steps": episode_steps,
                "seed": seed,
                "reward": reward,
                "random_start": random_start,
                "histogram_sources": list(histogram_sources),
                "control": control,
            }
            parent, child = context.Pipe()
            process = context.Process(target=_worker, args=(child, kwargs), daemon=True)
            # One thread per worker: the workers are the parallelism (numpy's BLAS pools would
            # only fight over the same cores).
            with _single_threaded_children():
                process.start()
            child.close()
            self._conns.append(parent)
            self._processes.append(process)
        try:
            for conn in self._conns:
                self._offsets.append(self._offsets[-1] + int(self._receive(conn)))
        except BaseException:
            self.close()
            raise
        self.render_mode = None
        super().__init__(self._offsets[-1], guest_observation_space(), guest_action_space())
        self._stepping = False

    @property
    def workers(self) -> int:
        """Worker processes in use."""
        return len(self._processes)

    @staticmethod
    def _receive(conn: Connection) -> Any:
        try:
            status, payload = conn.recv()
        except EOFError:
            raise RuntimeError("a ParallelGuestVecEnv worker died") from None
        if status == "error":
            raise RuntimeError(f"ParallelGuestVecEnv worker failed: {payload}")
        return payload

    # -- VecEnv API -------------------------------------------------------------------------------

    def reset(self) -> np.ndarray:
        """Start a new episode in every batch of every worker; returns ``[num_envs, features]``."""
        if self._seeds and self._seeds[0] is not None:
            self.base_seed = int(self._seeds[0])
            seed: int | None = self.base_seed
        else:
            seed = None
        self._reset_seeds()
        self._reset_options()
        for conn in self._conns:
            conn.send(("reset", seed))
        return np.concatenate([self._receive(conn) for conn in self._conns])

    def step_async(self, actions: np.ndarray) -> None:
        """Send each worker its slots' actions; they step at once."""
        actions = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, -1)
        for k, conn in enumerate(self._conns):
            conn.send(("step", actions[self._offsets[k] : self._offsets[k + 1]]))
        self._stepping = True

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Gather every worker's step (see :meth:`GuestVecEnv.step_wait`)."""
        if not self._stepping:
            raise RuntimeError("step_async must come before step_wait")
        self._stepping = False
        parts: list[StepArrays] = [
            self._receive(conn).shifted(self._offsets[k]) for k, conn in enumerate(self._conns)
        ]
        step = StepArrays(
            obs=np.concatenate([p.obs for p in parts]),
            reward=np.concatenate([p.reward for p in parts]),
            done=np.concatenate([p.done for p in parts]),
            terms={name: np.concatenate([p.terms[name] for p in parts]) for name in parts[0].terms},
            ends=[end for p in parts for end in p.ends],
        )
        return step.obs, step.reward, step.done, step_infos(step, self.info_reward_terms)

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for conn in self._conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(("close", None))
        for process in self._processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
        for conn in self._conns:
            conn.close()


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def _single_threaded_children() -> Iterator[None]:
    """Start child processes with one BLAS/OpenMP thread, leaving the parent's setting alone."""
    saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    os.environ.update(dict.fromkeys(_THREAD_VARIABLES, "1"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
