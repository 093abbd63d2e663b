"""kill -9 while recording at full rate: a child process records 100 Hz steps and two 30 Hz
cameras and prints the last committed step id after each commit; the parent kills it at a
random moment, then recovers the store and checks that every step reported committed is there,
that at most the last ~100 ms before the kill is missing, and that the index agrees with the
files.

Budgets: 20 kills in the default run (~1 s each on 2 cores), 200 under ``-m slow``.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ramp_edge.episodes import EpisodeStore
from ramp_edge.episodes.seal import sha256_file

REPO = Path(__file__).resolve().parent.parent

# The child: step i has command = [i, i+0.5, ...] so the parent can check content too.
CHILD = r"""
import sys, threading, time
import numpy as np
from ramp_edge.controller import StateSnapshot, StepRecord
from ramp_edge.episodes import EpisodeMeta, EpisodeStore

root, eid = sys.argv[1], sys.argv[2]
out = sys.stdout
def on_commit(last):
    out.write(f"C {last}\n")
    out.flush()
store = EpisodeStore(root)
rec = store.start_episode(EpisodeMeta(instruction="crash test"), joint_count=7,
                          on_commit=on_commit, episode_id=eid)
def camera(cam):
    t0 = time.monotonic(); k = 0
    img = np.zeros((96, 96, 3), np.uint8); img[:, :, cam] = 200
    img.flags.writeable = False
    while True:
        time.sleep(max(0.0, t0 + k / 30 - time.monotonic()))
        rec.on_image(f"cam{cam}", img, time.monotonic()); k += 1
for c in (0, 1):
    threading.Thread(target=camera, args=(c,), daemon=True).start()
base = np.arange(7, dtype=np.float32) * 0.5
t0 = time.monotonic(); i = 0
while True:
    deadline = t0 + i * 0.01
    time.sleep(max(0.0, deadline - time.monotonic()))
    i += 1
    cmd = base + np.float32(i)
    state = StateSnapshot(deadline, cmd.copy(), np.zeros(7, np.float32))
    rec.on_step(StepRecord(deadline, time.monotonic(), cmd, state, "policy", i // 50, 0.1, 0))
    if i == 30:
        rec.event("takeover_start", "pedal")
"""


def kill_once(root: Path, eid: str, rng: random.Random) -> tuple[int, float]:
    """Start a recording child, kill -9 it at a random moment after its first commit.
    Returns (last step id it reported committed, monotonic time of the kill)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(root), eid],
                            stdout=subprocess.PIPE, env=env, cwd=REPO)
    committed = [0]
    first = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(b"C "):
                committed[0] = int(line.split()[1])
                first.set()

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    try:
        assert first.wait(15.0), "the child never committed"
        time.sleep(rng.uniform(0.0, 0.8))
        t_kill = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    th.join(5.0)  # every line the child wrote before dying is in the pipe
    return committed[0], t_kill


def check_recovered(store: EpisodeStore, eid: str, committed: int, t_kill: float) -> float:
    """Returns how much recording (s) before the kill is missing."""
    e = store.get(eid)
    path = store.index.resolve(e)
    assert e.status == "aborted" and e.outcome == "aborted", e
    assert e.sha256 == sha256_file(path) and e.bytes == path.stat().st_size
    assert not Path(f"{path}-wal").exists()
    rep = store.verify(eid)
    assert rep.ok, rep.summary()
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        ids = [r[0] for r in conn.execute("SELECT id FROM steps ORDER BY id")]
        assert ids == list(range(1, len(ids) + 1)), "steps are not contiguous from 1"
        assert len(ids) == e.steps >= committed, (len(ids), committed)
        last_cmd, last_t = conn.execute(
            "SELECT command, t_s FROM steps ORDER BY id DESC LIMIT 1").fetchone()
        n = len(ids)
        np.testing.assert_array_equal(np.frombuffer(last_cmd, "<f4"),
                                      np.arange(7, dtype=np.float32) * 0.5 + np.float32(n))
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        assert meta["outcome"] == "aborted" and meta["instruction"] == "crash test"
        # Steps near the takeover (if its event was committed) are marked as transitions.
        for (te,) in conn.execute("SELECT t_s FROM events WHERE kind = 'takeover_start'"):
            unmarked = conn.execute("SELECT count(*) FROM steps WHERE transition = 0 AND "
                                    "t_s BETWEEN ? AND ?", (te - 0.5, te + 0.5)).fetchone()[0]
            assert unmarked == 0
    finally:
        conn.close()
    return t_kill - last_t


def run_kill_cycles(root: Path, runs: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    lost_s = []
    for k in range(runs):
        eid = f"kill-{k:04d}"
        committed, t_kill = kill_once(root, eid, rng)
        store = EpisodeStore(root)
        try:
            recovered = store.recover()
            assert [e.id for e in recovered] == [eid]
            lost_s.append(check_recovered(store, eid, committed, t_kill))
            # The index stays consistent: every earlier episode still sealed with its hash.
            entries = store.list()
            assert len(entries) == k + 1 and all(x.status == "aborted" for x in entries)
        finally:
            store.close()
    # Every entry's hash still matches its file at the end.
    store = EpisodeStore(root)
    for e in store.list():
        assert e.sha256 == sha256_file(store.index.resolve(e))
    store.close()
    return lost_s


def _assert_loss(lost_s: list[float]) -> None:
    worst = max(lost_s)
    print(f"\nkill -9 x{len(lost_s)}: recording lost before the kill: "
          f"median {np.median(lost_s) * 1000:.0f} ms, worst {worst * 1000:.0f} ms")
    # Commits come every 50 ms (+ the commit's fsync); 100 ms is the promise. The bound adds
    # scheduling slack for a loaded 2-core machine (the child's step thread may run late).
    assert worst < 0.1 + 0.15, f"lost {worst * 1000:.0f} ms of recording before a kill"


@pytest.mark.parametrize("runs", [20])
def test_when_recording_is_killed_at_random_expect_committed_steps_kept_and_sealed_aborted(
        tmp_path, runs):
    _assert_loss(run_kill_cycles(tmp_path, runs, seed=1))


@pytest.mark.slow
def test_when_recording_is_killed_200_times_expect_every_episode_recovered(tmp_path):
    # deselected by default (pyproject addopts); run with: pytest -m slow
    _assert_loss(run_kill_cycles(tmp_path, 200, seed=2))
