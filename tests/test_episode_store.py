"""The episode store on real SQLite files: round trip, recording rate, transitions, damage
(truncation, bit flips) and the disk budget. Crash safety (kill -9) is in
test_episode_crash.py.

Budgets: the rate test records 3 s at 100 Hz + 2 cameras at 30 Hz; the damage tests corrupt
12 copies each (seeded); the whole module runs in ~15 s on 2 cores.
"""

from __future__ import annotations

import io
import random
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ramp_edge.controller import StateSnapshot, StepRecord
from ramp_edge.episodes import (
    BudgetExceededError,
    DiskBudget,
    EpisodeMeta,
    EpisodeStore,
    RecorderConfig,
    salvage,
    verify,
)
from ramp_edge.episodes.row_check import row_crc
from ramp_edge.episodes.seal import STEP_COLS, sha256_file

JOINTS = 7
META = EpisodeMeta(instruction="put the cup in the box", operator="ada", robot_id="arm-01",
                   calibration_hash="c" * 64, bundle_hash="b" * 64, software_version="9.9.9")
SOURCES = ("policy", "human", "hold", "ramp", "stop")


def make_step(i: int, t: float, rng: np.random.Generator) -> StepRecord:
    pos = rng.standard_normal(JOINTS).astype(np.float32)
    vel = rng.standard_normal(JOINTS).astype(np.float32)
    cmd = rng.standard_normal(JOINTS).astype(np.float32)
    state = None if i % 17 == 0 else StateSnapshot(t - 0.001, pos, vel)
    return StepRecord(t, t + 0.0003, cmd, state, SOURCES[i % len(SOURCES)],
                      None if i % 5 == 0 else i // 10, None if i % 7 == 0 else i / 100.0, i % 4)


def make_image(i: int, cam: int) -> np.ndarray:
    # Smooth gradients JPEG keeps well, different per frame and camera.
    y, x = np.mgrid[0:96, 0:96]
    img = np.stack([(x + i) % 256, (y + 2 * i) % 256, np.full_like(x, 40 * cam)], axis=-1)
    out = img.astype(np.uint8)
    out.flags.writeable = False
    return out


def read_steps(path: Path) -> dict[int, tuple]:
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        return {r[0]: r for r in conn.execute(f"SELECT {STEP_COLS} FROM steps ORDER BY id")}
    finally:
        conn.close()


def record_episode(store: EpisodeStore, n: int, *, images_every: int = 3,
                   takeovers: tuple[int, ...] = (), dt: float = 0.01):
    """Records n steps with synthetic times (no sleeping), images every few steps and takeover
    events at the given step indices; returns what was fed."""
    rng = np.random.default_rng(1)
    rec = store.start_episode(META, joint_count=JOINTS)
    fed, imgs, events = [], [], []
    t0 = time.monotonic()
    for i in range(n):
        t = t0 + i * dt
        r = make_step(i, t, rng)
        rec.on_step(r)
        fed.append(r)
        if i % images_every == 0:
            for cam in (0, 1):
                img = make_image(i, cam)
                rec.on_images({f"cam{cam}": (img, t - 0.002)})
                imgs.append((f"cam{cam}", t - 0.002, img))
        if i in takeovers:
            kind = "takeover_start" if len(events) % 2 == 0 else "takeover_end"
            rec.event(kind, {"device": "pedal"}, t_s=t)
            events.append((kind, t))
        if i % 50 == 0:
            time.sleep(0.002)  # let the recorder thread commit now and then
    return rec, fed, imgs, events


def test_when_an_episode_is_recorded_and_sealed_expect_every_step_image_and_event_back(tmp_path):
    # The feed is a burst (6 s of steps and 400 frames in well under a second, no camera
    # pacing): an image queue that holds all of it, so that a loaded machine's slower JPEG
    # encoding cannot drop frames (a bounded queue drops under a burst by design).
    store = EpisodeStore(tmp_path, config=RecorderConfig(image_queue_len=1024))
    rec, fed, imgs, events = record_episode(store, 600, takeovers=(200, 350))
    rec.event("estop", "button")
    entry = rec.finish("success")
    assert rec.stats.dropped == 0 and rec.stats.written == 600
    assert rec.stats.images_dropped == 0
    path = store.path_of(entry.id)

    # The index: sealed, right hash and counts, provenance copied.
    assert entry.status == "sealed" and entry.outcome == "success" and entry.steps == 600
    assert entry.sha256 == sha256_file(path) and entry.bytes == path.stat().st_size
    assert (entry.instruction, entry.operator, entry.robot_id) == (
        META.instruction, META.operator, META.robot_id)
    assert (entry.calibration_hash, entry.bundle_hash, entry.software_version) == (
        META.calibration_hash, META.bundle_hash, META.software_version)
    # Sealed means self-contained: no WAL beside it, journal mode DELETE.
    assert not Path(f"{path}-wal").exists()
    rep = store.verify(entry.id)
    assert rep.ok, rep.summary()

    steps = read_steps(path)
    assert sorted(steps) == list(range(1, 601))
    for i, r in enumerate(fed):
        row = steps[i + 1]
        assert row[1] == r.t_s and row[2] == r.t_sent_s
        np.testing.assert_array_equal(np.frombuffer(row[6], "<f4"), r.command)
        if r.state is None:
            assert row[3] is None and row[4] is None and row[5] is None
        else:
            assert row[3] == r.state.t_s
            np.testing.assert_array_equal(np.frombuffer(row[4], "<f4"), r.state.position)
            np.testing.assert_array_equal(np.frombuffer(row[5], "<f4"), r.state.velocity)
        assert row[7:12] == (r.source, r.chunk_id, r.value, 1, r.interventions)
        near = any(abs(r.t_s - te) <= 0.5 for _, te in events)
        assert row[12] == int(near), f"step {i + 1}: transition flag"

    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    got = conn.execute("SELECT camera, t_capture_s, format, width, height, data FROM images "
                       "ORDER BY id").fetchall()
    assert len(got) == len(imgs)
    for (cam, t_cap, fmt, w, h, data), (cam0, t0, img) in zip(got, imgs, strict=True):
        assert (cam, t_cap, fmt, w, h) == (cam0, t0, "jpeg", 96, 96)
        back = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)
        assert np.abs(back - img).mean() < 3.0  # JPEG q90 on smooth images
    ev = conn.execute("SELECT kind, t_s, detail FROM events ORDER BY id").fetchall()
    assert [(k, t) for k, t, _ in ev[:2]] == events and ev[0][2] == '{"device": "pedal"}'
    assert ev[2][0] == "estop"
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    assert meta["outcome"] == "success" and meta["instruction"] == META.instruction
    assert meta["joint_count"] == str(JOINTS) and meta["episode_id"] == entry.id
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()
    store.close()


