"""The control stack's cost: guest-decisions per second with the production rails and without.

Run with ``make bench`` or ``python benchmarks/bench_stack.py [--json] [--seconds S]``.

A guest-decision is one guest of one ``ControlStack.step``: the policy's proposal (a fixed array,
so that only the stack is timed), the fallback (``static``), the allocator, the choice per guest and
the rails. The snapshots come from the simulator on 64 and 216 hosts of the ``dense`` scenario
(4,096 and 13,824 guests), stepped at squeezing targets so that the rate rail and the
breaker have work to do. Each figure is set beside the same stack with no rail but the
``[floor, provisioned]`` clamp (``ControlSpec.unguarded()``), measured in the same process.

This is the rails' worst case: squeezed to 40 %, guests trip their breakers on every host, so the
fallback's proposals are shared out by the allocator every step as well as the policy's. Where no
guest of a batch acts on the fallback (healthy hosts, no bad input) the stack skips that second
allocation, and the production rails cost little more than none.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from wsrl.inputs.ref import ScenarioInput
from wsrl.inputs.setup import input_setup_with_hosts
from wsrl.inputs.simulated import snapshot_from_simulator
from wsrl.pipeline.control import ControlSpec
from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.policies import make_stack
from wsrl.sim.simulator import Simulator

HOSTS = (64, 216)
STEPS = 30


class Fixed:
    """A policy proposing 40 % of each guest's provisioned size (the stack alone is timed)."""

    name = "fixed-40pct"

    def reset(self, snapshot: HostSnapshot) -> None:
        """Nothing to forget."""

    def decide(self, snapshot: HostSnapshot) -> np.ndarray:
        """40 % of provisioned."""
        return 0.4 * snapshot.provisioned_bytes


def snapshots(hosts: int) -> list[HostSnapshot]:
    """``STEPS`` consecutive snapshots of ``hosts`` dense hosts squeezed to 40 %."""
    sim = Simulator(input_setup_with_hosts(ScenarioInput("dense"), hosts=hosts))
    sim.reset(0)
    out = [snapshot_from_simulator(sim)]
    for _ in range(STEPS - 1):
        sim.step(np.where(sim.mask, 0.4 * sim.setup.guests.provisioned_bytes, 0.0))
        out.append(snapshot_from_simulator(sim))
    return out


def decisions_per_s(spec: ControlSpec, series: list[HostSnapshot], seconds: float) -> float:
    """Guest-decisions per second of a stack stepping through ``series`` again and again."""
    guests = int(series[0].mask.sum())
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        stack = make_stack(Fixed(), spec)
        stack.reset(series[0])
        for snapshot in series:
            stack.step(snapshot)
            done += guests
    return done / (time.perf_counter() - started)


def main() -> None:
    """Print (or ``--json``) guest-decisions per second with and without the rails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per figure")
    args = parser.parse_args()
    rows = []
    for hosts in HOSTS:
        series = snapshots(hosts)
        unguarded = decisions_per_s(ControlSpec.unguarded(), series, args.seconds)
        production = decisions_per_s(ControlSpec(), series, args.seconds)
        rows.append(
            {
                "guests": int(series[0].mask.sum()),
                "unguarded_per_s": round(unguarded),
                "production_per_s": round(production),
                "production_over_unguarded": round(production / unguarded, 3),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("control stack: guest-decisions per second (dense hosts, policy fixed at 40 %)")
    print(f"{'guests':>8} {'no rails':>12} {'production rails':>17} {'ratio':>7}")
    for row in rows:
        print(
            f"{row['guests']:>8} {row['unguarded_per_s']:>12,} {row['production_per_s']:>17,} "
            f"{row['production_over_unguarded']:>7.3f}"
        )


if __name__ == "__main__":
    main()
