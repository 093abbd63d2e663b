"""Sealing, verification, recovery and salvage of episode files.

Sealing: final commit, transitions marked, ``PRAGMA wal_checkpoint(TRUNCATE)``, switch to
``journal_mode=DELETE`` (one self-contained file), fsync the file and its directory, sha256.
A sealed file is only ever opened read-only afterwards, so its hash stays valid.

Recovery on start-up: an episode the index still lists as ``recording`` (crash, kill -9,
power cut) is opened (SQLite replays its WAL: every committed transaction is kept) and sealed
as ``aborted``. A file SQLite cannot open or whose integrity check fails is salvaged row by
row into a new file; the damaged original is kept beside it (``.damaged``).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from firmware_bridge.durable_files import fsync_path, sha256_file
from ramp_edge.episodes.row_check import IMAGE_CRC_COLS, STEP_CRC_COLS, row_crc
from ramp_edge.episodes.schema import OUTCOMES, TAKEOVER_EVENTS, create_episode_schema


@dataclass(frozen=True)
class SealResult:
    sha256: str
    steps: int
    bytes: int
    outcome: str
    started_at: float | None
    ended_at: float | None


@dataclass
class VerifyReport:
    """What :func:`verify` found. ``ok`` only if the file opens, the hash matches (when one was
    expected) and ``PRAGMA integrity_check`` says ok."""

    path: str
    ok: bool = False
    sha256: str | None = None
    sha256_ok: bool | None = None
    integrity: list[str] = field(default_factory=list)
    steps: int | None = None
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.ok:
            return f"{self.path}: ok ({self.steps} steps)"
        return f"{self.path}: DAMAGED: " + "; ".join(self.errors + self.integrity[:3])


@dataclass
class SalvageReport:
    steps: int = 0
    images: int = 0
    events: int = 0
    unreadable: int = 0  # ids (or ranges) SQLite could not read
    garbled: int = 0  # rows SQLite read whose checksum does not match: dropped
    errors: list[str] = field(default_factory=list)


def _meta(conn: sqlite3.Connection) -> dict[str, str | None]:
    return dict(conn.execute("SELECT key, value FROM meta").fetchall())


def _float(v: str | None) -> float | None:
    try:
        return None if v is None else float(v)
    except ValueError:
        return None


def mark_transitions(conn: sqlite3.Connection, window_s: float) -> int:
    """Set ``transition=1`` on steps within ``window_s`` of every takeover event at which
    control passed between the policy and a person: a ``takeover_start`` after a step the
    policy commanded, a ``takeover_end`` before one. A demonstration (a person in control from
    the first step to the last) has takeover events with no policy on the other side; its first
    and last steps are plain human steps, and dropping them would leave a policy that never saw
    the start of a task. Returns the number of steps marked."""
    start, end = TAKEOVER_EVENTS
    first, last = conn.execute(
        "SELECT min(t_s), max(t_s) FROM steps WHERE source = 'policy'").fetchone()
    times = [t for kind, t in conn.execute(
        "SELECT kind, t_s FROM events WHERE kind IN (?, ?)", (start, end))
        if first is not None and (first < t if kind == start else last > t)]
    # Recording marks every takeover's window as it goes (conservative, and what a crash
    # leaves); the seal decides the final flags.
    conn.execute("UPDATE steps SET transition = 0 WHERE transition != 0")
    for t in times:
        conn.execute("UPDATE steps SET transition = 1 WHERE t_s BETWEEN ? AND ?",
                     (t - window_s, t + window_s))
    return conn.execute("SELECT count(*) FROM steps WHERE transition = 1").fetchone()[0]


_SEAL_WAIT_S = 10.0


def _leave_wal(conn: sqlite3.Connection, path: Path) -> None:
    """Checkpoint the WAL into the file and switch to ``journal_mode=DELETE``. A reader that
    has the file open (``ramp-edge episodes show`` on a live episode) blocks both for as long as
    it reads: retry for up to ``_SEAL_WAIT_S`` before giving up (recovery finishes the seal at
    the next start then)."""
    deadline = time.monotonic() + _SEAL_WAIT_S
    while True:
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:
                raise sqlite3.OperationalError("WAL checkpoint blocked by another reader")
            mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
            if str(mode).lower() != "delete":
                raise sqlite3.OperationalError(f"could not leave WAL mode ({mode})")
            return
        except sqlite3.OperationalError as err:
            if time.monotonic() >= deadline:
                raise sqlite3.OperationalError(f"{path}: {err}") from err
            time.sleep(0.05)


def seal_file(path: str | Path, outcome: str, *, transition_window_s: float = 0.5) -> SealResult:
    """Seal one closed episode file (no other connection open on it). Raises
    ``sqlite3.DatabaseError`` if SQLite cannot read it (callers salvage then)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
    path = Path(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("BEGIN IMMEDIATE")
        meta = _meta(conn)
        steps, _t_first, t_last = conn.execute(
            "SELECT count(*), min(t_s), max(t_s) FROM steps").fetchone()
        started = _float(meta.get("started_at"))
        t0 = _float(meta.get("t0_monotonic_s"))
        ended = _float(meta.get("ended_at"))
        if ended is None:
            # After a crash the last step's deadline is the best end time there is.
            ended = (started + (t_last - t0) if None not in (started, t0, t_last)
                     else time.time())
        for k, v in (("outcome", outcome), ("ended_at", ended)):
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (k, str(v)))
        mark_transitions(conn, transition_window_s)
        conn.execute("COMMIT")
        _leave_wal(conn, path)
    finally:
        conn.close()
    fsync_path(path)
    fsync_path(path.parent)
    return SealResult(sha256_file(path), int(steps), path.stat().st_size, outcome,
                      started, ended)


