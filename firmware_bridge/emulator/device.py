"""The emulated motor controller's firmware logic, free of I/O.

``handle(frame, now_ns)`` answers one host frame; ``tick(now_ns)`` runs one servo period
(setpoint interpolation, the plant, the command watchdog, limit checks) and returns any
unsolicited frames (FAULT). The rules are those docs/PROTOCOL.md sets for real firmware.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from firmware_bridge import PROTOCOL_VERSION
from firmware_bridge.codec import Frame
from firmware_bridge.emulator.plant import MotorPlant, Plant
from firmware_bridge.errors import ProtocolError
from firmware_bridge.messages import (
    Ack,
    AckStatus,
    Calibration,
    CalRead,
    CalWrite,
    ClearFault,
    EStop,
    Fault,
    FaultCode,
    Heartbeat,
    Hello,
    Info,
    Message,
    Mode,
    ModeRequest,
    Setpoint,
    State,
    StateRequest,
    from_frame,
    to_frame,
)

ARM_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow", "wrist_flex", "wrist_roll", "wrist_pitch")


@dataclass(frozen=True)
class DeviceConfig:
    """What the firmware knows about its hardware. Limits are in raw motor coordinates."""

    joint_names: tuple[str, ...]
    position_min: tuple[float, ...]
    position_max: tuple[float, ...]
    velocity_max: tuple[float, ...]
    initial_position: tuple[float, ...]
    watchdog_ms: int = 100
    fault_after_ms: int = 400
    servo_rate_hz: int = 1000
    limit_tolerance: float = 0.05
    firmware_version: str = "emulator-1.0"
    device_id: str = "emu-0"
    protocol_version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        n = len(self.joint_names)
        sizes = {len(v) for v in (self.position_min, self.position_max, self.velocity_max,
                                  self.initial_position)}
        if sizes != {n}:
            raise ValueError("every per-joint field needs one value per joint")
        if self.watchdog_ms <= 0 or self.fault_after_ms < 0 or self.servo_rate_hz <= 0:
            raise ValueError("watchdog_ms and servo_rate_hz must be positive")

    @classmethod
    def default(cls, n_joints: int = 7, **overrides: object) -> DeviceConfig:
        """A table-top arm: ``n_joints - 1`` revolute joints (rad) and a gripper (m)."""
        if not 2 <= n_joints <= 32:
            raise ValueError("n_joints must be 2..32")
        arm = [ARM_JOINTS[i] if i < len(ARM_JOINTS) else f"joint_{i}" for i in range(n_joints - 1)]
        kw: dict[str, object] = dict(
            joint_names=(*arm, "gripper"),
            position_min=(-2.8,) * (n_joints - 1) + (0.0,),
            position_max=(2.8,) * (n_joints - 1) + (0.04,),
            velocity_max=(2.0,) * (n_joints - 1) + (0.1,),
            initial_position=(0.0,) * (n_joints - 1) + (0.02,),
        )
        kw.update(overrides)
        return cls(**kw)  # type: ignore[arg-type]


@dataclass
class _Segment:
    """Linear interpolation of the command from ``start`` to ``target`` over [t0, t1] (ns)."""

    start: np.ndarray
    target: np.ndarray
    t0: int
    t1: int

    def at(self, now_ns: int) -> np.ndarray:
        if now_ns >= self.t1:
            return self.target
        frac = max(0.0, (now_ns - self.t0) / (self.t1 - self.t0))
        return self.start + (self.target - self.start) * frac


@dataclass
class DeviceCounters:
    frames_in: int = 0
    replies: int = 0
    bad_messages: int = 0
    setpoints: int = 0
    watchdog_holds: int = 0
    faults: int = 0
    limit_clamps: int = 0
    last_seq: int | None = None
    seq_gaps: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class EmulatedMotorController:
    def __init__(self, config: DeviceConfig, plant: Plant | None = None) -> None:
        self.config = config
        n = len(config.joint_names)
        self._lo = np.asarray(config.position_min, dtype=np.float64)
        self._hi = np.asarray(config.position_max, dtype=np.float64)
        self._vmax = np.asarray(config.velocity_max, dtype=np.float64)
        self.plant = plant or MotorPlant(np.asarray(config.initial_position), self._vmax)
        self.calibration = Calibration(
            homing_offset=np.zeros(n, np.float32),
            drive_sign=np.ones(n, np.int8),
            position_min=self._lo.astype(np.float32),
            position_max=self._hi.astype(np.float32),
        )
        self.mode = Mode.TORQUE_OFF
        self.fault = FaultCode.NONE
        self.command = self.plant.position.copy()  # raw coordinates
        self._segment: _Segment | None = None
        self._last_setpoint_ns: int | None = None
        self._last_host_ns: int | None = None
        self._watchdog_hold_ns: int | None = None
        self._dt_s = 1.0 / config.servo_rate_hz
        self.counters = DeviceCounters()
        self._now_us = 0
        self._outbox: list[Frame] = []

    # -- coordinates --------------------------------------------------------------------
    def _to_user(self, raw: np.ndarray) -> np.ndarray:
        cal = self.calibration
        return cal.drive_sign * (raw - cal.homing_offset)

    def _to_raw(self, user: np.ndarray) -> np.ndarray:
        cal = self.calibration
        return user * cal.drive_sign + cal.homing_offset

    def _user_scale(self, raw_vec: np.ndarray) -> np.ndarray:
        return raw_vec * self.calibration.drive_sign

    # -- host frames ----------------------------------------------------------------------
    def handle(self, frame: Frame, now_ns: int) -> list[Frame]:
        """Answer one frame from the host; returns the reply frames (usually one)."""
        self.counters.frames_in += 1
        self._now_us = now_ns // 1000
        self._last_host_ns = now_ns
        if frame.seq != 0 and self.counters.last_seq is not None:
            gap = (frame.seq - self.counters.last_seq - 1) & 0xFFFF_FFFF
            if 0 < gap < 1_000_000:
                self.counters.seq_gaps += gap
        self.counters.last_seq = frame.seq
        if frame.version != self.config.protocol_version and frame.type != Hello.TYPE:
            return [self._reply(frame, Ack(AckStatus.UNSUPPORTED, "protocol version mismatch"))]
        try:
            msg = from_frame(frame)
        except ProtocolError as err:
            self.counters.bad_messages += 1
            status = AckStatus.UNSUPPORTED if "unknown message type" in str(err) else (
                AckStatus.BAD_REQUEST
            )
            return [self._reply(frame, Ack(status, str(err)))]
        reply = self._dispatch(msg, now_ns)
        return [self._reply(frame, reply)]

    def _reply(self, request: Frame, msg: Message) -> Frame:
        self.counters.replies += 1
        return to_frame(msg, request.seq, self._now_us)

    def _dispatch(self, msg: Message, now_ns: int) -> Message:
        n = len(self.config.joint_names)
        if isinstance(msg, Setpoint):
            self._on_setpoint(msg, now_ns, n)
            return self.state()
        if isinstance(msg, StateRequest):
            return self.state()
        if isinstance(msg, Hello):
            return self.info()
        if isinstance(msg, Heartbeat):
            return Ack(AckStatus.OK)
        if isinstance(msg, ModeRequest):
            return self._on_mode(msg.mode, now_ns)
        if isinstance(msg, EStop):
            self._latch(Mode.ESTOP, FaultCode.ESTOP, msg.reason or "e-stop requested")
            return Ack(AckStatus.OK, "e-stop latched")
        if isinstance(msg, ClearFault):
            if self.mode in (Mode.FAULT, Mode.ESTOP):
                self.mode, self.fault = Mode.HOLD, FaultCode.NONE
                self._hold()
            return Ack(AckStatus.OK)
        if isinstance(msg, CalRead):
            return self.calibration
        if isinstance(msg, CalWrite):
            return self._on_cal_write(msg, n)
        return Ack(AckStatus.UNSUPPORTED, f"{type(msg).__name__} is not a host request")

    def _on_setpoint(self, msg: Setpoint, now_ns: int, n: int) -> None:
        self.counters.setpoints += 1
        if self.mode != Mode.POSITION:
            return  # ignored; the STATE reply tells the host which mode we are in
        target = msg.position.astype(np.float64)
        if target.size != n or not np.all(np.isfinite(target)):
            self._latch(Mode.FAULT, FaultCode.BAD_SETPOINT, "setpoint with wrong size or NaN/inf")
            return
        self._last_setpoint_ns = now_ns
        raw = self._to_raw(target)
        clipped = np.clip(raw, self._lo, self._hi)
        if not np.array_equal(clipped, raw):
            self.counters.limit_clamps += 1
        reach_ns = max(msg.reach_in_us, 1) * 1000
        self._segment = _Segment(self.command.copy(), clipped, now_ns, now_ns + reach_ns)

    def _on_mode(self, mode: Mode, now_ns: int) -> Message:
        if self.mode in (Mode.FAULT, Mode.ESTOP):
            return Ack(AckStatus.REJECTED, f"latched {self.mode.name}: send CLEAR_FAULT first")
        if mode not in (Mode.TORQUE_OFF, Mode.HOLD, Mode.POSITION):
            return Ack(AckStatus.BAD_REQUEST, f"mode {mode.name} cannot be requested")
        if mode != Mode.TORQUE_OFF and self.mode == Mode.TORQUE_OFF:
            self.command = self.plant.position.copy()  # torque on where the arm is: no jump
        self.mode = mode
        self._hold()
        self._watchdog_hold_ns = None  # the host chose this mode: it is alive and in charge
        if mode == Mode.POSITION:
            self._last_setpoint_ns = now_ns
        return Ack(AckStatus.OK, mode.name)

    def _on_cal_write(self, msg: CalWrite, n: int) -> Message:
        if self.mode != Mode.TORQUE_OFF:
            return Ack(AckStatus.REJECTED, "calibration can only be written with torque off")
        if msg.homing_offset.size != n:
            return Ack(AckStatus.BAD_REQUEST, f"calibration for {msg.homing_offset.size} joints, "
                       f"device has {n}")
        self.calibration = Calibration(
            msg.homing_offset.copy(), msg.drive_sign.copy(), msg.position_min.copy(),
            msg.position_max.copy(), msg.calibration_id,
        )
        return Ack(AckStatus.OK, "calibration stored")

    # -- servo loop -------------------------------------------------------------------------
    def tick(self, now_ns: int) -> list[Frame]:
        """One servo period. Returns unsolicited frames (FAULT) to send to the host."""
        self._now_us = now_ns // 1000
        cfg = self.config
        if self.mode == Mode.POSITION:
            silent_ms = (now_ns - (self._last_setpoint_ns or now_ns)) / 1e6
            if silent_ms > cfg.watchdog_ms:
                self.counters.watchdog_holds += 1
                self.mode = Mode.HOLD
                self._hold()
                self._watchdog_hold_ns = now_ns
        if self._watchdog_hold_ns is not None and self.mode == Mode.HOLD:
            host_silent_ms = (now_ns - (self._last_host_ns or 0)) / 1e6
            if host_silent_ms > cfg.watchdog_ms + cfg.fault_after_ms:
                self._latch(Mode.FAULT, FaultCode.WATCHDOG,
                            f"no setpoint for {cfg.watchdog_ms + cfg.fault_after_ms} ms")
        elif self.mode != Mode.HOLD:
            self._watchdog_hold_ns = None
        torque_on = self.mode != Mode.TORQUE_OFF
        if torque_on and self._segment is not None and self.mode == Mode.POSITION:
            desired = self._segment.at(now_ns)
            step = self._vmax * self._dt_s
            self.command = self.command + np.clip(desired - self.command, -step, step)
        self.plant.step(self.command, torque_on, self._dt_s)
        if torque_on and self.mode not in (Mode.FAULT, Mode.ESTOP):
            tol = cfg.limit_tolerance
            pos = self.plant.position
            if np.any(pos < self._lo - tol) or np.any(pos > self._hi + tol):
                self._latch(Mode.FAULT, FaultCode.JOINT_LIMIT, "joint outside its limits")
        out, self._outbox = self._outbox, []
        return out

    def resync_to_plant(self) -> None:
        """The plant was moved from outside (a simulated-world reset): hold where it now is."""
        self._hold()

    def _hold(self) -> None:
        self._segment = None
        self.command = self.plant.position.copy()

    def _latch(self, mode: Mode, code: FaultCode, detail: str) -> None:
        if self.mode in (Mode.FAULT, Mode.ESTOP) and mode == Mode.FAULT:
            return  # first fault wins; an e-stop still overrides a fault
        self.mode, self.fault = mode, code
        self._hold()
        self.counters.faults += 1
        self._outbox.append(to_frame(Fault(code, detail), 0, self._now_us))

    # -- views ---------------------------------------------------------------------------------
    def state(self) -> State:
        return State(
            mode=self.mode,
            fault=self.fault,
            position=self._to_user(self.plant.position),
            velocity=self._user_scale(self.plant.velocity),
            effort=self._user_scale(self.plant.effort),
        )

    def info(self) -> Info:
        cfg = self.config
        a, b = self._to_user(self._lo), self._to_user(self._hi)
        return Info(
            protocol_version=cfg.protocol_version,
            firmware_version=cfg.firmware_version,
            device_id=cfg.device_id,
            joint_names=cfg.joint_names,
            position_min=np.minimum(a, b),
            position_max=np.maximum(a, b),
            velocity_max=self._vmax,
            watchdog_ms=cfg.watchdog_ms,
            servo_rate_hz=cfg.servo_rate_hz,
        )
