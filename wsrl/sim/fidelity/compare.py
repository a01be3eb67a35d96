"""Predict what the real-kernel ladder measured, and put both side by side.

``python -m wsrl.sim.fidelity.compare MEASURED.json [--doc docs/fidelity.md] [--json]`` reads the
output of :mod:`wsrl.lab.measure`, runs the simulator on the same populations, limits and
swap settings, and prints (or writes into the ``--doc`` file between its markers) a table of
measured against predicted refaults, stall, OOMs and per-population residency.

The simulator runs one memcg guest whose step is the rung's measured window (its wall time): one
warm-up step, then one measured step. The real kernel needs a warm-up of several access intervals
to reach its steady state; the model does not: for constant demand its reclaim brings the evicted
bytes to Che's equilibrium at once, in the first step, and refaults run at the steady rate from
then on (``docs/simulator.md``, "Refaults and stall"). The warm-up step only makes the measured
step start from that equilibrium; more warm-up steps change nothing (tested).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsrl.errors import WsrlError
from wsrl.sim.arrays import (
    ACTUATOR_MEMCG,
    KERNEL_CLASSIC,
    KERNEL_MGLRU,
    SimSetup,
    guest_arrays,
    host_arrays,
)
from wsrl.sim.constant import ConstantDemand
from wsrl.sim.defaults import SWAPPINESS
from wsrl.sim.simulator import Simulator
from wsrl.units import GIB, MIB, PAGE_BYTES

WARMUP_STEPS = 1
HOST_BYTES = 64 * GIB
BEGIN_MARKER = "<!-- fidelity-table:begin -->"
END_MARKER = "<!-- fidelity-table:end -->"


@dataclass
class RungComparison:
    """Measured and predicted figures for one rung of the ladder."""

    case: str
    rung: str
    limit_mib: float
    swap: bool
    measured_oom: bool
    predicted_oom: bool
    measured_anon_refaults_per_s: float | None
    predicted_anon_refaults_per_s: float | None
    measured_file_refaults_per_s: float | None
    predicted_file_refaults_per_s: float | None
    measured_psi_some: float | None
    predicted_stall: float | None
    measured_resident_fraction: dict[str, float]
    predicted_resident_fraction: dict[str, float]
    patterns: list[str]


def _window_s(result: dict[str, Any], default_s: float | None) -> float:
    """The rung's measured window: its wall time, else (an OOM before the window) the planned one."""
    window = result.get("window") or {}
    for value in (window.get("wall_s"), result.get("duration_s"), default_s):
        if value is not None and float(value) > 0:
            return float(value)
    raise WsrlError(f"{result['case']} {result['rung']['label']}: no measured or planned window length")


def predict_rung(
    result: dict[str, Any],
    zram_bytes: int,
    *,
    default_window_s: float | None = None,
    warmup_steps: int = WARMUP_STEPS,
    kernel: int = KERNEL_MGLRU,
    swappiness: float = SWAPPINESS,
) -> RungComparison:
    """Run the simulator on one measured rung's populations, limit and swap setting.

    The simulator's step is the rung's window; ``warmup_steps`` steps run before the measured one
    (a ``classic`` kernel's anon/file balance follows its refaults: it gets as many steps as the
    rung's measured warm-up lasted, at least ``warmup_steps``).
    """
    populations = result["populations"]
    sizes = np.array([[[float(p["size_bytes"]) for p in populations]]])
    rates = np.array([[[1.0 / float(p["access_interval_s"]) for p in populations]]])
    is_anon = np.array([[[p["type"] == "anon" for p in populations]]])
    # The lab's "loop" pattern is a cyclic sweep; "random" touches pages independently.
    is_sweep = np.array([[[p.get("pattern", "random") == "loop" for p in populations]]])
    limit_bytes = float(result["populations_limit_bytes"])
    swap = bool(result["rung"]["swap"])
    guests = guest_arrays(
        (1, 1),
        max(limit_bytes, sizes.sum()),
        unevictable_bytes=0.0,
        swap_capacity_bytes=float(zram_bytes) if swap else 0.0,
        actuator=ACTUATOR_MEMCG,
        oom_restart_s=1e9,  # the measured workload does not come back after an OOM kill
        kernel=kernel,
        swappiness=swappiness,
    )
    window = result.get("window") or {}
    step_s = _window_s(result, default_window_s)
    if kernel == KERNEL_CLASSIC:
        warmup_steps = max(warmup_steps, math.ceil(float(result.get("warmup_s") or 0.0) / step_s))
    setup = SimSetup(
        scenario=f"fidelity:{result['case']}",
        guests=guests,
        hosts=host_arrays(1, HOST_BYTES),
        demand=ConstantDemand(sizes, rates, is_anon, is_sweep),
        step_s=step_s,
    )
    sim = Simulator(setup)
    sim.reset(0)
    target = np.array([[limit_bytes]])
    for _ in range(warmup_steps):
        sim.step(target)
    anon0, file0, stall0 = (
        float(sim.model.refault_anon_total[0, 0]),
        float(sim.model.refault_file_total[0, 0]),
        float(sim.model.psi_some_total_s[0, 0]),
    )
    sim.step(target)
    elapsed = step_s
    predicted_oom = bool(sim.model.oom_kills_total[0, 0] > 0)
    resident = 1.0 - np.divide(
        sim.model.evicted_bytes[0, 0], sizes[0, 0], out=np.zeros(len(populations)), where=sizes[0, 0] > 0
    )
    measured_oom = result.get("outcome") == "oom_killed" or int(result.get("oom_kills") or 0) > 0
    measured_fraction = {
        p["name"]: float(p["resident_fraction_mean"])
        for p in (result.get("workload") or {}).get("populations", [])
        if p.get("resident_fraction_mean") is not None
    }
    has_file = any(p["type"] == "file" for p in populations)
    model = sim.model
    predicted_anon = (float(model.refault_anon_total[0, 0]) - anon0) / elapsed
    predicted_file = (float(model.refault_file_total[0, 0]) - file0) / elapsed
    predicted_stall = (float(model.psi_some_total_s[0, 0]) - stall0) / elapsed
    measured_file = window.get("refault_file_per_s")
    return RungComparison(
        case=result["case"],
        rung=result["rung"]["label"],
        limit_mib=limit_bytes / MIB,
        swap=swap,
        measured_oom=measured_oom,
        predicted_oom=predicted_oom,
        measured_anon_refaults_per_s=None if measured_oom else window.get("refault_anon_per_s"),
        predicted_anon_refaults_per_s=None if predicted_oom else predicted_anon,
        measured_file_refaults_per_s=None if measured_oom or not has_file else measured_file,
        predicted_file_refaults_per_s=None if predicted_oom or not has_file else predicted_file,
        measured_psi_some=None if measured_oom else window.get("group_psi_some_fraction"),
        predicted_stall=None if predicted_oom else predicted_stall,
        measured_resident_fraction=measured_fraction,
        predicted_resident_fraction={p["name"]: float(r) for p, r in zip(populations, resident, strict=True)},
        patterns=sorted({p.get("pattern", "random") for p in populations}),
    )


