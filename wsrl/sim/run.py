"""Run a simulation for a duration, optionally recording it as a trace, and summarise it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsrl.sim.arrays import SimSetup
from wsrl.sim.che import population_sum
from wsrl.sim.record import step_table
from wsrl.sim.simulator import Simulator
from wsrl.trace.writer import TraceWriter

# Idle-age thresholds the summary reports the cold fraction at, seconds. 120 s is the far-memory
# paper's cold threshold (Lagar-Cavilla et al., ASPLOS'19).
COLD_THRESHOLDS_S = (60, 120, 600, 3600)


@dataclass
class SimSummary:
    """What a simulation run did, over all its guests (the ``wsrl sim --json`` document).

    ``cold_frac_*`` are shares of the guests' resident pages idle for longer than the threshold,
    averaged over time (weighted by resident bytes). ``*_resident_bytes`` include each guest's
    unevictable memory, like ``usage_bytes`` in the trace. ``refaults_per_s`` and
    ``host_faults_per_s`` are pages per second over all guests together.
    """

    scenario: str
    seed: int
    hosts: int
    guests: int
    steps: int
    step_s: float
    duration_s: float
    cold_frac_120s: float
    cold_frac_by_threshold_s: dict[str, float]
    refaults_per_s: float
    host_faults_per_s: float
    stall_frac_mean: float
    oom_events: int
    balloon_stall_steps: int
    host_swap_steps: int
    mean_resident_bytes: float
    provisioned_bytes: float
    trace: str | None = None
    trace_rows: int = 0
    per_guest: list[dict[str, Any]] = field(default_factory=list)

    def to_json_dict(self) -> dict[str, object]:
        """Plain JSON-ready dict."""
        return asdict(self)


def run_simulation(
    setup: SimSetup,
    duration_s: float,
    *,
    seed: int = 0,
    out: str | Path | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> SimSummary:
    """Simulate ``duration_s`` with every guest at its provisioned size; record to ``out`` if given.

    Args:
        setup: what to simulate.
        duration_s: simulated time; rounded up to whole steps.
        seed: demand seed.
        out: trace directory to write (the trace store format); ``None`` records nothing.
        on_step: called as ``on_step(done, total)`` after every step (progress bars).

    """
    sim = Simulator(setup)
    sim.reset(seed)
    steps = max(1, math.ceil(duration_s / sim.step_s))
    guests = setup.guests
    provisioned = np.where(guests.mask, guests.provisioned_bytes, 0.0)
    cold_sums = dict.fromkeys(COLD_THRESHOLDS_S, 0.0)
    # Cold fractions are shares of resident *pages* (the unevictable part has no idle age);
    # resident sizes in the summary include the unevictable part, like usage_bytes in the trace.
    page_sum = 0.0
    guest_page_sum = np.zeros(guests.shape)
    guest_cold_sum = np.zeros(guests.shape)
    guest_resident_sum = np.zeros(guests.shape)
    stall_sum = 0.0
    host_swap_steps = 0
    writer = (
        TraceWriter(
            out,
            source="sim",
            description=f"wsrl sim of scenario {setup.scenario}",
            meta={**setup.meta, "scenario": setup.scenario, "seed": seed, "step_s": sim.step_s},
            flush_rows=50_000,
        )
        if out is not None
        else None
    )
    rows = 0
    try:
        for index in range(steps):
            result = sim.step(provisioned)
            guest_pages = population_sum(sim.model.resident_pop_bytes)
            guest_page_sum += guest_pages
            page_sum += guest_pages.sum()
            guest_resident_sum += sim.model.resident_bytes
            for threshold in COLD_THRESHOLDS_S:
                cold = sim.model.cold_bytes(threshold)
                cold_sums[threshold] += cold.sum()
                if threshold == 120:
                    guest_cold_sum += cold
            stall_sum += result.stall_frac[guests.mask].mean()
            host_swap_steps += int(result.host_overcommitted.sum())
            if writer is not None:
                table = step_table(sim)
                writer.append_table(table)
                rows += table.num_rows
            if on_step is not None:
                on_step(index + 1, steps)
    finally:
        if writer is not None:
            writer.close()
    model = sim.model
    mask = guests.mask
    refaults = (model.refault_anon_total + model.refault_file_total)[mask]
    elapsed_s = steps * sim.step_s
    # Cold fraction averaged over time: per-step cold / resident pages, weighted by resident bytes.
    cold_frac = {str(t): float(cold_sums[t] / max(page_sum, 1.0)) for t in COLD_THRESHOLDS_S}
    per_guest = [
        {
            "host": setup.hosts.names[h],
            "guest": str(guests.names[h, g]),
            "provisioned_bytes": int(guests.provisioned_bytes[h, g]),
            "resident_bytes": int(model.resident_bytes[h, g]),
            "mean_resident_bytes": float(guest_resident_sum[h, g] / steps),
            "cold_frac_120s": float(guest_cold_sum[h, g] / max(guest_page_sum[h, g], 1.0)),
            "refaults_per_s": float(
                (model.refault_anon_total[h, g] + model.refault_file_total[h, g]) / elapsed_s
            ),
            "oom_kills": int(model.oom_kills_total[h, g]),
        }
        for h, g in zip(*np.nonzero(mask), strict=True)
    ]
    return SimSummary(
        scenario=setup.scenario,
        seed=seed,
        hosts=int(mask.shape[0]),
        guests=int(mask.sum()),
        steps=steps,
        step_s=sim.step_s,
        duration_s=elapsed_s,
        cold_frac_120s=cold_frac["120"],
        cold_frac_by_threshold_s=cold_frac,
        refaults_per_s=float(refaults.sum() / elapsed_s),
        host_faults_per_s=float(model.host_fault_total[mask].sum() / elapsed_s),
        stall_frac_mean=float(stall_sum / steps),
        oom_events=int(model.oom_kills_total[mask].sum()),
        balloon_stall_steps=int(model.balloon_stall_steps[mask].sum()),
        host_swap_steps=host_swap_steps,
        mean_resident_bytes=float(guest_resident_sum[mask].sum() / steps),
        provisioned_bytes=float(provisioned.sum()),
        trace=None if out is None else str(out),
        trace_rows=rows,
        per_guest=per_guest,
    )
