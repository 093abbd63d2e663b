"""Table-top tasks: a registry that is data, episodes sampled from a seed, and their detectors.

A task (:class:`TaskSpec`) names its instruction templates, the fixtures it uses, its step budget
and a plan builder that draws colours, roles and sub-goals from a random generator. An
:class:`Episode` is one concrete draw: the instruction, the initial :class:`Layout`, the ordered
:class:`SubGoal` list and the step budget. Detectors are pure functions of a
:class:`~firmware_bridge.sim.state.SimState`:

- ``success(state)``: every sub-goal holds, nothing is held, nothing fell;
- ``progress(state)``: the fraction of sub-goals that hold now (0..1, for diagnostics);
- ``failure(state)``: why the episode cannot succeed any more (an object left the table), or None.

Sub-goals are data too: ``in_bin`` (object inside the bin), ``on_pad`` (object resting on a pad)
and ``on_object`` (object resting centred on another one). An object counts as placed only when
it is released and at rest.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from firmware_bridge.sim.errors import LayoutError, UnknownTaskError
from firmware_bridge.sim.scene import (
    BIN_INNER_HALF_M,
    BIN_WALL_TOP_M,
    GRIPPER_MAX_OPENING_M,
    N_ARM,
    OBJECTS,
    PAD_HALF_M,
    TABLE_X_M,
    TABLE_Y_M,
)
from firmware_bridge.sim.state import RGBA, Layout, SimState

PALETTE: dict[str, RGBA] = {
    "red": (0.85, 0.12, 0.12, 1.0),
    "green": (0.15, 0.70, 0.20, 1.0),
    "blue": (0.12, 0.30, 0.90, 1.0),
    "yellow": (0.95, 0.80, 0.10, 1.0),
}
#: The arm's rest pose at reset (before the per-seed jitter): the ready pose, gripper open.
HOME_POSITION = np.array([0.0] * N_ARM + [GRIPPER_MAX_OPENING_M])
HOME_JITTER_RAD = 0.15

# Where objects are drawn: a ring sector in front of the arm (m, rad from +x).
OBJECT_RADIUS_M = (0.22, 0.42)
OBJECT_ANGLE_RAD = (-1.0, 1.0)
MIN_OBJECT_GAP_M = 0.075
# Unused fixtures wait out of the workspace (pads are also hidden).
PARKED_BIN_XY = (-0.12, 0.42)
PARKED_PAD_XY = ((-0.15, -0.45), (-0.05, -0.45))

SETTLED_SPEED_M_S = 0.05
STACK_XY_TOL_M = 0.015
STACK_Z_TOL_M = 0.008
FELL_BELOW_Z_M = -0.03


@dataclass(frozen=True)
class SubGoal:
    """One placement. ``kind`` is ``in_bin``, ``on_pad`` or ``on_object``; ``target`` is the
    pad index (``on_pad``) or the object underneath (``on_object``), unused for ``in_bin``."""

    kind: str
    obj: int
    target: int = -1

    def __post_init__(self) -> None:
        if self.kind not in ("in_bin", "on_pad", "on_object"):
            raise ValueError(f"unknown sub-goal kind {self.kind!r}")


@dataclass(frozen=True)
class Plan:
    """What a task's builder draws: colours, sub-goals, template fields, fixtures in use."""

    object_colours: tuple[str, ...]
    subgoals: tuple[SubGoal, ...]
    fields: dict[str, str]
    uses_bin: bool = True
    pad_colours: tuple[str, str] | None = None  # pads shown (sort tasks), else hidden


@dataclass(frozen=True)
class TaskSpec:
    """A task family. ``instructions`` are ``str.format`` templates over the plan's fields."""

    name: str
    summary: str
    instructions: tuple[str, ...]
    build: Callable[[np.random.Generator], Plan]
    steps_per_subgoal: int = 250
    base_steps: int = 100
    control_hz: int = 50


