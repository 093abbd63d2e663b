"""The emulator's plant over MuJoCo physics: the table-top arm with its task scene.

:class:`MujocoPlant` implements :class:`firmware_bridge.emulator.plant.Plant`, so the emulator's
1 kHz servo loop drives it exactly as it drives the simple per-joint model:

- Torque on: the command (6 joint angles in rad, then the gripper opening in m) is the target of
  MuJoCo position actuators (per-joint PD, critically damped), and the arm links are gravity
  compensated, as a servo with gravity feed-forward would be.
- Torque off: actuation and gravity compensation are switched off. The arm goes limp: it sags
  and falls under gravity, slowed by joint damping (0.5 N·m·s/rad) and dry friction
  (0.02 N·m), until it rests on the table or a joint limit. The fingers go limp too.

Grasping is made robust the usual simulation way: when both fingers touch the same object while
the gripper is closing (or squeezing), a weld between hand and object is switched on at their
current relative pose; when the fingers open by more than 4 mm from where they closed, it is
switched off. ``held`` says which object is welded.

Thread safety: the servo loop calls :meth:`step` from its thread; :meth:`sim_state`, the
renderer and the reset/teleport methods take the same lock, so they see whole physics steps.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from firmware_bridge.emulator.plant import Plant
from firmware_bridge.sim.scene import (
    GRIPPER_MAX_OPENING_M,
    JOINT_NAMES,
    N_ARM,
    SCENE_XML,
    import_mujoco,
    index_model,
    load_model,
    quat_of_yaw,
)
from firmware_bridge.sim.state import Layout, SimState
from firmware_bridge.sim.tasks import Episode, free_play_layout, get_task, make_episode

# The weld lets go when the fingers have opened this far beyond where they closed on the object.
RELEASE_OPENING_MARGIN_M = 0.004
# A closing gripper is one whose finger target is this much inside the finger's position.
CLOSING_MARGIN_M = 0.0005


class MujocoPlant(Plant):
    """The MuJoCo arm as a plant. Vectors are in :data:`JOINT_NAMES` order, raw coordinates.

    ``task`` names a task of :data:`firmware_bridge.sim.tasks.TASKS`; :meth:`reset` then samples
    that task's initial state from the seed (and keeps the :class:`Episode` in ``episode``).
    Without a task, reset scatters the objects at random ("free play").

    Raises :class:`~firmware_bridge.sim.errors.SimUnavailableError` if MuJoCo is missing and
    :class:`~firmware_bridge.sim.errors.UnknownTaskError` for an unknown task.
    """

    joint_names: tuple[str, ...] = JOINT_NAMES

    def __init__(
        self, task: str | None = None, seed: int = 0, scene_xml: str = str(SCENE_XML)
    ) -> None:
        self._mj = import_mujoco()
        self.task = get_task(task) if task is not None else None
        self.model = load_model(scene_xml)
        self.data = self._mj.MjData(self.model)
        self.index = index_model(self.model)
        self.timestep_s = float(self.model.opt.timestep)
        self.episode: Episode | None = None
        self._lock = threading.RLock()
        idx = self.index
        self._geom_obj = np.full(self.model.ngeom, -1, dtype=np.int64)
        self._geom_obj[idx.object_geoms] = np.arange(len(idx.object_geoms))
        self._gravcomp_on = self.model.body_gravcomp.copy()
        self._gravcomp_off = self._gravcomp_on.copy()
        self._gravcomp_off[idx.arm_bodies] = 0.0
        self._torque_on = True
        self._held = -1
        self._grasp_opening_m = 0.0
        n = len(JOINT_NAMES)
        self.position = np.zeros(n)
        self.velocity = np.zeros(n)
        self.effort = np.zeros(n)
        self.reset(seed)

    # -- Plant interface ---------------------------------------------------------------------
    def step(self, command: np.ndarray, torque_on: bool, dt_s: float) -> None:
        """Advance ``dt_s`` (rounded to whole 1 ms physics steps, at least one) tracking
        ``command`` (6 x rad, gripper opening in m, clipped to 0..0.04); ignored with torque off.
        """
        n_steps = max(1, round(dt_s / self.timestep_s))
        m, d = self.model, self.data
        with self._lock:
            if torque_on != self._torque_on:
                self._set_torque(torque_on)
            if torque_on:
                d.ctrl[:N_ARM] = command[:N_ARM]
                half = min(max(float(command[N_ARM]), 0.0), GRIPPER_MAX_OPENING_M) / 2.0
                d.ctrl[N_ARM] = half
                d.ctrl[N_ARM + 1] = half
            for _ in range(n_steps):
                self._mj.mj_step(m, d)
                self._update_grasp()
            self._read_joints()

    def move_by_hand(self, position: np.ndarray) -> None:
        """Put the joints at ``position`` (raw coordinates) at rest; a held object comes along.

        Meant for torque off (a person moving the arm); with torque on the servo pulls back.
        """
        pos = np.asarray(position, dtype=np.float64)
        m, d, idx = self.model, self.data, self.index
        with self._lock:
            d.qpos[idx.arm_qpos] = pos[:N_ARM]
            half = min(max(float(pos[N_ARM]), 0.0), GRIPPER_MAX_OPENING_M) / 2.0
            d.qpos[idx.finger_qpos] = half
            d.qvel[idx.arm_dof] = 0.0
            d.qvel[idx.finger_dof] = 0.0
            d.ctrl[:N_ARM] = pos[:N_ARM]
            d.ctrl[N_ARM : N_ARM + 2] = half
            if self._held >= 0:
                self._mj.mj_kinematics(m, d)
                self._carry_held_object()
            self._mj.mj_forward(m, d)
            self._read_joints()

    # -- episodes and privileged access ----------------------------------------------------------
    def reset(self, seed: int | None = None, layout: Layout | None = None) -> Episode | None:
        """Start a new episode from ``seed`` (or put ``layout`` in the scene as given).

        Returns the task's :class:`~firmware_bridge.sim.tasks.Episode` (instruction, sub-goals,
        step budget, detectors), or None without a task or with an explicit ``layout``. The arm
        starts at rest at the layout's pose with torque on; no object is held.
        """
        episode = None
        if layout is None:
            if self.task is not None:
                episode = make_episode(self.task.name, 0 if seed is None else seed)
                layout = episode.layout
            else:
                layout = free_play_layout(0 if seed is None else seed)
        m, d, idx = self.model, self.data, self.index
        with self._lock:
            self._mj.mj_resetData(m, d)
            d.eq_active[idx.grasp_eq] = 0
            self._held = -1
            self._set_torque(True)
            arm = np.asarray(layout.arm_position, dtype=np.float64)
            d.qpos[idx.arm_qpos] = arm[:N_ARM]
            d.qpos[idx.finger_qpos] = arm[N_ARM] / 2.0
            d.ctrl[:N_ARM] = arm[:N_ARM]
            d.ctrl[N_ARM : N_ARM + 2] = arm[N_ARM] / 2.0
            for i, info in enumerate(idx.objects):
                a = idx.object_qpos[i]
                d.qpos[a : a + 3] = (*layout.object_xy[i], info.half_height_m)
                d.qpos[a + 3 : a + 7] = quat_of_yaw(float(layout.object_yaw[i]))
                m.geom_rgba[idx.object_geoms[i]] = layout.object_rgba[i]
            d.mocap_pos[idx.bin_mocap] = (*layout.bin_xy, 0.0005)
            for k in range(2):
                d.mocap_pos[idx.pad_mocap[k]] = (*layout.pad_xy[k], 0.0008)
                rgba = np.array(layout.pad_rgba[k], dtype=np.float64)
                rgba[3] = rgba[3] if layout.pad_visible[k] else 0.0
                m.geom_rgba[idx.pad_geoms[k]] = rgba
            self._mj.mj_forward(m, d)
            self._read_joints()
            self.episode = episode
        return episode

    def place_object(self, i: int, xyz: np.ndarray, yaw_rad: float = 0.0) -> None:
        """Teleport object ``i`` to ``xyz`` (its centre, m) at rest; drops it if it was held.

        For scripted scenarios and tests (e.g. put objects where a task counts as failed).
        """
        idx = self.index
        with self._lock:
            if self._held == i:
                self._release()
            a, v = idx.object_qpos[i], idx.object_dof[i]
            self.data.qpos[a : a + 3] = xyz
            self.data.qpos[a + 3 : a + 7] = quat_of_yaw(yaw_rad)
            self.data.qvel[v : v + 6] = 0.0
            self._mj.mj_forward(self.model, self.data)

    @property
    def held(self) -> int:
        """Index of the object welded to the hand, or -1."""
        return self._held

    @property
    def torque_on(self) -> bool:
        return self._torque_on

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the physics still (no step runs) while reading ``model``/``data`` directly."""
        with self._lock:
            yield

    def pose_snapshot(self) -> tuple:
        """What a camera sees of the scene now (joint and object poses, mocap bodies, colours),
        as copies: :meth:`pose_from` puts another plant of the same scene in that pose."""
        with self.locked():
            d, m = self.data, self.model
            return (d.qpos.copy(), d.mocap_pos.copy(), d.mocap_quat.copy(), m.geom_rgba.copy())

    def pose_from(self, snapshot: tuple) -> None:
        """Put this scene in the pose of ``snapshot`` (from :meth:`pose_snapshot`), for
        rendering: positions only, no physics step."""
        qpos, mocap_pos, mocap_quat, geom_rgba = snapshot
        with self.locked():
            d, m = self.data, self.model
            d.qpos[:] = qpos
            d.mocap_pos[:] = mocap_pos
            d.mocap_quat[:] = mocap_quat
            m.geom_rgba[:] = geom_rgba
            self._mj.mj_forward(m, d)

    def sim_state(self) -> SimState:
        """A privileged snapshot of the whole scene (copies, safe to keep)."""
        d, idx = self.data, self.index
        with self._lock:
            obj_v = np.stack([d.qvel[a : a + 3] for a in idx.object_dof])
            return SimState(
                time_s=float(d.time),
                joint_pos=self.position.copy(),
                joint_vel=self.velocity.copy(),
                grip_pos=d.site_xpos[idx.grip_site].copy(),
                grip_mat=d.site_xmat[idx.grip_site].reshape(3, 3).copy(),
                object_pos=d.xpos[idx.object_bodies].copy(),
                object_quat=d.xquat[idx.object_bodies].copy(),
                object_vel=obj_v,
                held=self._held,
                bin_pos=d.mocap_pos[idx.bin_mocap].copy(),
                pad_pos=d.mocap_pos[idx.pad_mocap].copy(),
            )

    # -- internals -------------------------------------------------------------------------------
    def _set_torque(self, on: bool) -> None:
        flag = int(self._mj.mjtDisableBit.mjDSBL_ACTUATION)
        if on:
            self.model.opt.disableflags &= ~flag
            self.model.body_gravcomp[:] = self._gravcomp_on
        else:
            self.model.opt.disableflags |= flag
            self.model.body_gravcomp[:] = self._gravcomp_off
        self._torque_on = on

    def _read_joints(self) -> None:
        d, idx = self.data, self.index
        pos = np.empty(N_ARM + 1)
        vel = np.empty(N_ARM + 1)
        eff = np.empty(N_ARM + 1)
        pos[:N_ARM] = d.qpos[idx.arm_qpos]
        pos[N_ARM] = d.qpos[idx.finger_qpos].sum()
        vel[:N_ARM] = d.qvel[idx.arm_dof]
        vel[N_ARM] = d.qvel[idx.finger_dof].sum()
        if self._torque_on:
            eff[:N_ARM] = d.qfrc_actuator[idx.arm_dof] + d.qfrc_gravcomp[idx.arm_dof]
            eff[N_ARM] = d.qfrc_actuator[idx.finger_dof].mean()  # N per finger, < 0 squeezing
        else:
            eff[:] = 0.0
        self.position, self.velocity, self.effort = pos, vel, eff

    def _update_grasp(self) -> None:
        d, idx = self.data, self.index
        q = d.qpos[idx.finger_qpos]
        if self._held >= 0:
            if q.sum() > self._grasp_opening_m + RELEASE_OPENING_MARGIN_M:
                self._release()
            return
        if not self._torque_on or d.ncon == 0:
            return
        if not np.all(d.ctrl[N_ARM : N_ARM + 2] < q - CLOSING_MARGIN_M):
            return
        pairs = d.contact.geom
        fl, fr = idx.finger_geoms
        left = self._touching(pairs, fl)
        right = self._touching(pairs, fr)
        both = np.intersect1d(left, right)
        if both.size:
            self._grasp(int(both[0]), float(q.sum()))

    def _touching(self, pairs: np.ndarray, geom: int) -> np.ndarray:
        other = np.concatenate((pairs[pairs[:, 0] == geom, 1], pairs[pairs[:, 1] == geom, 0]))
        objs = self._geom_obj[other]
        return objs[objs >= 0]

    def _grasp(self, i: int, opening_m: float) -> None:
        mj, m, d, idx = self._mj, self.model, self.data, self.index
        h, b = idx.hand_body, idx.object_bodies[i]
        rel_pos = d.xmat[h].reshape(3, 3).T @ (d.xpos[b] - d.xpos[h])
        inv_h = np.empty(4)
        mj.mju_negQuat(inv_h, d.xquat[h])
        rel_quat = np.empty(4)
        mj.mju_mulQuat(rel_quat, inv_h, d.xquat[b])
        eq = idx.grasp_eq[i]
        m.eq_data[eq, 0:3] = 0.0
        m.eq_data[eq, 3:6] = rel_pos
        m.eq_data[eq, 6:10] = rel_quat
        d.eq_active[eq] = 1
        self._held = i
        self._grasp_opening_m = opening_m

    def _release(self) -> None:
        self.data.eq_active[self.index.grasp_eq[self._held]] = 0
        self._held = -1

    def _carry_held_object(self) -> None:
        """Put the held object where the weld says it is, relative to the (moved) hand."""
        mj, m, d, idx = self._mj, self.model, self.data, self.index
        i = self._held
        eq, h = idx.grasp_eq[i], idx.hand_body
        pos = d.xpos[h] + d.xmat[h].reshape(3, 3) @ m.eq_data[eq, 3:6]
        quat = np.empty(4)
        mj.mju_mulQuat(quat, d.xquat[h], m.eq_data[eq, 6:10])
        a, v = idx.object_qpos[i], idx.object_dof[i]
        d.qpos[a : a + 3] = pos
        d.qpos[a + 3 : a + 7] = quat
        d.qvel[v : v + 6] = 0.0
