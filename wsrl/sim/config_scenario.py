"""Scenario files (``envs/scenarios/NAME.toml``): one host model and the guests on it.

Each ``[[guest]]`` entry runs a workload (:mod:`wsrl.sim.config_workload`) or replays guests of a
recorded trace, with its provisioned size, swap, actuator, tier and so on. Keys are in the units
people write (GiB, MiB, us); the properties of the models give SI values, and every default
comes from :mod:`wsrl.sim.defaults`. :func:`wsrl.sim.build.build_setup` turns a scenario into arrays.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import AllowInfNan, Field, PrivateAttr, field_validator, model_validator

from wsrl.config_tools import StrictModel, read_toml, validate_file
from wsrl.errors import ConfigError
from wsrl.sim import defaults
from wsrl.sim.arrays import ACTUATOR_NAMES, HISTOGRAM_SOURCE_NAMES, KERNEL_NAMES, TIER_NAMES
from wsrl.sim.config_files import find_file, listing
from wsrl.sim.config_trace import parse_trace_start, resolve_trace_dir, select_trace_guests
from wsrl.sim.config_workload import WorkloadConfig, load_workload
from wsrl.units import GIB, MIB

MAX_GUESTS_PER_HOST = 64
"""A host holds at most this many guests (the ``dense`` scenario uses exactly 64)."""

Tier = Literal["gold", "silver", "bronze"]
Actuator = Literal["memcg", "balloon"]
Swap = Literal["none", "zram", "ssd", "hdd"]
HistogramSource = Literal["exact", "lru_gen", "referenced", "memory_stat"]
"""Whose resolution a guest's snapshot histogram has (:mod:`wsrl.sim.observed`)."""
Kernel = Literal["mglru", "classic"]
"""How a guest's kernel reclaims (:mod:`wsrl.sim.model`)."""
# The arrays store tiers and actuators as indices into TIER_NAMES / ACTUATOR_NAMES, and the swap
# kinds key the default latencies: the file keys must be exactly those names, in that order.
if get_args(Tier) != TIER_NAMES or defaults.TIER not in TIER_NAMES:
    raise RuntimeError(f"Tier {get_args(Tier)} != arrays.TIER_NAMES {TIER_NAMES} (default {defaults.TIER!r})")
if get_args(Actuator) != ACTUATOR_NAMES:
    raise RuntimeError(f"Actuator {get_args(Actuator)} != arrays.ACTUATOR_NAMES {ACTUATOR_NAMES}")
if get_args(HistogramSource) != HISTOGRAM_SOURCE_NAMES:
    raise RuntimeError(f"HistogramSource {get_args(HistogramSource)} != arrays.HISTOGRAM_SOURCE_NAMES")
if get_args(Kernel) != KERNEL_NAMES or defaults.KERNEL not in KERNEL_NAMES:
    raise RuntimeError(
        f"Kernel {get_args(Kernel)} != arrays.KERNEL_NAMES {KERNEL_NAMES} (default {defaults.KERNEL!r})"
    )
if set(get_args(Swap)) != set(defaults.ANON_FAULT_LATENCY_S_BY_SWAP):
    raise RuntimeError(f"Swap {get_args(Swap)} != defaults.ANON_FAULT_LATENCY_S_BY_SWAP keys")


def _us(seconds: float) -> float:
    """A default latency in the microseconds of the file keys, rounded (100e-6 s is 100, not 100.00...01)."""
    return round(seconds * 1e6, 6)


class HostConfig(StrictModel):
    """The physical host every guest of the scenario shares."""

    capacity_gib: float = Field(gt=0)
    reserve_gib: float = Field(0.0, ge=0)
    swap_latency_us: float = Field(_us(defaults.HOST_SWAP_FAULT_LATENCY_S), gt=0)
    count: int = Field(1, ge=1, le=100_000)

    @model_validator(mode="after")
    def _reserve_below_capacity(self) -> HostConfig:
        if self.reserve_gib >= self.capacity_gib:
            raise ValueError(f"reserve_gib ({self.reserve_gib}) must be < capacity_gib ({self.capacity_gib})")
        return self

    @property
    def capacity_bytes(self) -> float:
        """Physical memory in bytes."""
        return self.capacity_gib * GIB

    @property
    def reserve_bytes(self) -> float:
        """Memory kept for the host itself, bytes."""
        return self.reserve_gib * GIB

    @property
    def swap_latency_s(self) -> float:
        """Host swap fault latency in seconds."""
        return self.swap_latency_us / 1e6