def _open_ro(path: Path, *, lenient: bool = False) -> sqlite3.Connection:
    # immutable=1: never write, never look for a WAL, never lock: the right way to read a
    # sealed file (and a damaged one) without changing a byte of it.
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    if lenient:
        # A truncated file is shorter than its header says; SQLite then refuses to read any
        # page unless writable_schema is on (harmless on a read-only, immutable connection).
        conn.execute("PRAGMA writable_schema=ON")
    return conn


def verify(path: str | Path, expected_sha256: str | None = None) -> VerifyReport:
    """Check a sealed episode file: sha256 against ``expected_sha256`` (if given) and SQLite's
    ``integrity_check``. Never raises for a damaged or missing file: the report says what is
    wrong."""
    path = Path(path)
    rep = VerifyReport(str(path))
    if not path.is_file():
        rep.errors.append("file missing")
        return rep
    rep.sha256 = sha256_file(path)
    if expected_sha256 is not None:
        rep.sha256_ok = rep.sha256 == expected_sha256
        if not rep.sha256_ok:
            rep.errors.append(f"sha256 mismatch (index {expected_sha256[:12]}…, "
                              f"file {rep.sha256[:12]}…)")
    try:
        conn = _open_ro(path)
        try:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
            rep.integrity = [str(r[0]) for r in rows]
            rep.steps = int(conn.execute("SELECT count(*) FROM steps").fetchone()[0])
            if rep.integrity == ["ok"]:
                for table, cols in (("steps", STEP_CRC_COLS), ("images", IMAGE_CRC_COLS)):
                    bad = _bad_crc_rows(conn, table, cols)
                    if bad:
                        rep.errors.append(f"{bad} {table} row(s) fail their checksum")
        finally:
            conn.close()
    except sqlite3.Error as err:
        rep.errors.append(f"sqlite: {err}")
    integrity_ok = rep.integrity == ["ok"]
    if rep.integrity and not integrity_ok:
        rep.errors.append("integrity_check failed")
    rep.ok = integrity_ok and rep.sha256_ok is not False and not rep.errors
    return rep


_PROBE_PAST_END = 4096


def _has_crc(conn: sqlite3.Connection, table: str) -> bool:
    """Whether ``table`` has the per-row ``crc`` column (schema 2 on)."""
    try:
        conn.execute(f"SELECT crc FROM {table} LIMIT 0")
    except sqlite3.OperationalError as err:
        if "no such column" in str(err):
            return False
        raise
    return True


def _bad_crc_rows(conn: sqlite3.Connection, table: str, cols: tuple[str, ...]) -> int:
    if not _has_crc(conn, table):
        return 0
    bad = 0
    for row in conn.execute(f"SELECT {', '.join(cols)}, crc FROM {table}"):
        if row[-1] is not None and row_crc(row[:-1]) != row[-1]:
            bad += 1
    return bad


