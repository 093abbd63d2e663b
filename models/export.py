"""Export RAMP networks to a model bundle: state dict, exported programs, ONNX fp32 and INT8.

:func:`export_bundle` writes, atomically (:class:`ramp_edge.bundle.BundleWriter`):

* ``torch/weights.pt`` -- the state dict (backend ``torch-eager``);
* ``torch/{encoder,world_model,policy}.pt2`` -- ``torch.export`` programs (``torch-export``, and
  the source TensorRT compiles on the device: ``tensorrt-fp16``);
* ``onnx/fp32/*.onnx`` -- ``torch.onnx.export`` with the dynamo exporter (onnxscript), or the
  legacy TorchScript exporter where onnxscript is missing (``onnx-fp32``);
* ``onnx/int8/*.onnx`` -- ONNX Runtime static quantization, QDQ format, per-channel int8
  weights and uint8 activations calibrated (MinMax) on observations run through the fp32
  networks (``onnx-int8``). Quantized: every convolution, and every matrix product whose weight
  has at least 2**18 elements (the CNN projection, the transformer MLPs, the world-model
  trunk), which is most of the compute. The smaller ones (attention projections, fusion,
  joint-state and language layers, action and value heads) stay fp32: they cost little, and
  measured on the reference networks they carry most of the int8 error (quantizing them too
  doubled the largest action error for a 20% speed-up);
* ``probe.npz`` + ``manifest.json`` -- the probe observation with every backend's output on it,
  per-backend tolerances, the accuracy of every backend against torch fp32 on held-out
  observations, and provenance.

Every backend's probe output and accuracy are measured by opening the staged bundle with the
robot's own engines (:mod:`ramp_edge.engines`), so the numbers are those of the code that runs
on the robot. This is export tooling: it uses the controller's bundle and engine modules, never
its control loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import importlib
import importlib.util
import io
import logging
import subprocess
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from firmware_bridge.errors import EdgeError
from models.language import Tokenizer
from models.networks import GRAPH_INPUTS, GRAPH_OUTPUTS, RampNetworks
from ramp_edge.bundle import MODES, PROBE_NAME, Bundle, BundleWriter, Normalization
from ramp_edge.engines.base import EngineOptions

__all__ = [
    "ALL_BACKENDS",
    "DEFAULT_TOLERANCES",
    "ExportError",
    "JointStats",
    "accuracy_report",
    "export_bundle",
    "synthetic_observations",
]

log = logging.getLogger(__name__)

ALL_BACKENDS: tuple[str, ...] = ("torch-eager", "torch-export", "onnx-fp32", "onnx-int8",
                                 "tensorrt-fp16")
# Probe tolerances (actions in action-std units, value absolute) and what each is compared to.
# fp32 backends must reproduce torch eager up to float rounding across CPUs/libraries; INT8 is
# compared with its own recorded output (its kernels round differently on other CPUs by a few
# quantization steps); TensorRT is built on the device, so only the fp32 reference exists.
DEFAULT_TOLERANCES: dict[str, dict[str, Any]] = {
    "torch-eager": {"reference": "torch-eager", "actions_atol": 2e-3, "value_atol": 1e-4},
    "torch-export": {"reference": "torch-eager", "actions_atol": 2e-3, "value_atol": 1e-4},
    "onnx-fp32": {"reference": "torch-eager", "actions_atol": 2e-3, "value_atol": 1e-4},
    "onnx-int8": {"reference": "onnx-int8", "actions_atol": 0.05, "value_atol": 5e-3},
    "tensorrt-fp16": {"reference": "torch-eager", "actions_atol": 0.05, "value_atol": 5e-3},
}
_PRECISION = {
    "torch-eager": "fp32",
    "torch-export": "fp32",
    "onnx-fp32": "fp32",
    "onnx-int8": "int8 (static, QDQ, per-channel weights, uint8 activations)",
    "tensorrt-fp16": "fp16",
}
_INT8_MIN_WEIGHT_ELEMENTS = 1 << 18
_ONNX_OPSET = 18
# Export measures with one thread: deterministic, and fair to a busy machine.
_ONE_THREAD = EngineOptions(threads=1)
PROBE_INSTRUCTION = "pick up the red cube and put it in the bin"
INSTRUCTIONS = (
    PROBE_INSTRUCTION,
    "open the drawer",
    "stack the blue block on the green block",
    "push the button",
    "put the cup on the plate",
    "fold the towel",
    "",
)


class ExportError(EdgeError, RuntimeError):
    """A bundle could not be built: a backend's toolchain is missing, or an export, the
    quantization or the INT8 accuracy check failed. The message says which and why."""


@dataclass(frozen=True)
class JointStats:
    """The robot's joints as the bundle describes them: names, normalisation, optional limits.

    All arrays float32 [n] in ``names`` order, in each joint's unit (rad or m; per s for
    velocity). ``position_min``/``position_max`` (both or neither) let accuracy be reported as
    a fraction of each joint's range.
    """

    names: tuple[str, ...]
    normalization: Normalization
    position_min: np.ndarray | None = None
    position_max: np.ndarray | None = None

    @classmethod
    def from_limits(cls, names: Sequence[str],
                    limits: Sequence[tuple[float, float]] | None = None) -> JointStats:
        """Stats for a robot known only by its joints: with limits, positions and actions are
        normalised to mean = mid-range, std = range / 4 (the limits sit at +-2 std), velocity
        std = range / 4 per second; without, mean 0 and std 1 throughout."""
        n = len(names)
        if limits is None:
            ones, zeros = np.ones(n, np.float32), np.zeros(n, np.float32)
            return cls(tuple(names), Normalization(zeros, ones, zeros, ones, zeros, ones))
        if len(limits) != n:
            raise ValueError(f"{len(limits)} joint limits for {n} joints")
        lo = np.array([a for a, _ in limits], np.float32)
        hi = np.array([b for _, b in limits], np.float32)
        if not np.all(hi > lo):
            raise ValueError("every joint limit needs min < max")
        mid, std = (lo + hi) / 2, (hi - lo) / 4
        zeros = np.zeros(n, np.float32)
        return cls(tuple(names), Normalization(mid, std, zeros, std.copy(), mid.copy(),
                                               std.copy()), lo, hi)


# --------------------------------------------------------------------------- observations


def synthetic_observations(
    n: int,
    *,
    camera_names: Sequence[str],
    image_shape: tuple[int, int, int],
    joints: JointStats,
    tokenizer: Tokenizer,
    seed: int,
    instructions: Sequence[str] = INSTRUCTIONS,
) -> list[Any]:
    """``n`` probe-like observations (``ramp_edge.engines.Observation``), deterministic in
    ``seed``: images of a lit table (smooth colour gradient, a few coloured boxes and discs,
    sensor noise), joint positions uniform within the limits (or +-2 std), velocities within
    +-1 std, one of ``instructions``. Used for calibration, the probe and accuracy checks
    until logged observations replace them."""
    from ramp_edge.engines.base import Observation

    rng = np.random.default_rng(seed)
    h, w, _ = image_shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    norm = joints.normalization
    lo = joints.position_min if joints.position_min is not None else \
        norm.position_mean - 2 * norm.position_std
    hi = joints.position_max if joints.position_max is not None else \
        norm.position_mean + 2 * norm.position_std
    out = []
    for _ in range(n):
        images = {}
        for cam in camera_names:
            c0, c1 = rng.uniform(40, 220, 3), rng.uniform(40, 220, 3)
            t = ((xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)) / max(h, w) + 1) / 2
            img = c0 * t[..., None] + c1 * (1 - t[..., None])
            for _ in range(rng.integers(1, 5)):
                color = rng.uniform(0, 255, 3)
                cy, cx = rng.uniform(0, h), rng.uniform(0, w)
                ry, rx = rng.uniform(4, h / 4), rng.uniform(4, w / 4)
                if rng.random() < 0.5:
                    mask = (np.abs(yy - cy) < ry) & (np.abs(xx - cx) < rx)
                else:
                    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
                img[mask] = color
            img += rng.normal(0, 4, img.shape)
            images[cam] = np.clip(img, 0, 255).astype(np.uint8)
        out.append(Observation(
            images=images,
            joint_position=rng.uniform(lo, hi).astype(np.float32),
            joint_velocity=(norm.velocity_mean + rng.uniform(-1, 1, len(lo)) *
                            norm.velocity_std).astype(np.float32),
            tokens=tokenizer.encode(instructions[int(rng.integers(len(instructions)))]),
        ))
    return out


def _encoder_feeds(obs: Any, camera_names: Sequence[str],
                   norm: Normalization) -> tuple[np.ndarray, ...]:
    """The encoder graph's inputs for one observation (as the engines build them)."""
    return (
        np.stack([obs.images[c] for c in camera_names]),
        ((obs.joint_position - norm.position_mean) / norm.position_std)[None].astype(np.float32),
        ((obs.joint_velocity - norm.velocity_mean) / norm.velocity_std)[None].astype(np.float32),
        obs.tokens[None].astype(np.int64),
    )


