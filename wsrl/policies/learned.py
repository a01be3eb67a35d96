"""Learned policies: an exported per-guest network behind the same :class:`Policy` interface.

A learned policy is one network with shared weights applied to every real guest's observation row
(:data:`~wsrl.pipeline.observation.FEATURE_NAMES`), giving one action row per guest
(:data:`~wsrl.pipeline.action.ACTION_NAMES` in ``[-1, 1]``) that
:func:`~wsrl.pipeline.action.action_to_target_bytes` turns into a proposal. It therefore runs
unchanged on hosts of 1 to 64 guests and on batches of hosts.

Production loads exported policies with :func:`load_learned_policy`: a directory holding
``model.onnx`` and ``manifest.json`` written by ``wsrl export`` (:mod:`wsrl.rl.export`). This module
needs numpy, and onnxruntime for that loader, never torch and never pickle: a training checkpoint
(``model.zip``) is not loaded here. The manifest is checked before the model is used: its format
version, the observation spec version, the feature and action names, the model's SHA-256 and the
ONNX graph's input and output shapes all have to agree with this build of wsrl. Both files must be
writable by nobody but this user or root (:mod:`wsrl.security`), and the model is hashed and
loaded from one in-memory copy, so the bytes that run are the bytes that were checked.

Recurrent models (an LSTM actor) carry a per-guest hidden state ``(h, c)`` across
:meth:`LearnedPolicy.decide` calls, forgotten on :meth:`LearnedPolicy.reset`. A guest slot's
state is also cleared while the slot is empty, and the first step of a guest (after a reset, or
when a slot fills) is marked with ``episode_start = 1``, exactly as during training.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from wsrl.errors import WsrlError
from wsrl.pipeline.action import ACTION_DIM, ACTION_NAMES, action_to_target_bytes
from wsrl.pipeline.observation import FEATURE_COUNT, FEATURE_NAMES, OBS_SPEC_VERSION, ObservationBuilder
from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.security import MAX_MANIFEST_BYTES, MAX_MODEL_BYTES, read_trusted_file

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
MANIFEST_FORMAT_VERSION = 1
"""The manifest layout this build writes and reads (bumped on incompatible changes)."""
ACTION_LOW = -1.0
ACTION_HIGH = 1.0
ACTION_TOLERANCE = 1e-3
"""How far outside ``[ACTION_LOW, ACTION_HIGH]`` an action may be (float rounding) before it is broken."""
BATCH_DIM = "batch"
"""Name of the dynamic first (guest) axis in the ONNX graph and the manifest's shapes."""

OBS_INPUT = "obs"
ACTION_OUTPUT = "action"
H_INPUT, C_INPUT, EPISODE_START_INPUT = "h", "c", "episode_start"
H_OUTPUT, C_OUTPUT = "h_out", "c_out"

ForwardFn = Callable[[np.ndarray], np.ndarray]
"""Feed-forward network: ``[N, FEATURE_COUNT]`` float32 observations -> ``[N, ACTION_DIM]`` actions."""
RecurrentForwardFn = Callable[
    [np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]
]
"""Recurrent network: ``(obs [N, F], h [L, N, H], c [L, N, H], episode_start [N])`` -> ``(actions,
h, c)``. Where ``episode_start`` is 1 the network must read the incoming state as zeros."""


@dataclass(frozen=True)
class RecurrentStateSpec:
    """Shape of a recurrent policy's per-guest LSTM state (``h`` and ``c`` are each ``[layers, hidden]``)."""

    hidden_size: int
    num_layers: int


