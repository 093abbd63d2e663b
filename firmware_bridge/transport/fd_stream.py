"""Raw I/O over a POSIX file descriptor, shared by serial ports and pseudo-terminals."""

from __future__ import annotations

import errno
import os
import select

from firmware_bridge.errors import LinkError
from firmware_bridge.transport.base import Transport

READ_SIZE = 4096


class FdStreamTransport(Transport):
    """A stream transport whose bytes move through one non-blocking file descriptor."""

    framing = "stream"
    _fd: int = -1

    def _write_raw(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                select.select([], [self._fd], [], 0.1)
                continue
            except OSError as err:
                raise LinkError(f"{self.url}: write failed: {err.strerror}") from err
            view = view[written:]

    def _read_raw(self, timeout_s: float) -> bytes | None:
        try:
            ready, _, _ = select.select([self._fd], [], [], timeout_s)
            if not ready:
                return None
            data = os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            return None
        except OSError as err:
            if err.errno == errno.EINTR:
                return None
            raise LinkError(f"{self.url}: device gone ({err.strerror})") from err
        if not data:
            raise LinkError(f"{self.url}: device closed the port")
        return data