def _graph_feeds(net: RampNetworks, observations: Sequence[Any], camera_names: Sequence[str],
                 norm: Normalization) -> dict[str, list[dict[str, np.ndarray]]]:
    """Per graph, named input feeds produced by the fp32 networks on ``observations``: the
    calibration data of each graph is what its upstream graph really outputs. The policy gets
    both modes (world-model tokens used and masked) with I = 1."""
    feeds: dict[str, list[dict[str, np.ndarray]]] = {g: [] for g in GRAPH_INPUTS}
    graphs = net.graphs()
    with torch.inference_mode():
        for obs in observations:
            enc = _encoder_feeds(obs, camera_names, norm)
            o, lang = graphs["encoder"](*(torch.from_numpy(x) for x in enc))
            future, _ = graphs["world_model"](o, lang)
            feeds["encoder"].append(dict(zip(GRAPH_INPUTS["encoder"], enc, strict=True)))
            feeds["world_model"].append({"obs_latent": o.numpy(), "lang": lang.numpy()})
            for mask in (0.0, 1.0):
                feeds["policy"].append({
                    "obs_latent": o.numpy(), "lang": lang.numpy(), "future": future.numpy(),
                    "z_mask": np.full((1, 1), mask, np.float32),
                    "indicator": np.ones((1, 1), np.float32),
                })
    return feeds


