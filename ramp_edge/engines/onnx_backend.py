"""ONNX Runtime backends: fp32 and static INT8 (QDQ) graphs, on the CPU by default.

``onnxruntime`` is optional (the ``onnx`` extra): it is imported when an engine opens, and
:meth:`OnnxEngine.unavailable_reason` says so where it is missing. Sessions run with all graph
optimisations; with one intra-op thread ONNX Runtime computes on the calling (inference) thread,
so it spins no worker threads that the control thread would compete with.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import numpy as np

from ramp_edge.bundle import BundleError
from ramp_edge.engines.base import Engine, EngineOptions, first_line

if TYPE_CHECKING:
    from ramp_edge.bundle import Bundle

__all__ = ["OnnxEngine", "OnnxFp32Engine", "OnnxInt8Engine"]


def _onnxruntime() -> Any:
    return importlib.import_module("onnxruntime")


class OnnxEngine(Engine):
    """One ``onnxruntime.InferenceSession`` per graph."""

    def __init__(self, bundle: Bundle, options: EngineOptions | None = None) -> None:
        super().__init__(bundle, options)
        from models.networks import GRAPH_INPUTS, GRAPH_OUTPUTS

        ort = _onnxruntime()
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.inter_op_num_threads = 1
        if self.options.threads:
            so.intra_op_num_threads = self.options.threads
        # Idle pool threads must not spin on cores the control thread needs.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._providers = list(self.options.providers or ("CPUExecutionProvider",))
        self._sessions: dict[str, Any] = {}
        self._names: dict[str, tuple[list[str], list[str]]] = {}
        for graph, rel in self.entry.artifacts.items():
            path = bundle.artifact_path(rel)
            try:
                sess = ort.InferenceSession(str(path), so, providers=self._providers)
            except Exception as err:
                raise BundleError(f"bundle {bundle.path}: ONNX Runtime cannot load {rel}: "
                                  f"{first_line(err)}") from err
            ins = [i.name for i in sess.get_inputs()]
            outs = [o.name for o in sess.get_outputs()]
            if tuple(ins) != GRAPH_INPUTS[graph] or tuple(outs) != GRAPH_OUTPUTS[graph]:
                raise BundleError(f"bundle {bundle.path}: {rel} has inputs {ins} and outputs "
                                  f"{outs}, expected {list(GRAPH_INPUTS[graph])} and "
                                  f"{list(GRAPH_OUTPUTS[graph])}")
            self._sessions[graph] = sess
            self._names[graph] = (ins, outs)
        self._ort_version = ort.__version__

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            _onnxruntime()
        except Exception as err:
            return f"onnxruntime is not importable ({first_line(err)}); install the 'onnx' extra"
        return None

    def _run(self, graph: str, inputs: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        ins, outs = self._names[graph]
        return tuple(self._sessions[graph].run(outs, dict(zip(ins, inputs, strict=True))))

    def describe(self) -> str:
        threads = self.options.threads or "default"
        return (f"{self.backend} (onnxruntime {self._ort_version}, {self.entry.precision}, "
                f"{'+'.join(self._providers)}, {threads} threads)")

    def _close(self) -> None:
        self._sessions.clear()


class OnnxFp32Engine(OnnxEngine):
    """The fp32 ONNX graphs."""

    backend = "onnx-fp32"


class OnnxInt8Engine(OnnxEngine):
    """The statically quantized INT8 graphs (QDQ format, calibrated at export)."""

    backend = "onnx-int8"
