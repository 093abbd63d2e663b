"""``ramp-edge engine``: build a bundle's engines, verify them against torch fp32, time them.

* ``build SOURCE --out BUNDLE``: SOURCE is an existing bundle (its torch weights are rebuilt
  into every requested engine format) or a ``.pt`` checkpoint holding
  ``{"config": RampConfig dict, "state_dict": ..., "joints": ..., "tokenizer": spec}``.
  INT8 is calibrated on logged observations with ``--calibrate-from``.
* ``verify BUNDLE``: every engine against torch eager fp32 on logged observations (or the
  bundle's synthetic evaluation set), result recorded in the manifest.
* ``bench BUNDLE``: chunk latency p50/p99 per backend and mode (:mod:`models.engine_timing`).

Human output goes to stderr, ``--json`` output to stdout. Exit codes: 0 success, 1 error or an
engine failed verification (one line per failing engine), 2 bad usage.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from firmware_bridge.durable_files import sha256_file
from firmware_bridge.errors import EdgeError

__all__ = [
    "BACKEND_ALIASES",
    "EngineBuildError",
    "VerifyResult",
    "build_engines",
    "engine_app",
    "record_in_manifest",
    "verify_engines",
]

engine_app = typer.Typer(help="Engines of a model bundle: build, verify against torch fp32, "
                              "time.", no_args_is_help=True)

# What --backends accepts: a bundle backend name, or a short name for several.
BACKEND_ALIASES: dict[str, tuple[str, ...]] = {
    "torch": ("torch-eager", "torch-export"),
    "onnx": ("onnx-fp32",),
    "torch-eager": ("torch-eager",),
    "torch-export": ("torch-export",),
    "onnx-fp32": ("onnx-fp32",),
    "onnx-int8": ("onnx-int8",),
    "tensorrt-fp16": ("tensorrt-fp16",),
    "tensorrt-int8": ("tensorrt-int8",),
}
DEFAULT_BACKENDS = "torch,onnx,onnx-int8,tensorrt-fp16,tensorrt-int8"
DEFAULT_MIN_COSINE = 0.99
# Provenance keys export_bundle writes itself; a rebuilt bundle gets fresh ones.
_EXPORT_PROVENANCE = ("code_version", "versions", "onnx_exporter", "int8_calibration",
                      "created_utc")


class EngineBuildError(EdgeError, ValueError):
    """The build source or the requested backends cannot make a bundle (unknown backend,
    unreadable source, a checkpoint without the fields it needs)."""


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def parse_backends(text: str) -> list[str]:
    """Bundle backend names from a comma-separated list of names and aliases, in order."""
    out: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        names = BACKEND_ALIASES.get(part)
        if names is None:
            raise EngineBuildError(f"unknown backend {part!r} (known: "
                                   f"{', '.join(BACKEND_ALIASES)})")
        out += [n for n in names if n not in out]
    if not out:
        raise EngineBuildError("no backend named")
    return out


# --------------------------------------------------------------------------- build


@dataclass
class _Source:
    networks: Any
    joints: Any
    camera_names: tuple[str, ...]
    tokenizer: Any
    provenance: dict[str, Any]
    name: str
    seed: int
    policy_uses_world_model: bool = True


def _bundle_source(path: Path) -> _Source:
    import torch

    from models.export import JointStats
    from models.networks import RampConfig, RampNetworks
    from ramp_edge.bundle import load_bundle

    bundle = load_bundle(path)  # hashes checked: never rebuild from a changed bundle
    m = bundle.manifest
    weights = set(bundle.backend("torch-eager").artifacts.values())
    if len(weights) != 1:
        raise EngineBuildError(f"bundle {path}: torch-eager must name one state dict")
    net = RampNetworks(RampConfig.from_dict(dict(m.model_config)))
    net.load_state_dict(torch.load(bundle.artifact_path(weights.pop()), map_location="cpu",
                                   weights_only=True), strict=True)
    prov = {k: v for k, v in m.provenance.items() if k not in _EXPORT_PROVENANCE}
    prov["rebuilt_from"] = {"bundle": bundle.name, "sha256": bundle.sha256,
                            "path": str(bundle.path.resolve())}
    seed = prov.get("seed")
    return _Source(net.eval(), JointStats(m.joint_names, m.normalization, m.joint_min,
                                          m.joint_max),
                   m.camera_names, bundle.tokenizer(), prov, bundle.name,
                   seed if type(seed) is int else 0, m.policy_uses_world_model)


def _checkpoint_source(path: Path) -> _Source:
    import numpy as np
    import torch

    from models.export import JointStats
    from models.language import Tokenizer
    from models.networks import RampConfig, RampNetworks
    from models.reference import DEFAULT_CAMERAS
    from ramp_edge.bundle import Normalization

    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise EngineBuildError(f"checkpoint {path} cannot be read: {type(err).__name__}: "
                               f"{err}") from err
    missing = [k for k in ("config", "state_dict", "joints", "tokenizer")
               if not isinstance(ck, dict) or k not in ck]
    if missing:
        raise EngineBuildError(f"checkpoint {path} lacks {', '.join(missing)} (it needs "
                               f"config, state_dict, joints, tokenizer)")
    try:
        cfg = RampConfig.from_dict(ck["config"])
        tok = Tokenizer.from_spec(ck["tokenizer"])
        net = RampNetworks(cfg)
        net.load_state_dict(ck["state_dict"], strict=True)
        joints = ck["joints"]
        if isinstance(joints, (list, tuple)):
            joints = {"names": list(joints)}
        names = tuple(joints["names"])
        if "normalization" in joints:
            n = joints["normalization"]
            stats = [np.asarray(n[k][s], np.float32) for k in ("joint_position",
                                                               "joint_velocity", "actions")
                     for s in ("mean", "std")]
            lo, hi = joints.get("position_min"), joints.get("position_max")
            js = JointStats(names, Normalization(*stats),
                            None if lo is None else np.asarray(lo, np.float32),
                            None if hi is None else np.asarray(hi, np.float32))
        else:
            limits = joints.get("limits")
            js = JointStats.from_limits(names, None if limits is None else
                                        [tuple(x) for x in limits])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise EngineBuildError(f"checkpoint {path}: {type(err).__name__}: {err}") from err
    cams = tuple(ck.get("cameras") or DEFAULT_CAMERAS)
    prov = dict(ck.get("provenance") or {})
    prov.setdefault("trained", True)
    prov["checkpoint"] = {"path": str(path.resolve()), "sha256": sha256_file(path)}
    seed = prov.get("seed")
    return _Source(net.eval(), js, cams, tok, prov, str(ck.get("name") or path.stem),
                   seed if type(seed) is int else 0)


def _load_source(source: Path) -> _Source:
    from ramp_edge.bundle import MANIFEST_NAME

    if source.is_dir() and (source / MANIFEST_NAME).is_file():
        return _bundle_source(source)
    if source.is_file() and source.suffix == ".pt":
        return _checkpoint_source(source)
    raise EngineBuildError(f"build source {source}: not a bundle directory (with "
                           f"{MANIFEST_NAME}) nor a .pt checkpoint")


def _not_buildable(backend: str) -> str | None:
    """Why this machine cannot build (and check) ``backend``; None if it can."""
    from ramp_edge.engines import backend_status

    if backend.startswith("onnx"):
        if importlib.util.find_spec("onnx") is None:
            return "onnx not installed (the 'onnx' extra)"
        return backend_status(backend)
    if backend == "tensorrt-int8":
        reason = backend_status(backend)
        return ("models.export has no TensorRT INT8 build (the backend needs calibration.npz "
                "and a probe tolerance measured on the device)"
                + (f"; and here: {reason}" if reason else ""))
    return None


def _logged_split(src: _Source, episodes: str | os.PathLike[str], n_cal: int,
                  n_eval: int) -> tuple[list[Any], list[Any], dict[str, Any]]:
    """Calibration and evaluation observations from disjoint logged steps."""
    import numpy as np

    from models.logged_observations import LoggedObservationError, logged_observations

    cfg = src.networks.cfg
    logged = logged_observations(
        episodes, camera_names=src.camera_names,
        image_shape=(cfg.image_height, cfg.image_width, 3), joint_names=src.joints.names,
        tokenizer=src.tokenizer, n=n_cal + n_eval, seed=src.seed)
    obs = logged.observations
    if len(obs) < 2:
        raise LoggedObservationError(f"{episodes}: {len(obs)} usable step(s); calibration and "
                                     f"its accuracy check need at least 2")
    k_eval = min(n_eval, max(1, len(obs) * n_eval // (n_cal + n_eval)))
    order = np.random.default_rng(src.seed).permutation(len(obs))
    evaluation = [obs[i] for i in sorted(order[:k_eval])]
    calibration = [obs[i] for i in sorted(order[k_eval:])]
    where = f"{len(logged.episodes)} episode(s)"
    return calibration, evaluation, {
        "episodes": list(logged.episodes),
        "calibration": f"{len(calibration)} logged observations from {where}",
        "evaluation": f"{len(evaluation)} other logged observations from {where}",
    }


def build_engines(source: str | os.PathLike[str], out: str | os.PathLike[str], *,
                  backends: Sequence[str], calibrate_from: str | os.PathLike[str] | None = None,
                  calibration_steps: int = 64, eval_steps: int = 16,
                  overwrite: bool = False, say: Any = _say) -> tuple[Path, dict[str, str]]:
    """Build a bundle at ``out`` with ``backends`` from ``source`` (bundle or checkpoint).

    With ``calibrate_from``, INT8 is calibrated on ``calibration_steps`` logged observations
    and its accuracy checked on ``eval_steps`` other logged steps (else synthetic ones).
    Backends this machine cannot build are left out; TensorRT FP16 ships the exported programs
    the device compiles (it is compiled and probe-checked here only where torch-tensorrt runs).
    Returns the bundle's path and, per requested backend not in it, why.
    Raises EngineBuildError, LoggedObservationError, ExportError, BundleError.
    """
    from models.export import export_bundle
    from ramp_edge.bundle import load_bundle
    from ramp_edge.engines import backend_status, open_engine

    src = _load_source(Path(source))
    skipped: dict[str, str] = {}
    wanted = []
    for b in backends:
        reason = _not_buildable(b)
        if reason is None:
            wanted.append(b)
        else:
            skipped[b] = reason
    calibration = evaluation = None
    prov = dict(src.provenance)
    if calibrate_from is not None:
        if "onnx-int8" not in wanted:
            say("note: --calibrate-from is unused: no INT8 backend is built")
        else:
            calibration, evaluation, note = _logged_split(src, calibrate_from,
                                                          calibration_steps, eval_steps)
            prov["int8_calibration_episodes"] = note["episodes"]
            prov["accuracy_observations"] = note["evaluation"]
            say(f"INT8 calibration on {note['calibration']}; accuracy checked on "
                f"{note['evaluation']}")
    path = export_bundle(
        src.networks, out, joints=src.joints, camera_names=src.camera_names,
        tokenizer=src.tokenizer, provenance=prov, name=src.name, backends=wanted,
        calibration=calibration, n_calibration=calibration_steps, evaluation=evaluation,
        seed=src.seed, int8_failure="drop", overwrite=overwrite,
        policy_uses_world_model=src.policy_uses_world_model)
    bundle = load_bundle(path)
    skipped.update({b: r for b, r in bundle.manifest.raw.get("skipped_backends", {}).items()
                    if b in backends})
    trt = backend_status("tensorrt-fp16")
    if "tensorrt-fp16" in bundle.backends:
        if trt is None:  # torch-tensorrt runs here: compile now and check the probe
            with open_engine(bundle, "tensorrt-fp16"):
                pass
            say("tensorrt-fp16: compiled here and probe-verified")
        else:
            say(f"tensorrt-fp16: shipped as exported programs, compiled and probe-checked on "
                f"the device; not compiled here: {trt}")
    return path, skipped


# --------------------------------------------------------------------------- verify


@dataclass(frozen=True)
class VerifyResult:
    """Per engine: ``passed`` and its figures; ``skipped``: why a backend was not checked;
    ``observations``: what the engines were checked on."""

    checked: dict[str, dict[str, Any]]
    skipped: dict[str, str]
    observations: str

    @property
    def failures(self) -> dict[str, str]:
        return {b: r["problem"] for b, r in self.checked.items() if not r["passed"]}


def _synthetic_eval(bundle: Any, n: int) -> tuple[list[Any], str]:
    """The bundle's own evaluation set: what export_bundle measured accuracy on (seed + 2)."""
    from models.export import JointStats, synthetic_observations

    m = bundle.manifest
    seed = m.provenance.get("seed")
    seed = seed if type(seed) is int else 0
    obs = synthetic_observations(
        n, camera_names=m.camera_names, image_shape=m.image_shape,
        joints=JointStats(m.joint_names, m.normalization, m.joint_min, m.joint_max),
        tokenizer=bundle.tokenizer(), seed=seed + 2)
    return obs, f"{n} synthetic observations (the bundle's eval set, seed {seed + 2})"


