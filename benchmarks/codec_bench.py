"""Codec speed: time per frame and frames/s for STATE (7 joints) and SETPOINT frames.

    .venv/bin/python benchmarks/codec_bench.py [--joints 7] [--repeat 7] [--json]

For each frame and each framing (serial: COBS + 0x00; message: sealed payload, as on ZeroMQ)
it times ``encode`` alone, ``decode`` alone and encode+decode; the "message layer" rows add
what the bus does around the codec (``to_frame`` from a typed message before encoding,
``from_frame`` after decoding). ``stream`` feeds 100 back-to-back serial frames to one
``FrameDecoder.feed`` call. Each figure is the median of ``--repeat`` timeit runs of about
0.2 s each, in microseconds per frame; frames/s is 1e6 / that. Human output goes to stderr,
``--json`` prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import timeit
from collections.abc import Callable

import numpy as np

from firmware_bridge import codec
from firmware_bridge.codec import FrameDecoder
from firmware_bridge.messages import FaultCode, Mode, Setpoint, State, from_frame, to_frame

SEQ = 123_456  # a mid-run sequence number (uint32 form)
T_US = 1_700_000_000_123  # a monotonic clock of ~20 days (uint64 form)


def _time_per_call_us(fn: Callable[[], object], repeat: int, per_call: int = 1) -> float:
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()  # enough calls for >= 0.2 s
    runs = timer.repeat(repeat=repeat, number=number)
    return statistics.median(runs) / (number * per_call) * 1e6


def bench(n_joints: int, repeat: int) -> list[dict[str, object]]:
    rng = np.random.default_rng(0)
    vec = lambda: rng.uniform(-2, 2, n_joints).astype(np.float32)  # noqa: E731
    messages = {
        "STATE": State(Mode.POSITION, FaultCode.NONE, vec(), vec(), vec()),
        "SETPOINT": Setpoint(10_000, vec(), None),
    }
    rows = []
    for name, message in messages.items():
        frame = to_frame(message, SEQ, T_US)
        serial = codec.encode(frame)
        sealed = codec.encode_message_bytes(frame)
        stream = serial * 100
        cases: dict[str, dict[str, Callable[[], object]]] = {
            "serial": {
                "encode": lambda f=frame: codec.encode(f),
                "decode": lambda b=serial: codec.decode(b),
                "encode+decode": lambda f=frame: codec.decode(codec.encode(f)),
            },
            "message": {
                "encode": lambda f=frame: codec.encode_message_bytes(f),
                "decode": lambda b=sealed: codec.decode_message_bytes(b),
                "encode+decode": lambda f=frame: codec.decode_message_bytes(
                    codec.encode_message_bytes(f)),
            },
            "message layer, serial": {
                "encode": lambda m=message: codec.encode(to_frame(m, SEQ, T_US)),
                "decode": lambda b=serial: from_frame(codec.decode(b)[1]),
                "encode+decode": lambda m=message: from_frame(
                    codec.decode(codec.encode(to_frame(m, SEQ, T_US)))[1]),
            },
        }
        for framing, fns in cases.items():
            row: dict[str, object] = {
                "frame": name, "framing": framing,
                "bytes": len(serial) if "serial" in framing else len(sealed),
            }
            for what, fn in fns.items():
                row[f"{what}_us"] = round(_time_per_call_us(fn, repeat), 3)
            row["frames_per_s"] = round(1e6 / float(row["encode+decode_us"]))  # type: ignore[arg-type]
            rows.append(row)
        decode_us = _time_per_call_us(lambda s=stream: FrameDecoder().feed(s), repeat, 100)
        rows.append({"frame": name, "framing": "stream (FrameDecoder, 100 frames per feed)",
                     "bytes": len(serial), "decode_us": round(decode_us, 3),
                     "frames_per_s": round(1e6 / decode_us)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--joints", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print results as JSON on stdout")
    args = parser.parse_args(argv)
    rows = bench(args.joints, args.repeat)
    print(f"codec, {args.joints} joints, median of {args.repeat} runs, us per frame "
          f"(Python {platform.python_version()}, {platform.machine()})", file=sys.stderr)
    print(f"  {'frame':<9}{'framing':<44}{'bytes':>6}{'encode':>9}{'decode':>9}"
          f"{'enc+dec':>9}{'frames/s':>11}", file=sys.stderr)
    for r in rows:
        cells = [f"{r[k]:>9.2f}" if k in r else f"{'-':>9}"
                 for k in ("encode_us", "decode_us", "encode+decode_us")]
        print(f"  {r['frame']:<9}{r['framing']:<44}{r['bytes']:>6}{''.join(cells)}"
              f"{r['frames_per_s']:>11}", file=sys.stderr)
    if args.json:
        print(json.dumps({"joints": args.joints, "repeat": args.repeat,
                          "python": platform.python_version(), "machine": platform.machine(),
                          "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
