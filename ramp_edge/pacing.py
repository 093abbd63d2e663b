"""Fixed-rate pacing for the control thread: absolute deadlines, a short busy-wait tail, and
lateness statistics.

Sleeping ``period`` after each step (``time.sleep(period)``) accumulates the step's own duration
and the scheduler's wake-up delay into drift. Here each deadline is ``start + k * period``:
sleep until ``tail_s`` before it (the OS wakes late by tens to hundreds of microseconds), then
spin on the clock for the rest. A step that starts after its deadline is late; one that starts a
whole period late is an overrun, and the schedule skips ahead rather than bursting to catch up.
"""

from __future__ import annotations

import time

import numpy as np

DEFAULT_TAIL_S = 0.0005


class LatenessStats:
    """Ring buffer of per-step lateness (ms) with percentiles; no allocation per step."""

    def __init__(self, window: int = 120_000) -> None:
        self._buf = np.zeros(window, np.float64)
        self._n = 0
        self.overruns = 0
        self.max_ms = 0.0

    def add(self, late_ms: float) -> None:
        self._buf[self._n % self._buf.size] = late_ms
        self._n += 1
        if late_ms > self.max_ms:
            self.max_ms = late_ms

    @property
    def count(self) -> int:
        return self._n

    def summary(self) -> dict[str, float]:
        """p50, p99 and max lateness in ms, and the overrun count (max is over all steps)."""
        n = min(self._n, self._buf.size)
        if n == 0:
            return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "overruns": 0, "steps": 0}
        p50, p99 = np.percentile(self._buf[:n], [50, 99])
        return {"p50_ms": float(p50), "p99_ms": float(p99), "max_ms": self.max_ms,
                "overruns": self.overruns, "steps": self._n}


class Pacer:
    """Call :meth:`wait` at the top of each step; it returns the step's scheduled time
    (``time.monotonic`` seconds) once that time has come."""

    def __init__(self, rate_hz: float, tail_s: float = DEFAULT_TAIL_S,
                 clock=time.monotonic, sleep=time.sleep) -> None:
        if rate_hz <= 0:
            raise ValueError("rate_hz must be > 0")
        self.period_s = 1.0 / rate_hz
        self.tail_s = tail_s
        self._clock = clock
        self._sleep = sleep
        self._start: float | None = None
        self._k = 0
        self.stats = LatenessStats()

    def wait(self) -> float:
        clock = self._clock
        if self._start is None:
            self._start = clock()
        deadline = self._start + self._k * self.period_s
        remaining = deadline - clock()
        if remaining > self.tail_s:
            self._sleep(remaining - self.tail_s)
        while clock() < deadline:
            pass
        late_s = clock() - deadline
        self.stats.add(late_s * 1000.0)
        if late_s >= self.period_s:
            missed = int(late_s / self.period_s)
            self.stats.overruns += 1
            self._k += missed  # skip the missed deadlines: no burst of catch-up steps
        self._k += 1
        return deadline
