"""Pictures of a trace: each guest's memory over time, split by idle age, and its histogram.

Works for any trace in the store: simulated hosts, recorded live hosts, imported history. Guests
with histograms show resident memory split at an idle-age threshold (hot and warm below it, cold
above it) and their time-averaged histogram; guests without (Bitbrains) show their working-set
estimate. Provisioned and guest-visible sizes are drawn as lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from wsrl.errors import WsrlError
from wsrl.histogram import cold_weights
from wsrl.trace.reader import TraceReader
from wsrl.units import GIB

if TYPE_CHECKING:
    from matplotlib.artist import Artist

MAX_GUESTS = 16
COLUMNS = (
    "time_ms",
    "host",
    "guest",
    "hist_edges_ms",
    "hist_anon_bytes",
    "hist_file_bytes",
    "provisioned_bytes",
    "visible_bytes",
    "usage_bytes",
    "working_set_bytes",
)


def _matrix(column: pa.ChunkedArray) -> np.ndarray | None:
    """``[rows, bins]`` from a list<int64> column whose lists all have one length, else None."""
    array = column.combine_chunks()
    if array.null_count:
        return None
    lengths = np.asarray(array.value_lengths())
    if lengths.size == 0 or np.any(lengths != lengths[0]):
        return None
    return np.asarray(array.flatten(), dtype=float).reshape(lengths.size, int(lengths[0]))


def _guest_series(table: pa.Table, threshold_ms: int) -> dict[str, Any]:
    """Arrays for one guest's rows: time, sizes, and (when present) warm/cold bytes and histogram."""
    time_ms = np.asarray(table.column("time_ms"), dtype=float)
    series: dict[str, Any] = {"time_h": (time_ms - time_ms[0]) / 3.6e6}
    for name in ("provisioned_bytes", "visible_bytes", "usage_bytes", "working_set_bytes"):
        values = table.column(name).to_numpy(zero_copy_only=False)
        series[name] = None if table.column(name).null_count == table.num_rows else values.astype(float)
    anon = _matrix(table.column("hist_anon_bytes"))
    file = _matrix(table.column("hist_file_bytes"))
    edges = _matrix(table.column("hist_edges_ms"))
    series["anon"] = series["file"] = series["cold"] = series["edges"] = None
    if anon is not None and file is not None and edges is not None and np.all(edges == edges[0]):
        weights = cold_weights([int(e) for e in edges[0]], threshold_ms)
        series["anon"], series["file"], series["edges"] = anon, file, edges[0]
        series["cold"] = (anon + file) @ weights
    return series


def plot_trace(
    trace_dir: str | Path,
    out_png: str | Path,
    *,
    host: str | None = None,
    guests: list[str] | None = None,
    threshold_s: float = 120.0,
    title: str | None = None,
) -> Path:
    """Draw up to 16 guests of one host of a trace into a PNG and return its path.

    Args:
        trace_dir: a trace directory.
        out_png: the PNG file to write.
        host: which host (default: the first).
        guests: which guests (default: the first 16 of the host, by name).
        threshold_s: idle age that separates warm from cold memory.
        title: figure title (default: the trace directory and host).

    Raises:
        WsrlError: matplotlib is missing, or the host or a guest is not in the trace.

    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise WsrlError("plots need matplotlib: pip install 'wsrl[plot]'") from None
    reader = TraceReader(trace_dir)
    hosts = reader.hosts()
    if not hosts:
        raise WsrlError(f"{trace_dir}: the trace has no samples to plot")
    chosen_host = host or hosts[0]
    if chosen_host not in hosts:
        raise WsrlError(f"{trace_dir}: no host {chosen_host!r} (hosts: {', '.join(hosts)})")
    table = reader.read_table(COLUMNS, hosts=[chosen_host])
    names = sorted(set(table.column("guest").to_pylist()))
    if guests is not None:
        if not guests:
            raise WsrlError("no guests to plot: give at least one guest name")
        missing = [g for g in guests if g not in names]
        if missing:
            raise WsrlError(f"{trace_dir}: host {chosen_host} has no guest(s) {', '.join(missing)}")
        names = list(guests)
    names = names[:MAX_GUESTS]
    threshold_ms = round(threshold_s * 1000)

    fig, axes = plt.subplots(
        len(names),
        2,
        figsize=(13, 2.1 * len(names) + 1.2),
        squeeze=False,
        gridspec_kw={"width_ratios": [3, 1]},
    )
    guest_column = table.column("guest")

    for row, name in enumerate(names):
        series = _guest_series(table.filter(pc.equal(guest_column, name)), threshold_ms)
        time_h = series["time_h"]
        ax_time, ax_hist = axes[row]
        if series["cold"] is not None:
            resident = (series["anon"] + series["file"]).sum(axis=1)
            cold = series["cold"]
            ax_time.stackplot(
                time_h,
                (resident - cold) / GIB,
                cold / GIB,
                labels=[f"idle <= {threshold_s:g} s", f"idle > {threshold_s:g} s (cold)"],
                colors=["#d95f02", "#7570b3"],
                alpha=0.8,
            )
            mean_anon = series["anon"].mean(axis=0) / GIB
            mean_file = series["file"].mean(axis=0) / GIB
            labels = [_age_label(e) for e in series["edges"]] + ["more"]
            positions = np.arange(len(labels))
            ax_hist.bar(positions, mean_anon, color="#1b9e77", label="anon")
            ax_hist.bar(positions, mean_file, bottom=mean_anon, color="#e6ab02", label="file")
            ax_hist.set_xticks(positions[::2], labels[::2], fontsize=6)
            ax_hist.set_ylabel("GiB", fontsize=7)
        else:
            estimate = series["working_set_bytes"]
            if estimate is None:
                estimate = series["usage_bytes"]
            if estimate is not None:
                ax_time.plot(time_h, estimate / GIB, color="#d95f02", label="working set")
            ax_hist.text(0.5, 0.5, "no histogram", ha="center", va="center", transform=ax_hist.transAxes)
            ax_hist.set_xticks([])
        for name_key, style, label in (
            ("provisioned_bytes", ":", "provisioned"),
            ("visible_bytes", "--", "guest-visible"),
        ):
            values = series[name_key]
            if values is not None:
                ax_time.plot(time_h, values / GIB, style, color="black", linewidth=0.8, label=label)
        ax_time.set_ylabel(f"{name}\nGiB", fontsize=7)
        ax_time.tick_params(labelsize=7)
        ax_hist.tick_params(labelsize=7)
        if row == 0:
            ax_hist.set_title("mean histogram by idle age", fontsize=8)
    axes[-1][0].set_xlabel("hours", fontsize=8)
    handles: dict[str, Artist] = {}
    for ax in axes.ravel():
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    top = 1.0 - 0.9 / fig.get_figheight()
    fig.legend(
        list(handles.values()),
        list(handles.keys()),
        loc="upper center",
        ncol=6,
        fontsize=7,
        bbox_to_anchor=(0.5, top + 0.45 / fig.get_figheight()),
    )
    fig.suptitle(title or f"{Path(trace_dir).name}: host {chosen_host}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, top))
    out = Path(out_png)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
    except OSError as exc:
        raise WsrlError(f"{out}: cannot write the plot: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return out


def _age_label(edge_ms: float) -> str:
    seconds = edge_ms / 1000
    if seconds < 60:
        return f"{seconds:g}s"
    if seconds < 3600:
        return f"{seconds / 60:g}m"
    return f"{seconds / 3600:g}h"
