"""Recorder: takes steps from the control thread, frames from cameras and events from anyone,
and writes them from its own thread. ``on_step``/``on_images``/``event`` never block and never
touch the disk: they append to bounded queues (a deque append, atomic under the GIL). The
recorder thread wakes every ``commit_interval_ms``, encodes images (JPEG), writes everything
queued in one transaction and commits, so a committed step is at most about one interval plus
one commit old.
"""

from __future__ import annotations

import io
import itertools
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ramp_edge.episodes.errors import EpisodeStoreError
from ramp_edge.episodes.row_check import row_crc
from ramp_edge.episodes.writer import EpisodeWriter

if TYPE_CHECKING:
    from ramp_edge.controller import StepRecord
    from ramp_edge.episodes.budget import BudgetGuard
    from ramp_edge.episodes.index import IndexEntry
    from ramp_edge.episodes.store import EpisodeStore

log = logging.getLogger(__name__)

_F32 = np.dtype("<f4")


@dataclass(frozen=True)
class RecorderConfig:
    """``commit_interval_ms``: the recorder thread commits this often (must be < 100 ms so a
    commit lands at least every 100 ms). Queue sizes bound memory: ``step_queue_len`` steps
    (20 s at 100 Hz) and ``image_queue_len`` frames; a full queue drops and counts."""

    commit_interval_ms: float = 50.0
    step_queue_len: int = 2048
    image_queue_len: int = 256
    jpeg_quality: int = 90
    transition_window_s: float = 0.5
    synchronous: str = "FULL"
    advantage: int = 1  # advantage indicator the policy was conditioned on (1 for now)

    def __post_init__(self) -> None:
        if not 0 < self.commit_interval_ms < 100:
            raise ValueError("commit_interval_ms must be in (0, 100)")
        if self.step_queue_len < 1 or self.image_queue_len < 1:
            raise ValueError("queue lengths must be positive")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be in [1, 100]")


@dataclass
class RecorderStats:
    """Counters and timings. ``dropped``: steps lost to a full queue (0 at normal rates);
    ``refused``: steps handed over after recording stopped (budget, error, finish).
    ``commit_ms``: duration of each write+commit; ``commit_gap_ms``: time between the ends of
    successive commits; ``cpu_s``: CPU time of the recorder thread."""

    queued: int = 0
    written: int = 0
    dropped: int = 0
    refused: int = 0
    images_queued: int = 0
    images_written: int = 0
    images_dropped: int = 0
    events_written: int = 0
    commits: int = 0
    last_committed_step: int = 0
    cpu_s: float = 0.0
    stop_reason: str | None = None
    commit_ms: deque = field(default_factory=lambda: deque(maxlen=200_000))
    commit_gap_ms: deque = field(default_factory=lambda: deque(maxlen=200_000))

    def commit_ms_p99(self) -> float:
        return float(np.percentile(list(self.commit_ms), 99)) if self.commit_ms else 0.0

    def max_commit_gap_ms(self) -> float:
        return max(self.commit_gap_ms, default=0.0)


def _f32(a: np.ndarray | None) -> bytes | None:
    return None if a is None else np.asarray(a, dtype=_F32).tobytes()


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of a uint8 H x W x 3 RGB image."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), "RGB").save(
        buf, format="JPEG", quality=quality)
    return buf.getvalue()


