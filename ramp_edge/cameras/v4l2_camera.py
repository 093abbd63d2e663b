"""USB/V4L2 cameras through OpenCV, and video files served at their frame rate through the same
capture code (tests and replays without a camera).

``v4l2:///dev/video0?width=640&height=480&fps=30&format=MJPG``: a V4L2 device by path, by-id
link (``/dev/v4l/by-id/...``) or by-path link; every query key is optional (the driver's
defaults apply). ``format`` is ``MJPG`` or ``YUYV``. ``file:///path/x.mkv?fps=30&loop=1``: a
video file released frame by frame at its own timestamps (``fps`` rescales them), read again
from the path at its end when ``loop=1``. Both take ``resize=WxH`` (area-averaged in the capture
thread, so the control path gets the bundle's image size).

OpenCV rather than PyAV (``benchmarks/camera_bench.py``): a 640x480 MJPG frame decodes as fast
or faster (libjpeg-turbo against FFmpeg's decoder), YUYV->RGB costs a sixth of swscale's, a
file reads faster at the same CPU, and OpenCV's V4L2 reader waits in ``select`` with a timeout
where FFmpeg's blocks in ``VIDIOC_DQBUF``, so a stalled camera cannot pin the capture thread.

Capture times: a V4L2 buffer's own timestamp (``CLOCK_MONOTONIC`` for UVC drivers, wall clock
for a few others, converted) when it is plausible, else the time of the read; a file frame's
time is the moment it is released. Dropped frames are counted from timestamp gaps longer than
1.5 frame periods. When the device vanishes (unplugged) or the file is gone, ``errors`` counts
each failure and the capture thread reopens the path with backoff (0.1 s doubling to 2 s);
frames resume when it returns. ``latest()`` never waits for any of it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import numpy as np

from ramp_edge.cameras.base import Camera, CameraError

FORMATS = ("MJPG", "YUYV")
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 2.0
# OpenCV's V4L2 reader waits this long (s) in select() for a frame; its default, 10 s, would
# hold a stalled camera's thread (and close()) that long. Read once per process, at the first
# V4L2 read; a value already in the environment wins.
SELECT_TIMEOUT_ENV = ("OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT", "1")
CLOCK_WINDOW_S = 5.0  # a driver timestamp this close to a clock's "now" is taken as that clock
_KEYS = {"v4l2": {"width", "height", "fps", "format", "resize"}, "file": {"fps", "loop", "resize"}}


@dataclass(frozen=True)
class CaptureSettings:
    """What a ``v4l2://`` or ``file://`` URL asks for; None leaves the source's own value."""

    kind: str  # "v4l2" or "file"
    path: str
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    pixel_format: str | None = None
    loop: bool = False
    resize: tuple[int, int] | None = None  # (width, height) of the delivered image


def parse_camera_url(url: str) -> CaptureSettings:
    """Settings from ``url``. Raises CameraError naming the bad part (scheme, key or value)."""
    parts = urlsplit(url)
    kind = parts.scheme
    if kind not in _KEYS:
        raise CameraError(f"{url!r}: scheme must be v4l2 or file")
    path = unquote(parts.netloc + parts.path)
    if not path.startswith("/"):
        raise CameraError(f"{url!r}: needs an absolute path, e.g. {kind}:///dev/video0")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - _KEYS[kind])
    if unknown:
        raise CameraError(f"{url!r}: unknown key(s) {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(_KEYS[kind]))})")
    kwargs: dict[str, Any] = {}
    for key in ("width", "height"):
        if key in query:
            kwargs[key] = _number(url, key, query[key], int)
    if "fps" in query:
        kwargs["fps"] = _number(url, "fps", query["fps"], float)
    if "format" in query:
        fmt = query["format"].upper()
        if fmt not in FORMATS:
            raise CameraError(f"{url!r}: format must be one of {', '.join(FORMATS)}, "
                              f"not {query['format']!r}")
        kwargs["pixel_format"] = fmt
    if "loop" in query:
        if query["loop"] not in ("0", "1"):
            raise CameraError(f"{url!r}: loop must be 0 or 1, not {query['loop']!r}")
        kwargs["loop"] = query["loop"] == "1"
    if "resize" in query:
        m = re.fullmatch(r"(\d+)x(\d+)", query["resize"])
        if not m or not int(m[1]) > 0 < int(m[2]):
            raise CameraError(f"{url!r}: resize must be WIDTHxHEIGHT, e.g. 96x96, "
                              f"not {query['resize']!r}")
        kwargs["resize"] = (int(m[1]), int(m[2]))
    return CaptureSettings(kind, path, **kwargs)


