"""The crash-safe episode store: one SQLite file per episode (WAL while recording, commits at
least every 100 ms from the recorder thread), sealed with a sha256 in a robot-level index,
recovered as ``aborted`` after a crash, bounded by a disk budget.

Wiring: ``store = EpisodeStore(home); store.recover(); rec = store.start_episode(meta)``;
``Controller(on_step=rec.on_step)``; ``rec.on_images({name: cam.latest()})`` at camera rate;
``rec.event("takeover_start")``; ``rec.finish("success")``.
"""

from ramp_edge.episodes.budget import DiskBudget
from ramp_edge.episodes.errors import BudgetExceededError, EpisodeDamagedError, EpisodeStoreError
from ramp_edge.episodes.index import EpisodeIndex, IndexEntry
from ramp_edge.episodes.reader import EpisodeReader, StepArrays, open_episode
from ramp_edge.episodes.recorder import Recorder, RecorderConfig, RecorderStats
from ramp_edge.episodes.seal import SalvageReport, VerifyReport, salvage, seal_file, verify
from ramp_edge.episodes.store import EpisodeStore
from ramp_edge.episodes.writer import EpisodeMeta, EpisodeWriter

__all__ = [
    "BudgetExceededError", "DiskBudget", "EpisodeDamagedError", "EpisodeIndex", "EpisodeMeta",
    "EpisodeReader", "EpisodeStore", "EpisodeStoreError", "EpisodeWriter", "IndexEntry",
    "Recorder", "RecorderConfig", "RecorderStats", "SalvageReport", "StepArrays", "VerifyReport",
    "open_episode", "salvage", "seal_file", "verify",
]
