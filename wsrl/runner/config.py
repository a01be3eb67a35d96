"""``host.toml``: what the runner controls, with which policy, under which safety rails.

Every error is a :class:`~wsrl.errors.ConfigError` naming the file and the dotted key
(``host.toml: guest[1].backend.qmp_socket: ...``); unknown keys are errors. Sizes are GiB, times
seconds, as people write them; the properties give bytes. Relative file paths (audit log, trace
directory, exported policy, scenario, sim state file) are relative to the config file's folder.

Path rules (checked here, before any backend is built):

* cgroup paths (``backend.path`` of a cgroup guest) are relative to the cgroup root (the
  backend's ``root``, else ``host.cgroup_root``, else the mount the cgroup backend finds): no
  leading ``/``, no ``..``. A config cannot point the runner at an arbitrary file (and the cgroup
  backend refuses a path whose symlinks resolve outside the root).
* guest memcg paths (``backend.memcg`` of a QEMU or crosvm guest: which memcg of the guest's own
  lru_gen dump makes the histogram) are absolute inside the guest (``/``, ``/system.slice``).
* sockets (``qmp_socket``, ``agent_socket``, ``control_socket``) are absolute, free of ``..`` and
  under an allowed directory: ``/run``, ``/var/run``, ``/var/lib/wsrl``, ``/tmp``, the system
  temporary directory, or one of ``host.socket_dirs``. The systemd unit runs with
  ``PrivateTmp=yes``, so in production a ``/tmp`` socket is only reachable if it was made inside
  the service's own namespace; ``/tmp`` is allowed for development and tests.
* other absolute paths (``root``, ``lru_gen_path``, ``crosvm_bin`` when it is a path) must be
  absolute and free of ``..``.

The backend tables and the path helpers live in :mod:`wsrl.runner.config_backends`.
"""

from __future__ import annotations

import ipaddress
import json
import re
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from wsrl.config_tools import StrictModel, parse_toml_bytes, validate_file
from wsrl.errors import ConfigError, WsrlError
from wsrl.histogram import DEFAULT_EDGES_MS, validate_edges
from wsrl.inputs.live import GuestSpec
from wsrl.pipeline.control import BreakerSpec, ControlSpec
from wsrl.runner.config_backends import (
    BACKEND_KINDS,
    DEFAULT_SOCKET_DIRS,
    SOCKET_KEYS,
    BackendConfig,
    CgroupBackendConfig,
    CrosvmBackendConfig,
    QemuBackendConfig,
    SimBackendConfig,
    absolute_path,
    socket_problem,
)
from wsrl.security import (
    MAX_CONFIG_BYTES,
    UntrustedFileError,
    check_trusted_directory_so_far,
    read_trusted_file,
)
from wsrl.sim import defaults
from wsrl.sim.arrays import TIER_NAMES
from wsrl.units import GIB

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}$"
"""Host and guest names: they become metric labels, trace keys and audit fields."""
SIM_ONLY_POLICIES: tuple[str, ...] = ("oracle", "oracle-zero", "oracle-steady")
"""Reference policies that read the simulator's future: never usable on a live host."""
DEFAULT_FALLBACK = "static"
MIN_INTERVAL_S = 0.01
"""Shortest control and flush interval (``host.interval_s``, ``record.flush_interval_s``)."""
MAX_INTERVAL_S = 86400.0
"""Longest control and flush interval: a day."""

__all__ = [
    "BACKEND_KINDS",
    "DEFAULT_SOCKET_DIRS",
    "BackendConfig",
    "CgroupBackendConfig",
    "CrosvmBackendConfig",
    "GuestSection",
    "QemuBackendConfig",
    "RunnerConfig",
    "SimBackendConfig",
    "load_runner_config",
    "runner_config_from_dict",
]

Tier = Literal["gold", "silver", "bronze"]
OnExit = Literal["relax", "hold", "unlimited"]


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


