"""Build each ``[[guest]]``'s backend from its validated config table, importing only the kinds in use.

Every histogram backend is given the runner's bin edges (``host.histogram_edges_ms``): it re-bins
what it reads onto them on its own threads (the read's worker, a guest stream's reader), so that a
tick's snapshot takes each histogram as it is.

``kind`` -> factory: ``cgroup`` (:mod:`wsrl.backends.cgroup`), ``qemu`` (:mod:`wsrl.backends.qemu`),
``crosvm`` (:mod:`wsrl.backends.crosvm`), ``sim`` (:mod:`wsrl.backends.sim`). Each module is
imported when the first guest of its kind is built, so a host of containers never loads the QMP
client, and a build without a backend module fails with a clear message only when a config uses it.
Every failure is a :class:`~wsrl.errors.WsrlError` naming the guest's key (``guest[2].backend``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wsrl.backends.base import GuestBackend
from wsrl.errors import WsrlError
from wsrl.units import GIB

if TYPE_CHECKING:
    from wsrl.backends.referenced import ReferencedSettings
    from wsrl.backends.sim import SimWorld
    from wsrl.runner.config import RunnerConfig
    from wsrl.runner.config_backends import CgroupBackendConfig

_MODULES = {"cgroup": "wsrl.backends.cgroup", "qemu": "wsrl.backends.qemu", "crosvm": "wsrl.backends.crosvm"}


class _Context:
    """What factories share: the config and, once built, the one simulated world."""

    def __init__(self, config: RunnerConfig) -> None:
        self.config = config
        self._world: SimWorld | None = None

    def world(self) -> SimWorld:
        if self._world is None:
            from wsrl.backends.sim import SimWorld

            sim = self.config.sim
            assert sim is not None  # the config requires [sim] for sim guests
            scenario = sim.scenario
            if scenario.endswith(".toml") or "/" in scenario:
                scenario = str(self.config.resolve(scenario))
            self._world = SimWorld(
                scenario,
                seed=sim.seed,
                clock=sim.clock,
                seconds_per_tick=sim.seconds_per_tick or self.config.host.interval_s,
                state_file=None if sim.state_file is None else self.config.resolve(sim.state_file),
            )
        return self._world


def _backend_class(kind: str, class_name: str) -> Callable[..., GuestBackend]:
    try:
        module = importlib.import_module(_MODULES[kind])
    except ImportError as exc:
        raise WsrlError(f"backend kind {kind!r} is not available in this installation: {exc}") from None
    factory: Callable[..., GuestBackend] = getattr(module, class_name)
    return factory


def _cgroup(ctx: _Context, index: int) -> GuestBackend:
    guest = ctx.config.guest[index]
    table = guest.backend
    kwargs: dict[str, Any] = {
        "root": table.root or ctx.config.host.cgroup_root,  # type: ignore[union-attr]
        "version": table.version,  # type: ignore[union-attr]
        "histogram_source": table.histogram_source,  # type: ignore[union-attr]
        "proactive_reclaim": table.proactive_reclaim,  # type: ignore[union-attr]
        "edges_ms": ctx.config.host.histogram_edges_ms,
    }
    if table.lru_gen_path is not None:  # type: ignore[union-attr]
        kwargs["lru_gen_path"] = table.lru_gen_path  # type: ignore[union-attr]
    if table.histogram_source in ("auto", "referenced"):  # type: ignore[union-attr]
        kwargs["referenced"] = _referenced_settings(table)  # type: ignore[arg-type]
    if table.histogram_source == "damon":  # type: ignore[union-attr]
        kwargs["damon_kdamond"] = table.damon_kdamond  # type: ignore[union-attr]
        kwargs["damon_context"] = table.damon_context  # type: ignore[union-attr]
        kwargs["damon_target"] = table.damon_target  # type: ignore[union-attr]
        kwargs["damon_scheme"] = table.damon_scheme  # type: ignore[union-attr]
    backend = _backend_class("cgroup", "CgroupBackend")(guest.name, table.path, **kwargs)  # type: ignore[union-attr]
    table.note_source_in_use(  # type: ignore[union-attr]
        getattr(backend, "histogram_source", table.histogram_source),  # type: ignore[union-attr]
        getattr(backend, "histogram_source_reason", "configured"),
    )
    return backend


def histogram_source_of(config: RunnerConfig, index: int) -> tuple[str | None, str]:
    """``(source, why)`` of guest ``index``'s working-set histograms, for the start record and log.

    cgroup: the source its backend uses (``auto`` resolved when the backend was built); QEMU and
    crosvm: the guest agent's stream when ``agent_socket`` is set (host-side accessed bits do not
    see a KVM guest's accesses: they are in the EPT/NPT, not the VMM's page tables), crosvm's
    ``balloon_ws``, or none; sim: the simulator.
    """
    table = config.guest[index].backend
    if table.kind == "cgroup":
        return table.source_in_use()
    if table.kind == "sim":
        return "sim", "the simulated host"
    if table.agent_socket is not None:
        return "guest_agent", "the guest's lru_gen dumps over its agent socket"
    if table.kind == "crosvm" and table.working_set:
        return "balloon_ws", "crosvm balloon_ws"
    return None, "no histogram source: no agent_socket"


def _referenced_settings(table: CgroupBackendConfig) -> ReferencedSettings:
    from wsrl.backends.referenced import ReferencedSettings

    return ReferencedSettings(
        edges_ms=table.referenced_read_edges_ms(),
        cycle_s=table.referenced_cycle_s or table.referenced_max_age_s,
        detail=table.referenced_detail,
        max_processes=table.referenced_max_processes,
        read_deadline_s=table.referenced_read_deadline_s,
    )


def _qemu(ctx: _Context, index: int) -> GuestBackend:
    guest = ctx.config.guest[index]
    table = guest.backend
    return _backend_class("qemu", "QemuBackend")(
        guest.name,
        table.qmp_socket,  # type: ignore[union-attr]
        agent_socket=table.agent_socket,  # type: ignore[union-attr]
        memcg=table.memcg,  # type: ignore[union-attr]
        stats_interval_s=table.stats_interval_s,  # type: ignore[union-attr]
        timeout_s=table.timeout_s,  # type: ignore[union-attr]
        edges_ms=ctx.config.host.histogram_edges_ms,
    )


def _crosvm(ctx: _Context, index: int) -> GuestBackend:
    guest = ctx.config.guest[index]
    table = guest.backend
    return _backend_class("crosvm", "CrosvmBackend")(
        guest.name,
        table.control_socket,  # type: ignore[union-attr]
        crosvm_bin=table.crosvm_bin,  # type: ignore[union-attr]
        ram_bytes=int(guest.provisioned_gib * GIB),
        timeout_s=table.timeout_s,  # type: ignore[union-attr]
        agent_socket=table.agent_socket,  # type: ignore[union-attr]
        memcg=table.memcg,  # type: ignore[union-attr]
        working_set=table.working_set,  # type: ignore[union-attr]
        edges_ms=ctx.config.host.histogram_edges_ms,
    )


def _sim(ctx: _Context, index: int) -> GuestBackend:
    from wsrl.backends.sim import SimBackend

    guest = ctx.config.guest[index]
    return SimBackend(guest.name, ctx.world(), guest=guest.backend.guest)  # type: ignore[union-attr]


FACTORIES: dict[str, Callable[[_Context, int], GuestBackend]] = {
    "cgroup": _cgroup,
    "qemu": _qemu,
    "crosvm": _crosvm,
    "sim": _sim,
}
"""Backend kind -> factory building guest ``index`` of a config."""


def build_backends(config: RunnerConfig) -> list[GuestBackend]:
    """One backend per ``[[guest]]``, in config order.

    Raises:
        WsrlError: a backend cannot be built (``guest[i].backend: ...``); backends built before it
            are closed.

    """
    ctx = _Context(config)
    built: list[GuestBackend] = []
    for index, guest in enumerate(config.guest):
        try:
            built.append(FACTORIES[guest.backend.kind](ctx, index))
        except (WsrlError, TypeError, ValueError, OSError) as exc:
            for backend in built:
                backend.close()
            raise WsrlError(f"{config.label}: guest[{index}].backend ({guest.name}): {exc}") from None
    return built