# --------------------------------------------------------------------------- exporters


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters print progress to stdout and log registry warnings; keep them out of the
    caller's output (errors still raise)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "root")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def onnx_exporter() -> str:
    """Which torch.onnx exporter :func:`export_bundle` uses here: "dynamo" (needs onnxscript)
    or "legacy" (TorchScript-based, deprecated but still working in torch 2.13)."""
    return "dynamo" if _has("onnxscript") else "legacy"


def _export_onnx(module: torch.nn.Module, ep: torch.export.ExportedProgram,
                 example: tuple[torch.Tensor, ...], graph: str, path: Path) -> str:
    """Export one graph to ONNX; returns the exporter that produced it. The dynamo exporter
    is used where onnxscript is installed; if it fails, the legacy one is tried before giving
    up (its error is logged, the legacy one's raised)."""
    names = {"input_names": list(GRAPH_INPUTS[graph]),
             "output_names": list(GRAPH_OUTPUTS[graph])}
    if onnx_exporter() == "dynamo":
        try:
            with _quiet():
                torch.onnx.export(ep, (), str(path), dynamo=True, external_data=False,
                                  opset_version=_ONNX_OPSET, verbose=False, **names)
            return "dynamo"
        except Exception as err:
            log.warning("dynamo ONNX export of %s failed (%s); trying the legacy exporter",
                        graph, err)
    with _quiet():
        torch.onnx.export(module, example, str(path), dynamo=False, opset_version=_ONNX_OPSET,
                          do_constant_folding=True, **names)
    return "legacy"


