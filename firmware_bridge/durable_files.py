"""Files that survive a crash or a power cut: atomic replacement (a temporary file beside the
target, fsync, rename, fsync of the directory), fsync by path, and content hashes. Calibration,
episodes, bundles, keys, checkpoints and the servo stores all write through these;
``firmware_bridge`` depends on nothing else of ours, so every package may import it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def fsync_path(path: str | os.PathLike[str]) -> None:
    """fsync a file or a directory by path (a directory: to make a rename or unlink in it
    durable). Raises OSError."""
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0)
                                      if os.path.isdir(path) else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's content, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: int = 0o644, *,
                  text: bool = False, encoding: str = "utf-8") -> Iterator[IO[Any]]:
    """Write ``path`` through the yielded file: it replaces ``path`` only when the block ends
    without an exception (after an fsync), and the rename is made durable; a crash leaves the
    old file or the new one, never a mix. Creates the directory if missing. Raises OSError."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w" if text else "wb", **({"encoding": encoding} if text else {})
                       ) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(p.parent)


def write_atomically(path: str | os.PathLike[str], data: bytes | str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably (see :func:`atomic_writer`)."""
    with atomic_writer(path, mode, text=isinstance(data, str)) as f:
        f.write(data)
