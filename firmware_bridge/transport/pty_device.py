"""Device side of a pseudo-terminal: the emulator holds the master end, the host opens the
slave end as an ordinary serial port (``serial:///dev/pts/N`` or a stable link to it)."""

from __future__ import annotations

import contextlib
import os
import time
import tty

from firmware_bridge.errors import LinkError
from firmware_bridge.transport.fd_stream import FdStreamTransport


class PtyDeviceTransport(FdStreamTransport):
    """Opens a new pseudo-terminal in raw mode. ``slave_path`` is what hosts open; ``link``,
    if given, is a symbolic link to it that is replaced atomically (stable across restarts)."""

    def __init__(self, url: str = "pty://", link: str | None = None) -> None:
        super().__init__(url)
        self._fd, self._slave_fd = os.openpty()
        tty.setraw(self._slave_fd)
        os.set_blocking(self._fd, False)
        self.slave_path = os.ttyname(self._slave_fd)
        self.link = link
        if link:
            tmp = f"{link}.tmp{os.getpid()}"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(self.slave_path, tmp)
            os.replace(tmp, link)

    def _read_raw(self, timeout_s: float) -> bytes | None:
        try:
            return super()._read_raw(timeout_s)
        except LinkError:
            # The master reads EIO while no process holds the slave open. We hold it open
            # ourselves, so this is rare; it means nobody is listening, not a broken device.
            time.sleep(timeout_s)
            return None

    def _close_raw(self) -> None:
        os.close(self._fd)
        os.close(self._slave_fd)
