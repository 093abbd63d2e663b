"""The project's exception root and the errors of the link to motor controllers.

Every error the project raises derives from :class:`EdgeError` and also from the builtin it is
closest to, so ``except TimeoutError`` still works for callers that know nothing of ours. The
root lives here because ``firmware_bridge`` depends on nothing else of the project; the other
packages import it from here (``ramp_edge.errors`` re-exports it).
"""

from __future__ import annotations


class EdgeError(Exception):
    """Root of every error raised by ramp-edge. ``str(err)`` is one line a person can act on."""


class FrameError(EdgeError, ValueError):
    """A frame could not be decoded. ``consumed`` is how many input bytes to skip past it."""

    def __init__(self, message: str, consumed: int = 0) -> None:
        super().__init__(message)
        self.consumed = consumed


class CrcError(FrameError):
    """The frame's CRC-32 did not match its payload."""


class FrameTooLongError(FrameError):
    """More bytes arrived without a delimiter than the longest legal frame."""


class MalformedFrameError(FrameError):
    """The frame's checksum was right but its payload is not a valid message."""


class ProtocolError(EdgeError, ValueError):
    """The peer sent a well-formed frame that breaks the protocol (wrong type, wrong sizes)."""


class IncompatibleFirmwareError(ProtocolError):
    """The motor controller speaks a protocol version this host does not."""


class DeviceRejectedError(EdgeError, RuntimeError):
    """The motor controller answered a request with a NACK (``code`` says why)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class LinkError(EdgeError, ConnectionError):
    """The transport to the motor controller failed (port gone, socket closed)."""


class DeviceTimeoutError(EdgeError, TimeoutError):
    """The motor controller did not answer within the bus's timeout and retries."""


class TransportUrlError(EdgeError, ValueError):
    """A transport URL names no known scheme or carries bad parameters."""
