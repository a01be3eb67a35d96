"""The observation spec cannot drift: its version, the shipped manifests and the docs follow the code.

``OBS_SPEC_VERSION`` (``wsrl/pipeline/observation.py``) is written into every exported manifest and
checked when a policy loads, so a policy never runs on features it was not trained on. That check
is only as good as the discipline of bumping the version: :data:`SPEC_DIGESTS` pins, for each
version, a SHA-256 of the ordered feature names and action names (:func:`spec_digest`). Renaming,
adding, removing or reordering a feature or an action without a new version fails here.

``docs/learning.md`` lists every feature, action and reward term in tables that are parsed here and
compared with the code, together with the counts it states.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from shipped import TRAINED, private_copy

from wsrl.errors import WsrlError
from wsrl.pipeline.action import ACTION_DIM, ACTION_NAMES
from wsrl.pipeline.observation import FEATURE_COUNT, FEATURE_NAMES, OBS_SPEC_VERSION
from wsrl.policies.learned import load_learned_policy
from wsrl.rl.reward import REWARD_TERMS, RewardWeights

ROOT = Path(__file__).resolve().parent.parent
LEARNING_MD = ROOT / "docs" / "learning.md"

SPEC_DIGESTS: dict[int, str] = {
    # Version 1 predates this table and covered several name lists (the working-set peaks,
    # over_budget_share_1h and peak_keep were added under it): no single digest describes it.
    2: "57e39aa5e923186aef9106432437bdd676e8bd627bed2a28b106b5f1419aadae",  # 44 features, 3 actions
    # 3: the same names; cold memory past a source's horizon is read log-uniformly (hist_horizon_ms).
    3: "57e39aa5e923186aef9106432437bdd676e8bd627bed2a28b106b5f1419aadae",
}
"""``{OBS_SPEC_VERSION: spec_digest(feature names, action names)}``, one row per released version.

