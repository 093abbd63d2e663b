"""What calibration needs from the motor controller: who it is and which motors answer, raw
readings, and safe modes restored by context managers.

Readings during calibration are converted back to raw motor coordinates with the calibration
the device holds at that moment (``raw = drive_sign * user + homing_offset``, PROTOCOL.md
section 10), so nothing on the device changes until the new calibration is written.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from calibration.errors import MotorIdentityError, MotorMissingError
from firmware_bridge.bus import SUPPORTED_VERSIONS, MotorBus
from firmware_bridge.errors import DeviceTimeoutError, EdgeError, ProtocolError
from firmware_bridge.messages import Calibration, FaultCode, Hello, Info, Mode, State, to_frame
from firmware_bridge.transport import open_transport


@dataclass(frozen=True)
class DeviceIdentity:
    """The motor controller as the handshake and a first reading showed it."""

    url: str
    device_id: str
    firmware_version: str
    protocol_version: int
    servo_rate_hz: int
    watchdog_ms: int
    joint_names: tuple[str, ...]
    device_min: np.ndarray  # the device's own limits, user coordinates of its calibration
    device_max: np.ndarray
    velocity_max: np.ndarray
    calibration: Calibration  # what the device holds now
    mode: Mode
    fault: FaultCode
    position: np.ndarray  # user coordinates, joint order

    def to_dict(self) -> dict[str, object]:
        return {"url": self.url, "device_id": self.device_id,
                "firmware_version": self.firmware_version,
                "protocol_version": self.protocol_version, "servo_rate_hz": self.servo_rate_hz}

    def raw_limits(self) -> tuple[np.ndarray, np.ndarray]:
        """The device's own limits in raw coordinates (min, max)."""
        a = to_raw(self.device_min, self.calibration)
        b = to_raw(self.device_max, self.calibration)
        return np.minimum(a, b), np.maximum(a, b)


def to_raw(user: np.ndarray, cal: Calibration) -> np.ndarray:
    """User coordinates under ``cal`` -> raw motor coordinates (float64)."""
    sign = np.asarray(cal.drive_sign, np.float64)
    return sign * np.asarray(user, np.float64) + np.asarray(cal.homing_offset, np.float64)


def check_joint_names(expected: Sequence[str], info: Info, url: str) -> None:
    """The device must report exactly the configured joints, in the configured order.

    Raises MotorIdentityError (duplicates, unknown joints, another order), MotorMissingError
    (the device reports fewer joints than configured)."""
    expected = tuple(expected)
    dup = sorted({n for n in expected if expected.count(n) > 1})
    if dup:
        raise MotorIdentityError(f"the robot config names joint(s) {', '.join(dup)} more than "
                                 "once: each motor needs its own name")
    reported = tuple(info.joint_names)
    dup = sorted({n for n in reported if reported.count(n) > 1})
    if dup:
        raise MotorIdentityError(_duplicate_message(url, reported, dup))
    missing = [n for n in expected if n not in reported]
    extra = [n for n in reported if n not in expected]
    if missing:
        raise MotorMissingError(
            f"motor(s) missing: the motor controller on {url} ({info.device_id}) reports "
            f"{len(reported)} joint(s) {list(reported)}, the robot config expects {len(expected)};"
            f" missing: {', '.join(missing)}. Check each missing motor's power, cable and bus "
            "id, then run again")
    if extra:
        raise MotorIdentityError(
            f"the motor controller on {url} reports joint(s) the robot config does not name: "
            f"{', '.join(extra)} (wrong --robot config, or a motor set to the wrong id)")
    if reported != expected:
        raise MotorIdentityError(
            f"the motor controller on {url} reports the joints in the order {list(reported)}, "
            f"the robot config in the order {list(expected)}: fix the [[joints]] order of the "
            "config (joint vectors use the device's order)")


def _duplicate_message(url: str, names: Sequence[str], dup: Sequence[str]) -> str:
    where = "; ".join(f"{n!r} at positions {[i for i, m in enumerate(names) if m == n]}"
                      for n in dup)
    return (f"duplicate motor ids: the motor controller on {url} reports {where}: two motors "
            "answer to the same id; give each motor its own id (motor setup tool), then run "
            "again")


