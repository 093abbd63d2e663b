"""RAMP training: rewards, advantages, value metrics, dataset alignment, stage losses, DDP,
kill/resume and a tiny end-to-end run to a bundle that passes its probe.

Budgets: tiny networks (24x24 images, 16-wide layers), a few optimiser steps each; the sample
episodes are recorded once per module through the real recorder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from episode_samples import record_sample_episode, sample_store

from models.language import Tokenizer
from models.networks import RampConfig, RampNetworks
from models.training.advantages import advantage_indicator, n_step_advantages
from models.training.config import TrainingError, load_config, parse_config
from models.training.dataset import TrainingData, episode_paths, joint_stats, load_episodes
from models.training.objectives import (
    INDICATOR_MASK,
    PolicyObjective,
    WorldModelObjective,
    make_target_encoder,
    policy_conditioning,
    target_latents,
)
from models.training.returns import episode_rewards, returns_to_go, task_scales
from models.training.value_metrics import kendall_tau_b

ROOT = Path(__file__).resolve().parent.parent

TINY_MODEL = """
[model]
image_height = 24
image_width = 24
cnn_channels = [8, 8]
cnn_strides = [2, 2]
camera_dim = 16
joint_dim = 16
latent_dim = 16
lang_dim = 8
wm_hidden = 32
d_model = 16
n_heads = 2
n_layers = 1
mlp_ratio = 2
vocab_size = 256
max_tokens = 8
"""


def _config_text(home: Path, *, steps: int = 6, checkpoint_every: int = 3) -> str:
    return f"""seed = 0
{TINY_MODEL}
[data]
episodes = ["{home}"]
[wm]
steps = {steps}
batch_size = 8
[policy]
steps = {steps}
batch_size = 8
[run]
checkpoint_every = {checkpoint_every}
log_every = 1
threads = 1
device = "cpu"
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("robot-home")
    store, _ = sample_store(root, episodes=2, steps=200)
    record_sample_episode(store, steps=160, outcome="failure", seed=5, takeover=None)
    store.close()
    return root


def _tiny_cfg(n_joints: int = 7, n_cameras: int = 2) -> RampConfig:
    from models.training.config import tomllib

    model = tomllib.loads(TINY_MODEL)["model"]
    return RampConfig.from_dict({**model, "n_joints": n_joints, "n_cameras": n_cameras})


def _data(home: Path) -> TrainingData:
    cfg = parse_config({"data": {"episodes": [str(home)], "holdout_episodes": 0}})
    tok = Tokenizer(vocab_size=256, max_length=8)
    eps, cams = load_episodes(episode_paths([home]), cfg.data, cfg.reward, tok, (24, 24))
    return TrainingData(eps, joints=joint_stats(eps, eps[0].joint_names), cameras=cams,
                        chunk_size=50, horizons=(12, 24, 36, 48), holdout_episodes=0, gamma=1.0)


# --------------------------------------------------------------------------- rewards, advantages


def test_rewards_and_returns_when_hand_made_episodes_expect_known_values():
    assert episode_rewards(4, "success", 50).tolist() == [-1, -1, -1, 0]
    assert episode_rewards(3, "failure", 50).tolist() == [-1, -1, -50]
    assert returns_to_go(np.array([-1.0, -1, -1, 0])).tolist() == [-3, -2, -1, 0]
    assert returns_to_go(np.array([-1.0, -1, -50])).tolist() == [-52, -51, -50]
    np.testing.assert_allclose(returns_to_go(np.array([-1.0, -1, 0]), 0.5), [-1.5, -1, 0])
    scales = task_scales([("a", -3.0), ("a", -52.0), ("b", -2.0)])
    assert scales == {"a": 52.0, "b": 2.0}
    with pytest.raises(ValueError):
        episode_rewards(3, "aborted", 50)


def test_n_step_advantage_when_hand_made_values_expect_formula():
    r = np.array([-0.1, -0.1, -0.1, 0.0])
    v = np.array([-0.3, -0.2, -0.1, 0.0])
    a = n_step_advantages(r, v, gamma=0.5, n=2)
    # t=0: r0 + .5 r1 + .25 v2 - v0 ; t=2: r2 + .5 r3 (episode ends: no bootstrap) - v2
    expected = [-0.1 - 0.05 + 0.25 * -0.1 + 0.3, -0.1 - 0.05 + 0.0 + 0.2, -0.1 + 0.1, 0.0]
    np.testing.assert_allclose(a, expected)
    # A perfect value under gamma = 1 gives zero advantage everywhere.
    g = returns_to_go(r)
    np.testing.assert_allclose(n_step_advantages(r, g, 1.0, 3), 0.0, atol=1e-12)


