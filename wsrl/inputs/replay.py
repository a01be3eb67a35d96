"""Replay a recorded trace as :class:`~wsrl.pipeline.snapshot.HostSnapshot` objects: the trace input.

A trace (:mod:`wsrl.trace`) stores one row per guest per sample. :func:`read_trace_host` reads one
host of it into ``[times, guests]`` arrays: a :class:`TraceHost`, the
:class:`~wsrl.inputs.source.SnapshotSource` of a recording, whose :meth:`~TraceHost.snapshot` is the
``[1, guests]`` snapshot at its current sample and :meth:`~TraceHost.advance` moves to the next;
:meth:`TraceHost.snapshots` replays every sample time, in time order, for the
:class:`~wsrl.pipeline.observation.ObservationBuilder`, the reference policies and the reward.
Replaying a simulator run gives the same observation rows as the live simulator snapshots it was
recorded from (see *Precision* below).

**Guest slots.** Every guest the host ever reports gets one slot, in name order, for the whole
replay. At a time a guest did not report:

* ``missing="mask"`` (default): the slot is masked (``mask`` False, sizes and histogram 0, so its
  observation row is 0 and policies ignore it). Its cumulative counters (refaults, PSI stall, OOM
  kills) are *held* at their last known value, and before the guest's first sample at its first
  value, so the first sample after a gap differences against the last one before it instead of
  against 0 (the counter increase over a gap is charged to the step after it);
* ``missing="hold"``: within the guest's lifetime (first to last sample) the slot repeats the
  guest's last sample (a stale reading, zero counter rates); outside it the slot is masked.

**What a trace does not carry.** Rows hold what a host reports; the static configuration that a
snapshot also needs (host capacity and reserve, each guest's floor, shares and SLO tier) is read,
in order of preference, from the manifest's ``meta["static"]`` (written by recorders that call
:func:`static_meta`), from the scenario that ``wsrl sim`` recorded (``meta["scenario_path"]``,
rebuilt), or else defaults: capacity = the host's largest total provisioned size, reserve 0, floor
0, default shares and tier. :attr:`TraceHost.static_source` says which. ``balloon_stalled`` comes
from the ``balloon_stall`` event. ``interval_s`` is the time since the previous sample (the first
snapshot: ``meta["step_s"]``, else the first gap). ``extra`` holds the recorded decisions
(``action_target_bytes``: ``[1, guests]`` with NaN where none, ``action_policy``), the presence
mask and the trace directory; there is no simulator in it, so the ``oracle`` policies cannot run on
a replay.

**Precision.** Bytes are stored as integers: histogram and size features match live ones to
float32 rounding. Cumulative counters are stored as integers too, so the features computed from
their differences carry that quantisation: refaults are whole pages (anon and file each rounded,
so a step's refaults are off by at most two pages; ``refault_budget_log`` by at most two pages
over the step's budget), PSI stall is whole microseconds (a step's stall is off by at most 1 us;
``stall_log`` by at most 0.0072 at 10 s steps). With the live counters rounded the same way,
every feature matches to float32 rounding (``tests/test_trace_snapshot.py``).

Required columns per sample: the histogram (``hist_edges_ms``, ``hist_anon_bytes``,
``hist_file_bytes``, one set of edges for the whole host), ``provisioned_bytes`` and
``usage_bytes``. Null optional columns read as: ``visible_bytes`` -> ``target_bytes`` ->
``provisioned_bytes``; ``target_bytes`` -> ``visible_bytes``; ``swap_bytes`` and ``psi_some_avg10``
-> 0; counters -> held at their last known value (0 before any).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from wsrl.errors import TraceError, WsrlError
from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.sim import defaults
from wsrl.sim.arrays import TIER_NAMES
from wsrl.trace.reader import TraceReader

if TYPE_CHECKING:
    from wsrl.sim.arrays import SimSetup

STATIC_META_KEY = "static"
"""Manifest ``meta`` key holding the static host and guest configuration (:func:`static_meta`)."""

MissingRule = Literal["mask", "hold"]
MISSING_RULES: tuple[str, ...] = ("mask", "hold")

_COLUMNS: tuple[str, ...] = (
    "time_ms",
    "host",
    "guest",
    "hist_edges_ms",
    "hist_anon_bytes",
    "hist_file_bytes",
    "hist_horizon_ms",
    "provisioned_bytes",
    "visible_bytes",
    "target_bytes",
    "usage_bytes",
    "refault_anon_total",
    "refault_file_total",
    "swap_bytes",
    "psi_some_avg10",
    "psi_some_total_us",
    "oom_kills_total",
    "events",
    "action_target_bytes",
    "action_policy",
)
_COUNTERS: tuple[str, ...] = ("refault_total", "psi_some_total_s", "oom_kills_total")


@dataclass(frozen=True)
class GuestStatic:
    """A guest's static configuration that trace rows do not carry."""

    floor_bytes: float = 0.0
    shares: float = defaults.SHARES
    tier: int = TIER_NAMES.index(defaults.TIER)