class HostSection(StrictModel):
    """``[host]``: the machine and the control interval."""

    name: str = Field(pattern=NAME_PATTERN)
    capacity_gib: float = Field(gt=0)
    reserve_gib: float = Field(0.0, ge=0)
    interval_s: float = Field(10.0, ge=MIN_INTERVAL_S, le=MAX_INTERVAL_S)
    min_tick_gap_s: float = Field(1.0, ge=0)
    """Pushed reports (``notify``) wake the runner early, but never closer than this to the last tick."""
    histogram_edges_ms: list[int] = Field(default_factory=lambda: list(DEFAULT_EDGES_MS))
    cgroup_root: str | None = None
    """Root of every cgroup path (default: the cgroup backend finds the v1 or v2 mount itself)."""
    socket_dirs: list[str] = Field(default_factory=list)

    @field_validator("histogram_edges_ms")
    @classmethod
    def _edges(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("must list at least one edge")
        try:
            return list(validate_edges(value))
        except WsrlError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("cgroup_root")
    @classmethod
    def _root(cls, value: str | None) -> str | None:
        return None if value is None else absolute_path(value)

    @field_validator("socket_dirs")
    @classmethod
    def _socket_dirs(cls, value: list[str]) -> list[str]:
        return [absolute_path(v) for v in value]

    @model_validator(mode="after")
    def _reserve_below_capacity(self) -> HostSection:
        if self.reserve_gib >= self.capacity_gib:
            raise ValueError(f"reserve_gib ({self.reserve_gib}) must be < capacity_gib ({self.capacity_gib})")
        return self


class PolicySection(StrictModel):
    """``[policy]``: the controlling policy, its fallback and the shadow-mode actor."""

    name_or_path: str = Field(min_length=1)
    """A reference policy name (``wsrl eval`` names) or an exported policy directory."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Keyword parameters of a reference policy (ignored for an exported policy: it has none)."""
    fallback: str = DEFAULT_FALLBACK
    """Reference policy used when inputs are bad, the breaker is open or the policy fails."""
    fallback_params: dict[str, Any] = Field(default_factory=dict)
    shadow_actor: str | None = None
    """In ``--shadow`` mode, the reference policy that acts (default: ``fallback``)."""
    allocator: Literal["max-min", "idle-tax"] = "max-min"
    reload: bool = True
    """Load an exported policy again when its files change (every check of the first load applies;
    a policy that fails them is refused and the running one kept: :mod:`wsrl.runner.policy_reload`)."""


class BreakerSection(StrictModel):
    """``[safety.breaker]``: per-guest circuit breaker thresholds."""

    enabled: bool = True
    on_oom: bool = True
    """Any new OOM kill trips the breaker."""
    on_psi: bool = True
    psi_some_avg10_pct: float = Field(60.0, gt=0, le=100)
    """With ``on_psi``: memory PSI "some" avg10 above this (percent) trips it."""
    on_refaults: bool = True
    refault_frac_per_min: float = Field(0.10, gt=0)
    """With ``on_refaults``: refaulted bytes per minute above this share of the usage trips it."""
    refault_window_s: float = Field(60.0, gt=0, le=86_400)
    """The refault rate is averaged over about this long (exponentially, as PSI's avg60): the
    burst after a resize is not a sustained rate."""
    cooldown_s: float = Field(600.0, gt=0)
    """How long a tripped guest stays on the fallback policy (restarted by every new trip)."""


_RENAMED_RATES = {
    "max_shrink_frac_per_interval": "max_shrink_frac_per_s",
    "max_growth_frac_per_interval": "max_growth_frac_per_s",
}


class SafetySection(StrictModel):
    """``[safety]``: the rails the runner applies after the pipeline."""

    floor_gib: float | None = Field(None, ge=0)
    """Default floor of every guest (a guest's own ``floor_gib`` overrides it)."""
    floor_frac: float = Field(0.25, ge=0, le=1)
    """Default floor as a share of the provisioned size, where no ``floor_gib`` is given."""
    max_shrink_frac_per_s: float = Field(0.005, gt=0, le=1)
    """Give back at most this share of a guest's provisioned size per second of control time (0.005:
    5 % per 10-second tick). Per time, not per tick: ticks woken early never shrink faster."""
    max_growth_frac_per_s: float | None = Field(None, gt=0)
    """``None`` (default): growth is immediate, the safe direction."""
    host_reserve_gib: float | None = Field(None, ge=0)
    """Memory the sum of all targets must leave free; default ``host.reserve_gib``."""
    stale_after_s: float = Field(60.0, gt=0)
    hold_intervals_before_fallback: int = Field(3, ge=0)
    malformed_usage_factor: float = Field(2.0, gt=1)
    """A reading whose usage or histogram exceeds this many times the provisioned size is malformed."""
    decision_expiry_s: float = Field(5.0, gt=0)
    call_timeout_s: float = Field(2.0, gt=0)
    """Longest wait for one guest's read, apply or relax: a source that blocks past it is treated as
    unreadable for that tick and skipped until it returns (:mod:`wsrl.runner.deadline`). Must be below
    ``decision_expiry_s``, or one stalled guest would expire every decision."""
    clock_skew_s: float = Field(30.0, gt=0)
    """A reading stamped more than this ahead of the host clock is malformed; one more than this
    behind the previous reading, yet recent, is a clock stepped back and starts a new time line."""
    oom_memory_s: float = Field(21600.0, ge=0)
    """After an OOM kill at size S, never shrink the guest to S + ``oom_margin_frac`` x provisioned
    or below again for this long (0: off)."""
    oom_margin_frac: float = Field(0.05, ge=0, le=1)
    max_proposal_jump_frac: float | None = Field(0.5, gt=0)
    """The policy's output check: a proposal that is NaN or negative is never acted on, and one that
    falls more than this share of provisioned below the policy's previous proposal for the guest
    acts only once the next proposal confirms it; meanwhile the fallback decides that guest
    (``None``: no jump check)."""
    on_exit: OnExit = "relax"
    breaker: BreakerSection = Field(default_factory=BreakerSection)

    @model_validator(mode="before")
    @classmethod
    def _renamed_rates(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for old, new in _RENAMED_RATES.items():
                if old in data:
                    raise ValueError(
                        f"{old} was replaced by {new}: rates are per second of control time now "
                        f"(a share per tick divided by host.interval_s; 0.05 per 10 s tick = 0.005)"
                    )
        return data

    @model_validator(mode="after")
    def _timeouts_fit(self) -> SafetySection:
        if self.call_timeout_s >= self.decision_expiry_s:
            raise ValueError(
                f"call_timeout_s ({self.call_timeout_s:g}) must be < decision_expiry_s "
                f"({self.decision_expiry_s:g}): one stalled guest would expire every decision"
            )
        return self


class AuditSection(StrictModel):
    """``[audit]``: the JSONL decision log."""

    path: str = Field(min_length=1)
    fsync: bool = True


class MetricsSection(StrictModel):
    """``[metrics]``: the Prometheus endpoint (port 0: off).

    The metrics name every guest and its sizes, so they are served on a loopback address unless
    ``allow_remote = true`` says otherwise; the runner then warns on stderr and in the audit
    ``start`` record (:meth:`RunnerConfig.warnings`).
    """

    allow_remote: bool = False
    """Allow ``bind`` to be an address other hosts can reach (``0.0.0.0``, ``::``, a NIC's)."""
    bind: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)

    @field_validator("bind")
    @classmethod
    def _ip(cls, value: str, info: ValidationInfo) -> str:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"must be an IP address such as 127.0.0.1, got {value!r}") from None
        if not address.is_loopback and not info.data.get("allow_remote", False):
            raise ValueError(
                f"{value} is reachable from other hosts; metrics stay on loopback (127.0.0.1) unless "
                "metrics.allow_remote = true"
            )
        return value

    @property
    def remote(self) -> bool:
        """Whether metrics are served on an address other hosts can reach."""
        return self.port != 0 and not ipaddress.ip_address(self.bind).is_loopback


