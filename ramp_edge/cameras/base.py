"""The camera base class: a capture thread keeps the newest frame; the control path never waits.

Backends implement ``_capture(timeout_s) -> (image, t_capture_s) | None``; the base runs the
thread, keeps the latest frame with its capture time, counts frames and drops, and closes once.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np

from ramp_edge.errors import EdgeError


class CameraError(EdgeError, RuntimeError):
    """A camera cannot be opened or has stopped delivering frames."""


class Camera:
    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self._latest: tuple[np.ndarray, float] | None = None
        self.frames = 0
        self.dropped = 0  # frames the source numbered but we never saw
        self.errors = 0
        self._closed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"camera-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _capture(self, timeout_s: float) -> tuple[np.ndarray, float] | None:
        raise NotImplementedError

    def _close_source(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            got = self._capture(0.1)
            if got is not None:
                self._latest = got  # one reference swap: readers see old or new, never half
                self.frames += 1

    def latest(self) -> tuple[np.ndarray, float] | None:
        """The newest frame (uint8 H x W x 3, read-only) and its capture time
        (``time.monotonic`` s), or None before the first frame. Never blocks."""
        return self._latest

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)
        self._close_source()

    def __enter__(self) -> Camera:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"camera {self.name} was not closed", ResourceWarning, stacklevel=1)
            self.close()
