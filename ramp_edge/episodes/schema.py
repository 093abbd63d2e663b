"""SQLite schemas of an episode file and of the robot-level index, versioned with
``PRAGMA user_version`` so readers can refuse files newer than they understand.

Episode file (one per episode):

- ``meta(key, value)``: instruction, operator, robot id, calibration and bundle hashes, software
  version, outcome, wall-clock start/end (unix s) and the monotonic time at start.
- ``steps``: one row per control step. ``id`` is the recorder's step sequence number (from 1).
  Times are ``time.monotonic`` s: ``t_s`` the step's deadline, ``t_sent_s`` when its setpoint
  left. ``position``/``velocity``/``command`` are little-endian float32 blobs in the robot's
  joint order (rad, rad/s, rad); NULL position/velocity means the device did not answer.
  ``interventions`` holds ``safety.Intervention`` flags; ``transition=1`` marks steps near a
  takeover boundary that training should drop; ``crc`` is the row's CRC-32
  (:mod:`ramp_edge.episodes.row_check`), so salvage and verify can spot a garbled row.
- ``images``: JPEG frames with camera name, capture time and the newest step id at arrival
  (and a ``crc`` like steps).
- ``events``: takeover start/end, faults, e-stop, bundle swaps, budget stop.
"""

from __future__ import annotations

import sqlite3

EPISODE_SCHEMA_VERSION = 2  # 2: per-row crc (row_check.py)
INDEX_SCHEMA_VERSION = 1

CONTROL_SOURCES = ("policy", "human", "hold", "ramp", "stop")
OUTCOMES = ("success", "failure", "aborted")
STATUSES = ("recording", "sealed", "aborted")
TAKEOVER_EVENTS = ("takeover_start", "takeover_end")

META_KEYS = (
    "episode_id", "instruction", "operator", "robot_id", "calibration_hash", "bundle_hash",
    "software_version", "outcome", "started_at", "ended_at", "t0_monotonic_s", "joint_count",
    "task", "joint_names",
)

EPISODE_DDL = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT
);
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY,
    t_s REAL NOT NULL,
    t_sent_s REAL NOT NULL,
    state_t_s REAL,
    position BLOB,
    velocity BLOB,
    command BLOB NOT NULL,
    source TEXT NOT NULL,
    chunk_id INTEGER,
    value REAL,
    advantage INTEGER NOT NULL DEFAULT 1,
    interventions INTEGER NOT NULL DEFAULT 0,
    transition INTEGER NOT NULL DEFAULT 0,
    crc INTEGER
);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    camera TEXT NOT NULL,
    t_capture_s REAL NOT NULL,
    step_id INTEGER,
    format TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    data BLOB NOT NULL,
    crc INTEGER
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    t_s REAL NOT NULL,
    step_id INTEGER,
    kind TEXT NOT NULL,
    detail TEXT
);
"""

INDEX_DDL = """
CREATE TABLE IF NOT EXISTS episodes (
    id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('recording', 'sealed', 'aborted')),
    sha256 TEXT,
    outcome TEXT,
    instruction TEXT,
    operator TEXT,
    robot_id TEXT,
    calibration_hash TEXT,
    bundle_hash TEXT,
    software_version TEXT,
    steps INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER,
    started_at REAL,
    ended_at REAL,
    note TEXT
);
"""

INDEX_COLUMNS = (
    "id", "path", "status", "sha256", "outcome", "instruction", "operator", "robot_id",
    "calibration_hash", "bundle_hash", "software_version", "steps", "bytes", "started_at",
    "ended_at", "note",
)


def _run_ddl(conn: sqlite3.Connection, ddl: str) -> None:
    # Statement by statement: executescript() would commit the caller's open transaction.
    for stmt in ddl.split(";"):
        if stmt.strip():
            conn.execute(stmt)


def create_episode_schema(conn: sqlite3.Connection) -> None:
    _run_ddl(conn, EPISODE_DDL)
    conn.execute(f"PRAGMA user_version = {EPISODE_SCHEMA_VERSION}")


def create_index_schema(conn: sqlite3.Connection) -> None:
    _run_ddl(conn, INDEX_DDL)
    conn.execute(f"PRAGMA user_version = {INDEX_SCHEMA_VERSION}")
