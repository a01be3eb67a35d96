"""Training configurations (``agents/*.toml``), validated with errors that name the key.

An agent config says which algorithm learns on which inputs, with which hyperparameters and
reward weights, and what it is evaluated on while it trains::

    algorithm = "PPO"            # PPO, SAC or RecurrentPPO
    timesteps = 3_000_000        # guest-steps (every slot of the vector env counts)
    seed = 0

    [env]
    inputs = ["../envs/training/mixed-vms.toml", "traces:../out/bitbrains/train"]
    hosts_per_input = 1
    episode_steps = 360

    [eval]                       # periodic evaluation on held-out inputs
    inputs = ["datacenter"]
    every_timesteps = 500_000
    duration = "1h"

    [reward]                     # wsrl.rl.reward.RewardWeights
    oom = 20.0

    [hyperparameters]            # passed to the SB3 algorithm as keyword arguments
    learning_rate = 3e-4

    [policy]                     # SB3 policy_kwargs
    net_arch = [64, 64]

Inputs are parsed once, when the config is read, into typed references
(:data:`~wsrl.inputs.ref.InputRef`; written back as text by ``model_dump``). Relative paths
(scenario files, ``traces:`` directories) are resolved against the config file's folder, so a
config runs the same from any working directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from wsrl.config_tools import read_toml, validate_file
from wsrl.errors import WsrlError
from wsrl.inputs.ref import InputRef, ScenarioInput, TraceInput, parse_input
from wsrl.pipeline.control import ControlSpec
from wsrl.rl.reward import RewardWeights
from wsrl.sim.config_scenario import HistogramSource
from wsrl.units import parse_duration_s

ALGORITHMS: tuple[str, ...] = ("PPO", "SAC", "RecurrentPPO")


def _input_of(value: Any) -> InputRef:
    """A config value's input: its text parsed (errors become the key's validation message)."""
    if isinstance(value, ScenarioInput | TraceInput):
        return value
    try:
        return parse_input(value)
    except WsrlError as exc:
        raise ValueError(str(exc)) from None


ConfigInput = Annotated[InputRef, BeforeValidator(_input_of), PlainSerializer(str, return_type=str)]
"""An input in a config: text in the file and in ``model_dump``, an :data:`InputRef` in between."""


class EnvSection(BaseModel):
    """``[env]``: what the agent trains on."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[ConfigInput] = Field(min_length=1)
    hosts_per_input: int = Field(1, ge=1, le=4096)
    episode_steps: int = Field(360, ge=2)
    workers: int = Field(1, ge=1, le=256)
    """Processes stepping the inputs (:class:`~wsrl.rl.parallel_vec_env.ParallelGuestVecEnv`); 1 = in-process.
    The env is the same either way (same seed, same episodes), so this changes speed, not results."""
    histogram_sources: list[HistogramSource] = Field(default_factory=list, max_length=16)
    """The histogram sources each input's hosts read their guests through, in turn (host ``h``:
    ``histogram_sources[h % n]``; guests whose scenario names a source keep it): training sees the
    resolution production hosts give (``lru_gen`` exact, ``referenced`` its edges and cycle,
    ``memory_stat`` two bins). Empty: each scenario's own (``exact`` unless it says otherwise)."""
    rails: Literal["production", "none"] = "production"
    """The rails the training hosts decide under: ``production`` (the runner's defaults without the
    output check's jump test, :meth:`~wsrl.pipeline.control.ControlSpec.for_training`) or ``none``
    (only the ``[floor, provisioned]`` clamp, :meth:`~wsrl.pipeline.control.ControlSpec.unguarded`):
    a first stage of a curriculum whose later stage (``wsrl distill``) runs under the rails."""

    def control(self) -> ControlSpec:
        """The control stack's spec that :attr:`rails` names."""
        return ControlSpec.for_training() if self.rails == "production" else ControlSpec.unguarded()


class EvalSection(BaseModel):
    """``[eval]``: held-out inputs evaluated while training (through ``wsrl.eval``)."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[ConfigInput] = Field(default_factory=list)
    every_timesteps: int = Field(500_000, ge=1)
    duration: str = "1h"
    seed: int = 1000


class AgentConfig(BaseModel):
    """A whole agent config (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    algorithm: Literal["PPO", "SAC", "RecurrentPPO"]
    timesteps: int = Field(ge=1)
    seed: int = 0
    device: str = "auto"
    env: EnvSection
    eval: EvalSection = Field(default_factory=EvalSection)
    reward: RewardWeights = Field(default_factory=RewardWeights)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    policy: dict[str, Any] = Field(default_factory=dict)
    path: str | None = None

    @property
    def eval_duration_s(self) -> float:
        """``eval.duration`` in seconds."""
        return parse_duration_s(self.eval.duration)


def load_agent_config(path: str | Path, overrides: dict[str, Any] | None = None) -> AgentConfig:
    """Read and validate an agent config; ``overrides`` replace top-level keys (``timesteps``, ``seed``).

    Raises:
        ConfigError: the file is missing, not TOML, or a key is unknown or invalid (named).

    """
    file = Path(path)
    data = read_toml(file)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    config: AgentConfig = validate_file(AgentConfig, data, str(file))
    base = file.resolve().parent
    config.env.inputs = [ref.resolved(base) for ref in config.env.inputs]
    config.eval.inputs = [ref.resolved(base) for ref in config.eval.inputs]
    config.path = str(file)
    return config
