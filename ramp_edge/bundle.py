"""Model bundles: a directory with ``manifest.json`` and the artifacts it lists.

A bundle is what the robot runs: the RAMP networks in one or more engine formats, plus everything
needed to feed them and to check them. ``manifest.json`` (format version 1) holds:

* ``io``: the observation the networks take (one uint8 HxWx3 image per camera, in
  ``cameras`` order; ``joint_position``/``joint_velocity`` float32 [n]; ``tokens`` int64 [L]) and
  what comes out (``actions`` float32 [H, n]: absolute joint targets in the robot's joint order
  ``joints.names``; ``value`` float32 in (-1, 0)), the chunk's action rate and the tokenizer;
* ``normalization``: per-joint mean/std of position and velocity (inputs are normalised with
  them) and of actions (outputs are de-normalised with them);
* ``backends``: each engine format this bundle ships, with its precision and the artifact of each
  graph (``encoder``, ``world_model``, ``policy``);
* ``artifacts``: sha256 and size of every file, all of which are checked on load: a changed,
  missing or unlisted file refuses the bundle;
* ``probe``: ``probe.npz`` holds one observation and the outputs recorded for it; per backend a
  tolerance says how close that backend must come (checked by :meth:`Bundle.verify`);
* ``accuracy`` (measured at export), ``provenance`` (seed, code version, whether it was trained).

Bundles are written atomically by :class:`BundleWriter` (temporary directory beside the target,
files fsynced, directory renamed into place) and read by :func:`load_bundle`. Anything wrong with
one raises :class:`BundleError` with one line that names the bundle and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from firmware_bridge.durable_files import fsync_path, sha256_file
from models.language import Tokenizer
from ramp_edge.errors import EdgeError

if TYPE_CHECKING:
    from ramp_edge.engines.base import Engine, Observation

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "GRAPHS",
    "MANIFEST_NAME",
    "MODES",
    "PROBE_NAME",
    "BackendEntry",
    "Bundle",
    "BundleError",
    "BundleWriter",
    "Manifest",
    "Normalization",
    "ProbeReport",
    "ProbeTolerance",
    "TensorSpec",
    "load_bundle",
]

FORMAT_NAME = "ramp-edge-bundle"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
PROBE_NAME = "probe.npz"
GRAPHS = ("encoder", "world_model", "policy")
MODES = ("standard", "efficient")
_DTYPES = ("uint8", "float32", "int64")


class BundleError(EdgeError, ValueError):
    """A bundle cannot be used: unreadable or invalid manifest, unsupported format version,
    artifact missing/changed/unlisted, or probe mismatch. The message names the bundle."""


class _SchemaError(Exception):
    """A manifest field is wrong; ``where`` is its dotted path. Becomes a BundleError."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")


# --------------------------------------------------------------------------- manifest schema


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of the bundle, per observation (no batch dimension)."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Normalization:
    """Per-joint statistics, float32 [n] each, in the bundle's joint order and units.

    Inputs are normalised as ``(x - mean) / std``; the networks' actions are de-normalised as
    ``a * action_std + action_mean`` (absolute joint targets).
    """

    position_mean: np.ndarray
    position_std: np.ndarray
    velocity_mean: np.ndarray
    velocity_std: np.ndarray
    action_mean: np.ndarray
    action_std: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        def pair(mean: np.ndarray, std: np.ndarray) -> dict[str, list[float]]:
            return {"mean": [float(x) for x in mean], "std": [float(x) for x in std]}

        return {
            "joint_position": pair(self.position_mean, self.position_std),
            "joint_velocity": pair(self.velocity_mean, self.velocity_std),
            "actions": pair(self.action_mean, self.action_std),
        }


@dataclass(frozen=True)
class BackendEntry:
    """One engine format the bundle ships: its precision and the artifact of each graph."""

    name: str
    precision: str
    artifacts: Mapping[str, str]
    notes: str = ""


@dataclass(frozen=True)
class ProbeTolerance:
    """How close a backend's probe output must be to the recorded one of ``reference``.

    ``actions_atol`` is in normalised action units (multiples of each joint's action std);
    ``value_atol`` is absolute (the value lies in (-1, 0)).
    """

    reference: str
    actions_atol: float
    value_atol: float


