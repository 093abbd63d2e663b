"""Plain values shared by the plant, the tasks, the expert and the corrector.

:class:`Layout` is what a reset puts in the scene; :class:`SimState` is a privileged snapshot of
the scene (what a person watching the robot, or a scripted expert, knows). Both are frozen:
arrays are copies, never views into MuJoCo's buffers.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

RGBA = tuple[float, float, float, float]


@dataclass(frozen=True)
class Layout:
    """An initial scene. Positions in the world frame (m), yaw (rad) about +z.

    ``object_xy``/``object_yaw``/``object_rgba`` have one row per scene object; every object
    rests on the table. Pads that are not ``pad_visible`` are hidden (they are visual only).
    """

    arm_position: np.ndarray  # (7,) raw joint coordinates: 6 x rad, gripper opening m
    object_xy: np.ndarray  # (n_obj, 2)
    object_yaw: np.ndarray  # (n_obj,)
    object_rgba: tuple[RGBA, ...]
    bin_xy: np.ndarray  # (2,)
    pad_xy: np.ndarray  # (2, 2)
    pad_rgba: tuple[RGBA, RGBA]
    pad_visible: tuple[bool, bool]


@dataclass(frozen=True)
class SimState:
    """A snapshot of the scene. Units: m, rad, m/s; quaternions are (w, x, y, z).

    ``held`` is the index of the object welded to the hand, or -1.
    """

    time_s: float
    joint_pos: np.ndarray  # (7,) raw joint coordinates, gripper = opening (m)
    joint_vel: np.ndarray  # (7,)
    grip_pos: np.ndarray  # (3,) the grasp point between the fingers
    grip_mat: np.ndarray  # (3, 3) its orientation (columns: x, y = finger axis, z = up the hand)
    object_pos: np.ndarray  # (n_obj, 3)
    object_quat: np.ndarray  # (n_obj, 4)
    object_vel: np.ndarray  # (n_obj, 3) linear
    held: int
    bin_pos: np.ndarray  # (3,) centre of the bin's base
    pad_pos: np.ndarray  # (2, 3)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (JSON), for the emulator's sim-control channel."""
        return {f.name: (v.tolist() if isinstance(v := getattr(self, f.name), np.ndarray) else v)
                for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimState:
        """Inverse of :meth:`to_dict`. Raises ValueError for missing or malformed fields."""
        try:
            kwargs = {f.name: data[f.name] for f in fields(cls)}
            for name, value in kwargs.items():
                if name == "held":
                    kwargs[name] = int(value)
                elif name == "time_s":
                    kwargs[name] = float(value)
                else:
                    kwargs[name] = np.asarray(value, dtype=np.float64)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not a sim state: {err}") from err
        return cls(**kwargs)

    @property
    def gripper_opening_m(self) -> float:
        return float(self.joint_pos[-1])

    @property
    def grip_yaw(self) -> float:
        """Heading (rad) of the grasp frame's x axis in the horizontal plane."""
        return float(np.arctan2(self.grip_mat[1, 0], self.grip_mat[0, 0]))
