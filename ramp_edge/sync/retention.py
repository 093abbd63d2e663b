"""Retention on the robot: when the disk holding the episodes fills past a high-water mark,
delete the oldest episodes the host acknowledged until usage is back under the low-water mark.
An episode the host has not acknowledged (with the very sha256 on disk) is never deleted, nor
one still recording; when only those remain, retention stops and says so."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ramp_edge.episodes.index import EpisodeIndex
from ramp_edge.episodes.seal import fsync_path
from ramp_edge.sync.state import SyncState

log = logging.getLogger(__name__)

DiskUsage = Callable[[Path], tuple[int, int, int]]  # (total, used, free) bytes, as shutil's


@dataclass(frozen=True)
class RetentionPolicy:
    """Marks in percent of the filesystem's size that holds HOME/episodes."""

    high_water_pct: float = 90.0
    low_water_pct: float = 80.0

    def __post_init__(self) -> None:
        if not 0 < self.low_water_pct <= self.high_water_pct <= 100:
            raise ValueError("retention needs 0 < low_water_pct <= high_water_pct <= 100")


@dataclass
class RetentionReport:
    used_pct_before: float
    used_pct_after: float
    deleted: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    blocked: bool = False  # above the mark, but only unacknowledged episodes are left


def enforce(home: Path, index: EpisodeIndex, state: SyncState, policy: RetentionPolicy,
            disk_usage: DiskUsage = shutil.disk_usage) -> RetentionReport:
    """Delete acknowledged episodes, oldest first, while usage is above the marks."""
    where = home / "episodes" if (home / "episodes").is_dir() else home

    def used_pct() -> float:
        total, used, _free = disk_usage(where)
        return 100.0 * used / total if total else 0.0

    before = used_pct()
    rep = RetentionReport(before, before)
    if before < policy.high_water_pct:
        return rep
    acked = state.acked()
    for e in index.list():
        if rep.used_pct_after < policy.low_water_pct:
            break
        if e.status == "recording" or e.sha256 is None or acked.get(e.id) != e.sha256:
            continue
        path = index.resolve(e)
        size = path.stat().st_size if path.exists() else 0
        # File first, then the row: a crash between leaves a row without a file (skipped by
        # push, removed next time), never a file without a row that recovery would re-seal.
        path.unlink(missing_ok=True)
        fsync_path(path.parent)
        index.delete(e.id)
        rep.deleted.append(e.id)
        rep.freed_bytes += size
        rep.used_pct_after = used_pct()
    rep.blocked = rep.used_pct_after >= policy.low_water_pct
    if rep.blocked:
        log.warning("disk %.1f%% used and only episodes the host has not acknowledged are left "
                    "(none deleted beyond %d); push them", rep.used_pct_after, len(rep.deleted))
    return rep
