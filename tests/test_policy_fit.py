"""benchmarks/policy_fit.py: a bundle's open-loop action error on logged episodes, per mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from episode_samples import sample_store
from test_training import _config_text

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "policy_fit.py"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    from models.training.config import load_config
    from models.training.run_files import export_run
    from models.training.stages import run_stage

    root = tmp_path_factory.mktemp("fit")
    home = root / "home"
    store, _ = sample_store(home, episodes=2, steps=150, takeover=None)
    store.close()
    cfg_file = root / "run.toml"
    cfg_file.write_text(_config_text(home, steps=2))
    cfg, text = load_config(cfg_file)
    out: dict[str, Path] = {}
    for stage in ("bc", "wm", "policy"):  # bc alone; wm then policy is a RAMP run
        run_dir = root / ("ramp" if stage in ("wm", "policy") else stage)
        run_stage(stage, cfg, text, run_dir)
    for name in ("bc", "ramp"):
        out[name] = export_run(root / name, root / f"{name}-bundle", backends=["torch-eager"])
    return home, out


def _fit(bundle: Path, home: Path, every: int) -> dict:
    proc = subprocess.run([sys.executable, str(SCRIPT), str(bundle), str(home), "--every",
                           str(every), "--backend", "torch-eager", "--json"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_policy_fit_when_bc_bundle_expect_equal_modes_and_errors_in_joint_and_std_units(bundles):
    """A BC bundle (policy_uses_world_model false) gives the same actions in both modes, so
    the same error; every --every-th sample of both episodes is counted; the error in action
    std units is the joint error divided by the bundle's std."""
    from ramp_edge.bundle import load_bundle

    home, made = bundles
    res = _fit(made["bc"], home, every=10)
    assert res["episodes"] == 2 and res["policy_uses_world_model"] is False
    dense = _fit(made["bc"], home, every=1)
    # 150 control steps at 100 Hz are 75 policy-rate samples per episode
    assert dense["samples"] == 150 and res["samples"] == 2 * 8
    std = load_bundle(made["bc"]).manifest.normalization.action_std
    for mode in ("standard", "efficient"):
        r = res["modes"][mode]
        per_joint = np.asarray(r["per_joint"])
        assert per_joint.shape == (7,) and np.all(np.isfinite(per_joint)) and np.all(per_joint > 0)
        np.testing.assert_allclose(r["per_joint_in_std"], per_joint / std, atol=2e-3)
        assert r["mean_abs_error"] == pytest.approx(per_joint.mean(), abs=1e-5)
    assert res["modes"]["standard"]["mean_abs_error"] == pytest.approx(
        res["modes"]["efficient"]["mean_abs_error"], abs=1e-6)


def test_policy_fit_when_ramp_bundle_expect_modes_to_differ(bundles):
    """A RAMP bundle's policy reads the world model's tokens in standard mode and the mask
    token in efficient mode: the two errors differ."""
    home, made = bundles
    res = _fit(made["ramp"], home, every=10)
    assert res["policy_uses_world_model"] is True
    assert res["modes"]["standard"]["mean_abs_error"] != pytest.approx(
        res["modes"]["efficient"]["mean_abs_error"], abs=1e-6)


def test_policy_fit_when_no_usable_episode_expect_one_clear_error(bundles, tmp_path):
    _, made = bundles
    empty = tmp_path / "empty-home"
    empty.mkdir()
    proc = subprocess.run([sys.executable, str(SCRIPT), str(made["bc"]), str(empty)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("policy_fit:"), proc.stderr
