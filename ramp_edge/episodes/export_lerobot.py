"""Export episodes to a LeRobotDataset v3.0 directory, the layout LeRobot's training tools load::

    meta/info.json                                  fps, features, path templates, totals
    meta/stats.json                                 per-feature min/max/mean/std/count/q01..q99
    meta/tasks.parquet                              task (the instruction) -> task_index
    meta/episodes/chunk-000/file-000.parquet        one row per episode: length, data and
                                                    video file indices, index ranges, stats,
                                                    ramp_edge/* (episode id, outcome, task, ...)
    data/chunk-CCC/file-FFF.parquet                 one row per frame, many episodes per file
    videos/observation.images.<cam>/chunk-CCC/file-FFF.mp4
                                                    many episodes back to back per file

Control steps (100 Hz by default) are resampled to the dataset's ``fps``: each frame takes the
step nearest its time; each camera the newest image captured at or before it (frames before a
camera's first image repeat that image). Frame ``k`` of an episode is at ``timestamp = k/fps``
and at ``from_timestamp + k/fps`` in its video file.

Frame columns beyond LeRobot's defaults: ``intervention`` (a person controlled the step),
``control_source`` (an int code, the mapping is ``control_source_codes`` in info.json),
``next.done`` (last frame of the episode) and ``complementary_info.*`` (world-model value,
advantage indicator, takeover transition flag, chunk id, safety intervention flags, step id).
``observation.state`` is the measured joint position (rad; a step without a reply repeats the
last measured one), ``action`` the command actually sent (rad).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ramp_edge import __version__
from ramp_edge.episodes.export_mcap import ExportError
from ramp_edge.episodes.reader import EpisodeReader, ImageRecord, StepArrays, open_episode
from ramp_edge.episodes.schema import CONTROL_SOURCES

CODEBASE_VERSION = "v3.0"
DEFAULT_FPS = 50
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
DEFAULT_CHUNK_SIZE = 1000
DEFAULT_DATA_FILE_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 200

CONTROL_SOURCE_CODES = {name: i for i, name in enumerate(CONTROL_SOURCES)}
UNKNOWN_SOURCE_CODE = -1
# Preference order. AV1 (SVT-AV1) is LeRobot's default; H.264 and MPEG-4 part 2 are fallbacks
# for PyAV builds without it. GOP 2 keeps random access cheap for training-time decoding.
VIDEO_CODECS = ("libsvtav1", "libx264", "mpeg4")
_CODEC_OPTIONS = {
    "libsvtav1": {"g": "2", "crf": "30", "preset": "12"},
    "libx264": {"g": "2", "crf": "30", "preset": "veryfast"},
    "mpeg4": {"g": "2", "qscale": "4"},
}
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
_STATS_FRAMES_PER_EPISODE = 100  # images sampled per episode for image statistics
_STATS_IMAGE_SIDE = 150  # ... each downsampled to about this many pixels on its longer side


@dataclass(frozen=True)
class LeRobotExportReport:
    """What an export wrote: ``episodes`` the source episode ids in dataset order (dataset
    episode index = position), ``skipped`` (episode id, reason) for episodes left out."""

    root: Path
    fps: int
    episodes: list[str]
    frames: int
    cameras: list[str]
    vcodec: str | None
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _deps():  # -> (pyarrow, pyarrow.parquet, av)
    try:
        import av
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ExportError(f"LeRobot export needs {err.name!r}: "
                          "pip install 'ramp-edge[export]'") from err
    return pa, pq, av


def pick_codec(preferred: str | None = None) -> str:
    """The video encoder to use: ``preferred`` if this PyAV build has it, else the first of
    :data:`VIDEO_CODECS` it has. Raises :class:`ExportError` when none is available."""
    _, _, av = _deps()
    for name in ([preferred] if preferred else list(VIDEO_CODECS)):
        try:
            av.codec.Codec(name, "w")
        except Exception:  # av raises UnknownCodecError (a ValueError) or others by version
            continue
        return name
    wanted = preferred or ", ".join(VIDEO_CODECS)
    raise ExportError(f"no video encoder {wanted} in this PyAV build "
                      f"(av {av.__version__})")


# -- resampling -----------------------------------------------------------------------------
def frame_times(t_s: np.ndarray, fps: int) -> np.ndarray:
    """Frame times (monotonic s) at ``fps`` from the first step to the last, inclusive."""
    if t_s.shape[0] == 0:
        return np.zeros(0)
    n = math.floor((float(t_s[-1]) - float(t_s[0])) * fps + 1e-6) + 1
    return float(t_s[0]) + np.arange(n, dtype=np.float64) / fps


def nearest_index(times: np.ndarray, at: np.ndarray) -> np.ndarray:
    """For each of ``at``, the index of the nearest of the sorted ``times`` (earlier on ties)."""
    j = np.clip(np.searchsorted(times, at), 1, max(times.shape[0] - 1, 1))
    before = np.clip(j - 1, 0, times.shape[0] - 1)
    after = np.clip(j, 0, times.shape[0] - 1)
    return np.where(np.abs(times[after] - at) < np.abs(at - times[before]), after, before)


def latest_index(times: np.ndarray, at: np.ndarray) -> np.ndarray:
    """For each of ``at``, the index of the last of the sorted ``times`` at or before it
    (0 where none is)."""
    return np.clip(np.searchsorted(times, at, side="right") - 1, 0, None)


def _measured_positions(st: StepArrays) -> np.ndarray:
    """Positions with steps that had no reply filled by the last measured one (the first
    measured one before any; the command where nothing was measured)."""
    valid = ~np.isnan(st.position).any(axis=1)
    if not valid.any():
        return st.command.copy()
    idx = np.where(valid, np.arange(len(st)), -1)
    idx = np.maximum.accumulate(idx)
    idx[idx < 0] = int(np.argmax(valid))
    return st.position[idx]


# -- statistics -----------------------------------------------------------------------------
def feature_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """LeRobot statistics over axis 0 (min, max, mean, std, count, q01..q99); 1-D input
    gives shape (1,) statistics."""
    x = values.astype(np.float64)
    if x.ndim == 1:
        x = x[:, None]
    out = {"min": x.min(axis=0), "max": x.max(axis=0), "mean": x.mean(axis=0),
           "std": x.std(axis=0), "count": np.array([x.shape[0]])}
    for q in QUANTILES:
        out[f"q{round(q * 100):02d}"] = np.quantile(x, q, axis=0)
    return out


def image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel statistics of uint8 frames (N, H, W, 3), scaled to [0, 1], shape (3, 1, 1)
    as LeRobot stores them for video features."""
    px = frames.reshape(-1, frames.shape[-1]).astype(np.float64) / 255.0
    st = feature_stats(px)
    return {k: (v if k == "count" else v.reshape(-1, 1, 1))
            for k, v in {**st, "count": np.array([frames.shape[0]])}.items()}


