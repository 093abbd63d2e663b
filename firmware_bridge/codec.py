"""Sans-IO frame codec: bytes in, frames out, and back. No sockets, no clocks, no threads.

A frame's payload is a msgpack array ``[version, type, seq, t_us, body]``. It is *sealed* by
appending its CRC-32 (ISO-HDLC, the zlib/Ethernet CRC) as 4 little-endian bytes. On a byte
stream (serial) a sealed payload is COBS-encoded and ended by one 0x00 byte; on a message
transport (ZeroMQ, in-process) each message is one sealed payload. docs/PROTOCOL.md is the
normative description; tests/vectors/ holds golden frames.

Every failure raises a :class:`~firmware_bridge.errors.FrameError` subclass carrying
``consumed``, the number of input bytes to drop to get past the bad frame; nothing else escapes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import msgpack
from cobs import cobs

from firmware_bridge import PROTOCOL_VERSION
from firmware_bridge.errors import CrcError, FrameError, FrameTooLongError, MalformedFrameError

DELIMITER = 0x00
CRC_BYTES = 4
# Longest payload (msgpack bytes, before the CRC). Enough for 32 joints' calibration and info.
MAX_PAYLOAD = 2048
MAX_SEALED = MAX_PAYLOAD + CRC_BYTES
# COBS adds one byte per started 254-byte block; the delimiter is not counted here.
MAX_ENCODED = MAX_SEALED + MAX_SEALED // 254 + 1
_U32 = 0xFFFF_FFFF
_U64 = 0xFFFF_FFFF_FFFF_FFFF


@dataclass(frozen=True, slots=True)
class Frame:
    """One protocol message before its body is interpreted.

    ``seq`` is a uint32 (requests count up; replies echo the request's), ``t_us`` the sender's
    monotonic clock in microseconds (uint64), ``body`` the type-specific msgpack array.
    """

    type: int
    seq: int
    t_us: int
    body: list[Any] = field(default_factory=list)
    version: int = PROTOCOL_VERSION


def encode_payload(frame: Frame) -> bytes:
    """Return the msgpack payload of ``frame``. Raises FrameError if a field is out of range."""
    if not (_is_int_in(frame.version, 0xFF) and _is_int_in(frame.type, 0xFF)):
        raise FrameError(f"version {frame.version!r} and type {frame.type!r} must be 0..255")
    if not (_is_int_in(frame.seq, _U32) and _is_int_in(frame.t_us, _U64)):
        raise FrameError(f"seq {frame.seq!r} must be a uint32 and t_us {frame.t_us!r} a uint64")
    if type(frame.body) is not list:
        raise FrameError("body must be a list")
    try:
        payload = msgpack.packb(
            [frame.version, frame.type, frame.seq, frame.t_us, frame.body], use_bin_type=True
        )
    except (TypeError, ValueError, OverflowError) as err:
        raise FrameError(f"cannot encode frame body: {err}") from err
    if len(payload) > MAX_PAYLOAD:
        raise FrameTooLongError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return payload


def _is_int_in(value: object, limit: int) -> bool:
    """0 <= value <= limit for an int or int subclass (IntEnum), never a bool."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit


def _is_uint(value: object, limit: int) -> bool:
    return type(value) is int and 0 <= value <= limit


def decode_payload(payload: bytes | memoryview) -> Frame:
    """Parse a msgpack payload (CRC already checked). Raises MalformedFrameError."""
    if len(payload) > MAX_PAYLOAD:
        raise MalformedFrameError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    try:
        obj = msgpack.unpackb(
            payload,
            raw=False,
            use_list=True,
            strict_map_key=True,
        )
    except Exception as err:  # msgpack is foreign C code: any failure means a malformed frame
        raise MalformedFrameError(f"payload is not valid msgpack: {type(err).__name__}") from err
    if type(obj) is not list or len(obj) != 5:
        raise MalformedFrameError("payload is not an array [version, type, seq, t_us, body]")
    version, msg_type, seq, t_us, body = obj
    if not (_is_uint(version, 0xFF) and _is_uint(msg_type, 0xFF)):
        raise MalformedFrameError("version and type must be integers 0..255")
    if not (_is_uint(seq, _U32) and _is_uint(t_us, _U64)):
        raise MalformedFrameError("seq must be a uint32 and t_us a uint64")
    if type(body) is not list:
        raise MalformedFrameError("body must be an array")
    return Frame(type=msg_type, seq=seq, t_us=t_us, body=body, version=version)


def seal(payload: bytes) -> bytes:
    """Append the payload's CRC-32, little-endian."""
    return payload + zlib.crc32(payload).to_bytes(CRC_BYTES, "little")


def unseal(sealed: bytes | memoryview) -> bytes | memoryview:
    """Check and strip the CRC-32. Raises CrcError (too short counts as a CRC failure)."""
    if len(sealed) <= CRC_BYTES:
        raise CrcError(f"frame of {len(sealed)} bytes is too short to hold a CRC")
    payload = sealed[:-CRC_BYTES]
    if zlib.crc32(payload) != int.from_bytes(sealed[-CRC_BYTES:], "little"):
        raise CrcError("CRC-32 mismatch")
    return payload


def encode_message_bytes(frame: Frame) -> bytes:
    """Encode ``frame`` for a message transport: one sealed payload."""
    return seal(encode_payload(frame))


def decode_message_bytes(message: bytes | memoryview) -> Frame:
    """Decode one message-transport message. Raises FrameError subclasses."""
    if len(message) > MAX_SEALED:
        raise FrameTooLongError(f"message of {len(message)} bytes exceeds {MAX_SEALED}")
    return decode_payload(unseal(message))


def encode(frame: Frame) -> bytes:
    """Encode ``frame`` for a byte stream: COBS(sealed payload) followed by 0x00."""
    return cobs.encode(seal(encode_payload(frame))) + b"\x00"


def decode(buffer: bytes | bytearray | memoryview) -> tuple[int, Frame | None]:
    """Decode the first frame in ``buffer``.

    Returns ``(consumed, frame)``: ``(0, None)`` means more bytes are needed; ``(n, None)`` with
    n > 0 means n filler bytes (empty frames) were skipped, call again. Raises FrameError with
    ``consumed`` set so the caller can drop the bad bytes and resynchronise at the next 0x00.
    The length is checked before anything is allocated.
    """
    if isinstance(buffer, memoryview):
        buffer = buffer.tobytes()
    return _decode_at(buffer, 0)


def _decode_at(buffer: bytes | bytearray, start: int) -> tuple[int, Frame | None]:
    end = buffer.find(b"\x00", start, start + MAX_ENCODED + 1)
    if end < 0:
        available = len(buffer) - start
        if available > MAX_ENCODED:
            # Too long to be a frame: drop it up to and including its delimiter if that has
            # arrived (what follows may be good), else every byte seen so far.
            later = buffer.find(b"\x00", start + MAX_ENCODED + 1)
            consumed = available if later < 0 else later + 1 - start
            raise FrameTooLongError(
                f"{consumed} bytes without a delimiter exceed the longest frame", consumed
            )
        return 0, None
    consumed = end + 1 - start
    if consumed == 1:
        return 1, None
    try:
        sealed = cobs.decode(buffer[start:end])
    except cobs.DecodeError as err:
        raise FrameError(f"bad COBS encoding: {err}", consumed) from err
    try:
        return consumed, decode_payload(unseal(sealed))
    except FrameError as err:
        err.consumed = consumed
        raise


class FrameDecoder:
    """Streaming decoder: feed it bytes as they arrive, get whole frames back.

    Bad frames are dropped and counted (``crc_failures``, ``malformed``, ``oversize``); the
    decoder resynchronises at the next delimiter. Its buffer never exceeds one longest frame.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.frames = 0
        self.crc_failures = 0
        self.malformed = 0
        self.oversize = 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Add ``data`` and return every complete, valid frame now available, in order."""
        self._buf += data
        out: list[Frame] = []
        pos = 0
        buf = self._buf
        while True:
            try:
                consumed, frame = _decode_at(buf, pos)
            except CrcError as err:
                self.crc_failures += 1
                consumed, frame = err.consumed, None
            except FrameTooLongError as err:
                self.oversize += 1
                consumed, frame = err.consumed, None
            except FrameError as err:
                self.malformed += 1
                consumed, frame = err.consumed, None
            if consumed == 0:
                break
            pos += consumed
            if frame is not None:
                self.frames += 1
                out.append(frame)
        if pos:
            del buf[:pos]
        return out

    def reset(self) -> None:
        """Drop any partial frame (after a reconnect the old bytes mean nothing)."""
        self._buf.clear()
