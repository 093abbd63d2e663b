"""EpisodeWriter: one SQLite file per episode, WAL mode. Only the recorder thread calls it
(the connection is opened by the caller and then handed over; nothing else touches it)."""

from __future__ import annotations

import bisect
import contextlib
import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ramp_edge.episodes.errors import EpisodeStoreError
from ramp_edge.episodes.schema import TAKEOVER_EVENTS, create_episode_schema


def _software_version() -> str:
    from ramp_edge import __version__

    return __version__


@dataclass(frozen=True)
class EpisodeMeta:
    """What an episode is about. Hashes are hex sha256 of the calibration file and the model
    bundle; ``software_version`` defaults to the installed ramp-edge version."""

    instruction: str = ""
    operator: str = ""
    robot_id: str = ""
    calibration_hash: str = ""
    bundle_hash: str = ""
    software_version: str = field(default_factory=_software_version)
    task: str = ""  # the task's short name (e.g. "pack_box"); instructions vary within a task
    joint_names: tuple[str, ...] = ()  # the robot's joint order (stored as a JSON list)


class EpisodeWriter:
    """Appends steps, images and events to one episode file.

    ``synchronous``: ``FULL`` (default) fsyncs the WAL at every commit, so a committed step
    survives a power cut; ``NORMAL`` only survives a process crash (kill -9).
    ``transition_window_s``: steps whose deadline lies within this of a takeover start/end are
    written with ``transition=1`` (earlier steps are updated when the event is written);
    sealing settles the flags (:func:`ramp_edge.episodes.seal.mark_transitions`).
    """

    def __init__(self, path: str | Path, episode_id: str, meta: EpisodeMeta, *,
                 joint_count: int | None = None, synchronous: str = "FULL",
                 transition_window_s: float = 0.5, max_page_count: int | None = None) -> None:
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
        self.path = Path(path)
        self.episode_id = episode_id
        self.transition_window_s = transition_window_s
        self._takeover_times: list[float] = []
        self._closed = False
        self._in_tx = False
        if self.path.exists():
            raise EpisodeStoreError(f"episode file {self.path} already exists")
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None,
                                         check_same_thread=False)
            c = self._conn
            c.execute("PRAGMA journal_mode=WAL")
            c.execute(f"PRAGMA synchronous={synchronous}")
            if max_page_count is not None:
                c.execute(f"PRAGMA max_page_count={int(max_page_count)}")
            c.execute("BEGIN")
            create_episode_schema(c)
            t0 = time.monotonic()
            meta_rows = {**asdict(meta), "episode_id": episode_id, "started_at": time.time(),
                         "t0_monotonic_s": t0, "outcome": None,
                         "joint_count": joint_count}
            meta_rows["joint_names"] = json.dumps(list(meta.joint_names))
            c.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                          [(k, None if v is None else str(v)) for k, v in meta_rows.items()])
            c.execute("COMMIT")
        except sqlite3.Error as err:
            raise EpisodeStoreError(f"episode file {self.path} cannot be created: {err}") from err
        self.started_at = float(meta_rows["started_at"])
        self.t0_monotonic_s = t0

    @property
    def page_size(self) -> int:
        return int(self._conn.execute("PRAGMA page_size").fetchone()[0])

    def set_max_page_count(self, pages: int) -> None:
        """Cap the file's size (SQLite then fails writes with SQLITE_FULL, file intact)."""
        self._conn.execute(f"PRAGMA max_page_count={int(pages)}")

    def begin(self) -> None:
        if not self._in_tx:
            self._conn.execute("BEGIN")
            self._in_tx = True

    def commit(self) -> None:
        """Commit the open transaction (durable per ``synchronous`` when this returns)."""
        if self._in_tx:
            self._conn.execute("COMMIT")
            self._in_tx = False

    def rollback(self) -> None:
        if self._in_tx:
            self._in_tx = False
            # SQLite may already have rolled back by itself (SQLITE_FULL).
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")

    def is_transition(self, t_s: float) -> bool:
        """Whether a step with deadline ``t_s`` lies within the window of a takeover event
        already written."""
        times, w = self._takeover_times, self.transition_window_s
        i = bisect.bisect_left(times, t_s - w)
        return i < len(times) and times[i] <= t_s + w

    def add_steps(self, rows: list[tuple]) -> None:
        """Rows: (id, t_s, t_sent_s, state_t_s, position, velocity, command, source, chunk_id,
        value, advantage, interventions, transition, crc)."""
        self.begin()
        self._conn.executemany(
            "INSERT INTO steps (id, t_s, t_sent_s, state_t_s, position, velocity, command, "
            "source, chunk_id, value, advantage, interventions, transition, crc) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def add_images(self, rows: list[tuple]) -> None:
        """Rows: (camera, t_capture_s, step_id, format, width, height, data, crc)."""
        self.begin()
        self._conn.executemany(
            "INSERT INTO images (camera, t_capture_s, step_id, format, width, height, data, crc) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def add_event(self, t_s: float, step_id: int | None, kind: str,
                  detail: str | dict | None = None) -> None:
        self.begin()
        if isinstance(detail, dict):
            detail = json.dumps(detail, sort_keys=True)
        self._conn.execute("INSERT INTO events (t_s, step_id, kind, detail) VALUES (?, ?, ?, ?)",
                           (t_s, step_id, kind, detail))
        if kind in TAKEOVER_EVENTS:
            bisect.insort(self._takeover_times, t_s)
            w = self.transition_window_s
            self._conn.execute("UPDATE steps SET transition = 1 WHERE t_s BETWEEN ? AND ?",
                               (t_s - w, t_s + w))

    def set_meta(self, key: str, value: object) -> None:
        self.begin()
        self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                           (key, None if value is None else str(value)))

    def close(self) -> None:
        """Commit what is pending and close the connection (the file stays in WAL mode until
        sealed). Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.commit()
        finally:
            self._conn.close()
