"""Camera frames over ZeroMQ: the emulator publishes, the controller's camera backend reads.

One single-part message per frame, msgpack ``[camera, seq, t_capture_us, height, width,
encoding, data]``: ``t_capture_us`` is CLOCK_MONOTONIC in microseconds (shared by processes on
one machine), ``encoding`` "rgb8" (``data`` = height*width*3 bytes, row-major). The publisher
keeps no backlog (send high-water mark 2): a slow reader gets the newest frames, not old ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import msgpack
import numpy as np
import zmq

from firmware_bridge.errors import FrameError, LinkError
from firmware_bridge.transport.zmq_link import zmq_endpoint

MAX_FRAME_BYTES = 4096 * 4096 * 3 + 1024


@dataclass(frozen=True)
class CameraFrame:
    camera: str
    seq: int
    t_capture_s: float  # time.monotonic() seconds
    image: np.ndarray  # uint8 H x W x 3


def topic_prefix(camera: str) -> bytes:
    """The first bytes of every frame of ``camera``: a ZeroMQ subscription for it alone."""
    return b"\x97" + msgpack.packb(camera, use_bin_type=True)  # 0x97: a 7-element array


def encode_frame(camera: str, seq: int, image: np.ndarray, t_capture_s: float) -> bytes:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise FrameError("camera frames are uint8 H x W x 3")
    h, w, _ = image.shape
    return msgpack.packb([camera, seq, int(t_capture_s * 1e6), h, w, "rgb8",
                          np.ascontiguousarray(image).tobytes()], use_bin_type=True)


def decode_frame(message: bytes) -> CameraFrame:
    """Raises FrameError for anything that is not a well-formed rgb8 frame."""
    try:
        camera, seq, t_us, h, w, encoding, data = msgpack.unpackb(message, raw=False)
    except Exception as err:  # msgpack is foreign code; any failure is a malformed frame
        raise FrameError(f"malformed camera frame: {type(err).__name__}") from err
    if not (isinstance(camera, str) and isinstance(data, bytes) and encoding == "rgb8"):
        raise FrameError("camera frame fields have the wrong types or encoding")
    if not all(type(v) is int and v >= 0 for v in (seq, t_us, h, w)):
        raise FrameError("camera frame seq/time/size must be non-negative integers")
    if len(data) != h * w * 3:
        raise FrameError(f"camera frame of {len(data)} bytes is not {h}x{w}x3")
    image = np.frombuffer(data, np.uint8).reshape(h, w, 3)
    return CameraFrame(camera, seq, t_us / 1e6, image)


class FramePublisher:
    """PUB socket bound at a ``zmq+tcp://`` or ``zmq+ipc://`` URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._sock = zmq.Context.instance().socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, 2)
        try:
            self._sock.bind(zmq_endpoint(url))
        except zmq.ZMQError as err:
            self._sock.close(linger=0)
            raise LinkError(f"cannot publish camera frames on {url}: {err}") from err
        self.sent = 0

    def publish(self, camera: str, seq: int, image: np.ndarray,
                t_capture_s: float | None = None) -> None:
        t = time.monotonic() if t_capture_s is None else t_capture_s
        try:
            self._sock.send(encode_frame(camera, seq, image, t), zmq.NOBLOCK)
            self.sent += 1
        except zmq.Again:
            pass  # nobody keeps up: drop, the next frame is newer anyway

    def close(self) -> None:
        self._sock.close(linger=0)