class LearnedPolicy:
    """Runs a per-guest network on every real guest of each snapshot (see the module docstring).

    Args:
        forward: the network; a :data:`ForwardFn`, or a :data:`RecurrentForwardFn` when
            ``recurrent_state`` is given.
        name: the policy's name in reports.
        recurrent_state: the LSTM state's shape for recurrent networks; ``None`` for feed-forward.

    """

    def __init__(
        self,
        forward: ForwardFn | RecurrentForwardFn,
        *,
        name: str,
        recurrent_state: RecurrentStateSpec | None = None,
    ) -> None:
        self.name = name
        self.forward = forward
        self.recurrent_state = recurrent_state
        self._builder = ObservationBuilder()
        self._first_snapshot: HostSnapshot | None = None
        self._first_obs: np.ndarray | None = None
        self._h: np.ndarray | None = None
        self._c: np.ndarray | None = None
        self._started: np.ndarray | None = None

    def reset(self, snapshot: HostSnapshot) -> None:
        """Forget the observation history and the recurrent state; ``snapshot`` comes first."""
        self._first_obs = self._builder.reset(snapshot)
        self._first_snapshot = snapshot
        self._clear_state(snapshot.shape)

    def decide(self, snapshot: HostSnapshot) -> np.ndarray:
        """``[hosts, guests]`` proposed target bytes from the network's per-guest actions.

        A guest whose action is not finite or lies outside the manifest's ``[action_low,
        action_high]`` (an exported network clips to it: anything else is a broken model) gets a
        NaN proposal, which the control stack's output check rejects
        (:mod:`wsrl.pipeline.output_check`) instead of reading it as some size.
        """
        _, actions = self.act(snapshot)
        proposal = self.targets(actions, snapshot)
        with np.errstate(invalid="ignore"):
            broken = ~(
                (actions >= ACTION_LOW - ACTION_TOLERANCE) & (actions <= ACTION_HIGH + ACTION_TOLERANCE)
            ).all(axis=-1)
        return np.where(broken & snapshot.mask, np.nan, proposal)

    def targets(self, actions: np.ndarray, snapshot: HostSnapshot) -> np.ndarray:
        """``[hosts, guests]`` proposals for ``[hosts, guests, ACTION_DIM]`` actions.

        ``snapshot`` is the one :meth:`act` last observed: its working-set peaks feed ``peak_keep``.
        """
        return action_to_target_bytes(actions, snapshot, self._builder.working_set_peak_bytes)

    def act(self, snapshot: HostSnapshot) -> tuple[np.ndarray, np.ndarray]:
        """Observe ``snapshot`` and run the network: ``(rows, actions)``.

        ``rows`` are the real guests' observation rows (``[real guests, FEATURE_COUNT]``, float32,
        in mask order), ``actions`` the ``[hosts, guests, ACTION_DIM]`` actions (zeros on padding).
        Advances the observation history: call once per snapshot (:meth:`decide` does).
        """
        if snapshot is self._first_snapshot and self._first_obs is not None:
            obs = self._first_obs  # reset already built it (and advanced the builder's history)
        else:
            obs = self._builder.build(snapshot)
        self._first_snapshot = None
        self._first_obs = None
        mask = np.asarray(snapshot.mask, dtype=bool)
        actions = np.zeros((*snapshot.shape, ACTION_DIM), dtype=np.float32)
        rows = np.ascontiguousarray(obs[mask], dtype=np.float32)
        if self.recurrent_state is None:
            if len(rows):
                forward = cast(ForwardFn, self.forward)  # no recurrent state: a feed-forward network
                actions[mask] = self._checked_actions(forward(rows), len(rows))
        else:
            self._step_recurrent(rows, mask, actions)
        return rows, actions

    def _clear_state(self, shape: tuple[int, int]) -> None:
        spec = self.recurrent_state
        if spec is None:
            return
        state_shape = (spec.num_layers, *shape, spec.hidden_size)
        self._h = np.zeros(state_shape, dtype=np.float32)
        self._c = np.zeros(state_shape, dtype=np.float32)
        self._started = np.zeros(shape, dtype=bool)

    def _step_recurrent(self, rows: np.ndarray, mask: np.ndarray, actions: np.ndarray) -> None:
        """One LSTM step for the real guests; updates their state, clears that of empty slots."""
        if self._h is None or self._h.shape[1:3] != mask.shape:
            self._clear_state(mask.shape)  # a host of another shape: a new episode
        assert self._h is not None and self._c is not None and self._started is not None
        if len(rows):
            episode_start = (~self._started[mask]).astype(np.float32)
            h_in = np.ascontiguousarray(self._h[:, mask])
            c_in = np.ascontiguousarray(self._c[:, mask])
            forward = cast(RecurrentForwardFn, self.forward)  # a recurrent state: a recurrent network
            out, h_out, c_out = forward(rows, h_in, c_in, episode_start)
            actions[mask] = self._checked_actions(out, len(rows))
            expected = h_in.shape
            if np.shape(h_out) != expected or np.shape(c_out) != expected:
                raise WsrlError(
                    f"policy {self.name!r}: recurrent state shapes {np.shape(h_out)}, {np.shape(c_out)}, "
                    f"expected {expected}"
                )
            self._h[:, mask] = h_out
            self._c[:, mask] = c_out
        self._h[:, ~mask] = 0.0
        self._c[:, ~mask] = 0.0
        self._started = mask.copy()

    def _checked_actions(self, out: np.ndarray, rows: int) -> np.ndarray:
        out = np.asarray(out, dtype=np.float32)
        if out.shape != (rows, ACTION_DIM):
            raise WsrlError(
                f"policy {self.name!r}: network returned shape {out.shape}, expected {(rows, ACTION_DIM)}"
            )
        return out


