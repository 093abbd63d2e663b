"""Checkpoints written atomically, so an interrupted run (kill -9, power cut) resumes from the
last complete one: temporary file beside the target, fsync, ``os.replace``, fsync the
directory. Only rank 0 writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from models.training.config import TrainingError

__all__ = ["load_checkpoint", "save_atomic"]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
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
