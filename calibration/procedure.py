"""The guided calibration flow, as library code driven by a prompter (no input() here).

Steps, in order:

1. **Identify**: handshake facts (device id, firmware, protocol), every configured motor
   present and answering, no duplicate ids, same joint order as the config.
2. **Torque off**: the arm goes limp; the technician supports it.
3. **Reference pose**: the arm in its marked reference pose; each joint's raw reading there
   gives its homing offset, ``offset = raw_ref - drive_sign * reference_value`` (with the
   default reference value 0: the raw reading itself).
4. **Directions**: each arm joint moved by hand a little in its positive (marked) direction; a
   reading that decreases means ``drive_sign = -1``. Before the range step so the live table
   already shows calibrated values.
5. **Gripper**: closed (its zero: homing offset = raw closed reading), then open; the stroke
   gives its range and its drive sign (a gripper mounted mirrored reads decreasing).
6. **Range of motion**: every joint moved by hand end stop to end stop while a live table of
   min / position / max refreshes at 10 Hz.
7. **Write**: summary, then the calibration goes to the motor controller (torque off) and is
   read back, then to the file (atomically).
8. **Verify**: reference pose read back, a verification move at reduced speed
   (:mod:`calibration.verify`), the technician's confirmation; the file is marked verified.

Raw readings come through the calibration the device held at the start
(:class:`calibration.hardware.RawReader`), so the device is untouched until step 7.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration.calibration_file import (
    CalibrationFile,
    JointCalibration,
    diff_joints,
    joints_from_message,
    save_calibration,
)
from calibration.errors import (
    CalibrationAborted,
    CalibrationMismatchError,
    DeviceLatchedError,
    MotorIdentityError,
    NoMovementError,
    OffsetOutOfRangeError,
    RangeTooSmallError,
)
from calibration.hardware import DeviceIdentity, RawReader, identify, read_state
from calibration.joints import CalibrationOptions, JointSpec
from calibration.prompter import Prompter, Table, signed
from calibration.verify import VerificationReport, physical_check
from firmware_bridge.bus import MotorBus
from firmware_bridge.messages import Mode

STEPS = 8
REFERENCE_SAMPLES = 5


@dataclass(frozen=True)
class CalibrationOutcome:
    """The calibration written (device and file), where, for which device, and the
    verification move's report (None if it did not run: the file is then unverified)."""

    calibration: CalibrationFile
    path: Path
    identity: DeviceIdentity
    verification: VerificationReport | None


def _fmt(value: float, unit: str) -> str:
    return signed(value, 4 if unit == "m" else 3)