# --- loading exported policies ------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def expected_io(recurrent: RecurrentStateSpec | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ONNX graph's inputs and outputs (``name``, ``shape``, ``dtype``) for this build of wsrl.

    ``shape`` lists sizes, with :data:`BATCH_DIM` for the dynamic guest axis. The exporter writes
    exactly these into the manifest; the loader checks manifest and graph against them.
    """
    inputs = [{"name": OBS_INPUT, "shape": [BATCH_DIM, FEATURE_COUNT], "dtype": "float32"}]
    outputs = [{"name": ACTION_OUTPUT, "shape": [BATCH_DIM, ACTION_DIM], "dtype": "float32"}]
    if recurrent is not None:
        state = [recurrent.num_layers, BATCH_DIM, recurrent.hidden_size]
        inputs += [
            {"name": H_INPUT, "shape": state, "dtype": "float32"},
            {"name": C_INPUT, "shape": state, "dtype": "float32"},
            {"name": EPISODE_START_INPUT, "shape": [BATCH_DIM], "dtype": "float32"},
        ]
        outputs += [
            {"name": H_OUTPUT, "shape": state, "dtype": "float32"},
            {"name": C_OUTPUT, "shape": state, "dtype": "float32"},
        ]
    return inputs, outputs


_ORT_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64"}


def _field(manifest: dict[str, Any], key: str, where: str) -> Any:
    if key not in manifest:
        raise WsrlError(f"{where}: field {key!r} is missing")
    return manifest[key]


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.exists() and not path.is_symlink():
        trained = (path.parent / "model.zip").exists()
        hint = " (a training run? export it first: wsrl export DIR)" if trained else ""
        raise WsrlError(f"{path}: not an exported policy: no {MANIFEST_FILE}{hint}")
    data = read_trusted_file(path, "policy manifest", MAX_MANIFEST_BYTES)
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, huge numbers
        raise WsrlError(f"{path}: not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(manifest, dict):
        raise WsrlError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    return manifest


def _recurrent_spec(manifest: dict[str, Any], where: str) -> RecurrentStateSpec | None:
    recurrent = _field(manifest, "recurrent", where)
    if recurrent is None:
        return None
    if not isinstance(recurrent, dict):
        raise WsrlError(f"{where}: field 'recurrent' must be null or an object")
    sizes = []
    for key in ("hidden_size", "num_layers"):
        value = recurrent.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise WsrlError(f"{where}: field 'recurrent.{key}' must be a positive integer, got {value!r}")
        sizes.append(value)
    return RecurrentStateSpec(hidden_size=sizes[0], num_layers=sizes[1])


def check_manifest(manifest: dict[str, Any], where: str) -> RecurrentStateSpec | None:
    """Check a manifest against this build of wsrl; returns the recurrent state spec (or ``None``).

    Raises:
        WsrlError: a field is missing or disagrees (one line naming ``where`` and the field).

    """
    version = _field(manifest, "format_version", where)
    if version != MANIFEST_FORMAT_VERSION:
        raise WsrlError(
            f"{where}: field 'format_version' is {version!r}; "
            f"this wsrl reads format {MANIFEST_FORMAT_VERSION}"
        )
    obs_version = _field(manifest, "obs_spec_version", where)
    if obs_version != OBS_SPEC_VERSION:
        raise WsrlError(
            f"{where}: field 'obs_spec_version' is {obs_version!r}, but this wsrl computes observation "
            f"spec {OBS_SPEC_VERSION} (retrain or re-export the policy)"
        )
    for key, expected_names in (("feature_names", FEATURE_NAMES), ("action_names", ACTION_NAMES)):
        names = _field(manifest, key, where)
        if not isinstance(names, list) or tuple(names) != expected_names:
            raise WsrlError(f"{where}: field {key!r} {_name_diff(names, expected_names)}")
    for key, bound in (("action_low", ACTION_LOW), ("action_high", ACTION_HIGH)):
        value = _field(manifest, key, where)
        if not isinstance(value, int | float) or isinstance(value, bool) or float(value) != bound:
            raise WsrlError(f"{where}: field {key!r} is {value!r}, expected {bound:g}")
    recurrent = _recurrent_spec(manifest, where)
    onnx_info = _field(manifest, "onnx", where)
    if not isinstance(onnx_info, dict):
        raise WsrlError(f"{where}: field 'onnx' must be an object")
    if onnx_info.get("file") != MODEL_FILE:
        raise WsrlError(f"{where}: field 'onnx.file' is {onnx_info.get('file')!r}, expected {MODEL_FILE!r}")
    sha = onnx_info.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64:
        raise WsrlError(f"{where}: field 'onnx.sha256' must be a 64-digit hex string, got {sha!r}")
    inputs, outputs = expected_io(recurrent)
    for key, expected in (("inputs", inputs), ("outputs", outputs)):
        if onnx_info.get(key) != expected:
            raise WsrlError(f"{where}: field 'onnx.{key}' is {onnx_info.get(key)!r}, expected {expected!r}")
    return recurrent


def _name_diff(names: object, expected: tuple[str, ...]) -> str:
    """One-line description of how a name list differs from the expected one."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return f"must be a list of names, got {type(names).__name__}"
    if len(names) != len(expected):
        return f"has {len(names)} names, this wsrl has {len(expected)} ({', '.join(expected)})"
    index = next(i for i, (a, b) in enumerate(zip(names, expected, strict=True)) if a != b)
    return f"differs at position {index}: {names[index]!r}, this wsrl has {expected[index]!r}"