def _int8_nodes(model: Any) -> list[str]:
    """Names of the nodes worth quantizing: every Conv, and every MatMul/Gemm whose second
    input is a weight matrix of at least ``_INT8_MIN_WEIGHT_ELEMENTS`` elements."""
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    chosen = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            chosen.append(node.name)
        elif node.op_type in ("MatMul", "Gemm") and len(node.input) > 1:
            w = shapes.get(node.input[1])
            if w is not None and len(w) == 2 and w[0] * w[1] >= _INT8_MIN_WEIGHT_ELEMENTS:
                chosen.append(node.name)
    return chosen


def _quantize_int8(fp32_path: Path, out_path: Path, feeds: list[dict[str, np.ndarray]],
                   scratch: Path) -> None:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    pre = scratch / f"{fp32_path.stem}.pre.onnx"
    with _quiet():
        # Shape inference + graph optimisation first, as ONNX Runtime recommends: fused
        # MatMul+Add -> Gemm quantizes as one node, and constants get folded.
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        nodes = _int8_nodes(onnx.load(str(pre)))
        quantize_static(
            str(pre), str(out_path), Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            op_types_to_quantize=["Conv", "MatMul", "Gemm"],
            nodes_to_quantize=nodes,
            extra_options={"MatMulConstBOnly": True},
        )


def _versions() -> dict[str, str]:
    out = {"torch": torch.__version__, "numpy": np.__version__}
    for mod in ("onnx", "onnxruntime", "onnxscript"):
        with contextlib.suppress(Exception):
            out[mod] = importlib.import_module(mod).__version__
    return out


def code_version() -> str:
    """``ramp-edge <version>`` plus the git commit (and "-dirty") where this is a checkout."""
    from ramp_edge import __version__

    text = f"ramp-edge {__version__}"
    root = Path(__file__).resolve().parent.parent
    with contextlib.suppress(Exception):
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=5,
                               check=True).stdout.strip()
        text += f" (git {sha[:12]}{'-dirty' if dirty else ''})"
    return text


# --------------------------------------------------------------------------- accuracy


def accuracy_report(bundle: Bundle, backends: Sequence[str], observations: Sequence[Any], *,
                    reference: str = "torch-eager",
                    options: EngineOptions | None = None) -> dict[str, dict[str, Any]]:
    """How far each of ``backends`` is from ``reference`` on ``observations``, both modes.

    Per backend: ``actions_max_abs_err_std`` (largest action error in action-std units),
    ``actions_max_abs_err_frac_range`` (largest error / that joint's range, when the bundle
    has limits), ``actions_cosine_min`` (smallest cosine similarity between the two chunks'
    normalised actions, per observation and mode), ``value_max_abs_err``.
    """
    from ramp_edge.engines import open_engine

    m = bundle.manifest
    std, mean = m.normalization.action_std, m.normalization.action_mean
    span = None if m.joint_min is None else (m.joint_max - m.joint_min)
    with open_engine(bundle, reference, options, verify=False) as ref:
        expected = [(mode, ref.predict(obs, mode)) for obs in observations for mode in MODES]
    out = {}
    for backend in backends:
        err_std = err_frac = value_err = 0.0
        cos_min = 1.0
        with open_engine(bundle, backend, options, verify=False) as eng:
            got = [eng.predict(obs, mode) for obs in observations for mode in MODES]
        for (_, b), a in zip(expected, got, strict=True):
            na = (a.actions - mean) / std
            nb = (b.actions - mean) / std
            diff = np.abs(a.actions.astype(np.float64) - b.actions)
            err_std = max(err_std, float(np.max(diff / std)))
            if span is not None:
                err_frac = max(err_frac, float(np.max(diff / span)))
            denom = float(np.linalg.norm(na) * np.linalg.norm(nb))
            cos_min = min(cos_min, float(np.sum(na * nb) / denom) if denom > 0 else 1.0)
            if a.value is not None and b.value is not None:
                value_err = max(value_err, abs(a.value - b.value))
        report = {
            "reference": reference,
            "observations": len(observations),
            "modes": list(MODES),
            "actions_max_abs_err_std": err_std,
            "actions_cosine_min": cos_min,
            "value_max_abs_err": value_err,
        }
        if span is not None:
            report["actions_max_abs_err_frac_range"] = err_frac
        out[backend] = report
    return out


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run torch with ``n`` intra-op threads, restoring the setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- export


