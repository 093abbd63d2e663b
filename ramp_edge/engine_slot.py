"""The engine a running controller uses, swappable between chunks, with rollback.

A swap loads the new bundle, checks that it fits the robot (joints, cameras) and verifies it
against its probe *before* anything changes; a bundle that fails is refused with its reason and
the running one stays. The previous engine is kept for :meth:`EngineSlot.rollback`. Engines
are closed only when the slot closes: one still finishing a chunk is never pulled from under the
inference thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ramp_edge.config import RobotConfig
from ramp_edge.errors import EdgeError


class BundleMismatchError(EdgeError, ValueError):
    """The bundle does not fit this robot (joints or cameras differ)."""


@dataclass(frozen=True)
class LoadedEngine:
    engine: Any
    bundle: Any
    message: str

    @property
    def name(self) -> str:
        return f"{self.bundle.name}@{self.bundle.sha256[:12]}"


def open_bundle_engine(path: Path, config: RobotConfig, backend: str | None,
                       threads: int | None) -> LoadedEngine:
    """Load ``path``, check it fits ``config``, open and verify the best engine.
    Raises BundleError, BundleMismatchError, EngineUnavailableError."""
    from ramp_edge.bundle import load_bundle
    from ramp_edge.engines import select_engine
    from ramp_edge.engines.base import EngineOptions

    bundle = load_bundle(path)
    if bundle.joint_names != config.joint_names:
        raise BundleMismatchError(f"bundle {bundle.name} drives joints {list(bundle.joint_names)}"
                                  f", the robot has {list(config.joint_names)}")
    missing = sorted(set(bundle.camera_names) - {c.name for c in config.cameras})
    if missing:
        raise BundleMismatchError(f"bundle {bundle.name} needs cameras {missing} that the robot "
                                  f"config {config.source} does not have")
    h, w = bundle.manifest.image_shape[:2]
    wrong = [f"{c.name} {c.width}x{c.height}" for c in config.cameras
             if c.name in bundle.camera_names and (c.width, c.height) != (w, h)]
    if wrong:
        raise BundleMismatchError(f"bundle {bundle.name} takes {w}x{h} images, the robot config "
                                  f"{config.source} gives {', '.join(wrong)}")
    engine, message = select_engine(bundle, backend, EngineOptions(threads=threads))
    return LoadedEngine(engine, bundle, message)


class EngineSlot:
    """Thread-safe holder of the current and previous engines. ``on_change(loaded)`` is called
    after a swap or rollback (the session hands the engine to the running controller)."""

    def __init__(self, first: LoadedEngine, config: RobotConfig, backend: str | None,
                 threads: int | None) -> None:
        self.current = first
        self.previous: LoadedEngine | None = None
        self._config, self._backend, self._threads = config, backend, threads
        self._all = [first]
        self._lock = threading.Lock()
        self.on_change: Callable[[LoadedEngine], None] | None = None

    def swap(self, path: Path) -> LoadedEngine:
        """Load, check and verify ``path``, then make it current. Raises on any problem,
        leaving the current engine running."""
        loaded = open_bundle_engine(path, self._config, self._backend, self._threads)
        with self._lock:
            self._all.append(loaded)
            self.previous, self.current = self.current, loaded
        if self.on_change:
            self.on_change(loaded)
        return loaded

    def rollback(self) -> LoadedEngine:
        """Make the previous engine current again. Raises BundleMismatchError if there is
        none."""
        with self._lock:
            if self.previous is None:
                raise BundleMismatchError("no previous bundle to roll back to")
            self.previous, self.current = self.current, self.previous
            loaded = self.current
        if self.on_change:
            self.on_change(loaded)
        return loaded

    def close(self) -> None:
        for loaded in self._all:
            loaded.engine.close()