def explain_handshake_failure(url: str, err: EdgeError, timeout_s: float = 0.5) -> EdgeError:
    """After a failed handshake, look at the raw INFO for duplicate joint names and return a
    clearer error, or ``err`` itself. (The bus drops an INFO with duplicate names as a bad
    message, so the handshake fails with a timeout or a protocol error that cannot say which
    motors.) Never raises."""
    if not isinstance(err, ProtocolError | DeviceTimeoutError):
        return err
    try:
        transport = open_transport(url)
    except EdgeError:
        return err
    try:
        deadline = time.monotonic() + timeout_s
        while deadline - time.monotonic() > 0:
            # resent until answered: a fresh ZeroMQ link drops what is sent before it is up
            transport.send(to_frame(Hello(*SUPPORTED_VERSIONS), 1, 0))
            frame = transport.recv(min(0.1, max(0.0, deadline - time.monotonic())))
            if frame is None:
                continue
            body = frame.body
            if frame.seq == 1 and isinstance(body, list) and len(body) > 3 \
                    and isinstance(body[3], list):
                names = [str(n) for n in body[3]]
                dup = sorted({n for n in names if names.count(n) > 1})
                if dup:
                    return MotorIdentityError(_duplicate_message(url, names, dup))
                break
    except EdgeError:
        pass
    finally:
        transport.close()
    return err


def read_state(bus: MotorBus, tries: int = 5) -> State:
    """One STATE (the cyclic read is never retried by the bus: retry a few times here).
    Raises DeviceTimeoutError."""
    for _ in range(tries):
        state = bus.read_state()
        if state is not None:
            return state
    raise DeviceTimeoutError(f"no state from the motor controller at {bus.url} after {tries} "
                             "tries: check the cable and its power")


def identify(bus: MotorBus, expected_joints: Sequence[str]) -> DeviceIdentity:
    """Check the connected device against the configured joints and read it once.

    Raises MotorMissingError, MotorIdentityError, DeviceTimeoutError, and MotorIdentityError
    when a motor reports no position (NaN: it does not answer the controller)."""
    info = bus.info
    if info is None:
        info = bus.connect()
    check_joint_names(expected_joints, info, bus.url)
    state = read_state(bus)
    if state.position.size != len(info.joint_names):
        raise MotorIdentityError(f"the motor controller sent {state.position.size} positions "
                                 f"for {len(info.joint_names)} joints")
    dead = [n for n, x in zip(info.joint_names, state.position, strict=True)
            if not np.isfinite(x)]
    if dead:
        raise MotorMissingError(f"motor(s) {', '.join(dead)} report no position (NaN): the "
                                "controller sees them but they do not answer; check power and "
                                "cables")
    cal = bus.read_calibration()
    if cal.homing_offset.size != len(info.joint_names):
        raise MotorIdentityError(f"the motor controller holds a calibration for "
                                 f"{cal.homing_offset.size} joints, it has "
                                 f"{len(info.joint_names)}")
    return DeviceIdentity(
        url=bus.url, device_id=info.device_id, firmware_version=info.firmware_version,
        protocol_version=info.protocol_version, servo_rate_hz=info.servo_rate_hz,
        watchdog_ms=info.watchdog_ms, joint_names=tuple(info.joint_names),
        device_min=np.asarray(info.position_min, np.float64),
        device_max=np.asarray(info.position_max, np.float64),
        velocity_max=np.asarray(info.velocity_max, np.float64),
        calibration=cal, mode=state.mode, fault=state.fault,
        position=state.position.astype(np.float64))


class RawReader:
    """Raw joint readings, through the calibration the device held when created."""

    def __init__(self, bus: MotorBus, device_calibration: Calibration) -> None:
        self.bus = bus
        self.cal = device_calibration

    def read(self, samples: int = 1, interval_s: float = 0.01) -> np.ndarray:
        """Raw positions (float64, joint order), the median of ``samples`` readings."""
        values = []
        for i in range(samples):
            if i:
                time.sleep(interval_s)
            values.append(to_raw(read_state(self.bus).position, self.cal))
        return values[0] if samples == 1 else np.median(np.stack(values), axis=0)


@contextlib.contextmanager
def position_control(bus: MotorBus) -> Iterator[None]:
    """Torque on, tracking setpoints; on exit (errors included) the device holds where the
    arm is. The device switches torque on at the measured pose, so the arm does not jump."""
    bus.set_mode(Mode.POSITION)
    try:
        yield
    finally:
        with contextlib.suppress(EdgeError):
            bus.set_mode(Mode.HOLD)