@dataclass(frozen=True)
class HostStatic:
    """A host's static configuration (``capacity_bytes`` ``None``: the host's largest provisioned sum)."""

    capacity_bytes: float | None = None
    reserve_bytes: float = 0.0
    guests: dict[str, GuestStatic] = field(default_factory=dict)


def static_meta(setup: SimSetup) -> dict[str, Any]:
    """The static configuration of a simulation setup, for a trace manifest's ``meta["static"]``.

    Recorders that pass ``meta={STATIC_META_KEY: static_meta(setup)}`` to the trace writer make
    their traces replay with the exact floors, shares, tiers and host sizes.
    """
    guests = setup.guests
    hosts = setup.hosts
    document: dict[str, Any] = {"hosts": {}}
    for h, host in enumerate(hosts.names):
        slots = np.flatnonzero(guests.mask[h])
        document["hosts"][str(host)] = {
            "capacity_bytes": float(hosts.capacity_bytes[h]),
            "reserve_bytes": float(hosts.reserve_bytes[h]),
            "guests": {
                str(guests.names[h, g]): {
                    "floor_bytes": float(guests.floor_bytes[h, g]),
                    "shares": float(guests.shares[h, g]),
                    "tier": TIER_NAMES[int(guests.tier[h, g])],
                }
                for g in slots
            },
        }
    return document


