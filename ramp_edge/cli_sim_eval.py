"""``ramp-edge sim eval``: a model bundle evaluated on a simulated task faster than real time
(:mod:`ramp_edge.sim_eval`). Mounted on the ``sim`` sub-app by ``cli.py`` (the simulator's own
commands live in ``firmware_bridge``, which imports nothing of the controller)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer


def sim_eval(
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="Bundle directory.")],
    task: Annotated[str, typer.Option(help="Simulated task (ramp-edge sim tasks).")],
    episodes: Annotated[int, typer.Option(min=1, help="Episodes, one seed each.")] = 10,
    seed: Annotated[int, typer.Option(help="Scene seed of the first episode (then +1 each), "
                                           "as ramp-edge run --seed.")] = 0,
    mode: Annotated[str, typer.Option(help="standard (world model + policy) or efficient "
                                           "(policy alone).")] = "standard",
    duration: Annotated[float | None, typer.Option(
        min=0.1, help="Simulated seconds per episode (default: the task's step budget + 1 s).")
    ] = None,
    backend: Annotated[str | None, typer.Option(
        help="Engine backend (default: the fastest the bundle has that loads and verifies).")
    ] = None,
    threads: Annotated[int, typer.Option(min=1, help="Intra-op threads for the engine.")] = 1,
    workers: Annotated[int, typer.Option(
        min=1, help="Processes, each with its own engine and scene (seeds dealt among them); "
                    "one per spare core.")] = 1,
    robot: Annotated[Path | None, typer.Option(
        help="Robot config (default: the built-in emulated robot).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Every episode and the summary as "
                                                         "JSON on stdout.")] = False,
) -> None:
    """Run BUNDLE on a simulated task on a simulated clock: the controller's chunk scheduler and
    safety filter, the bundle's engine, cameras at the robot's camera rate, the emulator's servo
    arithmetic. Many times faster than ``ramp-edge run`` on the emulated robot, without its
    threads and serial link. Exit 0 when every episode ran (whatever its outcome)."""
    from ramp_edge.config import load_config
    from ramp_edge.sim_eval import summarise
    from ramp_edge.sim_eval_pool import evaluate_in_workers

    if mode not in ("standard", "efficient"):
        raise typer.BadParameter("mode must be standard or efficient", param_hint="--mode")
    config = load_config(robot)

    eps = evaluate_in_workers(bundle, seeds=range(seed, seed + episodes), workers=workers,
                              verbose=True, task=task, mode=mode, config=config,
                              backend=backend, threads=threads, duration_s=duration)
    summary = summarise(eps)
    if as_json:
        print(json.dumps({"bundle": str(bundle), "task": task, "mode": mode, **summary,
                          "per_episode": [e.as_dict() for e in eps]}, indent=1))
    print(f"{summary['success']}/{summary['episodes']} successes, mean progress "
          f"{summary['mean_progress']:.2f}, an object grasped in {summary['grasped_any']}; "
          f"{summary['sim_s']:.0f} s simulated in "
          f"{summary['wall_s']:.0f} s", file=sys.stderr)
