"""EpisodeStore: the episodes directory of a robot home, its index, recording, sealing and
recovery. Layout under ``root`` (the robot home, see :mod:`ramp_edge.home`)::

    index.sqlite                the robot-level index (one row per episode)
    episodes/<id>.sqlite        one file per episode (WAL while recording, sealed after)
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ramp_edge.episodes.budget import DiskBudget
from ramp_edge.episodes.errors import EpisodeStoreError
from ramp_edge.episodes.index import EpisodeIndex, IndexEntry
from ramp_edge.episodes.recorder import Recorder, RecorderConfig
from ramp_edge.episodes.schema import OUTCOMES
from ramp_edge.episodes.seal import (
    SalvageReport,
    VerifyReport,
    file_is_healthy,
    fsync_path,
    salvage,
    seal_file,
    verify,
)
from ramp_edge.episodes.writer import EpisodeMeta, EpisodeWriter

log = logging.getLogger(__name__)

SUFFIX = ".sqlite"


def _committed_outcome(path: Path) -> str | None:
    """The outcome a seal committed into the file before a crash cut it short, if any."""
    try:
        conn = sqlite3.connect(path)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'outcome'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return row[0] if row and row[0] in OUTCOMES else None


def new_episode_id() -> str:
    """Sortable and unique: UTC start time plus 6 random hex digits."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


