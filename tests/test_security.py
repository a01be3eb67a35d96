"""Refusing model, manifest and config files others could have written; hashing the bytes that run.

The tests run as root (like the cgroup tests): they hand files to another uid with ``chown`` to
play the other user. The exported policies are tiny ONNX graphs built with ``onnx.helper`` whose
action is a constant, so which model a loaded policy runs is visible in its output.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from wsrl.errors import ConfigError, WsrlError
from wsrl.pipeline.action import ACTION_DIM, ACTION_NAMES
from wsrl.pipeline.observation import FEATURE_COUNT, FEATURE_NAMES, OBS_SPEC_VERSION
from wsrl.policies.learned import (
    ACTION_HIGH,
    ACTION_LOW,
    BATCH_DIM,
    MANIFEST_FILE,
    MANIFEST_FORMAT_VERSION,
    MODEL_FILE,
    LearnedPolicy,
    expected_io,
    load_learned_policy,
)
from wsrl.runner.config import load_runner_config
from wsrl.security import (
    MAX_CONFIG_BYTES,
    UntrustedFileError,
    check_trusted_file,
    read_trusted_file,
)

OTHER_UID = 65534  # nobody
pytestmark = pytest.mark.timeout(60)


def _write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


@pytest.fixture
def root_only() -> None:
    assert os.geteuid() == 0, "these tests play another user with chown: run them as root"


# -- check_trusted_file ----------------------------------------------------------------------------


def test_files_of_this_user_not_writable_by_others_pass(tmp_path: Path) -> None:
    for mode in (0o600, 0o644, 0o400, 0o755):
        path = _write(tmp_path / f"f{mode:o}", b"x", mode)
        check_trusted_file(path, "config file")
    assert read_trusted_file(tmp_path / "f644", "config file", 10) == b"x"


@pytest.mark.parametrize(
    ("mode", "reason"),
    [(0o664, "group-writable"), (0o646, "world-writable"), (0o666, "group and world-writable")],
)
def test_group_or_world_writable_files_are_refused(tmp_path: Path, mode: int, reason: str) -> None:
    path = _write(tmp_path / "host.toml", b"x", mode)
    with pytest.raises(UntrustedFileError) as info:
        check_trusted_file(path, "config file")
    message = str(info.value)
    assert message.startswith(f"{path}: config file refused: it is {reason}")
    assert f"{mode:04o}" in message and "\n" not in message


def test_a_file_owned_by_another_user_is_refused(tmp_path: Path, root_only: None) -> None:
    path = _write(tmp_path / "model.onnx", b"x")
    os.chown(path, OTHER_UID, -1)
    with pytest.raises(UntrustedFileError, match=rf"model\.onnx: policy model refused: .*uid {OTHER_UID}"):
        check_trusted_file(path, "policy model")


def test_a_symlink_to_an_untrusted_file_is_refused(tmp_path: Path) -> None:
    target = _write(tmp_path / "real.toml", b"x", 0o666)
    link = tmp_path / "host.toml"
    link.symlink_to(target)
    with pytest.raises(UntrustedFileError, match=r"host\.toml: config file refused: .*writable.*resolves to"):
        check_trusted_file(link, "config file")
    os.chmod(target, 0o644)
    check_trusted_file(link, "config file")


def test_a_symlink_owned_by_another_user_is_refused(tmp_path: Path, root_only: None) -> None:
    target = _write(tmp_path / "real.toml", b"x")
    link = tmp_path / "host.toml"
    link.symlink_to(target)
    os.lchown(link, OTHER_UID, -1)
    with pytest.raises(UntrustedFileError, match=rf"the symlink is owned by uid {OTHER_UID}"):
        check_trusted_file(link, "config file")


def test_a_world_writable_directory_needs_the_sticky_bit(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    path = _write(folder / "host.toml", b"x")
    os.chmod(folder, 0o777)
    with pytest.raises(UntrustedFileError, match="world-writable without the sticky bit"):
        check_trusted_file(path, "config file")
    os.chmod(folder, 0o1777)  # like /tmp: nobody can replace a file they do not own
    check_trusted_file(path, "config file")


def test_a_directory_owned_by_another_user_is_refused(tmp_path: Path, root_only: None) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir()
    path = _write(folder / "manifest.json", b"{}")
    os.chown(folder, OTHER_UID, -1)
    with pytest.raises(UntrustedFileError, match=rf"its directory .*theirs is owned by uid {OTHER_UID}"):
        check_trusted_file(path, "policy manifest")


def test_missing_files_fifos_and_directories_are_refused_without_blocking(tmp_path: Path) -> None:
    with pytest.raises(
        UntrustedFileError, match="absent: cannot read config file: No such file or directory"
    ):
        check_trusted_file(tmp_path / "absent", "config file")
    with pytest.raises(UntrustedFileError, match="not a regular file"):
        check_trusted_file(tmp_path, "config file")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(UntrustedFileError, match="not a regular file"):
        read_trusted_file(fifo, "config file", 100)  # no writer: opening it would block
    link = tmp_path / "endless.toml"
    link.symlink_to("/dev/zero")
    with pytest.raises(UntrustedFileError, match="not a regular file"):
        read_trusted_file(link, "config file", 100)


def test_a_file_over_the_cap_is_refused_without_being_read(tmp_path: Path) -> None:
    giant = tmp_path / "giant.toml"
    with giant.open("wb") as handle:
        handle.truncate(8 * 1024**3)  # 8 GiB, sparse: reading it whole would take seconds and all memory
    os.chmod(giant, 0o600)
    started = time.perf_counter()
    with pytest.raises(UntrustedFileError, match=r"8589934592 bytes is larger than the 1048576-byte cap"):
        read_trusted_file(giant, "config file", MAX_CONFIG_BYTES)
    assert time.perf_counter() - started < 1.0
    exact = _write(tmp_path / "exact", b"a" * 1000)
    assert len(read_trusted_file(exact, "config file", 1000)) == 1000
    with pytest.raises(UntrustedFileError, match="larger than the 999-byte cap"):
        read_trusted_file(exact, "config file", 999)


# -- the runner config ------------------------------------------------------------------------------

CONFIG = """
[host]
name = "h"
capacity_gib = 16
[policy]
name_or_path = "static"
[audit]
path = "audit.jsonl"
[[guest]]
name = "g"
provisioned_gib = 4
backend = { kind = "cgroup", path = "a.slice/b" }
"""


def test_the_runner_refuses_a_group_writable_config(tmp_path: Path) -> None:
    path = _write(tmp_path / "host.toml", CONFIG.encode(), 0o600)
    assert load_runner_config(path).guest[0].name == "g"
    os.chmod(path, 0o620)
    with pytest.raises(ConfigError) as info:
        load_runner_config(path)
    assert str(info.value) == f"{path}: config file refused: it is group-writable (mode 0620; chmod go-w it)"


# -- exported policies -------------------------------------------------------------------------------


def _constant_model(value: float) -> bytes:
    """An ONNX graph ``action = obs @ 0 + value`` with wsrl's input and output names and shapes."""
    obs = helper.make_tensor_value_info("obs", TensorProto.FLOAT, [BATCH_DIM, FEATURE_COUNT])
    action = helper.make_tensor_value_info("action", TensorProto.FLOAT, [BATCH_DIM, ACTION_DIM])
    weights = helper.make_tensor(
        "w", TensorProto.FLOAT, [FEATURE_COUNT, ACTION_DIM], [0.0] * FEATURE_COUNT * ACTION_DIM
    )
    bias = helper.make_tensor("b", TensorProto.FLOAT, [ACTION_DIM], [value] * ACTION_DIM)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["obs", "w"], ["z"]), helper.make_node("Add", ["z", "b"], ["action"])],
        "constant",
        [obs],
        [action],
        initializer=[weights, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


MODEL_A = _constant_model(0.5)
MODEL_B = _constant_model(-0.5)


def _export(directory: Path, model: bytes) -> Path:
    directory.mkdir()
    inputs, outputs = expected_io(None)
    manifest = {
        "format_version": MANIFEST_FORMAT_VERSION,
        "name": "constant",
        "obs_spec_version": OBS_SPEC_VERSION,
        "feature_names": list(FEATURE_NAMES),
        "action_names": list(ACTION_NAMES),
        "action_low": ACTION_LOW,
        "action_high": ACTION_HIGH,
        "recurrent": None,
        "onnx": {
            "file": MODEL_FILE,
            "sha256": hashlib.sha256(model).hexdigest(),
            "inputs": inputs,
            "outputs": outputs,
        },
    }
    _write(directory / MODEL_FILE, model, 0o600)
    _write(directory / MANIFEST_FILE, json.dumps(manifest).encode(), 0o600)
    return directory


def _action(policy: LearnedPolicy) -> float:
    """The policy network's first action for an all-zero observation."""
    out = policy.forward(np.zeros((1, FEATURE_COUNT), dtype=np.float32))  # type: ignore[call-arg]
    return float(np.asarray(out)[0, 0])


def test_the_exported_policy_loads_and_runs_its_model(tmp_path: Path) -> None:
    policy = load_learned_policy(_export(tmp_path / "p", MODEL_A))
    assert _action(policy) == pytest.approx(0.5)


@pytest.mark.parametrize("name", [MANIFEST_FILE, MODEL_FILE])
def test_a_group_writable_manifest_or_model_is_refused(tmp_path: Path, name: str) -> None:
    directory = _export(tmp_path / "p", MODEL_A)
    os.chmod(directory / name, 0o664)
    what = "policy manifest" if name == MANIFEST_FILE else "policy model"
    with pytest.raises(WsrlError, match=rf"{name}: {what} refused: it is group-writable"):
        load_learned_policy(directory)


def test_a_model_owned_by_another_user_is_refused(tmp_path: Path, root_only: None) -> None:
    directory = _export(tmp_path / "p", MODEL_A)
    os.chown(directory / MODEL_FILE, OTHER_UID, -1)
    with pytest.raises(WsrlError, match=rf"policy model refused: the file is owned by uid {OTHER_UID}"):
        load_learned_policy(directory)


def test_a_model_swapped_after_loading_is_never_run(tmp_path: Path) -> None:
    directory = _export(tmp_path / "p", MODEL_A)
    policy = load_learned_policy(directory)
    _write(directory / MODEL_FILE, MODEL_B, 0o600)  # replaced in place, after the hash was checked
    assert _action(policy) == pytest.approx(0.5)
    with pytest.raises(WsrlError, match="sha256"):
        load_learned_policy(directory)


def test_a_model_swapped_during_loading_is_refused_or_the_checked_one_runs(tmp_path: Path) -> None:
    """A writer flips model.onnx between A (the manifest's hash) and B while policies load.

    Every load must either refuse the model (it hashed B) or run A: the session is built from the
    bytes that were hashed, so it can never run B after hashing A.
    """
    directory = _export(tmp_path / "p", MODEL_A)
    staged = {
        model: _write(tmp_path / f"stage{i}", model, 0o600) for i, model in enumerate((MODEL_A, MODEL_B))
    }
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            for model in (MODEL_A, MODEL_B):
                shutil.copy2(staged[model], tmp_path / "next")
                os.replace(tmp_path / "next", directory / MODEL_FILE)

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    outcomes = {"A": 0, "refused": 0}
    deadline = time.monotonic() + 5.0
    try:
        # The old code (hash the file, then give onnxruntime its path) ran B in about 1 load of 5.
        while outcomes["A"] < 40 and time.monotonic() < deadline:
            try:
                policy = load_learned_policy(directory)
            except WsrlError as exc:
                assert "sha256" in str(exc) or "replaced while being checked" in str(exc), exc
                outcomes["refused"] += 1
                time.sleep(0.0002)  # let the flipper run
                continue
            assert _action(policy) == pytest.approx(0.5), "a policy ran a model whose hash was never checked"
            outcomes["A"] += 1
    finally:
        stop.set()
        flipper.join(timeout=5)
    assert outcomes["A"] >= 5, outcomes  # enough loads got past the hash check to mean something
