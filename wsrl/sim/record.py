"""Turn the simulator's state into trace-store rows, so simulated hosts read like real ones."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

from wsrl.sim.simulator import Simulator


def _list_column(values: np.ndarray) -> pa.ListArray:
    """A list<int64> column from a ``[rows, width]`` array."""
    rows, width = values.shape
    offsets = pa.array(np.arange(0, (rows + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1).astype(np.int64)))


def _bytes(values: np.ndarray) -> np.ndarray:
    return np.rint(values).astype(np.int64)


def _horizons(sim: Simulator, pick: Callable[[np.ndarray], np.ndarray]) -> pa.Array:
    """The ``hist_horizon_ms`` column: each ``referenced`` guest's horizon, null where ages are exact."""
    horizons = sim.observed.horizon_ms()
    if horizons is None:
        return pa.nulls(int(sim.mask.sum()), pa.int64())
    picked = pick(horizons)
    finite = np.isfinite(picked)
    return pa.array(np.where(finite, picked, 0).astype(np.int64), mask=~finite)


def step_table(
    sim: Simulator,
    *,
    action_target_bytes: np.ndarray | None = None,
    action_policy: str | None = None,
) -> pa.Table:
    """One trace row per real guest for the simulator's current state.

    Args:
        sim: the simulator, after :meth:`~Simulator.reset` or :meth:`~Simulator.step`.
        action_target_bytes: ``[hosts, guests]`` targets a policy set at this step, if any.
        action_policy: the name of that policy.

    """
    model = sim.model
    guests = sim.setup.guests
    hosts = sim.setup.hosts
    host_index, guest_index = np.nonzero(sim.mask)
    rows = host_index.size

    def pick(values: np.ndarray) -> np.ndarray:
        return values[host_index, guest_index]

    hist = sim.observed_histograms()  # what each guest's source reports, as a live recording holds
    anon_bins = _bytes(pick(hist[:, :, 0, :]))
    file_bins = _bytes(pick(hist[:, :, 1, :]))
    edges = np.broadcast_to(sim.edges_ms, (rows, sim.edges_ms.size))

    events: list[list[str]] = [[] for _ in range(rows)]
    last = sim.last
    if last is not None:
        for name, happened in (
            ("oom", pick(last.oom_kills) > 0),
            ("balloon_stall", pick(last.balloon_stalled)),
            ("balloon_deflate_on_oom", pick(last.balloon_deflated)),
            ("host_swap", last.host_overcommitted[host_index] & (pick(last.host_fault_pages) > 0)),
        ):
            for row in np.flatnonzero(happened):
                events[row].append(name)

    refault_anon = _bytes(pick(model.refault_anon_total))
    refault_file = _bytes(pick(model.refault_file_total))
    columns: dict[str, pa.Array] = {
        "time_ms": pa.array(np.full(rows, sim.time_ms, dtype=np.int64)),
        "host": pa.array([hosts.names[h] for h in host_index], type=pa.string()),
        "guest": pa.array(list(pick(guests.names)), type=pa.string()),
        "hist_edges_ms": _list_column(edges),
        "hist_anon_bytes": _list_column(anon_bins),
        "hist_file_bytes": _list_column(file_bins),
        "hist_horizon_ms": _horizons(sim, pick),
        "provisioned_bytes": pa.array(_bytes(pick(guests.provisioned_bytes))),
        "visible_bytes": pa.array(_bytes(pick(model.visible_bytes))),
        "target_bytes": pa.array(_bytes(pick(model.target_bytes))),
        "usage_bytes": pa.array(_bytes(pick(model.resident_bytes))),
        "refault_anon_total": pa.array(refault_anon),
        "refault_file_total": pa.array(refault_file),
        "major_faults_total": pa.array(refault_anon + refault_file),
        "swap_bytes": pa.array(_bytes(pick(model.swap_bytes))),
        "swap_in_total": pa.array(refault_anon),
        "swap_out_total": pa.array(_bytes(pick(model.swap_out_total))),
        "psi_some_avg10": pa.array(pick(model.psi_some_avg10)),
        "psi_some_total_us": pa.array(_bytes(pick(model.psi_some_total_s) * 1e6)),
        "oom_kills_total": pa.array(pick(model.oom_kills_total).astype(np.int64)),
        "events": pa.array(events, type=pa.list_(pa.string())),
    }
    if action_target_bytes is not None:
        columns["action_target_bytes"] = pa.array(_bytes(pick(np.asarray(action_target_bytes, dtype=float))))
        columns["action_policy"] = pa.array([action_policy] * rows, type=pa.string())
    return pa.table(columns)