class Recorder:
    """Records one episode into ``writer``. Use through :meth:`EpisodeStore.start_episode`;
    call :meth:`finish` (or use as a context manager, which finishes as ``aborted`` on error)."""

    def __init__(self, writer: EpisodeWriter, config: RecorderConfig | None = None, *,
                 budget: BudgetGuard | None = None,
                 on_commit: Callable[[int], None] | None = None,
                 store: EpisodeStore | None = None) -> None:
        self.writer = writer
        self.config = config or RecorderConfig()
        self.episode_id = writer.episode_id
        self.stats = RecorderStats()
        self._budget = budget
        self._on_commit = on_commit
        self._store = store
        self._steps: deque = deque()  # ("s", seq, record) and ("e", t, step, kind, detail)
        self._images: deque = deque()  # (camera, image, t_capture_s, step_id)
        self._seq = itertools.count(1)
        self._last_seq = 0
        self._accepting = True
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"recorder-{self.episode_id}",
                                        daemon=True)
        self._finished: IndexEntry | None = None
        self._finish_lock = threading.Lock()

    # -- producers (any thread; never block) ---------------------------------------------

    def start(self) -> Recorder:
        self._thread.start()
        return self

    def on_step(self, record: StepRecord) -> None:
        """Queue one control step (control thread). O(1), no I/O, never raises."""
        if not self._accepting:
            self.stats.refused += 1
            return
        if len(self._steps) >= self.config.step_queue_len:
            self.stats.dropped += 1
            return
        seq = next(self._seq)
        self._last_seq = seq
        self._steps.append(("s", seq, record))
        self.stats.queued += 1

    def on_image(self, camera: str, image: np.ndarray, t_capture_s: float) -> None:
        """Queue one camera frame (uint8 H x W x 3 RGB; capture time in time.monotonic s).
        A read-only array is kept by reference (cameras hand out fresh read-only frames); a
        writeable one is copied."""
        if not self._accepting:
            return
        if len(self._images) >= self.config.image_queue_len:
            self.stats.images_dropped += 1
            return
        if image.flags.writeable:
            image = image.copy()
        self._images.append((camera, image, float(t_capture_s), self._last_seq or None))
        self.stats.images_queued += 1

    def on_images(self, frames: Mapping[str, tuple[np.ndarray, float] | None]) -> None:
        """Queue frames as ``{camera name: Camera.latest()}``; None entries are skipped."""
        for name, got in frames.items():
            if got is not None:
                self.on_image(name, got[0], got[1])

    def event(self, kind: str, detail: str | dict | None = None,
              t_s: float | None = None) -> None:
        """Record an event (``takeover_start``, ``takeover_end``, ``fault``, ``estop``,
        ``bundle_swap``, ...) at ``t_s`` (time.monotonic s, default now). Events are never
        dropped for a full queue; after recording stopped they are ignored."""
        if not self._accepting:
            return
        t = time.monotonic() if t_s is None else float(t_s)
        self._steps.append(("e", t, self._last_seq or None, kind, detail))

    @property
    def recording(self) -> bool:
        """False once recording stopped (finish, disk budget, write error)."""
        return self._accepting

    # -- the recorder thread ---------------------------------------------------------------

    def _run(self) -> None:
        interval = self.config.commit_interval_ms / 1000.0
        last_end = time.monotonic()
        next_t = last_end + interval
        try:
            while True:
                stopping = self._wake.wait(max(0.0, next_t - time.monotonic()))
                next_t += interval
                now = time.monotonic()
                if next_t < now:  # fell behind (long commit): re-anchor, do not burst
                    next_t = now + interval
                if not self._flush():
                    break
                end = time.monotonic()
                self.stats.cpu_s = time.thread_time()
                self.stats.commit_gap_ms.append((end - last_end) * 1000.0)
                last_end = end
                if stopping and not self._steps and not self._images:
                    break
                self._check_budget()
        except Exception as err:  # never die silently: say why recording stopped
            self.stats.stop_reason = (f"episode {self.episode_id}: recorder failed ({err!r}); "
                                      f"recording stopped, the episode so far is kept")
            log.exception("%s", self.stats.stop_reason)
            self.writer.rollback()
        finally:
            self.stats.cpu_s = time.thread_time()
            self._accepting = False

    def _check_budget(self) -> None:
        if self._budget is None or not self._accepting:
            return
        msg = self._budget.check()
        if msg is not None:
            self._stop_recording(msg, "budget_exhausted")

    def _stop_recording(self, reason: str, event_kind: str) -> None:
        self._accepting = False
        self.stats.stop_reason = reason
        log.error("%s", reason)
        try:
            self._flush()  # what was queued before the stop still goes in
            self.writer.add_event(time.monotonic(), self._last_seq or None, event_kind,
                                  {"reason": reason})
            self.writer.commit()
        except sqlite3.Error as err:
            self.writer.rollback()
            log.error("episode %s: last write after stop failed: %s", self.episode_id, err)
        self._wake.set()

    def _flush(self) -> bool:
        """Write everything queued and commit. False when recording had to stop."""
        t_start = time.monotonic()
        # Encode outside the transaction: JPEG is the expensive part (Pillow drops the GIL).
        q = self.config.jpeg_quality
        image_rows = []
        for _ in range(len(self._images)):
            cam, img, t_cap, step_id = self._images.popleft()
            try:
                data = encode_jpeg(img, q)
            except (ValueError, TypeError, OSError) as err:  # wrong shape or dtype
                self.stats.images_dropped += 1
                log.warning("episode %s: frame from %s not recorded: %s", self.episode_id,
                            cam, err)
                continue
            h, w = img.shape[:2]
            row = (cam, float(t_cap), step_id, "jpeg", int(w), int(h), data)
            image_rows.append((*row, row_crc(row)))
        # Steps and events in queue order (an event's transition window must see the steps
        # before it): runs of step rows separated by events.
        ops: list[tuple] = []
        step_rows: list[tuple] = []
        last_seq = 0
        is_tr = self.writer.is_transition
        adv = self.config.advantage
        for _ in range(len(self._steps)):
            item = self._steps.popleft()
            if item[0] == "s":
                _, seq, r = item
                st = r.state
                row = (
                    seq, float(r.t_s), float(r.t_sent_s),
                    None if st is None else float(st.t_s),
                    None if st is None else _f32(st.position),
                    None if st is None else _f32(st.velocity),
                    _f32(r.command), r.source, r.chunk_id,
                    None if r.value is None else float(r.value), adv, int(r.interventions),
                )
                step_rows.append((*row, 0, row_crc(row)))
                last_seq = seq
            else:
                if step_rows:
                    ops.append(("s", step_rows))
                    step_rows = []
                ops.append(item)
        if step_rows:
            ops.append(("s", step_rows))
        try:
            n_steps, n_events = self._write(ops, image_rows, is_tr)
        except sqlite3.Error as err:
            # The transaction rolled back: the file is intact. When the disk (or the budget's
            # page cap) is full, try once more without the images so the steps are kept.
            self.writer.rollback()
            full = "full" in str(err).lower()
            budget = self._budget is not None and self._budget.budget.cap_bytes is not None
            if full and budget:
                kind = "budget_exhausted"
                reason = self._budget.check() or (  # type: ignore[union-attr]
                    f"disk budget for episodes reached ({err}); recording stopped, the "
                    f"episode so far is kept")
            else:
                kind = "disk_full" if full else "write_error"
                what = "disk full while writing" if full else "write failed"
                reason = (f"episode {self.episode_id}: {what} ({err}); recording stopped, "
                          f"the episode so far is kept")
            if full:
                ops.append(("e", time.monotonic(), last_seq or None, kind, {"reason": reason}))
                try:
                    n_steps, n_events = self._write(ops, [], is_tr)
                    self.stats.written += n_steps
                    self.stats.events_written += n_events
                    self.stats.images_dropped += len(image_rows)
                    if last_seq:
                        self.stats.last_committed_step = last_seq
                    reason += f" (the last {n_steps} steps kept without their images)"
                except sqlite3.Error:
                    self.writer.rollback()
            self._accepting = False
            self.stats.stop_reason = reason
            log.error("%s", reason)
            return False
        st = self.stats
        st.written += n_steps
        st.images_written += len(image_rows)
        st.events_written += n_events
        st.commits += 1
        st.commit_ms.append((time.monotonic() - t_start) * 1000.0)
        if last_seq:
            st.last_committed_step = last_seq
            if self._on_commit is not None:
                try:
                    self._on_commit(last_seq)
                except Exception:  # a listener's bug must not stop the recording
                    log.exception("episode %s: on_commit callback failed", self.episode_id)
        return True

    def _write(self, ops: list[tuple], image_rows: list[tuple],
               is_tr: Callable[[float], bool]) -> tuple[int, int]:
        """One transaction: steps and events in order, then images; commit."""
        w = self.writer
        n_steps = n_events = 0
        for op in ops:
            if op[0] == "s":
                rows = [(*r[:12], int(is_tr(r[1])), r[13]) for r in op[1]]
                w.add_steps(rows)
                n_steps += len(rows)
            else:
                _, t, step_id, kind, detail = op
                w.add_event(t, step_id, kind, detail)
                n_events += 1
        if image_rows:
            w.add_images(image_rows)
        w.commit()
        return n_steps, n_events

    # -- end -------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop taking data, write and commit everything queued, close the file (not sealed).
        Idempotent."""
        self._accepting = False
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._steps or self._images:  # never started, or a late append raced the stop
            try:
                self._flush()
            except Exception:
                log.exception("episode %s: final write failed", self.episode_id)
        self.writer.close()

    def finish(self, outcome: str = "aborted") -> IndexEntry:
        """Close and seal the episode with ``outcome`` (success / failure / aborted); returns
        its index entry. Idempotent: a second call returns the first result."""
        with self._finish_lock:
            if self._finished is not None:
                return self._finished
            if self._store is None:
                raise EpisodeStoreError("this recorder has no store to seal into")
            self.close()
            self._finished = self._store.seal(self.episode_id, outcome)
            return self._finished

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.finish("aborted")
