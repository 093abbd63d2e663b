"""TensorRT backends through torch-tensorrt: FP16 and INT8 engines built on the device.

TensorRT engines are specific to one GPU and TensorRT version, so a bundle does not ship them:
it ships the portable ``torch.export`` programs (``torch/*.pt2``) and this backend compiles them
with ``torch_tensorrt.dynamo.compile`` when the engine opens; ``EngineOptions.cache_dir`` turns
on torch-tensorrt's engine cache so a restart reuses what was built.

Precision follows the torch-tensorrt API of the 2.13+ releases, where networks are strongly
typed and ``enabled_precisions`` is ignored:

* FP16: ``enable_autocast=True, autocast_low_precision_type=torch.float16`` (rule-based autocast
  keeps numerically sensitive layers in fp32). Older releases without ``enable_autocast`` get
  ``enabled_precisions={torch.float16}``, their documented way.
* INT8: explicit quantization. NVIDIA ModelOpt (``modelopt.torch.quantization``) inserts
  calibrated quantize/dequantize nodes into the eager networks (``INT8_DEFAULT_CFG``), the
  graphs are exported under ``export_torch_mode()`` and compiled; the Q/DQ nodes set the
  precision. Calibration uses the bundle's ``calibration.npz`` observations.

``torch_tensorrt`` is imported lazily inside a ``try`` that catches every Exception: where
TensorRT is missing or broken its import raises ImportError, OSError (libnvinfer not found) or
RuntimeError (CUDA), and the backend then reports itself unavailable with that reason.

Not exercised in CI (no TensorRT there); written against the documented API.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from ramp_edge.bundle import BundleError
from ramp_edge.engines.base import Engine, EngineError, EngineOptions, first_line

if TYPE_CHECKING:
    from ramp_edge.bundle import Bundle

__all__ = ["CALIBRATION_NAME", "TensorRTEngine", "TensorRTFp16Engine", "TensorRTInt8Engine"]

CALIBRATION_NAME = "calibration.npz"


@functools.cache
def _torch_tensorrt() -> tuple[Any, str | None]:
    """(module, None) where torch-tensorrt can build engines here, else (None, reason)."""
    try:
        trt = importlib.import_module("torch_tensorrt")
    except Exception as err:  # not only ImportError: OSError, RuntimeError from CUDA/TensorRT
        return None, f"torch_tensorrt is not importable ({first_line(err)})"
    if not torch.cuda.is_available():
        return None, "no CUDA GPU is visible to torch (torch.cuda.is_available() is False)"
    return trt, None


@functools.cache
def _modelopt_quantization() -> tuple[Any, str | None]:
    try:
        return importlib.import_module("modelopt.torch.quantization"), None
    except Exception as err:
        return None, f"nvidia-modelopt is not importable ({first_line(err)}), needed for INT8"


def _user_input_specs(ep: torch.export.ExportedProgram) -> list[tuple[tuple[int, ...],
                                                                      torch.dtype]]:
    """Shapes and dtypes of an exported program's user inputs, from its graph's metadata."""
    user = set(ep.graph_signature.user_inputs)
    specs = []
    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name in user:
            val = node.meta["val"]
            specs.append((tuple(int(d) for d in val.shape), val.dtype))
    return specs


class TensorRTEngine(Engine):
    """Compiles each graph's exported program with torch-tensorrt and runs it on the GPU."""

    precision: ClassVar[str] = ""
    _device = torch.device("cuda:0")

    def __init__(self, bundle: Bundle, options: EngineOptions | None = None) -> None:
        super().__init__(bundle, options)
        trt, reason = _torch_tensorrt()
        if trt is None:
            raise EngineError(f"backend {self.backend} is unavailable: {reason}")
        self._trt = trt
        self._modules: dict[str, Any] = {}
        programs = self._programs()
        for graph, ep in programs.items():
            inputs = [torch.zeros(shape, dtype=dtype, device=self._device)
                      for shape, dtype in _user_input_specs(ep)]
            try:
                self._modules[graph] = trt.dynamo.compile(ep, **self._compile_kwargs(inputs))
            except Exception as err:
                raise EngineError(f"torch-tensorrt could not compile {graph} for "
                                  f"{self.backend}: {first_line(err)}") from err

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return _torch_tensorrt()[1]

    def _programs(self) -> dict[str, torch.export.ExportedProgram]:
        out = {}
        for graph, rel in self.entry.artifacts.items():
            try:
                out[graph] = torch.export.load(self.bundle.artifact_path(rel))
            except Exception as err:
                raise BundleError(f"bundle {self.bundle.path}: cannot load exported program "
                                  f"{rel}: {first_line(err)}") from err
        return out

    def _compile_kwargs(self, inputs: list[torch.Tensor]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "arg_inputs": inputs,
            "device": self._device,
            "min_block_size": 1,  # small graphs: convert everything, no torch fallback islands
        }
        if self.options.cache_dir:
            kwargs.update(cache_built_engines=True, reuse_cached_engines=True,
                          engine_cache_dir=self.options.cache_dir)
        return kwargs

    def _run(self, graph: str, inputs: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        with torch.inference_mode():
            out = self._modules[graph](*(torch.from_numpy(x).to(self._device) for x in inputs))
        if isinstance(out, torch.Tensor):
            out = (out,)
        return tuple(t.float().cpu().numpy() for t in out)

    def describe(self) -> str:
        version = getattr(self._trt, "__version__", "?")
        return f"{self.backend} (torch-tensorrt {version}, {self.precision}, {self._device})"

    def _close(self) -> None:
        self._modules.clear()


class TensorRTFp16Engine(TensorRTEngine):
    """FP16 TensorRT engines built from the bundle's exported programs."""

    backend = "tensorrt-fp16"
    precision = "fp16"

    def _compile_kwargs(self, inputs: list[torch.Tensor]) -> dict[str, Any]:
        kwargs = super()._compile_kwargs(inputs)
        params = inspect.signature(self._trt.dynamo.compile).parameters
        if "enable_autocast" in params:
            # Strongly typed TensorRT: precision comes from the graph; autocast puts it there.
            kwargs.update(enable_autocast=True, autocast_low_precision_type=torch.float16)
            if "use_explicit_typing" in params:
                kwargs["use_explicit_typing"] = True
        else:  # releases before rule-based autocast
            kwargs["enabled_precisions"] = {torch.float16}
        return kwargs


class TensorRTInt8Engine(TensorRTEngine):
    """INT8 TensorRT engines: ModelOpt PTQ (Q/DQ nodes) on the eager networks, then compiled."""

    backend = "tensorrt-int8"
    precision = "int8"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return _torch_tensorrt()[1] or _modelopt_quantization()[1]

    def _programs(self) -> dict[str, torch.export.ExportedProgram]:
        from models.networks import RampConfig, RampNetworks

        mtq, reason = _modelopt_quantization()
        if mtq is None:
            raise EngineError(f"backend {self.backend} is unavailable: {reason}")
        from modelopt.torch.quantization.utils import export_torch_mode

        bundle = self.bundle
        rels = set(self.entry.artifacts.values())
        if len(rels) != 1:
            raise BundleError(f"bundle {bundle.path}: {self.backend} needs one state dict")
        net = RampNetworks(RampConfig.from_dict(dict(bundle.manifest.model_config)))
        state = torch.load(bundle.artifact_path(rels.pop()), map_location="cpu",
                           weights_only=True)
        net.load_state_dict(state, strict=True)
        net = net.eval().to(self._device)
        calib = self._calibration_inputs(net)
        graphs = net.graphs()
        out = {}
        for name, module in graphs.items():
            def forward_loop(mod: torch.nn.Module, name: str = name) -> None:
                with torch.no_grad():
                    for args in calib[name]:
                        mod(*args)

            mtq.quantize(module, mtq.INT8_DEFAULT_CFG, forward_loop=forward_loop)
            with torch.no_grad(), export_torch_mode():
                out[name] = torch.export.export(module, calib[name][0])
        return out

    def _calibration_inputs(self, net: Any) -> dict[str, list[tuple[torch.Tensor, ...]]]:
        """Per graph, the inputs the fp32 networks see on the bundle's calibration set."""
        rel = CALIBRATION_NAME
        if rel not in self.bundle.manifest.artifacts:
            raise BundleError(f"bundle {self.bundle.path}: {self.backend} needs {rel} "
                              f"(calibration observations), which the bundle lacks")
        norm = self.bundle.normalization
        dev = self._device
        with np.load(self.bundle.artifact_path(rel), allow_pickle=False) as npz:
            images, pos, vel, tokens = (npz[k] for k in ("images", "joint_position",
                                                          "joint_velocity", "tokens"))
        calib: dict[str, list[tuple[torch.Tensor, ...]]] = {g: [] for g in
                                                             ("encoder", "world_model", "policy")}
        t = functools.partial(torch.as_tensor, device=dev)
        with torch.no_grad():
            for i in range(len(images)):
                enc_in = (t(images[i]), t((pos[i:i + 1] - norm.position_mean) /
                                          norm.position_std),
                          t((vel[i:i + 1] - norm.velocity_mean) / norm.velocity_std),
                          t(tokens[i:i + 1]))
                o, lang = net.encoder(*enc_in)
                future, _ = net.world_model(o, lang)
                calib["encoder"].append(enc_in)
                calib["world_model"].append((o, lang))
                for m in (0.0, 1.0):  # both modes: with and without world-model tokens
                    calib["policy"].append((o, lang, future, t([[m]]), t([[1.0]])))
        return calib
