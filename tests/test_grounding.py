"""benchmarks/grounding.py: which object a policy went for, against what it was asked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("mujoco", reason="the sim extra (MuJoCo) is not installed")

from firmware_bridge.sim.tasks import SubGoal, make_episode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import grounding  # noqa: E402


def _state(grip, objects, held=-1):
    return SimpleNamespace(grip_pos=np.array(grip, float), object_pos=np.array(objects, float),
                           held=held)


def test_track_when_arm_passes_one_object_and_holds_another_expect_distances_and_first_grasp():
    episode = SimpleNamespace(subgoals=(SubGoal("in_bin", 1), SubGoal("in_bin", 2)))
    objects = [[0.0, 0.0, 0.0], [0.3, 0.0, 0.0], [0.0, 0.3, 0.0], [0.3, 0.3, 0.0]]
    track = grounding._Track()
    track(7, episode, _state([0.1, 0.0, 0.0], objects))  # 10 cm from object 0
    track(7, episode, _state([0.01, 0.0, 0.0], objects, held=0))  # holds object 0 (not asked)
    track(7, episode, _state([0.25, 0.0, 0.0], objects, held=0))  # 5 cm from the target, 1
    row = track.result(7, "timeout", 0.0)
    assert (row.target, row.first_grasp, row.first_grasp_in_plan) == (1, 0, False)
    assert row.target_closest_cm == pytest.approx(5.0)
    assert row.any_object_closest_cm == pytest.approx(1.0)
    # A new episode object starts a new track; holding the target stops its distance there.
    other = SimpleNamespace(subgoals=(SubGoal("in_bin", 3),))
    track(8, other, _state([0.3, 0.28, 0.0], objects))  # 2 cm
    track(8, other, _state([0.3, 0.3, 0.0], objects, held=3))  # 0 cm, held
    track(8, other, _state([0.0, 0.0, 0.5], objects, held=3))
    row = track.result(8, "timeout", 0.0)
    assert (row.target, row.first_grasp, row.first_grasp_in_plan) == (3, 3, True)
    assert row.target_closest_cm == pytest.approx(0.0)
    summary = grounding.summarise([row])
    assert summary["first_grasp_is_target"] == 1 and summary["target_within_2cm"] == 1


def test_other_scenes_when_paths_and_layouts_given_expect_each_path_against_the_next_layout():
    rows = [grounding.Grounding(seed=s, outcome="timeout", progress=0.0, target=0, first_grasp=-1,
                                first_grasp_in_plan=False, target_closest_cm=50.0,
                                any_object_closest_cm=1.0) for s in (1, 2)]
    paths = [(np.array([[0.0, 0.0, 0.0], [0.01, 0.0, 0.0]]), np.array([[0.0, 0.0, 0.0]])),
             (np.array([[0.5, 0.0, 0.0]]), np.array([[0.0, 0.2, 0.0], [0.4, 0.0, 0.0]]))]
    got = grounding.with_other_scenes(rows, paths)
    assert [r.own_scene_start_closest_cm for r in got] == [0.0, 10.0]
    # Path 0 against layout 1: its closest point (0, 0, 0) is 20 cm from (0, 0.2, 0) (its other
    # point is 20.02 cm away); path 1 against layout 0 (the last row wraps to the first): 50 cm.
    assert [r.other_scene_closest_cm for r in got] == [20.0, 50.0]
    summary = grounding.summarise(got)
    assert summary["other_scene_closest_cm_median"] == pytest.approx(35.0, abs=0.1)
    assert grounding.with_other_scenes(rows[:1], paths[:1])[0].other_scene_closest_cm is None


def test_cli_when_a_bundle_runs_expect_json_per_episode_with_the_asked_object(emulated_bundle):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "grounding.py"),
                          str(emulated_bundle), "--task", "stack_blocks", "--episodes", "2",
                          "--seed", "40", "--duration", "1.0", "--json"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["episodes"] == 2 and [r["seed"] for r in got["per_episode"]] == [40, 41]
    for r in got["per_episode"]:
        assert r["target"] == make_episode("stack_blocks", r["seed"]).subgoals[0].obj
        assert 0 <= r["any_object_closest_cm"] <= r["target_closest_cm"] < 100
        assert 0 <= r["own_scene_start_closest_cm"] < 100 and 0 <= r["other_scene_closest_cm"] < 100
    assert got["per_episode"][0]["target_closest_cm"] != got["per_episode"][1][
        "target_closest_cm"]  # two scenes, two layouts
    assert "seed 40:" in out.stderr  # progress, one line per episode