class StateSection(StrictModel):
    """``[state]``: where the runner keeps the targets it set (:mod:`wsrl.runner.target_store`)."""

    path: str | None = Field(None, min_length=1)
    """Default: ``<host name>.targets.json`` beside the audit log. A restarted runner starts each
    guest from what is in force, so a restart changes no size by itself."""


class RecordSection(StrictModel):
    """``[record]``: where ticks are recorded as a trace (no ``dir``: not recorded)."""

    dir: str | None = None
    flush_interval_s: float = Field(60.0, ge=MIN_INTERVAL_S, le=MAX_INTERVAL_S)
    flush_rows: int = Field(10_000, ge=1)


class SimSection(StrictModel):
    """``[sim]``: the one simulated host every ``kind = "sim"`` guest lives in."""

    scenario: str = Field(min_length=1)
    seed: int = 0
    clock: Literal["simulated", "real"] = "simulated"
    """``simulated``: every tick advances the simulation by ``seconds_per_tick``; ``real``: it
    follows the wall clock."""
    seconds_per_tick: float | None = Field(None, gt=0)
    """Simulated seconds per tick (default ``host.interval_s``)."""
    state_file: str | None = None
    """Where the simulated guests' final sizes are written (JSON) when the runner closes."""


class GuestSection(StrictModel):
    """A ``[[guest]]``: the operator's promise to one guest, and how to reach it."""

    name: str = Field(pattern=NAME_PATTERN)
    provisioned_gib: float = Field(gt=0)
    floor_gib: float | None = Field(None, ge=0)
    shares: float = Field(defaults.SHARES, gt=0, le=defaults.MAX_SHARES)
    tier: Tier = defaults.TIER
    backend: BackendConfig

    @model_validator(mode="after")
    def _floor_below_provisioned(self) -> GuestSection:
        if self.floor_gib is not None and self.floor_gib > self.provisioned_gib:
            raise ValueError(
                f"floor_gib ({self.floor_gib}) must be <= provisioned_gib ({self.provisioned_gib})"
            )
        return self


