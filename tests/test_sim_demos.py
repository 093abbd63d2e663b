"""``ramp-edge sim record``: scripted-expert demonstrations recorded on a simulated clock into the
episode store, checked against a demonstration recorded through the controller on the emulated
robot (a separate process, wall-clock rate) on the same seed."""

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


def _only_episode(home: Path):
    from ramp_edge.episodes import EpisodeStore

    with EpisodeStore(home) as store:
        entries = store.index.list()
        assert len(entries) == 1
        assert store.verify(entries[0].id).ok  # the sealed hash and SQLite's integrity check
        return entries[0], store.path_of(entries[0].id)


def test_when_a_demonstration_is_recorded_expect_a_sealed_success_that_training_reads(tmp_path):
    from models.language import Tokenizer
    from models.training.config import parse_config
    from models.training.dataset import episode_paths, load_episodes
    from ramp_edge.episodes import open_episode
    from ramp_edge.sim_demos import OPERATOR, record_demonstrations

    home = tmp_path / "home"
    seen = []
    demos = record_demonstrations(home, task="pack_box", seeds=[10000], on_episode=seen.append)
    assert seen == demos and len(demos) == 1
    d = demos[0]
    assert d.outcome == "success" and d.label == "success" and d.seed == 10000
    entry, path = _only_episode(home)
    assert entry.id == d.episode_id and entry.status == "sealed" and entry.outcome == "success"
    assert entry.operator == OPERATOR
    with open_episode(path) as ep:
        st = ep.steps()
        events = [e.kind for e in ep.events()]
        frames = {c: ep.image_count(c) for c in ("scene", "wrist")}
    assert len(st.t_s) == d.steps and set(st.source) == {"human"}
    np.testing.assert_allclose(np.diff(st.t_s), 0.01, atol=1e-6)  # 100 Hz on the sim clock
    assert events == ["takeover_start", "takeover_end"]
    expected = d.sim_s * 30  # frames at the camera rate, both cameras
    assert all(abs(n - expected) <= 2 for n in frames.values()) and 2 * frames["scene"] == d.images
    # the arm moved: it packed the objects (first and last commands far apart)
    assert np.abs(st.command[-1] - st.command[0]).max() > 0.3
    cfg = parse_config({"data": {"episodes": [str(home)], "holdout_episodes": 0}})
    eps, cams = load_episodes(episode_paths([home]), cfg.data, cfg.reward,
                              Tokenizer(vocab_size=256, max_length=8), (96, 96))
    # one training sample per policy step (50 Hz)
    assert len(eps) == 1 and cams == ("scene", "wrist") and len(eps[0]) == (d.steps + 1) // 2


def test_when_time_runs_out_expect_the_demonstration_sealed_failure(tmp_path):
    from ramp_edge.sim_demos import record_demonstrations

    home = tmp_path / "home"
    (d,) = record_demonstrations(home, task="stack_blocks", seeds=[3], duration_s=0.5)
    assert d.outcome == "timeout" and d.label == "failure" and d.steps == 50
    entry, _ = _only_episode(home)
    assert entry.outcome == "failure" and entry.status == "sealed"


def test_when_recorded_and_demonstrated_through_the_controller_expect_the_same_motion(tmp_path):
    """The same seed demonstrated through ``ramp-edge run --no-policy --teleop expert`` on the
    emulated robot and recorded on the simulated clock: the same start, the same first 0.7 s
    of motion and the same pose once the first transit is over, to within a few hundredths of
    a radian. During the fast transit the two run at different paces (by up to 0.23 rad
    measured): the expert re-plans from the arm's pose whenever the arm lags its reference by
    over 0.35 rad, and the controller's expert reads the scene over the sim link, a little
    late, so it re-plans at other moments. Measured on a quiet machine: 0.018 rad over the
    first 0.7 s, 0.015 rad from 1.6 s on."""
    from ramp_edge.episodes import open_episode
    from ramp_edge.sim_demos import record_demonstrations

    st = recorded_run(tmp_path / "real", "--no-policy", "--teleop", "expert", "--task",
                      "pack_box", "--seed", "11", "--duration", "2.6")
    human = np.flatnonzero(st.source == "human")
    real = st.command[human[0]:human[0] + 240].astype(np.float64)
    assert len(real) == 240

    sim_home = tmp_path / "sim"
    record_demonstrations(sim_home, task="pack_box", seeds=[11], duration_s=2.5)
    _, sim_path = _only_episode(sim_home)
    with open_episode(sim_path) as ep:
        ours = ep.steps().command[:240].astype(np.float64)
    apart = np.abs(ours - real).max(axis=1)
    np.testing.assert_allclose(ours[0], real[0], atol=1e-3)
    assert np.abs(real[180] - real[0]).max() > 0.3  # the expert moves...
    assert apart[:70].max() < 0.04, apart[:70].max()  # ...the recorder the same way...
    assert apart[180:].max() < 0.04, apart[180:].max()  # ...to the same place


def test_when_recorded_from_the_command_line_expect_json_progress_and_clear_errors(tmp_path):
    home = tmp_path / "home"
    out = subprocess.run([str(EXE), "sim", "record", "--task", "sort_by_colour", "--episodes",
                          "2", "--seed", "7", "--duration", "0.3", "--home", str(home),
                          "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert rep["episodes"] == 2 and rep["success"] == 0
    assert [e["seed"] for e in rep["per_episode"]] == [7, 8]
    assert "demonstration 2/2 (seed 8)" in out.stderr and "0/2 demonstrations" in out.stderr
    unknown = subprocess.run([str(EXE), "sim", "record", "--task", "juggle", "--home",
                              str(tmp_path / "other")], capture_output=True, text=True,
                             timeout=120)
    assert unknown.returncode == 1 and unknown.stderr.strip().count("\n") == 0
    assert "unknown task 'juggle'" in unknown.stderr
