"""The USB/V4L2 camera backend, run without a camera: video files written here (PyAV) are served
at their frame rate through the same capture code; a real /dev/video device is used when present.

Budget: about 10 s in all; every wait has a generous deadline (2 shared cores)."""

from __future__ import annotations

import fractions
import glob
import itertools
import os
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2", reason="the camera extra (opencv-python-headless) is not installed")
av = pytest.importorskip("av", reason="PyAV (dev extra) writes the test videos")

from ramp_edge.cameras import CameraError, open_camera  # noqa: E402
from ramp_edge.cameras.v4l2_camera import parse_camera_url, to_monotonic  # noqa: E402

FPS = 30
W, H = 64, 48


def write_video(path: Path, frame_numbers: list[int]) -> None:
    """An MJPEG Matroska file: frame k has timestamp k/FPS and red level 8*k (k < 32); the file
    appears whole (os.replace), as a device node does."""
    tmp = path.with_name(path.name + ".part")
    with av.open(str(tmp), "w", format="matroska") as out:
        stream = out.add_stream("mjpeg", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuvj422p"
        for k in frame_numbers:
            img = np.zeros((H, W, 3), np.uint8)
            img[..., 0] = 8 * k
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = k, fractions.Fraction(1, FPS)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    os.replace(tmp, path)


def wait_for(predicate, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def frame_number(image: np.ndarray) -> int:
    return round(float(image[..., 0].mean()) / 8)


def test_when_a_file_plays_expect_readonly_rgb_frames_at_its_rate_with_rising_times(tmp_path):
    video = tmp_path / "v.mkv"
    write_video(video, list(range(30)))
    with open_camera("front", f"file://{video}?loop=1") as cam:
        assert wait_for(lambda: cam.frames >= 1)
        t0, n0 = time.monotonic(), cam.frames
        seen: list[tuple[np.ndarray, float]] = []
        while time.monotonic() - t0 < 1.0:
            got = cam.latest()
            if got is not None and (not seen or got[1] != seen[-1][1]):
                seen.append(got)
            time.sleep(0.002)
        served = cam.frames - n0
        elapsed = time.monotonic() - t0
    image, _ = seen[-1]
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    assert not image.flags.writeable
    times = [t for _, t in seen]
    assert all(b > a for a, b in itertools.pairwise(times))
    # Served at the file's rate, not as fast as it decodes (the upper bound is the point).
    assert served <= FPS * elapsed + 3
    assert served >= FPS * elapsed * 0.3
    # Frame numbers advance with the times they were served at (looping back at 30).
    numbers = [frame_number(img) for img, _ in seen]
    assert any(b == (a + 1) % 30 for a, b in itertools.pairwise(numbers))
    assert cam.dropped == 0 and cam.errors == 0


def test_when_the_consumer_is_slow_expect_the_newest_frame_and_no_drops(tmp_path):
    video = tmp_path / "v.mkv"
    write_video(video, list(range(30)))
    with open_camera("front", f"file://{video}?loop=1") as cam:
        assert wait_for(lambda: cam.frames >= 3)
        time.sleep(0.5)  # a consumer that reads far slower than the camera
        got = cam.latest()
        assert got is not None
        now = time.monotonic()
        # Latest only: the frame handed over is the newest one, not the next in a queue.
        assert now - got[1] < 0.25
        t_calls = time.perf_counter()
        for _ in range(1000):
            cam.latest()
        assert time.perf_counter() - t_calls < 0.5  # never waits on the capture thread
        # A slow reader loses nothing the source sent: drops count source gaps only.
        assert cam.dropped == 0


def test_when_timestamps_skip_expect_the_missing_frames_counted_as_dropped(tmp_path):
    video = tmp_path / "gaps.mkv"
    write_video(video, [0, 1, 2, 3, 6, 7, 8, 12, 13])  # 2 + 3 frames missing
    with open_camera("front", f"file://{video}") as cam:
        assert wait_for(lambda: cam.frames == 9)
        time.sleep(0.1)
        assert cam.dropped == 5
        assert cam.frames == 9  # played once, no loop: the last frame stays
        assert frame_number(cam.latest()[0]) == 13


def test_when_the_file_vanishes_and_returns_expect_errors_then_frames_again(tmp_path):
    video = tmp_path / "v.mkv"
    write_video(video, list(range(6)))  # 0.2 s per pass, read again from the path each loop
    with open_camera("front", f"file://{video}?loop=1") as cam:
        assert wait_for(lambda: cam.frames >= 3)
        video.unlink()
        assert wait_for(lambda: cam.errors >= 2)
        stalled = cam.frames
        time.sleep(0.3)
        assert cam.frames == stalled  # nothing to read, and the caller is never held up
        assert cam.latest() is not None  # the last frame stays, growing older
        write_video(video, list(range(6)))
        assert wait_for(lambda: cam.frames >= stalled + 3, timeout_s=10.0)
        errors = cam.errors
        time.sleep(0.3)
        assert cam.errors == errors  # recovered: no new failures


def test_when_closed_expect_it_returns_promptly_and_only_once(tmp_path):
    video = tmp_path / "v.mkv"
    write_video(video, list(range(30)))
    cam = open_camera("front", f"file://{video}?fps=0.5&loop=1")  # 2 s between frames
    assert wait_for(lambda: cam.frames >= 1)
    t0 = time.monotonic()
    cam.close()
    assert time.monotonic() - t0 < 0.5
    assert not cam._thread.is_alive()
    cam.close()  # idempotent


def test_when_resize_is_asked_expect_that_image_size(tmp_path):
    video = tmp_path / "v.mkv"
    write_video(video, list(range(3)))
    with open_camera("front", f"file://{video}?resize=32x16") as cam:
        assert wait_for(lambda: cam.frames >= 1)
        assert cam.latest()[0].shape == (16, 32, 3)
    # The robot config's size (what the session passes) applies when the URL names none.
    with open_camera("front", f"file://{video}", size=(24, 12)) as cam:
        assert wait_for(lambda: cam.frames >= 1)
        assert cam.latest()[0].shape == (12, 24, 3)


@pytest.mark.parametrize(("query", "named"), [
    ("width=abc", "width"), ("fps=-30", "fps"), ("format=H264", "format"),
    ("resize=96", "resize"), ("exposure=3", "exposure"), ("height=0", "height"),
])
def test_when_a_url_parameter_is_bad_expect_a_camera_error_naming_it(query, named):
    with pytest.raises(CameraError, match=named) as info:
        open_camera("wrist", f"v4l2:///dev/video0?{query}")
    assert "camera wrist" in str(info.value)


def test_when_the_device_is_missing_or_not_a_camera_expect_a_camera_error(tmp_path):
    with pytest.raises(CameraError, match="no such device"):
        open_camera("wrist", "v4l2:///dev/v4l/by-id/usb-none-video-index0?format=MJPG")
    with pytest.raises(CameraError, match="not a V4L2 capture device"):
        open_camera("wrist", "v4l2:///dev/null")
    (tmp_path / "junk.mkv").write_bytes(b"not a video")
    with pytest.raises(CameraError, match="cannot open"):
        open_camera("wrist", f"file://{tmp_path}/junk.mkv")
    with pytest.raises(CameraError, match="loop must be 0 or 1"):
        open_camera("wrist", f"file://{tmp_path}/junk.mkv?loop=yes")


def test_when_opencv_is_missing_expect_a_camera_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "cv2", None)  # import cv2 -> ImportError
    with pytest.raises(CameraError, match=r"ramp-edge\[camera\]"):
        open_camera("wrist", "v4l2:///dev/video0")


def test_url_settings_parse_by_id_paths_and_formats():
    s = parse_camera_url("v4l2:///dev/v4l/by-id/usb-Cam_123-video-index0"
                         "?width=640&height=480&fps=30&format=mjpg")
    assert (s.kind, s.path, s.width, s.height, s.fps, s.pixel_format) == (
        "v4l2", "/dev/v4l/by-id/usb-Cam_123-video-index0", 640, 480, 30.0, "MJPG")
    assert parse_camera_url("file:///tmp/x.mp4?fps=30&loop=1").loop is True


def test_driver_timestamps_become_monotonic_seconds():
    mono, wall = 1000.0, 1_700_000_000.0
    assert to_monotonic(999.98, mono, wall) == 999.98  # CLOCK_MONOTONIC buffers (UVC)
    assert to_monotonic(wall - 0.02, mono, wall) == pytest.approx(999.98)  # wall-clock drivers
    assert to_monotonic(0.0, mono, wall) == mono  # no usable timestamp: the time of the read


def _capture_devices() -> list[str]:
    return sorted(glob.glob("/dev/video*"))


@pytest.mark.hardware
@pytest.mark.skipif(not _capture_devices(),
                    reason="no /dev/video device (no USB camera, no v4l2loopback on this machine)")
def test_a_real_v4l2_device_delivers_frames_with_monotonic_times():
    device = os.environ.get("RAMP_EDGE_TEST_CAMERA", _capture_devices()[0])
    with open_camera("usb", f"v4l2://{device}?width=640&height=480&fps=30") as cam:
        assert wait_for(lambda: cam.frames >= 10, timeout_s=10.0), f"errors: {cam.errors}"
        image, t = cam.latest()
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert 0 <= time.monotonic() - t < 1.0
