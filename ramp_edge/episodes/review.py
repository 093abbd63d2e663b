"""Review of recorded episodes: finding one by id prefix, one-line and detailed summaries,
a structural check of a sealed file (beyond SQLite's own integrity check), and relabelling an
episode's outcome (an atomic re-seal).

Everything here reads sealed files read-only except :func:`relabel`, which writes a copy and
renames it over the original, so a reader holding the old file keeps reading intact data.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ramp_edge.episodes.errors import EpisodeDamagedError, EpisodeStoreError
from ramp_edge.episodes.index import EpisodeIndex, IndexEntry
from ramp_edge.episodes.reader import EpisodeReader
from ramp_edge.episodes.schema import (
    CONTROL_SOURCES,
    EPISODE_SCHEMA_VERSION,
    META_KEYS,
    OUTCOMES,
    TAKEOVER_EVENTS,
)
from ramp_edge.episodes.seal import VerifyReport, fsync_path, sha256_file, verify

INDEX_NAME = "index.sqlite"
SYNC_STATE_NAME = "sync.sqlite"  # ramp_edge.sync.state
_UNREADABLE = (EpisodeStoreError, EpisodeDamagedError)

# Columns each table of an episode file must have (the schema's, see schema.EPISODE_DDL).
REQUIRED_COLUMNS = {
    "meta": {"key", "value"},
    "steps": {"id", "t_s", "t_sent_s", "state_t_s", "position", "velocity", "command", "source",
              "chunk_id", "value", "advantage", "interventions", "transition"},
    "images": {"id", "camera", "t_capture_s", "step_id", "format", "width", "height", "data"},
    "events": {"id", "t_s", "step_id", "kind", "detail"},
}


def open_index(home: Path) -> EpisodeIndex:
    """The robot's episode index under ``home``. Raises :class:`EpisodeStoreError` when there
    is none (nothing recorded there yet, or the wrong home)."""
    path = Path(home) / INDEX_NAME
    if not path.is_file():
        raise EpisodeStoreError(f"no episode index at {path}: nothing recorded under {home} yet "
                                "(or the wrong --home / RAMP_EDGE_HOME)")
    return EpisodeIndex(path)


def find_entry(index: EpisodeIndex, id_or_prefix: str) -> IndexEntry:
    """The episode whose id is ``id_or_prefix`` or starts with it (unique). Raises
    :class:`EpisodeStoreError` naming what was wrong: no match, or several."""
    entries = index.list()
    exact = [e for e in entries if e.id == id_or_prefix]
    if exact:
        return exact[0]
    found = [e for e in entries if id_or_prefix and e.id.startswith(id_or_prefix)]
    if not found:
        raise EpisodeStoreError(f"no episode {id_or_prefix!r} in {index.path} "
                                "(`ramp-edge episodes list` shows them)")
    if len(found) > 1:
        shown = ", ".join(e.id for e in found[:4]) + (", ..." if len(found) > 4 else "")
        raise EpisodeStoreError(f"episode id prefix {id_or_prefix!r} matches {len(found)} "
                                f"episodes ({shown}): give more of the id")
    return found[0]


# -- summaries --------------------------------------------------------------------------------
@dataclass
class EpisodeRow:
    """One line of ``episodes list``. ``duration_s`` is wall-clock start to end (None while
    recording); ``takeovers``/``task`` are None when the file cannot be read."""

    id: str
    status: str
    outcome: str | None
    steps: int
    duration_s: float | None
    takeovers: int | None
    task: str | None
    instruction: str | None
    started_at: float | None
    note: str | None
    synced: bool | None = None  # None: never synced from this robot

    def to_dict(self) -> dict:
        return asdict(self)


def acked_hashes(home: Path) -> dict[str, str] | None:
    """Episode id -> the sha256 the training host acknowledged, from ``HOME/sync.sqlite``;
    None when this robot has never synced (the file is not created by looking)."""
    if not (Path(home) / SYNC_STATE_NAME).is_file():
        return None
    from ramp_edge.sync.errors import SyncError
    from ramp_edge.sync.state import SyncState

    try:
        with SyncState(home) as state:
            return state.acked()
    except (SyncError, sqlite3.Error):
        return None


def episode_row(index: EpisodeIndex, entry: IndexEntry,
                acked: dict[str, str] | None = None) -> EpisodeRow:
    """The summary line of one episode: the index row plus task and takeover count read from
    the file (left None when the file is missing or unreadable). ``acked``: from
    :func:`acked_hashes`; an episode counts as synced when the host acknowledged its current
    sha256 (a relabelled episode is synced again)."""
    takeovers = task = None
    path = index.resolve(entry)
    if path.is_file():
        # Damaged or missing: `verify` says what is wrong; the list only leaves blanks.
        with contextlib.suppress(*_UNREADABLE), EpisodeReader(path) as ep:
            task = ep.task
            takeovers = sum(1 for ev in ep.events() if ev.kind == "takeover_start")
    duration = (entry.ended_at - entry.started_at
                if entry.ended_at is not None and entry.started_at is not None else None)
    return EpisodeRow(entry.id, entry.status, entry.outcome, entry.steps, duration, takeovers,
                      task, entry.instruction, entry.started_at, entry.note,
                      _is_synced(entry, acked))


def _is_synced(entry: IndexEntry, acked: dict[str, str] | None) -> bool | None:
    if acked is None:
        return None
    return entry.sha256 is not None and acked.get(entry.id) == entry.sha256


def _finite(a: np.ndarray) -> np.ndarray:
    return a[np.isfinite(a)]


def _pct(a: np.ndarray, q: float) -> float | None:
    a = _finite(a)
    return float(np.percentile(a, q)) if a.size else None


@dataclass
class EpisodeDetail:
    """What ``episodes show`` prints. Times relative to the first step are ``*_s`` floats;
    lateness is in ms (``t_sent_s - t_s``, how late each setpoint left)."""

    id: str
    path: str
    status: str
    outcome: str | None
    note: str | None
    sha256: str | None
    bytes: int | None
    meta: dict[str, str | None]
    steps: int
    duration_s: float | None
    sources: dict[str, int]
    takeovers: list[dict]
    events: list[dict]
    images: dict[str, int]
    lateness_ms: dict[str, float | None]
    value_range: tuple[float, float] | None
    interventions: int
    transition_steps: int
    synced: bool | None = None  # None: never synced from this robot
    verify: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def episode_detail(index: EpisodeIndex, entry: IndexEntry, *, check: bool = True,
                   acked: dict[str, str] | None = None) -> EpisodeDetail:
    """Read one episode file in full and summarise it; ``check``: also verify it (sha256 and
    SQLite integrity, see :func:`verify_episode`); ``acked`` as for :func:`episode_row`.
    Raises :class:`EpisodeDamagedError` / :class:`EpisodeStoreError` when the file cannot be
    read."""
    path = index.resolve(entry)
    with EpisodeReader(path) as ep:
        meta = dict(ep.meta)
        st = ep.steps()
        events = ep.events()
        images = {cam: ep.image_count(cam) for cam in ep.cameras()}
    t0 = float(st.t_s[0]) if len(st) else (events[0].t_s if events else 0.0)
    segments = _segments(st.t_s, st.human)
    duration = float(st.t_s[-1] - st.t_s[0]) if len(st) > 1 else None
    lat = st.lateness_ms
    values = _finite(st.value.astype(np.float64))
    detail = EpisodeDetail(
        id=entry.id, path=str(path), status=entry.status, outcome=entry.outcome,
        note=entry.note, sha256=entry.sha256, bytes=entry.bytes, meta=meta, steps=len(st),
        duration_s=duration,
        sources={s: int(n) for s, n in sorted(Counter(st.source.tolist()).items())},
        takeovers=[{"start_s": a - t0, "end_s": b - t0, "duration_s": b - a,
                    "steps": int(n)} for a, b, n in segments],
        events=[{"t_s": ev.t_s - t0, "step_id": ev.step_id, "kind": ev.kind,
                 "detail": ev.detail} for ev in events],
        images=images,
        lateness_ms={"p50": _pct(lat, 50), "p99": _pct(lat, 99),
                     "max": float(_finite(lat).max()) if _finite(lat).size else None},
        value_range=(float(values.min()), float(values.max())) if values.size else None,
        interventions=int(np.count_nonzero(st.interventions)),
        transition_steps=int(np.count_nonzero(st.transition)),
        synced=_is_synced(entry, acked))
    if check:
        detail.verify = verify_episode(index, entry).to_dict()
    return detail


def _segments(t_s: np.ndarray, human: np.ndarray) -> list[tuple[float, float, int]]:
    """(start, end, steps) of each run of human steps; a run ends at the next step's deadline
    (or its own last step's, at the end of the episode)."""
    out = []
    if not len(t_s):
        return out
    h = np.concatenate([[False], human.astype(bool), [False]])
    starts = np.flatnonzero(~h[:-1] & h[1:])
    ends = np.flatnonzero(h[:-1] & ~h[1:])  # index of the first non-human step after a run
    for a, b in zip(starts, ends, strict=True):
        end_t = t_s[b] if b < len(t_s) else t_s[-1]
        out.append((float(t_s[a]), float(end_t), int(b - a)))
    return out


# -- verification -----------------------------------------------------------------------------
@dataclass
class EpisodeCheck:
    """The verdict of ``episodes verify`` on one episode: ``state`` is ``ok``, ``damaged`` or
    ``skipped`` (still recording, or aborted before its file existed)."""

    id: str
    path: str
    state: str
    sha256: str | None = None
    sha256_ok: bool | None = None
    integrity: str | None = None
    steps: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.state != "damaged"

    def line(self) -> str:
        if self.state == "ok":
            return f"{self.id}: ok ({self.steps} steps, sha256 {self.sha256[:12]}...)"
        if self.state == "skipped":
            return f"{self.id}: skipped ({'; '.join(self.problems)})"
        return f"{self.id}: DAMAGED: {'; '.join(self.problems)}"

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def check_structure(path: str | Path) -> list[str]:
    """What is wrong with an episode file's structure, as lines (empty: nothing): schema
    version, tables and their columns, meta keys, step ids and deadlines increasing, vector
    blobs of ``4 * joint_count`` bytes, known control sources, non-empty images, takeover
    events balanced. Never raises: a file SQLite cannot read gives one line saying so."""
    uri = f"file:{Path(path)}?mode=ro&immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as err:
        return [f"cannot open: {err}"]
    try:
        return _structure_problems(conn)
    except sqlite3.Error as err:
        return [f"unreadable: {err}"]
    finally:
        conn.close()


def _structure_problems(conn: sqlite3.Connection) -> list[str]:
    out: list[str] = []
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version != EPISODE_SCHEMA_VERSION:
        out.append(f"schema version {version}, expected {EPISODE_SCHEMA_VERSION}")
    for table, cols in REQUIRED_COLUMNS.items():
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if not have:
            out.append(f"table {table} missing")
        elif cols - have:
            out.append(f"table {table} lacks columns {sorted(cols - have)}")
    if out:
        return out
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        out.append(f"meta keys missing: {', '.join(missing)}")
    if meta.get("outcome") not in OUTCOMES:
        out.append(f"meta outcome {meta.get('outcome')!r} is not one of {', '.join(OUTCOMES)}")
    jc = meta.get("joint_count")
    joints = int(jc) if jc and jc.isdigit() else None
    if jc and joints is None:
        out.append(f"meta joint_count {jc!r} is not a number")
    elif not jc:  # optional when recording: the first command's length says it
        row = conn.execute("SELECT length(command) FROM steps ORDER BY id LIMIT 1").fetchone()
        joints = row[0] // 4 if row and row[0] else None
    (bad_order,) = conn.execute(
        "SELECT count(*) FROM (SELECT id, lag(id) OVER w AS pid, t_s, lag(t_s) OVER w AS pt "
        "FROM steps WINDOW w AS (ORDER BY rowid)) WHERE id <= pid OR t_s < pt").fetchone()
    if bad_order:
        out.append(f"{bad_order} steps out of order (ids or deadlines not increasing)")
    if joints is not None:
        n = 4 * joints
        (bad_cmd, bad_vec) = conn.execute(
            "SELECT sum(length(command) != ?), "
            "sum(coalesce(length(position) != ?, 0) OR coalesce(length(velocity) != ?, 0)) "
            "FROM steps", (n, n, n)).fetchone()
        if bad_cmd:
            out.append(f"{bad_cmd} steps with a command blob not {n} bytes ({joints} joints)")
        if bad_vec:
            out.append(f"{bad_vec} steps with a position/velocity blob not {n} bytes")
    marks = ", ".join("?" for _ in CONTROL_SOURCES)
    (bad_src,) = conn.execute(f"SELECT count(*) FROM steps WHERE source NOT IN ({marks})",
                              CONTROL_SOURCES).fetchone()
    if bad_src:
        out.append(f"{bad_src} steps with an unknown control source")
    (bad_img,) = conn.execute(
        "SELECT count(*) FROM images WHERE length(data) = 0 OR width <= 0 OR height <= 0"
    ).fetchone()
    if bad_img:
        out.append(f"{bad_img} empty or sizeless images")
    kinds = dict(conn.execute(
        "SELECT kind, count(*) FROM events WHERE kind IN (?, ?) GROUP BY kind", TAKEOVER_EVENTS
    ).fetchall())
    starts, ends = (kinds.get(k, 0) for k in TAKEOVER_EVENTS)
    # A takeover may run on past the episode's end, or (across episodes) start before it.
    if abs(starts - ends) > 1:
        out.append(f"takeover events unbalanced ({starts} starts, {ends} ends)")
    return out


def verify_episode(index: EpisodeIndex, entry: IndexEntry) -> EpisodeCheck:
    """sha256 against the index, SQLite's integrity check and :func:`check_structure` for one
    episode. Never raises for damage."""
    path = index.resolve(entry)
    chk = EpisodeCheck(entry.id, str(path), "ok", sha256=entry.sha256)
    if entry.status == "recording":
        chk.state = "skipped"
        chk.problems.append("still recording")
        return chk
    if entry.sha256 is None and not path.exists():
        chk.state = "skipped"
        chk.problems.append(f"no file was recorded ({entry.note or 'aborted'})")
        return chk
    rep: VerifyReport = verify(path, entry.sha256)
    chk.sha256, chk.sha256_ok, chk.steps = rep.sha256, rep.sha256_ok, rep.steps
    chk.integrity = ", ".join(rep.integrity[:3]) if rep.integrity else None
    chk.problems.extend(rep.errors)
    if rep.integrity and rep.integrity != ["ok"]:
        chk.problems.extend(rep.integrity[:3])
    if entry.sha256 is None:
        chk.problems.append("the index holds no sha256 for it")
    if path.is_file() and rep.integrity == ["ok"]:
        chk.problems.extend(check_structure(path))
    if rep.steps is not None and rep.steps != entry.steps:
        chk.problems.append(f"{rep.steps} steps in the file, {entry.steps} in the index")
    if chk.problems:
        chk.state = "damaged"
    return chk


# -- relabelling ------------------------------------------------------------------------------
def relabel(index: EpisodeIndex, entry: IndexEntry, outcome: str, *, by: str = "") -> IndexEntry:
    """Set a sealed episode's outcome to ``outcome`` and re-seal it: a copy of the file gets
    the new outcome (and a ``relabelled`` meta entry: from, by, at), is fsynced and renamed
    over the original; then the index gets the new sha256, size, outcome, status and a note.

    Refuses an episode still recording or already labelled ``outcome``
    (:class:`EpisodeStoreError`) and one whose file fails verification, since relabelling
    would bless the damage with a new hash (:class:`EpisodeDamagedError`). If the process dies
    between the rename and the index update, the file no longer matches the index; relabelling
    it again to the same outcome repairs that."""
    if outcome not in OUTCOMES:
        raise EpisodeStoreError(f"outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
    if entry.status == "recording":
        raise EpisodeStoreError(f"episode {entry.id} is still recording: label it once it is "
                                "sealed")
    if entry.outcome == outcome:
        raise EpisodeStoreError(f"episode {entry.id} is already labelled {outcome}")
    path = index.resolve(entry)
    rep = verify(path, entry.sha256)
    if not rep.ok and not _relabel_cut_short(path, rep, outcome):
        raise EpisodeDamagedError(f"episode {entry.id} is damaged ({'; '.join(rep.errors)}): "
                                  "not relabelled (`ramp-edge episodes verify`)")
    previous = entry.outcome
    at = time.time()
    tmp = path.with_name(path.name + ".relabel")
    try:
        shutil.copyfile(path, tmp)
        _write_outcome(tmp, outcome, {"from": previous, "by": by, "at": at})
        fsync_path(tmp)
        sha = sha256_file(tmp)
        size = tmp.stat().st_size
        os.replace(tmp, path)
        fsync_path(path.parent)
    except (OSError, sqlite3.Error) as err:
        raise EpisodeStoreError(f"episode {entry.id} could not be relabelled: {err}") from err
    finally:
        for sfx in ("", "-journal"):
            Path(f"{tmp}{sfx}").unlink(missing_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at))
    said = f"relabelled {previous or 'unlabelled'} -> {outcome}" + (f" by {by}" if by else "")
    note = f"{entry.note}; {said} at {stamp}" if entry.note else f"{said} at {stamp}"
    index.update(entry.id, outcome=outcome, status="aborted" if outcome == "aborted" else "sealed",
                 sha256=sha, bytes=size, note=note)
    return index.get(entry.id)


def _relabel_cut_short(path: Path, rep: VerifyReport, outcome: str) -> bool:
    """Whether a hash mismatch is that of a relabel to ``outcome`` whose process died between
    renaming the file and updating the index: an intact file already carrying that outcome."""
    if rep.sha256_ok is not False or rep.integrity != ["ok"] or rep.errors[1:]:
        return False
    try:
        with EpisodeReader(path) as ep:
            return ep.outcome == outcome and "relabelled" in ep.meta
    except _UNREADABLE:
        return False


def _write_outcome(path: Path, outcome: str, record: dict) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=FULL")
        mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
        if str(mode).lower() != "delete":
            raise sqlite3.OperationalError(f"{path}: journal mode {mode}, expected delete")
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                         [("outcome", outcome), ("relabelled", json.dumps(record))])
        conn.execute("COMMIT")
    finally:
        conn.close()