@dataclass(frozen=True)
class Manifest:
    """A parsed, validated ``manifest.json``; ``raw`` is the JSON object as read."""

    name: str
    camera_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    joint_names: tuple[str, ...]
    joint_min: np.ndarray | None
    joint_max: np.ndarray | None
    chunk_size: int
    action_rate_hz: float
    tokenizer: Mapping[str, Any]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    normalization: Normalization
    model_family: str
    model_config: Mapping[str, Any]
    # False: the policy was trained with the world-model tokens always masked (behaviour
    # cloning, RECAP), so engines give it the mask token in standard mode too.
    policy_uses_world_model: bool
    backends: Mapping[str, BackendEntry]
    artifacts: Mapping[str, tuple[str, int]]  # relative path -> (sha256 hex, size in bytes)
    probe_tolerances: Mapping[str, ProbeTolerance]
    probe_indicator: float
    provenance: Mapping[str, Any]
    accuracy: Mapping[str, Any]
    raw: Mapping[str, Any] = field(repr=False)


def _expect(value: Any, kind: type | tuple[type, ...], where: str, what: str) -> Any:
    # bool is an int subclass; a manifest that says true where a number belongs is wrong.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise _SchemaError(where, f"must be {what}, not {json.dumps(value)}")
    if not isinstance(value, kind):
        shown = json.dumps(value) if isinstance(value, (str, int, float, type(None))) else \
            type(value).__name__
        raise _SchemaError(where, f"must be {what}, not {shown}")
    return value


def _key(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str,
         what: str) -> Any:
    if key not in obj:
        raise _SchemaError(f"{where}.{key}" if where else key, "is missing")
    return _expect(obj[key], kind, f"{where}.{key}" if where else key, what)


def _str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = _key(obj, key, str, where, "a non-empty string")
    if not value:
        raise _SchemaError(f"{where}.{key}", "must be a non-empty string")
    return value


def _pos_int(value: Any, where: str) -> int:
    _expect(value, int, where, "a positive integer")
    if value < 1:
        raise _SchemaError(where, f"must be a positive integer, not {value}")
    return value


def _number(value: Any, where: str, *, positive: bool = False) -> float:
    _expect(value, (int, float), where, "a number")
    if not math.isfinite(value) or (positive and value <= 0):
        raise _SchemaError(where, f"must be a {'positive ' if positive else ''}finite number, "
                                  f"not {value}")
    return float(value)


def _vector(value: Any, n: int, where: str, *, positive: bool = False) -> np.ndarray:
    _expect(value, list, where, f"a list of {n} numbers")
    if len(value) != n:
        raise _SchemaError(where, f"must have {n} entries (one per joint), not {len(value)}")
    return np.array([_number(v, f"{where}[{i}]", positive=positive) for i, v in
                     enumerate(value)], dtype=np.float32)


def _names(value: Any, where: str) -> tuple[str, ...]:
    _expect(value, list, where, "a list of names")
    if not value:
        raise _SchemaError(where, "must not be empty")
    names = tuple(_expect(v, str, f"{where}[{i}]", "a string") for i, v in enumerate(value))
    if len(set(names)) != len(names) or not all(names):
        raise _SchemaError(where, f"names must be non-empty and distinct: {list(names)}")
    return names


def _relpath(value: Any, where: str) -> str:
    _expect(value, str, where, "a relative path")
    p = PurePosixPath(value)
    if not value or p.is_absolute() or ".." in p.parts or str(p) != value or value == ".":
        raise _SchemaError(where, f"must be a plain relative path inside the bundle, not "
                                  f"{value!r}")
    return value


def _tensors(value: Any, where: str) -> tuple[TensorSpec, ...]:
    _expect(value, list, where, "a list of tensor specs")
    out = []
    for i, item in enumerate(value):
        w = f"{where}[{i}]"
        _expect(item, dict, w, "an object")
        shape = _key(item, "shape", list, w, "a list of dimensions")
        dims = tuple(_expect(d, int, f"{w}.shape", "a list of non-negative integers")
                     for d in shape)
        if any(d < 0 for d in dims):
            raise _SchemaError(f"{w}.shape", f"must not be negative: {list(dims)}")
        dtype = _str(item, "dtype", w)
        if dtype not in _DTYPES:
            raise _SchemaError(f"{w}.dtype", f"must be one of {list(_DTYPES)}, not {dtype!r}")
        out.append(TensorSpec(_str(item, "name", w), dims, dtype))
    return tuple(out)