def _buildable(backend: str) -> str | None:
    """None if ``backend`` can be exported here, else why not."""
    if backend in ("onnx-fp32", "onnx-int8"):
        missing = [m for m in ("onnx", "onnxruntime") if not _has(m)]
        if missing:
            return f"{' and '.join(missing)} not installed (the 'onnx' extra)"
    if backend not in _PRECISION:
        return "not a backend this exporter builds"
    return None


def export_bundle(
    networks: RampNetworks,
    out_dir: str | Path,
    *,
    joints: JointStats,
    camera_names: Sequence[str],
    tokenizer: Tokenizer,
    provenance: Mapping[str, Any],
    name: str,
    backends: Sequence[str] | None = None,
    calibration: Sequence[Any] | None = None,
    n_calibration: int = 32,
    evaluation: Sequence[Any] | None = None,
    n_eval: int = 16,
    action_rate_hz: float = 50.0,
    seed: int = 0,
    int8_min_cosine: float = 0.99,
    int8_max_err_frac_range: float = 0.01,
    int8_failure: Literal["raise", "drop"] = "raise",
    overwrite: bool = False,
    policy_uses_world_model: bool = True,
) -> Path:
    """Build a bundle at ``out_dir`` from ``networks``; returns its path.

    ``backends``: which to build (default: every one in :data:`ALL_BACKENDS` this machine can
    build; the others are recorded as skipped with the reason). ``calibration``: observations
    for INT8 calibration (logged ones, ideally); default ``n_calibration`` synthetic ones from
    ``seed``. Accuracy is measured on ``evaluation`` (observations calibration did not see;
    logged ones where calibration is logged) or else ``n_eval`` other synthetic ones. The INT8
    graphs must reach ``int8_min_cosine`` and, where joint limits are known, a largest action error
    below ``int8_max_err_frac_range`` of the joint's range; otherwise ``int8_failure`` says
    whether to raise ExportError or leave ``onnx-int8`` out (recorded in the manifest).
    ``policy_uses_world_model``: False for a policy trained with the world-model tokens always
    masked (behaviour cloning, RECAP): the manifest says so and engines then feed it the mask
    token in standard mode too (the world model still runs there, for the value).

    Raises ExportError (a backend cannot be built or fails its checks), BundleError (out_dir
    exists and not ``overwrite``), ValueError (inconsistent arguments).
    """
    with _torch_threads(1):
        return _export_bundle(
            networks, out_dir,
            joints=joints,
            camera_names=camera_names,
            tokenizer=tokenizer,
            provenance=provenance,
            name=name,
            backends=backends,
            calibration=calibration,
            n_calibration=n_calibration,
            evaluation=evaluation,
            n_eval=n_eval,
            action_rate_hz=action_rate_hz,
            seed=seed,
            int8_min_cosine=int8_min_cosine,
            int8_max_err_frac_range=int8_max_err_frac_range,
            int8_failure=int8_failure,
            overwrite=overwrite,
            policy_uses_world_model=policy_uses_world_model,
        )