Rows are never edited or removed: a policy exported under a version keeps its meaning.
"""


def spec_digest(feature_names: Sequence[str], action_names: Sequence[str]) -> str:
    """SHA-256 (hex) of the ordered feature and action names, as canonical JSON.

    ``{"action_names": [...], "feature_names": [...]}`` with sorted keys and no whitespace, UTF-8:
    the action count (``ACTION_DIM``) and the feature count are the lists' lengths.
    """
    payload = {"feature_names": list(feature_names), "action_names": list(action_names)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


CURRENT_DIGEST = spec_digest(FEATURE_NAMES, ACTION_NAMES)


# --- the version follows the names -------------------------------------------------------------


def test_names_are_well_formed() -> None:
    assert len(FEATURE_NAMES) == FEATURE_COUNT
    assert len(ACTION_NAMES) == ACTION_DIM
    for names in (FEATURE_NAMES, ACTION_NAMES):
        assert len(set(names)) == len(names), f"duplicate names in {names}"
        assert all(re.fullmatch(r"[a-z][a-z0-9_]*", name) for name in names), names


def test_feature_names_change_only_with_obs_spec_version() -> None:
    pinned = SPEC_DIGESTS.get(OBS_SPEC_VERSION)
    assert pinned is not None, (
        f"OBS_SPEC_VERSION is {OBS_SPEC_VERSION} but tests/test_obs_spec.py pins no digest for it: "
        f"add {OBS_SPEC_VERSION}: {CURRENT_DIGEST!r} to SPEC_DIGESTS "
        f"({FEATURE_COUNT} features, {ACTION_DIM} actions)"
    )
    if pinned != CURRENT_DIGEST:
        older = [v for v, digest in SPEC_DIGESTS.items() if digest == CURRENT_DIGEST]
        hint = f" (they are those of version {older[0]}, which is not the current one)" if older else ""
        pytest.fail(
            f"feature names changed: bump OBS_SPEC_VERSION in wsrl/pipeline/observation.py and add "
            f"its digest here (tests/test_obs_spec.py SPEC_DIGESTS: "
            f"{OBS_SPEC_VERSION + 1}: {CURRENT_DIGEST!r}). The feature or action names no longer "
            f"match the digest pinned for version {OBS_SPEC_VERSION}{hint}; "
            f"also update docs/learning.md and re-export or retrain trained/*.",
            pytrace=False,
        )


def test_obs_spec_version_is_the_newest_pinned() -> None:
    assert max(SPEC_DIGESTS) == OBS_SPEC_VERSION, (
        f"OBS_SPEC_VERSION is {OBS_SPEC_VERSION}, but SPEC_DIGESTS pins version {max(SPEC_DIGESTS)}: "
        "versions only go up"
    )


def test_digest_sees_every_kind_of_change() -> None:
    features, actions = list(FEATURE_NAMES), list(ACTION_NAMES)
    changed = [
        (features[:-1], actions),  # removed
        ([*features, "new_feature"], actions),  # added
        ([features[1], features[0], *features[2:]], actions),  # reordered
        ([f"{features[0]}x", *features[1:]], actions),  # renamed
        (features, actions[:-1]),  # an action removed (ACTION_DIM changes)
        (features, [*actions[1:], actions[0]]),  # actions reordered
        (features + actions[:1], actions[1:]),  # a name moved across the two lists
    ]
    digests = {spec_digest(f, a) for f, a in changed}
    assert len(digests) == len(changed) and CURRENT_DIGEST not in digests


# --- manifests: the shipped policies record the spec they were trained on -----------------------


def _shipped_manifests() -> list[Path]:
    return sorted(TRAINED.parent.glob("**/manifest.json"))


def test_shipped_manifests_record_the_current_spec() -> None:
    manifests = _shipped_manifests()
    assert TRAINED / "manifest.json" in manifests and TRAINED / "base" / "manifest.json" in manifests
    for path in manifests:
        manifest = json.loads(path.read_text())
        where = path.relative_to(ROOT)
        version = manifest["obs_spec_version"]
        digest = spec_digest(manifest["feature_names"], manifest["action_names"])
        assert SPEC_DIGESTS.get(version) == digest, (
            f"{where}: obs_spec_version {version} does not describe its feature_names/action_names"
        )
        assert version == OBS_SPEC_VERSION, (
            f"{where}: obs_spec_version {version}, this wsrl computes {OBS_SPEC_VERSION}: "
            "retrain it (or re-export it if only the version moved)"
        )
        shapes = [manifest["onnx"]["inputs"][0]["shape"], manifest["onnx"]["outputs"][0]["shape"]]
        assert shapes == [["batch", FEATURE_COUNT], ["batch", ACTION_DIM]], where


@pytest.mark.parametrize("recorded", [OBS_SPEC_VERSION - 1, OBS_SPEC_VERSION + 1])
def test_manifest_of_another_spec_version_is_refused(tmp_path: Path, recorded: int) -> None:
    copy = private_copy(TRAINED, tmp_path / "policy")
    path = copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["obs_spec_version"] = recorded
    path.write_text(json.dumps(manifest))
    with pytest.raises(WsrlError) as info:
        load_learned_policy(copy)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and "obs_spec_version" in message
    assert re.search(rf"\b{recorded}\b.*\b{OBS_SPEC_VERSION}\b", message), message


def test_shipped_policy_loads_under_the_current_spec(tmp_path: Path) -> None:
    for source in (TRAINED, TRAINED / "base"):
        policy = load_learned_policy(private_copy(source, tmp_path / source.name))
        assert policy is not None


# --- docs/learning.md states what the code has --------------------------------------------------


def _section(title_prefix: str) -> tuple[str, list[str]]:
    """The ``## `` heading starting with ``title_prefix`` and the lines up to the next heading."""
    lines = LEARNING_MD.read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(f"## {title_prefix}")]
    assert len(starts) == 1, f"docs/learning.md: expected one '## {title_prefix}' section"
    body = []
    for line in lines[starts[0] + 1 :]:
        if line.startswith("## "):
            break
        body.append(line)
    return lines[starts[0]], body


