"""Push progress on stderr (bytes, rate, ETA) and the bandwidth cap."""

from __future__ import annotations

import sys
import time
from typing import TextIO

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "ki": 2**10, "mi": 2**20, "gi": 2**30}


def parse_rate(text: str) -> float:
    """``"20M"`` -> 20e6 bytes/s. Accepts k/M/G (decimal), Ki/Mi/Gi (binary), an optional
    trailing ``B`` or ``B/s``. Raises ValueError."""
    s = text.strip().lower().removesuffix("/s").removesuffix("b")
    num = s.rstrip("kmgi")
    unit = s[len(num):]
    if unit not in _UNITS:
        raise ValueError(f"bad rate {text!r} (examples: 500k, 20M, 1Gi)")
    value = float(num) * _UNITS[unit]
    if value <= 0:
        raise ValueError(f"rate must be positive, not {text!r}")
    return value


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class RateLimit:
    """Token bucket: :meth:`wait` blocks so the long-run rate stays at ``bytes_per_s`` (bursts
    of up to a quarter second's worth)."""

    def __init__(self, bytes_per_s: float) -> None:
        self.rate = bytes_per_s
        self.burst = max(bytes_per_s / 4, 1.0)
        self._tokens = self.burst
        self._t = time.monotonic()

    def wait(self, n: int) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._t) * self.rate)
        self._t = now
        self._tokens -= n
        if self._tokens < 0:
            time.sleep(-self._tokens / self.rate)


class Progress:
    """A one-line bar redrawn at most 5 times a second; silent unless ``enabled``."""

    def __init__(self, total_bytes: int, total_items: int, *, enabled: bool,
                 stream: TextIO | None = None) -> None:
        self.total, self.items = total_bytes, total_items
        self.enabled, self.stream = enabled, stream or sys.stderr
        self.done = self.skipped = self.items_done = 0
        self._t0 = time.monotonic()
        self._drawn = 0.0

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        self._draw()

    def skip(self, nbytes: int) -> None:
        """Bytes the host already had (resumed or known): counted done, not in the rate."""
        self.skipped += nbytes
        self.done += nbytes
        self._draw()

    def item_done(self) -> None:
        self.items_done += 1
        self._draw(force=True)

    def rate(self) -> float:
        dt = time.monotonic() - self._t0
        return (self.done - self.skipped) / dt if dt > 0 else 0.0

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._drawn < 0.2):
            return
        self._drawn = now
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(frac * 24)
        rate = self.rate()
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = time.strftime("%H:%M:%S", time.gmtime(left)) if left != float("inf") else "--:--"
        self.stream.write(f"\r[{bar:<24}] {frac * 100:5.1f}% {human_bytes(self.done)}/"
                          f"{human_bytes(self.total)} {human_bytes(rate)}/s ETA {eta} "
                          f"({self.items_done}/{self.items} episodes) ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
