"""Bytes on the wire per control cycle for 7 joints: ours against Dynamixel Protocol 2.0.

    .venv/bin/python benchmarks/wire_bytes.py [--joints 7] [--baud 3000000] [--json]

One control cycle = command every joint + read every joint's state.

Ours: one SETPOINT request (positions, no velocity feed-forward) and the STATE reply (mode,
fault, position, velocity, effort), with every integer at its worst-case msgpack size
(seq = 2^32-1, t_us = 2^64-1, reach_in_us = 2^32-1). The frames are built by the real codec.
A second line adds the optional velocity feed-forward to SETPOINT.

Dynamixel Protocol 2.0 (X-series control table): Sync Read of Present Current (addr 126, 2 B),
Present Velocity (128, 4 B) and Present Position (132, 4 B), 126..135 = 10 bytes per motor,
answered by one status packet per motor, plus Sync Write of Goal Position (addr 116, 4 B).
Packets: header FF FF FD 00, ID, LEN (2), INST, [ERR in status packets], params, CRC-16 (2).
Byte stuffing (an extra 0xFD after any FF FF FD inside a packet) is not counted: the
comparison gives Dynamixel its best case. Serial bytes take 10 bit times each (8N1).

Exits with status 1 if our cycle is larger than Dynamixel's.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from firmware_bridge import codec
from firmware_bridge.messages import FaultCode, Mode, Setpoint, State, to_frame

U32 = 0xFFFF_FFFF
U64 = 0xFFFF_FFFF_FFFF_FFFF

# Dynamixel Protocol 2.0 packet layout
DXL_HEADER = 4  # FF FF FD 00
DXL_ID = 1
DXL_LEN = 2
DXL_INST = 1
DXL_ERR = 1  # status packets only
DXL_CRC = 2
SYNC_READ_START, SYNC_READ_LEN = 126, 10  # Present Current + Velocity + Position
SYNC_WRITE_START, SYNC_WRITE_LEN = 116, 4  # Goal Position


def dxl_instruction(n_params: int) -> int:
    return DXL_HEADER + DXL_ID + DXL_LEN + DXL_INST + n_params + DXL_CRC


def dxl_status(n_params: int) -> int:
    return DXL_HEADER + DXL_ID + DXL_LEN + DXL_INST + DXL_ERR + n_params + DXL_CRC


def dynamixel_cycle(n: int) -> dict[str, int]:
    """Bytes of one cycle: Sync Read request, n status packets, Sync Write."""
    sync_read = dxl_instruction(2 + 2 + n)  # start address, data length, one ID per motor
    status = dxl_status(SYNC_READ_LEN)
    sync_write = dxl_instruction(2 + 2 + n * (1 + SYNC_WRITE_LEN))  # + ID and data per motor
    return {
        "sync_read_request": sync_read,
        "status_packet_each": status,
        "status_packets": n * status,
        "sync_write": sync_write,
        "host_to_device": sync_read + sync_write,
        "device_to_host": n * status,
        "total": sync_read + n * status + sync_write,
    }


def ours_cycle(n: int, with_velocity: bool = False) -> dict[str, int]:
    """Bytes of one cycle with the real codec: SETPOINT out, STATE back, worst-case ints."""
    vec = np.linspace(-1.0, 1.0, n, dtype=np.float32)
    setpoint = to_frame(Setpoint(U32, vec, vec if with_velocity else None), U32, U64)
    state = to_frame(State(Mode.POSITION, FaultCode.NONE, vec, vec, vec), U32, U64)
    sp_serial, st_serial = len(codec.encode(setpoint)), len(codec.encode(state))
    sp_msg = len(codec.encode_message_bytes(setpoint))
    st_msg = len(codec.encode_message_bytes(state))
    return {
        "setpoint_payload": len(codec.encode_payload(setpoint)),
        "state_payload": len(codec.encode_payload(state)),
        "setpoint_serial": sp_serial,
        "state_serial": st_serial,
        "total_serial": sp_serial + st_serial,
        "setpoint_message": sp_msg,
        "state_message": st_msg,
        "total_message": sp_msg + st_msg,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--joints", type=int, default=7)
    parser.add_argument("--baud", type=int, default=3_000_000, help="for the line-time column")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    n = args.joints
    ours = ours_cycle(n)
    ours_vel = ours_cycle(n, with_velocity=True)
    dxl = dynamixel_cycle(n)
    us_per_byte = 10 / args.baud * 1e6

    rows = [
        ("ours, serial (COBS + 0x00)", ours["setpoint_serial"], ours["state_serial"],
         ours["total_serial"], True),
        ("ours, serial, with velocity feed-forward", ours_vel["setpoint_serial"],
         ours_vel["state_serial"], ours_vel["total_serial"], True),
        ("ours, ZeroMQ message (no ZMTP/TCP)", ours["setpoint_message"], ours["state_message"],
         ours["total_message"], False),
        (f"Dynamixel 2.0: Sync Write + Sync Read + {n} status", dxl["host_to_device"],
         dxl["device_to_host"], dxl["total"], True),
    ]
    print(f"bytes per control cycle, {n} joints (host->device, device->host, total, line time "
          f"at {args.baud} baud 8N1)", file=sys.stderr)
    for name, out, back, total, on_serial in rows:
        line = f"{total * us_per_byte:7.1f} us" if on_serial else "      -"
        print(f"  {name:<50} {out:>4} {back:>5} {total:>5}  {line}", file=sys.stderr)
    for what in ("setpoint", "state"):
        payload, serial = ours[f"{what}_payload"], ours[f"{what}_serial"]
        print(f"  ours: {what.upper()} payload {payload} B + CRC-32 4 + COBS "
              f"{serial - payload - 4 - 1} + delimiter 1 = {serial} B", file=sys.stderr)
    print(f"  Dynamixel: Sync Read {dxl['sync_read_request']} + {n} x status "
          f"{dxl['status_packet_each']} + Sync Write {dxl['sync_write']} = {dxl['total']} "
          f"(no byte stuffing counted)", file=sys.stderr)
    if args.json:
        print(json.dumps({"joints": n, "ours": ours, "ours_with_velocity": ours_vel,
                          "dynamixel_2_0": dxl, "baud": args.baud}))
    worst = max(ours["total_serial"], ours["total_message"])
    if worst > dxl["total"]:
        print(f"FAIL: our cycle ({worst} B) is larger than Dynamixel's ({dxl['total']} B)",
              file=sys.stderr)
        return 1
    print(f"ok: ours {ours['total_serial']} B <= Dynamixel {dxl['total']} B "
          f"({dxl['total'] - ours['total_serial']} B, "
          f"{100 * (1 - ours['total_serial'] / dxl['total']):.0f}% fewer)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
