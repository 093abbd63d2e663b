"""``serial:///dev/ttyACM0?baud=3000000``: a serial port (USB CDC, UART, pseudo-terminal)."""

from __future__ import annotations

import os

import serial

from firmware_bridge.errors import LinkError, TransportUrlError
from firmware_bridge.transport.fd_stream import FdStreamTransport
from firmware_bridge.transport.url import TransportUrl

DEFAULT_BAUD = 3_000_000


class SerialTransport(FdStreamTransport):
    """Host side of a serial link, opened exclusively (two processes must not share a bus)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        parsed = TransportUrl.parse(url)
        if not parsed.path:
            raise TransportUrlError(f"{url}: a serial URL needs a device path")
        baud = parsed.int_param("baud", DEFAULT_BAUD)
        try:
            # pyserial configures the line (raw mode, baud, exclusive lock); I/O goes through
            # the descriptor directly so each read is one select + read, not a tcsetattr.
            self._port = serial.Serial(parsed.path, baudrate=baud, timeout=0, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as err:
            self._closed = True
            # pyserial's message names the port again ("could not open port X: [Errno 2]
            # ..."): say the reason once.
            code = err.args[0] if err.args and isinstance(err.args[0], int) else err.errno \
                if isinstance(err, OSError) else None
            why = f"{os.strerror(code)} (errno {code})" if code else str(err)
            raise LinkError(f"cannot open serial port {parsed.path}: {why}") from err
        self._fd = self._port.fileno()
        os.set_blocking(self._fd, False)

    def _close_raw(self) -> None:
        self._port.close()