def test_when_fed_100hz_steps_and_two_30hz_cameras_expect_no_drops_and_commits_every_100ms(
        tmp_path):
    store = EpisodeStore(tmp_path)
    commit_times: list[float] = []
    rec = store.start_episode(META, joint_count=JOINTS,
                              on_commit=lambda _last: commit_times.append(time.monotonic()))
    seconds = 3.0
    stop = threading.Event()
    fed = [0]
    step_cost: list[float] = []

    def control() -> None:
        rng = np.random.default_rng(0)
        t0 = time.monotonic()
        i = 0
        while not stop.is_set():
            deadline = t0 + i * 0.01
            time.sleep(max(0.0, deadline - time.monotonic()))
            r = make_step(i, deadline, rng)
            a = time.perf_counter()
            rec.on_step(r)
            step_cost.append(time.perf_counter() - a)
            i += 1
        fed[0] = i

    def camera(cam: int) -> None:
        t0 = time.monotonic()
        k = 0
        while not stop.is_set():
            time.sleep(max(0.0, t0 + k / 30.0 - time.monotonic()))
            rec.on_image(f"cam{cam}", make_image(k, cam), time.monotonic())
            k += 1

    threads = [threading.Thread(target=control)] + [
        threading.Thread(target=camera, args=(c,)) for c in (0, 1)]
    for th in threads:
        th.start()
    time.sleep(seconds)
    stop.set()
    for th in threads:
        th.join()
    entry = rec.finish("failure")
    st = rec.stats
    assert st.dropped == 0 and st.images_dropped == 0
    assert st.written == fed[0] == entry.steps >= 0.9 * seconds * 100
    assert st.images_written == st.images_queued >= 0.8 * seconds * 60
    gaps = np.diff(commit_times) * 1000.0
    # The recorder commits every 50 ms; 100 ms is the promise, 250 ms the bound a shared
    # 2-core machine can keep.
    assert gaps.max() < 250.0, f"largest commit gap {gaps.max():.1f} ms"
    assert np.median(gaps) < 100.0
    assert float(np.median(step_cost)) < 50e-6  # on_step is a queue append, not I/O
    assert store.verify(entry.id).ok
    store.close()


