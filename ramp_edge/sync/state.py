"""The robot's sync state, ``HOME/sync.sqlite``: which episodes the host acknowledged (only
those may ever be deleted) and which bundles were staged or refused."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ramp_edge.sync.errors import SyncError

DDL = (
    """CREATE TABLE IF NOT EXISTS acked (
        episode_id TEXT PRIMARY KEY, sha256 TEXT NOT NULL, bytes INTEGER,
        host TEXT, acked_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS bundles (
        id TEXT PRIMARY KEY, name TEXT, status TEXT NOT NULL CHECK (status IN
        ('staged', 'failed')), path TEXT, reason TEXT, at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS runs (
        kind TEXT PRIMARY KEY, at REAL NOT NULL, ok INTEGER NOT NULL, message TEXT)""",
)


@dataclass(frozen=True)
class BundleRecord:
    id: str
    name: str | None
    status: str
    path: str | None
    reason: str | None
    at: float


class SyncState:
    """``HOME/sync.sqlite`` (WAL, synchronous=FULL: an ack recorded survives a power cut)."""

    def __init__(self, home: str | os.PathLike[str]) -> None:
        self.path = Path(home) / "sync.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None,
                                         check_same_thread=False, timeout=10.0)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            for stmt in DDL:
                self._conn.execute(stmt)
        except sqlite3.DatabaseError as err:
            raise SyncError(f"sync state {self.path} cannot be opened: {err}") from err

    def mark_acked(self, episode_id: str, sha256: str, nbytes: int | None, host: str) -> None:
        """Record the host's acknowledgement (call only after ``done`` or ``have``)."""
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO acked VALUES (?, ?, ?, ?, ?)",
                               (episode_id, sha256, nbytes, host, time.time()))

    def acked(self) -> dict[str, str]:
        """episode id -> the sha256 the host acknowledged."""
        with self._lock:
            return dict(self._conn.execute("SELECT episode_id, sha256 FROM acked").fetchall())

    def is_acked(self, episode_id: str, sha256: str | None) -> bool:
        with self._lock:
            row = self._conn.execute("SELECT sha256 FROM acked WHERE episode_id = ?",
                                     (episode_id,)).fetchone()
        return row is not None and sha256 is not None and row[0] == sha256

    def record_bundle(self, bundle_id: str, name: str | None, status: str,
                      path: str | None = None, reason: str | None = None) -> None:
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO bundles VALUES (?, ?, ?, ?, ?, ?)",
                               (bundle_id, name, status, path, reason, time.time()))

    def bundles(self, status: str | None = None) -> list[BundleRecord]:
        """Bundle records, newest first."""
        q, args = "SELECT id, name, status, path, reason, at FROM bundles", ()
        if status:
            q, args = q + " WHERE status = ?", (status,)
        with self._lock:
            rows = self._conn.execute(q + " ORDER BY at DESC", args).fetchall()
        return [BundleRecord(*r) for r in rows]

    def bundle(self, bundle_id: str) -> BundleRecord | None:
        return next((b for b in self.bundles() if b.id == bundle_id), None)

    def record_run(self, kind: str, ok: bool, message: str) -> None:
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?)",
                               (kind, time.time(), int(ok), message))

    def runs(self) -> dict[str, dict]:
        with self._lock:
            rows = self._conn.execute("SELECT kind, at, ok, message FROM runs").fetchall()
        return {k: {"at": at, "ok": bool(ok), "message": m} for k, at, ok, m in rows}

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SyncState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
