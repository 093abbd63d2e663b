"""Frames published over ZeroMQ (firmware_bridge.camera_stream), e.g. by the emulator."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import numpy as np
import zmq

from firmware_bridge.camera_stream import MAX_FRAME_BYTES, decode_frame, topic_prefix
from firmware_bridge.errors import FrameError
from firmware_bridge.transport.zmq_link import zmq_endpoint
from ramp_edge.cameras.base import Camera, CameraError


class ZmqCamera(Camera):
    def __init__(self, name: str, url: str, *, size: tuple[int, int] | None = None) -> None:
        # ``size``: the publisher renders at the configured size already; nothing to do.
        super().__init__(name, url)
        parts = urlsplit(url)
        self.source_name = parts.fragment or name
        base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        self._sock = zmq.Context.instance().socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, 4)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        self._sock.setsockopt(zmq.SUBSCRIBE, topic_prefix(self.source_name))
        try:
            self._sock.connect(zmq_endpoint(base))
        except (zmq.ZMQError, ValueError) as err:
            self._sock.close(linger=0)
            self._closed = True
            raise CameraError(f"camera {name}: cannot connect to {url}: {err}") from err
        self._last_seq: int | None = None
        self.start()

    def _capture(self, timeout_s: float) -> tuple[np.ndarray, float] | None:
        try:
            if not self._sock.poll(int(timeout_s * 1000)):
                return None
            message = self._sock.recv(zmq.NOBLOCK)
        except zmq.ZMQError:
            return None
        try:
            frame = decode_frame(message)
        except FrameError:
            self.errors += 1
            return None
        if frame.camera != self.source_name:
            return None
        if self._last_seq is not None and frame.seq > self._last_seq + 1:
            self.dropped += frame.seq - self._last_seq - 1
        self._last_seq = frame.seq
        return frame.image, frame.t_capture_s

    def _close_source(self) -> None:
        self._sock.close(linger=0)
