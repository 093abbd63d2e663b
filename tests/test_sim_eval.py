"""``ramp-edge sim eval``: a bundle on a simulated task on a simulated clock, checked against
the controller on the emulated robot (a separate process, wall-clock rate) on the same seed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from controller_runs import recorded_run

pytest.importorskip("mujoco", reason="the sim extra (MuJoCo) is not installed")

EXE = Path(sys.executable).parent / "ramp-edge"


def test_when_a_bundle_is_evaluated_expect_one_episode_per_seed_paced_by_the_sim_clock(
        emulated_bundle):
    from ramp_edge.sim_eval import evaluate_bundle, summarise

    steps: dict[int, list[tuple[float, str]]] = {}
    eps = evaluate_bundle(emulated_bundle, task="pack_box", seeds=[5, 6], duration_s=1.5,
                          backend="torch-eager",
                          on_step=lambda s, t, cmd, src: steps.setdefault(s, []).append((t, src)))
    assert [e.seed for e in eps] == [5, 6]
    for e in eps:
        # An untrained bundle does not do the task: the episode runs its whole duration at the
        # control rate, replanning every 25 actions (0.5 s) at 50 Hz.
        assert e.outcome == "timeout" and e.steps == 150 and e.sim_s == pytest.approx(1.5)
        assert 3 <= e.chunks <= 5 and e.chunks_rejected == 0
        assert 0.0 <= e.progress <= e.best_progress <= 1.0
        times = [t for t, _ in steps[e.seed]]
        assert times == pytest.approx([k / 100 for k in range(150)])
        sources = [src for _, src in steps[e.seed]]
        # Hold until the first chunk is in (its inference time, measured, in simulated
        # seconds: a step or a few), then the safety filter's startup ramp (2 s: all of it).
        first = sources.index("ramp")
        assert 1 <= first <= 5 and set(sources[:first]) == {"hold"}
        assert set(sources[first:]) == {"ramp"}
    s = summarise(eps)
    assert s["episodes"] == 2 and s["success"] == 0 and s["sim_s"] == pytest.approx(3.0)


def test_when_evaluated_and_run_on_the_emulated_robot_expect_the_same_first_commands(tmp_path):
    """The shipped (trained) bundle on the same seed through ``ramp-edge run`` on the emulated
    robot and through the evaluator: the same start, and the same purposeful first motion (1 s
    of it, two chunks, inside the startup ramp's 2 s) to within a few hundredths of a radian.
    Later the two drift apart, as two runs of the controller itself do (frame timing and
    inference latency differ)."""
    from models.shipped import shipped_bundles
    from ramp_edge.sim_eval import evaluate_bundle

    shipped = shipped_bundles()[0]
    task = json.loads((shipped / "manifest.json").read_text())["provenance"]["recipe"]["task"]
    st = recorded_run(tmp_path / "home", "--model", str(shipped), "--task", task, "--seed",
                      "11", "--duration", "2.5")
    moving = np.flatnonzero(st.source != "hold")
    real = st.command[moving[0]:moving[0] + 100].astype(np.float64)

    sim: list[np.ndarray] = []
    evaluate_bundle(shipped, task=task, seeds=[11], duration_s=2.5,
                    on_step=lambda s, t, cmd, src: sim.append(cmd.copy()) if src != "hold"
                    else None)
    ours = np.array(sim[:100])
    np.testing.assert_allclose(ours[0], real[0], atol=1e-3)
    assert np.abs(real[-1] - real[0]).max() > 0.04  # it moves with purpose...
    assert np.abs(ours - real).max() < 0.04  # ...and the evaluator moves the same way


def test_when_sim_eval_is_given_a_missing_bundle_or_unknown_task_expect_one_line_and_exit_1(
        emulated_bundle, tmp_path):
    missing = subprocess.run([str(EXE), "sim", "eval", str(tmp_path / "none"), "--task",
                              "pack_box"], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and missing.stderr.strip().count("\n") == 0
    assert "no such directory" in missing.stderr
    unknown = subprocess.run([str(EXE), "sim", "eval", str(emulated_bundle), "--task", "juggle"],
                             capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 1 and "unknown task 'juggle'" in unknown.stderr


def test_when_sim_eval_runs_from_the_command_line_expect_json_per_episode(emulated_bundle):
    out = subprocess.run([str(EXE), "sim", "eval", str(emulated_bundle), "--task", "stack_blocks",
                          "--episodes", "2", "--seed", "40", "--duration", "0.6", "--mode",
                          "efficient", "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert rep["mode"] == "efficient" and rep["episodes"] == 2 and rep["success"] == 0
    assert [e["seed"] for e in rep["per_episode"]] == [40, 41]
    assert "0/2 successes" in out.stderr


def test_when_seeds_are_dealt_to_worker_processes_expect_every_seed_once_in_order(emulated_bundle):
    from ramp_edge.sim_eval import evaluate_bundle
    from ramp_edge.sim_eval_pool import evaluate_in_workers

    kw = {"task": "sort_by_colour", "duration_s": 0.5, "backend": "torch-eager"}
    seen: list[int] = []
    pooled = evaluate_in_workers(emulated_bundle, seeds=[3, 4, 5], workers=2,
                                 on_episode=lambda e: seen.append(e.seed), **kw)
    alone = evaluate_bundle(emulated_bundle, seeds=[3, 4, 5], **kw)
    assert [e.seed for e in pooled] == [3, 4, 5] and sorted(seen) == [3, 4, 5]
    for a, b in zip(pooled, alone, strict=True):
        assert (a.outcome, a.steps, a.chunks) == (b.outcome, b.steps, b.chunks)
        assert a.progress == b.progress and a.grasped == b.grasped
