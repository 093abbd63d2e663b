"""Training samples from a LeRobotDataset v3.0 directory, such as ``ramp-edge episodes export
--format lerobot`` writes: the same :class:`~models.training.dataset.EpisodeSamples` as an
episode file gives.

Per frame row: joint position = ``observation.state``, command = ``action``, control source
from the ``control_source`` codes of ``info.json`` (``intervention`` rows are ``human``;
without the column, the others are ``policy``), takeover transition =
``complementary_info.transition`` (none without it), joint velocity = ``observation.velocity``
where the dataset has it, else the central difference of the state over ``timestamp`` (rad/s).
Rows are resampled to the policy rate as episode steps are (every ``round(fps / rate)``-th).

Outcome and task come from the episodes metadata's ``ramp_edge/outcome`` and ``ramp_edge/task``
columns (the instruction, the episode's first task, stands in for a missing task); episodes
without a success/failure outcome are skipped with a warning, as episode files are. Frames are
decoded with PyAV from each camera's video file at ``from_timestamp + timestamp``: one seek per
episode, then sequential decoding; each frame is resized to the network's image size.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from models.language import Tokenizer
from models.training.config import DataConfig, RewardConfig, TrainingError
from models.training.returns import episode_rewards

__all__ = ["CODEBASE_VERSION", "is_lerobot_dataset", "read_lerobot"]

log = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
IMAGE_PREFIX = "observation.images."
_REQUIRED = ("observation.state", "action", "timestamp", "episode_index")
_OPTIONAL = ("frame_index", "intervention", "control_source", "complementary_info.transition",
             "observation.velocity")


def is_lerobot_dataset(path: Path) -> bool:
    """Whether ``path`` is a directory holding ``meta/info.json`` (a LeRobot dataset)."""
    return (path / "meta" / "info.json").is_file()


def _deps():  # -> (pyarrow.parquet, av)
    try:
        import av
        import pyarrow.parquet as pq
    except ImportError as err:
        raise TrainingError(f"reading a LeRobot dataset needs {err.name!r}: "
                            "pip install 'ramp-edge[export]'") from err
    return pq, av


def _info(root: Path) -> dict:
    path = root / "meta" / "info.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise TrainingError(f"cannot read LeRobot dataset info {path}: {err}") from err
    version = info.get("codebase_version") if isinstance(info, dict) else None
    if version != CODEBASE_VERSION:
        raise TrainingError(f"LeRobot dataset {root} has codebase_version {version!r}; only "
                            f"{CODEBASE_VERSION} is read (convert it with LeRobot first)")
    for key in ("fps", "data_path", "features"):
        if key not in info:
            raise TrainingError(f"LeRobot dataset {root}: meta/info.json has no {key!r}")
    return info


def _video_keys(root: Path, info: dict, cameras: Sequence[str] | None) -> list[tuple[str, str]]:
    """(camera, feature key) pairs: the named cameras, or every video feature sorted."""
    feats = info["features"]
    videos = sorted(k[len(IMAGE_PREFIX):] for k, f in feats.items()
                    if k.startswith(IMAGE_PREFIX) and f.get("dtype") == "video")
    cams = list(cameras) if cameras else videos
    for cam in cams:
        if cam not in videos:
            kind = feats.get(IMAGE_PREFIX + cam, {}).get("dtype")
            what = f"is stored as {kind!r}, not video" if kind else "is missing"
            raise TrainingError(f"LeRobot dataset {root}: feature {IMAGE_PREFIX + cam!r} {what}"
                                f" (cameras with video: {videos})")
    if cams and not info.get("video_path"):
        raise TrainingError(f"LeRobot dataset {root}: meta/info.json has no 'video_path'")
    return [(c, IMAGE_PREFIX + c) for c in cams]


def _episode_rows(pq, root: Path) -> list[dict]:
    files = sorted((root / "meta" / "episodes").rglob("*.parquet"))
    if not files:
        raise TrainingError(f"LeRobot dataset {root} has no meta/episodes/*.parquet")
    rows: list[dict] = []
    for f in files:
        rows += pq.read_table(f).to_pylist()
    return sorted(rows, key=lambda r: r["episode_index"])


def _column(table, name: str) -> np.ndarray:
    """A column as a numpy array; list columns (vectors) as [rows, size]."""
    col = table.column(name).combine_chunks()
    size = getattr(col.type, "list_size", None)
    if size is not None:  # fixed-size list, as LeRobot writes vectors
        return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), size)
    arr = col.to_numpy(zero_copy_only=False)
    if arr.dtype == object:  # variable-size lists
        return np.stack(arr) if len(arr) else arr
    return arr


class _DataFiles:
    """The data parquet file holding the current episodes, read once while episodes use it."""

    def __init__(self, pq, root: Path, info: dict) -> None:
        self.pq, self.root, self.info = pq, root, info
        self.key: tuple[int, int] | None = None
        self.table = None
        self.episode_index = self.order = np.zeros(0, np.int64)

    def rows(self, ep: dict):
        key = (int(ep.get("data/chunk_index", 0)), int(ep.get("data/file_index", 0)))
        if key != self.key:
            path = self.root / self.info["data_path"].format(chunk_index=key[0],
                                                             file_index=key[1])
            if not path.is_file():
                raise TrainingError(f"LeRobot dataset {self.root}: data file "
                                    f"{path.relative_to(self.root)} is missing")
            names = set(self.pq.read_schema(path).names)
            missing = [c for c in _REQUIRED if c not in names]
            if missing:
                raise TrainingError(f"LeRobot dataset {self.root}: {path.relative_to(self.root)}"
                                    f" has no feature {missing[0]!r}")
            cols = [c for c in (*_REQUIRED, *_OPTIONAL) if c in names]
            self.table = self.pq.read_table(path, columns=cols)
            # Rows grouped by episode once per file, so each episode is a slice of them.
            index = self.table.column("episode_index").to_numpy()
            self.order = np.argsort(index, kind="stable")
            self.episode_index = index[self.order]
            self.key = key
        lo = np.searchsorted(self.episode_index, ep["episode_index"], "left")
        hi = np.searchsorted(self.episode_index, ep["episode_index"], "right")
        table = self.table.take(self.order[lo:hi])
        if "frame_index" in table.column_names:
            table = table.take(np.argsort(table.column("frame_index").to_numpy(), kind="stable"))
        return table


class _Videos:
    """One camera's video files, the current one kept open; frames decoded at given times."""

    def __init__(self, av, root: Path, template: str, key: str) -> None:
        self.av, self.root, self.template, self.key = av, root, template, key
        self.file: tuple[int, int] | None = None
        self.container = None

    def _open(self, ep: dict):
        k = f"videos/{self.key}/"
        file = (int(ep.get(k + "chunk_index", 0)), int(ep.get(k + "file_index", 0)))
        if file != self.file:
            self.close()
            path = self.root / self.template.format(video_key=self.key, chunk_index=file[0],
                                                    file_index=file[1])
            if not path.is_file():
                raise TrainingError(f"LeRobot dataset {self.root}: video "
                                    f"{path.relative_to(self.root)} of episode "
                                    f"{ep['episode_index']} is missing")
            try:
                self.container = self.av.open(str(path))
            except self.av.FFmpegError as err:
                raise TrainingError(f"LeRobot dataset {self.root}: cannot open video "
                                    f"{path.relative_to(self.root)}: {err}") from err
            self.file = file
        return self.container

    def frames(self, ep: dict, times: np.ndarray, tolerance_s: float) -> Iterator[np.ndarray]:
        """RGB frames (uint8 H x W x 3) at episode times ``times`` (s, ascending): seeks once
        to the first, then decodes on, converting only the frames asked for. Raises
        TrainingError when the video has no frame within ``tolerance_s`` of one."""
        container = self._open(ep)
        stream = container.streams.video[0]
        start = float(ep.get(f"videos/{self.key}/from_timestamp", 0.0))
        at = start + times
        if len(at) == 0:
            return
        tb = stream.time_base
        container.seek(max(int((at[0] - tolerance_s) / tb), 0), stream=stream, backward=True)
        decoded = container.decode(stream)
        j = 0
        try:
            for frame in decoded:
                if frame.pts is None:
                    continue
                t = float(frame.pts * tb)
                if t < at[j] - tolerance_s:
                    continue
                if t > at[j] + tolerance_s:
                    break
                img = frame.to_ndarray(format="rgb24")
                while j < len(at) and abs(t - at[j]) <= tolerance_s:
                    yield img
                    j += 1
                if j == len(at):
                    return
        except self.av.FFmpegError as err:
            raise TrainingError(f"LeRobot dataset {self.root}: cannot decode {self.key} of "
                                f"episode {ep['episode_index']}: {err}") from err
        raise TrainingError(f"LeRobot dataset {self.root}: video {self.key} has no frame at "
                            f"{at[j]:.3f} s (episode {ep['episode_index']}, frame time "
                            f"{times[j]:.3f} s)")

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None
            self.file = None


