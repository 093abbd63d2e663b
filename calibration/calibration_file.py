"""The calibration file: one JSON file per robot id, versioned, with its sha256, written
atomically.

Layout (``HOME/calibration/ROBOT_ID.json``)::

    {
      "format": "ramp-edge-calibration",
      "version": 1,
      "robot_id": "emulated-arm",
      "sha256": "9f2c...",                       # of the canonical content, see below
      "joints": [
        {"name": "shoulder_pan", "unit": "rad", "homing_offset": 0.0123, "drive_sign": 1,
         "position_min": -2.61, "position_max": 2.58},
        ...
      ],
      "created_at": "2025-01-31T10:02:03Z",
      "technician": "ana",
      "device": {"device_id": "emu-0", "firmware_version": "emulator-1.0", ...},
      "verified": {"at": "2025-01-31T10:05:40Z", "by": "ana", "peak_tool_speed_m_s": 0.21},
      "procedure": {"reference_pose": {...}, ...}
    }

Units: ``homing_offset`` in raw motor coordinates, ``position_min``/``position_max`` in user
coordinates (what the motor controller reports: ``user = drive_sign * (raw - homing_offset)``);
rad for revolute joints, m for prismatic ones (the gripper). Values are rounded to 1e-6 (1 µrad,
1 µm): the device stores float32.

``sha256`` covers the content the motor controller holds plus the robot id and joint names:
``{"format", "version", "robot_id", "joints"}`` as canonical JSON (sorted keys, no spaces). It
is what the device stores as ``calibration_id`` and what episodes record, so the metadata
(``verified``, ``technician`` ...) can change without the device needing a rewrite.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibration.errors import CalibrationFileError, CalibrationMissingError, WrongRobotError
from firmware_bridge.durable_files import write_atomically
from firmware_bridge.messages import Calibration

FORMAT_NAME = "ramp-edge-calibration"
FORMAT_VERSION = 1
UNITS = ("rad", "m")
DECIMALS = 6

# What a homing offset may be, per unit. Revolute: half a turn either way, what encoders that
# store a signed offset register represent (e.g. +-2047 ticks of a 4096-tick turn); an offset
# beyond it means the joint was not in its reference pose or its horn is mounted a turn off.
# Prismatic: 0.1 m, beyond the stroke of any gripper or axis this project drives.
MAX_HOMING_OFFSET: Mapping[str, float] = {"rad": math.pi, "m": 0.1}

_ROBOT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_JOINT_KEYS = ("name", "unit", "homing_offset", "drive_sign", "position_min", "position_max")
_TOP_KEYS = ("format", "version", "robot_id", "sha256", "joints", "created_at", "technician",
             "device", "verified", "procedure")


def utc_now() -> str:
    """The current UTC time as ISO 8601 with a Z, to the second."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _round(x: float) -> float:
    value = round(float(x), DECIMALS)
    return 0.0 if value == 0 else value  # no "-0.0" in files


@dataclass(frozen=True)
class JointCalibration:
    """One joint: ``homing_offset`` (raw units), ``drive_sign`` (+1/-1), calibrated range
    ``position_min`` < ``position_max`` (user units)."""

    name: str
    unit: str
    homing_offset: float
    drive_sign: int
    position_min: float
    position_max: float

    def rounded(self) -> JointCalibration:
        return dataclasses.replace(
            self, homing_offset=_round(self.homing_offset), drive_sign=int(self.drive_sign),
            position_min=_round(self.position_min), position_max=_round(self.position_max))

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _JOINT_KEYS}


