"""The teleop device base class: a reader thread keeps the newest sample; the control path never
waits (DESIGN.md, "HILR recording": a leader arm, a gamepad/pedal, the keyboard, in simulation a
scripted expert or corrector).

Backends implement ``_poll() -> TeleopSample | None`` (one reading: who wants control and with
which joint targets) and, if they hold anything, ``_close_source()``. The base runs the thread at
``rate_hz`` against absolute deadlines, keeps the latest sample, counts samples and errors, and
closes once.

What the controller may rely on:

- :meth:`TeleopDevice.latest` never blocks; it returns the newest sample, or None before the
  first one and after :meth:`~TeleopDevice.close`.
- A device that failed (its backend raised) has stopped for good: :attr:`~TeleopDevice.error`
  says why and the last sample it publishes is *disengaged* (``engaged=False``, ``target=None``)
  with the reason, so a controller that only looks at ``latest()`` hands control back rather
  than following a dead device's last target.
- A sample is a reading at ``t_s``; the controller treats an old one as disengaged too
  (:meth:`~TeleopDevice.engaged_sample` applies that rule).
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
import weakref
from dataclasses import dataclass

import numpy as np

from firmware_bridge.errors import EdgeError

log = logging.getLogger("ramp_edge.teleop")

DEFAULT_RATE_HZ = 50.0
DEFAULT_MAX_AGE_S = 0.1  # five periods at 50 Hz


class TeleopError(EdgeError, RuntimeError):
    """A teleop device cannot be opened or has stopped delivering samples."""


class TeleopUrlError(EdgeError, ValueError):
    """A teleop URL names no known backend or carries missing or bad parameters."""


class TeleopTransientError(TeleopError):
    """One reading failed but the next may work (a missed reply, a short read). Raised by a
    backend's ``_poll``; the base counts it, publishes nothing for that period and stops the
    device only after ``max_consecutive_errors`` of them in a row."""


@dataclass(frozen=True)
class TeleopSample:
    """One reading of a teleop device.

    ``t_s``: when it was read (``time.monotonic`` s). ``engaged``: the person wants control
    (button or pedal held, the corrector in control, the expert demonstrating). ``target``:
    absolute joint targets (float64, read-only), in the robot's joint order and units (rad for
    revolute joints, m for the gripper opening); None exactly when not engaged. ``source``:
    which device (``"scripted+expert"``, later ``"leader"``, ``"gamepad"``, ...), for the
    recorder. ``reason``: why the person took over, or why the device is disengaged, if known.
    """

    t_s: float
    engaged: bool
    target: np.ndarray | None
    source: str
    reason: str = ""

    def __post_init__(self) -> None:
        if self.engaged != (self.target is not None):
            raise ValueError("a teleop sample has a target exactly when it is engaged")
        if self.target is not None:
            target = np.array(self.target, dtype=np.float64)  # a private copy
            if target.ndim != 1:
                raise ValueError(f"a teleop target is a joint vector, not shape {target.shape}")
            target.setflags(write=False)
            object.__setattr__(self, "target", target)


class TeleopDevice:
    """Base of every teleop backend. ``name`` labels threads and messages; ``source`` goes into
    each sample; the thread polls at ``rate_hz`` (Hz).

    Subclasses set up their source, then call :meth:`start`. ``max_consecutive_errors`` bounds
    how many :class:`TeleopTransientError` in a row are tolerated before the device stops. Any
    other exception from ``_poll`` stops it at once: ``error`` holds it (wrapped in
    :class:`TeleopError` unless it is already a project error) and the last sample is
    disengaged, so the controller treats a failed device as disengaged, never as frozen on its
    last target.
    """

    def __init__(
        self,
        name: str,
        url: str,
        *,
        rate_hz: float = DEFAULT_RATE_HZ,
        max_consecutive_errors: int = 5,
    ) -> None:
        if not rate_hz > 0 or max_consecutive_errors < 0:
            raise ValueError("rate_hz must be > 0 and max_consecutive_errors >= 0")
        self.name = name
        self.url = url
        self.rate_hz = float(rate_hz)
        self.max_consecutive_errors = max_consecutive_errors
        self._latest: TeleopSample | None = None
        self.samples = 0  # samples published
        self.errors = 0  # failed readings (transient ones and the one that stopped the device)
        self.overruns = 0  # periods skipped because a reading took longer than a period
        self.error: EdgeError | None = None  # why the device stopped, if it failed
        self._closed = False
        self._stop = threading.Event()
        # Held around each reading and each episode reset, so a reset never interleaves with a
        # reading of the old episode.
        self._lock = threading.Lock()
        self._in_a_row = 0
        self._thread = threading.Thread(
            target=TeleopDevice._run, args=(weakref.ref(self), self._stop, 1.0 / self.rate_hz),
            name=f"teleop-{name}", daemon=True)

    # -- for backends ----------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def _poll(self) -> TeleopSample | None:
        """One reading, or None when there is nothing new. May block for a fraction of a
        period. Raise :class:`TeleopTransientError` for a reading that may work next time;
        anything else stops the device."""
        raise NotImplementedError

    def _reset_episode(self, **kw: object) -> None:
        """Backends with episodes (the scripted ones) start a new one here; a person's device
        has none, so the default does nothing."""

    def _close_source(self) -> None:
        """Release what the backend holds (sockets, file descriptors)."""

    def _on_failure(self) -> None:
        """Called on the reader thread when the device stops for good, before ``close``:
        give back at once what a person needs (a terminal in cbreak mode). Must not raise."""

    def _disengaged(self, reason: str) -> TeleopSample:
        return TeleopSample(time.monotonic(), False, None, self.source, reason)

    @property
    def source(self) -> str:
        """The ``source`` label of this device's samples (the URL scheme by default)."""
        return self.url.partition("://")[0] or self.name

    # -- the reader thread -------------------------------------------------------------------
    @staticmethod
    def _run(ref: weakref.ref[TeleopDevice], stop: threading.Event, period: float) -> None:
        # The thread holds the device only weakly between readings, so a device nobody closed
        # is still collected (and warns) instead of polling forever.
        deadline = time.monotonic()
        while not stop.is_set():
            device = ref()
            if device is None or not device._read_once():
                return
            del device
            deadline += period
            delay = deadline - time.monotonic()
            if delay < -period:  # a reading ran over: skip ahead rather than burst
                dev = ref()
                if dev is not None:
                    dev.overruns += 1
                del dev
                deadline = time.monotonic()
                delay = 0.0
            stop.wait(max(0.0, delay))

    def _read_once(self) -> bool:
        """Take one reading and publish it; False once the device has failed."""
        try:
            with self._lock:
                sample = None if self._stop.is_set() else self._poll()
        except TeleopTransientError as err:
            self.errors += 1
            self._in_a_row += 1
            if self._in_a_row > self.max_consecutive_errors:
                self._fail(TeleopError(
                    f"teleop {self.name}: {self._in_a_row} readings in a row failed, last: {err}"))
                return False
            return True
        except Exception as err:  # any backend failure stops the device (module docstring)
            self.errors += 1
            wrapped = err if isinstance(err, EdgeError) else TeleopError(
                f"teleop {self.name}: {type(err).__name__}: {err}")
            if wrapped is not err:
                wrapped.__cause__ = err
            self._fail(wrapped)
            return False
        self._in_a_row = 0
        if sample is not None and not self._stop.is_set():
            self._latest = sample  # one reference swap: readers see old or new
            self.samples += 1
        return True

    def _fail(self, err: EdgeError) -> None:
        log.warning("teleop %s stopped: %s", self.name, err)
        self.error = err
        self._latest = self._disengaged(f"device failed: {err}")
        try:
            self._on_failure()
        except Exception:  # the device has failed already; the hook only tidies up
            log.exception("teleop %s: tidying up after the failure failed", self.name)

    # -- public ------------------------------------------------------------------------------
    def latest(self) -> TeleopSample | None:
        """The newest sample, or None before the first one and after :meth:`close`. Never
        blocks. After a failure, a disengaged sample whose ``reason`` names the error."""
        return self._latest

    def engaged_sample(
        self, max_age_s: float = DEFAULT_MAX_AGE_S, now_s: float | None = None
    ) -> TeleopSample | None:
        """The newest sample if it is engaged and at most ``max_age_s`` old (at ``now_s``,
        ``time.monotonic`` by default), else None: what a takeover detector should follow.
        A failed, closed, silent or disengaged device all give None. Never blocks."""
        sample = self._latest
        if sample is None or not sample.engaged or self.error is not None:
            return None
        now = time.monotonic() if now_s is None else now_s
        return sample if now - sample.t_s <= max_age_s else None

    @property
    def running(self) -> bool:
        """Whether the reader thread is delivering (started, not failed, not closed)."""
        return self._thread.is_alive() and self.error is None and not self._closed

    def reset_episode(self, **kw: object) -> None:
        """Start a new episode (scripted devices rebuild theirs; see the backend for the
        keywords; a person's device ignores them). Forgets the previous sample, so nothing of
        the old episode is followed. Raises what the backend raises for bad keywords (TypeError
        for unknown ones)."""
        with self._lock:
            self._reset_episode(**kw)
            if self.error is None:
                self._latest = None

    def close(self) -> None:
        """Stop the thread and release the source. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        self._latest = None
        self._close_source()

    def __enter__(self) -> TeleopDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"teleop device {self.name} was not closed", ResourceWarning,
                          stacklevel=1)
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("failed" if self.error else "open")
        return f"<{type(self).__name__} {self.name} {self.url!r} {state}>"
