"""The simulated person of human-in-the-loop rollouts: watches the robot, takes over, hands back.

:class:`ScriptedCorrector` is pure logic over privileged :class:`SimState` snapshots, called once
per control step (50 Hz):

- ``observe(state) -> bool``: update what the person has seen; True while they want control.
- ``act(state) -> np.ndarray``: joint targets while in control (6 x rad, gripper opening in m),
  produced by a clean :class:`~firmware_bridge.sim.expert.ScriptedExpert` that finishes or
  repairs the current sub-goal.

It notices trouble when (1) task progress has not risen for ``stall_steps``, (2) the gripper has
drifted ``drift_m`` farther from the current sub-goal (the object, or its place once held) than
the closest it came, (3) an object is heading off the table (its position extrapolated over
``fall_horizon_s``), or (4) an object was let go away from its place. It takes control
``reaction_delay_steps`` after noticing (a person's reaction time), and hands back once the
sub-goal it took over for holds with the gripper empty and raised, or after
``max_control_steps``. A teleop adapter only needs these two calls (plus ``reset`` per episode).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from firmware_bridge.sim.expert import ExpertConfig, ScriptedExpert
from firmware_bridge.sim.scene import (
    BIN_INNER_HALF_M,
    PAD_HALF_M,
    TABLE_X_M,
    TABLE_Y_M,
)
from firmware_bridge.sim.state import SimState
from firmware_bridge.sim.tasks import Episode

if TYPE_CHECKING:
    import mujoco

# The gripper counts as raised (safe to hand back) above this height (m).
RAISED_Z_M = 0.09


@dataclass(frozen=True)
class CorrectorConfig:
    """Step counts are control steps (``control_hz``); distances m; times s."""

    stall_steps: int = 300
    drift_m: float = 0.10
    fall_horizon_s: float = 0.4
    reaction_delay_steps: int = 10
    max_control_steps: int = 750
    cooldown_steps: int = 25
    control_hz: int = 50
    expert: ExpertConfig = field(default_factory=ExpertConfig)

    def __post_init__(self) -> None:
        if min(self.stall_steps, self.max_control_steps, self.control_hz) <= 0:
            raise ValueError("stall_steps, max_control_steps and control_hz must be positive")
        if self.reaction_delay_steps < 0 or self.cooldown_steps < 0 or self.drift_m <= 0:
            raise ValueError("delays must be >= 0 and drift_m > 0")


@dataclass(frozen=True)
class CorrectorEvent:
    step: int
    kind: str  # "noticed", "takeover", "handback"
    reason: str


class ScriptedCorrector:
    """Decides when a simulated person takes over ``episode`` and what they do then.

    ``model`` (optional) is a compiled scene model for the expert's IK (one is loaded if None).
    """

    def __init__(
        self,
        episode: Episode,
        config: CorrectorConfig | None = None,
        model: mujoco.MjModel | None = None,
    ) -> None:
        self.config = config or CorrectorConfig()
        self.expert = ScriptedExpert(episode, self.config.expert, model=model)
        self.reset(episode)

    def reset(self, episode: Episode) -> None:
        """Forget everything; watch ``episode`` from its first step."""
        self.episode = episode
        self.expert.reset(episode)
        self.in_control = False
        self.reason: str | None = None
        self.events: list[CorrectorEvent] = []
        self._step = -1
        self._best_progress = -1.0
        self._last_rise = 0
        self._noticed_at: int | None = None
        self._control_start = 0
        self._target: int | None = None
        self._cooldown_until = 0
        self._track_key: tuple[int | None, int] | None = None
        self._closest = np.inf
        self._prev_held = -1

    # -- the two calls -------------------------------------------------------------------------
    def observe(self, state: SimState) -> bool:
        """See one control step's state; returns whether the person wants (or keeps) control."""
        self._step += 1
        k = self._step
        progress = self.episode.progress(state)
        if progress > self._best_progress + 1e-9:
            self._best_progress = progress
            self._last_rise = k
        if self.in_control:
            if self._should_hand_back(state):
                self._hand_back(state)
            self._prev_held = state.held
            return self.in_control
        if self._noticed_at is None and k >= self._cooldown_until:
            why = self._trouble(state)
            if why is not None:
                self._noticed_at = k
                self.reason = why
                self.events.append(CorrectorEvent(k, "noticed", why))
        self._prev_held = state.held
        delay = self.config.reaction_delay_steps
        if self._noticed_at is not None and k - self._noticed_at >= delay:
            self._take_over(state)
        return self.in_control

    def act(self, state: SimState) -> np.ndarray:
        """Joint targets (7,) from the clean expert. Meaningful while in control; outside it,
        it still returns what the person would do, without changing who is in control."""
        return self.expert.act(state)

    # -- triggers ------------------------------------------------------------------------------
    def _trouble(self, state: SimState) -> str | None:
        cfg = self.config
        k = self._step
        if self.episode.success(state):
            return None
        if k - self._last_rise >= cfg.stall_steps:
            return "stall"
        falling = self._heading_off_table(state)
        if falling is not None:
            return f"the {self.episode.object_names[falling]} is heading off the table"
        dropped = self._let_go_off_target(state)
        if dropped is not None:
            return f"the {self.episode.object_names[dropped]} was let go away from its place"
        i = self.episode.current_subgoal(state)
        if i is None:
            return None
        key = (i, state.held)
        d = float(np.linalg.norm(state.grip_pos - self.episode.subgoal_anchor(i, state)))
        if key != self._track_key:
            self._track_key, self._closest = key, d
        self._closest = min(self._closest, d)
        if d - self._closest > cfg.drift_m:
            return "the gripper drifted away from the current sub-goal"
        return None

    def _heading_off_table(self, state: SimState) -> int | None:
        ahead = state.object_pos + state.object_vel * self.config.fall_horizon_s
        for i, p in enumerate(ahead):
            if state.held == i:
                continue
            if not (TABLE_X_M[0] < p[0] < TABLE_X_M[1] and TABLE_Y_M[0] < p[1] < TABLE_Y_M[1]):
                return i
        return None

    def _let_go_off_target(self, state: SimState) -> int | None:
        obj = self._prev_held
        if obj < 0 or state.held == obj:
            return None
        for i, g in enumerate(self.episode.subgoals):
            if g.obj != obj:
                continue
            off = state.object_pos[obj][:2] - self.episode.place_target(i, state)[:2]
            limit = {"in_bin": BIN_INNER_HALF_M, "on_pad": PAD_HALF_M}.get(g.kind, 0.02)
            if np.max(np.abs(off)) > limit:
                return obj
        return None

    # -- control changes -----------------------------------------------------------------------
    def _take_over(self, state: SimState) -> None:
        self.in_control = True
        self._noticed_at = None
        self._control_start = self._step
        self._target = self.episode.current_subgoal(state)
        self.expert.abandoned.clear()
        self.expert.resync()
        self.events.append(CorrectorEvent(self._step, "takeover", self.reason or ""))

    def _should_hand_back(self, state: SimState) -> bool:
        if self._step - self._control_start >= self.config.max_control_steps:
            return True
        if state.held >= 0 or state.grip_pos[2] < RAISED_Z_M:
            return False
        if self.episode.success(state):
            return True
        t = self._target
        return t is None or self.episode.subgoal_done(t, state)

    def _hand_back(self, state: SimState) -> None:
        self.in_control = False
        self.reason = None
        self._cooldown_until = self._step + self.config.cooldown_steps
        self._last_rise = self._step  # give the policy a fresh stall window
        self._track_key = None
        self.events.append(CorrectorEvent(self._step, "handback", ""))
