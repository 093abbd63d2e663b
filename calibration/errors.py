"""Errors of calibration: the file, the hardware checks, the guided flow.

Each derives from :class:`CalibrationError` (itself an :class:`EdgeError`) and from the builtin
it is closest to, so ``except FileNotFoundError`` or ``except ValueError`` still work. Every
message is one line that says what is wrong and what to do.
"""

from __future__ import annotations

from firmware_bridge.errors import EdgeError


class CalibrationError(EdgeError):
    """Root of the calibration errors."""


# -- the file ---------------------------------------------------------------------------------
class CalibrationMissingError(CalibrationError, FileNotFoundError):
    """There is no calibration file for this robot."""


class CalibrationFileError(CalibrationError, ValueError):
    """The calibration file is unreadable, malformed, or its sha256 does not match."""


class WrongRobotError(CalibrationFileError):
    """The calibration file was made for another robot (robot id or joints differ)."""


class CalibrationMismatchError(CalibrationError, RuntimeError):
    """The motor controller holds a calibration other than the file's."""


# -- the hardware -----------------------------------------------------------------------------
class MotorMissingError(CalibrationError, LookupError):
    """The motor controller reports fewer joints than the robot config names."""


class MotorIdentityError(CalibrationError, ValueError):
    """Duplicate motor ids or names, unknown joints, or joints in another order."""


class DeviceLatchedError(CalibrationError, RuntimeError):
    """The motor controller is latched in FAULT or ESTOP."""


class RangeTooSmallError(CalibrationError, ValueError):
    """A joint's recorded range of motion (or the gripper's stroke) is below the minimum."""


class OffsetOutOfRangeError(CalibrationError, ValueError):
    """A homing offset is outside what the motor controller can represent."""


class NoMovementError(CalibrationError, RuntimeError):
    """A joint did not move: by hand when asked to (direction check), or under torque when
    commanded (verification move)."""


class VerificationError(CalibrationError, RuntimeError):
    """The verification move failed (fault, wrong direction) or the technician rejected it."""


# -- the flow ---------------------------------------------------------------------------------
class CalibrationAborted(CalibrationError, RuntimeError):
    """The technician quit, or declined a step the flow cannot go on without."""


class AnswersError(CalibrationError, ValueError):
    """An answers file (``--answers``) is malformed or lacks an answer the flow needs."""