def _copy_table(src: sqlite3.Connection, dst: sqlite3.Connection, table: str, cols: str,
                hint_max: int | None, rep: SalvageReport,
                crc_cols: tuple[str, ...] | None = None) -> int:
    """Copy rows of ``table`` that SQLite can read, probing id by id: a damaged page then
    loses only its own rows when the tree above it is intact (a full scan would stop at the
    first bad page, or silently skip a subtree). With ``crc_cols`` (the last of ``cols`` being
    ``crc``), a row whose checksum does not match is dropped and counted as garbled. Returns
    the number of rows copied."""
    names = [c.strip() for c in cols.split(",")]
    crc_idx = [names.index(c) for c in crc_cols] if crc_cols else None
    if crc_idx is not None:
        try:
            has = _has_crc(src, table)
        except sqlite3.Error:
            has = True  # cannot tell: assume the current schema
        if not has:  # an older file: copy without checksums
            names, crc_idx = names[:-1], None
            cols = ", ".join(names)
    marks = ", ".join("?" for _ in cols.split(","))
    ins = f"INSERT OR IGNORE INTO {table} ({cols}) VALUES ({marks})"
    hi = hint_max or 0
    with contextlib.suppress(sqlite3.Error):
        hi = max(hi, int(src.execute(f"SELECT max(id) FROM {table}").fetchone()[0] or 0))
    # Ids are dense from 1; past the last known id keep probing until a long run of misses,
    # since a damaged file may not be able to say its own maximum.
    n = misses = pending_errors = 0
    i = 0
    while i < hi or misses < _PROBE_PAST_END:
        i += 1
        try:
            row = src.execute(f"SELECT {cols} FROM {table} WHERE id = ?", (i,)).fetchone()
        except sqlite3.Error:
            row = None
            pending_errors += 1
        if row is None:
            misses += 1
            continue
        rep.unreadable += pending_errors  # errors between readable rows: rows lost to damage
        misses = pending_errors = 0
        if (crc_idx is not None and row[-1] is not None
                and row_crc([row[k] for k in crc_idx]) != row[-1]):
            rep.garbled += 1
            continue
        n += dst.execute(ins, row).rowcount  # 0: garbage that breaks a NOT NULL, skipped
    return n


STEP_COLS = ("id, t_s, t_sent_s, state_t_s, position, velocity, command, source, chunk_id, "
             "value, advantage, interventions, transition, crc")
IMAGE_COLS = "id, camera, t_capture_s, step_id, format, width, height, data, crc"
EVENT_COLS = "id, t_s, step_id, kind, detail"


def salvage(src_path: str | Path, dst_path: str | Path, *,
            step_hint: int | None = None) -> SalvageReport:
    """Copy every row SQLite can still read from a damaged episode file into a new file
    ``dst_path`` (left in WAL mode, ready to be sealed). ``step_hint``: the highest step id
    expected (from the index), used when the file cannot even say its own maximum. Never
    raises for damage in ``src_path``."""
    src_path, dst_path = Path(src_path), Path(dst_path)
    rep = SalvageReport()
    dst = sqlite3.connect(dst_path, isolation_level=None)
    try:
        dst.execute("PRAGMA journal_mode=WAL")
        dst.execute("BEGIN")
        create_episode_schema(dst)
        try:
            src = _open_ro(src_path, lenient=True)
        except sqlite3.Error as err:
            rep.errors.append(f"cannot open: {err}")
            dst.execute("COMMIT")
            return rep
        try:
            try:
                dst.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                src.execute("SELECT key, value FROM meta").fetchall())
            except sqlite3.Error as err:
                rep.errors.append(f"meta: {err}")
            rep.steps = _copy_table(src, dst, "steps", STEP_COLS, step_hint, rep,
                                    STEP_CRC_COLS)
            rep.images = _copy_table(src, dst, "images", IMAGE_COLS, None, rep, IMAGE_CRC_COLS)
            rep.events = _copy_table(src, dst, "events", EVENT_COLS, None, rep)
        finally:
            src.close()
        dst.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('salvaged_from', ?)",
                    (src_path.name,))
        dst.execute("COMMIT")
    finally:
        dst.close()
    return rep


def file_is_healthy(path: Path) -> bool:
    """Whether SQLite opens ``path`` (replaying its WAL) and finds it intact."""
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            return conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        finally:
            conn.close()
    except sqlite3.Error:
        return False
