"""Trace-driven guests: demand that follows a recorded trace (Bitbrains and the like).

A trace such as Bitbrains records, per VM and sample, how much memory was *active* (VMware's
sampled-activity estimate) against what was provisioned, and nothing about idle ages, page cache
or refaults. To drive the page-population model from it, each trace guest becomes three
populations, and **everything but the first is an assumption** (a :class:`TraceModel`; the
defaults, and why, are those of the scenario keys in :class:`wsrl.sim.config_scenario.GuestConfig`):

1. **hot** (anon): the active memory of the trace, linearly interpolated between samples, touched
   every ``hot_access_interval_s``.
2. **warm** (file): ``idle_fraction * warm_share * rest``, touched every ``warm_access_interval_s``:
   page cache of files read now and then.
3. **cold** (anon): ``idle_fraction * (1 - warm_share) * rest``, touched every
   ``cold_access_interval_s``: heap and tmpfs allocated long ago.

with ``rest = provisioned - unevictable - active`` (>= 0): memory the guest was given that the
trace does not call active. ``idle_fraction`` says how much of it a long-running guest has filled
with resident but idle pages (the rest is free); ``warm_share`` splits that between warm page
cache and cold anon.

Other rules: the provisioned size of a guest is the largest provisioned size in the replayed
window (null rows ignored; ``trace_fallback_provisioned_gib`` for guests that have none); active
memory above ``provisioned - unevictable`` is clipped (Bitbrains reports usage above provisioned
at times); long gaps are bridged by the same linear interpolation. Time 0 of a series is the start
of its window. Without a loop, the first sample holds before it and the last after it. With a
loop of period ``L`` (the window's length), time ``t`` plays ``t mod L``, and between the last
sample and the first sample of the next lap (at its time + ``L``) the value is interpolated
linearly too, so a lap joins the next without a jump.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from wsrl.errors import TraceError
from wsrl.sim.config_trace import parse_trace_start
from wsrl.trace.reader import TraceReader

POPULATIONS = 3
"""Populations per trace guest: hot anon, warm file, cold anon."""
HOT, WARM, COLD = 0, 1, 2


@dataclass(frozen=True)
class TraceModel:
    """How a trace guest's memory beyond its active set is modelled (see the module docstring).

    No defaults here: a scenario's guest entry gives them (:class:`wsrl.sim.config_scenario.GuestConfig`).
    """

    hot_access_interval_s: float
    warm_access_interval_s: float
    cold_access_interval_s: float
    idle_fraction: float
    warm_share: float


@dataclass
class TraceSeries:
    """One trace guest's active memory over the replayed window.

    Attributes:
        key: the guest's name in the trace (``host/guest`` where a name is on several hosts).
        times_s: sample times in seconds from the window start, non-decreasing.
        active_bytes: active memory at those times.
        provisioned_bytes: largest provisioned size in the window, None when the trace has none.
        period_s: loop length when the window loops (the window's length), else ``inf``.

    """

    key: str
    times_s: np.ndarray
    active_bytes: np.ndarray
    provisioned_bytes: float | None
    period_s: float = float("inf")


@dataclass
class TraceWindow:
    """The series of the selected guests over one window of one trace."""

    directory: Path
    start_ms: int
    length_s: float
    series: dict[str, TraceSeries] = field(default_factory=dict)


def load_trace_window(
    directory: str | Path,
    keys: Sequence[str],
    *,
    column: str = "working_set_bytes",
    start: str | float | datetime | date | None = None,
    duration_s: float | None = None,
    loop: bool = False,
) -> TraceWindow:
    """Read the selected guests' active memory and provisioned size with ``TraceReader.read_table``.

    ``start`` is what a scenario's ``trace_start`` holds (None: the first sample of the selected
    guests). The series' times count from the window's start. A looping window of length 0 (one
    sample time) does not loop. Raises :class:`TraceError` for an unusable window or guest.
    """
    reader = TraceReader(directory)
    guest_names = sorted({k.split("/", 1)[-1] for k in keys})
    start_ms: int | None = None
    if start is None and duration_s is not None:
        start = 0.0  # the window's end needs its start: the first sample
    if start is not None:
        how, value = parse_trace_start(start)
        if how == "abs":
            start_ms = round(value)
        else:
            probe = reader.read_table(["time_ms"], guests=guest_names, sort=False)
            if probe.num_rows == 0:
                raise TraceError(f"{directory}: no samples for {', '.join(keys)}")
            start_ms = int(pc.min(probe.column("time_ms")).as_py()) + round(value * 1000)
    end_ms = None if start_ms is None or duration_s is None else start_ms + round(duration_s * 1000)
    table = reader.read_table(
        ["time_ms", "host", "guest", column, "provisioned_bytes"],
        guests=guest_names,
        start_ms=start_ms,
        end_ms=end_ms,
    )
    if table.num_rows == 0:
        raise TraceError(f"{directory}: no samples for {', '.join(keys)} in the window")
    times = table.column("time_ms").to_numpy()
    if start_ms is None:
        start_ms = int(times.min())
    hosts = np.asarray(table.column("host").to_pylist(), dtype=object)
    guests = np.asarray(table.column("guest").to_pylist(), dtype=object)
    active_col = table.column(column)
    prov_col = table.column("provisioned_bytes")
    active_valid = active_col.is_valid().to_numpy(zero_copy_only=False)
    prov_valid = prov_col.is_valid().to_numpy(zero_copy_only=False)
    active = active_col.fill_null(0).to_numpy().astype(np.float64)
    prov = prov_col.fill_null(0).to_numpy().astype(np.float64)
    if end_ms is None:
        steps = np.diff(np.unique(times))
        last_step_ms = float(np.median(steps)) if steps.size else 0.0
        length_s = (float(times.max()) - start_ms + last_step_ms) / 1000.0
    else:
        length_s = (end_ms - start_ms) / 1000.0
    window = TraceWindow(Path(directory), start_ms, length_s)
    for key in keys:
        host, name = key.split("/", 1) if "/" in key else (None, key)
        rows = guests == name if host is None else (guests == name) & (hosts == host)
        use = rows & active_valid
        if not use.any():
            raise TraceError(f"{directory}: trace guest {key} has no {column} in the window")
        t_s = (times[use] - start_ms) / 1000.0
        order = np.argsort(t_s, kind="stable")
        prov_rows = rows & prov_valid & (prov > 0)
        window.series[key] = TraceSeries(
            key=key,
            times_s=t_s[order],
            active_bytes=np.maximum(active[use][order], 0.0),
            provisioned_bytes=float(prov[prov_rows].max()) if prov_rows.any() else None,
            period_s=length_s if loop and length_s > 0 else float("inf"),
        )
    return window


@dataclass(frozen=True)
class TraceSlot:
    """One simulated guest replaying one trace series.

    Attributes:
        guest: flat guest index ``h * G + g``.
        series: what it replays (several guests may share one series).
        provisioned_bytes: its provisioned size.
        unevictable_bytes: memory modelled apart from the populations.
        model: how the memory beyond the active set is modelled.

    """

    guest: int
    series: TraceSeries
    provisioned_bytes: float
    unevictable_bytes: float
    model: TraceModel


class TraceDemand:
    """Demand of trace-driven guests; implements :class:`wsrl.sim.arrays.DemandSource`.

    Guests it does not drive get size 0. Interpolation is vectorised over series: all series are
    laid end to end in one sorted array (row ``r`` shifted by ``r * stride``) so one
    ``searchsorted`` finds every guest's bracketing samples.
    """

    def __init__(self, shape: tuple[int, int, int], slots: Sequence[TraceSlot]) -> None:
        pops = shape[2]
        if pops < POPULATIONS:
            raise ValueError(f"trace guests need {POPULATIONS} populations, layout has {pops}")
        self.shape = shape
        series: list[TraceSeries] = []
        index: dict[int, int] = {}
        for slot in slots:
            if id(slot.series) not in index:
                index[id(slot.series)] = len(series)
                series.append(slot.series)
        self.series = series
        self._row = np.array([index[id(s.series)] for s in slots], dtype=np.intp)
        base = np.array([s.guest * pops for s in slots], dtype=np.intp)
        self._hot, self._warm, self._cold = base + HOT, base + WARM, base + COLD
        self._prov = np.array([s.provisioned_bytes for s in slots], dtype=np.float64)
        self._room = np.maximum(self._prov - np.array([s.unevictable_bytes for s in slots]), 0.0)
        idle = np.array([s.model.idle_fraction for s in slots])
        warm_share = np.array([s.model.warm_share for s in slots])
        self._warm_part = idle * warm_share
        self._cold_part = idle * (1.0 - warm_share)
        self._rates = [
            np.array([1.0 / s.model.hot_access_interval_s for s in slots]),
            np.array([1.0 / s.model.warm_access_interval_s for s in slots]),
            np.array([1.0 / s.model.cold_access_interval_s for s in slots]),
        ]
        self.pop_is_anon = np.zeros(shape, dtype=bool)
        flat_anon = self.pop_is_anon.reshape(-1)
        flat_anon[self._hot] = True
        flat_anon[self._cold] = True
        # Flat, sorted time axis over all series.
        lengths = np.array([s.times_s.size for s in series], dtype=np.intp)
        self._start = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.intp)
        self._last = self._start + lengths - 1
        span = max(float(np.ptp(s.times_s)) + abs(float(s.times_s[0])) for s in series) if series else 0.0
        self._stride = 2.0 ** np.ceil(np.log2(2.0 * span + 2.0))
        self._row_shift = np.arange(len(series)) * self._stride
        self._first_t = np.array([s.times_s[0] for s in series]) if series else np.zeros(0)
        self._last_t = np.array([s.times_s[-1] for s in series]) if series else np.zeros(0)
        self._period = np.array([s.period_s for s in series]) if series else np.zeros(0)
        self._looping = np.isfinite(self._period)
        self._loops = bool(self._looping.any())
        flat_t = [s.times_s + r * self._stride for r, s in enumerate(series)]
        self._flat_t = np.concatenate(flat_t) if flat_t else np.zeros(0)
        self._flat_a = np.concatenate([s.active_bytes for s in series]) if series else np.zeros(0)
        # A looping series runs from its last sample to the next lap's first, at first_t + period.
        self._wrap_gap = self._first_t + self._period - self._last_t
        self._first_a = self._flat_a[self._start] if series else np.zeros(0)
        self._last_a = self._flat_a[self._last] if series else np.zeros(0)

    def reset(self, seed: int) -> None:
        """Restart from time 0 (a trace is deterministic: the seed is unused)."""

    def active_at(self, t_s: float) -> np.ndarray:
        """Interpolated active bytes of every series at ``t_s`` (before clipping)."""
        t = np.full(self._first_t.shape, float(t_s))
        if self._loops:
            t = np.where(self._looping, np.mod(t, self._period), t)
        q = np.clip(t, self._first_t, self._last_t) + self._row_shift
        lo = np.searchsorted(self._flat_t, q, side="right") - 1
        lo = np.clip(lo, self._start, np.maximum(self._last - 1, self._start))
        hi = np.minimum(lo + 1, self._last)
        t_lo, t_hi = self._flat_t[lo], self._flat_t[hi]
        gap = t_hi - t_lo
        w = np.divide(q - t_lo, gap, out=np.zeros_like(q), where=gap > 0)
        a_lo = self._flat_a[lo]
        active = a_lo + np.clip(w, 0.0, 1.0) * (self._flat_a[hi] - a_lo)
        if not self._loops:
            return active
        # Looping series outside [first, last] sample: between the last sample and the next lap's first.
        wrap = self._looping & ((t > self._last_t) | (t < self._first_t))
        since_last = np.where(t > self._last_t, t - self._last_t, t + self._period - self._last_t)
        w_wrap = np.divide(
            since_last, self._wrap_gap, out=np.zeros_like(t), where=wrap & (self._wrap_gap > 0)
        )
        bridged = self._last_a + np.clip(w_wrap, 0.0, 1.0) * (self._first_a - self._last_a)
        return np.where(wrap, bridged, active)

    def fill(self, t_s: float, dt_s: float, size_bytes: np.ndarray, rate_per_s: np.ndarray) -> None:
        """Write the trace guests' populations at ``t_s`` into flat ``[H*G*P]`` arrays."""
        active = np.minimum(self.active_at(t_s)[self._row], self._room)
        rest = self._room - active
        size_bytes[self._hot] = active
        size_bytes[self._warm] = self._warm_part * rest
        size_bytes[self._cold] = self._cold_part * rest
        rate_per_s[self._hot] = self._rates[HOT]
        rate_per_s[self._warm] = self._rates[WARM]
        rate_per_s[self._cold] = self._rates[COLD]

    def at(self, t_s: float, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Population sizes in bytes and per-page access rates in 1/s at ``t_s``, ``[H, G, P]``."""
        size = np.zeros(self.pop_is_anon.size)
        rate = np.zeros(self.pop_is_anon.size)
        self.fill(t_s, dt_s, size, rate)
        return size.reshape(self.shape), rate.reshape(self.shape)
