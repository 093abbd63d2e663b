"""Where a DYNAMIXEL chain's calibration lives: a small JSON file on the host, per port.

X-series servos have no spare non-volatile memory for the protocol's calibration (offsets
and limits as float32, plus the calibration file's sha256), so the bus keeps it here and
applies it on the host exactly as firmware does (docs/PROTOCOL.md section 10). With it the
file records what identifies the chain: each servo's id, model number and the Homing_Offset
and Drive_Mode registers seen when it was written. If any of these differs later (a servo
replaced, re-addressed or reconfigured by another tool) the chain "holds no calibration" and
the robot must be calibrated or the calibration applied again.

Default location: ``$RAMP_EDGE_HOME/dynamixel/`` (else the user's data directory), one file
per port path (use a stable ``/dev/serial/by-id/...`` path); ``calibration=PATH`` on the bus
URL overrides it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_bridge import durable_files
from firmware_bridge.errors import EdgeError
from firmware_bridge.messages import Calibration

FORMAT_NAME = "ramp-edge-dynamixel-calibration"
VERSION = 1


class CalibrationStoreError(EdgeError, OSError):
    """A file of the store (calibration, e-stop latch) cannot be written or removed."""


@dataclass(frozen=True)
class ServoIdentity:
    """What must stay the same for a stored calibration to apply to a servo."""

    id: int
    model_number: int
    homing_offset_register: int
    drive_mode_register: int

    def to_dict(self) -> dict[str, int]:
        return {"id": self.id, "model_number": self.model_number,
                "homing_offset_register": self.homing_offset_register,
                "drive_mode_register": self.drive_mode_register}


def default_store_path(port: str) -> Path:
    """``<home>/dynamixel/<port path with / as _>.json``; home as ``ramp-edge`` resolves it."""
    home = os.environ.get("RAMP_EDGE_HOME")
    if home:
        base = Path(home).expanduser()
    else:
        data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
        base = Path(data) / "ramp-edge"
    name = re.sub(r"[^A-Za-z0-9._-]", "_", port.strip("/")) or "port"
    return base / "dynamixel" / f"{name}.json"


def load_calibration(path: Path, servos: tuple[ServoIdentity, ...]) -> tuple[Calibration | None,
                                                                              str]:
    """The stored calibration if it applies to ``servos``, else None; plus why not."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"no calibration stored for this chain ({path})"
    except (OSError, ValueError) as err:
        return None, f"calibration store {path} is unreadable: {err}"
    try:
        if doc.get("format") != FORMAT_NAME or doc.get("version") != VERSION:
            return None, f"{path} is not a version {VERSION} {FORMAT_NAME} file"
        stored = tuple(ServoIdentity(**s) for s in doc["servos"])
        if stored != servos:
            changed = [f"id {b.id}" for a, b in zip(stored, servos, strict=False) if a != b]
            what = ", ".join(changed) if changed and len(stored) == len(servos) else (
                f"{len(stored)} servos stored, {len(servos)} on the bus")
            return None, (f"the servos changed since the calibration was stored ({what}: model, "
                          "Homing_Offset or Drive_Mode differs)")
        cal = doc["calibration"]
        n = len(servos)
        vectors = [np.asarray(cal[k], np.float32) for k in ("homing_offset", "position_min",
                                                            "position_max")]
        sign = np.asarray(cal["drive_sign"], np.int8)
        if any(v.shape != (n,) for v in (*vectors, sign)) or not np.all(np.abs(sign) == 1):
            return None, f"{path} holds a malformed calibration"
        return Calibration(vectors[0], sign, vectors[1], vectors[2],
                           str(cal["calibration_id"])), ""
    except (KeyError, TypeError, ValueError) as err:
        return None, f"{path} holds a malformed calibration ({err})"


def save_calibration(path: Path, port: str, servos: tuple[ServoIdentity, ...],
                     calibration: Calibration) -> None:
    """Write atomically: temporary file, fsync, rename, fsync the directory.
    Raises CalibrationStoreError."""
    doc = {
        "format": FORMAT_NAME, "version": VERSION, "port": port,
        "servos": [s.to_dict() for s in servos],
        "calibration": {
            # float32 values as the float64 that holds them exactly: they round-trip
            "homing_offset": [float(x) for x in calibration.homing_offset],
            "drive_sign": [int(x) for x in calibration.drive_sign],
            "position_min": [float(x) for x in calibration.position_min],
            "position_max": [float(x) for x in calibration.position_max],
            "calibration_id": calibration.calibration_id,
        },
    }
    write_atomically(path, json.dumps(doc, indent=1), "the servo calibration")


def write_atomically(path: Path, text: str, what: str) -> None:
    """Write ``text`` to ``path``: temporary file, fsync, rename, fsync the directory.
    Raises CalibrationStoreError naming ``what``."""
    try:
        durable_files.write_atomically(path, text)
    except OSError as err:
        raise CalibrationStoreError(f"cannot store {what} at {path}: "
                                    f"{err.strerror or err}") from err


def fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable. Raises OSError."""
    durable_files.fsync_path(directory)
