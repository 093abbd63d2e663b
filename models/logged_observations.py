"""Observations taken from logged (sealed) episodes, for INT8 calibration and engine checks.

For each sampled step: per camera the latest frame captured at or before the step (decoded to
uint8 RGB and, where the episode's frames have another size than the bundle's, area-resized to
it), the measured joint position and velocity in the bundle's joint order, and the episode's
instruction encoded with the bundle's tokenizer. The result is the same
:class:`ramp_edge.engines.Observation` list that :func:`models.export.synthetic_observations`
returns, so :func:`models.export.export_bundle` (``calibration=``) and
:func:`models.export.accuracy_report` take it as it is.

Episodes are named by a path: one episode file, a directory of episode files, or a robot home
(its ``index.sqlite`` lists the episodes; only sealed ones are read, never one still recording).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from firmware_bridge.errors import EdgeError
from models.language import Tokenizer

if TYPE_CHECKING:
    from ramp_edge.bundle import Bundle
    from ramp_edge.engines.base import Observation

__all__ = [
    "LoggedObservationError",
    "LoggedObservations",
    "episode_files",
    "logged_observations",
    "observations_for_bundle",
]

_SUFFIX = ".sqlite"


class LoggedObservationError(EdgeError, ValueError):
    """Episodes cannot give observations for a bundle: none found, a camera missing, another
    joint count or joint names, no usable step. The message names the episode."""


@dataclass(frozen=True)
class LoggedObservations:
    """Observations sampled from episodes, and where they came from.

    ``observations``: in episode order, then step order; ``episodes``: the episode ids read;
    ``resized_from``: the frame size (height, width) of episodes whose frames were resized to
    the bundle's, per episode id (empty when every frame already had the bundle's size).
    """

    observations: list[Observation]
    episodes: tuple[str, ...]
    resized_from: dict[str, tuple[int, int]]

    def describe(self) -> str:
        """One line for manifests and logs."""
        text = (f"{len(self.observations)} logged observations from {len(self.episodes)} "
                f"episode(s)")
        if self.resized_from:
            text += " (frames area-resized to the bundle's image size)"
        return text


def episode_files(source: str | os.PathLike[str]) -> list[Path]:
    """The sealed episode files ``source`` names: an episode file, a directory of them, or a
    robot home (``index.sqlite`` + ``episodes/``; episodes still recording are left out).
    Raises LoggedObservationError when there are none."""
    p = Path(source).expanduser()
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise LoggedObservationError(f"episodes {p}: no such file or directory")
    if (p / "index.sqlite").is_file():
        from ramp_edge.episodes import EpisodeIndex

        with EpisodeIndex(p / "index.sqlite") as index:
            files = [index.resolve(e) for e in index.list() if e.status != "recording"]
        files = [f for f in files if f.is_file()]
    else:
        folder = p / "episodes" if (p / "episodes").is_dir() else p
        files = sorted(f for f in folder.glob(f"*{_SUFFIX}") if f.is_file())
    if not files:
        raise LoggedObservationError(f"episodes {p}: no sealed episode files found")
    return files


def _latest_frames(reader, camera: str, times: np.ndarray) -> list:
    """Per time in ``times`` (ascending), the latest frame of ``camera`` captured at or before
    it (None where there is none yet). Frame data is kept only for the frames chosen."""
    stamps = np.array([rec.t_capture_s for rec in reader.images(camera)], dtype=np.float64)
    idx = np.searchsorted(stamps, times, side="right") - 1
    wanted = {int(i) for i in idx if i >= 0}
    kept = {}
    for i, rec in enumerate(reader.images(camera)):
        if i in wanted:
            kept[i] = rec
    return [kept[int(i)] if i >= 0 else None for i in idx]


def _frame(rec, shape: tuple[int, int, int]) -> np.ndarray:
    img = rec.decode()
    if img.shape != shape:
        from PIL import Image

        img = np.asarray(Image.fromarray(img).resize((shape[1], shape[0]), Image.Resampling.BOX))
    return np.ascontiguousarray(img, dtype=np.uint8)


def logged_observations(
    episodes: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    camera_names: Sequence[str],
    image_shape: tuple[int, int, int],
    joint_names: Sequence[str],
    tokenizer: Tokenizer,
    n: int,
    seed: int = 0,
) -> LoggedObservations:
    """``n`` observations (fewer if the episodes hold fewer usable steps) from ``episodes``
    (a path as :func:`episode_files` takes, or a list of episode files).

    Steps are drawn without replacement, uniformly over all usable steps of all episodes
    (deterministic in ``seed``); a step is usable when its joint state was measured (no NaN)
    and every camera has a frame at or before it. Episodes record joints in the robot's order;
    one whose recorded joint names are the bundle's in another order is reordered.

    Raises LoggedObservationError (no episodes, a camera of ``camera_names`` missing, another
    joint count or joint names, no usable step), EpisodeStoreError/EpisodeDamagedError from
    the reader for an unreadable file, ValueError for ``n`` < 1.
    """
    from ramp_edge.engines.base import Observation
    from ramp_edge.episodes import open_episode

    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    if isinstance(episodes, (str, os.PathLike)):
        files = episode_files(episodes)
    else:
        files = [Path(f) for f in episodes]
        if not files:
            raise LoggedObservationError("no episode files given")
    names = tuple(joint_names)
    # Pass 1: which steps are usable, per episode (joint state and timing only).
    usable: list[tuple[Path, np.ndarray]] = []
    for path in files:
        with open_episode(path) as ep:
            label = f"episode {ep.episode_id} ({path})"
            missing = [c for c in camera_names if ep.image_count(c) == 0]
            if missing:
                raise LoggedObservationError(
                    f"{label} has no frames from camera(s) {', '.join(missing)} the bundle "
                    f"needs (it has {', '.join(ep.cameras()) or 'no cameras'})")
            if ep.joint_count != len(names):
                raise LoggedObservationError(
                    f"{label} has {ep.joint_count} joints, the bundle has {len(names)} "
                    f"({', '.join(names)})")
            _joint_order(ep, names, label)
            st = ep.steps()
            ok = np.isfinite(st.position).all(axis=1) & np.isfinite(st.velocity).all(axis=1)
            for cam in camera_names:
                first = next(ep.images(cam)).t_capture_s
                ok &= st.t_s >= first
            usable.append((path, np.flatnonzero(ok)))
    total = sum(len(rows) for _, rows in usable)
    if total == 0:
        raise LoggedObservationError(
            f"no usable step in {len(files)} episode(s): none has a measured joint state with "
            f"a frame from every camera ({', '.join(camera_names)}) at or before it")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(total, size=min(n, total), replace=False))
    # Pass 2: build the observations of the chosen steps, one episode at a time.
    out: list[Observation] = []
    read: list[str] = []
    resized: dict[str, tuple[int, int]] = {}
    offset = 0
    for path, rows in usable:
        mine = chosen[(chosen >= offset) & (chosen < offset + len(rows))] - offset
        offset += len(rows)
        if len(mine) == 0:
            continue
        with open_episode(path) as ep:
            order = _joint_order(ep, names, f"episode {ep.episode_id} ({path})")
            st = ep.steps()
            steps = rows[mine]
            times = st.t_s[steps]
            frames = {cam: _latest_frames(ep, cam, times) for cam in camera_names}
            tokens = tokenizer.encode(ep.instruction)
            for k, s in enumerate(steps):
                images = {}
                for cam in camera_names:
                    rec = frames[cam][k]
                    if (rec.height, rec.width) != image_shape[:2]:
                        resized[ep.episode_id] = (rec.height, rec.width)
                    images[cam] = _frame(rec, image_shape)
                out.append(Observation(
                    images=images,
                    joint_position=st.position[s, order].astype(np.float32),
                    joint_velocity=st.velocity[s, order].astype(np.float32),
                    tokens=tokens.copy(),
                ))
            read.append(ep.episode_id)
    return LoggedObservations(out, tuple(read), resized)


def _joint_order(ep, names: tuple[str, ...], label: str) -> np.ndarray:
    """Column index per bundle joint. Episodes that never recorded joint names get the
    reader's ``joint_<i>`` placeholders and are taken in the robot's order."""
    recorded = tuple(ep.joint_names)
    if recorded == names or recorded == tuple(f"joint_{i}" for i in range(len(names))):
        return np.arange(len(names))
    if sorted(recorded) != sorted(names):
        raise LoggedObservationError(
            f"{label} recorded joints {', '.join(recorded)}; the bundle's are "
            f"{', '.join(names)}")
    return np.array([recorded.index(j) for j in names])


def observations_for_bundle(bundle: Bundle, episodes: str | os.PathLike[str] |
                            Sequence[str | os.PathLike[str]], n: int,
                            seed: int = 0) -> LoggedObservations:
    """:func:`logged_observations` with the cameras, image size, joints and tokenizer of
    ``bundle``."""
    m = bundle.manifest
    return logged_observations(episodes, camera_names=m.camera_names, image_shape=m.image_shape,
                               joint_names=m.joint_names, tokenizer=bundle.tokenizer(), n=n,
                               seed=seed)
