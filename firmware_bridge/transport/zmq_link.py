"""``zmq+tcp://host:port`` and ``zmq+ipc:///path``: one sealed payload per ZeroMQ message.

The host uses a DEALER that connects (ZeroMQ reconnects by itself when the device restarts);
the device a ROUTER that binds and answers whichever host spoke last. Messages longer than the
longest frame are refused by ZeroMQ itself (``MAXMSGSIZE``) before they reach the codec.
"""

from __future__ import annotations

import contextlib

import zmq

from firmware_bridge.codec import MAX_SEALED
from firmware_bridge.errors import LinkError, TransportUrlError
from firmware_bridge.transport.base import Transport
from firmware_bridge.transport.url import TransportUrl


def zmq_endpoint(url: str) -> str:
    """Map ``zmq+tcp://h:p`` / ``zmq+ipc:///p`` to the endpoint string ZeroMQ takes."""
    parsed = TransportUrl.parse(url)
    if parsed.scheme == "zmq+tcp":
        if not parsed.netloc:
            raise TransportUrlError(f"{url}: zmq+tcp needs host:port")
        return f"tcp://{parsed.netloc}"
    if parsed.scheme == "zmq+ipc":
        if not parsed.path:
            raise TransportUrlError(f"{url}: zmq+ipc needs a socket path")
        return f"ipc://{parsed.path}"
    raise TransportUrlError(f"{url}: not a ZeroMQ URL")


class _ZmqBase(Transport):
    framing = "message"

    def __init__(self, url: str, socket_type: int) -> None:
        super().__init__(url)
        self._endpoint = zmq_endpoint(url)
        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(socket_type)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_SEALED)
        self._sock.setsockopt(zmq.SNDHWM, 100)
        self._sock.setsockopt(zmq.RCVHWM, 100)
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)

    def _poll(self, timeout_s: float) -> bool:
        return bool(self._poller.poll(max(int(timeout_s * 1000 + 0.999), 0)))

    def _close_raw(self) -> None:
        self._sock.close(linger=0)


class ZmqTransport(_ZmqBase):
    """Host side: a DEALER connected to the device."""

    def __init__(self, url: str) -> None:
        super().__init__(url, zmq.DEALER)
        # Do not queue requests for a device that is not there: they would arrive stale.
        self._sock.setsockopt(zmq.IMMEDIATE, 1)
        self._sock.setsockopt(zmq.RECONNECT_IVL, 50)
        self._sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
        try:
            self._sock.connect(self._endpoint)
        except zmq.ZMQError as err:
            self._closed = True
            self._sock.close(linger=0)
            raise LinkError(f"cannot connect to {url}: {err}") from err

    def _write_raw(self, data: bytes) -> None:
        try:
            self._sock.send(data, zmq.NOBLOCK)
        except zmq.Again:
            pass  # no device connected: the request is lost and the bus counts a timeout
        except zmq.ZMQError as err:
            raise LinkError(f"{self.url}: send failed: {err}") from err

    def _read_raw(self, timeout_s: float) -> bytes | None:
        try:
            if not self._poll(timeout_s):
                return None
            return self._sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return None
        except zmq.ZMQError as err:
            raise LinkError(f"{self.url}: receive failed: {err}") from err


class ZmqDeviceTransport(_ZmqBase):
    """Device side: a ROUTER bound to the endpoint; replies go to the host that spoke last."""

    def __init__(self, url: str) -> None:
        super().__init__(url, zmq.ROUTER)
        self._peer: bytes | None = None
        try:
            self._sock.bind(self._endpoint)
        except zmq.ZMQError as err:
            self._closed = True
            self._sock.close(linger=0)
            raise LinkError(f"cannot listen on {url}: {err}") from err

    def _write_raw(self, data: bytes) -> None:
        if self._peer is None:
            return  # nobody has spoken yet: nobody to answer
        # if the host went away it will ask again after reconnecting
        with contextlib.suppress(zmq.Again, zmq.ZMQError):
            self._sock.send_multipart([self._peer, data], zmq.NOBLOCK)

    def _read_raw(self, timeout_s: float) -> bytes | None:
        try:
            if not self._poll(timeout_s):
                return None
            parts = self._sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return None
        except zmq.ZMQError as err:
            raise LinkError(f"{self.url}: receive failed: {err}") from err
        if len(parts) != 2:
            self._msg_malformed += 1
            return None
        self._peer = parts[0]
        return parts[1]