def test_when_a_step_comes_after_recording_stopped_expect_it_refused_not_raised(tmp_path):
    store = EpisodeStore(tmp_path)
    rec, _, _, _ = record_episode(store, 10)
    rec.finish("failure")
    rec.on_step(make_step(0, time.monotonic(), np.random.default_rng(0)))
    rec.event("fault")
    assert rec.stats.refused == 1 and not rec.recording
    assert rec.finish("success").outcome == "failure"  # idempotent: the first seal stands
    store.close()


def _sealed_reference(tmp_path: Path) -> tuple[Path, str, dict[int, tuple]]:
    store = EpisodeStore(tmp_path / "ref")
    rec, _, _, _ = record_episode(store, 1500, images_every=5)
    entry = rec.finish("success")
    path = store.path_of(entry.id)
    store.close()
    return path, entry.sha256, read_steps(path)


def _check_salvage(damaged: Path, out: Path, original: dict[int, tuple]) -> int:
    rep = salvage(damaged, out)
    kept = read_steps(out)
    # Every step SQLite can still read in the damaged file is kept, exactly as it reads.
    conn = sqlite3.connect(f"file:{damaged}?mode=ro&immutable=1", uri=True)
    conn.execute("PRAGMA writable_schema=ON")  # read a truncated file's intact pages
    readable = 0
    for i in original:
        try:
            row = conn.execute(f"SELECT {STEP_COLS} FROM steps WHERE id = ?", (i,)).fetchone()
        except sqlite3.Error:
            continue
        if row is not None:
            if None in (row[1], row[2], row[6], row[7], row[10], row[11], row[12]):
                assert i not in kept  # garbage that breaks NOT NULL is not copied
                continue
            if row_crc(row[:12]) != row[13]:
                assert i not in kept  # read, but garbled: its checksum says so
                continue
            readable += 1
            assert kept.get(i) == row, f"readable step {i} not kept as read"
    conn.close()
    assert len(kept) == rep.steps >= readable
    return sum(1 for i, row in kept.items() if original.get(i) == row)


@pytest.mark.parametrize("damage", ["truncate", "bitflip"])
def test_when_a_sealed_file_is_damaged_expect_verify_to_report_it_and_salvage_intact_steps(
        tmp_path, damage):
    path, sha, original = _sealed_reference(tmp_path)
    size = path.stat().st_size
    rng = random.Random(5 if damage == "truncate" else 6)
    intact_total = 0
    for k in range(12):
        bad = tmp_path / f"bad{k}.sqlite"
        shutil.copyfile(path, bad)
        if damage == "truncate":
            off = rng.randrange(1, size)
            with open(bad, "r+b") as f:
                f.truncate(off)
        else:
            off = rng.randrange(size)
            with open(bad, "r+b") as f:
                f.seek(off)
                b = f.read(1)[0]
                f.seek(off)
                f.write(bytes([b ^ (1 << rng.randrange(8))]))
        rep = verify(bad, sha)
        assert not rep.ok and rep.sha256_ok is False, f"{damage} at {off}: {rep.summary()}"
        assert "DAMAGED" in rep.summary()
        intact_total += _check_salvage(bad, tmp_path / f"salv{k}.sqlite", original)
    # A single flipped bit loses at most a few pages; truncation loses the tail.
    print(f"{damage}: {intact_total / (12 * len(original)):.1%} of steps kept intact")
    if damage == "bitflip":
        assert intact_total >= 0.9 * 12 * len(original)


