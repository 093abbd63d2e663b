"""What the training host keeps under its root directory::

    index.sqlite                       episodes received (by sha256) and bundles published
    incoming/<robot>/<sha256>.part     transfers in progress (resumed from their size)
    robots/<robot>/episodes/<id>.sqlite  received episodes, byte-identical to the robot's
    bundles/<manifest sha256>/         published bundles
    keys/sync.key, keys/sync.key_secret  the host's CURVE key pair (default place)

An episode is listed in the index only after its file was verified, fsynced and renamed into
place, so a listed sha256 always names a complete file.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ramp_edge.episodes.seal import fsync_path
from ramp_edge.sync.errors import SyncError

DDL = (
    """CREATE TABLE IF NOT EXISTS episodes (
        sha256 TEXT PRIMARY KEY, robot TEXT NOT NULL, episode_id TEXT NOT NULL,
        size INTEGER NOT NULL, path TEXT NOT NULL, received_at REAL NOT NULL, meta TEXT)""",
    """CREATE TABLE IF NOT EXISTS bundles (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, path TEXT NOT NULL,
        published_at REAL NOT NULL, files TEXT NOT NULL)""",
)


@dataclass(frozen=True)
class PublishedBundle:
    """A bundle robots may pull. ``id`` is the sha256 of its manifest; ``files`` lists
    (relative path, size, sha256), manifest included."""

    id: str
    name: str
    path: Path
    files: tuple[tuple[str, int, str], ...]


class HostStore:
    """The host's index and files under ``root``. Thread-safe."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        for sub in ("incoming", "robots", "bundles"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(self.root / "index.sqlite", isolation_level=None,
                                         check_same_thread=False, timeout=10.0)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            for stmt in DDL:
                self._conn.execute(stmt)
        except sqlite3.DatabaseError as err:
            raise SyncError(f"host index {self.root / 'index.sqlite'}: {err}") from err

    # episodes -------------------------------------------------------------------------------

    def has(self, sha: str) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM episodes WHERE sha256 = ?",
                                      (sha,)).fetchone() is not None

    def incoming_path(self, robot: str, sha: str) -> Path:
        d = self.root / "incoming" / robot
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{sha}.part"

    def final_path(self, robot: str, episode_id: str, sha: str) -> Path:
        """Where an episode lands: ``<id>.sqlite``, unless another listed sha holds that name
        (then ``<id>.<sha16>.sqlite``). Deterministic, so a retried rename replaces, never
        duplicates."""
        d = self.root / "robots" / robot / "episodes"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"{episode_id}.sqlite"
        rel = str(p.relative_to(self.root))
        with self._lock:
            row = self._conn.execute("SELECT sha256 FROM episodes WHERE path = ?",
                                     (rel,)).fetchone()
        if row is not None and row[0] != sha:
            p = d / f"{episode_id}.{sha[:16]}.sqlite"
        return p

    def commit_episode(self, tmp: Path, final: Path, *, sha: str, robot: str, episode_id: str,
                       size: int, meta: dict[str, Any]) -> None:
        """Rename a verified, fsynced ``tmp`` to ``final``, fsync the directories, then list it."""
        os.replace(tmp, final)
        fsync_path(final.parent)
        fsync_path(tmp.parent)
        with self._lock:
            self._conn.execute(
                "INSERT OR IGNORE INTO episodes (sha256, robot, episode_id, size, path, "
                "received_at, meta) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sha, robot, episode_id, size, str(final.relative_to(self.root)), time.time(),
                 json.dumps(meta)))

    def episodes(self, robot: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT sha256, robot, episode_id, size, path, received_at FROM episodes"
        args: tuple = ()
        if robot:
            q, args = q + " WHERE robot = ?", (robot,)
        with self._lock:
            rows = self._conn.execute(q + " ORDER BY received_at", args).fetchall()
        keys = ("sha256", "robot", "episode_id", "size", "path", "received_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # bundles --------------------------------------------------------------------------------

    def publish(self, bundle_dir: str | os.PathLike[str]) -> PublishedBundle:
        """Check the bundle (manifest, every artifact's sha256, probe file) with
        :func:`ramp_edge.bundle.load_bundle`, copy it under ``bundles/<id>`` atomically and list
        it. Publishing the same bundle again is a no-op. Raises BundleError."""
        from ramp_edge.bundle import load_bundle
        from ramp_edge.episodes.seal import sha256_file

        bundle = load_bundle(bundle_dir)
        target = self.root / "bundles" / bundle.sha256
        if not target.exists():
            tmp = Path(tempfile.mkdtemp(prefix=f".{bundle.sha256[:12]}.", suffix=".tmp",
                                        dir=target.parent))
            try:
                shutil.copytree(bundle.path, tmp, dirs_exist_ok=True)
                copied = load_bundle(tmp)  # what robots get is checked, not only the source
                if copied.sha256 != bundle.sha256:
                    raise SyncError(f"bundle {bundle.path} changed while it was copied")
                for p in tmp.rglob("*"):
                    fsync_path(p)
                os.replace(tmp, target)
                fsync_path(target.parent)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        files = tuple(sorted((p.relative_to(target).as_posix(), p.stat().st_size,
                              sha256_file(p)) for p in target.rglob("*") if p.is_file()))
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO bundles (id, name, path, published_at, files) "
                "VALUES (?, ?, ?, ?, ?)",
                (bundle.sha256, bundle.name, str(target.relative_to(self.root)), time.time(),
                 json.dumps(files)))
        return PublishedBundle(bundle.sha256, bundle.name, target, files)

    def bundles(self) -> list[PublishedBundle]:
        """Published bundles, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, name, path, files FROM bundles ORDER BY published_at").fetchall()
        return [PublishedBundle(i, n, self.root / p, tuple(tuple(f) for f in json.loads(fs)))
                for i, n, p, fs in rows]

    def bundle(self, bundle_id: str) -> PublishedBundle | None:
        return next((b for b in self.bundles() if b.id == bundle_id), None)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
