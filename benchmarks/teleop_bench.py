"""Input-to-sample latency of a person's teleop devices: how long after a person acts the
device publishes the engaged (or disengaged) sample the controller follows, at the default
50 Hz polling rate. Each trial toggles takeover on, then off.

- evdev: a button press/release written as ``input_event`` records into a FIFO;
- keyboard: a space written into a pseudo-terminal;
- leader: the leader arm (emulator process on a pty) moved by hand beyond ``auto`` and back,
  over its sim channel (the latency includes that request), plus the leader's bus RTT.

    .venv/bin/python benchmarks/teleop_bench.py --trials 100 [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import tempfile
import time
from collections.abc import Callable

import numpy as np

from firmware_bridge.emulator.process import EmulatorProcess
from firmware_bridge.emulator.sim_link import SimClient
from ramp_edge.teleop import TeleopDevice, open_teleop
from ramp_edge.teleop.evdev_device import EV_KEY, EV_SYN, EVENT

REST = np.array([0.0] * 6 + [0.02])


def _latencies(dev: TeleopDevice, act: Callable[[bool], None], trials: int) -> list[float]:
    """ms from ``act(on)`` returning to the first sample with ``engaged == on``."""
    out = []
    rng = np.random.default_rng(0)
    for i in range(2 * trials):
        on = i % 2 == 0
        act(on)
        t0 = time.monotonic()
        while True:
            sample = dev.latest()
            if sample is not None and sample.engaged == on and sample.t_s >= t0 - 0.05:
                out.append((time.monotonic() - t0) * 1000)
                break
            if time.monotonic() - t0 > 2.0:
                raise RuntimeError(f"{dev.name}: no {'engaged' if on else 'disengaged'} sample")
            time.sleep(0.0005)
        time.sleep(rng.uniform(0.005, 0.045))  # random phase: trials cover the whole period
    return out


def _summary(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"n": int(a.size), "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max())}


def bench_evdev(tmp: str, trials: int) -> dict[str, float]:
    fifo = os.path.join(tmp, "event0")
    os.mkfifo(fifo)
    with open_teleop(f"evdev://{fifo}?button=BTN_SOUTH") as dev:
        fd = os.open(fifo, os.O_WRONLY)
        dev.set_follower(REST)
        try:
            return _summary(_latencies(dev, lambda on: os.write(
                fd, EVENT.pack(0, 0, EV_KEY, 0x130, int(on)) + EVENT.pack(0, 0, EV_SYN, 0, 0)),
                trials))
        finally:
            os.close(fd)


def bench_keyboard(trials: int) -> dict[str, float]:
    master, slave = pty.openpty()
    try:
        with open_teleop(f"keyboard://{os.ttyname(slave)}") as dev:
            dev.set_follower(REST)
            return _summary(_latencies(dev, lambda on: os.write(master, b" "), trials))
    finally:
        os.close(master)
        os.close(slave)


def bench_leader(tmp: str, trials: int) -> dict[str, float]:
    sim_url = f"zmq+ipc://{tmp}/leader-sim.sock"
    with EmulatorProcess(f"pty://{tmp}/leader", ("--sim-url", sim_url)) as proc:
        hand = SimClient(sim_url)
        moved = REST + np.array([0.3] + [0.0] * 6)
        try:
            with open_teleop(f"leader+{proc.host_url}?auto=0.15") as dev:
                while getattr(dev, "phase", "") != "ready":
                    time.sleep(0.01)
                ms = _latencies(dev, lambda on: hand.move_by_hand(
                    list(moved if on else REST)), trials)
                health = dev.bus.health()  # type: ignore[attr-defined]
        finally:
            hand.close()
    return {**_summary(ms), "bus_rtt_p50_ms": health["rtt_p50_ms"],
            "bus_rtt_p99_ms": health["rtt_p99_ms"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="ramp-teleop-bench-")
    results = {"evdev": bench_evdev(tmp, args.trials), "keyboard": bench_keyboard(args.trials),
               "leader": bench_leader(tmp, args.trials)}
    if args.json:
        print(json.dumps(results))
    else:
        for name, r in results.items():
            extra = (f", leader bus RTT p50 {r['bus_rtt_p50_ms']:.2f} / p99 "
                     f"{r['bus_rtt_p99_ms']:.2f} ms" if "bus_rtt_p50_ms" in r else "")
            print(f"{name:9s} input -> sample: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms,"
                  f" max {r['max_ms']:.1f} ms over {r['n']} transitions{extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