def _parse_manifest(data: Any) -> Manifest:
    """Validate a manifest's JSON object; raises _SchemaError naming the first bad field."""
    _expect(data, dict, "manifest", "a JSON object")
    fmt = data.get("format")
    if fmt != FORMAT_NAME:
        raise _SchemaError("format", f"must be {FORMAT_NAME!r}, not {json.dumps(fmt)}")
    version = _key(data, "format_version", int, "", "an integer")
    if version != FORMAT_VERSION:
        raise _SchemaError("format_version", f"{version} is not supported (this ramp-edge "
                                             f"reads version {FORMAT_VERSION})")

    io = _key(data, "io", dict, "", "an object")
    cams = _key(io, "cameras", list, "io", "a list of cameras")
    if not cams:
        raise _SchemaError("io.cameras", "must not be empty")
    camera_names = _names([_key(_expect(c, dict, f"io.cameras[{i}]", "an object"), "name", str,
                                f"io.cameras[{i}]", "a string") for i, c in enumerate(cams)],
                          "io.cameras")
    shapes = set()
    for i, c in enumerate(cams):
        shapes.add((_pos_int(c.get("height"), f"io.cameras[{i}].height"),
                    _pos_int(c.get("width"), f"io.cameras[{i}].width"), 3))
    if len(shapes) != 1:
        raise _SchemaError("io.cameras", "all cameras must have the same height and width")
    image_shape = shapes.pop()
    chunk_size = _pos_int(io.get("chunk_size"), "io.chunk_size")
    action_rate_hz = _number(io.get("action_rate_hz"), "io.action_rate_hz", positive=True)
    tokenizer = _key(io, "tokenizer", dict, "io", "an object")
    try:
        max_tokens = Tokenizer.from_spec(tokenizer).max_length
    except ValueError as err:
        raise _SchemaError("io.tokenizer", str(err)) from None
    inputs = _tensors(io.get("inputs"), "io.inputs")
    outputs = _tensors(io.get("outputs"), "io.outputs")

    joints = _key(data, "joints", dict, "", "an object")
    joint_names = _names(joints.get("names"), "joints.names")
    n = len(joint_names)
    joint_min = joint_max = None
    if joints.get("position_min") is not None or joints.get("position_max") is not None:
        joint_min = _vector(joints.get("position_min"), n, "joints.position_min")
        joint_max = _vector(joints.get("position_max"), n, "joints.position_max")
        if not np.all(joint_min < joint_max):
            raise _SchemaError("joints", "position_min must be below position_max")

    # The IO spec must say exactly what the engines feed and return.
    expected_inputs = tuple(TensorSpec(f"image_{c}", image_shape, "uint8") for c in camera_names)
    expected_inputs += (
        TensorSpec("joint_position", (n,), "float32"),
        TensorSpec("joint_velocity", (n,), "float32"),
        TensorSpec("tokens", (max_tokens,), "int64"),
    )
    if inputs != expected_inputs:
        raise _SchemaError("io.inputs", f"must be {[_spec_str(s) for s in expected_inputs]}, "
                                        f"not {[_spec_str(s) for s in inputs]}")
    expected_outputs = (TensorSpec("actions", (chunk_size, n), "float32"),
                        TensorSpec("value", (), "float32"))
    if outputs != expected_outputs:
        raise _SchemaError("io.outputs", f"must be {[_spec_str(s) for s in expected_outputs]}, "
                                         f"not {[_spec_str(s) for s in outputs]}")

    norm = _key(data, "normalization", dict, "", "an object")
    stats = {}
    for key in ("joint_position", "joint_velocity", "actions"):
        entry = _key(norm, key, dict, "normalization", "an object")
        stats[key] = (_vector(entry.get("mean"), n, f"normalization.{key}.mean"),
                      _vector(entry.get("std"), n, f"normalization.{key}.std", positive=True))
    normalization = Normalization(*stats["joint_position"], *stats["joint_velocity"],
                                  *stats["actions"])

    model = _key(data, "model", dict, "", "an object")
    model_family = _str(model, "family", "model")
    model_config = _key(model, "config", dict, "model", "an object")
    policy_uses_world_model = model.get("policy_uses_world_model", True)
    _expect(policy_uses_world_model, bool, "model.policy_uses_world_model", "true or false")

    artifacts_raw = _key(data, "artifacts", dict, "", "an object")
    artifacts: dict[str, tuple[str, int]] = {}
    for rel, info in artifacts_raw.items():
        w = f"artifacts[{rel!r}]"
        _relpath(rel, w)
        if rel == MANIFEST_NAME:
            raise _SchemaError(w, "the manifest cannot list itself")
        _expect(info, dict, w, "an object")
        digest = _str(info, "sha256", w)
        if len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest):
            raise _SchemaError(f"{w}.sha256", "must be 64 lowercase hex digits")
        size = _key(info, "size", int, w, "a size in bytes")
        if size < 0:
            raise _SchemaError(f"{w}.size", "must not be negative")
        artifacts[rel] = (digest, size)

    backends_raw = _key(data, "backends", dict, "", "an object")
    if not backends_raw:
        raise _SchemaError("backends", "must name at least one backend")
    backends: dict[str, BackendEntry] = {}
    for name, entry in backends_raw.items():
        w = f"backends.{name}"
        _expect(entry, dict, w, "an object")
        graphs = _key(entry, "artifacts", dict, w, "an object")
        if set(graphs) != set(GRAPHS):
            raise _SchemaError(f"{w}.artifacts", f"must name the graphs {list(GRAPHS)}, not "
                                                 f"{sorted(graphs)}")
        for graph, rel in graphs.items():
            _relpath(rel, f"{w}.artifacts.{graph}")
            if rel not in artifacts:
                raise _SchemaError(f"{w}.artifacts.{graph}", f"{rel!r} is not in artifacts")
        notes = entry.get("notes", "")
        _expect(notes, str, f"{w}.notes", "a string")
        backends[name] = BackendEntry(name, _str(entry, "precision", w), dict(graphs), notes)

    probe = _key(data, "probe", dict, "", "an object")
    if _key(probe, "artifact", str, "probe", "a path") != PROBE_NAME:
        raise _SchemaError("probe.artifact", f"must be {PROBE_NAME!r}")
    if PROBE_NAME not in artifacts:
        raise _SchemaError("probe.artifact", f"{PROBE_NAME!r} is not in artifacts")
    indicator = _number(probe.get("indicator", 1.0), "probe.indicator")
    tolerances: dict[str, ProbeTolerance] = {}
    for name, tol in _key(probe, "tolerance", dict, "probe", "an object").items():
        w = f"probe.tolerance.{name}"
        if name not in backends:
            raise _SchemaError(w, f"{name!r} is not one of the bundle's backends")
        _expect(tol, dict, w, "an object")
        ref = _str(tol, "reference", w)
        tolerances[name] = ProbeTolerance(
            ref,
            _number(tol.get("actions_atol"), f"{w}.actions_atol", positive=True),
            _number(tol.get("value_atol"), f"{w}.value_atol", positive=True),
        )

    provenance = _key(data, "provenance", dict, "", "an object")
    accuracy = data.get("accuracy", {})
    _expect(accuracy, dict, "accuracy", "an object")
    return Manifest(
        name=_str(data, "name", ""),
        camera_names=camera_names,
        image_shape=image_shape,
        joint_names=joint_names,
        joint_min=joint_min,
        joint_max=joint_max,
        chunk_size=chunk_size,
        action_rate_hz=action_rate_hz,
        tokenizer=tokenizer,
        inputs=inputs,
        outputs=outputs,
        normalization=normalization,
        model_family=model_family,
        model_config=model_config,
        policy_uses_world_model=policy_uses_world_model,
        backends=backends,
        artifacts=artifacts,
        probe_tolerances=tolerances,
        probe_indicator=indicator,
        provenance=provenance,
        accuracy=accuracy,
        raw=data,
    )


