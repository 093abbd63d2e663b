"""The X-series control table (Protocol 2.0): the addresses this backend uses, model numbers,
and the conversions between servo units and the protocol's SI units.

Addresses are those of the XL330, XL430, XC430, XM430, XM540 and XH430 (identical for every
register used here). Positions: 4096 ticks per revolution; tick 2048 is raw 0 rad, so raw
radians are ``(ticks - 2048) * 2 pi / 4096``. Velocities: 0.229 rev/min per unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# -- EEPROM (written only with torque off) -------------------------------------------------
MODEL_NUMBER = 0  # 2 bytes
FIRMWARE_VERSION = 6  # 1
ID = 7  # 1
BAUD_RATE = 8  # 1
RETURN_DELAY_TIME = 9  # 1, units of 2 us (factory 250 = 500 us)
DRIVE_MODE = 10  # 1, bit 0: reverse direction
OPERATING_MODE = 11  # 1
HOMING_OFFSET = 20  # 4, signed ticks, added to the present position
VELOCITY_LIMIT = 44  # 4
MAX_POSITION_LIMIT = 48  # 4
MIN_POSITION_LIMIT = 52  # 4
EEPROM_END = 64  # first RAM address
# -- RAM --------------------------------------------------------------------------------
TORQUE_ENABLE = 64  # 1
STATUS_RETURN_LEVEL = 68  # 1
HARDWARE_ERROR_STATUS = 70  # 1
GOAL_POSITION = 116  # 4
# Goal_Position's range in extended position modes (+-256 rev); mode 3 uses the limits.
GOAL_TICKS_MAX = 1_048_575
PRESENT_VELOCITY = 128  # 4, signed
PRESENT_POSITION = 132  # 4, signed
TABLE_SIZE = 147  # through Present_Temperature

# The per-cycle reads and writes.
STATE_START = PRESENT_VELOCITY
STATE_LENGTH = 8  # Present_Velocity + Present_Position, contiguous
# One read at connect covers every EEPROM register plus Torque_Enable.
SETUP_LENGTH = EEPROM_END + 1

# Operating modes whose Goal_Position this backend may stream.
POSITION_MODES = {3: "position", 4: "extended position", 5: "current-based position"}
POSITION_CONTROL_MODE = 3

TICKS_PER_REV = 4096
CENTER_TICK = 2048
RAD_PER_TICK = 2 * math.pi / TICKS_PER_REV
RAD_S_PER_VELOCITY_UNIT = 0.229 * 2 * math.pi / 60
RETURN_DELAY_UNIT_US = 2


@dataclass(frozen=True)
class Model:
    number: int
    name: str
    family: str
    velocity_limit: int  # factory Velocity_Limit, 0.229 rev/min units


MODELS: dict[int, Model] = {m.number: m for m in (
    Model(1190, "XL330-M077", "xl330", 1023),
    Model(1200, "XL330-M288", "xl330", 445),
    Model(1060, "XL430-W250", "xl430", 265),
    Model(1070, "XC430-W150", "xc430", 460),
    Model(1080, "XC430-W240", "xc430", 306),
    Model(1020, "XM430-W350", "xm430", 167),
    Model(1030, "XM430-W210", "xm430", 230),
    Model(1120, "XM540-W270", "xm540", 128),
    Model(1130, "XM540-W150", "xm540", 200),
    Model(1000, "XH430-W350", "xh430", 167),
    Model(1010, "XH430-W210", "xh430", 230),
)}
FAMILIES = sorted({m.family for m in MODELS.values()})
# Model number the emulator reports for each family (``model=`` in URLs).
DEFAULT_MODEL = {"xl330": 1200, "xl430": 1060, "xc430": 1070, "xm430": 1020, "xm540": 1120,
                 "xh430": 1010}


def model_name(number: int) -> str:
    model = MODELS.get(number)
    return model.name if model else f"model {number}"


def ticks_to_rad(ticks: int | float) -> float:
    return (ticks - CENTER_TICK) * RAD_PER_TICK


def rad_to_ticks(rad: float) -> int:
    return round(rad / RAD_PER_TICK) + CENTER_TICK


def signed32(value: int) -> int:
    return value - (1 << 32) if value & 0x8000_0000 else value


def u32(value: int) -> bytes:
    return (value & 0xFFFF_FFFF).to_bytes(4, "little")


def read_int(table: bytes, address: int, size: int, *, signed: bool = False) -> int:
    return int.from_bytes(table[address: address + size], "little", signed=signed)
