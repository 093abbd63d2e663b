"""Benchmark of the simulated robot: physics rate, render time, expert and HILR success rates.

    .venv/bin/python benchmarks/sim_bench.py [--seeds 100] [--extra-seeds 30] [--out FILE]

Prints a Markdown report (and writes it to ``--out``). Also saves one 96x96 frame per camera
to benchmarks/out/ so a person can look at what the cameras see.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from firmware_bridge.sim.corrector import ScriptedCorrector
from firmware_bridge.sim.errors import RenderError
from firmware_bridge.sim.expert import ExpertConfig, ScriptedExpert
from firmware_bridge.sim.plant import MujocoPlant
from firmware_bridge.sim.rollout import SOURCE_CORRECTOR, run_episode
from firmware_bridge.sim.scene import import_mujoco
from firmware_bridge.sim.tasks import TASKS

OUT_DIR = Path(__file__).resolve().parent / "out"


def bench_physics(n: int = 20_000) -> dict[str, float]:
    """Steps/s of bare ``mj_step`` and of ``MujocoPlant.step`` (1 ms) holding a pose, objects at
    rest on the table (the emulator's case between tasks)."""
    mujoco = import_mujoco()
    plant = MujocoPlant("pack_box", seed=0)
    m, d = plant.model, plant.data
    t0 = time.perf_counter()
    for _ in range(n):
        mujoco.mj_step(m, d)
    bare = n / (time.perf_counter() - t0)
    plant.reset(seed=0)
    cmd = plant.position.copy()
    t0 = time.perf_counter()
    for _ in range(n):
        plant.step(cmd, True, 0.001)
    stepped = n / (time.perf_counter() - t0)
    return {"mj_step": bare, "plant.step": stepped}


def bench_render(n: int = 200, size: int = 96) -> dict[str, float] | str:
    """Milliseconds per frame per camera; or why rendering is unavailable."""
    from firmware_bridge.sim.render import CAMERAS, SimRenderer, save_png

    plant = MujocoPlant("sort_by_colour", seed=0)
    try:
        renderer = SimRenderer(plant, width=size, height=size)
    except RenderError as err:
        return str(err)
    out: dict[str, float] = {}
    with renderer:
        OUT_DIR.mkdir(exist_ok=True)
        for cam in CAMERAS:
            for _ in range(10):  # warm-up
                renderer.render(cam)
            t0 = time.perf_counter()
            for _ in range(n):
                img = renderer.render(cam)
            out[cam] = (time.perf_counter() - t0) / n * 1e3
            save_png(OUT_DIR / f"sim_{cam}_{size}.png", img)
    return out


def bench_tasks(seeds: int, config: ExpertConfig, with_corrector: bool = False) -> dict[str, dict]:
    """Per task: success rate, mean control steps, takeovers, wall and physics steps/s."""
    results: dict[str, dict] = {}
    for name in sorted(TASKS):
        plant = MujocoPlant(name)
        ok, steps, takeovers, corr, wall, sim = [], [], [], [], 0.0, 0.0
        for seed in range(seeds):
            ep = plant.reset(seed)
            cfg = ExpertConfig(**{**config.__dict__, "seed": seed})
            policy = ScriptedExpert(ep, cfg, model=plant.model)
            corrector = ScriptedCorrector(ep, model=plant.model) if with_corrector else None
            budget = 2 * ep.step_budget if with_corrector else None
            t0 = time.perf_counter()
            r = run_episode(plant, ep, policy, corrector=corrector, max_steps=budget)
            wall += time.perf_counter() - t0
            sim += r.sim_time_s
            ok.append(r.success)
            steps.append(r.steps)
            takeovers.append(r.takeovers)
            corr.append(float(np.mean(r.source == SOURCE_CORRECTOR)))
        results[name] = {
            "success": float(np.mean(ok)), "n": seeds, "steps": float(np.mean(steps)),
            "takeovers": float(np.mean(takeovers)), "corrector_share": float(np.mean(corr)),
            "physics_steps_s": sim / 0.001 / wall, "wall_per_episode_s": wall / seeds,
        }
    return results


def report(args: argparse.Namespace) -> str:
    lines = [
        "# Simulated robot: measured figures",
        "",
        f"Command: `{args.command}`",
        f"Machine: {args.machine}; MuJoCo {import_mujoco().__version__}, "
        f"MUJOCO_GL={os.environ.get('MUJOCO_GL')}",
        f"Date: {args.date}",
        "",
    ]
    phys = bench_physics()
    lines += [
        "## Physics (1 ms timestep, arm holding a pose, 4 objects at rest)",
        "",
        "| loop | steps/s | x real time |",
        "| --- | ---: | ---: |",
    ]
    for k, v in phys.items():
        lines.append(f"| `{k}` | {v:,.0f} | {v / 1000:.1f} |")
    rend = bench_render()
    lines += ["", "## Rendering, 96x96 RGB, offscreen", ""]
    if isinstance(rend, str):
        lines.append(f"Unavailable: {rend}")
    else:
        lines += ["| camera | ms per frame |", "| --- | ---: |"]
        lines += [f"| {k} | {v:.2f} |" for k, v in rend.items()]
    runs = [
        ("Expert, noise 0, failure rate 0", args.seeds, ExpertConfig(), False),
        ("Expert, action noise 0.01 rad", args.extra_seeds, ExpertConfig(action_noise_rad=0.01),
         False),
        ("Expert, action noise 0.02 rad", args.extra_seeds, ExpertConfig(action_noise_rad=0.02),
         False),
        ("Expert, failure rate 0.5, no corrector", args.extra_seeds,
         ExpertConfig(failure_rate=0.5), False),
        ("Expert, failure rate 0.5, with the scripted corrector (budget x2)", args.extra_seeds,
         ExpertConfig(failure_rate=0.5), True),
    ]
    for title, seeds, cfg, corr in runs:
        if seeds <= 0:
            continue
        res = bench_tasks(seeds, cfg, corr)
        lines += [
            "", f"## {title}: seeds 0..{seeds - 1} per task (physics only)", "",
            "| task | success | mean control steps (50 Hz) | mean takeovers | corrector share "
            "of steps | physics steps/s in the loop | wall s per episode |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, r in res.items():
            lines.append(
                f"| {name} | {r['success']:.0%} ({round(r['success'] * r['n'])}/{r['n']}) "
                f"| {r['steps']:.0f} | {r['takeovers']:.2f} | {r['corrector_share']:.0%} "
                f"| {r['physics_steps_s']:,.0f} | {r['wall_per_episode_s']:.2f} |"
            )
        print("\n".join(lines[-len(res) - 4:]), file=sys.stderr, flush=True)
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=100, help="resets per task, clean expert")
    ap.add_argument("--extra-seeds", type=int, default=30, help="resets per task, other runs")
    ap.add_argument("--out", type=Path, help="also write the report here")
    ap.add_argument("--machine", default=f"{os.cpu_count()}-core {platform.machine()}, "
                    f"Python {platform.python_version()}")
    ap.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    args = ap.parse_args()
    args.command = ".venv/bin/python " + shlex.join(sys.argv)
    text = report(args)
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