@dataclass(frozen=True)
class Episode:
    """One seeded instance of a task. ``step_budget`` counts control steps at ``control_hz``."""

    task: str
    seed: int
    instruction: str
    layout: Layout
    subgoals: tuple[SubGoal, ...]
    object_names: tuple[str, ...]  # "red cube", ... for instructions and messages
    step_budget: int
    control_hz: int = 50
    extras: dict[str, str] = field(default_factory=dict)

    # -- detectors --------------------------------------------------------------------------------
    def subgoal_done(self, i: int, state: SimState) -> bool:
        return subgoal_holds(self.subgoals[i], state)

    def done_mask(self, state: SimState) -> np.ndarray:
        return np.array([subgoal_holds(g, state) for g in self.subgoals], dtype=bool)

    def progress(self, state: SimState) -> float:
        """Fraction of sub-goals that hold now (0..1)."""
        return float(self.done_mask(state).mean())

    def current_subgoal(self, state: SimState) -> int | None:
        """The first sub-goal (in order) that does not hold, or None when all do."""
        undone = np.flatnonzero(~self.done_mask(state))
        return int(undone[0]) if undone.size else None

    def success(self, state: SimState) -> bool:
        return (
            state.held < 0
            and self.failure(state) is None
            and bool(self.done_mask(state).all())
        )

    def failure(self, state: SimState) -> str | None:
        """Why the episode can no longer succeed, or None. Checks every object in the scene."""
        for i, reason in enumerate(objects_off_table(state)):
            if reason:
                return f"the {self.object_names[i]} {reason}"
        return None

    # -- geometry for experts and correctors ---------------------------------------------------
    def place_target(self, i: int, state: SimState) -> np.ndarray:
        """Where sub-goal ``i`` wants its object's centre (m, world): bin centre at floor height,
        pad centre, or on top of the object underneath."""
        g = self.subgoals[i]
        h = OBJECTS[g.obj].half_height_m
        if g.kind == "in_bin":
            return np.array([*state.bin_pos[:2], state.bin_pos[2] + 0.0065 + h])
        if g.kind == "on_pad":
            return np.array([*state.pad_pos[g.target][:2], h])
        below = state.object_pos[g.target]
        return below + np.array([0.0, 0.0, OBJECTS[g.target].half_height_m + h])

    def subgoal_anchor(self, i: int, state: SimState) -> np.ndarray:
        """Where the gripper should be heading for sub-goal ``i``: the object, or once it is
        held, the place target."""
        g = self.subgoals[i]
        if state.held == g.obj:
            return self.place_target(i, state)
        return state.object_pos[g.obj].copy()


# -- detectors as functions ---------------------------------------------------------------------
def _settled(state: SimState, i: int) -> bool:
    return state.held != i and float(np.linalg.norm(state.object_vel[i])) < SETTLED_SPEED_M_S


def subgoal_holds(g: SubGoal, state: SimState) -> bool:
    """Whether sub-goal ``g`` holds in ``state`` (its object released and at rest)."""
    if not _settled(state, g.obj):
        return False
    p = state.object_pos[g.obj]
    if g.kind == "in_bin":
        d = np.abs(p[:2] - state.bin_pos[:2])
        return bool(np.all(d < BIN_INNER_HALF_M - 0.004) and p[2] < BIN_WALL_TOP_M + 0.01)
    if g.kind == "on_pad":
        d = np.abs(p[:2] - state.pad_pos[g.target][:2])
        return bool(np.all(d < PAD_HALF_M) and p[2] < OBJECTS[g.obj].half_height_m + 0.01)
    below = state.object_pos[g.target]
    if not _settled(state, g.target):
        return False
    dz = p[2] - below[2] - OBJECTS[g.obj].half_height_m - OBJECTS[g.target].half_height_m
    return bool(np.linalg.norm(p[:2] - below[:2]) < STACK_XY_TOL_M and abs(dz) < STACK_Z_TOL_M)


def objects_off_table(state: SimState) -> list[str | None]:
    """Per object: why it is off the table ("fell off the table"), or None."""
    out: list[str | None] = []
    for p in state.object_pos:
        off = (
            p[2] < FELL_BELOW_Z_M
            or not TABLE_X_M[0] < p[0] < TABLE_X_M[1]
            or not TABLE_Y_M[0] < p[1] < TABLE_Y_M[1]
        )
        out.append("fell off the table" if off else None)
    return out


