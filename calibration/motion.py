"""Moves at reduced speed: a smooth (cosine) profile streamed as setpoints, timed so that a
conservative bound on the tool's speed stays under 250 mm/s.

The bound: for revolute joints, the tool's speed is at most ``sum_i |qdot_i| * r_i`` where
``r_i`` is the distance from joint i's axis to the tool (each joint alone moves the tool at
``|qdot_i| * r_i``; speeds add at most like lengths). With ``reach_m_i`` >= ``r_i`` for every pose,
``sum_i |qdot_i| * reach_m_i`` <= 0.25 m/s keeps the tool at or below 250 mm/s, the reduced
speed robot safety standards use for collaborative work (ISO 10218-1). A prismatic joint
counts ``|qdot_i| * reach_m_i`` too: reach_m 1.0 for an axis that carries the tool, 0 for gripper
fingers.

A cosine profile over ``T`` seconds moving a joint by ``d`` peaks at ``pi/2 * |d| / T`` in the
middle, so ``T`` is chosen from that peak, not from the mean speed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from calibration.errors import VerificationError
from firmware_bridge.bus import MotorBus
from firmware_bridge.errors import DeviceTimeoutError
from firmware_bridge.messages import Mode, State

TOOL_SPEED_LIMIT_M_S = 0.25
MIN_MOVE_S = 0.1
STREAM_HZ = 100.0
MAX_MISSED_REPLIES = 10


def tool_speed_bound(velocity: np.ndarray | Sequence[float], reach_m: np.ndarray | Sequence[float]
                     ) -> float:
    """``sum_i |qdot_i| * reach_m_i`` (m/s): an upper bound on the tool's speed."""
    return float(np.sum(np.abs(np.asarray(velocity, np.float64)) *
                        np.asarray(reach_m, np.float64)))


def move_duration_s(delta: np.ndarray | Sequence[float], reach_m: np.ndarray | Sequence[float],
                    max_velocity: np.ndarray | Sequence[float],
                    tool_speed_m_s: float = TOOL_SPEED_LIMIT_M_S) -> float:
    """How long a cosine-profile move by ``delta`` (joint units) must take so that, at its
    peak, no joint exceeds ``max_velocity`` (units/s) and the tool-speed bound stays at or below
    ``tool_speed_m_s``. Seconds, at least :data:`MIN_MOVE_S`. Raises ValueError on a bad bound."""
    if not tool_speed_m_s > 0:
        raise ValueError("tool_speed_m_s must be > 0")
    d = np.abs(np.asarray(delta, np.float64))
    vmax = np.asarray(max_velocity, np.float64)
    if np.any(~(vmax > 0)):
        raise ValueError("max_velocity must be > 0 for every joint")
    peak_factor = math.pi / 2  # peak speed of the cosine profile / mean speed
    t_tool = peak_factor * tool_speed_bound(d, reach_m) / tool_speed_m_s
    t_joint = peak_factor * float(np.max(d / vmax)) if d.size else 0.0
    return max(t_tool, t_joint, MIN_MOVE_S)


@dataclass(frozen=True)
class MoveResult:
    """What a streamed move did: the last state, the largest tool-speed bound computed from the
    velocities the device reported (m/s), replies missed on the way."""

    state: State
    measured_peak_tool_speed_m_s: float
    missed_replies: int


def _check(state: State) -> None:
    if state.mode in (Mode.FAULT, Mode.ESTOP):
        raise VerificationError(f"the motor controller latched {state.mode.name} "
                                f"({state.fault.name}) during the move; torque is holding. Check "
                                "the robot, then clear it (`ramp-edge run --clear-latched`)")
    if state.mode != Mode.POSITION:
        raise VerificationError(f"the motor controller left position mode ({state.mode.name}) "
                                "during the move")


def stream_move(bus: MotorBus, start: np.ndarray, target: np.ndarray, duration_s: float,
                reach_m: np.ndarray, *, settle_s: float = 0.4, settle_tol: np.ndarray | None = None,
                rate_hz: float = STREAM_HZ) -> MoveResult:
    """Stream a cosine profile from ``start`` to ``target`` (user coordinates) over
    ``duration_s``, then keep commanding ``target`` until the arm settles within
    ``settle_tol`` (or ``settle_s`` passes). The device must be in POSITION mode.

    Returns the last state. Raises VerificationError (fault, e-stop, mode change) and
    DeviceTimeoutError (too many replies missed in a row)."""
    start = np.asarray(start, np.float64)
    target = np.asarray(target, np.float64)
    period = 1.0 / rate_hz
    reach_us = int(period * 1e6)
    steps = max(1, math.ceil(duration_s / period))
    peak = 0.0
    missed = 0
    in_a_row = 0
    last: State | None = None
    t0 = time.monotonic()

    def send(position: np.ndarray) -> None:
        nonlocal peak, missed, in_a_row, last
        state = bus.exchange(position.astype(np.float32), reach_us)
        if state is None:
            missed += 1
            in_a_row += 1
            if in_a_row > MAX_MISSED_REPLIES:
                raise DeviceTimeoutError(f"the motor controller at {bus.url} stopped answering "
                                         "during the move")
            return
        in_a_row = 0
        _check(state)
        peak = max(peak, tool_speed_bound(state.velocity, reach_m))
        last = state

    for k in range(1, steps + 1):
        s = (1.0 - math.cos(math.pi * min(1.0, k / steps))) / 2.0
        send(start + (target - start) * s)
        delay = t0 + k * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    deadline = time.monotonic() + settle_s
    tol = settle_tol if settle_tol is not None else np.full(target.shape, 1e-3)
    while True:
        send(target)
        if last is not None and np.all(np.abs(last.position - target) <= tol) \
                and np.all(np.abs(last.velocity) <= 10 * tol):
            break
        if time.monotonic() >= deadline:
            break
        time.sleep(period)
    if last is None:
        raise DeviceTimeoutError(f"no state from the motor controller at {bus.url} during the "
                                 "move")
    return MoveResult(last, peak, missed)
