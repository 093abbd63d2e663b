"""Checkpoints written atomically, so an interrupted run (kill -9, power cut) resumes from the
last complete one: temporary file beside the target, fsync, ``os.replace``, fsync the
directory. Only rank 0 writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from firmware_bridge.durable_files import atomic_writer
from models.training.config import TrainingError

__all__ = ["load_checkpoint", "save_atomic"]


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; returns the path."""
    path = Path(path)
    with atomic_writer(path) as f:
        torch.save(obj, f)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None when there is none. Raises TrainingError when the
    file exists but cannot be read."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a torn file cannot happen with save_atomic; say so plainly
        raise TrainingError(f"checkpoint {path} cannot be read: {err}") from err
