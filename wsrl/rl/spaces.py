"""The per-guest observation and action spaces every wsrl agent is trained on.

A learned policy is one network with shared weights applied to each guest's row: observation
:data:`~wsrl.pipeline.observation.FEATURE_NAMES` (the guest plus its host's context), action
:data:`~wsrl.pipeline.action.ACTION_NAMES` in ``[-1, 1]``. That is what lets a policy trained on a
mix of hosts run unchanged on hosts of 1 to 64 guests.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from wsrl.pipeline.action import ACTION_DIM
from wsrl.pipeline.observation import FEATURE_COUNT

OBS_LOW = -10.0
OBS_HIGH = 10.0
"""Every feature is clipped into this range by the observation builder."""


def guest_observation_space() -> spaces.Box:
    """One guest's feature row."""
    return spaces.Box(OBS_LOW, OBS_HIGH, shape=(FEATURE_COUNT,), dtype=np.float32)


def guest_action_space() -> spaces.Box:
    """One guest's action."""
    return spaces.Box(-1.0, 1.0, shape=(ACTION_DIM,), dtype=np.float32)