@dataclass(frozen=True)
class CalibrationFile:
    """A robot's calibration and how it was made. Build with :meth:`create` (rounds values);
    read with :func:`load_calibration`; write with :func:`save_calibration`."""

    robot_id: str
    joints: tuple[JointCalibration, ...]
    created_at: str = field(default_factory=utc_now)
    technician: str = ""
    device: Mapping[str, Any] = field(default_factory=dict)
    verified: Mapping[str, Any] | None = None
    procedure: Mapping[str, Any] = field(default_factory=dict)
    version: int = FORMAT_VERSION

    @classmethod
    def create(cls, robot_id: str, joints: Sequence[JointCalibration], **meta: Any
               ) -> CalibrationFile:
        """A new calibration with values rounded as stored; checked like a loaded file."""
        cal = cls(robot_id, tuple(j.rounded() for j in joints), **meta)
        _check_content(cal, "calibration")
        return cal

    # -- identity -------------------------------------------------------------------------
    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    def content(self) -> dict[str, Any]:
        """What the hash covers."""
        return {"format": FORMAT_NAME, "version": self.version, "robot_id": self.robot_id,
                "joints": [j.to_dict() for j in self.joints]}

    @property
    def sha256(self) -> str:
        canonical = json.dumps(self.content(), sort_keys=True, separators=(",", ":"),
                               allow_nan=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    # -- conversions ----------------------------------------------------------------------
    def vectors(self) -> dict[str, np.ndarray]:
        """Per-joint vectors in joint order (float64; drive_sign int8)."""
        return {
            "homing_offset": np.array([j.homing_offset for j in self.joints], np.float64),
            "drive_sign": np.array([j.drive_sign for j in self.joints], np.int8),
            "position_min": np.array([j.position_min for j in self.joints], np.float64),
            "position_max": np.array([j.position_max for j in self.joints], np.float64),
        }

    def to_message(self) -> Calibration:
        """The calibration as the motor controller stores it, ``calibration_id`` = sha256."""
        v = self.vectors()
        return Calibration(v["homing_offset"].astype(np.float32), v["drive_sign"],
                           v["position_min"].astype(np.float32),
                           v["position_max"].astype(np.float32), self.sha256)

    def with_verification(self, **verified: Any) -> CalibrationFile:
        """The same calibration (same sha256) marked verified: ``at`` defaults to now."""
        verified.setdefault("at", utc_now())
        return dataclasses.replace(self, verified=dict(verified))

    def to_json(self) -> str:
        """The file's text: stable key order, one joint per line."""
        def dump(value: Any) -> str:
            return json.dumps(value, sort_keys=False, allow_nan=False)

        lines = ["{",
                 f'  "format": {dump(FORMAT_NAME)},',
                 f'  "version": {self.version},',
                 f'  "robot_id": {dump(self.robot_id)},',
                 f'  "sha256": {dump(self.sha256)},',
                 '  "joints": [']
        for i, j in enumerate(self.joints):
            lines.append(f"    {dump(j.to_dict())}{',' if i < len(self.joints) - 1 else ''}")
        lines += ["  ],",
                  f'  "created_at": {dump(self.created_at)},',
                  f'  "technician": {dump(self.technician)},',
                  f'  "device": {dump(dict(self.device))},',
                  f'  "verified": {dump(None if self.verified is None else dict(self.verified))},',
                  f'  "procedure": {dump(dict(self.procedure))}',
                  "}"]
        return "\n".join(lines) + "\n"


def calibration_path(home: str | os.PathLike[str], robot_id: str) -> Path:
    """Where robot ``robot_id``'s calibration lives under the home directory."""
    _check_robot_id(robot_id, "robot_id")
    return Path(home) / "calibration" / f"{robot_id}.json"


def previous_path(path: Path) -> Path:
    """Where :func:`save_calibration` keeps the file it replaced."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


# -- reading ----------------------------------------------------------------------------------
class _Bad(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")


def _check_robot_id(value: Any, key: str) -> str:
    if not isinstance(value, str) or not _ROBOT_ID.match(value):
        raise CalibrationFileError(
            f"{key}: {value!r} is not a robot id (letters, digits, '.', '_', '-'; 1-128 chars)")
    return value


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(key, f"expected a number, got {value!r}")
    if not math.isfinite(value):
        raise _Bad(key, f"expected a finite number, got {value!r}")
    return float(value)


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise _Bad(key, f"expected a string, got {value!r}")
    return value


def _table(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(key, f"expected an object, got {type(value).__name__}")
    return value


def _joint(value: Any, key: str) -> JointCalibration:
    data = _table(value, key)
    for k in _JOINT_KEYS:
        if k not in data:
            raise _Bad(f"{key}.{k}", "missing")
    unknown = sorted(set(data) - set(_JOINT_KEYS))
    if unknown:
        raise _Bad(f"{key}.{unknown[0]}", "unknown key")
    name = _string(data["name"], f"{key}.name")
    if not name:
        raise _Bad(f"{key}.name", "must not be empty")
    unit = _string(data["unit"], f"{key}.unit")
    if unit not in UNITS:
        raise _Bad(f"{key}.unit", f"expected 'rad' or 'm', got {unit!r}")
    sign = data["drive_sign"]
    if isinstance(sign, bool) or sign not in (1, -1) or not isinstance(sign, int):
        raise _Bad(f"{key}.drive_sign", f"expected 1 or -1, got {sign!r}")
    return JointCalibration(name, unit, _number(data["homing_offset"], f"{key}.homing_offset"),
                            sign, _number(data["position_min"], f"{key}.position_min"),
                            _number(data["position_max"], f"{key}.position_max"))


def _check_content(cal: CalibrationFile, where: str) -> None:
    """Rules beyond types: names unique, min < max, offsets representable."""
    try:
        if not cal.joints:
            raise _Bad("joints", "at least one joint is needed")
        seen: set[str] = set()
        for i, j in enumerate(cal.joints):
            key = f"joints[{i}]"
            if j.name in seen:
                raise _Bad(f"{key}.name", f"joint {j.name!r} appears twice")
            seen.add(j.name)
            if j.unit not in UNITS:
                raise _Bad(f"{key}.unit", f"expected 'rad' or 'm', got {j.unit!r}")
            if j.drive_sign not in (1, -1):
                raise _Bad(f"{key}.drive_sign", f"expected 1 or -1, got {j.drive_sign!r}")
            values = (j.homing_offset, j.position_min, j.position_max)
            if not all(math.isfinite(v) for v in values):
                raise _Bad(key, "values must be finite numbers")
            if not j.position_min < j.position_max:
                raise _Bad(f"{key}.position_min", f"{j.position_min:g} is not below "
                           f"position_max {j.position_max:g}")
            limit = MAX_HOMING_OFFSET[j.unit]
            if abs(j.homing_offset) > limit:
                raise _Bad(f"{key}.homing_offset", f"{j.homing_offset:g} {j.unit} is outside "
                           f"the representable +-{limit:.4g} {j.unit}")
    except _Bad as err:
        raise CalibrationFileError(f"{where}: {err}") from None


def parse_calibration(text: str, source: str = "<text>") -> CalibrationFile:
    """Parse and check a calibration file's text. Raises CalibrationFileError naming
    ``source`` and the key (including a sha256 that does not match the contents)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        stripped = text.rstrip()
        hint = " (truncated?)" if not stripped or err.pos >= len(stripped) - 1 else ""
        raise CalibrationFileError(f"calibration file {source}: not valid JSON{hint}: "
                                   f"{err}") from err
    try:
        top = _table(data, "top level")
        for k in ("format", "version", "robot_id", "sha256", "joints"):
            if k not in top:
                raise _Bad(k, "missing")
        unknown = sorted(set(top) - set(_TOP_KEYS))
        if unknown:
            raise _Bad(unknown[0], "unknown key")
        if top["format"] != FORMAT_NAME:
            raise _Bad("format", f"expected {FORMAT_NAME!r}, got {top['format']!r} (not a "
                       "ramp-edge calibration file)")
        version = top["version"]
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise _Bad("version", f"expected a positive integer, got {version!r}")
        if version > FORMAT_VERSION:
            raise _Bad("version", f"{version} was written by a newer ramp-edge (this one reads "
                       f"up to {FORMAT_VERSION}): upgrade ramp-edge")
        try:
            robot_id = _check_robot_id(top["robot_id"], "robot_id")
        except CalibrationFileError as err:
            raise _Bad("robot_id", str(err).split(": ", 1)[1]) from None
        sha = _string(top["sha256"], "sha256")
        if not _HEX64.match(sha):
            raise _Bad("sha256", "expected 64 lowercase hex digits")
        joints_raw = top["joints"]
        if not isinstance(joints_raw, list):
            raise _Bad("joints", "expected an array")
        joints = tuple(_joint(j, f"joints[{i}]") for i, j in enumerate(joints_raw))
        verified = top.get("verified")
        if verified is not None:
            verified = _table(verified, "verified")
        cal = CalibrationFile(
            robot_id=robot_id,
            joints=joints,
            created_at=_string(top.get("created_at", ""), "created_at"),
            technician=_string(top.get("technician", ""), "technician"),
            device=_table(top.get("device", {}), "device"),
            verified=verified,
            procedure=_table(top.get("procedure", {}), "procedure"),
            version=version,
        )
    except _Bad as err:
        raise CalibrationFileError(f"calibration file {source}: {err}") from None
    _check_content(cal, f"calibration file {source}")
    if cal.sha256 != sha:
        raise CalibrationFileError(
            f"calibration file {source}: sha256 does not match the contents (edited by hand or "
            f"damaged; file says {sha[:12]}..., contents hash to {cal.sha256[:12]}...): re-run "
            "`ramp-edge calibrate run`, or restore the previous file")
    return cal


def load_calibration(path: str | os.PathLike[str], robot_id: str | None = None
                     ) -> CalibrationFile:
    """Read and check the calibration at ``path``; with ``robot_id``, also that it is this
    robot's. Raises CalibrationMissingError (no file), CalibrationFileError (unreadable,
    malformed, hash mismatch), WrongRobotError (another robot's)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise CalibrationMissingError(
            f"no calibration file at {p}: calibrate the robot first (`ramp-edge calibrate run`)"
        ) from None
    except OSError as err:
        raise CalibrationFileError(f"cannot read calibration file {p}: {err.strerror}") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CalibrationFileError(f"calibration file {p}: not UTF-8 text") from err
    cal = parse_calibration(text, str(p))
    if robot_id is not None and cal.robot_id != robot_id:
        raise WrongRobotError(
            f"calibration file {p} is for robot {cal.robot_id!r}, not {robot_id!r}: use this "
            "robot's file or calibrate it (`ramp-edge calibrate run`)")
    return cal


# -- writing ----------------------------------------------------------------------------------
def atomic_write_text(path: str | os.PathLike[str], text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` atomically: a temporary file beside it, fsync, os.replace,
    fsync the directory. A crash leaves the old file or the new one, never a mix. Creates the
    directory if missing. Raises OSError."""
    write_atomically(path, text, mode)


def _same_content(text: str, cal: CalibrationFile) -> bool:
    """True if ``text`` is a calibration with ``cal``'s content (only metadata differs)."""
    try:
        return parse_calibration(text).sha256 == cal.sha256
    except CalibrationFileError:
        return False


def save_calibration(cal: CalibrationFile, path: str | os.PathLike[str]) -> Path:
    """Write ``cal`` to ``path`` atomically. A file already there with another calibration is
    first kept as ``NAME.prev.json`` (also atomically), so a technician can diff or go back; one
    that differs only in metadata (the verification mark) is not. Returns the path.
    Raises CalibrationFileError if the file cannot be written."""
    p = Path(path)
    text = cal.to_json()
    try:
        try:
            old = p.read_text("utf-8")
        except (FileNotFoundError, UnicodeDecodeError):
            old = None
        if old is not None and old != text and not _same_content(old, cal):
            atomic_write_text(previous_path(p), old)
        atomic_write_text(p, text)
    except OSError as err:
        raise CalibrationFileError(f"cannot write calibration file {p}: "
                                   f"{err.strerror or err}") from err
    return p


# -- comparing --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Difference:
    """One field that differs between two calibrations (``joint`` None: not per joint)."""

    joint: str | None
    key: str
    a: Any
    b: Any

    def describe(self, a_name: str = "a", b_name: str = "b") -> str:
        where = f"{self.joint}.{self.key}" if self.joint else self.key

        def show(v: Any) -> str:
            return f"{v:+.6f}" if isinstance(v, float) else repr(v)

        return f"{where}: {a_name} {show(self.a)}, {b_name} {show(self.b)}"


# Agreement between the file and the device: the device stores float32 (7 significant digits).
VALUE_ATOL = 1e-5


def diff_joints(a: Sequence[JointCalibration], b: Sequence[JointCalibration],
                atol: float = VALUE_ATOL) -> list[Difference]:
    """Per-joint differences of two calibrations, joints matched by position (names checked).
    Values within ``atol`` are equal (float32 round trips)."""
    out: list[Difference] = []
    names_a, names_b = [j.name for j in a], [j.name for j in b]
    if names_a != names_b:
        out.append(Difference(None, "joints", names_a, names_b))
        if len(names_a) != len(names_b):
            return out
    for ja, jb in zip(a, b, strict=True):
        if ja.drive_sign != jb.drive_sign:
            out.append(Difference(ja.name, "drive_sign", ja.drive_sign, jb.drive_sign))
        for f in ("homing_offset", "position_min", "position_max"):
            va, vb = float(getattr(ja, f)), float(getattr(jb, f))
            if not abs(va - vb) <= atol:
                out.append(Difference(ja.name, f, va, vb))
    return out


def joints_from_message(msg: Calibration, names: Sequence[str], units: Sequence[str]
                        ) -> tuple[JointCalibration, ...]:
    """The device's calibration as per-joint records (values as float64 of its float32)."""
    n = len(msg.homing_offset)
    if len(names) != n or len(units) != n:
        raise CalibrationFileError(f"the device's calibration has {n} joints, expected "
                                   f"{len(names)}")
    return tuple(
        JointCalibration(names[i], units[i], float(msg.homing_offset[i]), int(msg.drive_sign[i]),
                         float(msg.position_min[i]), float(msg.position_max[i]))
        for i in range(n))
