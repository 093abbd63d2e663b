"""Reading a sealed (or recovered) episode file: its metadata, steps as arrays, images and
events. What review, export and training read; nothing here writes a byte.

``with open_episode(path) as ep: steps = ep.steps(); frames = ep.images("scene")``.
Files are opened read-only and immutable, so a sealed file's sha256 never changes by reading.
A file still being recorded (WAL mode) is opened through SQLite's normal read-only path instead,
so committed steps are visible.
"""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ramp_edge.episodes.errors import EpisodeDamagedError, EpisodeStoreError
from ramp_edge.episodes.schema import EPISODE_SCHEMA_VERSION

_F32 = np.dtype("<f4")


@dataclass(frozen=True)
class StepArrays:
    """All steps of an episode, one row per step in id order. ``position``/``velocity`` are NaN
    where the device did not answer; ``chunk_id`` is -1 and ``value`` NaN where there was none.
    Times are ``time.monotonic`` s as recorded (subtract ``t_s[0]`` for episode time)."""

    id: np.ndarray  # int64 (N,)
    t_s: np.ndarray  # float64 (N,)
    t_sent_s: np.ndarray  # float64 (N,)
    state_t_s: np.ndarray  # float64 (N,), NaN: no reply
    position: np.ndarray  # float32 (N, J)
    velocity: np.ndarray  # float32 (N, J)
    command: np.ndarray  # float32 (N, J)
    source: np.ndarray  # str (N,): policy | human | hold | ramp | stop
    chunk_id: np.ndarray  # int64 (N,)
    value: np.ndarray  # float32 (N,)
    advantage: np.ndarray  # int8 (N,)
    interventions: np.ndarray  # int64 (N,)
    transition: np.ndarray  # bool (N,)

    def __len__(self) -> int:
        return int(self.id.shape[0])

    @property
    def lateness_ms(self) -> np.ndarray:
        """How late each setpoint left after its deadline (ms)."""
        return (self.t_sent_s - self.t_s) * 1e3

    @property
    def human(self) -> np.ndarray:
        """Steps a person controlled (bool)."""
        return self.source == "human"


@dataclass(frozen=True)
class ImageRecord:
    """One stored frame: ``data`` is the encoded image (``format`` jpeg or png)."""

    id: int
    camera: str
    t_capture_s: float
    step_id: int | None
    format: str
    width: int
    height: int
    data: bytes

    def decode(self) -> np.ndarray:
        """The frame as uint8 H x W x 3 RGB (needs Pillow)."""
        from PIL import Image

        with Image.open(io.BytesIO(self.data)) as im:
            return np.asarray(im.convert("RGB"))


@dataclass(frozen=True)
class Event:
    id: int
    t_s: float
    step_id: int | None
    kind: str
    detail: str | None

    def detail_json(self) -> dict | None:
        """``detail`` parsed as JSON when it is an object, else None."""
        try:
            out = json.loads(self.detail) if self.detail else None
        except ValueError:
            return None
        return out if isinstance(out, dict) else None


def _vectors(blobs: list[bytes | None], joints: int) -> np.ndarray:
    out = np.full((len(blobs), joints), np.nan, dtype=np.float32)
    for i, b in enumerate(blobs):
        if b is not None:
            v = np.frombuffer(b, dtype=_F32)
            if v.shape[0] == joints:
                out[i] = v
    return out