def _export_bundle(
    networks: RampNetworks,
    out_dir: str | Path,
    *,
    joints: JointStats,
    camera_names: Sequence[str],
    tokenizer: Tokenizer,
    provenance: Mapping[str, Any],
    name: str,
    backends: Sequence[str] | None,
    calibration: Sequence[Any] | None,
    n_calibration: int,
    evaluation: Sequence[Any] | None,
    n_eval: int,
    action_rate_hz: float,
    seed: int,
    int8_min_cosine: float,
    int8_max_err_frac_range: float,
    int8_failure: Literal["raise", "drop"],
    overwrite: bool,
    policy_uses_world_model: bool,
) -> Path:
    cfg = networks.cfg
    names = tuple(joints.names)
    if len(names) != cfg.n_joints:
        raise ValueError(f"{len(names)} joint names for a network with {cfg.n_joints} joints")
    if len(camera_names) != cfg.n_cameras:
        raise ValueError(f"{len(camera_names)} cameras for a network with {cfg.n_cameras}")
    if tokenizer.vocab_size != cfg.vocab_size or tokenizer.max_length != cfg.max_tokens:
        raise ValueError("the tokenizer's vocab_size/max_length differ from the network's")
    skipped: dict[str, str] = {}
    if backends is None:
        wanted = []
        for b in ALL_BACKENDS:
            reason = _buildable(b)
            if reason is None:
                wanted.append(b)
            else:
                skipped[b] = reason
                log.warning("bundle %s: not building %s: %s", name, b, reason)
    else:
        wanted = list(dict.fromkeys(backends))
        for b in wanted:
            reason = _buildable(b)
            if reason is not None:
                raise ExportError(f"cannot build backend {b}: {reason}")
    if "torch-eager" not in wanted:
        wanted.insert(0, "torch-eager")  # the reference every other backend is checked against
    norm = joints.normalization
    image_shape = (cfg.image_height, cfg.image_width, 3)
    networks = networks.eval()
    graphs = networks.graphs()
    examples = networks.example_inputs()
    obs_kwargs = {"camera_names": camera_names, "image_shape": image_shape, "joints": joints,
                  "tokenizer": tokenizer}
    calibration_note = "logged observations"
    if calibration is None:
        calibration = synthetic_observations(n_calibration, seed=seed + 1, **obs_kwargs)
        calibration_note = f"synthetic probe-like observations, seed {seed + 1}"
    if evaluation is None:
        evaluation = synthetic_observations(n_eval, seed=seed + 2, **obs_kwargs)
    probe = synthetic_observations(1, seed=seed + 3, instructions=(PROBE_INSTRUCTION,),
                                   **obs_kwargs)[0]
    # The probe holds the arm at mid-range, at rest: a pose every robot of this kind can take.
    probe = dataclasses.replace(probe, joint_position=norm.position_mean.copy(),
                                joint_velocity=norm.velocity_mean.copy())

    art: dict[str, dict[str, str]] = {}
    exporters: set[str] = set()
    with BundleWriter(out_dir, overwrite=overwrite) as writer, \
            tempfile.TemporaryDirectory(prefix="ramp-export-") as scratch_dir:
        scratch = Path(scratch_dir)
        torch.save(networks.state_dict(), writer.file("torch/weights.pt"))
        art["torch-eager"] = {g: "torch/weights.pt" for g in graphs}
        need_pt2 = {"torch-export", "tensorrt-fp16", "onnx-fp32", "onnx-int8"} & set(wanted)
        programs: dict[str, torch.export.ExportedProgram] = {}
        if need_pt2:
            for g, module in graphs.items():
                try:
                    with _quiet():
                        programs[g] = torch.export.export(module, examples[g])
                except Exception as err:
                    raise ExportError(f"torch.export failed on {g}: {err}") from err
        if {"torch-export", "tensorrt-fp16"} & set(wanted):
            for g, ep in programs.items():
                torch.export.save(ep, writer.file(f"torch/{g}.pt2"))
            pt2 = {g: f"torch/{g}.pt2" for g in graphs}
            for b in ("torch-export", "tensorrt-fp16"):
                if b in wanted:
                    art[b] = pt2
        if {"onnx-fp32", "onnx-int8"} & set(wanted):
            fp32_dir = scratch / "fp32"
            fp32_dir.mkdir()
            for g in graphs:
                try:
                    exporters.add(_export_onnx(graphs[g], programs[g], examples[g], g,
                                               fp32_dir / f"{g}.onnx"))
                except Exception as err:
                    raise ExportError(f"ONNX export failed on {g}: {err}") from err
            if "onnx-fp32" in wanted:
                for g in graphs:
                    writer.file(f"onnx/fp32/{g}.onnx").write_bytes(
                        (fp32_dir / f"{g}.onnx").read_bytes())
                art["onnx-fp32"] = {g: f"onnx/fp32/{g}.onnx" for g in graphs}
            if "onnx-int8" in wanted:
                feeds = _graph_feeds(networks, calibration, camera_names, norm)
                for g in graphs:
                    try:
                        _quantize_int8(fp32_dir / f"{g}.onnx", writer.file(f"onnx/int8/{g}.onnx"),
                                       feeds[g], scratch)
                    except Exception as err:
                        raise ExportError(f"INT8 quantization failed on {g}: {err}") from err
                art["onnx-int8"] = {g: f"onnx/int8/{g}.onnx" for g in graphs}

        manifest = _manifest(
            name=name, cfg_dict=cfg.to_dict(), joints=joints, camera_names=camera_names,
            image_shape=image_shape, chunk_size=cfg.chunk_size, action_rate_hz=action_rate_hz,
            tokenizer=tokenizer, art=art, provenance=provenance, skipped=skipped,
            exporter="+".join(sorted(exporters)) or None,
            calibration_note=f"{len(calibration)} {calibration_note}, MinMax",
            policy_uses_world_model=policy_uses_world_model,
        )
        # Phase 1: the probe's input only, so the staged bundle loads and engines can open it.
        probe_arrays = {
            "images": np.stack([probe.images[c] for c in camera_names]),
            "joint_position": probe.joint_position.astype(np.float32),
            "joint_velocity": probe.joint_velocity.astype(np.float32),
            "tokens": probe.tokens.astype(np.int64),
        }
        np.savez(writer.file(PROBE_NAME), **probe_arrays)
        staged = writer.write_manifest(manifest)

        # Phase 2: every backend's output on the probe (TensorRT is built on the device).
        from ramp_edge.engines import open_engine

        for b in wanted:
            if b.startswith("tensorrt"):
                continue
            with open_engine(staged, b, _ONE_THREAD, verify=False) as engine:
                for mode in MODES:
                    pred = engine.predict(probe, mode)
                    probe_arrays[f"out/{b}/{mode}/actions"] = pred.actions
                    if pred.value is not None:
                        probe_arrays[f"out/{b}/{mode}/value"] = np.float32(pred.value)
        accuracy = accuracy_report(
            staged, [b for b in wanted if b != "torch-eager" and not b.startswith("tensorrt")],
            evaluation, options=_ONE_THREAD)
        if "onnx-int8" in accuracy:
            problem = _int8_problem(accuracy["onnx-int8"], int8_min_cosine,
                                    int8_max_err_frac_range)
            if problem is not None:
                if int8_failure == "raise":
                    raise ExportError(f"onnx-int8 is not accurate enough: {problem}")
                log.warning("bundle %s: leaving onnx-int8 out: %s", name, problem)
                skipped["onnx-int8"] = f"accuracy check failed: {problem}"
                manifest["backends"].pop("onnx-int8")
                for key in [k for k in probe_arrays if k.startswith("out/onnx-int8/")]:
                    del probe_arrays[key]
                for g in graphs:
                    writer.file(f"onnx/int8/{g}.onnx").unlink()
                writer.file("onnx/int8").rmdir()
        manifest["accuracy"] = accuracy
        manifest["skipped_backends"] = skipped
        manifest["probe"]["tolerance"] = {
            b: DEFAULT_TOLERANCES[b] for b in manifest["backends"]
        }
        np.savez(writer.file(PROBE_NAME), **probe_arrays)
        writer.write_manifest(manifest)
        return writer.commit()