WORKLOAD_ONLY_KEYS = ("provisioned_gib", "provisioned_mib", "scale", "jitter")
TRACE_ONLY_KEYS = (
    "trace_guests",
    "trace_start",
    "trace_duration_h",
    "trace_loop",
    "trace_active_column",
    "trace_fallback_provisioned_gib",
    "hot_access_interval_s",
    "warm_access_interval_s",
    "cold_access_interval_s",
    "idle_fraction",
    "warm_share",
)


class GuestConfig(StrictModel):
    """A ``[[guest]]`` entry: ``count`` guests running one workload, or replaying trace guests."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.]+(-[A-Za-z0-9_.]+)*$", max_length=64)
    workload: str | None = None
    trace: str | None = None
    count: int | None = Field(None, ge=1, le=MAX_GUESTS_PER_HOST)
    provisioned_gib: float | None = Field(None, gt=0)
    provisioned_mib: float | None = Field(None, gt=0)
    floor_gib: float | None = Field(None, ge=0)
    floor_mib: float | None = Field(None, ge=0)
    unevictable_mib: float = Field(defaults.UNEVICTABLE_BYTES / MIB, ge=0)
    shares: float = Field(defaults.SHARES, gt=0, le=defaults.MAX_SHARES)
    tier: Tier = Field(defaults.TIER)
    actuator: Actuator = Field(defaults.ACTUATOR)
    swap: Swap = Field(defaults.SWAP)
    swap_gib: float | None = Field(None, ge=0)
    file_latency_us: float = Field(_us(defaults.FILE_FAULT_LATENCY_S), gt=0)
    anon_latency_us: float | None = Field(None, gt=0)
    inflate_mib_per_s: float = Field(defaults.INFLATE_BYTES_PER_S / MIB, gt=0)
    deflate_mib_per_s: float = Field(defaults.DEFLATE_BYTES_PER_S / MIB, gt=0)
    oom_restart_s: float = Field(defaults.OOM_RESTART_S, ge=0)
    deflate_on_oom: bool = defaults.DEFLATE_ON_OOM
    histogram_source: HistogramSource | None = None
    """The source whose resolution the policies see this guest's ages at; None: the scenario's."""
    kernel: Kernel | None = None
    """How the guest's kernel reclaims (``mglru``: one recency for anon and file; ``classic``: file
    first by ``swappiness`` and the types' refault costs); None: the scenario's."""
    swappiness: float | None = Field(None, ge=0, le=200)
    """The guest's ``vm.swappiness`` (the ``classic`` kernel's anon/file balance); None: the scenario's."""
    scale: float = Field(1.0, gt=0)
    jitter: float = Field(0.1, ge=0, le=0.5)
    # Trace-driven guests: what is measured and what is assumed is in wsrl.sim.trace_demand.
    trace_guests: Literal["all"] | list[str] = "all"
    trace_start: str | Annotated[float, AllowInfNan(True)] | datetime | date | None = None
    """Its validator refuses NaN and infinities itself, with the offset's own message."""
    trace_duration_h: float | None = Field(None, gt=0)
    trace_loop: bool = False
    trace_active_column: Literal["working_set_bytes", "usage_bytes"] = "working_set_bytes"
    trace_fallback_provisioned_gib: float | None = Field(None, gt=0)
    # The trace model's knobs (wsrl.sim.trace_demand.TraceModel). 20 s keeps VMware's active pages
    # hot: its estimate counts pages touched within a sampling period of about a minute. The rest
    # is picked so that a typical Bitbrains VM (active ~5 % of provisioned) is mostly cold, in line
    # with the large idle fractions reported for such fleets: knobs, not measurements.
    hot_access_interval_s: float = Field(20.0, gt=0)
    warm_access_interval_s: float = Field(600.0, gt=0)
    cold_access_interval_s: float = Field(3600.0, gt=0)
    idle_fraction: float = Field(0.5, ge=0, le=1)
    warm_share: float = Field(0.3, ge=0, le=1)

    @field_validator("trace_start")
    @classmethod
    def _check_trace_start(cls, value: str | float | datetime | date | None) -> Any:
        if value is not None:
            parse_trace_start(value)  # ValueError with a clear message, reported at guest[i].trace_start
        return value

    @model_validator(mode="after")
    def _consistent(self) -> GuestConfig:
        if (self.workload is None) == (self.trace is None):
            raise ValueError("give exactly one of workload and trace")
        if self.provisioned_gib is not None and self.provisioned_mib is not None:
            raise ValueError("give at most one of provisioned_gib and provisioned_mib")
        if self.floor_gib is not None and self.floor_mib is not None:
            raise ValueError("give at most one of floor_gib and floor_mib")
        if self.trace is not None:
            wrong = [k for k in WORKLOAD_ONLY_KEYS if k in self.model_fields_set]
            if wrong:
                raise ValueError(
                    f"{', '.join(wrong)}: only for workload guests (a trace guest's provisioned size comes "
                    "from the trace; use trace_fallback_provisioned_gib for guests whose trace lacks one)"
                )
        else:
            wrong = [k for k in TRACE_ONLY_KEYS if k in self.model_fields_set]
            if wrong:
                raise ValueError(f"{', '.join(wrong)}: only for trace guests")
            if self.provisioned_bytes is None:
                raise ValueError("a workload guest needs provisioned_gib or provisioned_mib")
        if self.swap == "none" and self.swap_gib:
            raise ValueError('swap_gib > 0 needs a swap kind other than "none"')
        prov = self.provisioned_bytes
        if prov is not None:
            if self.floor_bytes > prov:
                raise ValueError(
                    f"floor ({self.floor_bytes / GIB:g} GiB) must be <= provisioned ({prov / GIB:g} GiB)"
                )
            if self.unevictable_bytes >= prov:
                raise ValueError(
                    f"unevictable_mib ({self.unevictable_mib:g}) must be < provisioned ({prov / MIB:g} MiB)"
                )
        return self

    @property
    def is_trace(self) -> bool:
        """True for a trace-driven guest."""
        return self.trace is not None

    @property
    def provisioned_bytes(self) -> float | None:
        """Provisioned size in bytes (None for trace guests: it comes from the trace)."""
        if self.provisioned_gib is not None:
            return self.provisioned_gib * GIB
        if self.provisioned_mib is not None:
            return self.provisioned_mib * MIB
        return None

    @property
    def floor_bytes(self) -> float:
        """Floor in bytes (0 by default)."""
        if self.floor_gib is not None:
            return self.floor_gib * GIB
        return (self.floor_mib or 0.0) * MIB

    @property
    def unevictable_bytes(self) -> float:
        """Always-resident memory in bytes."""
        return self.unevictable_mib * MIB

    @property
    def anon_latency_s(self) -> float:
        """Anon refault latency: the override, else the default of the swap kind (0 without swap)."""
        if self.anon_latency_us is not None:
            return self.anon_latency_us / 1e6
        return defaults.ANON_FAULT_LATENCY_S_BY_SWAP[self.swap]

    @property
    def file_latency_s(self) -> float:
        """File refault latency in seconds."""
        return self.file_latency_us / 1e6

    @property
    def inflate_bytes_per_s(self) -> float:
        """Balloon inflation speed in bytes per second."""
        return self.inflate_mib_per_s * MIB

    @property
    def deflate_bytes_per_s(self) -> float:
        """Balloon deflation speed in bytes per second."""
        return self.deflate_mib_per_s * MIB

    def swap_bytes(self, provisioned_bytes: float) -> float:
        """Swap capacity: ``swap_gib`` if given, else a fixed fraction of provisioned; 0 without swap."""
        if self.swap == "none":
            return 0.0
        if self.swap_gib is not None:
            return self.swap_gib * GIB
        return defaults.SWAP_FRACTION_OF_PROVISIONED * provisioned_bytes


