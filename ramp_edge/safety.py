"""Safety layers 1 and 2 of DESIGN.md: the engine-output check and the host safety filter.

Layer 1, :func:`check_chunk`: an action chunk with the wrong shape or a NaN/inf in it is rejected
(:class:`ChunkRejectedError`); a rejected chunk means the robot holds.

Layer 2, :class:`SafetyFilter`: every setpoint the control thread sends passes through
:meth:`SafetyFilter.filter`, which returns the command actually sent. Per joint, in the joint's
own unit (rad or m), with ``T`` the control period:

* position: within ``[position_min + margin, position_max - margin]`` (:class:`JointLimits`);
* velocity: ``|step| <= max_velocity_per_s * T`` (a step is the change of command per period);
* acceleration: ``|step - previous step| <= max_acceleration_per_s2 * T**2``;
* the filter brakes *before* a limit, so all three hold at once: the velocity towards a limit
  never exceeds what the acceleration limit can still stop in the distance left;
* a startup ramp blends from the measured pose to the desired commands over ``startup_ramp_s``;
* ``None``, a wrong shape, NaN or inf -> hold: decelerate to a standstill as fast as the
  acceleration limit allows (at rest this is exactly the last command).

A command that starts outside the margins (the measured pose at :meth:`SafetyFilter.reset` may be)
only ever moves towards the inside, never further out. What was clamped is recorded per step
(:class:`Intervention` flags, overall and per joint) and counted, for the recorder.

Stale-command handling (layer 3) lives in :mod:`ramp_edge.chunks`, which says how stale the
actions are; the loop then calls :meth:`SafetyFilter.hold` or :meth:`SafetyFilter.controlled_stop`.

All arrays are float64 vectors in the joint order of the robot config. The control-path methods
keep their state in preallocated per-joint lists and write the command into ``out`` when given;
they allocate a new array only when it is not (about 10 us per call for 7 joints, see
``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ramp_edge.config import RobotConfig
from ramp_edge.errors import EdgeError

__all__ = [
    "ChunkRejectedError",
    "FilterNotResetError",
    "Intervention",
    "InvalidPoseError",
    "JointLimits",
    "LimitsError",
    "SafetyFilter",
    "check_chunk",
]

log = logging.getLogger(__name__)


class ChunkRejectedError(EdgeError, ValueError):
    """An action chunk failed the engine-output check (shape, dtype, NaN/inf): hold instead."""


class LimitsError(EdgeError, ValueError):
    """Joint limits are invalid or leave no room inside their margins; the message names joints."""


class InvalidPoseError(EdgeError, ValueError):
    """A measured pose cannot start the safety filter (wrong shape, NaN or inf)."""


class FilterNotResetError(EdgeError, RuntimeError):
    """The safety filter was asked for a command before :meth:`SafetyFilter.reset`."""


class Intervention(enum.IntFlag):
    """Why a command differs from the desired one; flags of one control step, OR-ed."""

    NONE = 0
    POSITION = 1  # clipped into [min + margin, max - margin], or braking before a limit
    VELOCITY = 2  # step limited to max_velocity_per_s * T
    ACCELERATION = 4  # change of step limited to max_acceleration_per_s2 * T**2
    NONFINITE = 8  # desired was None, of the wrong shape, or held NaN/inf: held instead
    RAMP = 16  # startup ramp still blending from the measured pose
    HOLD = 32  # hold(): decelerating to a standstill
    STOP = 64  # controlled_stop(): decelerating to a standstill


#: Counter order of :attr:`SafetyFilter.intervention_counts` (one counter per flag bit).
INTERVENTION_ORDER: tuple[Intervention, ...] = (
    Intervention.POSITION,
    Intervention.VELOCITY,
    Intervention.ACCELERATION,
    Intervention.NONFINITE,
    Intervention.RAMP,
    Intervention.HOLD,
    Intervention.STOP,
)


def _frozen_vector(value: Any, n: int | None, what: str) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise LimitsError(f"{what}: not a vector of numbers") from err
    if arr.ndim != 1 or (n is not None and arr.shape[0] != n):
        raise LimitsError(f"{what}: expected shape ({n},), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise LimitsError(f"{what}: NaN or inf in {arr.tolist()}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class JointLimits:
    """Per-joint limits in each joint's unit, arrays in the config's joint order (read-only).

    ``lower``/``upper`` are the bounds commands are kept in: ``position_min + margin`` and
    ``position_max - margin``. Raises :class:`LimitsError` when an array has the wrong shape or a
    NaN/inf, a rate limit is not positive, a margin is negative, or the margins leave no room
    (``lower >= upper``).
    """

    names: tuple[str, ...]
    position_min: np.ndarray
    position_max: np.ndarray
    margin: np.ndarray
    max_velocity_per_s: np.ndarray
    max_acceleration_per_s2: np.ndarray
    lower: np.ndarray = field(init=False, repr=False)
    upper: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.names)
        if n == 0:
            raise LimitsError("no joints")
        for name in ("position_min", "position_max", "margin", "max_velocity_per_s",
                     "max_acceleration_per_s2"):
            object.__setattr__(self, name, _frozen_vector(getattr(self, name), n, name))
        if (self.margin < 0).any():
            raise LimitsError(f"negative margin for {self._joints(self.margin < 0)}")
        for name in ("max_velocity_per_s", "max_acceleration_per_s2"):
            bad = getattr(self, name) <= 0
            if bad.any():
                raise LimitsError(f"{name} must be > 0 for {self._joints(bad)}")
        lower = self.position_min + self.margin
        upper = self.position_max - self.margin
        if (lower >= upper).any():
            raise LimitsError(
                f"no room inside the margins for {self._joints(lower >= upper)}: "
                f"min {self.position_min.tolist()}, max {self.position_max.tolist()}, "
                f"margin {self.margin.tolist()}"
            )
        lower.setflags(write=False)
        upper.setflags(write=False)
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)

    @property
    def n_joints(self) -> int:
        return len(self.names)

    def _joints(self, mask: np.ndarray) -> str:
        return ", ".join(n for n, m in zip(self.names, mask, strict=True) if m)

    @classmethod
    def from_config(cls, config: RobotConfig, *, max_margin_fraction: float = 0.1) -> JointLimits:
        """Limits of ``config.joints`` with each joint's ``margin`` (or, where it has none,
        ``config.safety.joint_margin``) applied.

        The shared margin is one number in each joint's own unit, so a margin meant in radians
        can swallow a small prismatic range (0.05 on a 0.04 m gripper): give such a joint its own
        ``margin``. Per joint the shared margin is at most ``max_margin_fraction`` of the
        joint's range; a reduced margin is logged as a warning and visible in :attr:`margin`.
        Raises :class:`LimitsError` as the class does.
        """
        if not 0 <= max_margin_fraction < 0.5:
            raise LimitsError("max_margin_fraction must be in [0, 0.5)")
        joints = config.joints
        shared = config.safety.joint_margin
        span = np.array([j.position_max - j.position_min for j in joints])
        wanted = np.array([j.margin if j.margin >= 0 else shared for j in joints])
        own = np.array([j.margin >= 0 for j in joints])
        margin = np.where(own, wanted, np.minimum(wanted, max_margin_fraction * span))
        for j, m in zip(joints, margin, strict=True):
            if j.margin < 0 and m < shared:
                log.warning(
                    "%s: joint_margin %g %s is more than %g of the joint's range; using %g",
                    j.name, shared, j.unit, max_margin_fraction, m,
                )
        return cls(
            names=config.joint_names,
            position_min=[j.position_min for j in joints],
            position_max=[j.position_max for j in joints],
            margin=margin,
            max_velocity_per_s=[j.max_velocity_per_s for j in joints],
            max_acceleration_per_s2=[j.max_acceleration_per_s2 for j in joints],
        )

    def intersect(
        self,
        position_min: Sequence[float] | np.ndarray,
        position_max: Sequence[float] | np.ndarray,
        max_velocity_per_s: Sequence[float] | np.ndarray | None = None,
    ) -> JointLimits:
        """New limits that also respect those reported by the device or the calibration.

        Takes the narrower range per joint (and the lower velocity limit if given); the margins
        are kept and applied inside the narrower range. Raises :class:`LimitsError` if an argument
        has the wrong shape or a NaN/inf, or if nothing is left inside the margins.
        """
        n = self.n_joints
        lo = np.maximum(self.position_min, _frozen_vector(position_min, n, "position_min"))
        hi = np.minimum(self.position_max, _frozen_vector(position_max, n, "position_max"))
        vmax = self.max_velocity_per_s
        if max_velocity_per_s is not None:
            vmax = np.minimum(vmax, _frozen_vector(max_velocity_per_s, n, "max_velocity_per_s"))
        return JointLimits(
            names=self.names,
            position_min=lo,
            position_max=hi,
            margin=self.margin,
            max_velocity_per_s=vmax,
            max_acceleration_per_s2=self.max_acceleration_per_s2,
        )


def check_chunk(actions: Any, n_joints: int, chunk_size: int) -> np.ndarray:
    """Safety layer 1: check an engine's action chunk before anything uses it.

    Returns the actions as a new float64 array of shape ``(chunk_size, n_joints)`` owned by the
    caller (so the engine may reuse its output buffer). Raises :class:`ChunkRejectedError` for
    anything that is not a real numeric array of exactly that shape, or that holds NaN/inf.
    """
    if isinstance(actions, np.ndarray) and actions.dtype.kind not in "iuf":
        raise ChunkRejectedError(f"chunk dtype {actions.dtype} is not real numbers")
    try:
        arr = np.array(actions, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as err:
        raise ChunkRejectedError(f"chunk is not an array of numbers: {err}") from err
    if arr.shape != (chunk_size, n_joints):
        raise ChunkRejectedError(f"chunk shape {arr.shape}, expected ({chunk_size}, {n_joints})")
    finite = np.isfinite(arr)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        raise ChunkRejectedError(
            f"chunk holds NaN/inf (first at action {bad[0]}, joint {bad[1]}): holding"
        )
    return arr


def _smoothstep(x: float) -> float:
    """0 -> 1 with zero slope at both ends (no velocity jump when the ramp starts or ends)."""
    x = min(max(x, 0.0), 1.0)
    return 0.5 - 0.5 * math.cos(math.pi * x)


class SafetyFilter:
    """Host safety filter (safety layer 2): the command actually sent, never beyond the limits.

    ``period_s`` is the nominal control period T (one :meth:`filter`, :meth:`hold` or
    :meth:`controlled_stop` call per period; a late cycle only makes the real motion slower).
    ``startup_ramp_s`` (0 for none) is how long the first commands after :meth:`reset` blend from
    the measured pose to the desired ones; velocity and acceleration limits apply throughout.

    Guarantees, per joint and step, for any sequence of calls after :meth:`reset` (property-tested
    in ``tests/test_safety.py``), up to float rounding:

    * a command inside ``[lower, upper]`` stays inside; one outside (only possible from the
      measured pose) never moves further out;
    * ``|step| <= max_velocity_per_s * T`` and ``|step - previous step| <=
      max_acceleration_per_s2 * T**2``; the step before the first command after a reset is 0
      (the robot is taken to be at rest).

    Clamping order: target into ``[lower, upper]``; target braking (a target that jumps is
    approached without overshoot; a feasible trajectory passes unchanged); velocity;
    acceleration; braking before the position limits. The three limits never conflict: the
    step towards a limit is kept small enough for the acceleration limit to stop in the
    distance left, an invariant every step preserves.

    The arithmetic is per joint on Python floats: for 7 joints that is several times faster than
    numpy's per-call overhead on tiny arrays. Not thread-safe: it belongs to the control thread.
    """

    def __init__(self, limits: JointLimits, period_s: float, startup_ramp_s: float) -> None:
        if not (math.isfinite(period_s) and period_s > 0):
            raise LimitsError(f"period_s must be > 0, not {period_s!r}")
        if not (math.isfinite(startup_ramp_s) and startup_ramp_s >= 0):
            raise LimitsError(f"startup_ramp_s must be >= 0, not {startup_ramp_s!r}")
        self.limits = limits
        self.period_s = float(period_s)
        self.startup_ramp_s = float(startup_ramp_s)
        n = limits.n_joints
        self._n = n
        self._lo: list[float] = limits.lower.tolist()
        self._hi: list[float] = limits.upper.tolist()
        #: Largest step per period (unit/period) and largest change of step (unit/period^2).
        self.max_step = (limits.max_velocity_per_s * period_s).tolist()
        self.max_step_change = (limits.max_acceleration_per_s2 * period_s**2).tolist()
        self._ramp_steps = round(startup_ramp_s / period_s) if startup_ramp_s > 0 else 0
        self._cmd = [0.0] * n  # last command sent
        self._vel = [0.0] * n  # last step (command change per period)
        self._origin = [0.0] * n  # measured pose at reset: where the ramp starts
        self._prev_target = [0.0] * n
        self._have_prev_target = False
        self._flags = [0] * n
        self._ramp_k = 0
        self._ready = False
        #: Flags of the last step, all joints OR-ed.
        self.flags = Intervention.NONE
        #: Steps in which each reason fired, in :data:`INTERVENTION_ORDER`.
        self.intervention_counts = [0] * len(INTERVENTION_ORDER)
        #: Commands produced since construction.
        self.steps = 0

    # -- state ------------------------------------------------------------------------------

    def reset(self, measured_position: Sequence[float] | np.ndarray) -> None:
        """Start (again) from the measured pose, at rest, with a fresh startup ramp.

        The first command after this moves from ``measured_position`` towards the desired one.
        A pose outside the margins is allowed: commands then move only towards the inside.
        Raises :class:`InvalidPoseError` if the pose has the wrong shape or a NaN/inf.
        """
        try:
            pose = np.asarray(measured_position, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise InvalidPoseError(f"measured pose is not a vector of numbers: {err}") from err
        if pose.shape != (self._n,):
            raise InvalidPoseError(f"measured pose shape {pose.shape}, expected ({self._n},)")
        if not np.isfinite(pose).all():
            raise InvalidPoseError(f"measured pose holds NaN/inf: {pose.tolist()}")
        self._cmd = pose.tolist()
        self._origin = pose.tolist()
        self._vel = [0.0] * self._n
        self._have_prev_target = False
        self._ramp_k = 0
        self._flags = [0] * self._n
        self.flags = Intervention.NONE
        self._ready = True

    @property
    def command(self) -> np.ndarray:
        """The last command sent, a new array (the measured pose right after :meth:`reset`)."""
        return np.array(self._cmd)

    @property
    def velocity_per_s(self) -> np.ndarray:
        """Velocity of the last command step, unit/s, a new array."""
        return np.array(self._vel) / self.period_s

    @property
    def joint_flags(self) -> np.ndarray:
        """Flags of the last step per joint (uint8 bit sets of :class:`Intervention`)."""
        return np.array(self._flags, dtype=np.uint8)

    @property
    def is_stopped(self) -> bool:
        """True when the last step was zero for every joint (the command is at rest)."""
        return not any(self._vel)

    @property
    def ramping(self) -> bool:
        """True while the startup ramp has not reached the desired commands yet."""
        return self._ramp_k < self._ramp_steps

    def intervention_summary(self) -> dict[str, int]:
        """Steps per reason since construction, for logs (allocates; not for the hot path)."""
        return {
            str(flag.name).lower(): count
            for flag, count in zip(INTERVENTION_ORDER, self.intervention_counts, strict=True)
        }

    # -- commands ---------------------------------------------------------------------------

    def filter(self, desired: np.ndarray | Sequence[float] | None,
               out: np.ndarray | None = None) -> np.ndarray:
        """The command actually sent for ``desired`` (positions, each joint's unit).

        Returns the possibly clipped command, written into ``out`` if given (float64, shape
        ``(n_joints,)``) or a new array. ``None``, a wrong shape, NaN or inf hold instead
        (flags NONFINITE and HOLD; see :meth:`hold`). Raises :class:`FilterNotResetError` before
        :meth:`reset`.
        """
        if not self._ready:
            raise FilterNotResetError("safety filter used before reset(measured_position)")
        values = self._usable(desired)
        if values is None:
            self._have_prev_target = False
            self._brake(1.0, HOLD | NONFINITE)
            return self._output(out)
        alpha = 1.0
        base = 0
        if self._ramp_k < self._ramp_steps:
            self._ramp_k += 1
            alpha = _smoothstep(self._ramp_k / self._ramp_steps)
            base = RAMP
        self._track(values, alpha, base)
        return self._output(out)

    def hold(self, out: np.ndarray | None = None) -> np.ndarray:
        """Hold: decelerate to a standstill at the acceleration limit, then stay.

        At rest this is exactly the last command; in motion each joint stops within about
        ``v**2 / (2 * max_acceleration_per_s2)`` of it. Returns the command actually sent (into
        ``out`` if given). Raises :class:`FilterNotResetError` before :meth:`reset`.
        """
        if not self._ready:
            raise FilterNotResetError("safety filter used before reset(measured_position)")
        self._have_prev_target = False
        self._brake(1.0, HOLD)
        return self._output(out)

    def controlled_stop(self, decel_fraction: float = 0.5,
                        out: np.ndarray | None = None) -> np.ndarray:
        """One step of a controlled stop: decelerate at ``decel_fraction`` (0 < f <= 1) of the
        acceleration limit to zero velocity; :attr:`is_stopped` says when it has.

        Near a position limit the braking may be harder (never beyond the acceleration limit).
        Returns the command actually sent (into ``out`` if given). Raises
        :class:`FilterNotResetError` before :meth:`reset`, ``ValueError`` for a bad fraction.
        """
        if not self._ready:
            raise FilterNotResetError("safety filter used before reset(measured_position)")
        if not 0 < decel_fraction <= 1:
            raise ValueError(f"decel_fraction must be in (0, 1], not {decel_fraction!r}")
        self._have_prev_target = False
        self._brake(decel_fraction, STOP)
        return self._output(out)

    # -- internals --------------------------------------------------------------------------

    def _usable(self, desired: Any) -> list[float] | None:
        """``desired`` as a list of finite floats, or None if it cannot be used."""
        if desired is None:
            return None
        if not isinstance(desired, np.ndarray):
            try:
                desired = np.asarray(desired, dtype=np.float64)
            except (TypeError, ValueError, OverflowError):
                return None
        if desired.shape != (self._n,) or desired.dtype.kind not in "fiu":
            return None
        values = desired.tolist()
        for x in values:
            if not math.isfinite(x):
                return None
        return values

    def _track(self, values: list[float], alpha: float, base: int) -> None:
        """Steps towards ``values`` (blended from the ramp origin by ``alpha``)."""
        cmd, vel, prev, origin = self._cmd, self._vel, self._prev_target, self._origin
        lows, highs, max_step = self._lo, self._hi, self.max_step
        max_change, flags = self.max_step_change, self._flags
        have_prev = self._have_prev_target
        sqrt = math.sqrt
        for i in range(self._n):
            f = base
            lo, hi, vmax, a = lows[i], highs[i], max_step[i], max_change[i]
            x = values[i]
            if alpha < 1.0:
                x = origin[i] + alpha * (x - origin[i])
            if x > hi:
                x, f = hi, f | POSITION
            elif x < lo:
                x, f = lo, f | POSITION
            c = cmd[i]
            s = x - c  # the step that would reach the target now
            # Target braking. The target, moving by u per step (its own last step), can stop no
            # sooner than u|u|/(2a) beyond where it is now, if it respects the acceleration
            # limit; the command keeps to a step from which it can stop before that point:
            # s <= brake(D) towards D = s + u|u|/(2a). So a target that jumps is reached without
            # overshoot or ringing, and a feasible trajectory (s == u) passes unchanged. Only an
            # offset r = s - u beyond one step change a needs it: a smaller one is closed by the
            # acceleration clip within a step or two (overshoot < a), and braking it would slow
            # the convergence to a crawl (a fraction a / (a + |u|) of r per step).
            # With no previous target (first step, after a hold) the command's own step stands in.
            u = x - prev[i] if have_prev else vel[i]
            prev[i] = x
            if u > vmax:
                u = vmax
            elif u < -vmax:
                u = -vmax
            r = s - u
            if r > a or r < -a:
                dist = s + u * abs(u) / (2.0 * a)
                if dist >= 0.0:
                    cap = sqrt(a * a + 2.0 * a * dist) - a
                    if s > cap:
                        s, f = cap, f | ACCELERATION
                else:
                    cap = a - sqrt(a * a - 2.0 * a * dist)
                    if s < cap:
                        s, f = cap, f | ACCELERATION
            if s > vmax:
                s, f = vmax, f | VELOCITY
            elif s < -vmax:
                s, f = -vmax, f | VELOCITY
            flags[i] = f
            self._apply(i, s, c, lo, hi, a)
        self._have_prev_target = True
        self._record()

    def _brake(self, fraction: float, flag: int) -> None:
        """Each joint's step reduced by ``fraction`` of the largest change towards zero."""
        vel, max_change, flags, cmd = self._vel, self.max_step_change, self._flags, self._cmd
        lows, highs = self._lo, self._hi
        for i in range(self._n):
            v = vel[i]
            d = fraction * max_change[i]
            s = v - d if v > d else (v + d if v < -d else 0.0)
            flags[i] = flag
            self._apply(i, s, cmd[i], lows[i], highs[i], max_change[i])
        self._record()

    def _apply(self, i: int, s: float, c: float, lo: float, hi: float, a: float) -> None:
        """Acceleration and position limits on step ``s`` of joint ``i``, then move."""
        f = self._flags[i]
        v = self._vel[i]
        if s > v + a:
            s, f = v + a, f | ACCELERATION
        elif s < v - a:
            s, f = v - a, f | ACCELERATION
        # Braking before the limits: from step s the joint stops within s^2 / (2a) beyond it,
        # so a step towards a limit d away is at most sqrt(a^2 + 2ad) - a (>= v - a whenever
        # the previous step kept this invariant); 0 towards a limit already passed.
        d = hi - c
        cap = math.sqrt(a * a + 2.0 * a * d) - a if d > 0.0 else 0.0
        if s > cap:
            s, f = cap, f | POSITION
        d = c - lo
        cap = math.sqrt(a * a + 2.0 * a * d) - a if d > 0.0 else 0.0
        if s < -cap:
            s, f = -cap, f | POSITION
        new = c + s
        # Rounding must never carry a command across a bound, or further out if it is outside.
        bound = hi if hi > c else c
        if new > bound:
            new = bound
        bound = lo if lo < c else c
        if new < bound:
            new = bound
        self._vel[i] = new - c
        self._cmd[i] = new
        self._flags[i] = f

    def _record(self) -> None:
        self.steps += 1
        bits = 0
        for f in self._flags:
            bits |= f
        self.flags = Intervention(bits)
        if bits:
            counts = self.intervention_counts
            for k, flag in enumerate(_ORDER_BITS):
                if bits & flag:
                    counts[k] += 1

    def _output(self, out: np.ndarray | None) -> np.ndarray:
        if out is None:
            return np.array(self._cmd)
        out[:] = self._cmd
        return out


# Plain ints for the per-joint loop (IntFlag arithmetic is slow).
POSITION = int(Intervention.POSITION)
VELOCITY = int(Intervention.VELOCITY)
ACCELERATION = int(Intervention.ACCELERATION)
NONFINITE = int(Intervention.NONFINITE)
RAMP = int(Intervention.RAMP)
HOLD = int(Intervention.HOLD)
STOP = int(Intervention.STOP)
_ORDER_BITS = tuple(int(flag) for flag in INTERVENTION_ORDER)