def _int8_problem(acc: Mapping[str, Any], min_cos: float, max_frac: float) -> str | None:
    if acc["actions_cosine_min"] < min_cos:
        return f"action cosine similarity {acc['actions_cosine_min']:.4f} < {min_cos}"
    frac = acc.get("actions_max_abs_err_frac_range")
    if frac is not None and not frac < max_frac:
        return f"largest action error {100 * frac:.2f}% of joint range >= {100 * max_frac:g}%"
    return None


def _manifest(*, name: str, cfg_dict: dict[str, Any], joints: JointStats,
              camera_names: Sequence[str], image_shape: tuple[int, int, int], chunk_size: int,
              action_rate_hz: float, tokenizer: Tokenizer, art: Mapping[str, Mapping[str, str]],
              provenance: Mapping[str, Any], skipped: Mapping[str, str],
              exporter: str | None, calibration_note: str,
              policy_uses_world_model: bool = True) -> dict[str, Any]:
    h, w, _ = image_shape
    n = len(joints.names)
    backends: dict[str, Any] = {}
    for b in ALL_BACKENDS:
        if b in art:
            entry = {"precision": _PRECISION[b], "artifacts": dict(art[b])}
            if b == "tensorrt-fp16":
                entry["notes"] = ("compiled on the device from the exported programs with "
                                  "torch-tensorrt (FP16 autocast); not verified at export")
            backends[b] = entry
    joints_entry: dict[str, Any] = {"names": list(joints.names)}
    if joints.position_min is not None and joints.position_max is not None:
        joints_entry["position_min"] = [float(x) for x in joints.position_min]
        joints_entry["position_max"] = [float(x) for x in joints.position_max]
    return {
        "name": name,
        "model": {"family": "ramp", "config": cfg_dict,
                  "policy_uses_world_model": bool(policy_uses_world_model)},
        "io": {
            "cameras": [{"name": c, "height": h, "width": w, "channels": 3}
                        for c in camera_names],
            "inputs": [{"name": f"image_{c}", "shape": [h, w, 3], "dtype": "uint8"}
                       for c in camera_names] + [
                {"name": "joint_position", "shape": [n], "dtype": "float32"},
                {"name": "joint_velocity", "shape": [n], "dtype": "float32"},
                {"name": "tokens", "shape": [tokenizer.max_length], "dtype": "int64"},
            ],
            "outputs": [
                {"name": "actions", "shape": [chunk_size, n], "dtype": "float32"},
                {"name": "value", "shape": [], "dtype": "float32"},
            ],
            "chunk_size": chunk_size,
            "action_rate_hz": action_rate_hz,
            "actions": "absolute joint targets, in joints.names order and each joint's unit",
            "tokenizer": tokenizer.spec(),
        },
        "joints": joints_entry,
        "normalization": joints.normalization.to_dict(),
        "backends": backends,
        "probe": {"artifact": PROBE_NAME, "indicator": 1.0, "instruction": PROBE_INSTRUCTION,
                  "tolerance": {}},
        "provenance": {
            **provenance,
            "code_version": code_version(),
            "versions": _versions(),
            "onnx_exporter": exporter,
            "int8_calibration": calibration_note if "onnx-int8" in art else None,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "skipped_backends": dict(skipped),
    }
