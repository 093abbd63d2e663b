"""Cameras chosen by URL from a registry that is data; backends are imported lazily.

``zmq+tcp://host:port#scene`` / ``zmq+ipc:///path#wrist``: frames published over ZeroMQ (the
emulator's rendered cameras), the fragment naming the camera.

``v4l2:///dev/video0?width=640&height=480&fps=30&format=MJPG`` (or a ``/dev/v4l/by-id/...``
path; all keys optional, ``resize=96x96`` too): a USB/V4L2 camera through OpenCV, the
``camera`` extra. ``file:///path/x.mkv?fps=30&loop=1``: a video file served at its frame rate
through the same capture code, for tests and replays. See ``v4l2_camera``.
"""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from ramp_edge.cameras.base import Camera, CameraError

BACKENDS: dict[str, str] = {
    "zmq+tcp": "ramp_edge.cameras.zmq_camera:ZmqCamera",
    "zmq+ipc": "ramp_edge.cameras.zmq_camera:ZmqCamera",
    "v4l2": "ramp_edge.cameras.v4l2_camera:V4l2Camera",
    "file": "ramp_edge.cameras.v4l2_camera:V4l2Camera",
}


def open_camera(name: str, url: str, *, size: tuple[int, int] | None = None) -> Camera:
    """Open camera ``name`` at ``url``; ``size`` (width, height) is the image size the robot
    config asks for. Raises CameraError for an unknown scheme."""
    scheme = urlsplit(url).scheme
    spec = BACKENDS.get(scheme)
    if spec is None:
        raise CameraError(f"camera {name}: unknown camera URL scheme {scheme!r} in {url!r} "
                          f"(known: {', '.join(sorted(BACKENDS))})")
    module, _, cls = spec.partition(":")
    return getattr(importlib.import_module(module), cls)(name, url, size=size)


__all__ = ["BACKENDS", "Camera", "CameraError", "open_camera"]
