"""The control path's hot calls and its smoothness at chunk boundaries, for the built-in robot
(7 joints).

1. Time per call of ``SafetyFilter.filter`` and ``ActionScheduler.next_command`` (each with a
   preallocated ``out``), measured call by call with ``perf_counter_ns``: p50, p99, max, mean.
2. A simulated stream of noisy chunks: a smooth reference motion; whenever the scheduler asks,
   a chunk is computed from the observation at ``t_obs`` (the reference sampled at 50 Hz plus a
   per-chunk offset and per-action noise) and pushed after an inference latency. The same
   stream is replayed with each blend ("cosine", "linear", "none"); reported: the largest
   command step (max over joints) at chunk boundaries (the steps from a new chunk's first use to
   the end of its crossfade; with "none" the switch) and elsewhere, and how many steps the
   safety filter then clamped and how far (at most, after the first 2 s) the command it sent
   was from the scheduled one.

    .venv/bin/python benchmarks/control_path_bench.py [--seconds 60] [--control-hz 100] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from typing import Any

import numpy as np

from ramp_edge.chunks import ActionScheduler
from ramp_edge.config import load_config
from ramp_edge.safety import JointLimits, SafetyFilter


def _summary_us(samples_ns: list[int]) -> dict[str, float]:
    arr = np.array(samples_ns, dtype=np.float64) / 1000.0
    return {
        "p50_us": float(np.percentile(arr, 50)),
        "p99_us": float(np.percentile(arr, 99)),
        "max_us": float(arr.max()),
        "mean_us": float(arr.mean()),
        "calls": len(samples_ns),
    }


def time_calls(control_hz: float, calls: int) -> dict[str, dict[str, float]]:
    config = load_config()
    n = len(config.joints)
    period = 1.0 / control_hz
    limits = JointLimits.from_config(config)
    centre = (limits.lower + limits.upper) / 2
    span = (limits.upper - limits.lower) / 2
    out = np.empty(n)
    results: dict[str, dict[str, float]] = {}
    perf = time.perf_counter_ns

    # A feasible motion (nothing clamped) and one that clamps every step (bang-bang targets).
    t = np.arange(calls) * period
    smooth = centre + 0.2 * span * np.sin(0.5 * t)[:, None]
    bang = np.where((np.arange(calls) // 50) % 2 == 0, 10.0, -10.0)[:, None] * np.ones(n)
    for name, desired in (("filter_smooth", smooth), ("filter_clamping", bang)):
        filt = SafetyFilter(limits, period, startup_ramp_s=0.0)
        filt.reset(desired[0] if name == "filter_smooth" else centre)
        rows = list(desired)
        samples = [0] * calls
        gc.collect()
        for i in range(calls):
            d = rows[i]
            t0 = perf()
            filt.filter(d, out=out)
            samples[i] = perf() - t0
        results[name] = _summary_us(samples)

    # next_command: one chunk at a time, and always inside a crossfade of two.
    actions = np.linspace(0.0, 0.5, config.rates.chunk_size)[:, None] * np.ones(n)
    for name, blending in (("next_command_single", False), ("next_command_blending", True)):
        sched = ActionScheduler.from_config(config)
        samples = [0] * calls
        chunk_s = (config.rates.chunk_size - 1) / config.rates.policy_hz
        t_next = 0.0
        k = 0
        gc.collect()
        for i in range(calls):
            t_s = i * period
            if t_s >= t_next:  # new chunk: immediately (blending) or when the old one ends
                sched.push(k, actions, t_s)
                k += 1
                t_next = t_s + (0.3 if blending else chunk_s)
            t0 = perf()
            sched.next_command(t_s, out=out)
            samples[i] = perf() - t0
        results[name] = _summary_us(samples)
    return results


def reference(t: np.ndarray, n: int, centre: np.ndarray, span: np.ndarray) -> np.ndarray:
    """Smooth reference motion: two sines per joint within 15 % of each joint's half range,
    peak velocity and acceleration about half of the built-in robot's limits."""
    j = np.arange(n)
    f1, f2 = 0.1 + 0.02 * j, 0.25 + 0.03 * j
    tt = t[..., None]
    x = 0.1 * np.sin(2 * np.pi * f1 * tt) + 0.05 * np.sin(2 * np.pi * f2 * tt + j)
    return centre + span * x


