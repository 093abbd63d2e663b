"""Checking a calibration against the robot.

- :func:`check_before_torque`: what the controller calls before it switches torque on. The
  calibration file must exist, be well-formed, be this robot's, and agree with what the motor
  controller holds (its ``calibration_id`` is the file's sha256, and every value matches).
- :func:`verification_move`: each joint in turn moves a little and back at reduced speed
  (tool-speed bound <= 250 mm/s, :mod:`calibration.motion`); a joint that does not move when
  commanded, or moves the wrong way, is an error.
- :func:`physical_check`: the verification as a technician does it (reference pose read back,
  the move, their confirmation), shared by ``calibrate run`` and ``calibrate verify``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration.calibration_file import (
    CalibrationFile,
    diff_joints,
    joints_from_message,
    load_calibration,
    save_calibration,
)
from calibration.errors import (
    CalibrationMismatchError,
    NoMovementError,
    VerificationError,
    WrongRobotError,
)
from calibration.hardware import identify, position_control, read_state
from calibration.joints import CalibrationOptions, JointSpec
from calibration.motion import move_duration_s, stream_move, tool_speed_bound
from calibration.prompter import Prompter, Table, signed
from firmware_bridge.bus import MotorBus
from firmware_bridge.errors import LinkError
from firmware_bridge.messages import Calibration, Mode

# A commanded joint that moves less than this fraction of the command "did not move".
MIN_MOVE_FRACTION = 0.5


def device_differences(cal: CalibrationFile, device: Calibration,
                       device_joint_names: Sequence[str]) -> list[str]:
    """How the motor controller's calibration differs from ``cal``, one line each (empty:
    they agree)."""
    names = tuple(device_joint_names)
    if names != cal.joint_names:
        return [f"the motor controller has joints {list(names)}, the file {list(cal.joint_names)}"]
    if device.calibration_id == "":  # the values are then the device's defaults: say so only
        return ["the motor controller holds no calibration (new, reset or replaced)"]
    dev = joints_from_message(device, names, [j.unit for j in cal.joints])
    out = [d.describe("file", "device") for d in diff_joints(cal.joints, dev)]
    if device.calibration_id != cal.sha256:
        out.append(f"the motor controller holds calibration {device.calibration_id[:12]}..., "
                   f"the file is {cal.sha256[:12]}...")
    return out


def check_before_torque(calibration: CalibrationFile | str | os.PathLike[str], robot_id: str,
                        bus: MotorBus) -> CalibrationFile:
    """Refuse to go on unless the calibration is usable: call before switching torque on.

    ``calibration`` is a path (loaded and checked) or an already loaded file; ``bus`` is
    connected (handshake done). Returns the calibration (its limits and sha256 are for the
    safety filter and the episode record). Only reads from the device.

    Raises CalibrationMissingError (no file: FileNotFoundError), CalibrationFileError
    (malformed or hash mismatch: ValueError), WrongRobotError (another robot's or other
    joints: ValueError), CalibrationMismatchError (the motor controller holds something else:
    RuntimeError), LinkError / DeviceTimeoutError from the bus.
    """
    if isinstance(calibration, CalibrationFile):
        cal, where = calibration, f"the calibration ({calibration.sha256[:12]}...)"
    else:
        cal, where = load_calibration(calibration, robot_id), f"calibration file {calibration}"
    if cal.robot_id != robot_id:
        raise WrongRobotError(f"{where} is for robot {cal.robot_id!r}, not {robot_id!r}: use "
                              "this robot's file or calibrate it (`ramp-edge calibrate run`)")
    info = bus.info
    if info is None:
        raise LinkError(f"the motor bus {bus.url} is not connected")
    if tuple(info.joint_names) != cal.joint_names:
        raise WrongRobotError(f"{where} has joints {list(cal.joint_names)}, the motor controller "
                              f"on {bus.url} reports {list(info.joint_names)}: calibrate this "
                              "robot (`ramp-edge calibrate run`)")
    problems = device_differences(cal, bus.read_calibration(), info.joint_names)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CalibrationMismatchError(
            f"torque stays off: the motor controller on {bus.url} disagrees with {where}: "
            f"{problems[0]}{more}. If the file is right: `ramp-edge calibrate apply`; if the "
            "robot changed: `ramp-edge calibrate run`")
    return cal


@dataclass(frozen=True)
class JointMove:
    """One joint's verification: commanded and measured displacement (joint unit), the
    duration of each half (s) and the planned peak of the tool-speed bound (m/s)."""

    name: str
    unit: str
    commanded: float
    measured: float
    duration_s: float
    planned_peak_tool_speed_m_s: float


@dataclass(frozen=True)
class VerificationReport:
    moves: tuple[JointMove, ...]
    tool_speed_limit_m_s: float
    planned_peak_tool_speed_m_s: float
    measured_peak_tool_speed_m_s: float  # from the velocities the device reported

    def table(self) -> Table:
        rows = tuple((m.name, f"{signed(m.commanded)} {m.unit}", f"{signed(m.measured)} {m.unit}",
                      f"{m.duration_s:.2f} s", f"{m.planned_peak_tool_speed_m_s:.3f}")
                     for m in self.moves)
        return Table(("joint", "commanded", "measured", "each way", "tool bound m/s"), rows,
                     ("ok",) * len(rows))

    def to_dict(self) -> dict[str, object]:
        return {"tool_speed_limit_m_s": self.tool_speed_limit_m_s,
                "planned_peak_tool_speed_m_s": round(self.planned_peak_tool_speed_m_s, 4),
                "measured_peak_tool_speed_m_s": round(self.measured_peak_tool_speed_m_s, 4),
                "moves": [{"joint": m.name, "commanded": round(m.commanded, 6),
                           "measured": round(m.measured, 6)} for m in self.moves]}


def _per_joint(joints: Sequence[JointSpec], cal: CalibrationFile, what: str) -> np.ndarray:
    by_name = {j.name: j for j in joints}
    missing = [n for n in cal.joint_names if n not in by_name]
    if missing:
        raise WrongRobotError(f"the robot config has no joint(s) {', '.join(missing)} of the "
                              "calibration")
    return np.array([getattr(by_name[n], what) for n in cal.joint_names], np.float64)


def verification_move(
    bus: MotorBus,
    cal: CalibrationFile,
    joints: Sequence[JointSpec],
    *,
    amplitude: Mapping[str, float],
    tool_speed_m_s: float,
    velocity_fraction: float = 0.5,
    announce: Callable[[str], None] = lambda _text: None,
) -> VerificationReport:
    """Move each joint in turn by ``amplitude[unit]`` (towards its positive direction unless
    its calibrated range leaves no room) and back, from where the arm is, at reduced speed:
    the tool-speed bound stays at or below ``tool_speed_m_s`` and each joint at or below
    ``velocity_fraction`` of its velocity limits (config and device).

    Checks the device holds ``cal`` first (:func:`check_before_torque`) and that the arm is
    inside its calibrated range. The device holds the arm afterwards (and on any error).
    Raises NoMovementError (a joint did not move when commanded), VerificationError (wrong
    direction, fault, outside its range), CalibrationMismatchError, DeviceTimeoutError."""
    check_before_torque(cal, cal.robot_id, bus)
    assert bus.info is not None
    reach = _per_joint(joints, cal, "reach_m")
    vmax = np.minimum(_per_joint(joints, cal, "max_velocity_per_s"),
                      np.asarray(bus.info.velocity_max, np.float64)) * velocity_fraction
    v = cal.vectors()
    lo, hi = v["position_min"], v["position_max"]
    position = read_state(bus).position.astype(np.float64)
    slack = np.array([0.05 if j.unit == "rad" else 0.002 for j in cal.joints])
    outside = [f"{j.name} reads {position[i]:+.3f} {j.unit}, outside [{lo[i]:+.3f}, "
               f"{hi[i]:+.3f}]" for i, j in enumerate(cal.joints)
               if not lo[i] - slack[i] <= position[i] <= hi[i] + slack[i]]
    if outside:
        raise VerificationError(f"not moving: {'; '.join(outside)}. Move the arm into its range "
                                "(reference pose) by hand, or re-run `ramp-edge calibrate run` "
                                "if the range is wrong")
    moves: list[JointMove] = []
    planned_peak = measured_peak = 0.0
    with position_control(bus):
        for i, joint in enumerate(cal.joints):
            a = min(float(amplitude[joint.unit]), (hi[i] - lo[i]) / 4)
            direction = 1.0 if position[i] + a <= hi[i] else -1.0
            start = position.copy()
            target = start.copy()
            target[i] += direction * a
            delta = target - start
            duration = move_duration_s(delta, reach, vmax, tool_speed_m_s)
            planned = math.pi / 2 * tool_speed_bound(delta, reach) / duration
            note = "" if direction > 0 else " (negative: no room on the positive side)"
            announce(f"{joint.name}: {direction * a:+.3f} {joint.unit}{note} and back, "
                     f"{duration:.2f} s each way")
            tol = np.full(start.shape, np.inf)
            tol[i] = 0.1 * a
            out = stream_move(bus, start, target, duration, reach, settle_tol=tol)
            moved = float(out.state.position[i] - start[i])
            if abs(moved) < MIN_MOVE_FRACTION * a:
                raise NoMovementError(
                    f"{joint.name} did not move when commanded: asked {direction * a:+.3f} "
                    f"{joint.unit}, it moved {moved:+.3f} {joint.unit}. Check its motor's power "
                    "and cable, a brake or a jam; torque is holding the arm")
            if moved * direction < 0:
                raise VerificationError(
                    f"{joint.name} moved the wrong way: asked {direction * a:+.3f} {joint.unit}, "
                    f"it moved {moved:+.3f} {joint.unit}; its drive sign is wrong: re-run "
                    "`ramp-edge calibrate run`")
            back = stream_move(bus, out.state.position.astype(np.float64), start, duration,
                               reach, settle_tol=tol)
            position = back.state.position.astype(np.float64)
            measured_peak = max(measured_peak, out.measured_peak_tool_speed_m_s,
                                back.measured_peak_tool_speed_m_s)
            planned_peak = max(planned_peak, planned)
            moves.append(JointMove(joint.name, joint.unit, direction * a, moved, duration,
                                   planned))
    return VerificationReport(tuple(moves), tool_speed_m_s, planned_peak, measured_peak)


def physical_check(bus: MotorBus, cal: CalibrationFile, joints: Sequence[JointSpec],
                   prompter: Prompter, options: CalibrationOptions) -> VerificationReport | None:
    """The technician's check of a calibration the device holds: torque off, the arm in its
    reference pose (readings shown against the expected values), the verification move, and
    their confirmation. Returns the report, or None if they chose not to move.

    Raises VerificationError when they do not confirm, and what :func:`verification_move`
    raises. Torque is on (holding) afterwards when the move ran."""
    if read_state(bus).mode != Mode.TORQUE_OFF:
        prompter.wait("verify.torque_off", "Torque goes OFF next so you can move the arm: "
                      "support it, then press Enter.")
        bus.set_mode(Mode.TORQUE_OFF)
    grippers = {j.name for j in joints if j.gripper}
    prompter.wait("verify.pose", "Put the arm in its marked reference pose"
                  + (" and close the gripper" if grippers else "") + ", then press Enter.")
    position = read_state(bus).position.astype(np.float64)
    rows, status = [], []
    for i, j in enumerate(cal.joints):
        expected = 0.0 if j.name in grippers else options.reference(j.name)
        off = position[i] - expected
        good = abs(off) <= options.reference_tolerance[j.unit]
        rows.append((j.name, signed(position[i]), signed(expected), f"{signed(off)} {j.unit}",
                     "ok" if good else "CHECK"))
        status.append("ok" if good else "warn")
    prompter.show(Table(("joint", "reads", "expected", "off by", ""), tuple(rows), tuple(status)))
    if "warn" in status:
        prompter.warn("some joints do not read their reference value: the arm is not exactly "
                      "in the reference pose, or their homing is off")
    go = prompter.confirm(
        "verify.start",
        f"Verification move: torque goes ON and each joint in turn moves slowly a little and "
        f"back (tool at most {options.tool_speed_m_s * 1000:.0f} mm/s). Keep clear of the arm. "
        "Start?", default=True)
    if not go:
        prompter.warn("verification move skipped: the calibration stays unverified")
        return None
    report = verification_move(bus, cal, joints, amplitude=options.verify_amplitude,
                               tool_speed_m_s=options.tool_speed_m_s,
                               velocity_fraction=options.velocity_fraction,
                               announce=prompter.say)
    prompter.show(report.table())
    prompter.say(f"tool-speed bound: planned peak {report.planned_peak_tool_speed_m_s:.3f} m/s, "
                 f"measured peak {report.measured_peak_tool_speed_m_s:.3f} m/s (limit "
                 f"{report.tool_speed_limit_m_s:.3f})")
    if not prompter.confirm("verify.result", "Did each joint move as announced (its positive "
                            "direction unless noted) and come back?", default=None):
        raise VerificationError(
            "the verification move was not confirmed: the calibration stays unverified. Check "
            "the joint that moved wrongly (mounting, drive sign) and run `ramp-edge calibrate "
            "run` again")
    return report


@dataclass(frozen=True)
class VerifyOutcome:
    """What ``calibrate verify`` found: the file, how the device differs from it (empty: they
    agree) and the verification move's report (None: no move)."""

    calibration: CalibrationFile
    path: Path
    differences: tuple[str, ...]
    report: VerificationReport | None


