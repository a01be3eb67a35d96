"""Model cards: the best-reference rule, the acceptance verdict, and a real card evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wsrl.inputs.ref import ScenarioInput
from wsrl.rl.card import GPU_RECORD, best_reference, card_tables, evaluate_card, model_card, verdict
from wsrl.rl.config import AgentConfig
from wsrl.rl.export import export_policy
from wsrl.rl.train import train

REPO = Path(__file__).resolve().parent.parent


def m(saved: float, violations: float, ooms: float = 0.0, fairness: float = 1.0) -> dict[str, float]:
    return {
        "memory_saved_frac": saved,
        "violation_frac": violations,
        "oom_events": ooms,
        "jain_fairness": fairness,
        "churn": 0.1,
    }


# The leaderboard's datacenter and dense rows (6 h, seed 0).
DATACENTER = {
    "static": m(0.0, 0.0),
    "senpai": m(0.287, 0.295),
    "senpai-reclaim": m(0.331, 0.424),
    "far-memory": m(0.108, 0.012, ooms=1),
    "wmo": m(0.551, 1.0, ooms=396),
    "vpa": m(0.145, 0.007),
    "esx-idle-tax": m(0.0, 0.0),
    "oracle": m(0.351, 0.0),
}
DENSE = {
    "static": m(0.281, 0.188, ooms=491),
    "senpai": m(0.508, 0.974, ooms=10468),
    "vpa": m(0.281, 0.188, ooms=188),
    "esx-idle-tax": m(0.281, 0.087),
    "far-memory": m(0.281, 0.197, ooms=2),
    "oracle": m(0.38, 0.0),
}


def test_best_reference_is_the_biggest_saver_that_keeps_the_achievable_slo() -> None:
    # Senpai saves more but breaks the SLO in 30 % of minutes; far-memory OOMs; the oracle is not real.
    assert best_reference(DATACENTER) == "vpa"
    # On an overcommitted host every zero-OOM reference squeezes someone: judged from what is achievable.
    assert best_reference(DENSE) == "esx-idle-tax"
    assert best_reference({"wmo": m(0.5, 1.0, ooms=3)}) is None


def test_verdict_needs_every_part() -> None:
    best = DATACENTER["vpa"]
    assert all(verdict(m(0.16, 0.007), best).values())
    assert verdict(m(0.15, 0.0), best)["saves_10pct_more"] is False
    assert verdict(m(0.30, 0.01), best)["violations_no_more"] is False
    assert verdict(m(0.30, 0.0, ooms=1), best)["zero_ooms"] is False
    assert verdict(m(0.30, 0.0, fairness=0.99), best)["fairness_no_worse"] is False


def test_card_evaluates_an_exported_policy_against_every_reference(tmp_path: Path) -> None:
    config = AgentConfig.model_validate(
        {
            "algorithm": "PPO",
            "timesteps": 64,
            "env": {"inputs": ["laptop"], "episode_steps": 16},
            "hyperparameters": {"n_steps": 16, "batch_size": 48},
            "policy": {"net_arch": [16]},
        }
    )
    train(config, tmp_path / "tiny", progress_bar=False)
    export_policy(tmp_path / "tiny")
    card = evaluate_card(str(tmp_path / "tiny"), inputs=(ScenarioInput("laptop"),), duration_s=600)
    policies = card["means"]["laptop"]
    assert str(tmp_path / "tiny") in policies and "vpa" in policies and "oracle" in policies
    assert card["checks"]["laptop"]["best_reference"] in policies
    assert set(card["checks"]["laptop"]["verdict"]) == {
        "saves_10pct_more",
        "violations_no_more",
        "zero_ooms",
        "fairness_no_worse",
    }
    assert isinstance(card["passed"], bool)
    text = card_tables(card)
    assert "(learned)" in text and "(best reference)" in text and "| vpa" in text
    # The card itself, with and without a GPU throughput record beside the model.
    assert "Not measured: no GPU" in model_card(tmp_path / "tiny", card)
    (tmp_path / "tiny" / GPU_RECORD).write_text(
        (REPO / "trained" / "ppo-overcommit" / GPU_RECORD).read_text(encoding="utf-8"), encoding="utf-8"
    )
    text = model_card(tmp_path / "tiny", card)
    assert "## Training on a GPU" in text and "| 16,384 | 16 | cuda | 256,256 |" in text
    assert "- Refinement: none." in text
    # A refined run: its train.json carries a distill record; the card adds its line and time.
    record = json.loads((tmp_path / "tiny" / "train.json").read_text(encoding="utf-8"))
    record["distill"] = {
        "config_path": "agents/ppo-refine.toml",
        "inputs": ["laptop", "dense"],
        "teacher": {"name": "refined", "overcommit_min": 1.1, "burst_headroom_frac": 0.17},
        "duration_s": 10800.0,
        "dagger": True,
        "samples": 1234,
        "final_mse": 4.7e-4,
        "wall_s": 600.0,
    }
    (tmp_path / "tiny" / "train.json").write_text(json.dumps(record), encoding="utf-8")
    text = model_card(tmp_path / "tiny", card)
    assert "- Refinement (`wsrl distill --config agents/ppo-refine.toml`): 1,234 actions" in text
    assert "headroom capped at 17% on hosts provisioned over 1.1x" in text and "DAgger round" in text
    assert "600 s refining" in text and "  - `dense`" in text
    # Refined again from the refined network: both refinements, oldest first, and both times.
    earlier = dict(record["distill"])
    record["distill"] = {**earlier, "base": "trained/x", "samples": 99, "wall_s": 60.0, "previous": earlier}
    (tmp_path / "tiny" / "train.json").write_text(json.dumps(record), encoding="utf-8")
    text = model_card(tmp_path / "tiny", card)
    first = text.index("- Refinement (`wsrl distill --config agents/ppo-refine.toml`): 1,234 actions")
    assert (
        text.index("- Refined again (`wsrl distill --config agents/ppo-refine.toml --base trained/x`): 99")
        > first
    )
    assert "660 s refining" in text
    # The card says which control stack its numbers were made under.
    assert "- Control stack: trained and evaluated (every policy below) under the production" in text
    assert "shrink at most 0.005 of provisioned per second" in text
    # A network trained before the one control stack has no record of it: the card says so.
    del record["control"]
    (tmp_path / "tiny" / "train.json").write_text(json.dumps(record), encoding="utf-8")
    assert "trained before the one control stack (no rails" in model_card(tmp_path / "tiny", card)


def test_training_card_judges_on_the_training_inputs_only(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``--training``: the acceptance rule on the training inputs, written beside the model, no README."""
    import wsrl.rl.card as card_module

    config = {
        "algorithm": "PPO",
        "timesteps": 64,
        "env": {"inputs": ["laptop"], "episode_steps": 16},
        "hyperparameters": {"n_steps": 16, "batch_size": 48},
        "policy": {"net_arch": [16]},
    }
    train(AgentConfig.model_validate(config), tmp_path / "tiny", progress_bar=False)
    export_policy(tmp_path / "tiny")
    agents = tmp_path / "agents.toml"
    agents.write_text('algorithm = "PPO"\ntimesteps = 1\n[env]\ninputs = ["laptop"]\n', encoding="utf-8")
    monkeypatch.setattr(card_module, "TRAINING_INPUTS_CONFIG", agents)
    assert card_module.main([str(tmp_path / "tiny"), "--training", "--duration-h", "0.1"]) == 0
    written = json.loads((tmp_path / "tiny" / "card-training.json").read_text(encoding="utf-8"))
    assert list(written["checks"]) == ["laptop"] and not (tmp_path / "tiny" / "README.md").exists()


def test_card_notes_are_placed_in_the_card(tmp_path: Path) -> None:
    from wsrl.rl.card import NOTES_FILE, notes_section

    assert notes_section(tmp_path / NOTES_FILE) == ""
    (tmp_path / NOTES_FILE).write_text("## Status\n\nmake train gives another network.\n", encoding="utf-8")
    assert notes_section(tmp_path / NOTES_FILE) == "## Status\n\nmake train gives another network.\n"


def test_card_command_help_and_a_missing_policy_are_clear(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m wsrl.rl.card --help`` prints usage (it used to evaluate a policy named ``--help``)
    and a directory that is no policy exits 2 with one line, no traceback."""
    from wsrl.rl.card import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--inputs-config" in capsys.readouterr().out
    assert main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    # The first problem found is named: the missing policy, or (in a checkout without `make
    # bitbrains-split`) the missing held-out traces.
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert "no such directory" in err or "no such trace directory" in err, err