class ScenarioConfig(StrictModel):
    """A scenario file: one host model and the guests on it."""

    name: str = Field(min_length=1)
    description: str
    step_s: float = Field(10.0, gt=0)
    histogram_source: HistogramSource = "exact"
    """Every guest's histogram source unless the guest names its own (:mod:`wsrl.sim.observed`)."""
    kernel: Kernel = defaults.KERNEL
    """Every guest's page reclaim unless the guest names its own (:mod:`wsrl.sim.model`)."""
    swappiness: float = Field(defaults.SWAPPINESS, ge=0, le=200)
    """Every guest's ``vm.swappiness`` unless the guest says."""
    host: HostConfig
    guest: list[GuestConfig] = Field(min_length=1)

    _path: Path | None = PrivateAttr(default=None)
    _base_dir: Path | None = PrivateAttr(default=None)
    _workloads: dict[int, WorkloadConfig] = PrivateAttr(default_factory=dict)
    _trace_dirs: dict[int, Path] = PrivateAttr(default_factory=dict)
    _trace_guest_names: dict[int, list[str]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _unique_names(self) -> ScenarioConfig:
        names = [g.name for g in self.guest]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"guest names must be unique (repeated: {', '.join(dup)})")
        return self

    @property
    def path(self) -> Path | None:
        """The file the scenario was loaded from (None when built in code)."""
        return self._path

    @property
    def is_resolved(self) -> bool:
        """True once :meth:`resolve` has loaded every workload and trace the guests name."""
        return all(
            i in (self._trace_dirs if g.is_trace else self._workloads) for i, g in enumerate(self.guest)
        )

    def workload_of(self, index: int) -> WorkloadConfig:
        """The resolved workload of guest entry ``index`` (after :meth:`resolve`)."""
        return self._workloads[index]

    def trace_dir_of(self, index: int) -> Path:
        """The resolved trace directory of guest entry ``index`` (after :meth:`resolve`)."""
        return self._trace_dirs[index]

    def kernel_of(self, index: int) -> tuple[Kernel, float]:
        """The page reclaim and swappiness of guest entry ``index``: its own, else the scenario's."""
        entry = self.guest[index]
        kernel = self.kernel if entry.kernel is None else entry.kernel
        return kernel, self.swappiness if entry.swappiness is None else entry.swappiness

    def histogram_source_of(self, index: int) -> HistogramSource:
        """The histogram source of guest entry ``index``: its own, else the scenario's."""
        own = self.guest[index].histogram_source
        return self.histogram_source if own is None else own

    def trace_guests_of(self, index: int) -> list[str]:
        """The trace guests (``guest`` or ``host/guest`` keys) entry ``index`` replays, in order."""
        return self._trace_guest_names[index]

    def guest_count(self, index: int) -> int:
        """Guests per host that entry ``index`` makes (trace guests default to one per trace guest)."""
        entry = self.guest[index]
        if entry.count is not None:
            return entry.count
        return len(self._trace_guest_names[index]) if entry.is_trace else 1

    def resolve(self) -> ScenarioConfig:
        """Load the workloads and check the traces the guests name; return self.

        Relative paths are taken relative to the scenario file (when there is one), else to the
        repository root. Raises :class:`ConfigError` naming the guest key that is wrong.
        """
        label = str(self._path) if self._path is not None else "<scenario>"
        base = self._base_dir if self._base_dir is not None else self._path.parent if self._path else None
        problems: list[tuple[str, str]] = []
        for i, entry in enumerate(self.guest):
            if entry.workload is not None:
                try:
                    self._workloads[i] = load_workload(entry.workload, base_dir=base)
                except ConfigError as exc:
                    problems.append((f"guest[{i}].workload", str(exc)))
                    continue
                wl = self._workloads[i]
                need = wl.base_bytes * entry.scale + entry.unevictable_bytes
                prov = entry.provisioned_bytes or 0.0
                if need > prov:
                    problems.append(
                        (
                            f"guest[{i}].provisioned_gib",
                            f"workload {wl.name!r} needs {need / GIB:.3g} GiB at its base size "
                            f"(x scale {entry.scale:g}, + unevictable) but the guest is provisioned "
                            f"{prov / GIB:.3g} GiB",
                        )
                    )
            else:
                try:
                    self._trace_dirs[i] = resolve_trace_dir(entry.trace or "", base)
                    self._trace_guest_names[i] = select_trace_guests(self._trace_dirs[i], entry.trace_guests)
                except ConfigError as exc:
                    problems.append((f"guest[{i}].{exc.problems[0][0] or 'trace'}", exc.problems[0][1]))
        if problems:
            raise ConfigError(label, problems)
        # The 64-guest cap is checked twice: GuestConfig.count's bound names the entry whose count
        # alone is too large, and this total (known only now: a trace entry's count defaults to its
        # number of trace guests) covers the sum. build_setup makes exactly these guests per host.
        total = sum(self.guest_count(i) for i in range(len(self.guest)))
        if total > MAX_GUESTS_PER_HOST:
            raise ConfigError(
                label, [("guest", f"{total} guests per host; at most {MAX_GUESTS_PER_HOST} allowed")]
            )
        return self


def load_scenario(name_or_path: str | Path) -> ScenarioConfig:
    """Load a scenario by path or by name in ``envs/scenarios``, with its workloads and traces checked.

    Raises :class:`ConfigError`.
    """
    path = find_file("scenarios", name_or_path, None)
    scenario: ScenarioConfig = validate_file(ScenarioConfig, read_toml(path), str(path))
    scenario._path = path
    try:
        return scenario.resolve()
    except ConfigError as exc:
        raise ConfigError(str(path), exc.problems) from None


def scenario_from_dict(
    data: dict[str, Any], *, base_dir: Path | None = None, label: str = "<scenario>"
) -> ScenarioConfig:
    """Validate and resolve a scenario given as a dict (tests, generated configs).

    ``base_dir`` plays the part of the scenario file's folder for relative paths.
    """
    scenario: ScenarioConfig = validate_file(ScenarioConfig, data, label)
    scenario._base_dir = base_dir
    try:
        return scenario.resolve()
    except ConfigError as exc:
        raise ConfigError(label, exc.problems) from None


def list_scenarios() -> list[tuple[str, str]]:
    """``(name, description)`` of every scenario in ``envs/scenarios``, sorted by name."""
    return listing("scenarios")