class EpisodeStore:
    """Episodes of one robot under ``root``. Call :meth:`recover` once at start-up, before
    recording; :meth:`start_episode` returns a running :class:`Recorder`."""

    def __init__(self, root: str | Path, *, config: RecorderConfig | None = None,
                 budget: DiskBudget | None = None) -> None:
        self.root = Path(root)
        self.dir = self.root / "episodes"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = config or RecorderConfig()
        self.budget = budget or DiskBudget()
        self.index = EpisodeIndex(self.root / "index.sqlite")
        self._active: dict[str, Recorder] = {}
        self._lock = threading.Lock()
        self._closed = False

    def path_of(self, episode_id: str) -> Path:
        return self.dir / f"{episode_id}{SUFFIX}"

    def start_episode(self, meta: EpisodeMeta, *, joint_count: int | None = None,
                      on_commit: Callable[[int], None] | None = None,
                      episode_id: str | None = None) -> Recorder:
        """Create the episode file, list it as ``recording`` and start its recorder thread.
        ``on_commit(last_step_id)`` runs on the recorder thread after each commit.
        Raises :class:`BudgetExceededError` when the disk budget is already used up and
        :class:`EpisodeStoreError` when the file cannot be created."""
        eid = episode_id or new_episode_id()
        path = self.path_of(eid)
        guard = self.budget.guard(self.dir, path)
        # Index row first: a crash right after leaves a row whose file is missing or empty,
        # which recovery handles; never a file nobody knows about.
        self.index.add(eid, path, instruction=meta.instruction, operator=meta.operator,
                       robot_id=meta.robot_id, calibration_hash=meta.calibration_hash,
                       bundle_hash=meta.bundle_hash, software_version=meta.software_version,
                       started_at=time.time())
        try:
            writer = EpisodeWriter(path, eid, meta, joint_count=joint_count,
                                   synchronous=self.config.synchronous,
                                   transition_window_s=self.config.transition_window_s)
            fsync_path(self.dir)  # the new file's directory entry survives a power cut
            mpc = guard.max_page_count(writer.page_size)
            if mpc is not None:
                writer.set_max_page_count(mpc)
        except Exception:
            self.index.update(eid, status="aborted", note="episode file could not be created")
            raise
        rec = Recorder(writer, self.config, budget=guard if self.budget.cap_bytes else None,
                       on_commit=on_commit, store=self)
        with self._lock:
            self._active[eid] = rec
        return rec.start()

    def seal(self, episode_id: str, outcome: str) -> IndexEntry:
        """Seal a closed episode file and record it in the index (status ``sealed``, or
        ``aborted`` when the outcome is ``aborted``)."""
        path = self.path_of(episode_id)
        res = seal_file(path, outcome, transition_window_s=self.config.transition_window_s)
        self.index.update(episode_id, status="aborted" if outcome == "aborted" else "sealed",
                          sha256=res.sha256, outcome=outcome, steps=res.steps, bytes=res.bytes,
                          ended_at=res.ended_at)
        with self._lock:
            self._active.pop(episode_id, None)
        return self.index.get(episode_id)

    def recover(self) -> list[IndexEntry]:
        """Seal as ``aborted`` every episode left ``recording`` by an earlier process (crash,
        kill, power cut), keeping every committed step; register episode files the index does
        not know. Returns the entries recovered. Never raises for a damaged file: it is
        salvaged and the damage noted in the index."""
        known = {e.id for e in self.index.list()}
        for p in sorted(self.dir.glob(f"*{SUFFIX}")):
            eid = p.name[: -len(SUFFIX)]
            if eid not in known:
                self.index.add(eid, p, note="found without an index row")
        out = []
        for e in self.index.list("recording"):
            if e.id in self._active:
                continue
            out.append(self._recover_one(e))
        return out

    def _recover_one(self, e: IndexEntry) -> IndexEntry:
        path = self.index.resolve(e)
        if not path.exists():
            self.index.update(e.id, status="aborted", outcome="aborted", steps=0,
                              note="episode file missing (crashed before it was created)")
            return self.index.get(e.id)
        note = "recovered after an unclean stop"
        outcome = "aborted"
        if file_is_healthy(path):
            # A crash during sealing, after the outcome was committed: finish that seal.
            done = _committed_outcome(path)
            if done is not None:
                outcome, note = done, "sealing completed on recovery"
        else:
            rep = self._salvage_in_place(path, e)
            note = (f"damaged file salvaged ({rep.steps} steps, {rep.unreadable} unreadable "
                    f"rows, {rep.garbled} garbled rows dropped); original kept as "
                    f"{path.name}.damaged")
        try:
            res = seal_file(path, outcome, transition_window_s=self.config.transition_window_s)
        except Exception as err:  # sqlite3.Error, OSError: report, keep going with the others
            self.index.update(e.id, status="aborted", outcome="aborted",
                              note=f"recovery failed: {err}")
            log.error("episode %s: recovery failed: %s", e.id, err)
            return self.index.get(e.id)
        self.index.update(e.id, status="aborted" if outcome == "aborted" else "sealed",
                          outcome=outcome, sha256=res.sha256, steps=res.steps, bytes=res.bytes,
                          ended_at=res.ended_at, note=note)
        log.warning("episode %s: %s, sealed as %s with %d steps", e.id, note, outcome,
                    res.steps)
        return self.index.get(e.id)

    def _salvage_in_place(self, path: Path, e: IndexEntry) -> SalvageReport:
        tmp = path.with_name(path.name + ".salvage")
        for sfx in ("", "-wal", "-shm"):
            Path(f"{tmp}{sfx}").unlink(missing_ok=True)
        rep = salvage(path, tmp, step_hint=e.steps or None)
        for sfx in ("", "-wal", "-shm"):
            src = Path(f"{path}{sfx}")
            if src.exists():
                os.replace(src, f"{path}.damaged{sfx}")
        for sfx in ("", "-wal", "-shm"):
            src = Path(f"{tmp}{sfx}")
            if src.exists():
                os.replace(src, f"{path}{sfx}")
        return rep

    def verify(self, episode_id: str) -> VerifyReport:
        """Check a sealed episode's file against the sha256 in the index and SQLite's
        integrity check; never raises for damage."""
        e = self.index.get(episode_id)
        return verify(self.index.resolve(e), e.sha256)

    def list(self, status: str | None = None) -> list[IndexEntry]:
        return self.index.list(status)

    def get(self, episode_id: str) -> IndexEntry:
        return self.index.get(episode_id)

    def close(self) -> None:
        """Finish any recorder still running as ``aborted`` and close the index. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for rec in list(self._active.values()):
            try:
                rec.finish("aborted")
            except EpisodeStoreError as err:
                log.error("%s", err)
        self.index.close()

    def __enter__(self) -> EpisodeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