def verify_engines(bundle: Any, observations: Sequence[Any], described: str, *,
                   min_cosine: float = DEFAULT_MIN_COSINE,
                   threads: int | None = 1) -> VerifyResult:
    """Check every backend of ``bundle`` this machine runs: its probe (on opening), then
    against torch eager fp32 on ``observations`` in both modes: smallest cosine similarity of
    the normalised action chunks >= ``min_cosine``, largest action error (std units) and value
    error within the backend's probe tolerance in the manifest. Backends that cannot run here
    are listed in ``skipped`` with the reason."""
    from models.export import accuracy_report
    from ramp_edge.bundle import BundleError
    from ramp_edge.engines import EngineError, EngineOptions, backend_status, open_engine

    options = EngineOptions(threads=threads)
    checked: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for backend in bundle.backends:
        reason = backend_status(backend)
        if reason is not None:
            skipped[backend] = f"cannot run here: {reason}"
            continue
        try:
            with open_engine(bundle, backend, options, verify=True):
                pass
        except (BundleError, EngineError) as err:
            checked[backend] = {"passed": False, "problem": str(err)}
            continue
        if backend == "torch-eager":
            checked[backend] = {"passed": True, "problem": None, "is_reference": True}
            continue
        acc = accuracy_report(bundle, [backend], observations, options=options)[backend]
        tol = bundle.manifest.probe_tolerances[backend]
        problems = []
        if not acc["actions_cosine_min"] >= min_cosine:
            problems.append(f"action cosine similarity {acc['actions_cosine_min']:.4f} < "
                            f"{min_cosine}")
        if not acc["actions_max_abs_err_std"] <= tol.actions_atol:
            problems.append(f"largest action error {acc['actions_max_abs_err_std']:.4g} std > "
                            f"tolerance {tol.actions_atol:g}")
        if not acc["value_max_abs_err"] <= tol.value_atol:
            problems.append(f"value error {acc['value_max_abs_err']:.4g} > tolerance "
                            f"{tol.value_atol:g}")
        checked[backend] = {**acc, "min_cosine": min_cosine, "actions_atol": tol.actions_atol,
                            "value_atol": tol.value_atol, "passed": not problems,
                            "problem": "; ".join(problems) or None}
    return VerifyResult(checked, skipped, described)


