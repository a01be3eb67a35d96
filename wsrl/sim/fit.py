"""Guests fitted from what a host recorded: page populations that reproduce a trace's histograms.

A trace written by ``wsrl run``'s recording, ``wsrl sim`` or an importer holds, per guest and
sample, the working-set histogram (bytes by idle age, anon and file apart), the swap in use and
the refault counters. :func:`fit_trace` turns each guest into the page populations of the memory
model (:mod:`wsrl.sim.model`) whose steady-state idle-age distribution is the trace's mean
histogram, so the recorded guest can be replayed *counterfactually*: under other limits, policies
or hosts, in ``wsrl eval``, through a workload and a scenario file (:func:`write_fitted`).

**The fit.** A population of size ``s`` touched at rate ``r`` has ``s * surv(r t)`` bytes idle
longer than ``t`` (``exp(-r t)`` for independent references, ``max(1 - r t, 0)`` for a cyclic
sweep: :func:`wsrl.sim.che.survival`), so its bytes in the histogram bin ``(e[k-1], e[k]]`` are
``s * (surv(r e[k-1]) - surv(r e[k]))`` and the open-ended bin holds ``s * surv(r e[-1])``. With a
dictionary of candidate populations (access intervals on a log grid from :data:`MIN_INTERVAL_S` to
:data:`MAX_INTERVAL_S`, each independent or a sweep, plus one never touched), the sizes that
reproduce a histogram are a non-negative least-squares problem, solved per memory type by
Lawson and Hanson's active-set method (:func:`nnls`); populations under :data:`MIN_SHARE` of the
type's bytes are dropped and the rest re-fitted. Pages the recording saw in swap (a guest that was
squeezed while recorded) are one more anon population: ``swap`` bytes touched at the rate that
gives the recorded refaults (``refault bytes per second / swap bytes``), or never touched when
nothing refaulted.

**What a histogram cannot say.** Ages beyond the last finite edge are one bin: everything idle
longer than it is fitted as never touched (the trace's edges bound how cold a fitted population can
be told to be). A source that cannot date bytes idle past its horizon (``hist_horizon_ms``, the
``referenced`` source's last window) has its bins past the horizon merged into the open one first
(:func:`censor_at_horizon`): re-binned onto finer edges they would otherwise read as a population
touched every few minutes. An independent population and a sweep of the same mean interval differ in the
shape of their ages, which coarse bins may not separate; the fit takes whichever is closer.
Demand over time is not fitted: the fitted guest is the recording's mean, a steady workload.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsrl.errors import TraceError
from wsrl.sim.che import survival
from wsrl.sim.defaults import KERNEL, UNEVICTABLE_BYTES
from wsrl.trace.reader import TraceReader
from wsrl.units import GIB, MIB, PAGE_BYTES

MIN_INTERVAL_S = 0.5
"""Shortest access interval a fitted population may have, s."""
MAX_INTERVAL_S = 4 * 3600.0
"""Longest finite access interval a fitted population may have, s (beyond: never touched)."""
INTERVALS_PER_DECADE = 8
MIN_SHARE = 0.005
"""Fitted populations below this share of their memory type's bytes are dropped."""
SWEEP_GAIN_FRAC = 0.02
"""Sweeps enter a fit only if they place at least this share of the type's bytes better."""
TYPES = ("anon", "file")

log = logging.getLogger(__name__)

_COLUMNS = [
    "host",
    "guest",
    "time_ms",
    "hist_edges_ms",
    "hist_anon_bytes",
    "hist_file_bytes",
    "hist_horizon_ms",
    "provisioned_bytes",
    "swap_bytes",
    "refault_anon_total",
    "refault_file_total",
]


@dataclass(frozen=True)
class FittedPopulation:
    """One fitted population: a workload file's ``[[population]]``."""

    name: str
    type: str
    size_bytes: float
    access_interval_s: float
    """``inf``: never touched."""
    access_order: str = "independent"


@dataclass(frozen=True)
class FittedGuest:
    """One recorded guest and the populations fitted to it.

    Attributes:
        host: the host it was recorded on.
        guest: its name in the trace.
        provisioned_bytes: the largest provisioned size recorded.
        step_s: the median time between its samples, s.
        samples: how many samples had a histogram.
        populations: the fitted populations.
        residual_frac: the fit's error: the bytes it misplaces over the histogram's bins (half
            the L1 distance), as a share of the histogram's bytes.

    """

    host: str
    guest: str
    provisioned_bytes: float
    step_s: float
    samples: int
    populations: tuple[FittedPopulation, ...]
    residual_frac: float