def _spec_str(spec: TensorSpec) -> str:
    return f"{spec.name}:{spec.dtype}{list(spec.shape)}"


# --------------------------------------------------------------------------- bundle


@dataclass(frozen=True)
class ProbeReport:
    """What :meth:`Bundle.verify` measured: per mode, the largest action error (normalised
    units) and value error against the reference output."""

    backend: str
    reference: str
    actions_err: Mapping[str, float]
    value_err: float | None





class Bundle:
    """A loaded bundle whose manifest and artifact hashes were checked (:func:`load_bundle`).

    ``sha256`` is the hash of ``manifest.json``; since the manifest holds every artifact's hash,
    it identifies the whole bundle (episodes record it).
    """

    def __init__(self, path: Path, manifest: Manifest, sha256: str,
                 probe: Mapping[str, np.ndarray]) -> None:
        self.path = path
        self.manifest = manifest
        self.sha256 = sha256
        self._probe = probe

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, name={self.name!r}, backends={list(self.backends)})"

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.manifest.joint_names

    @property
    def n_joints(self) -> int:
        return len(self.manifest.joint_names)

    @property
    def camera_names(self) -> tuple[str, ...]:
        return self.manifest.camera_names

    @property
    def chunk_size(self) -> int:
        return self.manifest.chunk_size

    @property
    def backends(self) -> tuple[str, ...]:
        """The backends the bundle ships, in manifest order."""
        return tuple(self.manifest.backends)

    @property
    def normalization(self) -> Normalization:
        return self.manifest.normalization

    @property
    def trained(self) -> bool:
        """False for a randomly initialised bundle (provenance says so): plumbing only."""
        return bool(self.manifest.provenance.get("trained", False))

    def tokenizer(self) -> Tokenizer:
        """The tokenizer the bundle was built with; instructions must be encoded with it."""
        return Tokenizer.from_spec(dict(self.manifest.tokenizer))  # validated on load

    def backend(self, name: str) -> BackendEntry:
        """The manifest entry of backend ``name``; BundleError if the bundle lacks it."""
        entry = self.manifest.backends.get(name)
        if entry is None:
            raise BundleError(f"bundle {self.path} has no backend {name!r} (it has "
                              f"{', '.join(self.backends)})")
        return entry

    def artifact_path(self, rel: str) -> Path:
        """Absolute path of a listed artifact (checked on load)."""
        if rel not in self.manifest.artifacts:
            raise BundleError(f"bundle {self.path}: artifact {rel!r} is not listed")
        return self.path / rel

    def probe_observation(self) -> Observation:
        """The probe observation (a fresh copy each call)."""
        from ramp_edge.engines.base import Observation

        p = self._probe
        return Observation(
            images={c: p["images"][i].copy() for i, c in enumerate(self.camera_names)},
            joint_position=p["joint_position"].copy(),
            joint_velocity=p["joint_velocity"].copy(),
            tokens=p["tokens"].copy(),
        )

    def probe_expected(self, backend: str, mode: str) -> tuple[np.ndarray, float | None]:
        """Recorded probe output of ``backend`` in ``mode``: absolute actions [H, n] and the
        value (None in efficient mode). BundleError if the bundle has none."""
        key = f"out/{backend}/{mode}/actions"
        if key not in self._probe:
            raise BundleError(f"bundle {self.path}: probe has no recorded output for "
                              f"{backend} ({mode} mode)")
        value = self._probe.get(f"out/{backend}/{mode}/value")
        return self._probe[key], None if value is None else float(value)

    def verify(self, engine: Engine, modes: tuple[str, ...] = MODES) -> ProbeReport:
        """Run the probe on ``engine`` and compare with the output recorded for its reference.

        Returns the errors measured. Raises BundleError ("probe mismatch ...") when an action
        or the value differs by more than the backend's tolerance, or when the bundle has no
        tolerance for the engine's backend: a bundle that does not reproduce its probe must
        not drive the robot.
        """
        tol = self.manifest.probe_tolerances.get(engine.backend)
        if tol is None:
            raise BundleError(f"bundle {self.path}: no probe tolerance for backend "
                              f"{engine.backend!r}, so it cannot be verified")
        std = self.normalization.action_std
        obs = self.probe_observation()
        errors: dict[str, float] = {}
        value_err = None
        for mode in modes:
            expected, expected_value = self.probe_expected(tol.reference, mode)
            pred = engine.predict(obs, mode=mode, indicator=self.manifest.probe_indicator)
            diff = np.abs(pred.actions.astype(np.float64) - expected) / std
            if not np.all(np.isfinite(diff)):
                raise BundleError(f"bundle {self.path}: probe mismatch on backend "
                                  f"{engine.backend} ({mode} mode): actions are not finite")
            step, joint = np.unravel_index(int(np.argmax(diff)), diff.shape)
            errors[mode] = float(diff[step, joint])
            if errors[mode] > tol.actions_atol:
                raise BundleError(
                    f"bundle {self.path}: probe mismatch on backend {engine.backend} ({mode} "
                    f"mode): action error {errors[mode]:.4g} std (step {step}, joint "
                    f"{self.joint_names[joint]!r}) exceeds the tolerance {tol.actions_atol:g} "
                    f"std against {tol.reference}; refusing to run it"
                )
            if expected_value is not None:
                if pred.value is None:
                    raise BundleError(f"bundle {self.path}: probe mismatch on backend "
                                      f"{engine.backend} ({mode} mode): no value returned")
                err = abs(pred.value - expected_value)
                value_err = max(value_err or 0.0, err)
                if not err <= tol.value_atol:
                    raise BundleError(
                        f"bundle {self.path}: probe mismatch on backend {engine.backend} "
                        f"({mode} mode): value error {err:.4g} exceeds the tolerance "
                        f"{tol.value_atol:g} against {tol.reference}; refusing to run it"
                    )
        return ProbeReport(engine.backend, tol.reference, errors, value_err)


