"""What the calibration flow knows about each joint, and the flow's settings with their
defaults (each overridable from an answers file or flags)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from calibration.answers import Answers
from calibration.calibration_file import MAX_HOMING_OFFSET, UNITS
from calibration.errors import AnswersError
from calibration.motion import TOOL_SPEED_LIMIT_M_S


@dataclass(frozen=True)
class JointSpec:
    """One joint as the robot config describes it.

    ``unit``: "rad" (revolute) or "m" (prismatic). ``reach_m``: the largest distance from the
    joint's axis to the tool (m; see :mod:`calibration.motion` for prismatic joints), used to
    bound the tool's speed. ``max_velocity_per_s``: the config's velocity limit (unit/s).
    ``gripper``: calibrated from its closed and open positions rather than the reference pose.
    """

    name: str
    unit: str = "rad"
    reach_m: float = 0.0
    max_velocity_per_s: float = math.inf
    gripper: bool = False

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"joint {self.name!r}: unit must be 'rad' or 'm'")
        if not self.reach_m >= 0:
            raise ValueError(f"joint {self.name!r}: reach_m must be >= 0")
        if not self.max_velocity_per_s > 0:
            raise ValueError(f"joint {self.name!r}: max_velocity_per_s must be > 0")


# A range of motion below this is a technician who did not move the joint, or a jammed one:
# 0.35 rad (20 degrees) for revolute joints, 5 mm of gripper stroke.
MIN_RANGE: Mapping[str, float] = {"rad": 0.35, "m": 0.005}
# A direction check needs at least this much movement (about 3 degrees; 2 mm).
DIRECTION_MIN_MOVE: Mapping[str, float] = {"rad": 0.05, "m": 0.002}
# How far each joint moves in the verification move (about 6 degrees; 1 cm).
VERIFY_AMPLITUDE: Mapping[str, float] = {"rad": 0.1, "m": 0.01}
# Reading the reference pose again during verification: off by more than this is reported.
REFERENCE_TOLERANCE: Mapping[str, float] = {"rad": 0.05, "m": 0.002}
# The verification move also stays at or below this fraction of each joint's velocity limits.
VERIFY_VELOCITY_FRACTION = 0.5


@dataclass(frozen=True)
class CalibrationOptions:
    """Settings of the flow. Per-unit mappings are keyed "rad" and "m"."""

    reference_pose: Mapping[str, float] = field(default_factory=dict)  # default 0 per joint
    drive_signs: Mapping[str, int] = field(default_factory=dict)  # given: not measured
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # given, user units
    min_range: Mapping[str, float] = field(default_factory=lambda: dict(MIN_RANGE))
    max_homing_offset: Mapping[str, float] = field(
        default_factory=lambda: dict(MAX_HOMING_OFFSET))
    direction_min_move: Mapping[str, float] = field(
        default_factory=lambda: dict(DIRECTION_MIN_MOVE))
    direction_attempts: int = 3
    verify_move: bool = True
    verify_amplitude: Mapping[str, float] = field(default_factory=lambda: dict(VERIFY_AMPLITUDE))
    reference_tolerance: Mapping[str, float] = field(
        default_factory=lambda: dict(REFERENCE_TOLERANCE))
    tool_speed_m_s: float = TOOL_SPEED_LIMIT_M_S
    velocity_fraction: float = VERIFY_VELOCITY_FRACTION
    range_period_s: float = 0.1  # live table refresh (10 Hz) and range sampling
    technician: str = ""
    clear_latched: bool = False  # clear a latched fault or e-stop (after checking the robot)

    def __post_init__(self) -> None:
        if not 0 < self.tool_speed_m_s <= TOOL_SPEED_LIMIT_M_S:
            raise ValueError(f"tool_speed_m_s must be in (0, {TOOL_SPEED_LIMIT_M_S}]")
        if not 0 < self.velocity_fraction <= 1:
            raise ValueError("velocity_fraction must be in (0, 1]")

    def reference(self, name: str) -> float:
        return float(self.reference_pose.get(name, 0.0))

    def with_answers(self, answers: Answers) -> CalibrationOptions:
        """These options overridden by what an answers file says."""
        changes: dict[str, object] = {}
        if answers.reference_pose:
            changes["reference_pose"] = {**self.reference_pose, **answers.reference_pose}
        if answers.drive_signs:
            changes["drive_signs"] = {**self.drive_signs, **answers.drive_signs}
        if answers.ranges:
            changes["ranges"] = {**self.ranges, **answers.ranges}
        if answers.verify_move is not None:
            changes["verify_move"] = answers.verify_move
        if answers.verify_amplitude:
            changes["verify_amplitude"] = {**self.verify_amplitude, **answers.verify_amplitude}
        if answers.technician is not None:
            changes["technician"] = answers.technician
        return dataclasses.replace(self, **changes)

    def check_joints(self, joints: Sequence[JointSpec], source: str = "options") -> None:
        """Every joint named in the options must exist. Raises AnswersError."""
        names = {j.name for j in joints}
        for what in ("reference_pose", "drive_signs", "ranges"):
            for name in getattr(self, what):
                if name not in names:
                    raise AnswersError(f"{source}: {what}.{name}: no such joint (joints: "
                                       f"{', '.join(sorted(names))})")
        grippers = {j.name for j in joints if j.gripper}
        for name in self.reference_pose:
            if name in grippers:
                raise AnswersError(f"{source}: reference_pose.{name}: a gripper is homed "
                                   "closed (0), not from the reference pose")


def prompt_keys(joints: Sequence[JointSpec]) -> list[str]:
    """Every prompt key the flow can ask, for checking answers files."""
    keys = ["identity", "torque_off", "reference_pose"]
    keys += [f"direction.{j.name}" for j in joints if not j.gripper]
    for j in joints:
        if j.gripper:
            keys += [f"{j.name}.closed", f"{j.name}.open"]
    keys += ["range", "write", "verify.torque_off", "verify.pose", "verify.start",
             "verify.result"]
    return keys