def record_in_manifest(bundle: Any, key: str, value: Any) -> Any:
    """Set ``key`` of ``bundle``'s manifest to ``value`` and return the reloaded bundle.

    The bundle's identity is the sha256 of ``manifest.json`` and the manifest lists the sha256
    of every artifact; only the manifest changes here, so the artifact hashes stay valid and
    the bundle's sha256 becomes that of the new manifest. The new manifest is written beside
    the bundle, fsynced and renamed over the old one; if the result does not load, the old one
    is put back. Raises BundleError (the manifest changed since ``bundle`` was loaded, or the
    new one does not load)."""
    from ramp_edge.bundle import MANIFEST_NAME, BundleError, load_bundle

    mpath = bundle.path / MANIFEST_NAME
    old = mpath.read_bytes()
    if hashlib.sha256(old).hexdigest() != bundle.sha256:
        raise BundleError(f"bundle {bundle.path}: {MANIFEST_NAME} changed since it was loaded")
    data = json.loads(old.decode("utf-8"))
    data[key] = value
    _replace(mpath, (json.dumps(data, indent=2, allow_nan=False) + "\n").encode("utf-8"))
    try:
        return load_bundle(bundle.path)
    except BundleError:
        _replace(mpath, old)
        raise


def _replace(target: Path, content: bytes) -> None:
    # The temporary file lives beside the bundle, not in it: a bundle with an unlisted file
    # does not load, even for a moment.
    fd, tmp = tempfile.mkstemp(prefix=f".{target.parent.name}.", suffix=".manifest.tmp",
                               dir=target.parent.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(target.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


# --------------------------------------------------------------------------- commands

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine output (JSON) on stdout.")]


@engine_app.command("build")
def build_cmd(
    source: Annotated[Path, typer.Argument(help="A bundle directory (its torch weights are "
                                                "rebuilt) or a .pt checkpoint.")],
    out: Annotated[Path, typer.Option("--out", help="Directory of the new bundle.")],
    backends: Annotated[str, typer.Option(
        help="Comma-separated: torch (eager + exported program), onnx (fp32), onnx-int8, "
             "tensorrt-fp16, tensorrt-int8, or a bundle backend name.")] = DEFAULT_BACKENDS,
    calibrate_from: Annotated[Path | None, typer.Option(
        help="Episode file, directory of episodes or robot home: INT8 is calibrated on "
             "observations logged there (default: synthetic observations).")] = None,
    calibration_steps: Annotated[int, typer.Option(
        min=1, help="Observations to calibrate INT8 on.")] = 64,
    eval_steps: Annotated[int, typer.Option(
        min=1, help="Other logged observations the INT8 accuracy check runs on.")] = 16,
    overwrite: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build a bundle's engines from SOURCE; says which backends were skipped and why."""
    wanted = parse_backends(backends)
    path, skipped = build_engines(source, out, backends=wanted, calibrate_from=calibrate_from,
                                  calibration_steps=calibration_steps,
                                  eval_steps=eval_steps, overwrite=overwrite)
    from ramp_edge.bundle import load_bundle

    bundle = load_bundle(path)
    for b, reason in skipped.items():
        _say(f"skipped {b}: {reason}")
    _say(f"built bundle {bundle.name!r} at {path}: {', '.join(bundle.backends)} "
         f"(sha256 {bundle.sha256[:12]})")
    if as_json:
        print(json.dumps({"bundle": str(path), "sha256": bundle.sha256,
                          "backends": list(bundle.backends), "skipped": skipped}, indent=2))


@engine_app.command("verify")
def verify_cmd(
    bundle_path: Annotated[Path, typer.Argument(metavar="BUNDLE", help="Bundle directory.")],
    episodes: Annotated[Path | None, typer.Option(
        help="Episode file, directory of episodes or robot home to take observations from "
             "(default: the bundle's synthetic evaluation set).")] = None,
    steps: Annotated[int, typer.Option(min=1, help="Observations to check on.")] = 32,
    min_cosine: Annotated[float, typer.Option(
        help="Smallest cosine similarity of action chunks accepted.")] = DEFAULT_MIN_COSINE,
    threads: Annotated[int, typer.Option(min=1, help="Intra-op threads per engine.")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Check every engine of BUNDLE against torch fp32 and record the result in its manifest.
    Exit 1 if one fails (one line per failing engine)."""
    from models.logged_observations import observations_for_bundle
    from ramp_edge.bundle import load_bundle

    bundle = load_bundle(bundle_path)
    if episodes is not None:
        logged = observations_for_bundle(bundle, episodes, steps)
        obs, described = logged.observations, logged.describe()
        episode_ids = list(logged.episodes)
    else:
        obs, described = _synthetic_eval(bundle, steps)
        episode_ids = []
        _say(f"no --episodes given: checking on {described}, not on logged data")
    result = verify_engines(bundle, obs, described, min_cosine=min_cosine, threads=threads)
    record = {
        "utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "reference": "torch-eager",
        "observations": described,
        "episodes": episode_ids,
        "passed": not result.failures,
        "backends": result.checked,
        "skipped": result.skipped,
    }
    bundle = record_in_manifest(bundle, "verification", record)
    for b, info in result.checked.items():
        if info["passed"] and not info.get("is_reference"):
            _say(f"ok {b}: cosine >= {info['actions_cosine_min']:.5f}, largest action error "
                 f"{info['actions_max_abs_err_std']:.3g} std (tolerance "
                 f"{info['actions_atol']:g})")
    for b, reason in result.skipped.items():
        _say(f"skipped {b}: {reason}")
    _say(f"recorded in {bundle.path / 'manifest.json'} (bundle sha256 now "
         f"{bundle.sha256[:12]})")
    if as_json:
        print(json.dumps({"bundle": str(bundle.path), "sha256": bundle.sha256, **record},
                         indent=2))
    if result.failures:
        for b, problem in result.failures.items():
            _say(f"FAILED {b}: {problem}")
        raise typer.Exit(1)


@engine_app.command("bench")
def bench_cmd(
    bundle_path: Annotated[Path, typer.Argument(metavar="BUNDLE", help="Bundle directory.")],
    runs: Annotated[int, typer.Option(min=1, help="Timed chunks per backend and mode.")] = 100,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed chunks first.")] = 10,
    threads: Annotated[int, typer.Option(min=1, help="Intra-op threads per engine.")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Chunk latency p50/p99 per backend, standard and efficient mode, interleaved call by
    call (synthetic observations; every engine probe-verified first)."""
    from models.engine_timing import interleaved_latency, open_runnable
    from ramp_edge.bundle import MODES, load_bundle
    from ramp_edge.engines import EngineOptions

    bundle = load_bundle(bundle_path)
    obs, _ = _synthetic_eval(bundle, 8)
    with ExitStack() as stack:
        engines, skipped = open_runnable(bundle, stack, EngineOptions(threads=threads))
        stats = interleaved_latency(engines, obs, runs=runs, warmup=warmup)
    rows = {b: {mode: stats[b, mode].summary() for mode in MODES} for b in engines}
    for b, reason in skipped.items():
        _say(f"skipped {b}: {reason}")
    if as_json:
        print(json.dumps({"bundle": str(bundle.path), "sha256": bundle.sha256, "runs": runs,
                          "warmup": warmup, "threads": threads, "backends": rows,
                          "skipped": skipped}, indent=2))
        return
    _say("| backend | standard p50 / p99 ms | efficient p50 / p99 ms |")
    _say("| --- | --- | --- |")
    for b, r in rows.items():
        s, e = r["standard"], r["efficient"]
        _say(f"| {b} | {s['p50_ms']:.2f} / {s['p99_ms']:.2f} | "
             f"{e['p50_ms']:.2f} / {e['p99_ms']:.2f} |")
