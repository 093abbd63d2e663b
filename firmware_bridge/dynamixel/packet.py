"""Sans-IO codec for DYNAMIXEL Protocol 2.0 packets: bytes in, packets out, and back.

Layout (ROBOTIS e-manual, "Protocol 2.0")::

    FF FF FD 00 | ID | LEN_L LEN_H | INSTRUCTION | PARAMETERS... | CRC_L CRC_H

``LEN`` counts the instruction, the (stuffed) parameters and the CRC. A status packet is
instruction 0x55 whose first parameter is the error byte. Inside the instruction and
parameters, every ``FF FF FD`` is sent as ``FF FF FD FD`` (byte stuffing) so a header never
appears in a body. The CRC-16 (polynomial 0x8005, not reflected, initial value 0) covers every
byte from the header to the last parameter, as sent (stuffed).

Nothing here raises on bad input: the decoder skips garbage and counts bad CRCs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

HEADER = b"\xff\xff\xfd\x00"
BROADCAST_ID = 0xFE
MAX_ID = 0xFC
STATUS = 0x55
# Longest LEN this codec accepts (instruction + stuffed parameters + CRC). The X-series
# receive buffer is smaller; 1024 covers sync reads and writes of 252 servos' positions.
MAX_LENGTH = 1024


class Instruction(IntEnum):
    PING = 0x01
    READ = 0x02
    WRITE = 0x03
    REG_WRITE = 0x04
    ACTION = 0x05
    FACTORY_RESET = 0x06
    REBOOT = 0x08
    STATUS = 0x55
    SYNC_READ = 0x82
    SYNC_WRITE = 0x83
    BULK_READ = 0x92
    BULK_WRITE = 0x93


class StatusError(IntEnum):
    """Low 7 bits of a status packet's error byte; bit 7 (:data:`ALERT`) flags a hardware
    error the servo latched (read its Hardware_Error_Status)."""

    NONE = 0x00
    RESULT_FAIL = 0x01
    INSTRUCTION = 0x02
    CRC = 0x03
    DATA_RANGE = 0x04
    DATA_LENGTH = 0x05
    DATA_LIMIT = 0x06
    ACCESS = 0x07


ALERT = 0x80


def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


# The same 256 entries the e-manual lists (generated here rather than pasted).
CRC_TABLE = _crc_table()


def crc16(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-16/BUYPASS as DYNAMIXEL Protocol 2.0 uses it."""
    table = CRC_TABLE
    for byte in data:
        crc = ((crc << 8) ^ table[((crc >> 8) ^ byte) & 0xFF]) & 0xFFFF
    return crc


def stuff(body: bytes) -> bytes:
    """Insert 0xFD after every ``FF FF FD`` of ``body`` (instruction + parameters)."""
    if b"\xff\xff\xfd" not in body:
        return body
    out = bytearray()
    for byte in body:
        out.append(byte)
        if byte == 0xFD and out[-3:] == b"\xff\xff\xfd":
            out.append(0xFD)
    return bytes(out)


def unstuff(body: bytes) -> bytes:
    """Undo :func:`stuff`: drop the 0xFD that follows every ``FF FF FD``."""
    if b"\xff\xff\xfd\xfd" not in body:
        return body
    out = bytearray()
    i, n = 0, len(body)
    while i < n:
        out.append(body[i])
        if body[i] == 0xFD and out[-3:] == b"\xff\xff\xfd" and i + 1 < n and body[i + 1] == 0xFD:
            i += 1  # the stuffing byte
        i += 1
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Packet:
    """One packet, parameters unstuffed. For a status packet ``params[0]`` is the error."""

    id: int
    instruction: int
    params: bytes = b""

    @property
    def is_status(self) -> bool:
        return self.instruction == STATUS

    @property
    def error(self) -> int:
        """The status packet's error byte (0: none)."""
        return self.params[0] if self.is_status and self.params else 0

    @property
    def data(self) -> bytes:
        """A status packet's data (after the error byte)."""
        return self.params[1:] if self.is_status else self.params


def encode(packet: Packet) -> bytes:
    """The bytes of ``packet`` on the wire: header, stuffed body, CRC. Raises ValueError if
    the id is not 0..0xFE or the packet is longer than :data:`MAX_LENGTH`."""
    if not 0 <= packet.id <= BROADCAST_ID:
        raise ValueError(f"packet id {packet.id} is not 0..{BROADCAST_ID}")
    body = stuff(bytes((packet.instruction,)) + bytes(packet.params))
    length = len(body) + 2
    if length > MAX_LENGTH:
        raise ValueError(f"packet length {length} exceeds {MAX_LENGTH}")
    head = HEADER + bytes((packet.id, length & 0xFF, length >> 8))
    out = head + body
    crc = crc16(out)
    return out + bytes((crc & 0xFF, crc >> 8))


def instruction(dxl_id: int, inst: int, params: bytes = b"") -> bytes:
    return encode(Packet(dxl_id, inst, params))


def status(dxl_id: int, error: int = 0, data: bytes = b"") -> bytes:
    return encode(Packet(dxl_id, STATUS, bytes((error,)) + data))


class PacketDecoder:
    """Incremental decoder: ``feed(bytes)`` returns the complete, CRC-checked packets.

    Bytes before a header are skipped (``skipped``); a packet with a bad CRC is dropped
    (``crc_failures``) and the search resumes one byte after its header, so a corrupt length
    cannot swallow the packets behind it for longer than :data:`MAX_LENGTH` bytes."""

    def __init__(self, max_length: int = MAX_LENGTH) -> None:
        self.max_length = max_length
        self._buf = bytearray()
        self.crc_failures = 0
        self.skipped = 0
        self.too_long = 0

    def reset(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes) -> list[Packet]:
        buf = self._buf
        buf += data
        out: list[Packet] = []
        while True:
            start = buf.find(HEADER)
            if start < 0:
                keep = 3 if buf.endswith(b"\xff\xff\xfd") else 2 if buf.endswith(b"\xff\xff") \
                    else 1 if buf.endswith(b"\xff") else 0
                self.skipped += len(buf) - keep
                del buf[: len(buf) - keep]
                return out
            if start:
                self.skipped += start
                del buf[:start]
            if len(buf) < 7:
                return out
            length = buf[5] | buf[6] << 8
            if length < 3 or length > self.max_length:
                self.too_long += 1
                del buf[:1]
                continue
            total = 7 + length
            if len(buf) < total:
                return out
            crc = buf[total - 2] | buf[total - 1] << 8
            if crc16(memoryview(buf)[: total - 2]) != crc:
                self.crc_failures += 1
                del buf[:1]
                continue
            body = unstuff(bytes(buf[7: total - 2]))
            out.append(Packet(buf[4], body[0], body[1:]))
            del buf[:total]