def _read_manifest(path: Path) -> tuple[Any, str]:
    mpath = path / MANIFEST_NAME
    try:
        raw = mpath.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"bundle {path}: {MANIFEST_NAME} is missing") from None
    except OSError as err:
        raise BundleError(f"bundle {path}: cannot read {MANIFEST_NAME}: {err}") from err
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise BundleError(f"bundle {path}: {MANIFEST_NAME} is not UTF-8 text") from err
    except json.JSONDecodeError as err:
        text = raw.decode("utf-8")
        ended_early = err.pos >= len(text.rstrip()) - 1 or text.count("{") > text.count("}")
        hint = " (truncated?)" if ended_early else ""
        raise BundleError(f"bundle {path}: {MANIFEST_NAME} is not valid JSON{hint}: {err}") \
            from err
    return data, hashlib.sha256(raw).hexdigest()


def _check_artifacts(path: Path, artifacts: Mapping[str, tuple[str, int]]) -> None:
    problems: list[str] = []
    present: set[str] = set()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for fname in sorted(files):
            rel = Path(root, fname).relative_to(path).as_posix()
            if rel != MANIFEST_NAME:
                present.add(rel)
    for rel, (digest, size) in artifacts.items():
        fpath = path / rel
        if rel not in present:
            problems.append(f"artifact {rel!r} listed in {MANIFEST_NAME} is missing")
        elif fpath.is_symlink():
            problems.append(f"artifact {rel!r} is a symbolic link")
        elif fpath.stat().st_size != size:
            problems.append(f"artifact {rel!r} has {fpath.stat().st_size} bytes, the manifest "
                            f"says {size} (truncated or replaced)")
        elif sha256_file(fpath) != digest:
            problems.append(f"artifact {rel!r} sha256 mismatch (manifest {digest[:12]}..., "
                            f"file {sha256_file(fpath)[:12]}...): it was changed or corrupted")
    for rel in sorted(present - set(artifacts)):
        problems.append(f"unexpected file {rel!r} is not listed in {MANIFEST_NAME}")
    if problems:
        more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" \
            if len(problems) > 1 else ""
        raise BundleError(f"bundle {path}: {problems[0]}{more}")


