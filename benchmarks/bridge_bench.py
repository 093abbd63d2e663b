"""Round trips/s and RTT over a pseudo-terminal and over ZeroMQ ipc/tcp against the emulator
running as a separate process, side by side in one run.

    .venv/bin/python benchmarks/bridge_bench.py --seconds 10 [--json]
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile

from firmware_bridge.bench import bench_round_trips
from firmware_bridge.bus import MotorBus
from firmware_bridge.emulator.process import EmulatorProcess


def _tcp_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"zmq+tcp://127.0.0.1:{s.getsockname()[1]}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="ramp-bench-")
    devices = {"pty": f"pty://{tmp}/tty", "zmq+ipc": f"zmq+ipc://{tmp}/bus.sock",
               "zmq+tcp": _tcp_url()}
    results = {}
    for name, device_url in devices.items():
        with EmulatorProcess(device_url) as proc, MotorBus(proc.host_url) as bus:
            bus.connect()
            results[name] = bench_round_trips(bus, args.seconds)
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"{'link':<9} {'rt/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'crc':>5} "
          f"{'timeouts':>8}")
    for name, r in results.items():
        print(f"{name:<9} {r['round_trips_per_s']:>8.0f} {r['rtt_p50_ms']:>8.3f} "
              f"{r['rtt_p99_ms']:>8.3f} {r['rtt_max_ms']:>8.3f} {r['crc_failures']:>5} "
              f"{r['timeouts']:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