def _static_from_meta(document: Any, where: str) -> dict[str, HostStatic]:
    """Parse ``meta["static"]`` (see :func:`static_meta`)."""
    if not isinstance(document, dict) or not isinstance(document.get("hosts"), dict):
        raise TraceError(f"{where}: field 'meta.{STATIC_META_KEY}.hosts' must be an object")
    result: dict[str, HostStatic] = {}
    for host, entry in document["hosts"].items():
        prefix = f"meta.{STATIC_META_KEY}.hosts.{host}"
        try:
            guests = {
                str(name): GuestStatic(
                    floor_bytes=float(g["floor_bytes"]),
                    shares=float(g["shares"]),
                    tier=TIER_NAMES.index(g["tier"]),
                )
                for name, g in entry.get("guests", {}).items()
            }
            result[str(host)] = HostStatic(
                capacity_bytes=float(entry["capacity_bytes"]),
                reserve_bytes=float(entry["reserve_bytes"]),
                guests=guests,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TraceError(f"{where}: field '{prefix}' is malformed ({exc!r})") from None
    return result


def _static_from_scenario(meta: dict[str, Any], host_count: int) -> dict[str, HostStatic] | None:
    """Rebuild the static configuration from the scenario ``wsrl sim`` recorded, if it still loads.

    Tries ``meta["scenario_path"]`` (as recorded: relative paths are relative to the recorder's
    working directory), then ``meta["scenario_name"]`` as a bundled scenario name.
    """
    if meta.get("traces"):
        # Trace-driven scenarios size their guests from the replayed traces: not rebuilt here.
        return None
    from wsrl.sim.build import build_setup
    from wsrl.sim.config import load_scenario

    for ref in (meta.get("scenario_path"), meta.get("scenario_name")):
        if not isinstance(ref, str) or not ref:
            continue
        try:
            setup = build_setup(load_scenario(ref), hosts=max(host_count, 1))
        except (WsrlError, OSError, ValueError):
            continue
        return _static_from_meta(static_meta(setup), ref)
    return None


@dataclass
class TraceHost:
    """One host of a trace as ``[times, guests]`` arrays; :meth:`snapshots` replays it.

    Attributes:
        directory: the trace directory.
        host: the host's name.
        guest_names: one slot per guest the host ever reported, in name order.
        times_ms: ``[times]`` sample times, ms since the UNIX epoch, increasing.
        present: ``[times, guests]`` the guest reported at that time.
        edges_ms: the histogram's finite bin edges (one set for the whole host).
        columns: ``[times, guests]`` arrays (``[times, guests, 2, bins]`` for ``hist_bytes``) of
            what the guest reported, already filled per the ``missing`` rule; masked slots are 0.
        mask: ``[times, guests]`` the slot holds a guest in the snapshot (per the ``missing`` rule).
        static: the host's static configuration.
        static_source: where it came from: ``manifest``, ``scenario`` or ``defaults``.
        step_s: the recording's control interval, if the manifest says (``meta["step_s"]``).
        missing: the rule for guests absent at a time (``mask`` or ``hold``).
        position: the current sample (what :meth:`snapshot` returns).

    """

    directory: Path
    host: str
    guest_names: list[str]
    times_ms: np.ndarray
    present: np.ndarray
    edges_ms: np.ndarray
    columns: dict[str, np.ndarray]
    mask: np.ndarray
    static: HostStatic
    static_source: str
    step_s: float | None
    missing: str
    action_policy: list[str | None] = field(default_factory=list)
    position: int = 0

    def __len__(self) -> int:
        return int(self.times_ms.size)

    @functools.cached_property
    def _static_arrays(self) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        """Capacity and ``[1, guests]`` floors, shares and tiers of the static configuration."""
        capacity = self.static.capacity_bytes
        if capacity is None:
            capacity = float(np.max(self.columns["provisioned_bytes"].sum(axis=1), initial=0.0))
        statics = [self.static.guests.get(name, GuestStatic()) for name in self.guest_names]
        return (
            float(capacity),
            np.array([[s.floor_bytes for s in statics]], dtype=float),
            np.array([[s.shares for s in statics]], dtype=float),
            np.array([[s.tier for s in statics]], dtype=np.int64),
        )

    def snapshot(self) -> HostSnapshot:
        """The ``[1, guests]`` snapshot at the current sample (:attr:`position`)."""
        return self.snapshot_at(self.position)

    def advance(self) -> bool:
        """Move to the next sample; ``False`` (and no move) at the last one."""
        if self.position + 1 >= len(self):
            return False
        self.position += 1
        return True

    def _horizon_row(self, t: int) -> np.ndarray | None:
        """``[1, guests]`` the histogram horizons at sample ``t``; ``None`` when every bin is dated."""
        horizons = self.columns["hist_horizon_ms"][t][None, :]  # inf outside the mask already
        return horizons.copy() if np.isfinite(horizons).any() else None

    def snapshot_at(self, index: int) -> HostSnapshot:
        """The ``[1, guests]`` snapshot at sample ``index``."""
        t = int(index)
        mask = self.mask[t][None, :]
        if t > 0:
            interval_s = (int(self.times_ms[t]) - int(self.times_ms[t - 1])) / 1000.0
        elif self.step_s is not None:
            interval_s = float(self.step_s)
        elif len(self) > 1:
            interval_s = (int(self.times_ms[1]) - int(self.times_ms[0])) / 1000.0
        else:
            interval_s = 0.0
        cols = self.columns
        provisioned = cols["provisioned_bytes"][t][None, :]
        capacity, floor, shares, tier = self._static_arrays

        def row(values: np.ndarray) -> np.ndarray:
            return np.where(mask, values[t][None, :], 0.0)

        names = np.empty((1, len(self.guest_names)), dtype=object)
        names[0, :] = self.guest_names
        return HostSnapshot(
            time_ms=int(self.times_ms[t]),
            interval_s=interval_s,
            mask=mask.copy(),
            names=names,
            host_names=[self.host],
            capacity_bytes=np.array([capacity]),
            reserve_bytes=np.array([float(self.static.reserve_bytes)]),
            provisioned_bytes=np.where(mask, provisioned, 0.0),
            floor_bytes=np.where(mask, floor, 0.0),
            shares=shares.copy(),
            tier=tier.copy(),
            visible_bytes=row(cols["visible_bytes"]),
            target_bytes=row(cols["target_bytes"]),
            usage_bytes=row(cols["usage_bytes"]),
            edges_ms=self.edges_ms,
            hist_bytes=np.where(mask[..., None, None], cols["hist_bytes"][t][None], 0.0),
            hist_horizon_ms=self._horizon_row(t),
            refault_total=cols["refault_total"][t][None, :].copy(),
            swap_bytes=row(cols["swap_bytes"]),
            psi_some_total_s=cols["psi_some_total_s"][t][None, :].copy(),
            psi_some_avg10=row(cols["psi_some_avg10"]),
            oom_kills_total=cols["oom_kills_total"][t][None, :].astype(np.int64),
            balloon_stalled=(mask & (cols["balloon_stalled"][t][None, :] > 0)),
            extra={
                "trace": str(self.directory),
                "present": self.present[t][None, :].copy(),
                "action_target_bytes": np.where(mask, cols["action_target_bytes"][t][None, :], np.nan),
                "action_policy": self.action_policy[t] if self.action_policy else None,
            },
        )

    def snapshots(self) -> Iterator[HostSnapshot]:
        """Every snapshot in time order from the first (feed them to one ObservationBuilder in this order).

        Replays from sample 0 through :meth:`snapshot` and :meth:`advance`; the cursor ends on the last.
        """
        self.position = 0
        if not len(self):
            return
        yield self.snapshot()
        while self.advance():
            yield self.snapshot()


def trace_host_names(directory: str | Path) -> list[str]:
    """The host names of a trace, sorted.

    Raises:
        TraceError: not a readable trace directory.

    """
    return TraceReader(directory).hosts()


def _horizons_ms(values: np.ndarray) -> np.ndarray:
    """``hist_horizon_ms`` values for the snapshot: ``inf`` where null or not positive (all bins dated)."""
    return np.where(np.isfinite(values) & (values > 0), values, np.inf)


def _numeric(table: pa.Table, name: str) -> np.ndarray:
    """A numeric column as float64 with NaN for nulls."""
    column = table.column(name)
    if column.null_count == len(column):
        return np.full(len(column), np.nan)
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=float)


