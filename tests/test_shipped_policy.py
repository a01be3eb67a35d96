"""The shipped policy loads through the production path (ONNX + checked manifest) and runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from shipped import private_copy

from wsrl.eval.runner import evaluate_policy
from wsrl.inputs.ref import ScenarioInput
from wsrl.pipeline.action import ACTION_NAMES
from wsrl.pipeline.observation import FEATURE_NAMES, OBS_SPEC_VERSION
from wsrl.policies.learned import load_learned_policy

SHIPPED = Path(__file__).resolve().parent.parent / "trained" / "ppo-overcommit"


def test_shipped_policy_matches_this_build_and_runs(tmp_path: Path) -> None:
    # A copy with owner-only write bits: a checkout's modes depend on the umask, the loader's
    # permission check does not.
    copy = private_copy(SHIPPED, tmp_path / "ppo-overcommit")
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["obs_spec_version"] == OBS_SPEC_VERSION
    assert manifest["feature_names"] == list(FEATURE_NAMES)
    assert manifest["action_names"] == list(ACTION_NAMES)
    policy = load_learned_policy(copy)
    result = evaluate_policy(policy, ScenarioInput("laptop"), 0, 1800)
    assert all(np.isfinite(v) for v in result.metrics.values())
    assert result.metrics["oom_events"] == 0
    card = json.loads((SHIPPED / "card.json").read_text())
    assert set(card["checks"]) >= {"datacenter", "laptop", "dense", "traces:out/bitbrains/holdout"}
