"""Where a policy's arm went in held-out simulated episodes: did it pick what it was asked to?

Success and task progress say only that a policy failed. This says how: for each episode (the
same simulated clock, chunk scheduler and safety filter as ``ramp-edge sim eval``) it records
which object the gripper held first, whether that is the object of the instruction's first
sub-goal (pack_box: the first object named; stack_blocks: the middle cube, which goes on the
bottom one first; sort_by_colour: the first object the task's plan sorts), and how close the
grasp point came to that object before holding it and to any object at all, and, as the
chance level of the last, how close the same path came to the objects of another episode's
scene (where the next seed's objects stood at its start): a policy that does not look at the
scene comes as close to another scene's objects as to its own.

    python benchmarks/grounding.py BUNDLE --task pack_box --episodes 50 --seed 90000 \
        --duration 18 [--json]

A policy that reaches objects (small closest distance to any) but grasps the asked-for one no
more often than chance has not learnt to tie the instruction to what it sees.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from ramp_edge.sim_eval import evaluate_bundle


@dataclass(frozen=True)
class Grounding:
    """One episode. Distances in cm; ``first_grasp`` is an object index or -1 (none held)."""

    seed: int
    outcome: str
    progress: float
    target: int
    first_grasp: int
    first_grasp_in_plan: bool
    target_closest_cm: float
    any_object_closest_cm: float
    #: The path against the start positions of its own scene's objects and of the next
    #: episode's (None if it ran alone): the same measure, so the two compare.
    own_scene_start_closest_cm: float | None = None
    other_scene_closest_cm: float | None = None


class _Track:
    """Collects the grasp point, object positions and held object at every step."""

    def __init__(self) -> None:
        self._start(None)

    def _start(self, episode: Any) -> None:
        self.episode = episode
        self.grip: list[np.ndarray] = []
        self.objects: list[np.ndarray] = []
        self.held: list[int] = []

    def __call__(self, seed: int, episode: Any, state: Any) -> None:
        if self.episode is not episode:
            self._start(episode)
        self.grip.append(state.grip_pos.copy())
        self.objects.append(state.object_pos.copy())
        self.held.append(int(state.held))

    def path(self) -> tuple[np.ndarray, np.ndarray]:
        """The grasp point at every step [T, 3] and the objects' start positions [n, 3]."""
        return np.array(self.grip), np.array(self.objects[0])

    def result(self, seed: int, outcome: str, progress: float) -> Grounding:
        goals = self.episode.subgoals
        target = goals[0].obj
        held = np.array(self.held)
        first = int(held[held >= 0][0]) if (held >= 0).any() else -1
        grip, objects = np.array(self.grip), np.array(self.objects)
        # Up to the step the target was first held (the whole episode if it never was).
        upto = int(np.argmax(held == target)) + 1 if (held == target).any() else len(held)
        to_target = np.linalg.norm(grip[:upto] - objects[:upto, target], axis=1).min()
        to_any = np.linalg.norm(grip[:, None, :] - objects, axis=2).min()
        return Grounding(seed=seed, outcome=outcome, progress=round(progress, 4), target=target,
                         first_grasp=first,
                         first_grasp_in_plan=first >= 0 and first in {g.obj for g in goals},
                         target_closest_cm=round(float(to_target) * 100, 2),
                         any_object_closest_cm=round(float(to_any) * 100, 2))


def ground(bundle: str, *, task: str, seeds: list[int], duration_s: float | None,
           on_episode: Any = None) -> list[Grounding]:
    """Run ``bundle`` on ``task`` once per seed; one :class:`Grounding` per episode."""
    track = _Track()
    out: list[Grounding] = []
    paths: list[tuple[np.ndarray, np.ndarray]] = []

    def done(ep: Any) -> None:
        out.append(track.result(ep.seed, ep.outcome, ep.progress))
        paths.append(track.path())
        if on_episode is not None:
            on_episode(out[-1])

    evaluate_bundle(bundle, task=task, seeds=seeds, duration_s=duration_s, on_episode=done,
                    on_state=track)
    return with_other_scenes(out, paths)


def with_other_scenes(rows: list[Grounding],
                      paths: list[tuple[np.ndarray, np.ndarray]]) -> list[Grounding]:
    """Each row with its grasp-point path's closest approach to the start positions of its own
    scene's objects and of the next row's (the last row's: the first's)."""
    if len(rows) < 2:
        return rows

    def closest_cm(grip: np.ndarray, objects: np.ndarray) -> float:
        return round(float(np.linalg.norm(grip[:, None, :] - objects, axis=2).min()) * 100, 2)

    return [replace(row, own_scene_start_closest_cm=closest_cm(paths[i][0], paths[i][1]),
                    other_scene_closest_cm=closest_cm(paths[i][0],
                                                      paths[(i + 1) % len(rows)][1]))
            for i, row in enumerate(rows)]


def summarise(rows: list[Grounding]) -> dict[str, Any]:
    target = np.array([r.target_closest_cm for r in rows])
    grasped = [r for r in rows if r.first_grasp >= 0]
    return {
        "episodes": len(rows),
        "success": sum(r.outcome == "success" for r in rows),
        "mean_progress": round(float(np.mean([r.progress for r in rows])), 3),
        "grasped_any": len(grasped),
        "first_grasp_is_target": sum(r.first_grasp == r.target for r in grasped),
        "first_grasp_in_plan": sum(r.first_grasp_in_plan for r in grasped),
        "target_closest_cm_median": round(float(np.median(target)), 1),
        "target_within_2cm": int((target < 2).sum()),
        "target_within_5cm": int((target < 5).sum()),
        "any_object_closest_cm_median": round(
            float(np.median([r.any_object_closest_cm for r in rows])), 1),
        **{f"{key}_median": (round(float(np.median(values)), 1) if (values := [
            getattr(r, key) for r in rows if getattr(r, key) is not None]) else None)
           for key in ("own_scene_start_closest_cm", "other_scene_closest_cm")},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--task", required=True)
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=90_000, help="first scene seed (then +1 each)")
    ap.add_argument("--duration", type=float, default=None,
                    help="simulated seconds per episode (default: the task's budget + 1 s)")
    ap.add_argument("--json", action="store_true", help="every episode and the summary as JSON")
    args = ap.parse_args(argv)
    if args.episodes < 1:
        ap.error("--episodes must be at least 1")

    def progress(r: Grounding) -> None:
        print(f"seed {r.seed}: {r.outcome}, first grasp {r.first_grasp} (asked: {r.target}), "
              f"closest to it {r.target_closest_cm:.1f} cm", file=sys.stderr, flush=True)

    rows = ground(args.bundle, task=args.task, duration_s=args.duration, on_episode=progress,
                  seeds=list(range(args.seed, args.seed + args.episodes)))
    summary = {"bundle": args.bundle, "task": args.task, **summarise(rows)}
    if args.json:
        print(json.dumps({**summary, "per_episode": [asdict(r) for r in rows]}, indent=1))
    else:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