def _reference_from_file(cal: CalibrationFile) -> dict[str, float]:
    ref = cal.procedure.get("reference_pose", {})
    if not isinstance(ref, Mapping):
        return {}
    return {str(k): float(v) for k, v in ref.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and str(k) in
            cal.joint_names}


def verify_robot(bus: MotorBus, path: str | os.PathLike[str], robot_id: str,
                 joints: Sequence[JointSpec], prompter: Prompter,
                 options: CalibrationOptions | None = None, *, move: bool = True
                 ) -> VerifyOutcome:
    """``calibrate verify``: compare the file at ``path`` with the motor controller and, if they
    agree and ``move``, run the technician's physical check; a confirmed check marks the file
    verified (same sha256). Returns the outcome; differences are reported, not raised.

    Raises CalibrationMissingError, CalibrationFileError, WrongRobotError, MotorMissingError,
    MotorIdentityError, and what :func:`physical_check` raises."""
    options = options or CalibrationOptions()
    prompter.section("Compare the calibration file with the motor controller")
    cal = load_calibration(path, robot_id)
    ident = identify(bus, [j.name for j in joints])
    if ident.joint_names != cal.joint_names:
        raise WrongRobotError(f"calibration file {path} has joints {list(cal.joint_names)}, the "
                              f"motor controller reports {list(ident.joint_names)}")
    diffs = tuple(device_differences(cal, ident.calibration, ident.joint_names))
    prompter.say(f"file {path}: sha256 {cal.sha256[:12]}..., "
                 + ("verified " + str(cal.verified.get("at", "")) if cal.verified
                    else "not verified"))
    if diffs:
        for line in diffs:
            prompter.warn(line)
        return VerifyOutcome(cal, Path(path), diffs, None)
    prompter.ok(f"the motor controller ({ident.device_id}) holds this calibration")
    if not move:
        return VerifyOutcome(cal, Path(path), (), None)
    if not options.reference_pose:
        options = dataclasses.replace(options, reference_pose=_reference_from_file(cal))
    prompter.section("Physical check")
    report = physical_check(bus, cal, joints, prompter, options)
    if report is not None:
        cal = cal.with_verification(by=options.technician, **report.to_dict())
        save_calibration(cal, path)
        prompter.ok(f"verified; {path} updated (same sha256)")
    return VerifyOutcome(cal, Path(path), (), report)


def apply_calibration(bus: MotorBus, path: str | os.PathLike[str], robot_id: str,
                      joint_names: Sequence[str]) -> CalibrationFile:
    """Write the file's calibration to the motor controller (switching torque OFF first: the
    caller warns the technician) and read it back. Returns the calibration.

    Raises CalibrationMissingError, CalibrationFileError, WrongRobotError, MotorMissingError,
    MotorIdentityError, CalibrationMismatchError (the device stored something else),
    DeviceRejectedError (a latched device refuses the mode change)."""
    cal = load_calibration(path, robot_id)
    ident = identify(bus, joint_names)
    if ident.joint_names != cal.joint_names:
        raise WrongRobotError(f"calibration file {path} has joints {list(cal.joint_names)}, the "
                              f"motor controller reports {list(ident.joint_names)}")
    bus.set_mode(Mode.TORQUE_OFF)
    bus.write_calibration(cal.to_message())
    problems = device_differences(cal, bus.read_calibration(), ident.joint_names)
    if problems:
        raise CalibrationMismatchError(f"the motor controller did not store the calibration as "
                                       f"sent: {problems[0]}")
    return cal
