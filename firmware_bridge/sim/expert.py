"""A scripted expert: solves a task's sub-goals from privileged state, one pick-and-place each.

Every call of :meth:`ScriptedExpert.act` (at the task's control rate, 50 Hz) returns the next
joint targets (6 x rad, gripper opening in m). Inside, a waypoint state machine per sub-goal
(pregrasp, descend, close, lift, transfer, lower, open, retreat) moves a Cartesian reference for
the grasp point at a capped speed, and damped least-squares differential IK on MuJoCo's site
Jacobian (``mj_jacSite``) turns it into joint angles. The gripper stays pointing down; its yaw
follows the object's faces. The machine re-plans from the state whenever it starts, so it can
take over mid-task (the corrector relies on this).

Knobs for making demonstrations imperfect: ``action_noise_rad`` (Gaussian, added to the arm
targets it outputs) and ``failure_rate``: the probability, drawn once per sub-goal attempt, that
the expert deliberately drops the object in transit or places it off target, then gives the
sub-goal up and moves on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from firmware_bridge.sim.scene import (
    GRIPPER_MAX_OPENING_M,
    N_ARM,
    OBJECTS,
    TABLE_X_M,
    TABLE_Y_M,
    import_mujoco,
    index_model,
    load_model,
    wrap_angle,
)
from firmware_bridge.sim.state import SimState
from firmware_bridge.sim.tasks import Episode

if TYPE_CHECKING:
    import mujoco

JOINT_LIMIT_RAD = 2.7  # inside the firmware's 2.8 so IK never asks for a clamp
GRIP_SITE_ABOVE_TIPS_M = 0.01  # the grasp point is this far above the fingertips
MIN_GRASP_Z_M = 0.016
PLACE_CLEARANCE_M = 0.006
SQUEEZE_M = 0.014  # gripper target this much narrower than the object while holding it
# Place positions (m) relative to the bin or pad centre, diagonal so that fingers opening
# beside a neighbour clear it.
BIN_SLOTS = np.array([[0.028, 0.028], [-0.028, -0.028], [0.028, -0.028], [-0.028, 0.028]])
PAD_SLOTS = BIN_SLOTS * (0.022 / 0.028)
LOWER_BLOCKED_S = 0.5  # release anyway when lowering has stalled this long (something below)


@dataclass(frozen=True)
class ExpertConfig:
    """Speeds in m/s and rad/s, heights and tolerances in m, noise in rad, rates in 0..1."""

    action_noise_rad: float = 0.0
    failure_rate: float = 0.0
    failure_modes: tuple[str, ...] = ("drop", "misplace")
    seed: int = 0
    transit_speed_m_s: float = 0.40
    approach_speed_m_s: float = 0.20
    yaw_speed_rad_s: float = 3.0
    transit_height_m: float = 0.12
    pregrasp_above_m: float = 0.06
    coarse_tol_m: float = 0.02
    fine_tol_m: float = 0.005
    phase_timeout_s: float = 3.0
    close_timeout_s: float = 0.6
    max_attempts: int = 3
    control_hz: int = 50

    def __post_init__(self) -> None:
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError("failure_rate must be in 0..1")
        if self.action_noise_rad < 0.0:
            raise ValueError("action_noise_rad must be >= 0")
        if not set(self.failure_modes) <= {"drop", "misplace"} or not self.failure_modes:
            raise ValueError("failure_modes must be a non-empty subset of ('drop', 'misplace')")


class DiffIK:
    """Damped least-squares IK for the grasp site on a private copy of the model.

    Orientation error is weighted by ``rot_weight`` (m per rad) against position error.
    """

    def __init__(
        self, model: mujoco.MjModel | None = None, damping: float = 0.02, rot_weight: float = 0.25
    ) -> None:
        self._mj = import_mujoco()
        self.model = model if model is not None else load_model()
        self.data = self._mj.MjData(self.model)
        idx = index_model(self.model)
        self._qadr, self._dofs, self._site = idx.arm_qpos, idx.arm_dof, idx.grip_site
        self._jacp = np.zeros((3, self.model.nv))
        self._jacr = np.zeros((3, self.model.nv))
        self._lam2 = damping**2
        self._w = rot_weight

    def fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Grasp-site position (3,) and orientation (3, 3) at arm angles ``q`` (6,)."""
        d = self.data
        d.qpos[self._qadr] = q
        self._mj.mj_kinematics(self.model, d)
        return d.site_xpos[self._site].copy(), d.site_xmat[self._site].reshape(3, 3).copy()

    def solve(
        self, q0: np.ndarray, pos: np.ndarray, mat: np.ndarray, iters: int = 4
    ) -> np.ndarray:
        """Arm angles near ``q0`` that put the site at ``pos`` with orientation ``mat``."""
        mj, m, d = self._mj, self.model, self.data
        q = np.array(q0, dtype=np.float64)
        for _ in range(iters):
            d.qpos[self._qadr] = q
            mj.mj_kinematics(m, d)
            mj.mj_comPos(m, d)
            cur = d.site_xmat[self._site].reshape(3, 3)
            err_p = pos - d.site_xpos[self._site]
            err_r = 0.5 * (np.cross(cur[:, 0], mat[:, 0]) + np.cross(cur[:, 1], mat[:, 1])
                           + np.cross(cur[:, 2], mat[:, 2]))
            if np.linalg.norm(err_p) < 2e-4 and np.linalg.norm(err_r) < 2e-3:
                break
            mj.mj_jacSite(m, d, self._jacp, self._jacr, self._site)
            jac = np.vstack((self._jacp[:, self._dofs], self._w * self._jacr[:, self._dofs]))
            err = np.concatenate((err_p, self._w * err_r))
            dq = jac.T @ np.linalg.solve(jac @ jac.T + self._lam2 * np.eye(6), err)
            q = np.clip(q + np.clip(dq, -0.3, 0.3), -JOINT_LIMIT_RAD, JOINT_LIMIT_RAD)
        return q