def _check_graph(session: Any, manifest: dict[str, Any], where: str) -> None:
    """The ONNX graph's inputs and outputs must be exactly the manifest's (names, shapes, dtypes)."""
    for key, actual in (("inputs", session.get_inputs()), ("outputs", session.get_outputs())):
        described = manifest["onnx"][key]
        graph = [
            {
                "name": arg.name,
                "shape": [d if isinstance(d, int) else BATCH_DIM for d in arg.shape],
                "dtype": _ORT_DTYPES.get(arg.type, arg.type),
                "dynamic": [d for d in arg.shape if not isinstance(d, int)],
            }
            for arg in actual
        ]
        names = [g["name"] for g in graph]
        described_names = [d["name"] for d in described]
        if names != described_names:
            raise WsrlError(f"{where}: field 'onnx.{key}' names {described_names}, the graph has {names}")
        for desc, arg in zip(described, graph, strict=True):
            # Exactly one dynamic axis (the guest batch) per tensor, where the manifest puts it.
            dynamic_ok = len(arg["dynamic"]) == desc["shape"].count(BATCH_DIM)
            if arg["shape"] != desc["shape"] or arg["dtype"] != desc["dtype"] or not dynamic_ok:
                raise WsrlError(
                    f"{where}: field 'onnx.{key}' says {desc['name']} is {desc['dtype']} {desc['shape']}, "
                    f"the graph has {arg['dtype']} {arg['shape']}"
                )