def test_when_a_recording_file_is_damaged_before_recovery_expect_salvaged_and_sealed_aborted(
        tmp_path):
    store = EpisodeStore(tmp_path)
    rec, fed, _, _ = record_episode(store, 800, images_every=4)
    rec.close()  # closed but never sealed: what a crash leaves (WAL already checkpointed)
    path = store.path_of(rec.episode_id)
    store.index.close()  # not store.close(): that would seal the episode
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(int(size * 0.6))
    store = EpisodeStore(tmp_path)
    [entry] = store.recover()
    assert entry.status == "aborted" and "salvaged" in entry.note
    assert Path(f"{path}.damaged").exists()
    rep = store.verify(entry.id)
    assert rep.ok, rep.summary()
    steps = read_steps(path)
    assert entry.steps == len(steps) > 0
    garbled = [i for i, row in steps.items()
               if not np.array_equal(np.frombuffer(row[6], "<f4"), fed[i - 1].command)]
    store.close()
    # A row SQLite reads back garbled (a truncated page read as zeros) fails its checksum and
    # is dropped, never kept as if it were data.
    assert garbled == []


def test_when_the_index_lists_a_missing_file_or_a_file_is_unlisted_expect_recovery_to_fix_both(
        tmp_path):
    store = EpisodeStore(tmp_path)
    rec, _, _, _ = record_episode(store, 50)
    rec.close()
    store.index.add("ghost", store.path_of("ghost"))
    store.index.close()
    # An episode file the index does not know (the index was restored from a backup, say).
    other = EpisodeStore(tmp_path / "other")
    rec2, _, _, _ = record_episode(other, 30)
    rec2.close()
    other.index.close()
    shutil.move(other.path_of(rec2.episode_id), tmp_path / "episodes")
    store = EpisodeStore(tmp_path)
    got = {e.id: e for e in store.recover()}
    assert set(got) == {rec.episode_id, "ghost", rec2.episode_id}
    assert got["ghost"].status == "aborted" and got["ghost"].steps == 0
    assert got[rec.episode_id].steps == 50 and got[rec2.episode_id].steps == 30
    assert store.recover() == []  # nothing left recording
    store.close()


def test_when_the_disk_budget_is_reached_expect_a_clean_stop_with_a_message_and_a_valid_file(
        tmp_path):
    cap = 600_000
    store = EpisodeStore(tmp_path, budget=DiskBudget(cap_bytes=cap, headroom_bytes=100_000),
                         config=RecorderConfig(commit_interval_ms=20))
    rec = store.start_episode(META, joint_count=JOINTS)
    rng = np.random.default_rng(3)
    noisy = [rng.integers(0, 255, (96, 96, 3), dtype=np.uint8) for _ in range(4)]
    t0 = time.monotonic()
    i = 0
    while rec.recording and i < 2_000:
        t = t0 + i * 0.01
        rec.on_step(make_step(i, t, rng))
        if i % 3 == 0:  # noise compresses badly: ~20 KB a frame fills the cap in ~1 s
            rec.on_image("cam0", noisy[i % 4], t)
        i += 1
        time.sleep(0.01)
    assert not rec.recording, "the budget never stopped recording"
    assert "disk budget" in rec.stats.stop_reason and "recording stopped" in rec.stats.stop_reason
    entry = rec.finish("failure")
    path = store.path_of(entry.id)
    assert path.stat().st_size <= cap
    assert store.verify(entry.id).ok
    assert entry.steps == rec.stats.written > 0
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    assert conn.execute("SELECT kind FROM events").fetchall() == [("budget_exhausted",)]
    conn.close()
    store.close()
    # A store already at its cap refuses to start an episode, before creating anything.
    full = EpisodeStore(tmp_path, budget=DiskBudget(cap_bytes=entry.bytes + 50_000,
                                                    headroom_bytes=100_000))
    with pytest.raises(BudgetExceededError, match=r"disk budget.*no new episode"):
        full.start_episode(META)
    assert len(full.list()) == 1
    full.close()


