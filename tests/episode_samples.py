"""Synthetic episodes recorded through the real store and recorder, for tests of what reads
episodes (review, export, training): smooth joint motion, two cameras, optional takeovers."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ramp_edge.controller import StateSnapshot, StepRecord
from ramp_edge.episodes import EpisodeMeta, EpisodeStore, IndexEntry

JOINT_NAMES = ("shoulder_pan", "shoulder_lift", "elbow", "wrist_flex", "wrist_roll",
               "wrist_pitch", "gripper")


def sample_image(i: int, cam: int, size: int = 48) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    img = np.stack([(x * 4 + i) % 256, (y * 4 + 2 * i) % 256, np.full_like(x, 60 * cam + 20)],
                   axis=-1).astype(np.uint8)
    img.flags.writeable = False
    return img


def record_sample_episode(store: EpisodeStore, steps: int = 200, *, outcome: str = "success",
                          takeover: tuple[int, int] | None = (80, 120), task: str = "pack_box",
                          instruction: str = "put the red block in the box",
                          image_every: int = 3, seed: int = 0, dt: float = 0.01) -> IndexEntry:
    """Record and seal one episode of ``steps`` control steps at ``dt`` (synthetic times, no
    sleeping); steps in ``takeover`` [start, end) are human-controlled with takeover events.
    Returns the sealed index entry."""
    rng = np.random.default_rng(seed)
    meta = EpisodeMeta(instruction=instruction, operator="tester", robot_id="arm-test",
                       calibration_hash="c" * 64, bundle_hash="b" * 64, task=task,
                       joint_names=JOINT_NAMES)
    rec = store.start_episode(meta, joint_count=len(JOINT_NAMES))
    t0 = time.monotonic()
    phase = rng.uniform(0, np.pi, len(JOINT_NAMES))
    for i in range(steps):
        t = t0 + i * dt
        pos = (0.5 * np.sin(phase + 0.02 * i)).astype(np.float32)
        cmd = (0.5 * np.sin(phase + 0.02 * (i + 1))).astype(np.float32)
        vel = (0.01 * np.cos(phase + 0.02 * i) / dt).astype(np.float32)
        human = takeover is not None and takeover[0] <= i < takeover[1]
        if takeover is not None and i == takeover[0]:
            rec.event("takeover_start", {"device": "scripted+corrector"}, t_s=t)
        if takeover is not None and i == takeover[1]:
            rec.event("takeover_end", {"device": "scripted+corrector"}, t_s=t)
        rec.on_step(StepRecord(t, t + 0.0004 + 0.0002 * rng.random(), cmd,
                               StateSnapshot(t - 0.001, pos, vel),
                               "human" if human else "policy", None if human else i // 25,
                               -1.0 + i / steps, 0))
        if i % image_every == 0:
            rec.on_images({"scene": (sample_image(i, 0), t - 0.002),
                           "wrist": (sample_image(i, 1), t - 0.002)})
        if i % 50 == 0:
            time.sleep(0.002)
    return rec.finish(outcome)


def sample_store(root: Path, episodes: int = 2, **kw) -> tuple[EpisodeStore, list[IndexEntry]]:
    store = EpisodeStore(root)
    entries = [record_sample_episode(store, seed=i, **kw) for i in range(episodes)]
    return store, entries
