"""Where a DYNAMIXEL chain's e-stop latch lives while it is set: a small JSON file beside the
chain's calibration store (``<store>.estop.json``).

Firmware keeps an e-stop latched across a host restart; servos have no such latch, so the bus
writes this file when the e-stop latches, reads it at connect (the chain then reports ESTOP
until the latch is cleared) and removes it when the latch is cleared. A file that exists but
cannot be read counts as latched: the latch fails safe.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from firmware_bridge.dynamixel.calibration_store import (
    CalibrationStoreError,
    fsync_directory,
    write_atomically,
)

FORMAT_NAME = "ramp-edge-dynamixel-estop-latch"


def latch_path(calibration_path: Path) -> Path:
    """The latch file that belongs to the calibration store at ``calibration_path``."""
    return calibration_path.with_name(f"{calibration_path.stem}.estop.json")


def save_latch(path: Path, port: str, reason: str) -> None:
    """Record the latch atomically. Raises CalibrationStoreError."""
    doc = {"format": FORMAT_NAME, "port": port, "reason": reason,
           "latched_at_unix_s": round(time.time(), 3)}
    write_atomically(path, json.dumps(doc, indent=1), "the e-stop latch")


def load_latch(path: Path) -> str | None:
    """Why the chain is latched (the stored reason), or None if no latch is stored."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        return f"an e-stop latch file that cannot be read ({path}: {err})"
    reason = doc.get("reason") if isinstance(doc, dict) else None
    return str(reason) if reason else f"an e-stop latch stored in {path}"


def clear_latch(path: Path) -> None:
    """Remove the latch (durably). Raises CalibrationStoreError."""
    try:
        path.unlink(missing_ok=True)
        fsync_directory(path.parent)
    except FileNotFoundError:
        return  # no directory: nothing was ever latched
    except OSError as err:
        raise CalibrationStoreError(f"cannot remove the e-stop latch {path}: "
                                    f"{err.strerror or err}") from err