class RunnerConfig(StrictModel):
    """A whole ``host.toml`` (see the module docstring)."""

    host: HostSection
    policy: PolicySection
    safety: SafetySection = Field(default_factory=SafetySection)
    audit: AuditSection
    metrics: MetricsSection = Field(default_factory=MetricsSection)
    record: RecordSection = Field(default_factory=RecordSection)
    state: StateSection = Field(default_factory=StateSection)
    sim: SimSection | None = None
    guest: list[GuestSection] = Field(min_length=1, max_length=64)

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _label: str = PrivateAttr(default="<config>")

    @model_validator(mode="after")
    def _consistent(self) -> RunnerConfig:
        names = [g.name for g in self.guest]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"guest names must be unique; repeated: {', '.join(dup)}")
        uses_sim = any(g.backend.kind == "sim" for g in self.guest)
        if uses_sim and self.sim is None:
            raise ValueError('guests of kind "sim" need a [sim] table naming the scenario')
        return self

    # -- derived values ------------------------------------------------------------------------

    @property
    def base_dir(self) -> Path:
        """The folder relative paths are resolved against (the config file's)."""
        return self._base_dir

    @property
    def label(self) -> str:
        """The config's file name, for messages."""
        return self._label

    def resolve(self, path: str) -> Path:
        """``path`` as an absolute path (relative ones are relative to :attr:`base_dir`)."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self._base_dir / candidate

    def state_path(self) -> Path:
        """The runner's state file: ``state.path``, else ``<host name>.targets.json`` beside the audit log."""
        if self.state.path is not None:
            return self.resolve(self.state.path)
        return self.resolve(self.audit.path).parent / f"{self.host.name}.targets.json"

    def floor_bytes(self, index: int) -> float:
        """Guest ``index``'s floor: its own, else ``safety.floor_gib``, else ``floor_frac`` of provisioned."""
        guest = self.guest[index]
        if guest.floor_gib is not None:
            floor_gib = guest.floor_gib
        elif self.safety.floor_gib is not None:
            floor_gib = self.safety.floor_gib
        else:
            floor_gib = self.safety.floor_frac * guest.provisioned_gib
        return min(floor_gib, guest.provisioned_gib) * GIB

    def guest_specs(self) -> list[GuestSpec]:
        """One :class:`GuestSpec` per ``[[guest]]``, in config order."""
        return [
            GuestSpec(
                name=g.name,
                provisioned_bytes=g.provisioned_gib * GIB,
                floor_bytes=self.floor_bytes(i),
                shares=g.shares,
                tier=TIER_NAMES.index(g.tier),
            )
            for i, g in enumerate(self.guest)
        ]

    @property
    def host_reserve_bytes(self) -> float:
        """What the host-reserve rail keeps free: ``safety.host_reserve_gib`` or ``host.reserve_gib``."""
        reserve = self.safety.host_reserve_gib
        return (self.host.reserve_gib if reserve is None else reserve) * GIB

    def control_spec(self) -> ControlSpec:
        """The control stack this config asks for: allocator, fallback and every rail."""
        safety = self.safety
        breaker = safety.breaker
        return ControlSpec(
            allocator=self.policy.allocator,
            fallback=self.policy.fallback,
            fallback_params=tuple(sorted(self.policy.fallback_params.items())),
            max_shrink_frac_per_s=safety.max_shrink_frac_per_s,
            max_growth_frac_per_s=safety.max_growth_frac_per_s,
            max_rate_step_s=self.host.interval_s,
            host_reserve_bytes=self.host_reserve_bytes,
            oom_memory_s=safety.oom_memory_s,
            oom_margin_frac=safety.oom_margin_frac,
            breaker=BreakerSpec(
                enabled=breaker.enabled,
                on_oom=breaker.on_oom,
                psi_some_avg10_pct=breaker.psi_some_avg10_pct if breaker.on_psi else None,
                refault_frac_per_min=breaker.refault_frac_per_min if breaker.on_refaults else None,
                refault_window_s=breaker.refault_window_s,
                cooldown_s=breaker.cooldown_s,
            ),
            contain_policy_errors=True,
            max_proposal_jump_frac=safety.max_proposal_jump_frac,
        )

    def warnings(self) -> list[str]:
        """What the operator allowed but should know (``wsrl run`` prints them and audits them)."""
        found = []
        if self.metrics.remote:
            found.append(
                f"metrics.bind = {self.metrics.bind}: metrics are served to other hosts on port "
                f"{self.metrics.port} (metrics.allow_remote = true); anyone who reaches it reads every "
                "guest's name and sizes"
            )
        return found

    def socket_dirs(self) -> list[str]:
        """Every directory a socket may live in."""
        dirs = [*DEFAULT_SOCKET_DIRS, tempfile.gettempdir(), *self.host.socket_dirs]
        return list(dict.fromkeys(dirs))


