"""CPU share of the whole emulated robot at the default rates: the emulator process (1 kHz servo
loop over MuJoCo, protocol) plus its camera renderer child (2 cameras, 96x96, 30 Hz), while a
host streams setpoints at 100 Hz through the real bus. Also the same with the plain motor plant.

    .venv/bin/python benchmarks/emulator_cpu.py --seconds 30 [--json]

CPU share = (user + system CPU seconds of the process tree) / wall seconds; 100% = one core.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from firmware_bridge.bus import MotorBus
from firmware_bridge.emulator.process import EmulatorProcess
from firmware_bridge.messages import Mode
from ramp_edge.pacing import Pacer

TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live children (one level is enough here)."""
    total = 0.0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def measure(args: tuple[str, ...], seconds: float, tmp: str) -> dict:
    with EmulatorProcess(f"pty://{tmp}/tty", args, 90.0) as proc, \
            MotorBus(proc.host_url, cycle_timeout_ms=10) as bus:
        bus.connect()
        bus.set_mode(Mode.HOLD)
        home = bus.read_state().position.astype(np.float64)
        time.sleep(1.0)  # let the renderer child settle (in HOLD: no watchdog)
        bus.set_mode(Mode.POSITION)
        cpu0, t0 = tree_cpu_s(proc.proc.pid), time.monotonic()
        pacer = Pacer(100.0)
        missed = 0
        while time.monotonic() - t0 < seconds:
            t = pacer.wait()
            target = home.copy()
            target[0] += 0.3 * math.sin(0.5 * (t - t0))
            missed += bus.exchange(target, reach_in_us=10_000) is None
        cpu1, t1 = tree_cpu_s(proc.proc.pid), time.monotonic()
        bus.set_mode(Mode.HOLD)
        health = bus.health()
    return {"cpu_share_of_one_core": (cpu1 - cpu0) / (t1 - t0), "seconds": t1 - t0,
            "missed_replies": missed, "rtt_p99_ms": health["rtt_p99_ms"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="emu-cpu-")
    setups = {
        "motor plant": (),
        "mujoco, no cameras": ("--plant", "mujoco", "--task", "pack_box"),
        "mujoco + 2 cameras 96x96 @ 30 Hz": ("--plant", "mujoco", "--task", "pack_box",
                                             "--camera-url", f"zmq+ipc://{tmp}/cam.sock"),
    }
    results = {name: measure(a, args.seconds, tmp) for name, a in setups.items()}
    if args.json:
        print(json.dumps(results))
    else:
        for name, r in results.items():
            print(f"{name:<34} CPU {100 * r['cpu_share_of_one_core']:5.1f}% of one core, "
                  f"missed replies {r['missed_replies']}, rtt p99 {r['rtt_p99_ms']:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
