"""Inference engines for model bundles, picked by backend name from a registry that is data.

Backends are imported lazily, only when one is opened or asked whether it can run here, so a
robot without ONNX Runtime or TensorRT never imports them.

>>> bundle = load_bundle(path)
>>> engine, why = select_engine(bundle)            # best backend this machine can run
>>> log.info(why)                                   # which ran, and why others were skipped
>>> chunk = engine.predict(obs)                     # ChunkPrediction(actions, value, latency_ms)
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from ramp_edge.bundle import Bundle, BundleError
from ramp_edge.engines.base import (
    ChunkPrediction,
    Engine,
    EngineClosedError,
    EngineError,
    EngineOptions,
    EngineUnavailableError,
    Mode,
    Observation,
    ObservationError,
)

__all__ = [
    "BACKENDS",
    "PREFERENCE",
    "ChunkPrediction",
    "Engine",
    "EngineClosedError",
    "EngineError",
    "EngineOptions",
    "EngineUnavailableError",
    "Mode",
    "Observation",
    "ObservationError",
    "backend_status",
    "engine_class",
    "open_engine",
    "select_engine",
]

# backend name (as in a bundle's manifest) -> "module:class"
BACKENDS: dict[str, str] = {
    "torch-eager": "ramp_edge.engines.torch_backend:TorchEagerEngine",
    "torch-export": "ramp_edge.engines.torch_backend:TorchExportEngine",
    "onnx-fp32": "ramp_edge.engines.onnx_backend:OnnxFp32Engine",
    "onnx-int8": "ramp_edge.engines.onnx_backend:OnnxInt8Engine",
    "tensorrt-fp16": "ramp_edge.engines.tensorrt_backend:TensorRTFp16Engine",
    "tensorrt-int8": "ramp_edge.engines.tensorrt_backend:TensorRTInt8Engine",
}

# Tried in this order when the caller prefers nothing: GPU first, then the fast CPU paths, then
# the plain torch ones that run wherever the controller does.
PREFERENCE: tuple[str, ...] = (
    "tensorrt-int8",
    "tensorrt-fp16",
    "onnx-int8",
    "onnx-fp32",
    "torch-export",
    "torch-eager",
)


def engine_class(backend: str) -> type[Engine]:
    """The engine class of ``backend``. Raises EngineUnavailableError for an unknown name or
    a backend module that cannot be imported."""
    spec = BACKENDS.get(backend)
    if spec is None:
        raise EngineUnavailableError(f"unknown backend {backend!r} (known: "
                                     f"{', '.join(BACKENDS)})")
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except Exception as err:  # a broken optional dependency can raise anything on import
        raise EngineUnavailableError(f"backend {backend} cannot be imported: "
                                     f"{type(err).__name__}: {err}") from err


def backend_status(backend: str) -> str | None:
    """None if ``backend`` can run on this machine, else the reason it cannot (one line)."""
    try:
        return engine_class(backend).unavailable_reason()
    except EngineUnavailableError as err:
        return str(err)


def open_engine(bundle: Bundle, backend: str, options: EngineOptions | None = None, *,
                verify: bool = True) -> Engine:
    """Open ``bundle`` with ``backend`` and, unless ``verify`` is false, check it against the
    bundle's probe (:meth:`Bundle.verify`).

    Raises EngineUnavailableError (backend unknown or not runnable here), BundleError (the
    bundle lacks the backend, or the probe does not match: the engine is closed, never
    returned), EngineError (loading failed).
    """
    cls = engine_class(backend)
    reason = cls.unavailable_reason()
    if reason is not None:
        raise EngineUnavailableError(f"backend {backend} is unavailable: {reason}")
    bundle.backend(backend)  # BundleError if the bundle does not ship it
    engine = cls(bundle, options)
    if verify:
        try:
            bundle.verify(engine)
        except BaseException:
            engine.close()
            raise
    return engine


def select_engine(
    bundle: Bundle,
    preferred: str | Sequence[str] | None = None,
    options: EngineOptions | None = None,
    *,
    fallback: bool = True,
    verify: bool = True,
) -> tuple[Engine, str]:
    """Pick and open the best backend for ``bundle`` on this machine.

    Candidates: ``preferred`` (a name or names, tried first, in order), then, if ``fallback``,
    the bundle's other backends in :data:`PREFERENCE` order. The first candidate the bundle
    ships, this machine can run, and that loads and passes the probe wins. Returns the engine and
    one line saying which backend runs and why each one tried before it was skipped.

    Raises EngineUnavailableError if no candidate works (the message lists every reason).
    """
    wanted = [preferred] if isinstance(preferred, str) else list(preferred or ())
    candidates = list(dict.fromkeys(wanted))
    if fallback or not candidates:
        ranked = [b for b in PREFERENCE if b in bundle.backends]
        ranked += [b for b in bundle.backends if b not in ranked]
        candidates += [b for b in ranked if b not in candidates]
    skipped: list[str] = []
    for backend in candidates:
        if backend not in bundle.backends:
            skipped.append(f"{backend}: not in this bundle")
            continue
        try:
            engine = open_engine(bundle, backend, options, verify=verify)
        except (EngineError, BundleError) as err:
            skipped.append(f"{backend}: {_strip_bundle(str(err), bundle)}")
            continue
        why = "preferred" if backend in wanted else "best available"
        checked = "probe verified" if verify else "probe NOT verified"
        message = f"engine {engine.describe()} for bundle {bundle.name!r} ({why}, {checked})"
        if skipped:
            message += "; skipped " + "; ".join(skipped)
        return engine, message
    raise EngineUnavailableError(f"no engine can run bundle {bundle.name!r} ({bundle.path}): "
                                 + "; ".join(skipped))


def _strip_bundle(message: str, bundle: Bundle) -> str:
    prefix = f"bundle {bundle.path}: "
    return message[len(prefix):] if message.startswith(prefix) else message
