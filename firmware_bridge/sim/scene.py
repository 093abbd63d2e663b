"""The table-top scene: the MJCF model and the indices the plant, tasks and expert need.

The model lives in ``assets/tabletop.xml`` (read its header for the geometry and the contact
groups). Everything here is looked up by name once, so the rest of the package works with
integer indices and numpy arrays.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from firmware_bridge.emulator.device import ARM_JOINTS
from firmware_bridge.sim.errors import SimUnavailableError

if TYPE_CHECKING:
    import mujoco

SCENE_XML = Path(__file__).with_name("assets") / "tabletop.xml"

#: Joint order of the plant's vectors: the six arm joints (rad) then the gripper opening (m).
JOINT_NAMES: tuple[str, ...] = (*ARM_JOINTS, "gripper")
N_ARM = len(ARM_JOINTS)
GRIPPER_MAX_OPENING_M = 0.04

#: The table top is the plane z = 0; these are its edges in the world frame (m).
TABLE_X_M = (-0.20, 0.70)
TABLE_Y_M = (-0.55, 0.55)


@dataclass(frozen=True)
class ObjectInfo:
    """A graspable object: its shape and size (m)."""

    name: str
    shape: str  # "cube" or "cylinder"
    half_width_m: float  # half the size across, in the horizontal plane
    half_height_m: float


#: The scene's objects, in index order (``index_model`` checks them against the MJCF).
OBJECTS: tuple[ObjectInfo, ...] = (
    ObjectInfo("obj0", "cube", 0.013, 0.013),
    ObjectInfo("obj1", "cube", 0.013, 0.013),
    ObjectInfo("obj2", "cube", 0.013, 0.013),
    ObjectInfo("obj3", "cylinder", 0.013, 0.015),
)
OBJECT_NAMES: tuple[str, ...] = tuple(o.name for o in OBJECTS)
PAD_NAMES: tuple[str, ...] = ("pad_a", "pad_b")
#: Inner half-width of the bin (m) and the height of its floor's top and walls' top above its base.
BIN_INNER_HALF_M = 0.065
BIN_FLOOR_TOP_M = 0.0065
BIN_WALL_TOP_M = 0.0505
PAD_HALF_M = 0.045


def import_mujoco() -> ModuleType:
    """Import MuJoCo, or raise :class:`SimUnavailableError` with the install hint."""
    try:
        return importlib.import_module("mujoco")
    except ImportError as err:
        raise SimUnavailableError(
            "MuJoCo is not installed: pip install 'ramp-edge[sim]' (mujoco>=3.1)"
        ) from err


@dataclass(frozen=True)
class SceneIndex:
    """Integer indices into one compiled model (valid for every model built from the file)."""

    arm_qpos: np.ndarray  # (6,) qpos addresses of the arm joints
    arm_dof: np.ndarray  # (6,) dof addresses of the arm joints
    finger_qpos: np.ndarray  # (2,) left, right
    finger_dof: np.ndarray
    arm_bodies: np.ndarray  # bodies moved by the arm (gravity compensated with torque on)
    hand_body: int
    grip_site: int
    finger_geoms: tuple[int, int]
    object_bodies: np.ndarray  # (n_obj,)
    object_geoms: np.ndarray  # (n_obj,)
    object_qpos: np.ndarray  # (n_obj,) address of each free joint's 7 qpos
    object_dof: np.ndarray  # (n_obj,) address of each free joint's 6 dofs
    grasp_eq: np.ndarray  # (n_obj,) weld hand -> object
    bin_mocap: int
    pad_mocap: np.ndarray  # (2,)
    pad_geoms: np.ndarray  # (2,)
    objects: tuple[ObjectInfo, ...]


def load_model(path: Path | str = SCENE_XML) -> mujoco.MjModel:
    """Compile the scene. Each plant or expert compiles its own copy (they mutate it).

    Raises :class:`SimUnavailableError` if MuJoCo or the file is missing, or it does not compile.
    """
    mujoco = import_mujoco()
    path = Path(path)
    if not path.is_file():
        raise SimUnavailableError(f"scene file {path} is missing (package data not installed?)")
    try:
        return mujoco.MjModel.from_xml_path(str(path))
    except ValueError as err:
        raise SimUnavailableError(f"scene file {path} does not compile: {err}") from err


def index_model(model: mujoco.MjModel) -> SceneIndex:
    """Look up every name the package uses.

    Raises ``KeyError`` if the model lacks one, :class:`SimUnavailableError` if its objects differ
    from :data:`OBJECTS`.
    """
    mujoco = import_mujoco()
    arm_j = [model.joint(n) for n in ARM_JOINTS]
    fingers = [model.joint(n) for n in ("finger_left", "finger_right")]
    hand = model.body("hand").id
    first_arm_body = model.body("link_pan").id
    arm_bodies = np.array(
        [b for b in range(model.nbody) if _is_descendant(model, b, first_arm_body)], dtype=np.int32
    )
    for info in OBJECTS:
        g = model.geom(f"{info.name}_geom")
        cyl = int(g.type[0]) == int(mujoco.mjtGeom.mjGEOM_CYLINDER)
        size = g.size
        found = (float(size[0]), float(size[1] if cyl else size[2]))
        if (info.shape == "cylinder") != cyl or not np.allclose(
            found, (info.half_width_m, info.half_height_m)
        ):
            raise SimUnavailableError(f"scene object {info.name} does not match scene.OBJECTS")
    obj_joints = [model.joint(f"{n}_free") for n in OBJECT_NAMES]
    return SceneIndex(
        arm_qpos=np.array([int(j.qposadr[0]) for j in arm_j]),
        arm_dof=np.array([int(j.dofadr[0]) for j in arm_j]),
        finger_qpos=np.array([int(j.qposadr[0]) for j in fingers]),
        finger_dof=np.array([int(j.dofadr[0]) for j in fingers]),
        arm_bodies=arm_bodies,
        hand_body=hand,
        grip_site=model.site("grip").id,
        finger_geoms=(model.geom("finger_left_geom").id, model.geom("finger_right_geom").id),
        object_bodies=np.array([model.body(n).id for n in OBJECT_NAMES]),
        object_geoms=np.array([model.geom(f"{n}_geom").id for n in OBJECT_NAMES]),
        object_qpos=np.array([int(j.qposadr[0]) for j in obj_joints]),
        object_dof=np.array([int(j.dofadr[0]) for j in obj_joints]),
        grasp_eq=np.array([model.equality(f"grasp_{n}").id for n in OBJECT_NAMES]),
        bin_mocap=int(model.body_mocapid[model.body("bin").id]),
        pad_mocap=np.array([int(model.body_mocapid[model.body(n).id]) for n in PAD_NAMES]),
        pad_geoms=np.array([model.geom(f"{n}_geom").id for n in PAD_NAMES]),
        objects=OBJECTS,
    )


def _is_descendant(model: mujoco.MjModel, body: int, ancestor: int) -> bool:
    while body > 0:
        if body == ancestor:
            return True
        body = int(model.body_parentid[body])
    return False


def yaw_of_quat(quat_wxyz: np.ndarray) -> float:
    """Heading (rad) of a body's x axis in the world's horizontal plane."""
    w, x, y, z = quat_wxyz
    return float(np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))


def quat_of_yaw(yaw: float) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a rotation by ``yaw`` rad about the world z axis."""
    return np.array([np.cos(yaw / 2.0), 0.0, 0.0, np.sin(yaw / 2.0)])


def wrap_angle(a: float) -> float:
    """Wrap an angle (rad) to [-pi, pi)."""
    return float((a + np.pi) % (2.0 * np.pi) - np.pi)