def aggregate_stats(per_episode: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Dataset statistics from per-episode ones, as LeRobot aggregates them: exact min, max,
    mean and std; count-weighted mean of the quantiles."""
    counts = np.array([float(s["count"][0]) for s in per_episode])
    total = counts.sum()
    shape = (-1,) + (1,) * per_episode[0]["mean"].ndim
    w = counts.reshape(shape)
    means = np.stack([s["mean"] for s in per_episode])
    mean = (means * w).sum(axis=0) / total
    var = ((np.stack([s["std"] for s in per_episode]) ** 2 + (means - mean) ** 2) * w
           ).sum(axis=0) / total
    out = {"min": np.min(np.stack([s["min"] for s in per_episode]), axis=0),
           "max": np.max(np.stack([s["max"] for s in per_episode]), axis=0),
           "mean": mean, "std": np.sqrt(var), "count": np.array([int(total)])}
    for k in per_episode[0]:
        if k.startswith("q"):
            out[k] = (np.stack([s[k] for s in per_episode]) * w).sum(axis=0) / total
    return out


def _jsonable(stats: dict[str, dict[str, np.ndarray]]) -> dict:
    return {f: {k: v.tolist() for k, v in s.items()} for f, s in stats.items()}


# -- writers ----------------------------------------------------------------------------------
def _next_file(chunk: int, file: int, chunks_size: int) -> tuple[int, int]:
    return (chunk + 1, 0) if file + 1 >= chunks_size else (chunk, file + 1)


class _Rolling:
    """Chunk/file indices of a file that rolls over (between episodes) once the bytes given
    to it reach a size."""

    def __init__(self, root: Path, template: str, limit_mb: float, chunks_size: int,
                 **fmt: str) -> None:
        self.root, self.template, self.fmt = root, template, fmt
        self.limit_bytes = limit_mb * 1024 * 1024
        self.chunks_size = chunks_size
        self.chunk, self.file = 0, -1
        self.path: Path | None = None
        self.written = 0

    def open_next(self) -> Path:
        if self.file < 0:
            self.file = 0
        else:
            self.chunk, self.file = _next_file(self.chunk, self.file, self.chunks_size)
        self.path = self.root / self.template.format(chunk_index=self.chunk,
                                                     file_index=self.file, **self.fmt)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.written = 0
        return self.path

    def full(self) -> bool:
        return self.path is not None and self.written >= self.limit_bytes


class _VideoSink:
    """One camera's video files: episodes encoded back to back into one stream per file, frame
    pts counting on across episodes, so an episode's frames sit at ``from_timestamp + k/fps``."""

    def __init__(self, av, key: str, root: Path, fps: int, vcodec: str, size: tuple[int, int],
                 limit_mb: float, chunks_size: int) -> None:
        self.av, self.key, self.fps, self.vcodec = av, key, fps, vcodec
        self.height, self.width = size
        self.files = _Rolling(root, VIDEO_PATH, limit_mb, chunks_size, video_key=key)
        self.container = None
        self.stream = None
        self.frames_in_file = 0

    def begin_episode(self) -> tuple[int, int, float]:
        """Open (or roll over to) the file for the next episode; returns its chunk and file
        index and the episode's ``from_timestamp`` there."""
        if self.container is not None and self.files.full():
            self._close()
        if self.container is None:
            path = self.files.open_next()
            if self.vcodec == "libsvtav1":
                # SVT-AV1 prints its configuration banner at info level unless told otherwise.
                os.environ.setdefault("SVT_LOG", "1")
            self.container = self.av.open(str(path), "w")
            self.stream = self.container.add_stream(self.vcodec, rate=self.fps,
                                                    options=dict(_CODEC_OPTIONS[self.vcodec]))
            self.stream.width, self.stream.height = self.width, self.height
            self.stream.pix_fmt = "yuv420p"
            self.frames_in_file = 0
        return self.files.chunk, self.files.file, self.frames_in_file / self.fps

    def add(self, rgb: np.ndarray) -> None:
        frame = self.av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = self.frames_in_file
        for packet in self.stream.encode(frame):
            self.files.written += packet.size
            self.container.mux(packet)
        self.frames_in_file += 1

    def _close(self) -> None:
        if self.container is None:
            return
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        self.container = self.stream = None

    def close(self) -> None:
        self._close()

    def info(self) -> dict:
        """The ``info`` block of the feature, as LeRobot's ``get_video_info`` reads it."""
        return {"video.height": self.height, "video.width": self.width,
                "video.codec": self.av.codec.Codec(self.vcodec, "w").canonical_name,
                "video.pix_fmt": "yuv420p", "video.is_depth_map": False,
                "video.fps": self.fps, "video.channels": 3, "has_audio": False}


def _rgb(record: ImageRecord, size: tuple[int, int]) -> np.ndarray:
    img = record.decode()
    h, w = size
    if img.shape[0] < h or img.shape[1] < w:
        raise ExportError(f"camera {record.camera!r}: frame {record.id} is {img.shape[1]}x"
                          f"{img.shape[0]}, smaller than the dataset's {w}x{h}")
    return np.ascontiguousarray(img[:h, :w])


def _camera_frames(reader: EpisodeReader, camera: str, at: np.ndarray, size: tuple[int, int]
                   ) -> Iterator[np.ndarray]:
    """The newest frame captured at or before each time in ``at`` (the first frame before
    it), decoding each stored image at most once."""
    it = reader.images(camera)
    cur = next(it, None)
    if cur is None:
        raise ExportError(f"episode {reader.episode_id} has no images from camera {camera!r}")
    nxt = next(it, None)
    rgb = _rgb(cur, size)
    for t in at:
        changed = False
        while nxt is not None and nxt.t_capture_s <= t:
            cur, nxt, changed = nxt, next(it, None), True
        if changed:
            rgb = _rgb(cur, size)
        yield rgb


def _even_size(reader: EpisodeReader, camera: str) -> tuple[int, int]:
    first = next(reader.images(camera), None)
    if first is None:
        raise ExportError(f"episode {reader.episode_id} has no images from camera {camera!r}")
    h, w = first.decode().shape[:2]
    # yuv420p needs even sizes: an odd last row or column is dropped.
    return h - h % 2, w - w % 2


# -- the export -----------------------------------------------------------------------------
@dataclass
class _Layout:
    joint_names: list[str]
    cameras: list[str]
    sizes: dict[str, tuple[int, int]]


def _features(layout: _Layout, video_info: dict[str, dict]) -> dict:
    j = len(layout.joint_names)
    scalar = {"shape": [1], "names": None}
    feats: dict[str, dict] = {
        "observation.state": {"dtype": "float32", "shape": [j],
                              "names": list(layout.joint_names)},
        "action": {"dtype": "float32", "shape": [j], "names": list(layout.joint_names)},
    }
    for cam in layout.cameras:
        h, w = layout.sizes[cam]
        feats[f"observation.images.{cam}"] = {
            "dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
            "info": video_info[cam]}
    for name, dtype in (("timestamp", "float32"), ("frame_index", "int64"),
                        ("episode_index", "int64"), ("index", "int64"),
                        ("task_index", "int64"), ("next.done", "bool"),
                        ("intervention", "bool"), ("control_source", "int64"),
                        ("complementary_info.value", "float32"),
                        ("complementary_info.advantage", "int64"),
                        ("complementary_info.transition", "bool"),
                        ("complementary_info.chunk_id", "int64"),
                        ("complementary_info.safety_interventions", "int64"),
                        ("complementary_info.step_id", "int64")):
        feats[name] = {"dtype": dtype, **scalar}
    return feats


def _frame_columns(st: StepArrays, fps: int, episode_index: int, first_index: int,
                   task_index: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The frame columns of one episode and the frame times (monotonic s)."""
    at = frame_times(st.t_s, fps)
    k = nearest_index(st.t_s, at)
    n = at.shape[0]
    done = np.zeros(n, dtype=bool)
    done[-1] = True
    codes = np.array([CONTROL_SOURCE_CODES.get(str(s), UNKNOWN_SOURCE_CODE)
                      for s in st.source[k]], dtype=np.int64)
    cols = {
        "observation.state": _measured_positions(st)[k].astype(np.float32),
        "action": st.command[k].astype(np.float32),
        "timestamp": (np.arange(n) / fps).astype(np.float32),
        "frame_index": np.arange(n, dtype=np.int64),
        "episode_index": np.full(n, episode_index, dtype=np.int64),
        "index": np.arange(first_index, first_index + n, dtype=np.int64),
        "task_index": np.full(n, task_index, dtype=np.int64),
        "next.done": done,
        "intervention": st.human[k],
        "control_source": codes,
        "complementary_info.value": st.value[k].astype(np.float32),
        "complementary_info.advantage": st.advantage[k].astype(np.int64),
        "complementary_info.transition": st.transition[k],
        "complementary_info.chunk_id": st.chunk_id[k].astype(np.int64),
        "complementary_info.safety_interventions": st.interventions[k].astype(np.int64),
        "complementary_info.step_id": st.id[k].astype(np.int64),
    }
    return cols, at


def _arrow_table(pa, cols: dict[str, np.ndarray]):
    arrays, names = [], []
    for name, v in cols.items():
        if v.ndim == 2:
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v.shape[1]))
        else:
            arrays.append(pa.array(v))
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


def _tasks_table(pa, tasks: list[str]):
    """meta/tasks.parquet as pandas writes it: the task string is the (unnamed) index and
    ``task_index`` the one column, so ``pandas.read_parquet`` restores the index."""
    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode",
                            "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
             "numpy_type": "int64", "metadata": None},
            {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode",
             "numpy_type": "object", "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()),
                      "__index_level_0__": pa.array(tasks, pa.string())})
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def _task_of(reader: EpisodeReader) -> str:
    return reader.instruction or reader.task or "unspecified task"


def _layout_of(reader: EpisodeReader) -> _Layout:
    cams = reader.cameras()
    return _Layout(reader.joint_names, cams, {c: _even_size(reader, c) for c in cams})


def _check_layout(reader: EpisodeReader, layout: _Layout) -> None:
    if reader.joint_names != layout.joint_names:
        raise ExportError(f"episode {reader.episode_id} has joints {reader.joint_names}, the "
                          f"others {layout.joint_names}: export them as separate datasets")
    if reader.cameras() != layout.cameras:
        raise ExportError(f"episode {reader.episode_id} has cameras {reader.cameras()}, the "
                          f"others {layout.cameras}: export them as separate datasets")


def _prepare_out(out_dir: Path) -> Path:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ExportError(f"{out_dir} already exists and is not empty: choose a new output "
                          "directory")
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def export_lerobot(episode_paths: Sequence[str | Path], out_dir: str | Path, *,
                   fps: int = DEFAULT_FPS, vcodec: str | None = None,
                   robot_type: str | None = None,
                   chunks_size: int = DEFAULT_CHUNK_SIZE,
                   data_files_size_in_mb: float = DEFAULT_DATA_FILE_SIZE_IN_MB,
                   video_files_size_in_mb: float = DEFAULT_VIDEO_FILE_SIZE_IN_MB,
                   on_episode: Callable[[int, int, str], None] | None = None
                   ) -> LeRobotExportReport:
    """Write the episodes at ``episode_paths``, in that order, as one LeRobotDataset v3.0 at
    ``out_dir`` (which must not exist or be empty; the dataset is built in a hidden sibling
    directory and renamed into place when complete). ``fps`` is the dataset's frame rate;
    ``vcodec`` the video encoder (default: the first of :data:`VIDEO_CODECS` available).
    ``on_episode(done, total, episode_id)`` is called after each episode. Episodes without
    steps are skipped and listed in the report. A data or video file is closed for a new one
    (after ``chunks_size`` files, in a new chunk) once it holds ``*_files_size_in_mb`` MiB;
    an episode is never split between files.

    Raises :class:`ExportError` for a missing dependency or encoder, a non-empty ``out_dir``,
    no exportable episode, or episodes whose joints or cameras differ; the reader's errors for
    missing or damaged files."""
    pa, pq, av = _deps()
    if not 1 <= fps <= 1000:
        raise ExportError(f"fps must be between 1 and 1000, not {fps}")
    if chunks_size < 1 or data_files_size_in_mb <= 0 or video_files_size_in_mb <= 0:
        raise ExportError("chunks_size and the file size limits must be positive")
    out = Path(out_dir)
    tmp = _prepare_out(out)
    try:
        report = _export(pa, pq, av, list(episode_paths), tmp, out, fps, vcodec, robot_type,
                         chunks_size, data_files_size_in_mb, video_files_size_in_mb,
                         on_episode)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
        return report
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _export(pa, pq, av, paths: list, root: Path, final: Path, fps: int,
            vcodec: str | None, robot_type: str | None, chunks_size: int, data_mb: float,
            video_mb: float, on_episode: Callable[[int, int, str], None] | None
            ) -> LeRobotExportReport:
    layout: _Layout | None = None
    codec: str | None = None
    sinks: dict[str, _VideoSink] = {}
    data = _Rolling(root, DATA_PATH, data_mb, chunks_size)
    writer = None
    tasks: dict[str, int] = {}
    ep_rows: list[dict] = []
    ep_stats: list[dict[str, dict[str, np.ndarray]]] = []
    exported: list[str] = []
    skipped: list[tuple[str, str]] = []
    total = 0
    try:
        for done, path in enumerate(paths, start=1):
            with open_episode(path) as reader:
                st = reader.steps()
                if len(st) == 0:
                    skipped.append((reader.episode_id, "no steps"))
                    if on_episode:
                        on_episode(done, len(paths), reader.episode_id)
                    continue
                if layout is None:
                    layout = _layout_of(reader)
                    if layout.cameras:
                        codec = pick_codec(vcodec)
                        sinks = {c: _VideoSink(av, f"observation.images.{c}", root, fps, codec,
                                               layout.sizes[c], video_mb, chunks_size)
                                 for c in layout.cameras}
                _check_layout(reader, layout)
                ep_index = len(exported)
                task = _task_of(reader)
                task_index = tasks.setdefault(task, len(tasks))
                cols, at = _frame_columns(st, fps, ep_index, total, task_index)
                n = at.shape[0]
                stats = {k: feature_stats(v) for k, v in cols.items()}
                row: dict = {"episode_index": ep_index, "tasks": [task], "length": n}
                for cam, sink in sinks.items():
                    chunk, file, t_from = sink.begin_episode()
                    pick = set(np.linspace(0, n - 1, min(n, _STATS_FRAMES_PER_EPISODE))
                               .round().astype(int).tolist())
                    step = max(1, math.ceil(max(layout.sizes[cam]) / _STATS_IMAGE_SIDE))
                    sampled = []
                    for i, rgb in enumerate(_camera_frames(reader, cam, at, layout.sizes[cam])):
                        sink.add(rgb)
                        if i in pick:
                            sampled.append(rgb[::step, ::step])
                    stats[sink.key] = image_stats(np.stack(sampled))
                    row.update({f"videos/{sink.key}/chunk_index": chunk,
                                f"videos/{sink.key}/file_index": file,
                                f"videos/{sink.key}/from_timestamp": t_from,
                                f"videos/{sink.key}/to_timestamp": t_from + n / fps})
                if writer is not None and data.full():
                    writer.close()
                    writer = None
                table = _arrow_table(pa, cols)
                if writer is None:
                    writer = pq.ParquetWriter(data.open_next(), table.schema)
                writer.write_table(table)
                data.written += table.nbytes  # uncompressed: files stay under the limit
                row.update({"data/chunk_index": data.chunk, "data/file_index": data.file,
                            "dataset_from_index": total, "dataset_to_index": total + n,
                            "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
                            "ramp_edge/episode_id": reader.episode_id,
                            "ramp_edge/outcome": reader.outcome or "",
                            "ramp_edge/task": reader.task or "",
                            "ramp_edge/robot_id": reader.meta.get("robot_id") or "",
                            "ramp_edge/bundle_hash": reader.meta.get("bundle_hash") or ""})
                for feat, s in stats.items():
                    for k, v in s.items():
                        row[f"stats/{feat}/{k}"] = v.tolist()
                ep_rows.append(row)
                ep_stats.append(stats)
                exported.append(reader.episode_id)
                total += n
                if on_episode:
                    on_episode(done, len(paths), reader.episode_id)
    finally:
        if writer is not None:
            writer.close()
        for sink in sinks.values():
            sink.close()
    if layout is None:
        raise ExportError("no episode with steps to export"
                          + (f" ({len(skipped)} skipped: no steps)" if skipped else ""))

    meta = root / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    pq.write_table(_tasks_table(pa, list(tasks)), root / TASKS_PATH)
    ep_path = root / EPISODES_PATH.format(chunk_index=0, file_index=0)
    ep_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(ep_rows), ep_path)
    features = _features(layout, {c: s.info() for c, s in sinks.items()})
    agg = {f: aggregate_stats([s[f] for s in ep_stats]) for f in ep_stats[0]}
    (root / STATS_PATH).write_text(json.dumps(_jsonable(agg), indent=2))
    info = {
        "codebase_version": CODEBASE_VERSION, "robot_type": robot_type,
        "total_episodes": len(exported), "total_frames": total, "total_tasks": len(tasks),
        "chunks_size": chunks_size, "data_files_size_in_mb": data_mb,
        "video_files_size_in_mb": video_mb, "fps": fps,
        "splits": {"train": f"0:{len(exported)}"},
        "data_path": DATA_PATH, "video_path": VIDEO_PATH if sinks else None,
        "features": features,
        "control_source_codes": {**CONTROL_SOURCE_CODES, "unknown": UNKNOWN_SOURCE_CODE},
        "source": {"exported_by": f"ramp-edge {__version__}", "episodes": exported},
    }
    (root / INFO_PATH).write_text(json.dumps(info, indent=4))
    return LeRobotExportReport(final, fps, exported, total, list(layout.cameras), codec, skipped)