def _table_names(body: list[str]) -> list[str]:
    """The backticked names of the first column of the section's first table, in order."""
    rows = [line for line in body if line.startswith("|")]
    assert len(rows) > 2, "no table"
    names: list[str] = []
    for row in rows[2:]:  # header, separator
        first_cell = row.split("|")[1]
        names += re.findall(r"`([A-Za-z0-9_]+)`", first_cell)
    return names


def _table_cells(body: list[str], column: int) -> list[str]:
    rows = [line for line in body if line.startswith("|")]
    return [row.split("|")[column + 1].strip() for row in rows[2:]]


def test_learning_md_lists_every_feature_in_order() -> None:
    heading, body = _section("Observation")
    pattern = r"## Observation \(`FEATURE_NAMES`, (\d+) floats per guest, spec version (\d+)\)"
    match = re.fullmatch(pattern, heading)
    assert match, f"docs/learning.md: unexpected heading {heading!r}"
    assert int(match[1]) == FEATURE_COUNT, (
        f"docs/learning.md says {match[1]} features, the code has {FEATURE_COUNT}"
    )
    assert int(match[2]) == OBS_SPEC_VERSION, (
        f"docs/learning.md says spec version {match[2]}, the code has {OBS_SPEC_VERSION}"
    )
    names = _table_names(body)
    assert names == list(FEATURE_NAMES), (
        "docs/learning.md's observation table differs from FEATURE_NAMES: "
        f"missing {[n for n in FEATURE_NAMES if n not in names]}, "
        f"unknown {[n for n in names if n not in FEATURE_NAMES]} (or out of order)"
    )


def test_learning_md_lists_every_action_in_order() -> None:
    heading, body = _section("Action")
    match = re.fullmatch(r"## Action \(`ACTION_NAMES`, (\d+) floats in \[-1, 1\] per guest\)", heading)
    assert match, f"docs/learning.md: unexpected heading {heading!r}"
    assert int(match[1]) == ACTION_DIM, f"docs/learning.md says {match[1]} actions, the code has {ACTION_DIM}"
    assert _table_names(body) == list(ACTION_NAMES)


def test_learning_md_lists_every_reward_term_and_its_default() -> None:
    _, body = _section("Reward")
    assert _table_names(body) == list(REWARD_TERMS)
    defaults = RewardWeights()
    for term, cell in zip(REWARD_TERMS, _table_cells(body, 1), strict=True):
        stated = float(re.match(r"[0-9.]+", cell)[0])  # type: ignore[index]
        assert stated == getattr(defaults, term), f"docs/learning.md: {term}'s default weight is {cell}"


def test_learning_md_env_spaces_match_the_code() -> None:
    _, body = _section("Environments")
    sizes = [int(n) for n in re.findall(r"Box\(max_guests, (\d+)\)", "\n".join(body))]
    assert sizes == [FEATURE_COUNT, ACTION_DIM], f"docs/learning.md: env spaces say {sizes}"


def test_no_doc_states_another_feature_or_action_count() -> None:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    docs += sorted(TRAINED.parent.glob("**/README.md"))
    # "N features" / "N actions" as whole numbers ("1,015,200 actions of a teacher" is not a count).
    pattern = re.compile(r"(?<![\d,.])\b(\d+) (?:observation |per-guest )?(features|actions)\b")
    for doc in docs:
        text = doc.read_text(encoding="utf-8")
        for match in pattern.finditer(text):
            expected = ACTION_DIM if match[2] == "actions" else FEATURE_COUNT
            where = doc.relative_to(ROOT)
            assert int(match[1]) == expected, f"{where}: {match[0]!r}, the code has {expected}"