def nnls(matrix: np.ndarray, target: np.ndarray, max_iterations: int | None = None) -> np.ndarray:
    """``argmin ||matrix @ x - target||`` over ``x >= 0`` (Lawson and Hanson's active-set method)."""
    cols = matrix.shape[1]
    x = np.zeros(cols)
    passive = np.zeros(cols, dtype=bool)
    limit = max_iterations if max_iterations is not None else 3 * cols
    tolerance = 1e-10 * max(
        1.0, float(np.abs(matrix).max(initial=0.0)) * float(np.abs(target).max(initial=0.0))
    )
    for _ in range(limit):
        gradient = matrix.T @ (target - matrix @ x)
        candidates = ~passive & (gradient > tolerance)
        if not candidates.any():
            break
        passive[np.argmax(np.where(candidates, gradient, -np.inf))] = True
        while True:
            z = np.zeros(cols)
            z[passive] = np.linalg.lstsq(matrix[:, passive], target, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            blocking = passive & (z <= 0)
            steps = np.where(blocking, x / np.maximum(x - z, 1e-300), np.inf)
            alpha = float(steps.min())
            x = x + alpha * (z - x)
            passive &= x > 1e-12
            x[~passive] = 0.0
    return x


@dataclass(frozen=True)
class _Atom:
    interval_s: float
    order: str


def _dictionary() -> list[_Atom]:
    decades = math.log10(MAX_INTERVAL_S / MIN_INTERVAL_S)
    count = round(decades * INTERVALS_PER_DECADE) + 1
    intervals = MIN_INTERVAL_S * 10 ** (np.arange(count) / INTERVALS_PER_DECADE)
    atoms = [_Atom(float(i), order) for i in intervals for order in ("independent", "sweep")]
    return [*atoms, _Atom(math.inf, "independent")]


def _bin_shares(atoms: list[_Atom], edges_ms: np.ndarray) -> np.ndarray:
    """``[bins, atoms]``: each atom's share of bytes per histogram bin."""
    ages_s = np.concatenate([[0.0], np.asarray(edges_ms, dtype=float) / 1000.0])
    columns = []
    for atom in atoms:
        rate = 0.0 if math.isinf(atom.interval_s) else 1.0 / atom.interval_s
        alive = survival(rate * ages_s, np.full(ages_s.shape, atom.order == "sweep"))
        columns.append(np.concatenate([alive[:-1] - alive[1:], alive[-1:]]))
    return np.stack(columns, axis=1)


def _fit_atoms(shares: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float]:
    """NNLS sizes (small ones dropped, the rest re-fitted) and the share of bytes they misplace."""
    sizes = nnls(shares, target)
    keep = sizes >= MIN_SHARE * sizes.sum()
    refit = np.zeros_like(sizes)
    refit[keep] = nnls(shares[:, keep], target)
    return refit, 0.5 * float(np.abs(shares @ refit - target).sum())


def fit_histogram(
    edges_ms: np.ndarray, bins_bytes: np.ndarray, type_name: str
) -> tuple[list[FittedPopulation], float]:
    """Populations of one memory type that reproduce ``bins_bytes`` on ``edges_ms``; and the bytes misplaced.

    Independent references are preferred: sweeps are added only where they misplace less than
    half the bytes the independent fit misplaces and at least :data:`SWEEP_GAIN_FRAC` of the
    type's bytes less (a sum of sweeps can mimic an exponential's ages on coarse bins, and a sweep
    that does not fit refaults on every touch, so the choice matters under a limit).
    """
    total = float(np.sum(bins_bytes))
    if total <= 0:
        return [], 0.0
    atoms = _dictionary()
    shares = _bin_shares(atoms, edges_ms)
    scale = total
    target = np.asarray(bins_bytes, dtype=float) / scale
    independent = np.array([atom.order == "independent" for atom in atoms])
    refit = np.zeros(len(atoms))
    refit[independent], misplaced_independent = _fit_atoms(shares[:, independent], target)
    misplaced_share = misplaced_independent
    with_sweeps, misplaced_sweeps = _fit_atoms(shares, target)
    if (
        misplaced_sweeps < 0.5 * misplaced_independent
        and misplaced_independent - misplaced_sweeps > SWEEP_GAIN_FRAC
    ):
        refit, misplaced_share = with_sweeps, misplaced_sweeps
    misplaced = misplaced_share * scale
    populations = [
        FittedPopulation(
            name=f"{type_name}-{'never' if math.isinf(atom.interval_s) else f'{atom.interval_s:.3g}s'}"
            + ("-sweep" if atom.order == "sweep" else ""),
            type=type_name,
            size_bytes=float(size * scale),
            access_interval_s=atom.interval_s,
            access_order=atom.order,
        )
        for atom, size in zip(atoms, refit, strict=True)
        if size > 0
    ]
    return populations, misplaced


def censor_at_horizon(
    edges_ms: tuple[int, ...], bins_bytes: dict[str, np.ndarray], horizon_ms: float
) -> tuple[tuple[int, ...], dict[str, np.ndarray]]:
    """The edges up to ``horizon_ms`` and the bins past it merged into the open-ended one.

    A recording's histogram keeps the edges the runner bins onto; bytes its source could only call
    "older than the horizon" sit in the first bin past it. ``inf``: unchanged.
    """
    if not math.isfinite(horizon_ms):
        return edges_ms, bins_bytes
    kept = tuple(e for e in edges_ms if e <= horizon_ms)
    k = len(kept)
    merged = {name: np.append(bins[:k], bins[k:].sum()) for name, bins in bins_bytes.items()}
    return kept, merged


def fit_trace(
    directory: str | Path, *, skip_s: float = 0.0, horizon_ms: float | None = None
) -> list[FittedGuest]:
    """Fit every guest of a trace that has histograms (see the module docstring).

    ``skip_s`` leaves out each guest's first seconds: a warm-up, or a live source's first cycle
    (the ``referenced`` source counts every byte not yet seen idle as young for its first 120 s,
    and a trace does not say which histograms were provisional). ``horizon_ms`` censors every
    guest's histograms at that age (:func:`censor_at_horizon`) where the trace does not say its own
    (``hist_horizon_ms``, from schema version 2 on); where it does, the trace's is used.

    Raises:
        TraceError: the trace cannot be read, or no guest in it has a histogram.

    """
    if not skip_s >= 0:
        raise TraceError(f"skip_s must be >= 0, got {skip_s}")
    if horizon_ms is not None and not horizon_ms > 0:
        raise TraceError(f"horizon_ms must be > 0, got {horizon_ms}")
    reader = TraceReader(directory)
    table = reader.read_table(_COLUMNS).to_pydict()
    rows_of: dict[tuple[str, str], list[int]] = {}
    for index, key in enumerate(zip(table["host"], table["guest"], strict=True)):
        rows_of.setdefault(key, []).append(index)
    keys = sorted(rows_of)
    fitted: list[FittedGuest] = []
    skipped: list[str] = []
    for host, guest in keys:
        rows = rows_of[(host, guest)]
        start_ms = min(table["time_ms"][i] for i in rows) + skip_s * 1000.0
        rows = [i for i in rows if table["time_ms"][i] >= start_ms]
        with_hist = [
            i
            for i in rows
            if table["hist_edges_ms"][i] is not None and table["hist_anon_bytes"][i] is not None
        ]
        if not with_hist:
            skipped.append(f"{host}/{guest}")
            continue
        edges = tuple(table["hist_edges_ms"][with_hist[0]])
        same = [i for i in with_hist if tuple(table["hist_edges_ms"][i]) == edges]
        hist = {
            name: np.mean(
                [
                    np.asarray(table[f"hist_{name}_bytes"][i] or [0] * (len(edges) + 1), dtype=float)
                    for i in same
                ],
                axis=0,
            )
            for name in TYPES
        }
        horizons = [table["hist_horizon_ms"][i] for i in same if table["hist_horizon_ms"][i]]
        horizon = float(min(horizons)) if horizons else (horizon_ms or math.inf)
        edges, hist = censor_at_horizon(edges, hist, horizon)
        populations: list[FittedPopulation] = []
        misplaced = 0.0
        for name in TYPES:
            pops, lost = fit_histogram(np.asarray(edges), hist[name], name)
            populations += pops
            misplaced += lost
        populations += _swapped(table, same)
        times = np.asarray([table["time_ms"][i] for i in rows], dtype=float)
        step_s = float(np.median(np.diff(times))) / 1000.0 if len(times) > 1 else 10.0
        provisioned = [table["provisioned_bytes"][i] for i in rows if table["provisioned_bytes"][i]]
        total = sum(float(np.sum(h)) for h in hist.values())
        fitted.append(
            FittedGuest(
                host=host,
                guest=guest,
                provisioned_bytes=float(max(provisioned)) if provisioned else total,
                step_s=step_s,
                samples=len(same),
                populations=tuple(populations),
                residual_frac=misplaced / total if total > 0 else 0.0,
            )
        )
    if not fitted:
        raise TraceError(f"{directory}: no guest has a working-set histogram to fit ({len(keys)} guests)")
    if skipped:
        log.warning(
            "%s: %d guests without histograms left out: %s", directory, len(skipped), ", ".join(skipped[:10])
        )
    return fitted


def _swapped(table: dict[str, list], rows: list[int]) -> list[FittedPopulation]:
    """The anon population the recording saw in swap, at the rate that gives its refaults."""
    swap = [float(table["swap_bytes"][i] or 0.0) for i in rows]
    mean_swap = float(np.mean(swap)) if swap else 0.0
    if mean_swap < PAGE_BYTES:
        return []
    # Live recordings keep one counter (anon and file together) in refault_file_total: the sum of
    # the two columns is the refaults, as every trace consumer reads them.
    refaults = [
        (table["time_ms"][i], (table["refault_anon_total"][i] or 0) + (table["refault_file_total"][i] or 0))
        for i in rows
        if table["refault_anon_total"][i] is not None or table["refault_file_total"][i] is not None
    ]
    rate_bytes = 0.0
    if len(refaults) > 1 and refaults[-1][0] > refaults[0][0]:
        rate_bytes = max(
            0.0,
            (refaults[-1][1] - refaults[0][1]) * PAGE_BYTES / ((refaults[-1][0] - refaults[0][0]) / 1000.0),
        )
    interval = mean_swap / rate_bytes if rate_bytes > 0 else math.inf
    return [FittedPopulation("anon-swapped", "anon", mean_swap, interval)]


def _quoted(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's (quotes, backslashes, control characters)."""
    return json.dumps(text, ensure_ascii=False)


def _population_toml(population: FittedPopulation) -> str:
    interval = (
        '"never"' if math.isinf(population.access_interval_s) else f"{population.access_interval_s:.6g}"
    )
    lines = [
        "[[population]]",
        f'name = "{population.name}"',
        f'type = "{population.type}"',
        f"size_mib = {population.size_bytes / MIB:.6g}",
        f"access_interval_s = {interval}",
    ]
    if population.access_order != "independent":
        lines.append(f'access_order = "{population.access_order}"')
    return "\n".join(lines) + "\n"


def write_fitted(
    guests: list[FittedGuest],
    out: str | Path,
    *,
    trace: str,
    capacity_gib: float | None = None,
    kernel: str = KERNEL,
) -> Path:
    """Write one workload file per fitted guest and a scenario holding them all; returns the scenario.

    The scenario's host has ``capacity_gib`` (default: the guests' provisioned sizes added up and
    5 % more, so nothing is overcommitted until a user says otherwise); every guest keeps its
    provisioned size and gets swap as large (a trace does not record swap sizes: no fitted guest
    is OOM-killed for lack of swap the recorded one may have had), no jitter. ``kernel`` is the
    recorded guests' page reclaim (``classic`` for memcgs on a host kernel without MGLRU, such as
    the runner's cgroup guests here; a trace does not record it).
    """
    directory = Path(out)
    (directory / "workloads").mkdir(parents=True, exist_ok=True)
    entries = []
    repeated = {name for name, count in Counter(g.guest for g in guests).items() if count > 1}
    for index, guest in enumerate(guests):
        slug = f"fitted-{index:02d}"
        body = [
            f'name = "{slug}"',
            "description = "
            + _quoted(f"Fitted to {guest.host}/{guest.guest} of {trace} ({guest.samples} samples)."),
            'source = """',
            f"wsrl fit: the trace's mean histogram over {guest.samples} samples as page populations",
            f"(wsrl/sim/fit.py); {guest.residual_frac:.1%} of its bytes misplaced by the fit.",
            '"""',
            "",
        ]
        text = "\n".join(body) + "\n".join(_population_toml(p) for p in guest.populations)
        (directory / "workloads" / f"{slug}.toml").write_text(text, encoding="utf-8")
        needed = sum(p.size_bytes for p in guest.populations) + UNEVICTABLE_BYTES
        provisioned_mib = max(guest.provisioned_bytes, needed) / MIB
        # Guest names are unique per host in a trace; a scenario holding several hosts' guests
        # names them host/guest where a name repeats.
        name = f"{guest.host}/{guest.guest}" if guest.guest in repeated else guest.guest
        entries.append(
            "\n".join(
                [
                    "[[guest]]",
                    f"name = {_quoted(name)}",
                    f'workload = "workloads/{slug}.toml"',
                    f"provisioned_mib = {math.ceil(provisioned_mib)}",
                    f"swap_gib = {math.ceil(provisioned_mib / 1024)}",
                    "jitter = 0",
                ]
            )
        )
    step_s = max(1.0, round(float(np.median([g.step_s for g in guests]))))
    capacity = (
        capacity_gib if capacity_gib is not None else sum(g.provisioned_bytes for g in guests) / GIB * 1.05
    )
    scenario = directory / "scenario.toml"
    scenario.write_text(
        "\n".join(
            [
                "# Written by `wsrl fit`: the recorded guests as fitted page populations.",
                'name = "fitted"',
                f"description = {_quoted(f'Guests fitted to {trace}.')}",
                f"step_s = {step_s:g}",
                f"kernel = {_quoted(kernel)}",
                "",
                "[host]",
                f"capacity_gib = {capacity:.6g}",
                "reserve_gib = 0",
                "",
                "\n\n".join(entries),
                "",
            ]
        ),
        encoding="utf-8",
    )
    return scenario
