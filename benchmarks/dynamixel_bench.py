"""Control cycles/s for 7 joints: DYNAMIXEL Protocol 2.0 servos (the dynamixel:// bus, via
dynamixel-sdk) against this project's protocol (MotorBus), each against its emulator running as
a separate process on a pseudo-terminal, at 1, 3 and 4 Mbps settings, side by side in one run.

    .venv/bin/python benchmarks/dynamixel_bench.py [--seconds 5] [--servos 7] [--json]

One cycle: DYNAMIXEL = SYNC_WRITE of Goal_Position + SYNC_READ of Present_Velocity and
Present_Position (one status packet per servo); ours = SETPOINT out, STATE back. Each loop
streams a small sine in POSITION as fast as replies come back.

A pseudo-terminal does not enforce the baud rate: bytes cross at memory speed, so the measured
figures are bounded by the CPU (Python on both ends), not by the wire. The wire-time bound is
therefore computed too: bytes per cycle x 10 bit times (8N1) / baud, and the cycles/s that
bound allows. On a real bus the lower of the two applies (plus the USB adapter's latency
and, for DYNAMIXEL, each servo's Return_Delay_Time, set to 0 here).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time

import numpy as np

from firmware_bridge import codec
from firmware_bridge.bus import MotorBus
from firmware_bridge.dynamixel import control_table as ct
from firmware_bridge.dynamixel.bus import DynamixelBus
from firmware_bridge.dynamixel.packet import BROADCAST_ID, Instruction, instruction, status
from firmware_bridge.emulator.process import EmulatorProcess
from firmware_bridge.messages import FaultCode, Mode, Setpoint, State, to_frame

BAUDS = (1_000_000, 3_000_000, 4_000_000)
U32 = 0xFFFF_FFFF


def dynamixel_bytes(n: int) -> int:
    """Bytes of one cycle as the codec builds them (goals near the centre: no stuffing)."""
    write = bytearray((ct.GOAL_POSITION, 0, 4, 0))
    for dxl_id in range(1, n + 1):
        write += bytes((dxl_id,)) + ct.u32(ct.CENTER_TICK + 37 * dxl_id)
    read = bytes((ct.STATE_START, 0, ct.STATE_LENGTH, 0)) + bytes(range(1, n + 1))
    replies = sum(len(status(i, 0, bytes(ct.STATE_LENGTH))) for i in range(1, n + 1))
    return (len(instruction(BROADCAST_ID, Instruction.SYNC_WRITE, bytes(write)))
            + len(instruction(BROADCAST_ID, Instruction.SYNC_READ, read)) + replies)


def ours_bytes(n: int) -> int:
    """Bytes of one cycle on a serial link (COBS + delimiter), realistic seq and t_us."""
    vec = np.linspace(-1.0, 1.0, n, dtype=np.float32)
    t_us = time.monotonic_ns() // 1000
    setpoint = to_frame(Setpoint(10_000, vec), 123_456, t_us)
    state = to_frame(State(Mode.POSITION, FaultCode.NONE, vec, vec, vec), 123_456, t_us)
    return len(codec.encode(setpoint)) + len(codec.encode(state))


def run_loop(bus, seconds: float) -> dict[str, float]:
    state = None
    for _ in range(20):
        state = bus.read_state()
        if state is not None:
            break
    if state is None:
        raise SystemExit(f"no state from {bus.url}: {bus.last_error}")
    home = state.position.astype(np.float64)
    wave = np.zeros_like(home)
    wave[:-1] = 0.05
    bus.set_mode(Mode.POSITION)
    ok = cycles = 0
    rtt_us = []
    t0 = time.perf_counter()
    try:
        while (now := time.perf_counter()) - t0 < seconds:
            target = home + wave * math.sin(math.pi * (now - t0))
            reply = bus.exchange(target, 10_000)
            cycles += 1
            if reply is not None:
                ok += 1
                rtt_us.append((time.perf_counter() - now) * 1e6)
        elapsed = time.perf_counter() - t0
    finally:
        bus.set_mode(Mode.HOLD)
    p50, p99 = np.percentile(rtt_us, [50, 99]) if rtt_us else (math.nan, math.nan)
    return {"cycles_per_s": ok / elapsed, "cycles": cycles, "failed": cycles - ok,
            "cycle_p50_ms": p50 / 1000, "cycle_p99_ms": p99 / 1000}


def bench_dynamixel(baud: int, n: int, seconds: float, store: str) -> dict[str, float]:
    with EmulatorProcess("pty://", ("--protocol", "dynamixel", "--ids", f"1-{n}")) as emu, \
            DynamixelBus(f"{emu.host_url}&baud={baud}&calibration={store}") as bus:
        bus.connect()
        out = run_loop(bus, seconds)
        out["crc_failures"] = bus.health()["crc_failures"]
        return out


def bench_ours(baud: int, n: int, seconds: float) -> dict[str, float]:
    with EmulatorProcess("pty://", ("--joints", str(n))) as emu, \
            MotorBus(f"{emu.host_url}?baud={baud}", cycle_timeout_ms=20.0) as bus:
        bus.connect()
        out = run_loop(bus, seconds)
        out["crc_failures"] = bus.health()["crc_failures"]
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--servos", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    n = args.servos
    sizes = {"dynamixel": dynamixel_bytes(n), "ours": ours_bytes(n)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for baud in BAUDS:
            for proto in ("dynamixel", "ours"):
                if proto == "dynamixel":
                    got = bench_dynamixel(baud, n, args.seconds, f"{tmp}/cal.json")
                else:
                    got = bench_ours(baud, n, args.seconds)
                wire_ms = sizes[proto] * 10 / baud * 1000
                rows.append({"protocol": proto, "baud": baud, "bytes_per_cycle": sizes[proto],
                             "wire_ms_per_cycle": wire_ms,
                             "wire_bound_cycles_per_s": 1000 / wire_ms, **got})
    if args.json:
        print(json.dumps({"servos": n, "seconds": args.seconds, "rows": rows}))
        return 0
    print(f"{n} servos/joints, {args.seconds:.0f} s per row, emulator process on a pty "
          "(a pty does not enforce the baud rate)")
    print(f"{'protocol':<10} {'baud':>9} {'B/cycle':>8} {'wire ms':>8} {'wire max/s':>10} "
          f"{'pty cycles/s':>12} {'p50 ms':>7} {'p99 ms':>7} {'failed':>6} {'bad CRC':>7}")
    for r in rows:
        print(f"{r['protocol']:<10} {r['baud']:>9} {r['bytes_per_cycle']:>8} "
              f"{r['wire_ms_per_cycle']:>8.3f} {r['wire_bound_cycles_per_s']:>10.0f} "
              f"{r['cycles_per_s']:>12.0f} {r['cycle_p50_ms']:>7.3f} {r['cycle_p99_ms']:>7.3f} "
              f"{r['failed']:>6} {r['crc_failures']:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