def _load_probe(path: Path, m: Manifest) -> dict[str, np.ndarray]:
    ppath = path / PROBE_NAME
    try:
        with np.load(ppath, allow_pickle=False) as npz:
            probe = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise BundleError(f"bundle {path}: {PROBE_NAME} is unreadable: {err}") from err
    n, h = len(m.joint_names), m.chunk_size
    want = {
        "images": ((len(m.camera_names), *m.image_shape), np.uint8),
        "joint_position": ((n,), np.float32),
        "joint_velocity": ((n,), np.float32),
        "tokens": ((int(m.tokenizer["max_length"]),), np.int64),
    }
    for tol in m.probe_tolerances.values():
        for mode in MODES:
            want[f"out/{tol.reference}/{mode}/actions"] = ((h, n), np.float32)
        want[f"out/{tol.reference}/standard/value"] = ((), np.float32)
    for key, (shape, dtype) in want.items():
        arr = probe.get(key)
        if arr is None:
            raise BundleError(f"bundle {path}: {PROBE_NAME} lacks {key!r}")
        if arr.shape != shape or arr.dtype != dtype:
            raise BundleError(f"bundle {path}: {PROBE_NAME} {key!r} is {arr.dtype}{list(arr.shape)}"
                              f", expected {np.dtype(dtype)}{list(shape)}")
    return probe


