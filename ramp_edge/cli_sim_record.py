"""``ramp-edge sim record``: scripted-expert demonstrations recorded into the robot's episode
store on a simulated clock (:mod:`ramp_edge.sim_demos`). Mounted on the ``sim`` sub-app by
``cli.py``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ramp_edge.cli_run import HomeOpt


def sim_record(
    task: Annotated[str, typer.Option(help="Simulated task (ramp-edge sim tasks).")],
    episodes: Annotated[int, typer.Option(min=1, help="Demonstrations, one seed each.")] = 10,
    seed: Annotated[int, typer.Option(help="Scene seed of the first demonstration (then +1 "
                                           "each), as ramp-edge run --seed.")] = 0,
    duration: Annotated[float | None, typer.Option(
        min=0.1, help="Simulated seconds at most per demonstration (default: the task's step "
                      "budget + 1 s); one that has not succeeded by then is sealed failure.")
    ] = None,
    noise: Annotated[float, typer.Option(
        min=0.0, help="The expert's action noise (rad, per arm joint and step).")] = 0.0,
    robot: Annotated[Path | None, typer.Option(
        help="Robot config (default: the built-in emulated robot).")] = None,
    home: HomeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Every demonstration and the summary "
                                                         "as JSON on stdout.")] = False,
) -> None:
    """Record scripted-expert demonstrations of a simulated task into the robot's episode store
    (under --home), on a simulated clock: the controller's takeover path (hand-over blend,
    safety filter), the emulator's servo arithmetic, cameras at the robot's camera rate.
    Faster than real time (about 4x, one process), unlike ``ramp-edge run --no-policy
    --teleop expert --record``, and without its threads and serial link; the episodes say so
    in their operator field. Exit 0 when every demonstration was recorded (whatever its
    outcome)."""
    from ramp_edge.config import load_config
    from ramp_edge.home import resolve_home
    from ramp_edge.sim_demos import record_demonstrations

    config = load_config(robot)
    root = resolve_home(home)
    total = episodes

    def progress(d) -> None:
        print(f"demonstration {d.seed - seed + 1}/{total} (seed {d.seed}): {d.outcome}, "
              f"{d.steps} steps, {d.images} frames, {d.sim_s:.1f} s simulated in "
              f"{d.wall_s:.1f} s -> {d.episode_id} ({d.label})", file=sys.stderr)

    demos = record_demonstrations(root, task=task, seeds=range(seed, seed + episodes),
                                  config=config, duration_s=duration, noise_rad=noise,
                                  on_episode=progress)
    ok = sum(1 for d in demos if d.label == "success")
    if as_json:
        print(json.dumps({"task": task, "home": str(root), "episodes": len(demos),
                          "success": ok, "per_episode": [d.as_dict() for d in demos]}, indent=1))
    print(f"{ok}/{len(demos)} demonstrations succeeded; recorded in {root}", file=sys.stderr)
