"""Episode export: MCAP read back with the mcap package's reader; LeRobotDataset v3.0 checked
against the format's layout with pyarrow and PyAV (parquet columns, index ranges, info.json,
stats, video frames per episode). Episodes are recorded through the real store and recorder."""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from episode_samples import record_sample_episode, sample_image

from ramp_edge.episodes import EpisodeStore, EpisodeStoreError, open_episode
from ramp_edge.episodes.export_lerobot import (
    CONTROL_SOURCE_CODES,
    export_lerobot,
    latest_index,
    nearest_index,
)
from ramp_edge.episodes.export_mcap import ExportError, export_mcap

mcap_reader = pytest.importorskip("mcap.reader", reason="the export extra (mcap) is missing")
pa = pytest.importorskip("pyarrow", reason="the export extra (pyarrow) is missing")
pq = pytest.importorskip("pyarrow.parquet", reason="the export extra (pyarrow) is missing")
av = pytest.importorskip("av", reason="the export extra (av) is missing")
Image = pytest.importorskip("PIL.Image", reason="Pillow is missing")

FPS = 50
TAKEOVERS = [(80, 120), (30, 61)]
STEPS = [200, 157]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("home")
    store = EpisodeStore(root)
    entries = [
        record_sample_episode(store, steps=STEPS[0], takeover=TAKEOVERS[0], seed=1),
        record_sample_episode(store, steps=STEPS[1], takeover=TAKEOVERS[1], seed=2,
                              outcome="failure", instruction="stack the cups", image_every=4),
    ]
    yield store, entries
    store.close()


@pytest.fixture(scope="module")
def dataset(store, tmp_path_factory):
    st, entries = store
    out = tmp_path_factory.mktemp("lerobot") / "ds"
    rep = export_lerobot([st.path_of(e.id) for e in entries], out, fps=FPS)
    return out, rep, [st.path_of(e.id) for e in entries]


def _wall_ns(meta: dict, t_s: float) -> int:
    return round(float(meta["started_at"]) * 1e9) + round(
        (t_s - float(meta["t0_monotonic_s"])) * 1e9)


# -- MCAP --------------------------------------------------------------------------------------
def test_mcap_when_read_back_expect_every_channel_count_schema_and_jpeg(store, tmp_path):
    st, entries = store
    path = st.path_of(entries[0].id)
    rep = export_mcap(path, tmp_path / "ep.mcap")
    with open_episode(path) as ep:
        steps, meta, events = ep.steps(), dict(ep.meta), ep.events()
        images = {c: list(ep.images(c)) for c in ep.cameras()}
    with open(tmp_path / "ep.mcap", "rb") as f:
        reader = mcap_reader.make_reader(f)
        summary = reader.get_summary()
        topics = {c.topic: summary.schemas[c.schema_id].name for c in summary.channels.values()}
        assert topics == {"/joint_states": "ramp_edge.JointState",
                          "/camera/scene/compressed": "foxglove.CompressedImage",
                          "/camera/wrist/compressed": "foxglove.CompressedImage",
                          "/events": "ramp_edge.EpisodeEvent"}
        assert all(s.encoding == "jsonschema" for s in summary.schemas.values())
        counts: dict[str, int] = {}
        last: dict[str, int] = {}
        jpegs: dict[str, list[bytes]] = {"scene": [], "wrist": []}
        for _schema, channel, msg in reader.iter_messages(log_time_order=False):
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
            assert msg.log_time >= last.get(channel.topic, 0), "times must not go back"
            last[channel.topic] = msg.log_time
            if channel.topic.startswith("/camera/"):
                body = json.loads(msg.data)
                assert body["format"] == "jpeg"
                assert body["frame_id"] == channel.topic.split("/")[2]
                assert body["timestamp"]["sec"] * 10**9 + body["timestamp"]["nsec"] \
                    == msg.log_time
                jpegs[body["frame_id"]].append(base64.b64decode(body["data"]))
        metadata = {m.name: m.metadata for m in reader.iter_metadata()}
    assert counts == {"/joint_states": len(steps), "/camera/scene/compressed":
                      len(images["scene"]), "/camera/wrist/compressed": len(images["wrist"]),
                      "/events": len(events)}
    assert rep.messages == counts
    for cam, frames in jpegs.items():
        assert frames == [im.data for im in images[cam]]
        with Image.open(io.BytesIO(frames[0])) as im:
            assert im.format == "JPEG"
            assert im.size == (images[cam][0].width, images[cam][0].height)
    assert metadata["episode"]["episode_id"] == entries[0].id
    assert metadata["episode"]["instruction"] == meta["instruction"]
    assert metadata["episode"]["outcome"] == "success"
    started = float(meta["started_at"]) * 1e9
    ended = float(meta["ended_at"]) * 1e9
    assert started - 1e9 < last["/joint_states"] < ended + 1e9


