"""RAMP training from a LeRobotDataset v3.0 export: the same episodes read from the episode
store and from their export (``export_lerobot``) must give the same training samples, up to the
video codec's loss; a tiny ``train wm`` runs from the export through the CLI.

Budgets: three short episodes (160, 121 and 30 steps, 48x48 images from two cameras) exported
four ways (50 and 100 fps, x264, a file per episode); 24x24 network images; 2 world-model steps.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import episode_samples
import numpy as np
import pytest
from test_training import TINY_MODEL

from models.language import Tokenizer
from models.training.config import TrainingError, parse_config
from models.training.dataset import episode_paths, load_episodes

pytest.importorskip("pyarrow", reason="the export extra (pyarrow) is missing")
pq = pytest.importorskip("pyarrow.parquet", reason="the export extra (pyarrow) is missing")
pytest.importorskip("av", reason="the export extra (av) is missing")

from ramp_edge.episodes import EpisodeStore  # noqa: E402
from ramp_edge.episodes.export_lerobot import export_lerobot, pick_codec  # noqa: E402
from ramp_edge.episodes.export_mcap import ExportError  # noqa: E402

HW = (24, 24)
MAX_PIXEL_ERROR = 12.0  # mean absolute error, uint8 levels (12/255): AV1/x264 are lossy
# Neighbouring recorded frames differ by about 70 levels (random 8x8 blocks), so a frame one
# off would show far above the codec error.
MIN_NEIGHBOUR_GAP = 30.0


def _blocks_image(i: int, cam: int, size: int = 48) -> np.ndarray:
    """Random 8x8-pixel colour blocks drawn from (image number, camera): consecutive images
    differ strongly, so a frame taken from the wrong time shows."""
    rng = np.random.default_rng([i, cam])
    blocks = rng.integers(0, 256, (size // 8, size // 8, 3)).astype(np.uint8)
    return np.kron(blocks, np.ones((8, 8, 1), np.uint8))


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("robot-home")
    with pytest.MonkeyPatch.context() as mp, EpisodeStore(root) as store:
        mp.setattr(episode_samples, "sample_image", _blocks_image)
        record = episode_samples.record_sample_episode
        record(store, steps=160, takeover=(60, 100), seed=1)
        record(store, steps=121, takeover=None, seed=2, outcome="failure", image_every=4,
               task="stack", instruction="stack the cups")
        record(store, steps=30, takeover=None, seed=3, outcome="aborted")
    return root


def _export(home: Path, out: Path, fps: int, **kw) -> Path:
    with EpisodeStore(home) as store:
        paths = [store.index.resolve(e) for e in store.list()]  # the aborted one too
    export_lerobot(paths, out, fps=fps, **kw)
    return out


@pytest.fixture(scope="module", params=[
    {"fps": 50}, {"fps": 100}, {"fps": 50, "vcodec": "libx264"},
    # A new data file and chunk for every episode; video files roll over too.
    {"fps": 50, "chunks_size": 1, "data_files_size_in_mb": 1e-6,
     "video_files_size_in_mb": 1e-6},
], ids=["50fps", "100fps", "x264", "file-per-episode"])
def dataset(request, home, tmp_path_factory) -> Path:
    if "vcodec" in request.param:
        try:
            pick_codec(request.param["vcodec"])
        except ExportError:
            pytest.skip(f"this PyAV build has no {request.param['vcodec']} encoder")
    out = _export(home, tmp_path_factory.mktemp("lerobot") / "ds", **request.param)
    if "chunks_size" in request.param:
        assert len(list(out.glob("data/chunk-*/*.parquet"))) == 3
        assert len(list(out.glob("videos/observation.images.scene/chunk-*/*.mp4"))) > 1
    return out


def _load(source: Path, **data):
    cfg = parse_config({"data": {"holdout_episodes": 0, **data}})
    tok = Tokenizer(vocab_size=256, max_length=8)
    return load_episodes(episode_paths([source]), cfg.data, cfg.reward, tok, HW)


def test_lerobot_source_when_export_of_the_store_expect_the_same_samples(home, dataset):
    store_eps, store_cams = _load(home)
    lr_eps, lr_cams = _load(dataset)
    assert lr_cams == store_cams == ("scene", "wrist")
    # The aborted episode has no reward: the store lists it as unsealed, the source skips it.
    assert json.loads((dataset / "meta/info.json").read_text())["total_episodes"] == 3
    assert len(store_eps) == 2
    assert [e.episode_id for e in lr_eps] == [e.episode_id for e in store_eps]
    # The takeover made human samples and transition windows, so comparing them means something.
    assert store_eps[0].human.any() and store_eps[0].transition.any()
    for s, r in zip(store_eps, lr_eps, strict=True):
        assert (r.task, r.outcome, r.joint_names) == (s.task, s.outcome, s.joint_names)
        np.testing.assert_array_equal(r.tokens, s.tokens)
        assert len(r) == len(s)
        np.testing.assert_allclose(r.position, s.position, atol=1e-6)
        np.testing.assert_allclose(r.command, s.command, atol=1e-6)
        # No velocity in the export: the state's central difference stands in (rad/s).
        np.testing.assert_allclose(r.velocity, s.velocity, atol=0.05)
        np.testing.assert_array_equal(r.source, s.source)
        np.testing.assert_array_equal(r.human, s.human)
        np.testing.assert_array_equal(r.transition, s.transition)
        np.testing.assert_array_equal(r.trainable, s.trainable)
        np.testing.assert_array_equal(r.rewards, s.rewards)
        assert r.frames.dtype == np.uint8 and r.frames.shape[2:] == (*HW, 3)
        for c in range(len(store_cams)):
            got = r.frames[c, r.frame_index[:, c]].astype(np.float64)
            idx = s.frame_index[:, c]

            def err(i: np.ndarray, rows: np.ndarray, s=s, c=c, got=got) -> np.ndarray:
                ref = s.frames[c, i].astype(np.float64)
                return np.abs(ref - got[rows]).mean(axis=(1, 2, 3))

            every = np.arange(len(s))
            right = err(idx, every)
            assert right.max() < MAX_PIXEL_ERROR, (s.episode_id, c, right.max())
            n_frames = idx.max() + 1
            for other in (idx - 1, idx + 1):
                ok = (other >= 0) & (other < n_frames)
                assert (err(other[ok], every[ok]) > MIN_NEIGHBOUR_GAP).all(), "frame one off"


def test_lerobot_source_when_policy_rate_differs_expect_resampling_like_the_store(home,
                                                                               dataset):
    store_eps, _ = _load(home, policy_rate_hz=25.0)
    lr_eps, _ = _load(dataset, policy_rate_hz=25.0)
    for s, r in zip(store_eps, lr_eps, strict=True):
        assert len(r) == len(s)
        np.testing.assert_allclose(r.command, s.command, atol=1e-6)
        np.testing.assert_array_equal(r.transition, s.transition)


@pytest.fixture(scope="module")
def ds50(home, tmp_path_factory) -> Path:
    return _export(home, tmp_path_factory.mktemp("lerobot50") / "ds", fps=50)


def _broken_copy(ds: Path, tmp: Path) -> Path:
    out = tmp / "broken"
    shutil.copytree(ds, out)
    return out


def _edit_info(root: Path, change) -> None:
    path = root / "meta/info.json"
    info = json.loads(path.read_text())
    change(info)
    path.write_text(json.dumps(info))


def test_lerobot_source_when_another_codebase_version_expect_one_clear_error(ds50, tmp_path):
    root = _broken_copy(ds50, tmp_path)
    _edit_info(root, lambda i: i.update(codebase_version="v2.1"))
    with pytest.raises(TrainingError, match=r"codebase_version 'v2.1'; only v3.0") as err:
        _load(root)
    assert "\n" not in str(err.value)


def test_lerobot_source_when_a_video_is_missing_expect_one_clear_error(ds50, tmp_path):
    root = _broken_copy(ds50, tmp_path)
    (root / "videos/observation.images.wrist/chunk-000/file-000.mp4").unlink()
    with pytest.raises(TrainingError, match=r"video videos/observation.images.wrist/\S+ "
                                            r"of episode 0 is missing"):
        _load(root)


def test_lerobot_source_when_a_feature_is_missing_expect_one_clear_error(ds50, tmp_path):
    root = _broken_copy(ds50, tmp_path)
    with pytest.raises(TrainingError, match=r"feature 'observation.images.top' is missing"):
        _load(root, cameras=["top"])
    _edit_info(root, lambda i: i["features"].pop("action"))
    with pytest.raises(TrainingError, match=r"has no feature 'action'"):
        _load(root)
    data = root / "data/chunk-000/file-000.parquet"
    pq.write_table(pq.read_table(data).drop_columns(["observation.state"]), data)
    _edit_info(root, lambda i: i["features"].update(action={"dtype": "float32"}))
    with pytest.raises(TrainingError, match=r"file-000.parquet has no feature "
                                            r"'observation.state'"):
        _load(root)


def test_cli_train_wm_when_data_is_a_lerobot_export_expect_a_trained_stage(ds50, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    cfg = tmp_path / "run.toml"
    cfg.write_text(f"""seed = 0
{TINY_MODEL}
[data]
episodes = ["{ds50}"]
holdout_episodes = 1
[wm]
steps = 2
batch_size = 4
[run]
checkpoint_every = 2
log_every = 1
threads = 1
device = "cpu"
""")
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "wm", "--config", str(cfg), "--out", str(out),
                                   "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["finished"] and Path(result["model"]).is_file()
    rows = [line.split(",") for line in (out / "metrics/wm-wm.csv").read_text().splitlines()]
    losses = [float(r[4]) for r in rows[1:] if r[4]]
    assert len(losses) == 2 and np.isfinite(losses).all()
    # Value metrics ran over the held-out episode (the last one) as read from the export.
    eps, _ = _load(ds50)
    assert json.loads((out / "value_metrics.json").read_text())["wm/state_value"]["n"] == len(
        eps[-1])
