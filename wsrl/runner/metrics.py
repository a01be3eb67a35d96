"""Prometheus metrics of the runner, served over HTTP on 127.0.0.1 unless configured otherwise.

With ``[metrics] port = 0`` (the default) nothing is served and prometheus-client is not imported.
Metric names (all prefixed ``wsrl_runner_``; label ``guest`` unless noted):

========================================  =========  ==================================================
``target_bytes``                          gauge      target after the rails (what was or would be set)
``visible_bytes``, ``usage_bytes``        gauge      the guest's last reading
``working_set_bytes``                     gauge      memory touched within 120 s, from the histogram
``decisions_total{guest,outcome}``        counter    ``applied``, ``unchanged``, ``hold``, ``dry_run``,
                                                     ``expired``, ``deferred``, ``apply_error``
``rails_total{guest,rail}``               counter    a rail changed the guest's target
``breaker_open``                          gauge      1 while the guest's circuit breaker is open
``breaker_trips_total``                   counter    breaker trips
``input_state``                           gauge      0 ok, 1 hold, 2 fallback
``backend_errors_total{guest,op}``        counter    read, apply, relax or start failed
``tick_duration_seconds``                 histogram  one tick, read to apply (label-less)
``ticks_total``                           counter    ticks run (label-less)
``info{host,policy,fallback,mode}``       gauge      1: what this runner runs
========================================  =========  ==================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from wsrl.errors import WsrlError

if TYPE_CHECKING:
    from wsrl.inputs.live import GuestReading
    from wsrl.pipeline.rails import BreakerUpdate, RailLog
    from wsrl.pipeline.snapshot import HostSnapshot

PREFIX = "wsrl_runner_"


class RunnerMetrics:
    """The runner's metrics and their HTTP endpoint (a no-op when ``port`` is 0).

    Args:
        host: the host's name.
        guests: guest names, in config order.
        bind: address to serve on.
        port: TCP port; 0 serves nothing and records nothing.
        labels: ``policy``, ``fallback`` and ``mode`` for the ``info`` metric.

    Raises:
        WsrlError: prometheus-client is missing, or the port cannot be bound.

    """

    def __init__(
        self, host: str, guests: Sequence[str], *, bind: str, port: int, labels: dict[str, str]
    ) -> None:
        self.enabled = port != 0
        self.guests = list(guests)
        self.server: Any = None
        self.port = port
        if not self.enabled:
            return
        try:
            import prometheus_client as prom
        except ImportError:
            raise WsrlError(
                "metrics.port: serving metrics needs prometheus-client (pip install prometheus-client)"
            ) from None
        self.registry = prom.CollectorRegistry()
        reg = self.registry

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ("guest",)) -> Any:
            return prom.Gauge(PREFIX + name, doc, labels, registry=reg)

        def counter(name: str, doc: str, labels: tuple[str, ...] = ("guest",)) -> Any:
            return prom.Counter(PREFIX + name, doc, labels, registry=reg)

        self.target_bytes = gauge("target_bytes", "Target after the safety rails, bytes.")
        self.visible_bytes = gauge("visible_bytes", "Guest-visible size at the last reading, bytes.")
        self.usage_bytes = gauge("usage_bytes", "Memory in use at the last reading, bytes.")
        self.working_set_bytes = gauge("working_set_bytes", "Memory touched within 120 s, bytes.")
        self.decisions = counter("decisions", "Decisions by outcome.", ("guest", "outcome"))
        self.rails = counter("rails", "Safety rail interventions by rail.", ("guest", "rail"))
        self.breaker_open = gauge("breaker_open", "1 while the guest's circuit breaker is open.")
        self.breaker_trips = counter("breaker_trips", "Circuit breaker trips.")
        self.input_state = gauge("input_state", "Input state: 0 ok, 1 hold, 2 fallback.")
        self.backend_errors = counter("backend_errors", "Backend failures by operation.", ("guest", "op"))
        self.tick_duration = prom.Histogram(
            PREFIX + "tick_duration_seconds",
            "Duration of one tick, seconds.",
            registry=reg,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0),
        )
        self.ticks = prom.Counter(PREFIX + "ticks", "Ticks run.", registry=reg)
        self.policy_reloads = prom.Counter(
            PREFIX + "policy_reloads",
            "Changes of the exported policy's files, by outcome (loaded, refused).",
            ("outcome",),
            registry=reg,
        )
        info = prom.Gauge(PREFIX + "info", "What this runner runs.", ("host", *labels), registry=reg)
        info.labels(host, *labels.values()).set(1)
        try:
            self.server, _thread = prom.start_http_server(port, addr=bind, registry=reg)
        except OSError as exc:
            raise WsrlError(f"metrics: cannot serve on {bind}:{port}: {exc.strerror or exc}") from None

    def guest(self, index: int, **values: float) -> None:
        """Set the gauges of guest ``index`` (``target_bytes=...``, ``visible_bytes=...``, ...)."""
        if not self.enabled:
            return
        name = self.guests[index]
        for key, value in values.items():
            if value == value:  # skip NaN: keep the last known value
                getattr(self, key).labels(name).set(value)

    def decision(self, index: int, outcome: str) -> None:
        """Count a decision outcome for guest ``index``."""
        if self.enabled:
            self.decisions.labels(self.guests[index], outcome).inc()

    def rail(self, index: int, rail: str) -> None:
        """Count a rail intervention for guest ``index``."""
        if self.enabled:
            self.rails.labels(self.guests[index], rail).inc()

    def breaker(self, index: int, *, is_open: bool, tripped: bool) -> None:
        """Breaker state of guest ``index``."""
        if self.enabled:
            self.breaker_open.labels(self.guests[index]).set(1 if is_open else 0)
            if tripped:
                self.breaker_trips.labels(self.guests[index]).inc()

    def backend_error(self, index: int, op: str) -> None:
        """Count a failed backend operation."""
        if self.enabled:
            self.backend_errors.labels(self.guests[index], op).inc()

    def policy_reload(self, *, loaded: bool) -> None:
        """Count a change of the policy files: ``loaded`` or refused."""
        if self.enabled:
            self.policy_reloads.labels("loaded" if loaded else "refused").inc()

    def tick(self, duration_s: float) -> None:
        """Count a tick and its duration."""
        if self.enabled:
            self.ticks.inc()
            self.tick_duration.observe(duration_s)

    def export_tick(
        self,
        *,
        readings: Sequence[GuestReading | None],
        snapshot: HostSnapshot | None,
        usable: np.ndarray,
        states: np.ndarray,
        breaker: BreakerUpdate,
        rails: RailLog,
        target_bytes: Sequence[int],
        outcomes: Sequence[str],
        duration_s: float,
    ) -> None:
        """Everything one tick changed: per-guest gauges, outcomes, rails, breaker; the tick itself."""
        if not self.enabled:
            return
        working_set = snapshot.working_set_bytes() if snapshot is not None else None
        for g, reading in enumerate(readings):
            values = {"target_bytes": float(target_bytes[g]), "input_state": float(states[0, g])}
            if reading is not None and usable[0, g]:
                values["visible_bytes"] = reading.visible_bytes
                values["usage_bytes"] = reading.usage_bytes
                if working_set is not None:
                    values["working_set_bytes"] = float(working_set[0, g])
            self.guest(g, **values)
            self.decision(g, outcomes[g])
            for rail in rails.rails_of(g):
                self.rail(g, rail)
            self.breaker(g, is_open=bool(breaker.open[0, g]), tripped=bool(breaker.tripped[0, g]))
        self.tick(duration_s)

    def close(self) -> None:
        """Stop serving (never raises)."""
        if self.server is not None:
            try:
                self.server.shutdown()
                self.server.server_close()
            except OSError:
                pass
            self.server = None
