"""The transport base class: moves frames, leaves their meaning to the bus and the emulator.

Backends fill in three raw hooks (``_write_raw``, ``_read_raw``, ``_close_raw``); framing,
CRC checks, error counting, timeouts and closing live here once. A *stream* backend (serial,
pseudo-terminal) carries COBS-framed bytes; a *message* backend (ZeroMQ, in-process) carries one
sealed payload per message.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections import deque
from typing import ClassVar, Literal

from firmware_bridge import codec
from firmware_bridge.codec import Frame, FrameDecoder
from firmware_bridge.errors import CrcError, FrameError, FrameTooLongError, LinkError

Framing = Literal["stream", "message"]


class Transport:
    """A bidirectional frame link. Use as a context manager; ``close()`` is idempotent."""

    framing: ClassVar[Framing] = "stream"

    def __init__(self, url: str) -> None:
        self.url = url
        self._closed = False
        self._decoder = FrameDecoder()
        self._pending: deque[Frame] = deque()
        # message-framing error counters (stream framing counts in its decoder)
        self._msg_crc_failures = 0
        self._msg_malformed = 0
        self._msg_oversize = 0

    # -- raw hooks for backends -------------------------------------------------------------
    def _write_raw(self, data: bytes) -> None:
        raise NotImplementedError

    def _read_raw(self, timeout_s: float) -> bytes | None:
        """Return the next bytes (stream) or message (message framing), or None on timeout.

        Raise LinkError if the device is gone."""
        raise NotImplementedError

    def _close_raw(self) -> None:
        raise NotImplementedError

    # -- public API -------------------------------------------------------------------------
    def send(self, frame: Frame) -> None:
        """Encode and send one frame. Raises LinkError if the link is down or closed."""
        if self._closed:
            raise LinkError(f"transport {self.url} is closed")
        if self.framing == "stream":
            self._write_raw(codec.encode(frame))
        else:
            self._write_raw(codec.encode_message_bytes(frame))

    def recv(self, timeout_s: float) -> Frame | None:
        """Return the next valid frame, or None if none arrives within ``timeout_s`` seconds.

        Corrupt frames are dropped and counted, never returned. Raises LinkError."""
        if self._pending:
            return self._pending.popleft()
        if self._closed:
            raise LinkError(f"transport {self.url} is closed")
        deadline = time.monotonic() + timeout_s
        remaining = timeout_s
        while True:
            data = self._read_raw(max(remaining, 0.0))
            if data is not None:
                if self.framing == "stream":
                    self._pending.extend(self._decoder.feed(data))
                else:
                    self._accept_message(data)
                if self._pending:
                    return self._pending.popleft()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None

    def _accept_message(self, data: bytes) -> None:
        try:
            self._pending.append(codec.decode_message_bytes(data))
        except CrcError:
            self._msg_crc_failures += 1
        except FrameTooLongError:
            self._msg_oversize += 1
        except FrameError:
            self._msg_malformed += 1

    def discard_input(self) -> None:
        """Forget buffered bytes and frames (after a timeout the rest of a reply is stale)."""
        self._pending.clear()
        self._decoder.reset()

    @property
    def crc_failures(self) -> int:
        return self._decoder.crc_failures + self._msg_crc_failures

    @property
    def malformed(self) -> int:
        return self._decoder.malformed + self._msg_malformed + self._decoder.oversize + (
            self._msg_oversize
        )

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):  # already gone (unplugged): nothing to release
            self._close_raw()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"transport {self.url} was not closed", ResourceWarning, stacklevel=1)
            self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}{' closed' if self._closed else ''}>"
