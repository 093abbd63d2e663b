"""The robot-level index: one SQLite database listing every episode file with its status
(recording / sealed / aborted), sha256, outcome and provenance. Sync and review read it."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from ramp_edge.episodes.errors import EpisodeStoreError
from ramp_edge.episodes.schema import INDEX_COLUMNS, STATUSES, create_index_schema


@dataclass(frozen=True)
class IndexEntry:
    """One episode as the index lists it. Times are unix seconds; ``bytes`` is the sealed size."""

    id: str
    path: str
    status: str
    sha256: str | None
    outcome: str | None
    instruction: str | None
    operator: str | None
    robot_id: str | None
    calibration_hash: str | None
    bundle_hash: str | None
    software_version: str | None
    steps: int
    bytes: int | None
    started_at: float | None
    ended_at: float | None
    note: str | None


class EpisodeIndex:
    """The index database (WAL, synchronous=FULL). Thread-safe: one connection behind a lock.
    ``path`` in a row is relative to the index's directory so a home can be moved."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None,
                                         check_same_thread=False, timeout=5.0)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            create_index_schema(self._conn)
        except sqlite3.DatabaseError as err:
            raise EpisodeStoreError(f"episode index {self.path} cannot be opened: {err}") from err
        self._closed = False

    def resolve(self, entry: IndexEntry) -> Path:
        """The absolute path of an entry's episode file."""
        p = Path(entry.path)
        return p if p.is_absolute() else self.path.parent / p

    def add(self, episode_id: str, path: Path, **fields: object) -> None:
        """Insert a new episode row with status ``recording``."""
        row = {"id": episode_id, "path": self._rel(path), "status": "recording", **fields}
        self._check(row)
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._lock:
            self._conn.execute(f"INSERT INTO episodes ({cols}) VALUES ({marks})",
                               tuple(row.values()))

    def update(self, episode_id: str, **fields: object) -> None:
        if "path" in fields:
            fields["path"] = self._rel(Path(str(fields["path"])))
        self._check(fields)
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._lock:
            cur = self._conn.execute(f"UPDATE episodes SET {sets} WHERE id = ?",
                                     (*fields.values(), episode_id))
        if cur.rowcount != 1:
            raise EpisodeStoreError(f"episode {episode_id} is not in the index {self.path}")

    def delete(self, episode_id: str) -> None:
        """Remove an episode's row (its file must be gone first). Unknown ids are ignored."""
        with self._lock:
            self._conn.execute("DELETE FROM episodes WHERE id = ?", (episode_id,))

    def get(self, episode_id: str) -> IndexEntry:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {', '.join(INDEX_COLUMNS)} FROM episodes WHERE id = ?", (episode_id,)
            ).fetchone()
        if row is None:
            raise EpisodeStoreError(f"episode {episode_id} is not in the index {self.path}")
        return IndexEntry(*row)

    def list(self, status: str | None = None) -> list[IndexEntry]:
        """Entries in start order, optionally only those with ``status``."""
        q = f"SELECT {', '.join(INDEX_COLUMNS)} FROM episodes"
        args: tuple = ()
        if status is not None:
            q += " WHERE status = ?"
            args = (status,)
        with self._lock:
            rows = self._conn.execute(q + " ORDER BY started_at, id", args).fetchall()
        return [IndexEntry(*r) for r in rows]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._conn.close()

    def __enter__(self) -> EpisodeIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rel(self, path: Path) -> str:
        try:
            return str(Path(path).resolve().relative_to(self.path.parent.resolve()))
        except ValueError:
            return str(Path(path).resolve())

    @staticmethod
    def _check(fields: dict) -> None:
        bad = set(fields) - set(INDEX_COLUMNS)
        if bad:
            raise EpisodeStoreError(f"unknown index columns: {sorted(bad)}")
        if "status" in fields and fields["status"] not in STATUSES:
            raise EpisodeStoreError(f"unknown episode status {fields['status']!r}")