def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Load and check the bundle at ``path``: manifest schema and format version, every
    artifact's size and sha256, no missing or unlisted files, the probe file's contents.

    Does not run anything: call :meth:`Bundle.verify` with an engine (``select_engine`` does).
    Raises BundleError with one line naming the bundle and the problem.
    """
    p = Path(path)
    if not p.is_dir():
        raise BundleError(f"bundle {p}: not a directory" if p.exists() else
                          f"bundle {p}: no such directory")
    data, digest = _read_manifest(p)
    try:
        manifest = _parse_manifest(data)
    except _SchemaError as err:
        raise BundleError(f"bundle {p}: {MANIFEST_NAME}: {err}") from None
    _check_artifacts(p, manifest.artifacts)
    probe = _load_probe(p, manifest)
    return Bundle(p, manifest, digest, probe)


# --------------------------------------------------------------------------- writing


class BundleWriter:
    """Writes a bundle atomically: files go to a temporary directory beside ``out_dir``; on
    :meth:`commit` every file and directory is fsynced and the directory renamed into place.

    >>> with BundleWriter(out) as w:
    ...     torch.save(state, w.file("torch/weights.pt"))
    ...     w.write_manifest(manifest)   # fills in artifacts, validates by loading
    ...     final = w.commit()

    Leaving the ``with`` block without :meth:`commit` (or by an exception) removes the
    temporary directory, so a crash never leaves a half-written bundle under ``out_dir``.
    ``overwrite`` replaces an existing ``out_dir`` (the old one is renamed aside first, then
    removed). Raises BundleError if ``out_dir`` exists and ``overwrite`` is false.
    """

    def __init__(self, out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not overwrite:
            raise BundleError(f"bundle {self.out_dir}: already exists (pass overwrite=True to "
                              f"replace it)")
        self.overwrite = overwrite
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.", suffix=".tmp",
                                          dir=self.out_dir.parent))
        self._manifest_written = False
        self._done = False

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._done:
            self.abort()

    def file(self, rel: str) -> Path:
        """Path to write artifact ``rel`` to (parent directories are created)."""
        try:
            _relpath(rel, "artifact")
        except _SchemaError as err:
            raise BundleError(str(err)) from None
        if rel == MANIFEST_NAME:
            raise BundleError(f"{MANIFEST_NAME} is written by write_manifest()")
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        self._manifest_written = False
        return target

    def write_manifest(self, manifest: Mapping[str, Any]) -> Bundle:
        """Hash every file written so far into ``artifacts``, write ``manifest.json`` and load
        the staged bundle to validate it. May be called again after more files are written.
        Returns the staged bundle (its path is temporary until :meth:`commit`)."""
        data = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **manifest}
        artifacts = {}
        for root, dirs, files in os.walk(self.path):
            dirs.sort()
            for fname in sorted(files):
                fpath = Path(root, fname)
                rel = fpath.relative_to(self.path).as_posix()
                if rel != MANIFEST_NAME:
                    artifacts[rel] = {"sha256": sha256_file(fpath), "size": fpath.stat().st_size}
        data["artifacts"] = artifacts
        text = json.dumps(data, indent=2, allow_nan=False) + "\n"
        (self.path / MANIFEST_NAME).write_text(text, encoding="utf-8")
        bundle = load_bundle(self.path)
        self._manifest_written = True
        return bundle

    def commit(self) -> Path:
        """fsync everything, rename the directory to ``out_dir`` and fsync its parent.
        Returns ``out_dir``."""
        if not self._manifest_written:
            raise BundleError(f"bundle {self.out_dir}: write_manifest() must come after the "
                              f"last artifact and before commit()")
        for root, dirs, files in os.walk(self.path):
            for fname in files:
                fsync_path(Path(root, fname))
            for d in dirs:
                fsync_path(Path(root, d))
        fsync_path(self.path)
        old = None
        if self.out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.", suffix=".old",
                                        dir=self.out_dir.parent))
            os.replace(self.out_dir, old / "bundle")
        os.replace(self.path, self.out_dir)
        fsync_path(self.out_dir.parent)
        self._done = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out_dir

    def abort(self) -> None:
        """Remove the temporary directory (idempotent)."""
        self._done = True
        shutil.rmtree(self.path, ignore_errors=True)