def _number(url: str, key: str, text: str, kind: type) -> Any:
    try:
        value = kind(text)
    except ValueError:
        value = 0
    if not value > 0:
        raise CameraError(f"{url!r}: {key} must be a positive number, not {text!r}")
    return value


def _import_cv2() -> ModuleType:
    os.environ.setdefault(*SELECT_TIMEOUT_ENV)
    try:
        import cv2
    except ImportError as err:
        raise CameraError("USB/V4L2 and file cameras need OpenCV: "
                          "pip install 'ramp-edge[camera]'") from err
    # Reopening a missing device every 2 s would otherwise print a warning each time; the
    # camera counts those failures itself.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    return cv2


def to_monotonic(t_source_s: float, now_monotonic_s: float, now_wall_s: float) -> float:
    """A driver timestamp as ``time.monotonic`` seconds: kept if it reads as the monotonic
    clock, shifted if it reads as the wall clock, else replaced by ``now_monotonic_s``."""
    if now_monotonic_s - CLOCK_WINDOW_S < t_source_s <= now_monotonic_s + 0.001:
        return t_source_s
    if now_wall_s - CLOCK_WINDOW_S < t_source_s <= now_wall_s + 0.001:
        return t_source_s - (now_wall_s - now_monotonic_s)
    return now_monotonic_s