# --------------------------------------------------------------------------------------------
# Path rules needing the whole config
# --------------------------------------------------------------------------------------------


def _socket_problems(config: RunnerConfig) -> list[tuple[str, str]]:
    allowed = config.socket_dirs()
    problems = []
    for index, directory in enumerate(config.host.socket_dirs):
        try:  # a folder not made yet is checked as far as it exists
            check_trusted_directory_so_far(directory, "socket directory")
        except UntrustedFileError as exc:
            problems.append((f"host.socket_dirs[{index}]", exc.reason if not exc.unreadable else str(exc)))
    for index, guest in enumerate(config.guest):
        for key in SOCKET_KEYS:
            value = getattr(guest.backend, key, None)
            reason = None if value is None else socket_problem(value, allowed)
            if reason:
                problems.append((f"guest[{index}].backend.{key}", reason))
    return problems


def _expand_problem(value: str) -> str | None:
    """Why ``value`` cannot be expanded as :meth:`RunnerConfig.resolve` does (``~user`` of no user)."""
    try:
        Path(value).expanduser()
    except RuntimeError:
        return f"cannot expand {value.split('/')[0]!r}: no such user"
    return None


def _file_path_problems(config: RunnerConfig) -> list[tuple[str, str]]:
    """Relative-or-absolute file paths the runner resolves later: each must be resolvable now."""
    sim = config.sim
    candidates = [
        ("audit.path", config.audit.path),
        ("record.dir", config.record.dir),
        ("sim.scenario", sim.scenario if sim else None),
        ("sim.state_file", sim.state_file if sim else None),
    ]
    problems = []
    for key, value in candidates:
        reason = None if value is None else _expand_problem(value)
        if reason:
            problems.append((key, reason))
    return problems


def _raw_problems(data: object, location: str = "") -> list[tuple[str, str]]:
    """Problems no model check reports well, by key path: odd keys, and NUL characters in strings.

    Keys that are no bare TOML key (``"" = 1``, ``"a,b" = 1``) are unknown (every key this file
    knows is bare); a string holding a NUL character cannot be a path or a name.
    """
    if isinstance(data, str):
        return [(location, "must not contain NUL characters")] if "\0" in data else []
    if isinstance(data, dict):
        problems = []
        for key, value in data.items():
            bare = isinstance(key, str) and _BARE_KEY.fullmatch(key) is not None
            name = key if bare else json.dumps(str(key))  # quoted, escaped: the message stays one line
            where = f"{location}.{name}" if location else name
            if bare:
                problems += _raw_problems(value, where)
            else:  # every key this file knows is a bare TOML key
                problems.append((where, "unknown key (key names are letters, digits, '_' and '-')"))
        return problems
    if isinstance(data, list):
        return [found for i, value in enumerate(data) for found in _raw_problems(value, f"{location}[{i}]")]
    return []