def compare(measured: dict[str, Any]) -> list[RungComparison]:
    """Predictions for every rung of a measured ladder."""
    if not str(measured.get("schema", "")).startswith("wsrl.fidelity.measured/"):
        raise WsrlError("not a wsrl fidelity measurement (schema wsrl.fidelity.measured/N expected)")
    page_bytes = (measured.get("machine") or {}).get("page_size_bytes", PAGE_BYTES)
    if page_bytes != PAGE_BYTES:
        raise WsrlError(
            f"measured with {page_bytes}-byte pages; the model counts refaults in {PAGE_BYTES}-byte pages"
        )
    settings = measured["settings"]
    zram_bytes = int(settings["zram_size_bytes"])
    default_window_s = settings.get("duration_s_override") or settings.get("duration_s")
    machine = measured.get("machine") or {}
    # The lab's memcgs reclaim with the host kernel: MGLRU where it was on, else the classic lists.
    kernel = KERNEL_MGLRU if machine.get("mglru", True) else KERNEL_CLASSIC
    swappiness = float(machine.get("vm_swappiness", SWAPPINESS))
    return [
        predict_rung(
            result, zram_bytes, default_window_s=default_window_s, kernel=kernel, swappiness=swappiness
        )
        for result in measured["results"]
    ]


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown_table(rows: list[RungComparison]) -> str:
    """The comparison as a Markdown table (measured / predicted in each cell)."""
    lines = [
        "| case | rung | room MiB | swap | anon refaults/s | file refaults/s | stall (PSI some) | OOM "
        "| in memory per population |",
        "|---|---|---:|---|---:|---:|---:|---|---|",
    ]
    for row in rows:
        residency = ", ".join(
            f"{name} {row.measured_resident_fraction.get(name, float('nan')):.2f} / {predicted:.2f}"
            for name, predicted in row.predicted_resident_fraction.items()
            if not (row.measured_oom or row.predicted_oom)
        )
        lines.append(
            f"| {row.case} | {row.rung} | {row.limit_mib:.0f} | {'zram' if row.swap else 'off'} "
            f"| {_rate(row.measured_anon_refaults_per_s)} / {_rate(row.predicted_anon_refaults_per_s)} "
            f"| {_rate(row.measured_file_refaults_per_s)} / {_rate(row.predicted_file_refaults_per_s)} "
            f"| {_fraction(row.measured_psi_some)} / {_fraction(row.predicted_stall)} "
            f"| {'yes' if row.measured_oom else 'no'} / {'yes' if row.predicted_oom else 'no'} "
            f"| {residency or '-'} |"
        )
    return "\n".join(lines)


def write_into_doc(doc: Path, table: str, source: Path, marker: str = "fidelity-table") -> None:
    """Replace the text between the doc's ``<!-- marker:begin/end -->`` lines with ``table``."""
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    text = doc.read_text()
    if begin not in text or end not in text:
        raise WsrlError(f"{doc}: no {begin} ... {end} markers to write the table between")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    body = f"{begin}\n<!-- generated from {source} by `make fidelity` -->\n{table}\n{end}"
    doc.write_text(head + body + tail)


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m wsrl.sim.fidelity.compare", description=__doc__)
    parser.add_argument("measured", type=Path, help="JSON written by wsrl.lab.measure")
    parser.add_argument("--doc", type=Path, help="Markdown file whose marked table to rewrite")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    parser.add_argument(
        "--marker", default="fidelity-table", help="the doc's table markers: <!-- MARKER:begin/end -->"
    )
    args = parser.parse_args(argv)
    try:
        try:
            measured = json.loads(args.measured.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise WsrlError(f"{args.measured}: cannot read the measurement: {exc}") from None
        rows = compare(measured)
        table = markdown_table(rows)
        if args.doc is not None:
            write_into_doc(args.doc, table, args.measured, args.marker)
        if args.json:
            print(json.dumps([asdict(row) for row in rows], indent=2))
        else:
            print(table)
    except WsrlError as exc:
        print(f"compare: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
