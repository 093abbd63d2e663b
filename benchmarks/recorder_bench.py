"""Recording cost: 100 Hz control steps (7 joints) + 2 cameras 96x96 at 30 Hz fed to the
episode recorder from their own threads for N seconds, into a real episode file.

    .venv/bin/python benchmarks/recorder_bench.py --seconds 60 [--dir DIR] [--json]

Reports the recorder thread's CPU share (``time.thread_time`` in the recorder thread, as a
share of one core), bytes per minute of the sealed file, commit duration p50/p99/max, the
largest gap between commits, dropped steps/frames, ``on_step`` cost on the feeding thread,
and the time to seal. ``--dir`` puts the store on a given disk (default: a temporary
directory); commit durations include the WAL fsync (synchronous=FULL).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ramp_edge.controller import StateSnapshot, StepRecord
from ramp_edge.episodes import EpisodeMeta, EpisodeStore, RecorderConfig


def _frames(cam: int, n: int = 30) -> list[np.ndarray]:
    """Camera-like frames: a moving gradient with a little sensor noise (compresses like a
    real low-resolution image, unlike a flat colour)."""
    rng = np.random.default_rng(cam)
    y, x = np.mgrid[0:96, 0:96]
    out = []
    for k in range(n):
        img = np.stack([(x * 2 + k * 3) % 256, (y * 2 + k) % 256,
                        np.full_like(x, 60 + 80 * cam)], axis=-1).astype(np.int16)
        img += rng.integers(-6, 7, img.shape, dtype=np.int16)
        a = np.clip(img, 0, 255).astype(np.uint8)
        a.flags.writeable = False
        out.append(a)
    return out


def run(seconds: float, root: Path, synchronous: str) -> dict:
    store = EpisodeStore(root, config=RecorderConfig(synchronous=synchronous))
    store.recover()
    rec = store.start_episode(EpisodeMeta(instruction="bench"), joint_count=7)
    stop = threading.Event()
    on_step_us: list[float] = []
    lateness_ms: list[float] = []
    fed = [0]

    def control() -> None:
        rng = np.random.default_rng(0)
        t0 = time.monotonic()
        i = 0
        while not stop.is_set():
            deadline = t0 + i * 0.01
            time.sleep(max(0.0, deadline - time.monotonic()))
            now = time.monotonic()
            lateness_ms.append((now - deadline) * 1000)
            pos = rng.standard_normal(7).astype(np.float32)
            r = StepRecord(deadline, now, pos * 0.9, StateSnapshot(now, pos, pos * 0.1),
                           "policy", i // 50, 0.5, 0)
            a = time.perf_counter()
            rec.on_step(r)
            on_step_us.append((time.perf_counter() - a) * 1e6)
            i += 1
        fed[0] = i

    def camera(cam: int) -> None:
        frames = _frames(cam)
        t0 = time.monotonic()
        k = 0
        while not stop.is_set():
            time.sleep(max(0.0, t0 + k / 30.0 - time.monotonic()))
            rec.on_image(f"cam{cam}", frames[k % len(frames)], time.monotonic())
            k += 1

    threads = [threading.Thread(target=control, name="control")] + [
        threading.Thread(target=camera, args=(c,), name=f"cam{c}") for c in (0, 1)]
    wall0 = time.monotonic()
    for th in threads:
        th.start()
    time.sleep(seconds)
    stop.set()
    for th in threads:
        th.join()
    wall = time.monotonic() - wall0
    t_seal = time.monotonic()
    entry = rec.finish("success")
    seal_s = time.monotonic() - t_seal
    st = rec.stats
    cm = np.asarray(st.commit_ms)
    store.close()
    return {
        "seconds": round(wall, 2),
        "synchronous": synchronous,
        "steps_fed": fed[0],
        "steps_written": st.written,
        "dropped_steps": st.dropped,
        "images_written": st.images_written,
        "dropped_images": st.images_dropped,
        "recorder_cpu_share": round(st.cpu_s / wall, 4),
        "bytes": entry.bytes,
        "bytes_per_min": int(entry.bytes / wall * 60),
        "commits": st.commits,
        "commit_ms_p50": round(float(np.percentile(cm, 50)), 2),
        "commit_ms_p99": round(float(np.percentile(cm, 99)), 2),
        "commit_ms_max": round(float(cm.max()), 2),
        "commit_gap_ms_max": round(st.max_commit_gap_ms(), 1),
        "on_step_us_p50": round(float(np.percentile(on_step_us, 50)), 2),
        "on_step_us_p99": round(float(np.percentile(on_step_us, 99)), 2),
        "feeder_lateness_ms_p99": round(float(np.percentile(lateness_ms, 99)), 2),
        "seal_s": round(seal_s, 3),
        "sha256": entry.sha256,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--dir", type=Path, default=None, help="store root (default: a temp dir)")
    ap.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.dir is None:
        with tempfile.TemporaryDirectory() as d:
            res = run(a.seconds, Path(d), a.synchronous)
    else:
        res = run(a.seconds, a.dir, a.synchronous)
    if a.json:
        print(json.dumps(res))
        return
    print(f"recorder, {res['seconds']} s, 100 Hz steps + 2 x 96x96 @ 30 Hz, "
          f"synchronous={res['synchronous']}")
    print(f"  steps fed/written/dropped   {res['steps_fed']}/{res['steps_written']}/"
          f"{res['dropped_steps']}   images written/dropped {res['images_written']}/"
          f"{res['dropped_images']}")
    print(f"  recorder CPU                {res['recorder_cpu_share'] * 100:.1f}% of one core")
    print(f"  bytes per minute            {res['bytes_per_min'] / 1e6:.2f} MB "
          f"({res['bytes'] / 1e6:.2f} MB sealed)")
    print(f"  commit ms p50/p99/max       {res['commit_ms_p50']}/{res['commit_ms_p99']}/"
          f"{res['commit_ms_max']}   ({res['commits']} commits, largest gap "
          f"{res['commit_gap_ms_max']} ms)")
    print(f"  on_step us p50/p99          {res['on_step_us_p50']}/{res['on_step_us_p99']}   "
          f"feeder lateness p99 {res['feeder_lateness_ms_p99']} ms")
    print(f"  seal                        {res['seal_s']} s")


if __name__ == "__main__":
    main()