# --------------------------------------------------------------------------------------------
# Policies named in the config
# --------------------------------------------------------------------------------------------


def _policy_problems(config: RunnerConfig) -> list[tuple[str, str]]:
    from wsrl.policies import POLICIES, make_policy

    problems: list[tuple[str, str]] = []
    policy = config.policy
    known = ", ".join(sorted(n for n in POLICIES if n not in SIM_ONLY_POLICIES))

    def check_reference(key: str, name: str, params: dict[str, Any], params_key: str) -> None:
        if name in SIM_ONLY_POLICIES:
            problems.append((key, f"{name!r} reads the simulator's future; it cannot run on a host"))
        elif name not in POLICIES:
            problems.append((key, f"unknown reference policy {name!r} (known: {known})"))
        else:
            try:
                make_policy(name, **params)
            except WsrlError as exc:
                problems.append((params_key, str(exc)))

    if policy.name_or_path in POLICIES or policy.name_or_path in SIM_ONLY_POLICIES:
        check_reference("policy.name_or_path", policy.name_or_path, policy.params, "policy.params")
    elif reason := _expand_problem(policy.name_or_path):
        problems.append(("policy.name_or_path", reason))
    else:
        directory = config.resolve(policy.name_or_path)
        if not directory.is_dir():
            problems.append(
                (
                    "policy.name_or_path",
                    f"neither a reference policy ({known}) nor an exported policy directory ({directory})",
                )
            )
        elif policy.params:
            problems.append(("policy.params", "only for reference policies (an exported policy has none)"))
    check_reference("policy.fallback", policy.fallback, policy.fallback_params, "policy.fallback_params")
    if policy.shadow_actor is not None:
        check_reference("policy.shadow_actor", policy.shadow_actor, {}, "policy.shadow_actor")
    return problems


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _backend_kind_problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Unknown or missing backend kinds, reported before pydantic (whose message is less clear)."""
    problems: list[tuple[str, str]] = []
    guests = data.get("guest")
    if not isinstance(guests, list):
        return problems
    for index, guest in enumerate(guests):
        backend = guest.get("backend") if isinstance(guest, dict) else None
        if not isinstance(backend, dict):
            continue
        kind = backend.get("kind")
        if kind is None:
            problems.append(
                (f"guest[{index}].backend.kind", f"required key missing (one of {', '.join(BACKEND_KINDS)})")
            )
        elif kind not in BACKEND_KINDS:
            problems.append(
                (f"guest[{index}].backend.kind", f"unknown kind {kind!r} (one of {', '.join(BACKEND_KINDS)})")
            )
    return problems


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def runner_config_from_dict(
    data: dict[str, Any], *, base_dir: Path | None = None, label: str = "<config>"
) -> RunnerConfig:
    """Validate a runner config given as a dict (``base_dir``: where relative paths start).

    Raises:
        ConfigError: any problem, each naming its dotted key.

    """
    problems = _raw_problems(data) or _backend_kind_problems(data)
    if problems:
        raise ConfigError(label, problems)
    # validate_file names keys without the discriminated union's tag (guest[0].backend.x).
    config: RunnerConfig = validate_file(RunnerConfig, data, label)
    config._base_dir = (base_dir or Path.cwd()).resolve()
    config._label = label
    problems = _socket_problems(config) + _file_path_problems(config) + _policy_problems(config)
    if problems:
        raise ConfigError(label, problems)
    return config


def load_runner_config(path: str | Path) -> RunnerConfig:
    """Read and validate ``host.toml``.

    The file is refused unless only this user or root could have written it
    (:func:`wsrl.security.read_trusted_file`: not group- or world-writable, owned by this user or
    root, in a directory others cannot replace it in), and when it is larger than
    :data:`~wsrl.security.MAX_CONFIG_BYTES` (it is then not read whole).

    Raises:
        ConfigError: refused or unreadable file, TOML syntax, or any invalid key (each named).

    """
    path = Path(path)
    label = str(path)
    try:
        data = read_trusted_file(path, "config file", MAX_CONFIG_BYTES)
    except UntrustedFileError as exc:
        reason = f"cannot read: {exc.reason}" if exc.unreadable else f"{exc.what} refused: {exc.reason}"
        raise ConfigError(label, [("", reason)]) from None
    data_dict = parse_toml_bytes(data, label)
    return runner_config_from_dict(data_dict, base_dir=path.resolve().parent, label=label)