class _Flow:
    def __init__(self, bus: MotorBus, robot_id: str, joints: Sequence[JointSpec],
                 prompter: Prompter, path: Path, options: CalibrationOptions) -> None:
        self.bus, self.robot_id, self.joints = bus, robot_id, tuple(joints)
        self.p, self.path, self.o = prompter, path, options
        self.n = len(self.joints)
        self.names = tuple(j.name for j in self.joints)
        self.units = tuple(j.unit for j in self.joints)
        self.sign = np.ones(self.n, np.int8)
        self.offset = np.zeros(self.n)
        self.user_min = np.zeros(self.n)
        self.user_max = np.zeros(self.n)
        self.notes: list[list[str]] = [[] for _ in range(self.n)]
        self.raw_lo = np.full(self.n, np.inf)
        self.raw_hi = np.full(self.n, -np.inf)
        self.arm_idx = [i for i, j in enumerate(self.joints) if not j.gripper]
        self.grip_idx = [i for i, j in enumerate(self.joints) if j.gripper]

    def step(self, k: int, title: str) -> None:
        self.p.section(f"Step {k}/{STEPS}: {title}")

    def _seen(self, raw: np.ndarray) -> None:
        self.raw_lo = np.minimum(self.raw_lo, raw)
        self.raw_hi = np.maximum(self.raw_hi, raw)

    def run(self) -> CalibrationOutcome:
        names = self.names
        if len(set(names)) != len(names):
            dup = sorted({x for x in names if names.count(x) > 1})
            raise MotorIdentityError(f"joint name(s) {', '.join(dup)} appear more than once")
        self.o.check_joints(self.joints)
        ident = self.identify()
        self.reader = RawReader(self.bus, ident.calibration)
        self.raw_min_dev, self.raw_max_dev = ident.raw_limits()
        self.torque_off()
        raw_ref = self.reference_pose()
        self.directions()
        self.offsets(raw_ref)
        self.gripper()
        self.range_of_motion()
        cal = self.build(ident)
        self.write(cal)
        report = None
        if self.o.verify_move:
            self.step(8, "verification move")
            report = physical_check(self.bus, cal, self.joints, self.p, self.o)
            if report is not None:
                cal = cal.with_verification(by=self.o.technician,
                                            **report.to_dict())
                save_calibration(cal, self.path)
        else:
            self.p.section(f"Step 8/{STEPS}: verification move skipped (as asked)")
        self.summary(cal, report)
        return CalibrationOutcome(cal, self.path, ident, report)

    # -- 1 ------------------------------------------------------------------------------------
    def identify(self) -> DeviceIdentity:
        self.step(1, "identify the motor controller and its motors")
        ident = identify(self.bus, self.names)
        self.p.say(f"{ident.device_id} on {ident.url}: firmware {ident.firmware_version}, "
                   f"protocol {ident.protocol_version}, servo {ident.servo_rate_hz} Hz, "
                   f"watchdog {ident.watchdog_ms} ms")
        held = ident.calibration.calibration_id
        self.p.say("calibration on the device: " + (f"{held[:12]}..." if held else "none"))
        rows = tuple((j.name, j.unit, _fmt(ident.position[i], j.unit),
                      f"[{_fmt(ident.device_min[i], j.unit)}, {_fmt(ident.device_max[i], j.unit)}]",
                      "gripper" if j.gripper else "")
                     for i, j in enumerate(self.joints))
        self.p.show(Table(("motor", "unit", "reading", "device limits", ""), rows,
                          ("ok",) * len(rows)))
        if ident.mode in (Mode.FAULT, Mode.ESTOP):
            if not self.o.clear_latched:
                raise DeviceLatchedError(
                    f"the motor controller is latched in {ident.mode.name} ({ident.fault.name}):"
                    " check the robot, then run again with --clear-latched")
            self.bus.clear_fault()
            self.p.warn(f"cleared the latched {ident.mode.name} ({ident.fault.name}) as asked")
        self.p.ok(f"all {self.n} motors answer")
        if not self.p.confirm("identity", "Is this the robot you are calibrating?",
                              default=True):
            raise CalibrationAborted("stopped: not the robot to calibrate (nothing changed)")
        return ident

    # -- 2 ------------------------------------------------------------------------------------
    def torque_off(self) -> None:
        self.step(2, "torque off")
        self.p.wait("torque_off", "Torque goes OFF next and the arm goes limp: support it, "
                    "then press Enter.")
        self.bus.set_mode(Mode.TORQUE_OFF)
        state = read_state(self.bus)
        if state.mode != Mode.TORQUE_OFF:
            raise MotorIdentityError(f"the motor controller did not switch torque off (mode "
                                     f"{state.mode.name})")
        self.p.ok("torque is off")

    # -- 3 ------------------------------------------------------------------------------------
    def reference_pose(self) -> np.ndarray:
        self.step(3, "homing at the reference pose")
        values = ", ".join(f"{self.names[i]} {self.o.reference(self.names[i]):+g}"
                           for i in self.arm_idx)
        if self.arm_idx:
            self.p.say(f"reference values: {values}")
        self.p.wait("reference_pose", "Put the arm in its marked reference pose (line up the "
                    "marks on every joint) and hold it still, then press Enter.")
        raw = self.reader.read(REFERENCE_SAMPLES)
        self._seen(raw)
        self.p.ok("reference pose recorded")
        return raw

    # -- 4 ------------------------------------------------------------------------------------
    def directions(self) -> None:
        self.step(4, "directions")
        for i in self.arm_idx:
            name, unit = self.names[i], self.units[i]
            given = self.o.drive_signs.get(name)
            if given is not None:
                self.sign[i] = given
                self.notes[i].append("sign given")
                self.p.say(f"{name}: drive sign {given:+d} (given)")
                continue
            need = self.o.direction_min_move[unit]
            moved = 0.0
            for attempt in range(self.o.direction_attempts):
                before = self.reader.read()
                self.p.wait(f"direction.{name}", f"Move {name} by hand a little (about 10 "
                            "degrees) in its POSITIVE direction (the + mark), then press Enter.")
                after = self.reader.read()
                self._seen(before)
                self._seen(after)
                delta = after - before
                moved = float(delta[i])
                scale = np.array([1.0 if u == unit else 0.0 for u in self.units])
                others = np.abs(delta * scale)
                others[i] = 0.0
                if abs(moved) >= need and others.max() <= abs(moved):
                    self.sign[i] = 1 if moved > 0 else -1
                    if self.sign[i] < 0:
                        self.notes[i].append("inverted")
                    self.p.ok(f"{name}: reading went {'up' if moved > 0 else 'down'} by "
                              f"{abs(moved):.3f} {unit}: drive sign {int(self.sign[i]):+d}")
                    break
                left = self.o.direction_attempts - attempt - 1
                if abs(moved) >= need:
                    other = self.names[int(np.argmax(others))]
                    self.p.warn(f"{other} moved more than {name}: move {name} only "
                                f"({left} tries left)")
                else:
                    self.p.warn(f"{name} moved {moved:+.3f} {unit}; at least {need:g} {unit} "
                                f"is needed ({left} tries left)")
            else:
                raise NoMovementError(
                    f"no clear movement of {name} seen after {self.o.direction_attempts} "
                    f"tries (last {moved:+.3f} {unit}, at least {need:g} {unit} needed, other "
                    "joints still): move it further, or check its encoder and cable (the "
                    "reading does not change)")

    def offsets(self, raw_ref: np.ndarray) -> None:
        for i in self.arm_idx:
            self.offset[i] = raw_ref[i] - self.sign[i] * self.o.reference(self.names[i])
            self._check_offset(i, "reference pose")

    def _check_offset(self, i: int, where: str) -> None:
        name, unit = self.names[i], self.units[i]
        limit = self.o.max_homing_offset[unit]
        if abs(self.offset[i]) > limit:
            raise OffsetOutOfRangeError(
                f"homing offset of {name} would be {self.offset[i]:+.3f} {unit}, beyond what the "
                f"motor controller can store (+-{limit:.3f} {unit}): {name} was not in its "
                f"{where}, or its horn or encoder is mounted a turn off. Fix that and run again")

    # -- 5 ------------------------------------------------------------------------------------
    def gripper(self) -> None:
        if not self.grip_idx:
            return
        self.step(5, "gripper")
        for i in self.grip_idx:
            name, unit = self.names[i], self.units[i]
            self.p.wait(f"{name}.closed", f"Close {name} fully (fingers touching), then press "
                        "Enter.")
            closed = float(self.reader.read(REFERENCE_SAMPLES)[i])
            self.offset[i] = closed
            self._check_offset(i, "closed position")
            given_range = self.o.ranges.get(name)
            given_sign = self.o.drive_signs.get(name)
            if given_range is not None and given_sign is not None:
                self.sign[i] = given_sign
                self.user_min[i], self.user_max[i] = given_range
                self.notes[i] += ["sign given", "range given"]
                self.p.ok(f"{name}: closed recorded; sign and range given")
                continue
            self.p.wait(f"{name}.open", f"Open {name} fully, then press Enter.")
            opened = float(self.reader.read(REFERENCE_SAMPLES)[i])
            stroke = opened - closed
            need = self.o.min_range[unit]
            if abs(stroke) < need:
                raise RangeTooSmallError(
                    f"{name} stroke too small: closed reads {closed:+.4f}, open reads "
                    f"{opened:+.4f} ({abs(stroke):.4f} {unit} apart, at least {need:g} {unit} "
                    "needed): close it fully at the closed prompt and open it fully at the "
                    "open prompt")
            measured_sign = 1 if stroke > 0 else -1
            self.sign[i] = given_sign if given_sign is not None else measured_sign
            if given_sign is not None and given_sign != measured_sign:
                self.p.warn(f"{name}: the stroke says drive sign {measured_sign:+d}, the given "
                            f"sign {given_sign:+d} is used")
            if self.sign[i] < 0:
                self.notes[i].append("inverted")
            self.user_min[i], self.user_max[i] = given_range or (0.0, abs(stroke))
            self.p.ok(f"{name}: stroke {abs(stroke):.4f} {unit}, drive sign "
                      f"{int(self.sign[i]):+d}" + (" (mounted mirrored)" if self.sign[i] < 0
                                                   else ""))
            self._clip_to_device(i)

    # -- 6 ------------------------------------------------------------------------------------
    def _user(self, raw: np.ndarray, i: int) -> float:
        return float(self.sign[i] * (raw[i] - self.offset[i]))

    def range_of_motion(self) -> None:
        given = [i for i in self.arm_idx if self.names[i] in self.o.ranges]
        record = [i for i in self.arm_idx if i not in given]
        self.step(6, "range of motion")
        for i in given:
            self.user_min[i], self.user_max[i] = self.o.ranges[self.names[i]]
            self.notes[i].append("range given")
            self.p.say(f"{self.names[i]}: range {self.user_min[i]:+.3f}..{self.user_max[i]:+.3f}"
                       f" {self.units[i]} (given)")
        if record:
            last = [np.full(self.n, np.nan)]

            def sample() -> Table:
                raw = self.reader.read()
                last[0] = raw
                self._seen(raw)
                return self._range_table(record, raw)

            self.p.live("range", "Move every joint by hand slowly through its full range, end "
                        "stop to end stop, one at a time; press Enter when each row says ok.",
                        sample, self.o.range_period_s)
            small = []
            for i in record:
                a = self._user(self.raw_lo, i)
                b = self._user(self.raw_hi, i)
                self.user_min[i], self.user_max[i] = min(a, b), max(a, b)
                span = self.user_max[i] - self.user_min[i]
                need = self.o.min_range[self.units[i]]
                if span < need:
                    small.append(f"{self.names[i]} ({span:.3f} {self.units[i]} recorded, at "
                                 f"least {need:g} needed)")
            if small:
                raise RangeTooSmallError(
                    f"range of motion too small for {', '.join(small)}: move each joint from "
                    "end stop to end stop while the table runs, then run again")
        for i in self.arm_idx:
            self._clip_to_device(i)
        self.p.ok("ranges recorded")

    def _range_table(self, record: list[int], raw: np.ndarray) -> Table:
        rows, status = [], []
        for i in record:
            unit = self.units[i]
            a, b = self._user(self.raw_lo, i), self._user(self.raw_hi, i)
            lo, hi = min(a, b), max(a, b)
            need = self.o.min_range[unit]
            good = hi - lo >= need
            rows.append((self.names[i], _fmt(lo, unit), _fmt(self._user(raw, i), unit),
                         _fmt(hi, unit), f"{hi - lo:.3f} {unit}",
                         "ok" if good else f"need {need:g}"))
            status.append("ok" if good else None)
        return Table(("joint", "min", "position", "max", "range", ""), tuple(rows), tuple(status))

    def _clip_to_device(self, i: int) -> None:
        """Keep the calibrated range inside the device's own limits (the device faults past
        them with torque on)."""
        a = self.sign[i] * (self.raw_min_dev[i] - self.offset[i])
        b = self.sign[i] * (self.raw_max_dev[i] - self.offset[i])
        dev_lo, dev_hi = min(a, b), max(a, b)
        lo, hi = max(self.user_min[i], dev_lo), min(self.user_max[i], dev_hi)
        if (lo, hi) != (self.user_min[i], self.user_max[i]):
            if not lo < hi:
                raise RangeTooSmallError(
                    f"{self.names[i]}: the range {self.user_min[i]:+.3f}..{self.user_max[i]:+.3f} "
                    f"lies outside the motor controller's limits {dev_lo:+.3f}..{dev_hi:+.3f}")
            self.p.warn(f"{self.names[i]}: range clipped to the motor controller's limits "
                        f"{lo:+.3f}..{hi:+.3f} {self.units[i]}")
            self.notes[i].append("clipped to device limits")
            self.user_min[i], self.user_max[i] = lo, hi

    # -- 7 ------------------------------------------------------------------------------------
    def build(self, ident: DeviceIdentity) -> CalibrationFile:
        joints = [JointCalibration(self.names[i], self.units[i], float(self.offset[i]),
                                   int(self.sign[i]), float(self.user_min[i]),
                                   float(self.user_max[i])) for i in range(self.n)]
        procedure = {
            "reference_pose": {self.names[i]: self.o.reference(self.names[i])
                               for i in self.arm_idx},
            "grippers": [self.names[i] for i in self.grip_idx],
            "given_drive_signs": sorted(self.o.drive_signs),
            "given_ranges": sorted(self.o.ranges),
            "min_range": dict(self.o.min_range),
            "tool_speed_m_s": self.o.tool_speed_m_s,
        }
        return CalibrationFile.create(self.robot_id, joints, technician=self.o.technician,
                                      device=ident.to_dict(), procedure=procedure)

    def _cal_table(self, cal: CalibrationFile) -> Table:
        rows = tuple((j.name, _fmt(j.homing_offset, j.unit), f"{j.drive_sign:+d}",
                      _fmt(j.position_min, j.unit), _fmt(j.position_max, j.unit), j.unit,
                      ", ".join(self.notes[i]))
                     for i, j in enumerate(cal.joints))
        status = tuple("warn" if "inverted" in self.notes[i] else "ok" for i in range(self.n))
        return Table(("joint", "offset", "sign", "min", "max", "unit", "notes"), rows, status)

    def write(self, cal: CalibrationFile) -> None:
        self.step(7, "write")
        self.p.show(self._cal_table(cal))
        self.p.say(f"sha256 {cal.sha256}")
        if not self.p.confirm("write", f"Write this calibration to the motor controller and to "
                              f"{self.path}?", default=True):
            raise CalibrationAborted("stopped before writing: nothing was changed")
        self.bus.write_calibration(cal.to_message())  # accepted only with torque off
        held = self.bus.read_calibration()
        dev = joints_from_message(held, self.names, self.units)
        diffs = diff_joints(cal.joints, dev)
        if held.calibration_id != cal.sha256 or diffs:
            first = diffs[0].describe("sent", "stored") if diffs else "calibration_id differs"
            raise CalibrationMismatchError(f"the motor controller did not store the calibration "
                                           f"as sent ({first}); nothing was written to the file")
        self.p.ok("written to the motor controller and read back")
        save_calibration(cal, self.path)
        self.p.ok(f"written to {self.path}")

    # -- summary ------------------------------------------------------------------------------
    def summary(self, cal: CalibrationFile, report: VerificationReport | None) -> None:
        self.p.section("Summary")
        self.p.show(self._cal_table(cal))
        self.p.say(f"file    {self.path}")
        self.p.say(f"sha256  {cal.sha256}")
        inverted = [self.names[i] for i in range(self.n) if self.sign[i] < 0]
        if inverted:
            self.p.say(f"inverted: {', '.join(inverted)} (drive sign -1)")
        if report is not None:
            self.p.ok(f"verified: every joint moved when commanded; tool-speed bound peaked at "
                      f"{report.measured_peak_tool_speed_m_s:.3f} m/s (limit "
                      f"{report.tool_speed_limit_m_s:.3f})")
            self.p.say("torque is ON: the motor controller holds the arm")
        else:
            self.p.warn("not verified: run `ramp-edge calibrate verify` before using the robot")
            self.p.say("torque is OFF")


def run_calibration(
    bus: MotorBus,
    robot_id: str,
    joints: Sequence[JointSpec],
    prompter: Prompter,
    path: str | Path,
    options: CalibrationOptions | None = None,
) -> CalibrationOutcome:
    """Run the guided calibration (module docstring) on a connected ``bus``: writes the
    calibration to the motor controller and to ``path``, then verifies it.

    ``joints``: the configured joints, in the configured order. Raises MotorMissingError,
    MotorIdentityError, NoMovementError, RangeTooSmallError, OffsetOutOfRangeError,
    CalibrationAborted (the technician quit or declined: nothing written if before step 7),
    VerificationError, CalibrationMismatchError, AnswersError, and the bus's errors. Torque is
    left off, or holding after a verification move. A device latched in FAULT or ESTOP raises
    DeviceLatchedError unless ``options.clear_latched``."""
    return _Flow(bus, robot_id, joints, prompter, Path(path), options or CalibrationOptions()
                 ).run()