def test_mcap_joint_states_when_decoded_expect_step_values_and_wall_clock_times(store,
                                                                                  tmp_path):
    st, entries = store
    path = st.path_of(entries[1].id)
    export_mcap(path, tmp_path / "ep.mcap")
    with open_episode(path) as ep:
        steps, meta, events = ep.steps(), dict(ep.meta), ep.events()
    with open(tmp_path / "ep.mcap", "rb") as f:
        msgs = [(m.log_time, json.loads(m.data)) for _s, ch, m in
                mcap_reader.make_reader(f).iter_messages(topics=["/joint_states"])]
    with open(tmp_path / "ep.mcap", "rb") as f:
        evs = [json.loads(m.data) for _s, _c, m in
               mcap_reader.make_reader(f).iter_messages(topics=["/events"])]
    assert [m["step_id"] for _, m in msgs] == steps.id.tolist()
    assert [t for t, _ in msgs] == [_wall_ns(meta, t) for t in steps.t_s]
    assert sum(m["human"] for _, m in msgs) == TAKEOVERS[1][1] - TAKEOVERS[1][0]
    np.testing.assert_allclose([m["position"] for _, m in msgs], steps.position, rtol=1e-6)
    np.testing.assert_allclose([m["command"] for _, m in msgs], steps.command, rtol=1e-6)
    assert [m["source"] for _, m in msgs] == steps.source.tolist()
    assert [m["chunk_id"] for _, m in msgs] == [None if c < 0 else c for c in steps.chunk_id]
    assert [e["kind"] for e in evs] == [e.kind for e in events] \
        == ["takeover_start", "takeover_end"]
    assert evs[0]["detail"] == {"device": "scripted+corrector"}


def test_mcap_when_the_episode_file_is_missing_expect_one_clear_error(tmp_path):
    with pytest.raises(EpisodeStoreError, match="does not exist"):
        export_mcap(tmp_path / "nope.sqlite", tmp_path / "out.mcap")
    assert not (tmp_path / "out.mcap").exists()


# -- resampling --------------------------------------------------------------------------------
def test_resampling_when_frames_fall_between_steps_expect_nearest_and_latest_at_or_before():
    t = np.array([0.0, 0.01, 0.02, 0.03])
    at = np.array([-0.5, 0.004, 0.006, 0.02, 0.029, 0.5])
    assert nearest_index(t, at).tolist() == [0, 0, 1, 2, 3, 3]
    assert latest_index(t, at).tolist() == [0, 0, 0, 2, 2, 3]