# -- plan builders ------------------------------------------------------------------------------
def _colours(rng: np.random.Generator) -> tuple[str, ...]:
    names = list(PALETTE)
    return tuple(names[k] for k in rng.permutation(len(names)))


def _name(colours: tuple[str, ...], i: int) -> str:
    return f"{colours[i]} {OBJECTS[i].shape}"


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _plan_pack(rng: np.random.Generator) -> Plan:
    colours = _colours(rng)
    n = int(rng.choice([2, 3]))
    chosen = [int(k) for k in rng.choice(len(OBJECTS), size=n, replace=False)]
    goals = tuple(SubGoal("in_bin", i) for i in chosen)
    return Plan(colours, goals, {"objects": _join([_name(colours, i) for i in chosen])})


def _plan_stack(rng: np.random.Generator) -> Plan:
    colours = _colours(rng)
    cubes = [i for i, o in enumerate(OBJECTS) if o.shape == "cube"]
    bottom, middle, top = (int(k) for k in rng.permutation(cubes)[:3])
    goals = (SubGoal("on_object", middle, bottom), SubGoal("on_object", top, middle))
    fields = {
        "bottom": _name(colours, bottom), "middle": _name(colours, middle),
        "top": _name(colours, top),
    }
    return Plan(colours, goals, fields)


def _plan_sort(rng: np.random.Generator) -> Plan:
    pads = ("red", "blue") if rng.random() < 0.5 else ("blue", "red")
    n = len(OBJECTS)
    distractor = int(rng.integers(n))
    sorted_objs = [i for i in range(n) if i != distractor]
    first = ["red", "blue"]
    sorted_colours = [*first, str(rng.choice(first))]
    rng.shuffle(sorted_colours)
    colours = [""] * n
    for i, c in zip(sorted_objs, sorted_colours, strict=True):
        colours[i] = c
    colours[distractor] = str(rng.choice(["green", "yellow"]))
    order = [sorted_objs[k] for k in rng.permutation(len(sorted_objs))]
    goals = tuple(SubGoal("on_pad", i, pads.index(colours[i])) for i in order)
    fields = {"distractor": _name(tuple(colours), distractor)}
    return Plan(tuple(colours), goals, fields, uses_bin=False, pad_colours=pads)


#: The task registry. Add a task by adding an entry; nothing else dispatches on names.
TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="pack_box",
            summary="put two or three named objects into the box",
            instructions=(
                "put the {objects} in the box",
                "pack the {objects} into the bin",
                "place the {objects} inside the box",
                "move the {objects} into the container",
            ),
            build=_plan_pack,
        ),
        TaskSpec(
            name="stack_blocks",
            summary="stack three cubes in the named order",
            instructions=(
                "stack the {middle} on the {bottom}, then the {top} on the {middle}",
                "build a tower: the {bottom} at the bottom, the {middle} in the middle and the "
                "{top} on top",
                "put the {middle} on top of the {bottom} and the {top} on top of that",
                "make a stack of {bottom}, {middle} and {top}, bottom to top",
            ),
            build=_plan_stack,
            steps_per_subgoal=275,
        ),
        TaskSpec(
            name="sort_by_colour",
            summary="put the red and blue objects on the pad of their colour",
            instructions=(
                "sort the objects by colour onto the matching pads",
                "put each red or blue object on the pad of the same colour",
                "red things on the red pad, blue things on the blue pad",
                "sort the blocks by colour and leave the {distractor} alone",
            ),
            build=_plan_sort,
        ),
    )
}