class V4l2Camera(Camera):
    """A V4L2 device or a video file; see the module docstring for the URLs.

    Raises CameraError when the URL is invalid, OpenCV is missing, or the device/file cannot
    be opened at start (a missing path is a configuration error; vanishing later is not)."""

    def __init__(self, name: str, url: str, *, size: tuple[int, int] | None = None) -> None:
        """``size`` (width, height): the image size the robot config asks for; frames are
        resized to it unless the URL names its own ``resize``."""
        try:
            settings = parse_camera_url(url)
        except CameraError as err:
            raise CameraError(f"camera {name}: {err}") from None
        if settings.resize is None and size is not None:
            settings = dataclasses.replace(settings, resize=(int(size[0]), int(size[1])))
        cv2 = _import_cv2()
        super().__init__(name, url)
        self.settings = settings
        self._cv2 = cv2
        self._cap: Any = None
        self._retry_at = 0.0
        self._retry_s = RETRY_FIRST_S
        self._period_s = 0.0
        self._last_pts_s: float | None = None
        self._last_t = 0.0
        self._due0: tuple[float, float] | None = None  # (monotonic, pts) of a file's first frame
        self._scale = 1.0  # file seconds -> served seconds
        if not os.path.exists(settings.path):
            self._closed = True
            raise CameraError(f"camera {name}: no such device or file {settings.path}")
        try:
            self._open()
        except CameraError as err:
            self._closed = True
            raise CameraError(f"camera {name}: {err}") from None
        self.start()

    # -- opening -------------------------------------------------------------------------------
    def _open(self) -> None:
        s, cv2 = self.settings, self._cv2
        if s.kind == "file":
            cap = cv2.VideoCapture(s.path, cv2.CAP_FFMPEG)
        else:
            cap = cv2.VideoCapture(_device_index(s.path), cv2.CAP_V4L2)
        if not cap.isOpened():
            cap.release()
            what = "video file" if s.kind == "file" else "V4L2 device"
            raise CameraError(f"cannot open {s.path} as a {what}")
        if s.kind == "v4l2":
            # The format first: it decides which sizes and rates the driver offers.
            if s.pixel_format:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*s.pixel_format))
            if s.width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, s.width)
            if s.height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, s.height)
            if s.fps:
                cap.set(cv2.CAP_PROP_FPS, s.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 2)  # few queued buffers: less age, not fewer frames
        source_fps = cap.get(cv2.CAP_PROP_FPS)
        if s.kind == "file":
            self._scale = source_fps / s.fps if s.fps and source_fps > 0 else 1.0
            self._due0 = None
        self._period_s = 1.0 / source_fps if source_fps > 0 else 0.0
        self._last_pts_s = None
        self._cap = cap

    def _lost(self) -> None:
        """The source failed: count it, let go of it, retry after the backoff."""
        self.errors += 1
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._retry_at = time.monotonic() + self._retry_s
        self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)

    # -- the capture thread ---------------------------------------------------------------------
    def _capture(self, timeout_s: float) -> tuple[np.ndarray, float] | None:
        if self._cap is None:
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                self._stop.wait(min(wait, timeout_s))
                return None
            try:
                self._open()
            except CameraError:
                self._lost()
                return None
        cap, cv2 = self._cap, self._cv2
        if not cap.grab():
            if self.settings.kind == "v4l2":
                self._lost()  # unplugged (ENODEV) or stalled past the select() timeout
                return None
            cap.release()  # a file's end; looping reads it again from its path (it may be gone)
            self._cap = None
            self._retry_at = time.monotonic() if self.settings.loop else float("inf")
            return None
        t_read = time.monotonic()
        pts_s = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        if self.settings.kind == "file":
            t_capture = self._wait_until_due(pts_s)
            if t_capture is None:
                return None
        else:
            t_capture = to_monotonic(pts_s, t_read, time.time())
        ok, image = cap.retrieve()
        if not ok or image is None:
            self._lost()
            return None
        self._retry_s = RETRY_FIRST_S
        self._count_gap(pts_s)
        image = self._to_rgb(image)
        t_capture = max(t_capture, self._last_t)  # never backwards, whatever the driver says
        self._last_t = t_capture
        return image, t_capture

    def _wait_until_due(self, pts_s: float) -> float | None:
        """Sleep until a file frame's release time (stop-aware); that time, or None if closing."""
        if self._due0 is None:  # the first frame, or the first again after a loop
            start = time.monotonic()
            if self.frames:
                start = max(start, self._last_t + self._period_s * self._scale)
            self._due0 = (start, pts_s)
        due = self._due0[0] + (pts_s - self._due0[1]) * self._scale
        while (wait := due - time.monotonic()) > 0:
            if self._stop.wait(wait):
                return None
        return time.monotonic()

    def _count_gap(self, pts_s: float) -> None:
        last, self._last_pts_s = self._last_pts_s, pts_s
        if last is None or self._period_s <= 0:
            return
        gap = pts_s - last
        if gap > 1.5 * self._period_s:
            self.dropped += round(gap / self._period_s) - 1

    def _to_rgb(self, bgr: np.ndarray) -> np.ndarray:
        cv2 = self._cv2
        if self.settings.resize is not None and bgr.shape[1::-1] != self.settings.resize:
            bgr = cv2.resize(bgr, self.settings.resize, interpolation=cv2.INTER_AREA)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # a new array: nobody else holds it
        rgb.flags.writeable = False
        return rgb

    def _close_source(self) -> None:
        # The capture thread owns the source; it is released here only once that thread is
        # gone (close() waits up to 1 s; a V4L2 read returns within the select() timeout).
        if self._cap is not None and not self._thread.is_alive():
            self._cap.release()
            self._cap = None

    def _run(self) -> None:
        try:
            super()._run()
        finally:
            if self._cap is not None:
                self._cap.release()
                self._cap = None


def _device_index(path: str) -> int:
    """The N of ``/dev/videoN`` that ``path`` (a by-id or by-path link) points to."""
    real = os.path.realpath(path)
    m = re.fullmatch(r"/dev/video(\d+)", real)
    if not m:
        raise CameraError(f"{path} is not a V4L2 capture device (resolves to {real})")
    return int(m[1])
