"""Chunk latency of a bundle's engines, measured side by side.

One call of ``Engine.predict`` is one chunk: encoder + world model + policy in standard mode,
encoder + policy in efficient mode, input normalisation and action de-normalisation included.
Backends are interleaved call by call (every backend, every mode, then the next observation),
so load from other processes hits all of them alike. Per call the wall time and the calling
thread's CPU time are recorded: with one intra-op thread every backend computes on the calling
thread, so CPU time is the work done, unaffected by time spent descheduled.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np

from ramp_edge.bundle import MODES, Bundle
from ramp_edge.engines import Engine, EngineOptions, backend_status, open_engine

__all__ = ["BACKEND_ORDER", "LatencyStats", "interleaved_latency", "open_runnable"]

BACKEND_ORDER: tuple[str, ...] = ("torch-eager", "torch-export", "onnx-fp32", "onnx-int8",
                                  "tensorrt-fp16", "tensorrt-int8")


@dataclass(frozen=True)
class LatencyStats:
    """Per-call figures of one backend in one mode, in ms: ``wall`` and ``cpu`` (the calling
    thread's CPU time), one entry per timed call."""

    wall: tuple[float, ...]
    cpu: tuple[float, ...]

    def summary(self) -> dict[str, float]:
        """``p50_ms``, ``p99_ms`` (wall) and ``cpu_p50_ms``."""
        w, c = np.asarray(self.wall), np.asarray(self.cpu)
        return {"p50_ms": float(np.percentile(w, 50)), "p99_ms": float(np.percentile(w, 99)),
                "cpu_p50_ms": float(np.percentile(c, 50))}


def open_runnable(bundle: Bundle, stack: ExitStack, options: EngineOptions | None = None,
                  backends: Sequence[str] | None = None) -> tuple[dict[str, Engine],
                                                                  dict[str, str]]:
    """Open, probe-verified, every backend of ``backends`` (default: all the bundle ships, in
    :data:`BACKEND_ORDER`) that the bundle ships and this machine can run; each engine is
    closed by ``stack``. Returns (engines by backend, reason per backend left out).
    Raises BundleError when an engine fails its probe."""
    wanted = list(backends) if backends is not None else \
        [b for b in BACKEND_ORDER if b in bundle.backends] + \
        [b for b in bundle.backends if b not in BACKEND_ORDER]
    engines: dict[str, Engine] = {}
    skipped: dict[str, str] = {}
    for backend in wanted:
        if backend not in bundle.backends:
            skipped[backend] = "not in the bundle"
            continue
        reason = backend_status(backend)
        if reason is not None:
            skipped[backend] = reason
            continue
        engines[backend] = stack.enter_context(open_engine(bundle, backend, options))
    return engines, skipped


def interleaved_latency(engines: Mapping[str, Engine], observations: Sequence[Any], *,
                        runs: int, warmup: int,
                        modes: Sequence[str] = MODES) -> dict[tuple[str, str], LatencyStats]:
    """Time ``runs`` calls per backend and mode after ``warmup`` untimed ones, cycling through
    ``observations``, backends interleaved call by call. Returns stats per (backend, mode)."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, not {runs} and {warmup}")
    wall: dict[tuple[str, str], list[float]] = {(b, m): [] for b in engines for m in modes}
    cpu: dict[tuple[str, str], list[float]] = {(b, m): [] for b in engines for m in modes}
    for i in range(warmup + runs):
        obs = observations[i % len(observations)]
        for mode in modes:
            for backend, eng in engines.items():
                c0 = time.thread_time()
                pred = eng.predict(obs, mode)
                c1 = time.thread_time()
                if i >= warmup:
                    wall[backend, mode].append(pred.latency_ms)
                    cpu[backend, mode].append((c1 - c0) * 1000)
    return {k: LatencyStats(tuple(wall[k]), tuple(cpu[k])) for k in wall}
