"""Disk budget for episodes: a cap on the bytes all episode files may use. When a recording
would pass it, recording stops cleanly (everything written so far committed, the file sealed
valid) with a message that says what to do; nothing is deleted here (that is sync's job, and
only for acknowledged episodes)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from ramp_edge.episodes.errors import BudgetExceededError


def _fmt(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def dir_bytes(directory: Path, exclude: set[str] | None = None) -> int:
    """Bytes used by the regular files directly in ``directory`` (not following links)."""
    total = 0
    try:
        with os.scandir(directory) as it:
            for e in it:
                if exclude and e.name in exclude:
                    continue
                try:
                    if e.is_file(follow_symlinks=False):
                        total += e.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    pass
    except FileNotFoundError:
        return 0
    return total


@dataclass(frozen=True)
class DiskBudget:
    """``cap_bytes``: most bytes the episodes directory may hold (None: no cap).
    ``headroom_bytes``: recording stops this far below the cap, so the commit in flight, the
    WAL and sealing still fit; a new episode needs twice that free to start."""

    cap_bytes: int | None = None
    headroom_bytes: int = 1 << 20

    def guard(self, directory: Path, episode_path: Path) -> BudgetGuard:
        """A guard for one recording; raises :class:`BudgetExceededError` if already full."""
        g = BudgetGuard(self, directory, episode_path)
        msg = g.check(self.headroom_bytes)
        if msg is not None:
            raise BudgetExceededError(msg)
        return g


class BudgetGuard:
    """Checks one recording against the budget: the other files' size is measured once at
    start; the episode's own file and WAL are stat'ed at each check (two stat calls)."""

    def __init__(self, budget: DiskBudget, directory: Path, episode_path: Path) -> None:
        self.budget = budget
        self.directory = directory
        self.episode_path = episode_path
        names = {episode_path.name + sfx for sfx in ("", "-wal", "-shm", "-journal")}
        self.others_bytes = dir_bytes(directory, exclude=names)

    def own_bytes(self) -> int:
        total = 0
        for sfx in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(f"{self.episode_path}{sfx}").st_size
        return total

    def max_page_count(self, page_size: int) -> int | None:
        """A hard backstop for SQLite (``PRAGMA max_page_count``): SQLite then refuses to grow
        the file past the cap (SQLITE_FULL, transaction rolled back, file intact)."""
        if self.budget.cap_bytes is None:
            return None
        return max(1, (self.budget.cap_bytes - self.others_bytes) // page_size)

    def check(self, extra_bytes: int = 0) -> str | None:
        """None while within budget (with ``extra_bytes`` more room than the headroom), else
        the one-line message for the operator."""
        cap = self.budget.cap_bytes
        if cap is None:
            return None
        used = self.others_bytes + self.own_bytes()
        if used + self.budget.headroom_bytes + extra_bytes <= cap:
            return None
        what = ("recording stopped, the episode so far is kept" if self.own_bytes()
                else "no new episode can be recorded")
        return (f"disk budget for episodes reached: {_fmt(used)} used of the {_fmt(cap)} cap "
                f"in {self.directory}; {what}. Sync and let sync delete acknowledged "
                f"episodes, or raise the cap")