@pytest.mark.parametrize("share", [0.3, 0.35, 0.4])
def test_indicator_when_quantile_expect_configured_share_and_human_forced(share):
    rng = np.random.default_rng(1)
    n = 2000
    a = rng.normal(size=n)
    human = np.zeros(n, bool)
    human[100:300] = True
    eligible = np.ones(n, bool)
    eligible[1500:1600] = False  # transition window
    res = advantage_indicator(a, human=human, eligible=eligible, positive_share=share)
    pool = eligible & ~human
    assert abs(res.indicator[pool].mean() - share) <= 1.0 / pool.sum()
    assert res.positive_share == pytest.approx(res.indicator[pool].mean())
    assert np.all(res.indicator[human] == 1)
    assert np.all(res.indicator[~eligible & ~human] == 0)
    assert np.all((a > res.eps)[pool] == res.indicator[pool].astype(bool))


def test_kendall_tau_b_when_ties_expect_brute_force_reference():
    def brute(x, y):
        conc = disc = tx = ty = 0
        for i in range(len(x)):
            for j in range(i + 1, len(x)):
                sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
                if sx == 0 and sy == 0:
                    continue
                if sx == 0:
                    tx += 1
                elif sy == 0:
                    ty += 1
                elif sx == sy:
                    conc += 1
                else:
                    disc += 1
        return (conc - disc) / np.sqrt((conc + disc + tx) * (conc + disc + ty))

    rng = np.random.default_rng(7)
    for _ in range(25):  # 25 random cases, ties on purpose (small integer ranges)
        n = int(rng.integers(2, 40))
        x = rng.integers(0, 5, n).astype(float)
        y = x * rng.integers(-1, 2) + rng.integers(0, 4, n)
        got, ref = kendall_tau_b(x, y), brute(x, y)
        assert (np.isnan(got) and np.isnan(ref)) or got == pytest.approx(ref, abs=1e-12)
    x = rng.normal(size=30)
    assert kendall_tau_b(x, 2 * x + 1) == pytest.approx(1.0)
    assert kendall_tau_b(x, -x) == pytest.approx(-1.0)


# --------------------------------------------------------------------------- dataset


def test_dataset_when_100hz_episode_expect_50hz_samples_next_commands_and_no_transitions(home):
    from ramp_edge.episodes import EpisodeStore, open_episode

    data = _data(home)
    with EpisodeStore(home) as store:
        path = store.index.resolve(store.list("sealed")[0])
    with open_episode(path) as ep:
        st = ep.steps()
        scene = list(ep.images("scene"))
    e = next(x for x in data.episodes if x.episode_id == path.stem)
    assert len(e) == (len(st) + 1) // 2  # every other 100 Hz step
    np.testing.assert_array_equal(e.command, st.command[::2])
    # Frame of sample t: the latest scene frame captured at or before step 2t.
    t_cap = np.array([r.t_capture_s for r in scene])
    for t in (0, 7, 40, len(e) - 1):
        assert t_cap[e.frame_index[t, 0]] <= st.t_s[2 * t]
        later = e.frame_index[t, 0] + 1
        assert later == len(t_cap) or t_cap[later] > st.t_s[2 * t]
    ep_i = data.episodes.index(e)
    rows = data.train[data.train[:, 0] == ep_i]
    assert len(rows) and not e.transition[rows[:, 1]].any()
    assert e.transition.any()  # the takeover made transition windows, and they were dropped
    norm = data.joints.normalization
    b = data.batch(rows[:2])
    t0 = int(rows[0, 1])
    actions = b["actions"][0].numpy() * norm.action_std + norm.action_mean
    upto = min(50, len(e) - t0)
    np.testing.assert_allclose(actions[:upto], st.command[::2][t0 : t0 + upto], atol=1e-5)
    assert b["images"].shape == (2 * 2, 24, 24, 3) and b["images"].dtype == torch.uint8
    assert b["future_images"].shape == (2 * 4 * 2, 24, 24, 3)
    assert np.all(b["returns"].numpy() <= 0) and np.all(b["returns"].numpy() >= -1)


# --------------------------------------------------------------------------- stage losses


