"""Engine latency and accuracy, every backend side by side in one run.

    .venv/bin/python benchmarks/engine_bench.py [--bundle DIR] [--runs 300] [--threads 1] [--json]

Without ``--bundle`` it builds the reference bundle (7 joints with the emulated arm's limits,
seed 0) under ``benchmarks/out/``. For each backend this machine can run (torch eager fp32,
torch exported program, ONNX Runtime fp32 and INT8, TensorRT FP16 where present) it measures
one chunk (``Engine.predict``: encoder + world model + policy, input normalisation and action
de-normalisation included) in standard mode and in efficient mode (world model skipped):

* latency p50/p99 (wall clock) over ``--runs`` calls after ``--warmup`` calls, backends
  interleaved call by call so that load from other processes hits all of them alike;
* CPU time p50 of the calling thread (with one intra-op thread every backend computes on the
  calling thread, so this is the work done, unaffected by time spent descheduled);
* against torch eager fp32 on ``--eval`` held-out observations, both modes: the largest action
  error as % of each joint's range and the smallest cosine similarity of normalised actions.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.engine_timing import BACKEND_ORDER, interleaved_latency, open_runnable  # noqa: E402
from models.export import JointStats, synthetic_observations  # noqa: E402
from models.language import Tokenizer  # noqa: E402
from models.reference import build_reference_bundle  # noqa: E402
from ramp_edge.bundle import load_bundle  # noqa: E402
from ramp_edge.engines import PREFERENCE, EngineOptions  # noqa: E402

JOINTS = ("shoulder_pan", "shoulder_lift", "elbow", "wrist_flex", "wrist_roll", "wrist_pitch",
          "gripper")
LIMITS = [(-2.8, 2.8)] * 6 + [(0.0, 0.04)]
MODES = ("standard", "efficient")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, help="bundle to measure (default: build the "
                                                "reference bundle under benchmarks/out/)")
    ap.add_argument("--runs", type=int, default=300, help="timed calls per backend and mode")
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--eval", type=int, default=32, help="held-out observations for accuracy")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per engine")
    ap.add_argument("--json", action="store_true", help="machine output on stdout")
    args = ap.parse_args()

    if args.bundle is None:
        t0 = time.perf_counter()
        path = build_reference_bundle(ROOT / "benchmarks" / "out" / "engine_bench_bundle",
                                      JOINTS, seed=0, joint_limits=LIMITS, overwrite=True)
        print(f"built the reference bundle in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    else:
        path = args.bundle
    bundle = load_bundle(path)
    options = EngineOptions(threads=args.threads)
    norm = bundle.normalization
    m = bundle.manifest
    span = (m.joint_max - m.joint_min) if m.joint_min is not None else 4 * norm.action_std

    stack = ExitStack()
    # Every backend the bundle ships and this machine runs, probe-verified on opening.
    engines, skipped = open_runnable(bundle, stack, options, BACKEND_ORDER)
    for backend, reason in skipped.items():
        print(f"skipped {backend}: {reason}", file=sys.stderr)

    tok = Tokenizer.from_spec(dict(m.tokenizer))
    obs_kwargs = {"camera_names": bundle.camera_names, "image_shape": m.image_shape,
                  "joints": JointStats(bundle.joint_names, norm, m.joint_min, m.joint_max),
                  "tokenizer": tok}
    inputs = synthetic_observations(8, seed=4321, **obs_kwargs)
    held_out = synthetic_observations(args.eval, seed=9876, **obs_kwargs)

    with stack:  # the engines close when measured, or on an error
        # Accuracy against torch eager fp32.
        accuracy = {}
        ref = engines["torch-eager"]
        expected = [(o, mode, ref.predict(o, mode)) for o in held_out for mode in MODES]
        for backend, eng in engines.items():
            err, cos_min = 0.0, 1.0
            for o, mode, want in expected:
                got = eng.predict(o, mode)
                err = max(err, float(np.max(np.abs(got.actions - want.actions) / span)))
                a = (got.actions - norm.action_mean) / norm.action_std
                b = (want.actions - norm.action_mean) / norm.action_std
                cos_min = min(cos_min, float(np.sum(a * b) / np.linalg.norm(a) / np.linalg.norm(b)))
            accuracy[backend] = {"max_err_pct_range": 100 * err, "cosine_min": cos_min}

        # Latency, interleaved call by call (models.engine_timing).
        stats = interleaved_latency(engines, inputs, runs=args.runs, warmup=args.warmup,
                                    modes=MODES)

    rows = []
    summary = {key: st.summary() for key, st in stats.items()}
    base = {mode: summary["torch-eager", mode] for mode in MODES}
    for backend in engines:
        row = {"backend": backend, "precision": bundle.backend(backend).precision,
               **accuracy[backend]}
        for mode in MODES:
            s = summary[backend, mode]
            row[mode] = {
                **s,
                "speedup_vs_torch_eager": base[mode]["p50_ms"] / s["p50_ms"],
                "cpu_speedup_vs_torch_eager": base[mode]["cpu_p50_ms"] / s["cpu_p50_ms"],
            }
        rows.append(row)
    result = {
        "bundle": str(path), "bundle_sha256": bundle.sha256, "runs": args.runs,
        "warmup": args.warmup, "threads": args.threads, "eval_observations": args.eval,
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "skipped": skipped, "rows": rows, "preference": list(PREFERENCE),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(table(result))
    return 0


def table(result: dict) -> str:
    lines = [
        "| backend | standard p50 / p99 ms | CPU p50 ms | speed-up (wall / CPU) | efficient "
        "p50 / p99 ms | CPU p50 ms | max action error, % of range | min cosine |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        s, e = r["standard"], r["efficient"]
        lines.append(
            f"| {r['backend']} | {s['p50_ms']:.2f} / {s['p99_ms']:.2f} | {s['cpu_p50_ms']:.2f} "
            f"| {s['speedup_vs_torch_eager']:.2f}x / {s['cpu_speedup_vs_torch_eager']:.2f}x "
            f"| {e['p50_ms']:.2f} / {e['p99_ms']:.2f} | {e['cpu_p50_ms']:.2f} "
            f"| {r['max_err_pct_range']:.3g} | {r['cosine_min']:.5f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
