"""Round-trip benchmark of a bus: as many control cycles as the link allows."""

from __future__ import annotations

import math
import time

import numpy as np

from firmware_bridge.bus import MotorBus
from firmware_bridge.messages import Mode


def bench_round_trips(bus: MotorBus, seconds: float, amplitude_rad: float = 0.05) -> dict:
    """Arm the device, stream a small sine around the measured pose for ``seconds`` as fast
    as replies come back, then hold. Returns round trips/s plus the bus's link health."""
    state = bus.read_state()
    if state is None:
        state = bus.read_state()
    if state is None:
        from firmware_bridge.errors import DeviceTimeoutError

        raise DeviceTimeoutError(f"no state from {bus.url}")
    home = state.position.astype(np.float64)
    wave = np.zeros_like(home)
    wave[:-1] = amplitude_rad  # leave the gripper still
    bus.set_mode(Mode.POSITION)
    start_replies = bus.stats.replies
    t0 = time.perf_counter()
    end = t0 + seconds
    n = 0
    try:
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            target = home + wave * math.sin(2 * math.pi * 0.5 * (now - t0))
            bus.exchange(target, reach_in_us=1000)
            n += 1
    finally:
        elapsed = time.perf_counter() - t0
        bus.set_mode(Mode.HOLD)
    ok = bus.stats.replies - start_replies - 1  # minus the MODE acknowledgement
    health = bus.health()
    health.update(
        seconds=elapsed,
        cycles=n,
        round_trips=ok,
        round_trips_per_s=ok / elapsed if elapsed > 0 else 0.0,
    )
    return health
