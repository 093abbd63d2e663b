"""Link health counters and round-trip statistics for one bus."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

RTT_WINDOW = 65536  # most recent round trips kept for percentiles


@dataclass
class LinkStats:
    """Counts since the bus was created. ``lost`` counts requests that never got a reply
    (timeouts); ``late`` replies that came after their request had timed out."""

    requests: int = 0
    replies: int = 0
    timeouts: int = 0
    late: int = 0
    retries: int = 0
    reconnects: int = 0
    link_errors: int = 0
    faults_reported: int = 0
    _rtt_us: np.ndarray = field(default_factory=lambda: np.zeros(RTT_WINDOW, np.float64))
    _rtt_count: int = 0

    def add_rtt(self, rtt_us: float) -> None:
        self._rtt_us[self._rtt_count % RTT_WINDOW] = rtt_us
        self._rtt_count += 1

    @property
    def lost(self) -> int:
        return self.timeouts

    def rtt_ms(self) -> dict[str, float]:
        """p50, p99 and max round trip in ms over the recent window (NaN if none yet)."""
        n = min(self._rtt_count, RTT_WINDOW)
        if n == 0:
            return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
        window = self._rtt_us[:n]
        p50, p99 = np.percentile(window, [50, 99])
        peak = float(window.max())
        return {"p50": float(p50) / 1000, "p99": float(p99) / 1000, "max": peak / 1000}