class EpisodeReader:
    """One episode file, open read-only. Raises :class:`EpisodeDamagedError` when SQLite cannot
    read it and :class:`EpisodeStoreError` when it is missing or of a newer schema."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise EpisodeStoreError(f"episode file {self.path} does not exist")
        wal = Path(f"{self.path}-wal")
        uri = (f"file:{self.path}?mode=ro" if wal.exists()
               else f"file:{self.path}?mode=ro&immutable=1")
        try:
            self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
            rows = self._conn.execute("SELECT key, value FROM meta").fetchall()
        except sqlite3.DatabaseError as err:
            raise EpisodeDamagedError(
                f"episode file {self.path} cannot be read: {err} "
                "(`ramp-edge episodes verify` tells more)") from err
        if version > EPISODE_SCHEMA_VERSION:
            self._conn.close()
            raise EpisodeStoreError(
                f"episode file {self.path} has schema {version}, newer than this ramp-edge "
                f"understands ({EPISODE_SCHEMA_VERSION}): upgrade ramp-edge")
        self.meta: dict[str, str | None] = dict(rows)

    # -- metadata ----------------------------------------------------------------------------
    @property
    def episode_id(self) -> str:
        return self.meta.get("episode_id") or self.path.stem

    @property
    def outcome(self) -> str | None:
        return self.meta.get("outcome")

    @property
    def instruction(self) -> str:
        return self.meta.get("instruction") or ""

    @property
    def task(self) -> str:
        return self.meta.get("task") or ""

    @property
    def joint_names(self) -> list[str]:
        raw = self.meta.get("joint_names")
        try:
            names = json.loads(raw) if raw else []
        except ValueError:
            names = []
        if not names:
            names = [f"joint_{i}" for i in range(self.joint_count)]
        return [str(n) for n in names]

    @property
    def joint_count(self) -> int:
        jc = self.meta.get("joint_count")
        if jc and jc.isdigit():
            return int(jc)
        row = self._conn.execute("SELECT command FROM steps LIMIT 1").fetchone()
        return len(row[0]) // 4 if row else 0

    # -- contents ----------------------------------------------------------------------------
    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as err:
            raise EpisodeDamagedError(f"episode file {self.path}: {err}") from err

    def steps(self) -> StepArrays:
        rows = self._query(
            "SELECT id, t_s, t_sent_s, state_t_s, position, velocity, command, source, "
            "chunk_id, value, advantage, interventions, transition FROM steps ORDER BY id")
        j = self.joint_count
        cols = list(zip(*rows, strict=True)) if rows else [[] for _ in range(13)]

        def num(i: int, dtype: type, fill: float) -> np.ndarray:
            return np.array([fill if v is None else v for v in cols[i]], dtype=dtype)

        return StepArrays(
            id=num(0, np.int64, 0), t_s=num(1, np.float64, np.nan),
            t_sent_s=num(2, np.float64, np.nan), state_t_s=num(3, np.float64, np.nan),
            position=_vectors(list(cols[4]), j), velocity=_vectors(list(cols[5]), j),
            command=_vectors(list(cols[6]), j),
            source=np.array(list(cols[7]), dtype=str) if rows else np.array([], dtype=str),
            chunk_id=num(8, np.int64, -1), value=num(9, np.float32, np.nan),
            advantage=num(10, np.int8, 1), interventions=num(11, np.int64, 0),
            transition=num(12, np.int64, 0).astype(bool))

    def cameras(self) -> list[str]:
        return [r[0] for r in self._query("SELECT DISTINCT camera FROM images ORDER BY camera")]

    def image_count(self, camera: str | None = None) -> int:
        if camera is None:
            return int(self._query("SELECT count(*) FROM images")[0][0])
        return int(self._query("SELECT count(*) FROM images WHERE camera = ?", (camera,))[0][0])

    def images(self, camera: str | None = None) -> Iterator[ImageRecord]:
        """Frames in capture order (of one camera, or all), read lazily."""
        where, args = ("WHERE camera = ?", (camera,)) if camera is not None else ("", ())
        try:
            cur = self._conn.execute(
                "SELECT id, camera, t_capture_s, step_id, format, width, height, data "
                f"FROM images {where} ORDER BY t_capture_s, id", args)
            for row in cur:
                yield ImageRecord(*row)
        except sqlite3.DatabaseError as err:
            raise EpisodeDamagedError(f"episode file {self.path}: {err}") from err

    def events(self) -> list[Event]:
        return [Event(*r) for r in self._query(
            "SELECT id, t_s, step_id, kind, detail FROM events ORDER BY t_s, id")]

    def takeover_segments(self) -> list[tuple[float, float]]:
        """(start, end) times (monotonic s) of each human takeover, from the per-step control
        source (an unfinished takeover ends at the last step)."""
        st = self.steps()
        out: list[tuple[float, float]] = []
        start = None
        for t, human in zip(st.t_s, st.human, strict=True):
            if human and start is None:
                start = float(t)
            elif not human and start is not None:
                out.append((start, float(t)))
                start = None
        if start is not None:
            out.append((start, float(st.t_s[-1])))
        return out

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> EpisodeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_episode(path: str | Path) -> EpisodeReader:
    """Open an episode file for reading (see :class:`EpisodeReader`)."""
    return EpisodeReader(path)