def down_mat(yaw: float) -> np.ndarray:
    """Orientation of the grasp site pointing down with its x axis at heading ``yaw``."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _yaw_near(candidates: np.ndarray, current: float, heading: float) -> float:
    """The candidate yaw nearest ``current`` that keeps the wrist roll (yaw - arm heading)
    within +-pi/2 (there is always one when candidates are spaced by pi/2 or less)."""
    cands = np.asarray(candidates, dtype=np.float64)
    cands = np.concatenate([cands + k * np.pi for k in (-2, -1, 0, 1, 2)])
    ok = np.abs(cands - heading) <= np.pi / 2 + 1e-6
    cands = cands[ok] if ok.any() else cands
    return float(cands[np.argmin(np.abs(cands - current))])


def _squeeze(obj: int) -> float:
    """Gripper target (m) that holds object ``obj``: a little inside its width, not 0, because
    the firmware rate-limits the gripper and a deep squeeze would delay the release."""
    return max(0.0, 2.0 * OBJECTS[obj].half_width_m - SQUEEZE_M)


def _object_yaw(quat: np.ndarray) -> float:
    w, x, y, z = quat
    return float(np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))


# Phases of one pick-and-place, in order.
PHASES = ("pregrasp", "descend", "close", "lift", "transfer", "lower", "open", "retreat")


class ScriptedExpert:
    """Solves ``episode`` from privileged :class:`SimState` snapshots.

    ``act(state)`` returns a new (7,) array of joint targets. ``done`` turns True once every
    sub-goal holds or was given up and the arm has retreated; it then holds its pose.
    Call :meth:`resync` when the expert takes control after someone else moved the arm.
    """

    def __init__(
        self,
        episode: Episode,
        config: ExpertConfig | None = None,
        model: mujoco.MjModel | None = None,
    ) -> None:
        self.config = config or ExpertConfig()
        # IK reads only kinematic fields, so sharing the plant's model (plant.model) is safe and
        # saves compiling one; None compiles a private copy.
        self.ik = DiffIK(model)
        self.reset(episode)

    # -- public ------------------------------------------------------------------------------
    def reset(self, episode: Episode) -> None:
        """Start ``episode`` from scratch (forget attempts, given-up sub-goals, the reference)."""
        self.episode = episode
        self._rng = np.random.default_rng([self.config.seed, episode.seed])
        self.abandoned: set[int] = set()
        self.attempts = np.zeros(len(episode.subgoals), dtype=np.int64)
        self.deliberate_failures = 0
        self.done = False
        self.resync()

    def resync(self) -> None:
        """Re-plan from the next state (the arm may have been moved by someone else)."""
        self.phase = "plan"
        self.subgoal: int | None = None
        self._q: np.ndarray | None = None
        self._ref_p = np.zeros(3)
        self._ref_yaw = 0.0
        self._phase_steps = 0
        self._ref_arrived_steps = 0
        self._fail_mode: str | None = None
        self._slot = np.zeros(2)
        self._grasp_yaw_offset = 0.0
        self._gripper = GRIPPER_MAX_OPENING_M

    def act(self, state: SimState) -> np.ndarray:
        """Joint targets for the next control period: 6 arm angles (rad), gripper opening (m)."""
        cfg = self.config
        if self._q is None or np.max(np.abs(self._q - state.joint_pos[:N_ARM])) > 0.35:
            self._q = state.joint_pos[:N_ARM].copy()
            self._ref_p = state.grip_pos.copy()
            self._ref_yaw = state.grip_yaw
            if self.phase != "plan":
                self.phase = "plan"
        if self.phase == "plan":
            self._plan(state)
        wp, yaw, tol = self._step_phase(state)
        dt = 1.0 / cfg.control_hz
        speed = cfg.approach_speed_m_s if self.phase in ("descend", "lower") else (
            cfg.transit_speed_m_s
        )
        delta = wp - self._ref_p
        dist = float(np.linalg.norm(delta))
        step = speed * dt
        self._ref_p = wp.copy() if dist <= step else self._ref_p + delta * (step / dist)
        dyaw = yaw - self._ref_yaw
        max_dyaw = cfg.yaw_speed_rad_s * dt
        self._ref_yaw += float(np.clip(dyaw, -max_dyaw, max_dyaw))
        self._q = self.ik.solve(self._q, self._ref_p, down_mat(self._ref_yaw))
        self._advance(state, wp, yaw, tol)
        out = np.empty(N_ARM + 1)
        out[:N_ARM] = self._q
        if cfg.action_noise_rad > 0.0:
            out[:N_ARM] += self._rng.normal(0.0, cfg.action_noise_rad, N_ARM)
        out[N_ARM] = self._gripper
        return out

    # -- planning ----------------------------------------------------------------------------
    def _next_subgoal(self, state: SimState) -> int | None:
        done = self.episode.done_mask(state)
        for i in range(len(done)):
            if not done[i] and i not in self.abandoned:
                return i
        return None

    def _plan(self, state: SimState) -> None:
        """Pick the sub-goal and the phase to start from, given what the hand holds."""
        cfg = self.config
        held = state.held
        goals = self.episode.subgoals
        if held >= 0:
            for i, g in enumerate(goals):
                if g.obj == held and i not in self.abandoned and not self.episode.subgoal_done(
                    i, state
                ):
                    self.subgoal = i
                    self._set_phase("lift")
                    self._gripper = _squeeze(held)
                    self._begin_transfer(state)
                    return
            # Holding something no sub-goal wants: set it down where it is.
            self.subgoal = None
            self._set_phase("lower")
            self._gripper = _squeeze(held)
            return
        self.subgoal = self._next_subgoal(state)
        if self.subgoal is None:
            self.done = True
            self._set_phase("retreat")
            return
        self.done = False
        self._fail_mode = None
        if self._rng.random() < cfg.failure_rate:
            self._fail_mode = str(self._rng.choice(list(cfg.failure_modes)))
        self._set_phase("pregrasp")

    def _set_phase(self, phase: str) -> None:
        self.phase = phase
        self._phase_steps = 0
        self._ref_arrived_steps = 0
        if phase in ("pregrasp", "descend", "open", "retreat"):
            self._gripper = GRIPPER_MAX_OPENING_M
        elif phase == "close" and self.subgoal is not None:
            self._gripper = _squeeze(self.episode.subgoals[self.subgoal].obj)

    def _begin_transfer(self, state: SimState) -> None:
        """Fix the bin slot and the yaw offset of the held object for this transfer."""
        if self.subgoal is None:
            return
        g = self.episode.subgoals[self.subgoal]
        if g.kind in ("in_bin", "on_pad"):
            # Several objects share a bin or a pad: take the free corner farthest from them.
            centre = self.episode.place_target(self.subgoal, state)[:2]
            slots = BIN_SLOTS if g.kind == "in_bin" else PAD_SLOTS
            others = [
                state.object_pos[j][:2] - centre
                for j in range(len(OBJECTS))
                if j != g.obj and np.all(np.abs(state.object_pos[j][:2] - centre) < 0.07)
            ]
            if others:
                clear = [min(np.linalg.norm(s - o) for o in others) for s in slots]
                self._slot = slots[int(np.argmax(clear))]
            else:
                self._slot = slots[int(self._rng.integers(len(slots)))]
        else:
            self._slot = np.zeros(2)
        self._grasp_yaw_offset = _object_yaw(state.object_quat[g.obj]) - state.grip_yaw
        if self._fail_mode == "misplace":
            ang = self._rng.uniform(0, 2 * np.pi)
            self._slot = np.array([np.cos(ang), np.sin(ang)]) * self._rng.uniform(0.10, 0.12)
            target = self.episode.place_target(self.subgoal, state)[:2] + self._slot
            # Keep the misplaced object on the table.
            lo = np.array([TABLE_X_M[0], TABLE_Y_M[0]]) + 0.05
            hi = np.array([TABLE_X_M[1], TABLE_Y_M[1]]) - 0.05
            self._slot = np.clip(target, lo, hi) - (target - self._slot)

    # -- waypoints ---------------------------------------------------------------------------
    def _grasp_yaw(self, state: SimState, obj: int, at: np.ndarray) -> float:
        heading = float(np.arctan2(at[1], at[0]))
        if OBJECTS[obj].shape == "cylinder":
            cands = np.array([self._ref_yaw])
        else:
            base = _object_yaw(state.object_quat[obj])
            cands = base + np.arange(-4, 5) * (np.pi / 2)
        return _yaw_near(cands, self._ref_yaw, heading)

    def _place(self, state: SimState) -> tuple[np.ndarray, float]:
        """Grasp-site position over the place target (at transit height) and the yaw there."""
        assert self.subgoal is not None
        i = self.subgoal
        g = self.episode.subgoals[i]
        target = self.episode.place_target(i, state)
        target[:2] += self._slot
        heading = float(np.arctan2(target[1], target[0]))
        if g.kind == "on_object" and OBJECTS[g.obj].shape == "cube":
            below = _object_yaw(state.object_quat[g.target])
            cands = below - self._grasp_yaw_offset + np.arange(-4, 5) * (np.pi / 2)
        else:
            cands = np.array([self._ref_yaw])
        return target, _yaw_near(cands, self._ref_yaw, heading)

    def _step_phase(self, state: SimState) -> tuple[np.ndarray, float, float]:
        """The current waypoint for the grasp site, its yaw, and how close counts as there."""
        cfg = self.config
        here = state.grip_pos
        ph = self.phase
        if ph == "retreat" or (self.subgoal is None and ph != "lower"):
            return np.array([*self._ref_p[:2], cfg.transit_height_m]), self._ref_yaw, (
                cfg.coarse_tol_m
            )
        if ph == "lower" and self.subgoal is None:  # set down an unwanted object
            z = OBJECTS[max(state.held, 0)].half_height_m + PLACE_CLEARANCE_M
            return np.array([*self._ref_p[:2], z + 0.01]), self._ref_yaw, cfg.fine_tol_m
        g = self.episode.subgoals[self.subgoal]
        obj = state.object_pos[g.obj]
        grasp_z = max(obj[2] + 0.003, MIN_GRASP_Z_M)
        if ph in ("pregrasp", "descend", "close"):
            yaw = self._grasp_yaw(state, g.obj, obj)
            z = grasp_z + (cfg.pregrasp_above_m if ph == "pregrasp" else 0.0)
            tol = cfg.coarse_tol_m if ph == "pregrasp" else cfg.fine_tol_m
            if ph == "close":
                return self._ref_p.copy(), self._ref_yaw, tol
            return np.array([obj[0], obj[1], z]), yaw, tol
        if ph == "lift":
            return np.array([*self._ref_p[:2], cfg.transit_height_m]), self._ref_yaw, (
                cfg.coarse_tol_m
            )
        target, yaw = self._place(state)
        # The object hangs where the weld holds it: aim the site so the object lands on target.
        offset = obj - here if state.held == g.obj else np.zeros(3)
        if ph == "transfer":
            return np.array([*(target[:2] - offset[:2]), cfg.transit_height_m]), yaw, (
                cfg.coarse_tol_m
            )
        site = target - offset
        site[2] += PLACE_CLEARANCE_M
        return site, yaw, cfg.fine_tol_m

    def _advance(self, state: SimState, wp: np.ndarray, yaw: float, tol: float) -> None:
        """Move to the next phase when this one's condition holds (or it timed out)."""
        cfg = self.config
        self._phase_steps += 1
        t = self._phase_steps / cfg.control_hz
        arrived = (
            float(np.linalg.norm(self._ref_p - wp)) < 1e-6
            and float(np.linalg.norm(state.grip_pos - wp)) < tol
            and abs(wrap_angle(state.grip_yaw - yaw)) < 0.08
        )
        ph = self.phase
        held_goal = self.subgoal is not None and state.held == self.episode.subgoals[
            self.subgoal
        ].obj
        if ph == "plan":
            return
        if ph == "retreat":
            if arrived or t > cfg.phase_timeout_s:
                self._set_phase("plan")
            return
        if self.subgoal is None:  # setting down an unwanted object
            if ph == "lower" and (arrived or t > cfg.phase_timeout_s):
                self._set_phase("open")
            elif ph == "open" and (state.held < 0 or t > cfg.close_timeout_s):
                self._set_phase("retreat")
            return
        if t > cfg.phase_timeout_s and ph not in ("open",):
            self._retry()
            return
        if ph == "pregrasp" and arrived:
            self._set_phase("descend")
        elif ph == "descend" and arrived:
            self._set_phase("close")
        elif ph == "close":
            if held_goal:
                self._set_phase("lift")
            elif t > cfg.close_timeout_s:
                self._retry()
        elif ph in ("lift", "transfer", "lower") and not held_goal:
            self._retry()  # the object slipped out
        elif ph == "lift" and arrived:
            self._begin_transfer(state)
            self._set_phase("transfer")
        elif ph == "transfer":
            if self._fail_mode == "drop" and self._drop_now(state):
                self._give_up()
            elif arrived:
                self._set_phase("lower")
        elif ph == "lower" and (arrived or self._lower_blocked(wp)):
            self._set_phase("open")
        elif ph == "open" and (state.held < 0 or t > cfg.close_timeout_s):
            if self._fail_mode is not None:
                self._give_up()
            else:
                self._set_phase("retreat")

    def _lower_blocked(self, wp: np.ndarray) -> bool:
        if float(np.linalg.norm(self._ref_p - wp)) > 1e-6:
            self._ref_arrived_steps = 0
            return False
        self._ref_arrived_steps += 1
        return self._ref_arrived_steps > LOWER_BLOCKED_S * self.config.control_hz

    def _drop_now(self, state: SimState) -> bool:
        # Early in the transfer, so the object lands well away from its target.
        return self._phase_steps >= 3

    def _retry(self) -> None:
        assert self.subgoal is not None
        self.attempts[self.subgoal] += 1
        if self.attempts[self.subgoal] >= self.config.max_attempts:
            self.abandoned.add(self.subgoal)
        self._set_phase("retreat")

    def _give_up(self) -> None:
        assert self.subgoal is not None
        self.deliberate_failures += 1
        self.abandoned.add(self.subgoal)
        self._fail_mode = None
        self._set_phase("retreat")
