"""A stand-alone control loop over the MuJoCo plant, for tests, benchmarks and data generation.

:class:`ServoEmulation` mirrors what the emulator's firmware does with a setpoint (linear
interpolation to the target over the control period, the command rate-limited by each joint's
``velocity_max`` every 1 ms tick, targets clipped to the joint limits), without frames or
threads. :func:`run_episode` drives it at the task's control rate (50 Hz) with a policy and,
optionally, a corrector that takes over as a person would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from firmware_bridge.emulator.device import DeviceConfig
from firmware_bridge.sim.plant import MujocoPlant
from firmware_bridge.sim.state import SimState
from firmware_bridge.sim.tasks import Episode

SOURCE_POLICY = 0
SOURCE_CORRECTOR = 1


class Policy(Protocol):
    def act(self, state: SimState) -> np.ndarray: ...


class Corrector(Protocol):
    def observe(self, state: SimState) -> bool: ...

    def act(self, state: SimState) -> np.ndarray: ...


class ServoEmulation:
    """The emulator's servo-loop arithmetic over a plant (torque on, position mode)."""

    def __init__(self, plant: MujocoPlant, config: DeviceConfig | None = None) -> None:
        cfg = config or DeviceConfig.default(n_joints=len(plant.joint_names))
        self.plant = plant
        self._lo = np.asarray(cfg.position_min, dtype=np.float64)
        self._hi = np.asarray(cfg.position_max, dtype=np.float64)
        self._vmax = np.asarray(cfg.velocity_max, dtype=np.float64)
        self._dt_s = 1.0 / cfg.servo_rate_hz
        self.command = plant.position.copy()
        self.clamps = 0

    def resync(self) -> None:
        """Command the current position (as torque-on does), e.g. after a reset."""
        self.command = self.plant.position.copy()

    def track(self, target: np.ndarray, duration_s: float) -> np.ndarray:
        """Reach toward ``target`` over ``duration_s`` (1 ms ticks). Returns the target as
        clipped to the joint limits (what the firmware actually tracks)."""
        raw = np.asarray(target, dtype=np.float64)
        goal = np.clip(raw, self._lo, self._hi)
        if not np.array_equal(goal, raw):
            self.clamps += 1
        start = self.command.copy()
        n = max(1, round(duration_s / self._dt_s))
        step = self._vmax * self._dt_s
        for k in range(1, n + 1):
            desired = start + (goal - start) * (k / n)
            self.command = self.command + np.clip(desired - self.command, -step, step)
            self.plant.step(self.command, True, self._dt_s)
        return goal


@dataclass
class EpisodeResult:
    """How an episode went. ``steps`` counts the control steps taken; ``progress`` and
    ``source`` have ``steps + 1`` entries (the state before each step, then the final one)."""

    task: str
    seed: int
    success: bool
    failure: str | None
    steps: int
    progress: np.ndarray
    source: np.ndarray
    takeovers: int
    sim_time_s: float
    events: list[tuple[int, str]] = field(default_factory=list)

    @property
    def final_progress(self) -> float:
        return float(self.progress[-1]) if self.progress.size else 0.0


def run_episode(
    plant: MujocoPlant,
    episode: Episode,
    policy: Policy,
    corrector: Corrector | None = None,
    max_steps: int | None = None,
    idle_stop_steps: int = 50,
    on_step: Callable[[int, SimState, np.ndarray, int], None] | None = None,
) -> EpisodeResult:
    """Run ``episode`` (already reset in ``plant``) until success, failure or the step budget.

    Each control step: snapshot the state, ask the corrector whether it wants control (it acts
    if so, else the policy), then track the action for one control period. Stops early once
    the policy reports ``done`` (an attribute, as the scripted expert has) for
    ``idle_stop_steps`` steps with nobody else in control. ``on_step(k, state, action, source)``
    is called before each action is applied (for recording or rendering).
    """
    servo = ServoEmulation(plant)
    period_s = 1.0 / episode.control_hz
    budget = episode.step_budget if max_steps is None else max_steps
    progress = np.zeros(budget + 1)
    source = np.zeros(budget + 1, dtype=np.int8)
    events: list[tuple[int, str]] = []
    takeovers = idle = n = 0
    was_corrector = False
    success, failure = False, None
    while True:
        state = plant.sim_state()
        progress[n] = episode.progress(state)
        success = episode.success(state)
        failure = None if success else episode.failure(state)
        if success or failure is not None or n >= budget:
            n += 1  # the final state's progress is part of the record
            break
        in_control = corrector is not None and corrector.observe(state)
        if in_control and not was_corrector:
            takeovers += 1
            events.append((n, "takeover"))
        elif was_corrector and not in_control:
            events.append((n, "handback"))
            resync = getattr(policy, "resync", None)
            if resync is not None:
                resync()
        was_corrector = in_control
        if in_control:
            assert corrector is not None
            action = corrector.act(state)
            source[n] = SOURCE_CORRECTOR
            idle = 0
        else:
            action = policy.act(state)
            source[n] = SOURCE_POLICY
            idle = idle + 1 if getattr(policy, "done", False) else 0
        if on_step is not None:
            on_step(n, state, action, int(source[n]))
        servo.track(action, period_s)
        n += 1
        if corrector is None and idle >= idle_stop_steps:
            state = plant.sim_state()
            progress[n] = episode.progress(state)
            success = episode.success(state)
            failure = None if success else episode.failure(state)
            n += 1
            break
    return EpisodeResult(
        task=episode.task, seed=episode.seed, success=success, failure=failure,
        steps=n - 1, progress=progress[:n], source=source[:n], takeovers=takeovers,
        sim_time_s=plant.sim_state().time_s, events=events,
    )
