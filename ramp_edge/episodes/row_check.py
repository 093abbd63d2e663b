"""Per-row checksums of episode files. SQLite's page structure can survive damage that garbles
the bytes inside a row (a truncated file read back as zeros, a flipped bit in a payload); a
CRC-32 over each row's content, written with the row, lets salvage and verify tell an intact row
from a garbled one. ``transition`` is left out of a step's checksum: it is updated after the
row is written, when a takeover event arrives."""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence

_NONE = b"\x00"
_F64 = struct.Struct("<d")
_I64 = struct.Struct("<q")
_LEN = struct.Struct("<I")


def _field(v: object) -> bytes:
    if v is None:
        return _NONE
    if isinstance(v, bool | int):
        return b"\x02" + _I64.pack(int(v))
    if isinstance(v, float):
        # As SQLite stores them: NaN becomes NULL, -0.0 becomes 0.0.
        if math.isnan(v):
            return _NONE
        return b"\x01" + _F64.pack(v + 0.0)
    if isinstance(v, bytes | bytearray | memoryview):
        b = bytes(v)
        return b"\x03" + _LEN.pack(len(b)) + b
    if isinstance(v, str):
        b = v.encode("utf-8", "surrogatepass")
        return b"\x04" + _LEN.pack(len(b)) + b
    raise TypeError(f"cannot checksum a {type(v).__name__}")


def row_crc(values: Sequence[object]) -> int:
    """CRC-32 of a row's values (None, int, float, bytes, str), type-tagged and
    length-prefixed so that no two different rows share an encoding."""
    crc = 0
    for v in values:
        crc = zlib.crc32(_field(v), crc)
    return crc


#: Columns covered by the checksum, in order (the ``crc`` column holds it).
STEP_CRC_COLS = ("id", "t_s", "t_sent_s", "state_t_s", "position", "velocity", "command",
                 "source", "chunk_id", "value", "advantage", "interventions")
IMAGE_CRC_COLS = ("camera", "t_capture_s", "step_id", "format", "width", "height", "data")
