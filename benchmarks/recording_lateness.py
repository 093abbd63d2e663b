"""The control loop's lateness with and without episode recording, side by side.

    .venv/bin/python benchmarks/recording_lateness.py [--pairs 3] [--seconds 30] [--json]

Runs ``ramp-edge run`` on the emulated MuJoCo robot (two cameras, the reference bundle,
``--backend onnx-int8``) ``--pairs`` times with ``--record`` and as often with ``--no-record``,
alternating, so load from other processes hits both alike. Each run is its own process and home
(the bundle is built once). Reports per run the loop rate, lateness p50/p99/max, overruns and
chunk latency, and the median over runs of each; the figure to compare is the ratio of the
medians of lateness p99.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXE = Path(sys.executable).parent / "ramp-edge"


def _one(home: Path, seconds: float, record: bool) -> dict:
    env = {**os.environ, "RAMP_EDGE_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env.pop("NOTIFY_SOCKET", None)
    cmd = [str(EXE), "run", "--duration", str(seconds), "--backend", "onnx-int8", "--json",
           "--record" if record else "--no-record"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env,
                         timeout=seconds + 180, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise SystemExit(f"ramp-edge run failed ({out.returncode}): {out.stderr[-2000:]}")
    summary = json.loads(out.stdout)
    ep = summary["per_episode"][0]
    row = {k: summary.get(k) for k in ("loop_rate_hz", "lateness_p99_ms", "overruns",
                                        "chunk_latency_p50_ms", "chunk_latency_p99_ms")}
    row["lateness_p50_ms"] = ep.get("lateness_p50_ms")
    row["lateness_max_ms"] = ep.get("lateness_max_ms")
    row["record"] = record
    if record:
        rec = ep.get("recording") or {}
        row["steps_dropped"] = rec.get("steps_dropped")
        row["steps_written"] = rec.get("steps_written")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from models.reference import build_reference_bundle
    from ramp_edge.config import load_config

    base = Path(tempfile.mkdtemp(prefix="ramp-lateness-"))
    try:
        config = load_config()
        bundle = base / "bundle"
        build_reference_bundle(bundle, config.joint_names,
                               joint_limits=[(j.position_min, j.position_max)
                                             for j in config.joints],
                               camera_names=tuple(c.name for c in config.cameras))
        runs = []
        for i in range(args.pairs):
            for record in ((True, False) if i % 2 == 0 else (False, True)):
                home = base / f"home{len(runs)}"
                (home / "bundles").mkdir(parents=True)
                os.symlink(bundle, home / "bundles" / "reference")
                t0 = time.monotonic()
                row = _one(home, args.seconds, record)
                row["wall_s"] = round(time.monotonic() - t0, 1)
                runs.append(row)
                print(("record   " if record else "no record"), row, file=sys.stderr)
                shutil.rmtree(home, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    def med(record: bool, key: str) -> float | None:
        vals = [r[key] for r in runs if r["record"] is record and r.get(key) is not None]
        return round(statistics.median(vals), 3) if vals else None

    keys = ("loop_rate_hz", "lateness_p50_ms", "lateness_p99_ms", "lateness_max_ms",
            "overruns", "chunk_latency_p50_ms", "chunk_latency_p99_ms")
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}",
        "seconds_per_run": args.seconds, "pairs": args.pairs, "runs": runs,
        "median_record": {k: med(True, k) for k in keys},
        "median_no_record": {k: med(False, k) for k in keys},
        "dropped_steps_total": sum(r.get("steps_dropped") or 0 for r in runs),
    }
    a, b = result["median_record"]["lateness_p99_ms"], result["median_no_record"][
        "lateness_p99_ms"]
    result["lateness_p99_ratio_record_vs_not"] = round(a / b, 3) if a and b else None
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k in keys:
            print(f"{k:24s} record {result['median_record'][k]!s:>8}   "
                  f"no record {result['median_no_record'][k]!s:>8}")
        print(f"lateness p99 ratio (record / no record): "
              f"{result['lateness_p99_ratio_record_vs_not']}; dropped steps: "
              f"{result['dropped_steps_total']}")


if __name__ == "__main__":
    main()