def simulate_stream(seconds: float, control_hz: float, blend: str, seed: int,
                    offset_sd: float, noise_sd: float,
                    latency_s: tuple[float, float]) -> dict[str, Any]:
    config = load_config()
    n = len(config.joints)
    H, hz = config.rates.chunk_size, config.rates.policy_hz
    limits = JointLimits.from_config(config)
    centre = (limits.lower + limits.upper) / 2
    span = (limits.upper - limits.lower) / 2
    scale = span / span.max()  # noise in proportion to each joint's range (the gripper is small)
    rng = np.random.default_rng(seed)
    sched = ActionScheduler.from_config(config, blend=blend)
    period = 1.0 / control_hz
    # Reset at the first scheduled command, as if a startup ramp had just ended there: the
    # figures are about chunk boundaries, not the start.
    filt = SafetyFilter(limits, period, startup_ramp_s=0.0)
    started = False
    in_flight: tuple[float, int, np.ndarray, float] | None = None  # (ready at, id, actions, t0)
    chunk_id = 0
    prev_cmd: np.ndarray | None = None
    prev_newest: int | None = None
    boundary_max, inner_max, deviation_max = 0.0, 0.0, 0.0
    sent = np.empty(n)
    boundary_steps = 0
    out = np.empty(n)
    steps = int(seconds * control_hz)
    for i in range(steps):
        t = i * period
        if in_flight is None and sched.needs_chunk(t):
            t_obs = t
            ks = t_obs + np.arange(H) / hz
            actions = reference(ks, n, centre, span)
            actions += rng.normal(0.0, offset_sd, n) * scale  # the chunk's own bias
            actions += rng.normal(0.0, noise_sd, (H, n)) * scale
            np.clip(actions, limits.lower, limits.upper, out=actions)
            in_flight = (t_obs + rng.uniform(*latency_s), chunk_id, actions, t_obs)
            chunk_id += 1
        if in_flight is not None and t >= in_flight[0]:
            sched.push(in_flight[1], in_flight[2], in_flight[3])
            in_flight = None
        cmd = sched.next_command(t, out=out)
        if cmd is None:
            if started:
                filt.hold()
            prev_cmd = None
            continue
        if not started:
            filt.reset(cmd)
            started = True
        filt.filter(cmd, out=sent)
        if t >= 2.0:  # past the catch-up from rest at the first command
            deviation_max = max(deviation_max, float(np.abs(sent - cmd).max()))
        if prev_cmd is not None:
            step = float(np.abs(cmd - prev_cmd).max())
            at_boundary = sched.blend_from_id is not None or sched.chunk_id != prev_newest
            if at_boundary:
                boundary_steps += 1
                boundary_max = max(boundary_max, step)
            else:
                inner_max = max(inner_max, step)
        prev_cmd = cmd.copy()
        prev_newest = sched.chunk_id
    counts = filt.intervention_summary()
    return {
        "blend": blend,
        "chunks": sched.pushed,
        "boundary_steps": boundary_steps,
        "largest_boundary_step": boundary_max,
        "largest_other_step": inner_max,
        "largest_filter_deviation": deviation_max,
        "filter_clamped_steps": {k: counts[k] for k in ("position", "velocity", "acceleration")},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="simulated stream length")
    ap.add_argument("--control-hz", type=float, default=100.0)
    ap.add_argument("--calls", type=int, default=100_000, help="timed calls per case")
    ap.add_argument("--offset-sd", type=float, default=0.02,
                    help="per-chunk offset, rad (scaled down for small joints)")
    ap.add_argument("--noise-sd", type=float, default=0.0002, help="per-action noise, rad")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    timing = time_calls(args.control_hz, args.calls)
    stream = [
        simulate_stream(args.seconds, args.control_hz, blend, args.seed, args.offset_sd,
                        args.noise_sd, (0.04, 0.12))
        for blend in ("cosine", "linear", "none")
    ]
    report = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "control_hz": args.control_hz,
        "timing": timing,
        "stream": stream,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"Python {report['python']} {report['machine']}, control {args.control_hz:g} Hz, "
          f"7 joints, {args.calls} calls per case")
    print(f"{'call':<24} {'p50 us':>8} {'p99 us':>8} {'max us':>8} {'mean us':>8}")
    for name, r in timing.items():
        print(f"{name:<24} {r['p50_us']:>8.2f} {r['p99_us']:>8.2f} {r['max_us']:>8.1f} "
              f"{r['mean_us']:>8.2f}")
    print(f"\n{args.seconds:g} s stream, offset sd {args.offset_sd} rad, noise sd "
          f"{args.noise_sd} rad, latency 40-120 ms")
    print(f"{'blend':<8} {'chunks':>6} {'boundary steps':>14} {'max step @boundary':>19} "
          f"{'max step elsewhere':>19} {'clamps pos/vel/acc':>19} {'max deviation':>14}")
    for r in stream:
        c = r["filter_clamped_steps"]
        clamps = f"{c['position']}/{c['velocity']}/{c['acceleration']}"
        print(f"{r['blend']:<8} {r['chunks']:>6} {r['boundary_steps']:>14} "
              f"{r['largest_boundary_step']:>19.5f} {r['largest_other_step']:>19.5f} "
              f"{clamps:>19} {r['largest_filter_deviation']:>14.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
