"""Cameras chosen by URL from a registry that is data; backends are imported lazily.

``zmq+tcp://host:port#scene`` / ``zmq+ipc:///path#wrist``: frames published over ZeroMQ (the
emulator's rendered cameras), the fragment naming the camera. A USB/V4L2 backend joins here.
"""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from ramp_edge.cameras.base import Camera, CameraError

BACKENDS: dict[str, str] = {
    "zmq+tcp": "ramp_edge.cameras.zmq_camera:ZmqCamera",
    "zmq+ipc": "ramp_edge.cameras.zmq_camera:ZmqCamera",
}


def open_camera(name: str, url: str) -> Camera:
    """Open camera ``name`` at ``url``. Raises CameraError for an unknown scheme."""
    scheme = urlsplit(url).scheme
    spec = BACKENDS.get(scheme)
    if spec is None:
        raise CameraError(f"camera {name}: unknown camera URL scheme {scheme!r} in {url!r} "
                          f"(known: {', '.join(sorted(BACKENDS))})")
    module, _, cls = spec.partition(":")
    return getattr(importlib.import_module(module), cls)(name, url)


__all__ = ["BACKENDS", "Camera", "CameraError", "open_camera"]
