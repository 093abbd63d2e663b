"""The episode reader on files recorded and sealed by the real store."""

from __future__ import annotations

import time

import numpy as np
import pytest
from episode_samples import JOINT_NAMES, record_sample_episode, sample_store

from ramp_edge.episodes import EpisodeDamagedError, EpisodeMeta, EpisodeStore, EpisodeStoreError
from ramp_edge.episodes.reader import open_episode
from ramp_edge.episodes.seal import sha256_file


def test_when_a_sealed_episode_is_read_expect_steps_images_events_and_meta(tmp_path):
    store, (entry,) = sample_store(tmp_path, episodes=1, steps=150, takeover=(40, 90))
    path = store.path_of(entry.id)
    before = sha256_file(path)
    with open_episode(path) as ep:
        assert ep.episode_id == entry.id and ep.outcome == "success"
        assert ep.task == "pack_box" and ep.joint_names == list(JOINT_NAMES)
        st = ep.steps()
        assert len(st) == 150 and st.position.shape == (150, 7)
        assert list(st.id) == list(range(1, 151))
        assert np.all(np.diff(st.t_s) > 0) and np.all(st.lateness_ms > 0)
        assert int(st.human.sum()) == 50 and not np.isnan(st.position).any()
        assert st.chunk_id[45] == -1 and st.chunk_id[0] == 0
        assert st.transition.any()  # steps around the takeover boundaries
        assert ep.cameras() == ["scene", "wrist"] and ep.image_count("scene") == 50
        first = next(ep.images("scene"))
        assert first.decode().shape == (48, 48, 3)
        kinds = [e.kind for e in ep.events()]
        assert kinds[:2] == ["takeover_start", "takeover_end"]
        (seg,) = ep.takeover_segments()
        assert seg == pytest.approx((st.t_s[40], st.t_s[90]))
    assert sha256_file(path) == before  # reading never changes a sealed file


def test_when_the_file_is_missing_or_garbage_expect_one_clear_error(tmp_path):
    with pytest.raises(EpisodeStoreError, match="does not exist"):
        open_episode(tmp_path / "nope.sqlite")
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not a database" * 100)
    with pytest.raises(EpisodeDamagedError, match="cannot be read"):
        open_episode(bad)


def test_when_an_episode_is_still_recording_expect_committed_steps_visible(tmp_path):
    store = EpisodeStore(tmp_path)
    record_sample_episode(store, steps=10, takeover=None)
    rec = store.start_episode(EpisodeMeta(joint_names=JOINT_NAMES), joint_count=7)
    try:
        rec.event("note", "live")
        deadline = time.monotonic() + 5
        while rec.stats.events_written == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        with open_episode(store.path_of(rec.episode_id)) as ep:
            assert [e.kind for e in ep.events()] == ["note"]
            assert ep.outcome is None
    finally:
        rec.finish("aborted")


def test_when_values_are_nan_or_negative_zero_expect_rows_verify(tmp_path):
    """SQLite stores NaN as NULL and -0.0 as 0.0; the row checksum must agree."""
    from ramp_edge.controller import StateSnapshot, StepRecord
    from ramp_edge.episodes import salvage, verify

    store = EpisodeStore(tmp_path)
    rec = store.start_episode(EpisodeMeta(joint_names=JOINT_NAMES), joint_count=7)
    t0 = time.monotonic()
    for i, value in enumerate([float("nan"), -0.0, 0.5, float("-inf")]):
        z = np.zeros(7, np.float32)
        rec.on_step(StepRecord(t0 + i * 0.01, t0 + i * 0.01, z, StateSnapshot(t0, z, z),
                               "policy", 0, value, 0))
    entry = rec.finish("success")
    path = store.path_of(entry.id)
    assert verify(path, entry.sha256).ok
    rep = salvage(path, tmp_path / "copy.sqlite")
    assert (rep.steps, rep.garbled) == (4, 0)


def test_when_a_reader_has_a_live_episode_open_expect_sealing_to_wait_for_it(tmp_path):
    import threading

    store = EpisodeStore(tmp_path)
    rec = store.start_episode(EpisodeMeta(joint_names=JOINT_NAMES), joint_count=7)
    rec.event("note", "live")
    deadline = time.monotonic() + 5
    while rec.stats.events_written == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    reader = open_episode(store.path_of(rec.episode_id))
    reader.events()  # holds a read transaction's worth of state on the live file
    timer = threading.Timer(0.5, reader.close)
    timer.start()
    try:
        entry = rec.finish("success")
    finally:
        timer.cancel()
        reader.close()
    assert entry.status == "sealed"
