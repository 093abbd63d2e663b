"""Typed protocol messages and their frame bodies (docs/PROTOCOL.md, "Messages").

Joint vectors travel as little-endian float32 bytes in the joint order the device announced in
INFO; on the host they are read-only ``numpy.float32`` arrays. Units: joint positions in rad
(m for a prismatic joint such as a gripper), velocities in rad/s (m/s), efforts in N·m (N).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar

import numpy as np

from firmware_bridge.codec import Frame
from firmware_bridge.errors import ProtocolError

F32 = np.dtype("<f4")
I8 = np.dtype("i1")


class MsgType(IntEnum):
    HELLO = 0x01
    INFO = 0x02
    STATE_REQUEST = 0x03
    STATE = 0x04
    SETPOINT = 0x05
    MODE = 0x06
    ESTOP = 0x07
    CLEAR_FAULT = 0x08
    CAL_READ = 0x09
    CAL_DATA = 0x0A
    CAL_WRITE = 0x0B
    HEARTBEAT = 0x0C
    FAULT = 0x0D
    ACK = 0x0E


class Mode(IntEnum):
    """What the motor controller is doing with its motors."""

    TORQUE_OFF = 0  # motors limp; a technician may move the arm by hand
    HOLD = 1  # torque on, holding the last commanded position
    POSITION = 2  # torque on, tracking streamed setpoints
    FAULT = 3  # latched fault: holding, setpoints ignored until CLEAR_FAULT
    ESTOP = 4  # latched e-stop: braking/holding until CLEAR_FAULT


class FaultCode(IntEnum):
    NONE = 0
    WATCHDOG = 1  # no setpoint within the watchdog time while in POSITION
    JOINT_LIMIT = 2  # measured position left the device's own limits
    ESTOP = 3
    BAD_SETPOINT = 4  # NaN/inf, wrong joint count
    STALL = 5  # tracking error too large for too long
    INTERNAL = 6


class AckStatus(IntEnum):
    OK = 0
    REJECTED = 1  # request understood but refused in the current mode
    BAD_REQUEST = 2  # wrong sizes or values
    UNSUPPORTED = 3  # message type unknown to this firmware


def vector_to_bytes(values: np.ndarray | list[float] | tuple[float, ...]) -> bytes:
    """Pack a joint vector as little-endian float32 bytes."""
    return np.asarray(values, dtype=F32).tobytes()


def _vector(raw: Any, what: str, n: int | None = None, dtype: np.dtype = F32) -> np.ndarray:
    if type(raw) is not bytes or len(raw) % dtype.itemsize:
        raise ProtocolError(f"{what} must be a byte string of {dtype.itemsize}-byte values")
    vec = np.frombuffer(raw, dtype=dtype)
    if n is not None and vec.size != n:
        raise ProtocolError(f"{what} has {vec.size} values, expected {n}")
    return vec


def _int(raw: Any, what: str, enum: type[IntEnum] | None = None) -> Any:
    if type(raw) is not int:
        raise ProtocolError(f"{what} must be an integer")
    if enum is None:
        return raw
    try:
        return enum(raw)
    except ValueError as err:
        raise ProtocolError(f"{what} {raw} is not a known {enum.__name__}") from err


def _str(raw: Any, what: str) -> str:
    if type(raw) is not str:
        raise ProtocolError(f"{what} must be a string")
    return raw


def _arity(body: list[Any], n: int, name: str) -> None:
    if len(body) != n:
        raise ProtocolError(f"{name} body has {len(body)} fields, expected {n}")


class Message:
    """Base of all messages: ``TYPE`` plus conversion to and from a frame body.

    Messages that carry joint vectors compare by identity (``eq=False``): numpy arrays have
    no single truth value; compare their ``to_body()`` to compare contents."""

    TYPE: ClassVar[MsgType]

    def to_body(self) -> list[Any]:
        return []

    @classmethod
    def from_body(cls, body: list[Any]) -> Message:
        _arity(body, 0, cls.__name__)
        return cls()


@dataclass(frozen=True, slots=True)
class Hello(Message):
    """Host -> device: the protocol versions the host speaks. Answered by INFO."""

    TYPE: ClassVar[MsgType] = MsgType.HELLO
    version_min: int
    version_max: int
    host_name: str = "ramp-edge"

    def to_body(self) -> list[Any]:
        return [self.version_min, self.version_max, self.host_name]

    @classmethod
    def from_body(cls, body: list[Any]) -> Hello:
        _arity(body, 3, "HELLO")
        return cls(
            _int(body[0], "version_min"), _int(body[1], "version_max"), _str(body[2], "host")
        )


@dataclass(frozen=True, slots=True, eq=False)
class Info(Message):
    """Device -> host: who the device is, its joints and its own limits."""

    TYPE: ClassVar[MsgType] = MsgType.INFO
    protocol_version: int
    firmware_version: str
    device_id: str
    joint_names: tuple[str, ...]
    position_min: np.ndarray
    position_max: np.ndarray
    velocity_max: np.ndarray
    watchdog_ms: int
    servo_rate_hz: int

    def to_body(self) -> list[Any]:
        return [
            self.protocol_version,
            self.firmware_version,
            self.device_id,
            list(self.joint_names),
            vector_to_bytes(self.position_min),
            vector_to_bytes(self.position_max),
            vector_to_bytes(self.velocity_max),
            self.watchdog_ms,
            self.servo_rate_hz,
        ]

    @classmethod
    def from_body(cls, body: list[Any]) -> Info:
        _arity(body, 9, "INFO")
        names = body[3]
        if type(names) is not list or not names:
            raise ProtocolError("INFO joint_names must be a non-empty array of strings")
        joint_names = tuple(_str(n, "joint name") for n in names)
        if len(set(joint_names)) != len(joint_names):
            raise ProtocolError("INFO joint_names contains duplicates")
        n = len(joint_names)
        return cls(
            protocol_version=_int(body[0], "protocol_version"),
            firmware_version=_str(body[1], "firmware_version"),
            device_id=_str(body[2], "device_id"),
            joint_names=joint_names,
            position_min=_vector(body[4], "position_min", n),
            position_max=_vector(body[5], "position_max", n),
            velocity_max=_vector(body[6], "velocity_max", n),
            watchdog_ms=_int(body[7], "watchdog_ms"),
            servo_rate_hz=_int(body[8], "servo_rate_hz"),
        )


@dataclass(frozen=True, slots=True)
class StateRequest(Message):
    """Host -> device: send STATE now (used when there is no setpoint to send)."""

    TYPE: ClassVar[MsgType] = MsgType.STATE_REQUEST


@dataclass(frozen=True, slots=True, eq=False)
class State(Message):
    """Device -> host: measured joint state; the reply to SETPOINT and STATE_REQUEST."""

    TYPE: ClassVar[MsgType] = MsgType.STATE
    mode: Mode
    fault: FaultCode
    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray

    def to_body(self) -> list[Any]:
        return [
            int(self.mode),
            int(self.fault),
            vector_to_bytes(self.position),
            vector_to_bytes(self.velocity),
            vector_to_bytes(self.effort),
        ]

    @classmethod
    def from_body(cls, body: list[Any]) -> State:
        _arity(body, 5, "STATE")
        position = _vector(body[2], "position")
        n = position.size
        return cls(
            mode=_int(body[0], "mode", Mode),
            fault=_int(body[1], "fault", FaultCode),
            position=position,
            velocity=_vector(body[3], "velocity", n),
            effort=_vector(body[4], "effort", n),
        )


@dataclass(frozen=True, slots=True, eq=False)
class Setpoint(Message):
    """Host -> device: reach ``position`` (optionally with ``velocity``) ``reach_in_us`` after
    this frame arrives, interpolating from the current command. Answered by STATE."""

    TYPE: ClassVar[MsgType] = MsgType.SETPOINT
    reach_in_us: int
    position: np.ndarray
    velocity: np.ndarray | None = None

    def to_body(self) -> list[Any]:
        vel = None if self.velocity is None else vector_to_bytes(self.velocity)
        return [self.reach_in_us, vector_to_bytes(self.position), vel]

    @classmethod
    def from_body(cls, body: list[Any]) -> Setpoint:
        _arity(body, 3, "SETPOINT")
        reach = _int(body[0], "reach_in_us")
        if not 0 <= reach <= 0xFFFF_FFFF:
            raise ProtocolError("reach_in_us must be a uint32")
        position = _vector(body[1], "position")
        velocity = None if body[2] is None else _vector(body[2], "velocity", position.size)
        return cls(reach, position, velocity)


@dataclass(frozen=True, slots=True)
class ModeRequest(Message):
    """Host -> device: switch to TORQUE_OFF, HOLD or POSITION. Answered by ACK."""

    TYPE: ClassVar[MsgType] = MsgType.MODE
    mode: Mode

    def to_body(self) -> list[Any]:
        return [int(self.mode)]

    @classmethod
    def from_body(cls, body: list[Any]) -> ModeRequest:
        _arity(body, 1, "MODE")
        return cls(_int(body[0], "mode", Mode))


@dataclass(frozen=True, slots=True)
class EStop(Message):
    """Host -> device: latch the e-stop. Answered by ACK."""

    TYPE: ClassVar[MsgType] = MsgType.ESTOP
    reason: str = ""

    def to_body(self) -> list[Any]:
        return [self.reason]

    @classmethod
    def from_body(cls, body: list[Any]) -> EStop:
        _arity(body, 1, "ESTOP")
        return cls(_str(body[0], "reason"))


@dataclass(frozen=True, slots=True)
class ClearFault(Message):
    """Host -> device: clear a latched fault or e-stop; the device comes back in HOLD."""

    TYPE: ClassVar[MsgType] = MsgType.CLEAR_FAULT


@dataclass(frozen=True, slots=True)
class CalRead(Message):
    """Host -> device: send the calibration the device stores. Answered by CAL_DATA."""

    TYPE: ClassVar[MsgType] = MsgType.CAL_READ


@dataclass(frozen=True, slots=True, eq=False)
class Calibration(Message):
    """Calibration held by the device: per joint homing offset, drive sign (+1/-1) and limits.

    ``calibration_id`` is the hash of the host's calibration file that wrote it ("" if none).
    """

    TYPE: ClassVar[MsgType] = MsgType.CAL_DATA
    homing_offset: np.ndarray
    drive_sign: np.ndarray
    position_min: np.ndarray
    position_max: np.ndarray
    calibration_id: str = ""

    def to_body(self) -> list[Any]:
        return [
            vector_to_bytes(self.homing_offset),
            np.asarray(self.drive_sign, dtype=I8).tobytes(),
            vector_to_bytes(self.position_min),
            vector_to_bytes(self.position_max),
            self.calibration_id,
        ]

    @classmethod
    def from_body(cls, body: list[Any]) -> Calibration:
        _arity(body, 5, cls.TYPE.name)
        offset = _vector(body[0], "homing_offset")
        n = offset.size
        sign = _vector(body[1], "drive_sign", n, I8)
        if not np.all(np.abs(sign) == 1):
            raise ProtocolError("drive_sign values must be +1 or -1")
        return cls(
            homing_offset=offset,
            drive_sign=sign,
            position_min=_vector(body[2], "position_min", n),
            position_max=_vector(body[3], "position_max", n),
            calibration_id=_str(body[4], "calibration_id"),
        )


@dataclass(frozen=True, slots=True, eq=False)
class CalWrite(Calibration):
    """Host -> device: store this calibration (only in TORQUE_OFF). Answered by ACK."""

    TYPE: ClassVar[MsgType] = MsgType.CAL_WRITE


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """Host -> device: keep the link alive when no setpoints flow. Answered by ACK."""

    TYPE: ClassVar[MsgType] = MsgType.HEARTBEAT


@dataclass(frozen=True, slots=True)
class Fault(Message):
    """Device -> host, unsolicited (seq 0): a fault was latched."""

    TYPE: ClassVar[MsgType] = MsgType.FAULT
    code: FaultCode
    detail: str = ""

    def to_body(self) -> list[Any]:
        return [int(self.code), self.detail]

    @classmethod
    def from_body(cls, body: list[Any]) -> Fault:
        _arity(body, 2, "FAULT")
        return cls(_int(body[0], "code", FaultCode), _str(body[1], "detail"))


@dataclass(frozen=True, slots=True)
class Ack(Message):
    """Device -> host: outcome of MODE, ESTOP, CLEAR_FAULT, CAL_WRITE, HEARTBEAT."""

    TYPE: ClassVar[MsgType] = MsgType.ACK
    status: AckStatus
    detail: str = ""

    def to_body(self) -> list[Any]:
        return [int(self.status), self.detail]

    @classmethod
    def from_body(cls, body: list[Any]) -> Ack:
        _arity(body, 2, "ACK")
        return cls(_int(body[0], "status", AckStatus), _str(body[1], "detail"))


MESSAGE_TYPES: dict[int, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Hello, Info, StateRequest, State, Setpoint, ModeRequest, EStop, ClearFault,
        CalRead, Calibration, CalWrite, Heartbeat, Fault, Ack,
    )
}


def to_frame(message: Message, seq: int, t_us: int) -> Frame:
    """Wrap ``message`` in a frame with the given sequence number and timestamp."""
    return Frame(type=int(message.TYPE), seq=seq, t_us=t_us, body=message.to_body())


def from_frame(frame: Frame) -> Message:
    """Interpret a frame's body. Raises ProtocolError for unknown types or bad bodies."""
    cls = MESSAGE_TYPES.get(frame.type)
    if cls is None:
        raise ProtocolError(f"unknown message type 0x{frame.type:02x}")
    return cls.from_body(frame.body)
