"""``ramp-edge sim ...``: the simulated robot's tasks and camera frames a person can look at."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

sim_app = typer.Typer(help="The simulated robot (MuJoCo; the sim extra): tasks, camera frames.",
                      no_args_is_help=True)


@sim_app.command("tasks")
def tasks(as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
          seed: Annotated[int, typer.Option(help="Seed of the example instruction.")] = 0,
          ) -> None:
    """List the tasks: name, what it asks, sub-goals and step budget of an example episode."""
    from firmware_bridge.sim.tasks import TASKS, make_episode

    rows = []
    for name, spec in TASKS.items():
        episode = make_episode(name, seed)
        rows.append({"name": name, "summary": spec.summary, "example": episode.instruction,
                     "subgoals": len(episode.subgoals), "step_budget": episode.step_budget,
                     "control_hz": episode.control_hz})
    if as_json:
        print(json.dumps(rows))
        return
    for r in rows:
        print(f"{r['name']:<16} {r['summary']}\n{'':<16} e.g. \"{r['example']}\" "
              f"({r['subgoals']} sub-goals, {r['step_budget']} steps at {r['control_hz']} Hz)",
              file=sys.stderr)


@sim_app.command("render")
def render(
    out: Annotated[Path, typer.Option(help="PNG to write (with --camera all: one per camera, "
                                      "named OUT-stem.CAMERA.png).")],
    task: Annotated[str, typer.Option(help="Task scene.")] = "pack_box",
    seed: Annotated[int, typer.Option(help="Seed of the scene's initial state.")] = 0,
    camera: Annotated[str, typer.Option(help="scene, wrist or all.")] = "scene",
    size: Annotated[int, typer.Option(min=16, max=480, help="Width = height, pixels.")] = 96,
) -> None:
    """Render a camera frame of a task's initial scene to PNG."""
    from firmware_bridge.sim.plant import MujocoPlant
    from firmware_bridge.sim.render import CAMERAS, SimRenderer, save_png

    if camera not in (*CAMERAS, "all"):
        raise typer.BadParameter(f"camera must be one of {', '.join(CAMERAS)} or all")
    plant = MujocoPlant(task, seed=seed)
    with SimRenderer(plant, size, size) as renderer:
        frames = renderer.render_all()
    names = CAMERAS if camera == "all" else (camera,)
    for name in names:
        path = out if camera != "all" else out.with_name(f"{out.stem}.{name}{out.suffix or '.png'}")
        save_png(path, frames[name])
        print(f"wrote {path} ({name} camera, {size}x{size}, task {task}, seed {seed})",
              file=sys.stderr)
