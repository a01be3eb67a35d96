"""Size and rate patterns of workload files: validated parameters (evaluation is in :mod:`wsrl.sim.patterns`).

A pattern is a multiplicative factor >= 0 on a population's size or access rate, chosen by its
``kind`` key.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field, model_validator

from wsrl.config_tools import StrictModel


class ConstantPattern(StrictModel):
    """A fixed factor."""

    kind: Literal["constant"]
    factor: float = Field(1.0, ge=0)


class DiurnalPattern(StrictModel):
    """Daily cycle: ``1 + amplitude * cos(2π (t_h - peak_h) / period_h)``.

    ``t_h`` is hours since midnight UTC of the day the simulation starts (see :mod:`wsrl.sim.build`).
    """

    kind: Literal["diurnal"]
    amplitude: float = Field(ge=0, lt=1)
    period_h: float = Field(24.0, gt=0)
    peak_h: float = Field(14.0, ge=0)


class SawtoothPattern(StrictModel):
    """Growth then drop (JVM heap between collections): linear ``low -> 1`` over ``period_s``."""

    kind: Literal["sawtooth"]
    low: float = Field(gt=0, le=1)
    period_s: float = Field(gt=0)


class RampPattern(StrictModel):
    """Leak: ``min(1 + per_hour * hours, max_factor)``; back to 1 every ``restart_h`` if set."""

    kind: Literal["ramp"]
    per_hour: float = Field(ge=0)
    max_factor: float = Field(ge=1)
    restart_h: float | None = Field(None, gt=0)


class Phase(StrictModel):
    """One phase of a :class:`PhasesPattern`."""

    duration_s: float = Field(gt=0)
    factor: float = Field(ge=0)


class PhasesPattern(StrictModel):
    """A cycle of phases (batch job, compile): each lasts ``duration_s`` at its ``factor``."""

    kind: Literal["phases"]
    phases: list[Phase] = Field(min_length=1, max_length=64)


class BurstsPattern(StrictModel):
    """Poisson bursts: ``per_hour`` arrivals, each ``duration_s`` long at factor ``peak`` (else 1).

    Populations of one guest with the same ``group`` share one burst state (they burst together).
    """

    kind: Literal["bursts"]
    per_hour: float = Field(gt=0)
    duration_s: float = Field(gt=0)
    peak: float = Field(ge=0)
    group: str = "bursts"


class SwitchingPattern(StrictModel):
    """App switching: of ``slots`` apps in ``group`` one is in the foreground at a time.

    The foreground app changes after an exponential dwell of mean ``mean_dwell_s``; this
    population (app ``slot``) gets ``foreground`` when it is in front and ``background`` otherwise.
    """

    kind: Literal["switching"]
    group: str = "apps"
    slot: int = Field(ge=0)
    slots: int = Field(ge=1, le=256)
    mean_dwell_s: float = Field(gt=0)
    foreground: float = Field(1.0, ge=0)
    background: float = Field(ge=0)

    @model_validator(mode="after")
    def _slot_in_range(self) -> SwitchingPattern:
        if self.slot >= self.slots:
            raise ValueError(f"slot {self.slot} must be < slots ({self.slots})")
        return self


PATTERN_MODELS = (
    ConstantPattern,
    DiurnalPattern,
    SawtoothPattern,
    RampPattern,
    PhasesPattern,
    BurstsPattern,
    SwitchingPattern,
)
PATTERN_KINDS: tuple[str, ...] = tuple(get_args(m.model_fields["kind"].annotation)[0] for m in PATTERN_MODELS)
"""The ``kind`` tags, in the order of :data:`PATTERN_MODELS`."""

Pattern = Annotated[
    ConstantPattern
    | DiurnalPattern
    | SawtoothPattern
    | RampPattern
    | PhasesPattern
    | BurstsPattern
    | SwitchingPattern,
    Field(discriminator="kind"),
]