def test_when_a_crash_cut_sealing_short_after_the_outcome_was_committed_expect_it_completed(
        tmp_path):
    store = EpisodeStore(tmp_path)
    rec, _, _, _ = record_episode(store, 40)
    rec.close()
    path = store.path_of(rec.episode_id)
    conn = sqlite3.connect(path)  # what seal_file's first transaction leaves behind
    conn.execute("UPDATE meta SET value = 'success' WHERE key = 'outcome'")
    conn.commit()
    conn.close()
    store.index.close()
    store = EpisodeStore(tmp_path)
    [entry] = store.recover()
    assert (entry.status, entry.outcome, entry.steps) == ("sealed", "success", 40)
    assert entry.note == "sealing completed on recovery" and store.verify(entry.id).ok
    store.close()


def _record_sources(store: EpisodeStore, sources: list[str], events: dict[int, str],
                    dt: float = 0.01) -> list[int]:
    """Records one step per entry of ``sources`` (synthetic times) with takeover events at the
    given step indices, seals it; returns the transition flag of every step."""
    rng = np.random.default_rng(2)
    rec = store.start_episode(META, joint_count=JOINTS)
    t0 = time.monotonic()
    for i, source in enumerate(sources):
        t = t0 + i * dt
        state = StateSnapshot(t - 0.001, rng.standard_normal(JOINTS).astype(np.float32),
                              rng.standard_normal(JOINTS).astype(np.float32))
        rec.on_step(StepRecord(t, t + 0.0003, rng.standard_normal(JOINTS).astype(np.float32),
                               state, source, None, None, 0))
        if i in events:
            rec.event(events[i], {"device": "pedal"}, t_s=t)
    entry = rec.finish("success")
    return [r[0] for r in sqlite3.connect(store.path_of(entry.id)).execute(
        "SELECT transition FROM steps ORDER BY id")]


def test_when_a_person_controls_from_first_step_to_last_expect_no_transition_window(tmp_path):
    # A demonstration: takeover at the first step, handback at the last, no policy on either
    # side. Its start is what a policy must learn first: every step stays trainable.
    store = EpisodeStore(tmp_path)
    flags = _record_sources(store, ["human"] * 300, {0: "takeover_start",
                                                     299: "takeover_end"})
    assert sum(flags) == 0


def test_when_control_passes_between_policy_and_person_expect_windows_on_those_sides(tmp_path):
    # policy 0-199, human 200-399, policy 400-599, then a takeover that runs to the end.
    store = EpisodeStore(tmp_path)
    sources = ["policy"] * 200 + ["human"] * 200 + ["policy"] * 200 + ["human"] * 200
    flags = _record_sources(store, sources, {200: "takeover_start", 400: "takeover_end",
                                             600: "takeover_start", 799: "takeover_end"})
    marked = {i for i, f in enumerate(flags) if f}
    # 0.5 s at 100 Hz either side of each handover between the policy and the person...
    for at in (200, 400, 600):
        assert set(range(at - 49, at + 50)) <= marked, at
    # ...and none before the final handback, which no policy step follows.
    assert not (marked & set(range(0, 150))) and not (marked & set(range(651, 800)))