def _velocity(table, position: np.ndarray, t: np.ndarray) -> np.ndarray:
    if "observation.velocity" in table.column_names:
        return _column(table, "observation.velocity").astype(np.float32)
    if len(t) < 2:
        return np.zeros_like(position)
    return np.gradient(position.astype(np.float64), t, axis=0).astype(np.float32)


def _sources(table, codes: dict) -> np.ndarray:
    n = table.num_rows
    names = {int(v): str(k) for k, v in codes.items()}
    if "control_source" in table.column_names:
        src = np.array([names.get(int(c), "unknown") for c in
                        table.column("control_source").to_numpy()], dtype=object)
    else:
        src = np.full(n, "policy", dtype=object)
    if "intervention" in table.column_names:
        src[table.column("intervention").to_numpy(zero_copy_only=False).astype(bool)] = "human"
    return src.astype(str)


def read_lerobot(root: Path, cameras: Sequence[str] | None, data: DataConfig,
                 reward: RewardConfig, tokenizer: Tokenizer, image_hw: tuple[int, int],
                 ) -> tuple[list, list[str]]:
    """The episodes of the LeRobot dataset at ``root`` as ``EpisodeSamples`` (in episode
    order) and the camera names used (``cameras``, or every video feature sorted). Raises
    TrainingError for another codebase_version, a missing feature, data file or video."""
    from models.training.dataset import EpisodeSamples, _resize

    pq, av = _deps()
    info = _info(root)
    cams = _video_keys(root, info, cameras)
    for name in ("observation.state", "action"):
        if name not in info["features"]:
            raise TrainingError(f"LeRobot dataset {root} has no feature {name!r}")
    state = info["features"]["observation.state"]
    joints = tuple(state.get("names") or
                   (f"joint_{i}" for i in range(int((state.get("shape") or [0])[0]))))
    fps = float(info["fps"])
    codes = info.get("control_source_codes") or {}
    files = _DataFiles(pq, root, info)
    videos = [_Videos(av, root, info.get("video_path") or "", key) for _, key in cams]
    rows = _episode_rows(pq, root)
    if rows and "ramp_edge/outcome" not in rows[0]:
        log.warning("LeRobot dataset %s has no ramp_edge/outcome column: its episodes have no "
                    "reward; skipped", root)
        return [], [c for c, _ in cams]
    out = []
    try:
        for ep in rows:
            index = int(ep["episode_index"])
            episode_id = ep.get("ramp_edge/episode_id") or f"{root.name}/episode_{index:06d}"
            outcome = ep.get("ramp_edge/outcome") or None
            if outcome not in ("success", "failure"):
                log.warning("LeRobot dataset %s, episode %s: outcome %s has no reward; skipped",
                            root, index, outcome)
                continue
            table = files.rows(ep)
            if table.num_rows < 2:
                log.warning("LeRobot dataset %s, episode %s: fewer than 2 frames; skipped",
                            root, index)
                continue
            t_all = table.column("timestamp").to_numpy().astype(np.float64)
            dt = float(np.median(np.diff(t_all)))
            stride = max(1, round((1.0 / data.policy_rate_hz) / dt)) if dt > 0 else 1
            keep = np.arange(0, table.num_rows, stride)
            pos_all = _column(table, "observation.state").astype(np.float32)
            vel = _velocity(table, pos_all, t_all)[keep]
            pos = pos_all[keep]
            cmd = _column(table, "action").astype(np.float32)[keep]
            source = _sources(table, codes)[keep]
            transition = (table.column("complementary_info.transition").to_numpy(
                zero_copy_only=False).astype(bool)[keep]
                if "complementary_info.transition" in table.column_names
                else np.zeros(len(keep), bool))
            frames = np.stack([
                np.stack([_resize(img, image_hw) for img in v.frames(ep, t_all[keep],
                                                                        0.5 / fps)])
                for v in videos]) if videos else np.zeros((0, len(keep), *image_hw, 3), np.uint8)
            finite = (np.isfinite(pos).all(1) & np.isfinite(vel).all(1)
                      & np.isfinite(cmd).all(1))
            trainable = finite & ~transition & np.isin(source, list(data.sources))
            tasks = ep.get("tasks") or [""]
            instruction = str(tasks[0])
            n = len(keep)
            out.append(EpisodeSamples(
                episode_id=str(episode_id), task=ep.get("ramp_edge/task") or instruction,
                outcome=outcome, joint_names=joints, tokens=tokenizer.encode(instruction),
                position=np.nan_to_num(pos), velocity=np.nan_to_num(vel), command=cmd,
                source=source, transition=transition, frames=frames,
                frame_index=np.repeat(np.arange(n, dtype=np.int64)[:, None], len(videos), 1),
                rewards=episode_rewards(n, outcome, reward.c_fail_steps), trainable=trainable,
            ))
    finally:
        for v in videos:
            v.close()
    return out, [c for c, _ in cams]
