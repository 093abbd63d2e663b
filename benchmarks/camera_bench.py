"""OpenCV vs PyAV for the USB camera backend: decode time per frame and CPU share at 30 fps.

    .venv/bin/python benchmarks/camera_bench.py [--seconds 4] [--size 640x480] [--json]

A clip of 90 textured, moving frames is generated here. Each case takes frames at --fps (paced
to absolute deadlines) for --seconds and times, per frame, the work from "buffer in hand" to an
RGB uint8 array (median and 95th percentile, ms); CPU share is process CPU time over wall time
(100% = one core), idle pacing included. The two libraries run side by side on the same data:

- ``mjpg``: the JPEG buffers a camera sends in MJPG mode, decoded the way each V4L2 reader
  does: OpenCV's V4L2 backend (libjpeg-turbo ``imdecode``, then BGR->RGB) against PyAV's
  ``v4l2`` input (FFmpeg's mjpeg decoder, then swscale to rgb24).
- ``yuyv``: raw YUYV 4:2:2 buffers to RGB: ``cv2.cvtColor`` against PyAV's swscale.
- ``file``: the clip as MJPEG in Matroska, read by each library's own file reader
  (``cv2.VideoCapture`` with CAP_FFMPEG against ``av.open(...).decode``), looped.
- ``backend``: the project's camera (``file://...?loop=1``, OpenCV) end to end: its capture
  thread's CPU share and the delay from a frame's release to ``latest()`` seeing it (polled
  every 0.5 ms; the poller's CPU is included).

Human output goes to stderr, ``--json`` prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import fractions
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np

from ramp_edge.cameras import open_camera

N_FRAMES = 90


def make_frames(width: int, height: int) -> list[np.ndarray]:
    """RGB frames with texture (JPEG of a flat image would be unrealistically cheap)."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 40, (height, width, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(N_FRAMES):
        img = np.empty((height, width, 3), np.uint8)
        img[..., 0] = (xx + 4 * i) % 256
        img[..., 1] = (yy * 2 + i) % 256
        img[..., 2] = ((xx + yy) // 4) % 256
        x0 = (8 * i) % (width - 80)
        img[100:180, x0:x0 + 80] = (250, 250, 40)
        frames.append(img + noise)
    return frames


def write_clip(path: Path, frames: list[np.ndarray], fps: int) -> None:
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("mjpeg", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuvj422p"
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def paced(step: Callable[[int], object], fps: float, seconds: float) -> dict[str, float]:
    """Run ``step(i)`` at ``fps`` for ``seconds``; per-call ms (median, p95) and CPU share."""
    n = int(fps * seconds)
    times_ms = []
    step(0)  # warm-up (first decoder allocation) outside the figures
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for i in range(n):
        due = wall0 + i / fps
        if (wait := due - time.perf_counter()) > 0:
            time.sleep(wait)
        t = time.perf_counter()
        step(i)
        times_ms.append((time.perf_counter() - t) * 1000)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    times_ms.sort()
    return {"frames": n, "median_ms": statistics.median(times_ms),
            "p95_ms": times_ms[int(0.95 * (n - 1))], "cpu_pct": 100 * cpu / wall}


def case_mjpg(frames: list[np.ndarray]) -> dict[str, Callable[[int], object]]:
    jpegs = [cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR),
                          [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes() for f in frames]
    codec = av.CodecContext.create("mjpeg", "r")

    def opencv(i: int) -> np.ndarray:
        buf = np.frombuffer(jpegs[i % N_FRAMES], np.uint8)
        return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    def pyav(i: int) -> np.ndarray:
        (frame,) = codec.decode(av.Packet(jpegs[i % N_FRAMES]))
        return frame.to_ndarray(format="rgb24")

    return {"opencv": opencv, "pyav": pyav}


def case_yuyv(frames: list[np.ndarray]) -> dict[str, Callable[[int], object]]:
    yuyv = [av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuyv422")
            .to_ndarray() for f in frames]  # H x W x 2, as a YUYV buffer lies in memory

    def opencv(i: int) -> np.ndarray:
        return cv2.cvtColor(yuyv[i % N_FRAMES], cv2.COLOR_YUV2RGB_YUYV)

    def pyav(i: int) -> np.ndarray:
        frame = av.VideoFrame.from_ndarray(yuyv[i % N_FRAMES], format="yuyv422")
        return frame.to_ndarray(format="rgb24")

    return {"opencv": opencv, "pyav": pyav}


def case_file(clip: Path) -> dict[str, Callable[[int], object]]:
    state: dict[str, object] = {}

    def opencv(_i: int) -> np.ndarray:
        cap = state.get("cap")
        if cap is None:
            cap = state["cap"] = cv2.VideoCapture(str(clip), cv2.CAP_FFMPEG)
        ok, bgr = cap.read()
        if not ok:  # end of the clip: loop
            cap.release()
            cap = state["cap"] = cv2.VideoCapture(str(clip), cv2.CAP_FFMPEG)
            ok, bgr = cap.read()
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def pyav(_i: int) -> np.ndarray:
        it = state.get("it")
        frame = next(it, None) if it is not None else None
        if frame is None:
            container = av.open(str(clip))
            state["it"] = it = container.decode(video=0)
            frame = next(it)
        return frame.to_ndarray(format="rgb24")

    return {"opencv": opencv, "pyav": pyav}


def bench_backend(clip: Path, fps: float, seconds: float) -> dict[str, float]:
    delays_ms = []
    with open_camera("bench", f"file://{clip}?fps={fps}&loop=1") as cam:
        while cam.latest() is None:
            time.sleep(0.01)
        last_t = cam.latest()[1]
        wall0, cpu0 = time.perf_counter(), time.process_time()
        while time.perf_counter() - wall0 < seconds:
            time.sleep(0.0005)
            got = cam.latest()
            if got[1] != last_t:
                last_t = got[1]
                delays_ms.append((time.monotonic() - got[1]) * 1000)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        stats = {"dropped": cam.dropped, "errors": cam.errors}
    delays_ms.sort()
    n = len(delays_ms)
    return {"frames": n, "median_ms": statistics.median(delays_ms),
            "p95_ms": delays_ms[int(0.95 * (n - 1))], "cpu_pct": 100 * cpu / wall, **stats}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    frames = make_frames(width, height)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mkv"
        write_clip(clip, frames, round(args.fps))
        cases = {"mjpg": case_mjpg(frames), "yuyv": case_yuyv(frames), "file": case_file(clip)}
        for case, libs in cases.items():
            for lib, step in libs.items():
                rows.append({"case": case, "library": lib,
                             **paced(step, args.fps, args.seconds)})
        rows.append({"case": "backend", "library": "opencv (V4l2Camera, file://)",
                     **bench_backend(clip, args.fps, args.seconds)})
    machine = (f"{os.cpu_count()} cores {platform.machine()}, Python "
               f"{platform.python_version()}, OpenCV {cv2.__version__}, PyAV {av.__version__}")
    print(f"{machine}; {width}x{height} at {args.fps:g} fps for {args.seconds:g} s per case",
          file=sys.stderr)
    print(f"{'case':8} {'library':30} {'median ms':>10} {'p95 ms':>8} {'CPU %':>6}",
          file=sys.stderr)
    for r in rows:
        print(f"{r['case']:8} {r['library']:30} {r['median_ms']:10.2f} {r['p95_ms']:8.2f} "
              f"{r['cpu_pct']:6.1f}", file=sys.stderr)
    if args.json:
        print(json.dumps({"machine": machine, "size": args.size, "fps": args.fps,
                          "seconds": args.seconds, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