@pytest.mark.parametrize("variant", ["state_value", "value"])
def test_world_model_loss_when_fixed_batch_expect_decrease(home, variant):
    data = _data(home)
    torch.manual_seed(0)
    net = RampNetworks(_tiny_cfg())
    target = make_target_encoder(net.encoder)
    batch = data.batch(data.train[:16])
    tgt = target_latents(target, batch, 4)
    obj = WorldModelObjective(net.encoder, net.world_model,
                              latent_weight=1.0 if variant == "state_value" else 0.0,
                              value_weight=1.0)
    opt = torch.optim.Adam(obj.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss, _ = obj(batch, tgt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize(("stage", "z_p", "i_p", "use_i"), [
    ("policy", 0.2, 0.0, True), ("continual", 0.2, 0.2, True), ("bc", 1.0, 0.0, False),
    ("recap", 1.0, 0.0, True)])
def test_policy_loss_when_fixed_batch_expect_decrease(home, stage, z_p, i_p, use_i):
    data = _data(home)
    torch.manual_seed(0)
    net = RampNetworks(_tiny_cfg())
    batch = data.batch(data.train[:16], future=False)
    ind_data = np.tile([0, 1], 8).astype(np.float32)
    z, ind = policy_conditioning(np.random.default_rng(0), 16, ind_data, z_mask_p=z_p,
                                 indicator_mask_p=i_p, use_indicator=use_i)
    if stage == "bc":
        assert np.all(z == 1) and np.all(ind == 1)
    if stage == "continual":
        assert np.isin(ind, [0, 1, INDICATOR_MASK]).all()
    batch["z_mask"], batch["indicator_in"] = torch.from_numpy(z), torch.from_numpy(ind)
    obj = PolicyObjective(net.encoder, net.world_model, net.policy, train_encoder=stage == "bc")
    opt = torch.optim.Adam([p for p in obj.parameters() if p.requires_grad], lr=3e-3)
    wm_before = [p.clone() for p in net.world_model.parameters()]
    losses = []
    for _ in range(15):
        loss, _ = obj(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]
    assert all(torch.equal(a, b) for a, b in zip(wm_before, net.world_model.parameters(),
                                                 strict=True))


# --------------------------------------------------------------------------- whole runs


def test_config_when_unknown_key_or_bad_share_expect_one_clear_error(tmp_path):
    bad = tmp_path / "run.toml"
    bad.write_text("[reward]\npositive_share = 1.5\n[wm]\nsteps = 'many'\n")
    with pytest.raises(TrainingError, match=r"wm\.steps must be an integer"):
        load_config(bad)
    bad.write_text("[reward]\npositive_share = 1.5\n")
    with pytest.raises(TrainingError, match="positive_share"):
        load_config(bad)
    bad.write_text("[reward]\nbogus = 1\n")
    with pytest.raises(TrainingError, match="unknown keys"):
        load_config(bad)


def test_end_to_end_when_wm_then_policy_expect_bundle_that_passes_its_probe(home, tmp_path):
    from models.training.run_files import export_run
    from models.training.stages import run_stage
    from ramp_edge.bundle import load_bundle
    from ramp_edge.engines import open_engine

    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text(_config_text(home))
    cfg, text = load_config(cfg_file)
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match="no trained world model"):
        run_stage("policy", cfg, text, run)
    assert run_stage("wm", cfg, text, run) == run / "model.pt"
    assert run_stage("policy", cfg, text, run) == run / "model.pt"
    assert (run / "config.toml").read_text() == text
    vq = json.loads((run / "value_metrics.json").read_text())["wm/state_value"]
    assert vq["n"] > 0 and -1 <= vq["kendall_tau"] <= 1 and vq["mae"] >= 0
    csv_lines = (run / "metrics" / "policy-policy.csv").read_text().splitlines()
    assert csv_lines[0].startswith("stage,phase,") and len(csv_lines) == 1 + 6
    bundle = load_bundle(export_run(run, tmp_path / "bundle", backends=["torch-eager"]))
    assert bundle.trained and bundle.joint_names[0] == "shoulder_pan"
    with open_engine(bundle, "torch-eager") as engine:  # verifies the probe on open
        report = bundle.verify(engine)
        obs = bundle.probe_observation()
        standard, efficient = engine.predict(obs, "standard"), engine.predict(obs, "efficient")
    assert report.backend == "torch-eager"
    # RAMP's policy reads the world model's tokens in standard mode.
    assert bundle.manifest.policy_uses_world_model
    assert not np.allclose(standard.actions, efficient.actions)
    with pytest.raises(TrainingError, match="another config"):
        run_stage("wm", parse_config({}), text + "\n# changed\n", run)


_DDP_WORKER = """
import os, sys, torch
sys.path.insert(0, {root!r})
import models.training.stages as S
from models.training.config import load_config
orig = S._run_phase
def spy(stage, spec, net, *a, **k):
    done = orig(stage, spec, net, *a, **k)
    torch.save(net.state_dict(), os.path.join({out!r}, f"rank{{os.environ['RANK']}}.pt"))
    return done
S._run_phase = spy
cfg, text = load_config({cfg!r})
S.run_stage("wm", cfg, text, {run!r})
"""


def test_ddp_when_two_cpu_ranks_expect_identical_parameters(home, tmp_path):
    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text(_config_text(home, steps=3))
    worker = tmp_path / "worker.py"
    worker.write_text(_DDP_WORKER.format(root=str(ROOT), out=str(tmp_path), cfg=str(cfg_file),
                                         run=str(tmp_path / "run")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(worker)], capture_output=True, text=True, timeout=180, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 rank(s)" in proc.stderr
    a = torch.load(tmp_path / "rank0.pt")
    b = torch.load(tmp_path / "rank1.pt")
    fresh = RampNetworks(_tiny_cfg()).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["world_model.head.weight"], fresh["world_model.head.weight"])


def test_kill_and_resume_when_sigkill_mid_run_expect_continue_from_checkpoint(home, tmp_path,
                                                                            capsys):
    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text(_config_text(home, steps=100000, checkpoint_every=4))
    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "wm-wm.pt"
    cmd = [sys.executable, "-m", "models.cli_train", "wm", "--config", str(cfg_file), "--out",
           str(run)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not ckpt.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        time.sleep(0.2)  # let it run past the checkpoint, mid-way to the next
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    saved = torch.load(ckpt, weights_only=False)["step"]
    assert saved >= 4 and saved % 4 == 0
    # Resume in this process (same code path as the command, without a second start-up).
    from models.training.stages import run_stage

    cfg, text = load_config(cfg_file)
    stop = saved + 3
    assert run_stage("wm", cfg, text, run, stop_at=stop) is None  # stopped early, resumable
    assert f"resumed from step {saved}" in capsys.readouterr().err
    assert torch.load(ckpt, weights_only=False)["step"] == stop
    steps = [json.loads(line).get("step") for line in
             (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-3:] == list(range(saved + 1, stop + 1))


def test_baselines_and_continual_when_tiny_runs_expect_models_with_their_stages(home, tmp_path):
    from models.training.run_files import load_run_model
    from models.training.stages import run_stage

    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text(_config_text(home, steps=2).replace(
        "[wm]", '[continual]\ninit = "bc"\nwm_steps = 2\npolicy_steps = 2\n[wm]').replace(
        f'episodes = ["{home}"]', f'episodes = ["{home}"]\nrollouts = ["{home}/episodes"]'))
    cfg, text = load_config(cfg_file)
    for stage in ("bc", "recap"):
        run_stage(stage, cfg, text, tmp_path / stage)
        assert load_run_model(tmp_path / stage).stages == [stage]
    recap = json.loads((tmp_path / "recap" / "value_metrics.json").read_text())
    assert list(recap) == ["recap/value"]
    run_stage("continual", cfg, text, tmp_path / "cont")
    model = load_run_model(tmp_path / "cont")
    assert model.stages == ["bc", "continual"]
    lines = (tmp_path / "cont" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines]
    share = next(r for r in records if r.get("kind") == "indicator")["positive_share"]
    assert 0.25 <= share <= 0.45  # configured 0.35, on a few hundred steps with ties


# --------------------------------------------------------------------------- augmentation


def test_random_shift_when_seeded_expect_edge_padded_crop_of_each_image():
    from models.training.augment import random_shift

    rng = np.random.default_rng(3)
    imgs = torch.from_numpy(rng.integers(0, 256, (6, 10, 12, 3), dtype=np.uint8))
    out = random_shift(imgs, 2, np.random.default_rng(7))
    assert out.shape == imgs.shape and out.dtype == torch.uint8
    # The reference: pad by 2 with the edge, crop at the offsets drawn from the same seed.
    draw = np.random.default_rng(7)
    dy, dx = draw.integers(-2, 3, 6), draw.integers(-2, 3, 6)
    padded = np.pad(imgs.numpy(), ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
    for i in range(6):
        ref = padded[i, 2 + dy[i] : 2 + dy[i] + 10, 2 + dx[i] : 2 + dx[i] + 12]
        np.testing.assert_array_equal(out[i].numpy(), ref)
    assert not torch.equal(out, imgs)  # 6 draws from 25 offsets: not all (0, 0) for this seed
    assert random_shift(imgs, 0, np.random.default_rng(7)) is imgs
    with pytest.raises(ValueError, match="max_px"):
        random_shift(imgs, -1, np.random.default_rng(7))


def test_image_shift_when_configured_expect_inputs_shifted_and_future_targets_not(home,
                                                                                  tmp_path):
    from models.training.distributed import DistContext
    from models.training.stages import _batch, _phases

    with pytest.raises(TrainingError, match="image_shift_px"):
        parse_config({"policy": {"image_shift_px": 17}})
    cfg = parse_config({"wm": {"image_shift_px": 4}, "policy": {"image_shift_px": 4}})
    data = _data(home)
    ctx = DistContext(rank=0, world=1, device=torch.device("cpu"))
    for spec in _phases("continual", cfg) + _phases("bc", cfg) + _phases("recap", cfg):
        assert spec.image_shift_px == 4
        plain = data.batch(data.train[data.sample_indices(5, spec.batch_size, cfg.seed)],
                           future=spec.name == "wm")
        shifted = _batch(data, spec, cfg, ctx, 5)
        assert shifted["images"].shape == plain["images"].shape
        assert not torch.equal(shifted["images"], plain["images"])
        torch.testing.assert_close(shifted["position"], plain["position"])
        if spec.name == "wm":
            assert torch.equal(shifted["future_images"], plain["future_images"])
    off = _phases("bc", parse_config({}))[0]
    assert off.image_shift_px == 0
    plain = data.batch(data.train[data.sample_indices(5, off.batch_size, 0)], future=False)
    assert torch.equal(_batch(data, off, parse_config({}), ctx, 5)["images"], plain["images"])


def test_lr_schedule_when_cosine_expect_lr_to_final_fraction_and_logged_per_step(home, tmp_path):
    from models.training.stages import PhaseSpec, run_stage

    with pytest.raises(TrainingError, match="lr_schedule"):
        parse_config({"wm": {"lr_schedule": "linear"}})
    with pytest.raises(TrainingError, match="lr_final_fraction"):
        parse_config({"policy": {"lr_final_fraction": 1.5}})
    spec = PhaseSpec("policy", 11, 8, 1e-3, lr_schedule="cosine", lr_final_fraction=0.1)
    lrs = [spec.lr_at(k) for k in range(11)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-4)
    assert lrs[5] == pytest.approx(0.5 * (1e-3 + 1e-4))  # halfway down the cosine
    assert bool(np.all(np.diff(lrs) < 0))
    assert PhaseSpec("policy", 11, 8, 1e-3).lr_at(7) == 1e-3  # constant by default
    # A run logs the rate each logged step used; the optimiser follows the schedule.
    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text(_config_text(home, steps=6).replace(
        "[policy]\n", '[policy]\nlr_schedule = "cosine"\nlr = 0.002\nlr_final_fraction = 0.25\n'))
    cfg, text = load_config(cfg_file)
    run_stage("bc", cfg, text, tmp_path / "bc")
    lines = (tmp_path / "bc" / "metrics.jsonl").read_text().splitlines()
    logged = [r["lr"] for r in map(json.loads, lines) if "lr" in r]
    assert len(logged) == 6  # log_every = 1
    assert logged[0] == pytest.approx(0.002)
    assert logged[1] == pytest.approx(0.002 * (0.25 + 0.75 * 0.5 * (1 + np.cos(np.pi / 5))))
    assert logged[-1] == pytest.approx(0.0005)


def test_bc_and_recap_bundles_when_standard_mode_expect_the_mask_token_they_trained_with(
        home, tmp_path):
    """A policy trained with the world-model tokens always masked (BC, RECAP) never saw real
    tokens: its bundle says so, and standard mode feeds it the mask token (the world model
    still runs, for RECAP's value), so both modes give the actions it was trained to give."""
    from models.training.run_files import export_run
    from models.training.stages import run_stage
    from ramp_edge.bundle import load_bundle
    from ramp_edge.engines import open_engine

    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text(_config_text(home, steps=2))
    cfg, text = load_config(cfg_file)
    for stage in ("bc", "recap"):
        run_stage(stage, cfg, text, tmp_path / stage)
        bundle = load_bundle(export_run(tmp_path / stage, tmp_path / f"{stage}-bundle",
                                        backends=["torch-eager", "onnx-fp32"]))
        assert bundle.manifest.raw["model"]["policy_uses_world_model"] is False
        assert bundle.manifest.policy_uses_world_model is False
        obs = bundle.probe_observation()
        for backend in ("torch-eager", "onnx-fp32"):
            with open_engine(bundle, backend) as engine:  # the probe verifies on open
                standard = engine.predict(obs, "standard")
                efficient = engine.predict(obs, "efficient")
            np.testing.assert_allclose(standard.actions, efficient.actions, rtol=0, atol=1e-6)
            assert standard.value is not None and efficient.value is None