# -- LeRobotDataset v3.0 -----------------------------------------------------------------------
def _data(root: Path):
    files = sorted((root / "data").glob("chunk-*/file-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


def _episodes(root: Path) -> list[dict]:
    return pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()


def test_lerobot_info_when_exported_expect_totals_features_and_paths_consistent(dataset):
    root, rep, paths = dataset
    info = json.loads((root / "meta/info.json").read_text())
    data = _data(root)
    eps = _episodes(root)
    assert info["codebase_version"] == "v3.0"
    assert info["fps"] == FPS
    assert info["total_episodes"] == len(paths) == len(eps)
    assert info["total_frames"] == data.num_rows == rep.frames
    assert info["total_tasks"] == 2
    for key in ("chunks_size", "data_files_size_in_mb", "video_files_size_in_mb"):
        assert info[key] > 0
    feats = info["features"]
    videos = {k for k, f in feats.items() if f["dtype"] == "video"}
    assert videos == {"observation.images.scene", "observation.images.wrist"}
    assert set(feats) - videos == set(data.column_names)
    for key, ft in feats.items():
        if key in videos:
            assert ft["shape"] == [48, 48, 3]
            assert ft["info"]["video.fps"] == FPS
            continue
        col = data.column(key).type
        arrow = {"float32": pa.float32(), "int64": pa.int64(), "bool": pa.bool_()}[ft["dtype"]]
        if ft["shape"] == [1]:
            assert col == arrow, key
        else:
            assert col == pa.list_(arrow, ft["shape"][0]), key
            assert ft["names"] == json.loads(open_episode(paths[0]).meta["joint_names"])
    assert info["control_source_codes"]["human"] == CONTROL_SOURCE_CODES["human"]
    for ep in eps:
        p = root / info["data_path"].format(chunk_index=ep["data/chunk_index"],
                                            file_index=ep["data/file_index"])
        assert p.is_file()
        for key in videos:
            assert (root / info["video_path"].format(
                video_key=key, chunk_index=ep[f"videos/{key}/chunk_index"],
                file_index=ep[f"videos/{key}/file_index"])).is_file()


def test_lerobot_frames_when_resampled_expect_lengths_ranges_and_times(dataset):
    root, _rep, paths = dataset
    data = _data(root).to_pydict()
    eps = _episodes(root)
    start = 0
    for i, (ep, path) in enumerate(zip(eps, paths, strict=True)):
        with open_episode(path) as reader:
            t = reader.steps().t_s
        n = math.floor((t[-1] - t[0]) * FPS + 1e-6) + 1
        assert ep["episode_index"] == i
        assert ep["length"] == n
        assert (ep["dataset_from_index"], ep["dataset_to_index"]) == (start, start + n)
        rows = slice(start, start + n)
        assert data["index"][rows] == list(range(start, start + n))
        assert set(data["episode_index"][rows]) == {i}
        assert data["frame_index"][rows] == list(range(n))
        np.testing.assert_allclose(data["timestamp"][rows], np.arange(n) / FPS, atol=1e-6)
        assert data["next.done"][rows] == [False] * (n - 1) + [True]
        start += n
    assert start == len(data["index"])
    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert tasks.column("__index_level_0__").to_pylist() == ["put the red block in the box",
                                                             "stack the cups"]
    assert b"pandas" in tasks.schema.metadata  # pandas restores the task as the index
    assert [ep["tasks"] for ep in eps] == [["put the red block in the box"],
                                           ["stack the cups"]]
    assert data["task_index"][: eps[0]["length"]] == [0] * eps[0]["length"]
    assert set(data["task_index"][eps[0]["length"]:]) == {1}


def test_lerobot_intervention_when_a_person_took_over_expect_true_exactly_on_human_steps(
        dataset):
    root, _rep, paths = dataset
    data = _data(root).to_pydict()
    eps = _episodes(root)
    for ep, path, (h0, h1) in zip(eps, paths, TAKEOVERS, strict=True):
        with open_episode(path) as reader:
            st = reader.steps()
        rows = slice(ep["dataset_from_index"], ep["dataset_to_index"])
        by_id = {int(s): k for k, s in enumerate(st.id)}
        k = np.array([by_id[s] for s in data["complementary_info.step_id"][rows]])
        frame_t = st.t_s[0] + np.arange(ep["length"]) / FPS
        assert np.all(np.abs(st.t_s[k] - frame_t) <= 0.005 + 1e-9), "nearest step"
        human = st.human[k]
        assert data["intervention"][rows] == human.tolist()
        assert data["control_source"][rows] == [CONTROL_SOURCE_CODES[s] for s in st.source[k]]
        assert any(human) and not all(human)
        frames_human = np.flatnonzero(human)
        step_no = np.rint((st.t_s[k] - st.t_s[0]) / 0.01).astype(int)
        assert h0 <= step_no[frames_human].min() and step_no[frames_human].max() <= h1 - 1
        np.testing.assert_array_equal(np.array(data["observation.state"][rows]),
                                      st.position[k])
        np.testing.assert_array_equal(np.array(data["action"][rows]), st.command[k])
        np.testing.assert_allclose(data["complementary_info.value"][rows], st.value[k])


def _decoded(path: Path) -> list[tuple[float, np.ndarray]]:
    with av.open(str(path)) as c:
        return [(float(f.time), f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


def test_lerobot_videos_when_decoded_expect_one_frame_per_row_showing_the_latest_image(
        dataset):
    root, _rep, paths = dataset
    info = json.loads((root / "meta/info.json").read_text())
    eps = _episodes(root)
    for cam_index, cam in enumerate(("scene", "wrist")):
        key = f"observation.images.{cam}"
        frames = _decoded(root / info["video_path"].format(video_key=key, chunk_index=0,
                                                           file_index=0))
        assert len(frames) == info["total_frames"]
        times = np.array([t for t, _ in frames])
        assert np.all(np.diff(times) > 0)
        for ep, path in zip(eps, paths, strict=True):
            lo, hi = ep[f"videos/{key}/from_timestamp"], ep[f"videos/{key}/to_timestamp"]
            mine = np.flatnonzero((times >= lo - 1e-4) & (times < hi - 1e-4))
            assert len(mine) == ep["length"]
            np.testing.assert_allclose(times[mine] - lo, np.arange(ep["length"]) / FPS,
                                       atol=1e-4)
            with open_episode(path) as reader:
                t0 = reader.steps().t_s[0]
                caps = np.array([im.t_capture_s for im in reader.images(cam)])
            frame_t = t0 + np.arange(ep["length"]) / FPS
            pick = latest_index(caps, frame_t)
            # Sample images are drawn from their step number; captured 2 ms before that step.
            steps = np.rint((caps + 0.002 - t0) / 0.01).astype(int)
            for j in range(0, ep["length"], 7):
                got = frames[mine[j]][1].astype(float)
                errs = {p: np.abs(got - sample_image(int(steps[p]), cam_index)).mean()
                        for p in range(max(pick[j] - 1, 0), min(pick[j] + 2, len(caps)))}
                assert min(errs, key=errs.get) == pick[j], errs
                assert errs[pick[j]] < 10


def test_lerobot_stats_when_written_expect_column_statistics(dataset):
    root, _rep, _paths = dataset
    stats = json.loads((root / "meta/stats.json").read_text())
    data = _data(root)
    state = np.array(data.column("observation.state").to_pylist())
    s = stats["observation.state"]
    np.testing.assert_allclose(s["mean"], state.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s["std"], state.std(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s["min"], state.min(axis=0))
    np.testing.assert_allclose(s["max"], state.max(axis=0))
    assert s["count"] == [data.num_rows]
    assert set(s) == {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}
    img = stats["observation.images.scene"]
    assert np.array(img["mean"]).shape == (3, 1, 1)
    assert 0.0 <= np.min(img["min"]) <= np.max(img["max"]) <= 1.0
    assert stats["intervention"]["mean"][0] == pytest.approx(
        np.mean(data.column("intervention").to_pylist()))


def test_lerobot_when_files_fill_up_expect_new_files_and_chunks(store, tmp_path):
    st, entries = store
    paths = [st.path_of(e.id) for e in entries] * 2
    rep = export_lerobot(paths, tmp_path / "ds", fps=25, chunks_size=2,
                         data_files_size_in_mb=1e-6, video_files_size_in_mb=1e-6)
    root = rep.root
    eps = _episodes(root)
    where = [(e["data/chunk_index"], e["data/file_index"]) for e in eps]
    assert where == [(0, 0), (0, 1), (1, 0), (1, 1)]
    key = "videos/observation.images.wrist"
    assert [(e[f"{key}/chunk_index"], e[f"{key}/file_index"]) for e in eps] == where
    assert all(e[f"{key}/from_timestamp"] == 0.0 for e in eps)
    for e in eps:
        f = root / f"videos/observation.images.wrist/chunk-{e[f'{key}/chunk_index']:03d}/" \
                   f"file-{e[f'{key}/file_index']:03d}.mp4"
        assert len(_decoded(f)) == e["length"]
        d = pq.read_table(root / f"data/chunk-{e['data/chunk_index']:03d}/"
                                 f"file-{e['data/file_index']:03d}.parquet")
        assert d.column("index").to_pylist() == list(range(e["dataset_from_index"],
                                                            e["dataset_to_index"]))


def test_lerobot_when_an_episode_has_no_steps_expect_it_skipped_and_named(store, tmp_path):
    st, entries = store
    empty = record_sample_episode(st, steps=0, takeover=None)
    rep = export_lerobot([st.path_of(empty.id), st.path_of(entries[1].id)], tmp_path / "ds")
    assert rep.skipped == [(empty.id, "no steps")]
    assert rep.episodes == [entries[1].id]
    with pytest.raises(ExportError, match="no episode with steps"):
        export_lerobot([st.path_of(empty.id)], tmp_path / "ds2")
    assert not (tmp_path / "ds2").exists()


def test_lerobot_when_the_output_is_not_empty_expect_refusal_and_nothing_touched(store,
                                                                               tmp_path):
    st, entries = store
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export_lerobot([st.path_of(entries[0].id)], out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


# -- CLI ---------------------------------------------------------------------------------------
def test_cli_export_when_outcome_filtered_expect_only_those_exported_with_progress(store,
                                                                                 tmp_path):
    from typer.testing import CliRunner

    from ramp_edge.cli_episodes import episodes_app

    st, entries = store
    home = str(st.root)
    runner = CliRunner()
    res = runner.invoke(episodes_app, ["export", "--all", "--outcome", "failure", "--format",
                                       "mcap", "--out", str(tmp_path / "m"), "--home", home,
                                       "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert [f["id"] for f in out["files"]] == [entries[1].id]
    assert (tmp_path / "m" / f"{entries[1].id}.mcap").is_file()
    assert "[1/1]" in res.stderr
    res = runner.invoke(episodes_app, ["export", entries[0].id[:-2], "--format", "lerobot",
                                       "--out", str(tmp_path / "lr"), "--home", home, "--fps",
                                       "10"])
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "lr" / "meta/info.json").read_text())
    assert (info["fps"], info["total_episodes"]) == (10, 1)
    res = runner.invoke(episodes_app, ["export", "--all", "--format", "csv", "--out",
                                       str(tmp_path / "x"), "--home", home])
    assert res.exit_code == 2