def _onnx_session(model_path: Path, model_bytes: bytes) -> Any:
    """An onnxruntime session built from ``model_bytes`` (the bytes that were hashed), never re-read."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise WsrlError("learned policies need onnxruntime: pip install onnxruntime") from None
    options = ort.SessionOptions()
    # One thread: the networks are small, and evaluation runs many runs side by side in processes.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model_bytes, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WsrlError(f"{model_path}: onnxruntime cannot load the model: {message}") from None


def _onnx_forward(session: Any, recurrent: RecurrentStateSpec | None) -> ForwardFn | RecurrentForwardFn:
    if recurrent is None:

        def forward(obs: np.ndarray) -> np.ndarray:
            action: np.ndarray = session.run([ACTION_OUTPUT], {OBS_INPUT: obs})[0]
            return action

        return forward

    def forward_recurrent(
        obs: np.ndarray, h: np.ndarray, c: np.ndarray, episode_start: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        feeds = {OBS_INPUT: obs, H_INPUT: h, C_INPUT: c, EPISODE_START_INPUT: episode_start}
        action, h_out, c_out = session.run([ACTION_OUTPUT, H_OUTPUT, C_OUTPUT], feeds)
        return action, h_out, c_out

    return forward_recurrent


def is_exported_policy(path: str | Path) -> bool:
    """Whether ``path`` is a directory holding an exported policy's manifest."""
    directory = Path(path)
    return directory.is_dir() and (directory / MANIFEST_FILE).is_file()


def load_learned_policy(directory: str | Path) -> LearnedPolicy:
    """Load an exported policy (``manifest.json`` + ``model.onnx``) after checking its manifest.

    Both files are refused unless only this user or root could have written them
    (:func:`wsrl.security.read_trusted_file`: not group- or world-writable, owned by this user or
    root, in a directory others cannot replace them in). The model is read into memory once; its
    SHA-256 is checked against the manifest and onnxruntime is given those same bytes.

    Raises:
        WsrlError: the directory is not an exported policy, a file is refused
            (:class:`~wsrl.security.UntrustedFileError`), or the manifest or model disagrees
            with this build of wsrl (one line naming the file and the field).

    """
    directory = Path(directory)
    if not directory.is_dir():
        raise WsrlError(f"{directory}: not a directory (an exported policy is a folder with {MANIFEST_FILE})")
    manifest_path = directory / MANIFEST_FILE
    manifest = _read_manifest(manifest_path)
    where = str(manifest_path)
    recurrent = check_manifest(manifest, where)
    model_path = directory / MODEL_FILE
    if not model_path.exists() and not model_path.is_symlink():
        raise WsrlError(f"{model_path}: missing (field 'onnx.file' of {manifest_path} names it)")
    # Read once: the session is built from exactly the bytes whose hash was checked, so a model
    # file replaced after this point (or between the hash and the session) is never run.
    model_bytes = read_trusted_file(model_path, "policy model", MAX_MODEL_BYTES)
    actual_sha = hashlib.sha256(model_bytes).hexdigest()
    if actual_sha != manifest["onnx"]["sha256"]:
        raise WsrlError(
            f"{model_path}: sha256 {actual_sha[:12]}... does not match field 'onnx.sha256' "
            f"{manifest['onnx']['sha256'][:12]}... of {manifest_path} (modified or corrupt)"
        )
    session = _onnx_session(model_path, model_bytes)
    del model_bytes
    _check_graph(session, manifest, f"{model_path} vs {manifest_path}")
    name = manifest.get("name")
    if not isinstance(name, str) or not name:
        name = directory.resolve().name
    return LearnedPolicy(_onnx_forward(session, recurrent), name=name, recurrent_state=recurrent)
