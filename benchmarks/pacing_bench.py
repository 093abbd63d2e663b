"""Control-loop lateness: the project's Pacer (absolute deadlines + busy-wait tail) side by side
with a plain ``time.sleep(period)`` loop, at 100 Hz and 500 Hz, with and without an inference
load (the reference bundle's engine called back to back in another thread of the same process,
as the controller's inference thread does) competing for the GIL and the cores.

    .venv/bin/python benchmarks/pacing_bench.py --seconds 60 [--json]

Lateness of a step = its start time minus its intended start on the fixed grid
``t0 + k * period``; for the sleep loop the grid is the same, so its drift shows as lateness.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ramp_edge.pacing import LatenessStats, Pacer


def _work(step_s: float = 0.0002) -> None:
    """Stand-in for a control step: a little numpy work and a short spin (~0.2 ms)."""
    a = np.arange(7, dtype=np.float64)
    end = time.perf_counter() + step_s
    while time.perf_counter() < end:
        a = np.clip(a * 1.0001, -3, 3)


def _jitter(starts: list[float], period: float) -> dict:
    """How far each step's interval strays from the period (ms): what a servo receiving the
    setpoints sees, independent of accumulated drift."""
    intervals = np.diff(np.asarray(starts))
    err = np.abs(intervals - period) * 1000
    return {"interval_err_p50_ms": float(np.percentile(err, 50)),
            "interval_err_p99_ms": float(np.percentile(err, 99)),
            "interval_err_max_ms": float(err.max())}


def run_pacer(rate_hz: float, seconds: float) -> dict:
    pacer = Pacer(rate_hz)
    starts: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pacer.wait()
        starts.append(time.monotonic())
        _work()
    return {**pacer.stats.summary(), **_jitter(starts, 1.0 / rate_hz)}


def run_sleep_loop(rate_hz: float, seconds: float) -> dict:
    """``time.sleep(period)`` after each step, as several popular robot stacks pace
    themselves. Lateness is against the same fixed grid, so drift accumulates into it."""
    period = 1.0 / rate_hz
    stats = LatenessStats()
    starts: list[float] = []
    t0 = time.monotonic()
    k = 0
    while time.monotonic() - t0 < seconds:
        now = time.monotonic()
        starts.append(now)
        late = now - (t0 + k * period)
        stats.add(late * 1000)
        if late >= period:
            stats.overruns += 1
        _work()
        time.sleep(period)
        k += 1
    return {**stats.summary(), **_jitter(starts, period)}


class InferenceLoad:
    """A thread calling the real engine back to back on the reference bundle (world model +
    policy, the backend ``select_engine`` picks), as the controller's inference thread does."""

    def __init__(self, bundle_dir: Path) -> None:
        from ramp_edge.bundle import load_bundle
        from ramp_edge.engines import select_engine

        bundle = load_bundle(bundle_dir)
        self.engine, self.message = select_engine(bundle)
        self._obs = bundle.probe_observation()
        self._stop = threading.Event()
        self.passes = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.engine.predict(self._obs, "standard")
            self.passes += 1

    def __enter__(self) -> InferenceLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def reference_bundle(path: Path) -> Path:
    if not path.exists():
        from models.reference import build_reference_bundle
        from ramp_edge.config import load_config

        config = load_config()
        build_reference_bundle(path, config.joint_names,
                               joint_limits=[(j.position_min, j.position_max)
                                             for j in config.joints],
                               camera_names=tuple(c.name for c in config.cameras))
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--bundle", type=Path, default=Path("benchmarks/out/pacing_bundle"),
                    help="bundle for the inference load (the reference bundle is built there "
                         "if missing)")
    args = ap.parse_args()
    bundle_dir = reference_bundle(args.bundle)
    gc.freeze()
    sys.setswitchinterval(0.0005)
    results = []
    for load in (False, True):
        for rate in (100.0, 500.0):
            for name, fn in (("pacer", run_pacer), ("time.sleep", run_sleep_loop)):
                if load:
                    with InferenceLoad(bundle_dir) as inf:
                        summary = fn(rate, args.seconds)
                    summary["inference_passes_per_s"] = inf.passes / args.seconds
                else:
                    summary = fn(rate, args.seconds)
                summary.update(loop=name, rate_hz=rate, inference=load,
                               achieved_hz=summary["steps"] / args.seconds)
                results.append(summary)
                if not args.json:
                    print(f"{name:<10} {rate:>5.0f} Hz inference={'on ' if load else 'off'} "
                          f"achieved {summary['achieved_hz']:7.1f} Hz  late p50 "
                          f"{summary['p50_ms']:8.3f} p99 {summary['p99_ms']:8.3f} max "
                          f"{summary['max_ms']:8.3f} ms  overruns {summary['overruns']:>5}  "
                          f"interval error p99 {summary['interval_err_p99_ms']:6.3f} max "
                          f"{summary['interval_err_max_ms']:6.3f} ms", flush=True)
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