def _list_matrix(table: pa.Table, name: str, width: int, where: str, guest_of: np.ndarray) -> np.ndarray:
    """A list column of fixed ``width`` as ``[rows, width]`` float64; errors name the first bad row."""
    column = table.column(name).combine_chunks()
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(~np.isfinite(np.asarray(lengths, dtype=float)) | (lengths != width))
    if bad.size:
        row = int(bad[0])
        raise TraceError(
            f"{where}: column {name!r} of guest {guest_of[row]!r} at time_ms "
            f"{table.column('time_ms')[row].as_py()} has {lengths[row]} values, expected {width}"
        )
    flat = pc.list_flatten(column).to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=float).reshape(-1, width)


def _fill_counters(values: np.ndarray) -> np.ndarray:
    """``[times, guests]`` counters with NaN (absent or null) forward-filled, leading NaN back-filled."""
    out = values.copy()
    for g in range(out.shape[1]):
        column = out[:, g]
        known = np.flatnonzero(np.isfinite(column))
        if known.size == 0:
            column[:] = 0.0
            continue
        index = np.maximum.accumulate(np.where(np.isfinite(column), np.arange(column.size), -1))
        index = np.where(index < 0, known[0], index)
        out[:, g] = column[index]
    return out


def read_trace_host(
    directory: str | Path,
    host: str | None = None,
    *,
    missing: MissingRule = "mask",
    static: HostStatic | None = None,
) -> TraceHost:
    """Read one host of a trace for replay (see the module docstring).

    Args:
        directory: the trace directory.
        host: the host to read; ``None`` only when the trace has exactly one host.
        missing: ``mask`` or ``hold``: what a slot holds at a time its guest did not report.
        static: the host's static configuration; ``None`` reads it from the trace (module docstring).

    Raises:
        WsrlError: not a trace, an unknown host, an unknown ``missing`` rule, or a sample without a
            required column (one line naming the trace, the column, the guest and the time).

    """
    if missing not in MISSING_RULES:
        raise WsrlError(f"missing={missing!r}: choose from {', '.join(MISSING_RULES)}")
    reader = TraceReader(directory)
    where = str(reader.directory)
    hosts = reader.hosts()
    if host is None:
        if len(hosts) != 1:
            raise TraceError(f"{where}: the trace has {len(hosts)} hosts ({', '.join(hosts[:5])}); name one")
        host = hosts[0]
    elif host not in hosts:
        raise TraceError(f"{where}: no host {host!r} in the trace (it has {', '.join(hosts[:5]) or 'none'})")
    table = reader.read_table(list(_COLUMNS), hosts=[host])
    meta = reader.manifest.get("meta") or {}
    if not isinstance(meta, dict):
        meta = {}

    time_column = table.column("time_ms").to_numpy()
    guest_column = np.asarray(table.column("guest").to_pylist(), dtype=object)
    times_ms, t_index = np.unique(time_column, return_inverse=True)
    guest_names = sorted(set(guest_column.tolist()))
    slot_of = {name: slot for slot, name in enumerate(guest_names)}
    g_index = np.fromiter((slot_of[name] for name in guest_column), dtype=np.int64, count=guest_column.size)
    shape = (times_ms.size, len(guest_names))
    present = np.zeros(shape, dtype=bool)
    present[t_index, g_index] = True

    def first_null(name: str) -> None:
        nulls = table.column(name).is_null().to_numpy(zero_copy_only=False)
        if nulls.any():
            row = int(np.flatnonzero(nulls)[0])
            raise TraceError(
                f"{where}: column {name!r} is null for guest {guest_column[row]!r} at time_ms "
                f"{int(time_column[row])} (replay needs it)"
            )

    for name in ("hist_edges_ms", "hist_anon_bytes", "hist_file_bytes", "provisioned_bytes", "usage_bytes"):
        first_null(name)
    if table.num_rows == 0:
        raise TraceError(f"{where}: host {host!r} has no samples")
    edges = np.asarray(table.column("hist_edges_ms")[0].as_py(), dtype=np.int64)
    edge_rows = _list_matrix(table, "hist_edges_ms", edges.size, where, guest_column)
    differs = np.flatnonzero((edge_rows != edges[None, :]).any(axis=1))
    if differs.size:
        row = int(differs[0])
        raise TraceError(
            f"{where}: column 'hist_edges_ms' of guest {guest_column[row]!r} at time_ms "
            f"{int(time_column[row])} differs from the host's first histogram (one set of edges per host)"
        )
    bins = edges.size + 1
    anon = _list_matrix(table, "hist_anon_bytes", bins, where, guest_column)
    file = _list_matrix(table, "hist_file_bytes", bins, where, guest_column)

    def grid(values: np.ndarray) -> np.ndarray:
        out = np.full(shape, np.nan)
        out[t_index, g_index] = values
        return out

    provisioned = grid(_numeric(table, "provisioned_bytes"))
    visible_raw = _numeric(table, "visible_bytes")
    target_raw = _numeric(table, "target_bytes")
    visible = np.where(np.isnan(visible_raw), target_raw, visible_raw)
    visible = np.where(np.isnan(visible), _numeric(table, "provisioned_bytes"), visible)
    target = np.where(np.isnan(target_raw), visible, target_raw)
    refault = np.nansum(
        np.stack([_numeric(table, "refault_anon_total"), _numeric(table, "refault_file_total")]), axis=0
    )
    refault_known = ~(
        np.isnan(_numeric(table, "refault_anon_total")) & np.isnan(_numeric(table, "refault_file_total"))
    )
    stalled = np.asarray(
        [("balloon_stall" in (ev or [])) for ev in table.column("events").to_pylist()], dtype=float
    )
    hist = np.zeros((*shape, 2, bins))
    hist[t_index, g_index, 0] = anon
    hist[t_index, g_index, 1] = file
    columns: dict[str, np.ndarray] = {
        "provisioned_bytes": provisioned,
        "visible_bytes": grid(visible),
        "target_bytes": grid(target),
        "usage_bytes": grid(_numeric(table, "usage_bytes")),
        "swap_bytes": grid(np.nan_to_num(_numeric(table, "swap_bytes"))),
        "psi_some_avg10": grid(np.nan_to_num(_numeric(table, "psi_some_avg10"))),
        "balloon_stalled": grid(stalled),
        "refault_total": grid(np.where(refault_known, refault, np.nan)),
        "psi_some_total_s": grid(_numeric(table, "psi_some_total_us") / 1e6),
        "oom_kills_total": grid(_numeric(table, "oom_kills_total")),
        "action_target_bytes": grid(_numeric(table, "action_target_bytes")),
        "hist_horizon_ms": grid(_horizons_ms(_numeric(table, "hist_horizon_ms"))),
    }
    for name in _COUNTERS:
        columns[name] = _fill_counters(columns[name])

    mask = present.copy()
    if missing == "hold":
        # Within each guest's lifetime, carry its last sample forward.
        source = np.maximum.accumulate(np.where(present, np.arange(shape[0])[:, None], -1), axis=0)
        seen = present.cumsum(axis=0) > 0
        alive_after = present[::-1].cumsum(axis=0)[::-1] > 0
        mask = seen & alive_after
        rows = np.where(mask, source, 0)
        cols_index = np.broadcast_to(np.arange(shape[1]), shape)
        for name, values in columns.items():
            if name in _COUNTERS:
                continue
            held = values[rows, cols_index]
            if name == "action_target_bytes":  # a decision or an event is not repeated
                held = np.where(present, values, np.nan)
            elif name == "balloon_stalled":
                held = np.where(present, values, 0.0)
            columns[name] = held
        hist = hist[rows, cols_index]
    for name, values in columns.items():
        if name == "hist_horizon_ms":  # null and lies are inf already (_horizons_ms)
            columns[name] = np.where(mask, values, np.inf)
        elif name not in _COUNTERS and name != "action_target_bytes":
            columns[name] = np.where(mask, np.nan_to_num(values), 0.0)
    columns["hist_bytes"] = np.where(mask[..., None, None], hist, 0.0)

    policies: list[str | None] = [None] * shape[0]
    policy_column = table.column("action_policy").to_pylist()
    for row, name in enumerate(policy_column):
        if name is not None and policies[int(t_index[row])] is None:
            policies[int(t_index[row])] = name

    source_name = "defaults"
    static_config = static
    if static_config is not None:
        source_name = "argument"
    elif STATIC_META_KEY in meta:
        static_config = _static_from_meta(meta[STATIC_META_KEY], f"{where}/trace.json").get(host)
        source_name = "manifest"
    else:
        rebuilt = _static_from_scenario(meta, len(hosts))
        if rebuilt is not None and host in rebuilt and set(guest_names) <= set(rebuilt[host].guests):
            static_config = rebuilt[host]
            source_name = "scenario"
    if static_config is None:
        static_config = HostStatic()
        source_name = "defaults"
    step_s = meta.get("step_s")
    return TraceHost(
        directory=reader.directory,
        host=host,
        guest_names=guest_names,
        times_ms=times_ms.astype(np.int64),
        present=present,
        edges_ms=edges,
        columns=columns,
        mask=mask,
        static=static_config,
        static_source=source_name,
        step_s=float(step_s) if isinstance(step_s, int | float) and math.isfinite(step_s) else None,
        missing=missing,
        action_policy=policies,
    )


def trace_snapshots(
    directory: str | Path, host: str | None = None, *, missing: MissingRule = "mask"
) -> Iterator[HostSnapshot]:
    """Snapshots of one host of a trace in time order (shorthand for :func:`read_trace_host`)."""
    yield from read_trace_host(directory, host, missing=missing).snapshots()
