"""Episode export speed: MCAP and LeRobotDataset v3.0 (video encoding dominates).

Records synthetic episodes through the real store (100 Hz steps, two cameras at ~33 Hz, a
takeover), then times ``export_mcap`` per episode and ``export_lerobot`` over all of them.

    .venv/bin/python benchmarks/export_bench.py --episodes 2 --seconds 20 --size 320x240
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import episode_samples

from ramp_edge.episodes import EpisodeStore
from ramp_edge.episodes.export_lerobot import export_lerobot, pick_codec
from ramp_edge.episodes.export_mcap import export_mcap


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0, help="episode length (s)")
    ap.add_argument("--size", default="320x240", help="camera frame WxH")
    ap.add_argument("--fps", type=int, default=50)
    ap.add_argument("--vcodec", default=None)
    args = ap.parse_args()
    w, h = (int(x) for x in args.size.split("x"))
    steps = int(args.seconds * 100)
    original = episode_samples.sample_image

    def frame(i: int, cam: int) -> object:  # square samples, cropped to W x H
        return original(i, cam, size=max(w, h))[:h, :w]

    episode_samples.sample_image = frame
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = EpisodeStore(root)
        t = time.perf_counter()
        entries = [episode_samples.record_sample_episode(store, steps=steps, seed=i,
                                                         takeover=(steps // 3, steps // 2))
                   for i in range(args.episodes)]
        rec_s = time.perf_counter() - t
        paths = [store.path_of(e.id) for e in entries]
        size_mb = sum(p.stat().st_size for p in paths) / 1e6
        print(f"recorded {args.episodes} x {args.seconds:.0f} s episodes ({steps} steps, "
              f"2 cameras {w}x{h}) in {rec_s:.1f} s, {size_mb:.1f} MB")
        t = time.perf_counter()
        mcap_mb = 0.0
        for i, p in enumerate(paths):
            mcap_mb += export_mcap(p, root / f"{i}.mcap").bytes / 1e6
        m_s = time.perf_counter() - t
        print(f"mcap: {m_s:.2f} s total, {m_s / args.episodes:.2f} s per episode "
              f"({args.seconds * args.episodes / m_s:.0f}x real time), {mcap_mb:.1f} MB")
        codec = pick_codec(args.vcodec)
        t = time.perf_counter()
        rep = export_lerobot(paths, root / "ds", fps=args.fps, vcodec=codec)
        l_s = time.perf_counter() - t
        ds_mb = sum(f.stat().st_size for f in (root / "ds").rglob("*") if f.is_file()) / 1e6
        print(f"lerobot ({codec}, {args.fps} fps): {l_s:.2f} s total, "
              f"{l_s / args.episodes:.2f} s per episode ({args.seconds * args.episodes / l_s:.1f}x "
              f"real time), {rep.frames} frames, {ds_mb:.1f} MB")
        store.close()


if __name__ == "__main__":
    main()