def get_task(name: str) -> TaskSpec:
    """The registered task ``name``; raises :class:`UnknownTaskError` naming the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        known = ", ".join(sorted(TASKS))
        raise UnknownTaskError(f"unknown task {name!r} (known: {known})") from None


def _rng(task: str, seed: int) -> np.random.Generator:
    # The task name is mixed in so that seed 3 of two tasks are unrelated draws.
    return np.random.default_rng([int(seed) & 0xFFFF_FFFF, zlib.crc32(task.encode())])


def make_episode(task: str, seed: int) -> Episode:
    """Draw episode ``seed`` of ``task`` (deterministic: same arguments, same episode)."""
    spec = get_task(task)
    rng = _rng(task, seed)
    plan = spec.build(rng)
    layout = sample_layout(rng, plan)
    instruction = str(rng.choice(spec.instructions)).format(**plan.fields)
    names = tuple(_name(plan.object_colours, i) for i in range(len(OBJECTS)))
    budget = spec.base_steps + spec.steps_per_subgoal * len(plan.subgoals)
    return Episode(
        task=spec.name, seed=int(seed), instruction=instruction, layout=layout,
        subgoals=plan.subgoals, object_names=names, step_budget=budget,
        control_hz=spec.control_hz, extras=dict(plan.fields),
    )


def free_play_layout(seed: int) -> Layout:
    """A scene without a task: objects scattered, the bin in reach, pads hidden."""
    rng = _rng("free_play", seed)
    return sample_layout(rng, Plan(_colours(rng), (), {}))


def sample_layout(rng: np.random.Generator, plan: Plan, max_tries: int = 2000) -> Layout:
    """Place fixtures, then objects by rejection sampling in the ring sector in front of the arm.

    Raises :class:`LayoutError` if no placement is found in ``max_tries`` draws.
    """
    side = 1.0 if rng.random() < 0.5 else -1.0
    keep_out: list[tuple[np.ndarray, float]] = []  # (centre, radius objects must stay out of)
    if plan.uses_bin:
        ang = side * rng.uniform(0.6, 1.0)
        bin_xy = rng.uniform(0.30, 0.36) * np.array([np.cos(ang), np.sin(ang)])
        keep_out.append((bin_xy, BIN_INNER_HALF_M * np.sqrt(2.0) + 0.035))
    else:
        bin_xy = np.array(PARKED_BIN_XY)
    if plan.pad_colours is not None:
        pad_xy = np.empty((2, 2))
        for k, s in enumerate((side, -side)):
            ang = s * rng.uniform(0.55, 0.95)
            pad_xy[k] = rng.uniform(0.28, 0.38) * np.array([np.cos(ang), np.sin(ang)])
            keep_out.append((pad_xy[k], PAD_HALF_M * np.sqrt(2.0) + 0.025))
        pad_rgba = (PALETTE[plan.pad_colours[0]], PALETTE[plan.pad_colours[1]])
        visible = (True, True)
    else:
        pad_xy = np.array(PARKED_PAD_XY)
        pad_rgba = (PALETTE["red"], PALETTE["blue"])
        visible = (False, False)
    n = len(OBJECTS)
    xy = np.empty((n, 2))
    placed = 0
    for _ in range(max_tries):
        r = rng.uniform(*OBJECT_RADIUS_M)
        a = rng.uniform(*OBJECT_ANGLE_RAD)
        p = r * np.array([np.cos(a), np.sin(a)])
        if any(np.linalg.norm(p - c) < rad for c, rad in keep_out):
            continue
        if placed and np.min(np.linalg.norm(xy[:placed] - p, axis=1)) < MIN_OBJECT_GAP_M:
            continue
        xy[placed] = p
        placed += 1
        if placed == n:
            break
    else:
        raise LayoutError(f"no layout with {n} objects found in {max_tries} draws")
    arm = HOME_POSITION.copy()
    arm[:N_ARM] += rng.uniform(-HOME_JITTER_RAD, HOME_JITTER_RAD, N_ARM)
    return Layout(
        arm_position=arm,
        object_xy=xy,
        object_yaw=rng.uniform(-np.pi / 4, np.pi / 4, n),
        object_rgba=tuple(PALETTE[c] for c in plan.object_colours),
        bin_xy=np.asarray(bin_xy, dtype=np.float64),
        pad_xy=pad_xy,
        pad_rgba=pad_rgba,
        pad_visible=visible,
    )
