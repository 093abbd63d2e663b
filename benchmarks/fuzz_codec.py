"""Fuzz the frame codec and the message layer with atheris (libFuzzer for Python).

    .venv/bin/pip install -e '.[fuzz]'            # or: .venv/bin/pip install atheris
    .venv/bin/python benchmarks/fuzz_codec.py --runs 1000000
    .venv/bin/python benchmarks/fuzz_codec.py -runs=1000000 -seed=1   # libFuzzer flags pass through

Each input goes, whole, through every target:
- ``codec.decode`` in a loop, the way a caller drops ``consumed`` bytes (checks that contract);
- ``FrameDecoder.feed`` in two pieces split where the first byte says (checks the buffer bound
  and, for inputs no longer than one frame, that it agrees with ``decode``);
- ``codec.decode_message_bytes`` on the input as a ZeroMQ message;
- the input as a payload sealed with a correct CRC, as a message and as a serial frame (so the
  fuzzer gets past the CRC into msgpack and the header checks); both framings must agree;
- ``messages.from_frame`` on every frame decoded, then re-encoding: a decoded frame encodes
  again, and a decoded message survives another trip through the codec unchanged.

The project's own errors (``EdgeError`` subclasses) are the expected outcome of bad input and
are counted; anything else escaping, or a broken invariant (AssertionError), is a crash:
libFuzzer stops, prints the traceback and writes the input under ``benchmarks/out/``.
The seed corpus is written from tests/vectors/frames.json into ``benchmarks/out/fuzz_corpus``.
At the end the script prints the number of inputs run, the time and the errors seen, and
with ``--json`` one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["firmware_bridge"]):
    from firmware_bridge import codec, messages
    from firmware_bridge.codec import MAX_ENCODED, Frame, FrameDecoder
    from firmware_bridge.errors import EdgeError, FrameTooLongError

import msgpack
from cobs import cobs

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests" / "vectors" / "frames.json"
OUT = ROOT / "benchmarks" / "out"

SEEN: Counter[str] = Counter()
STATS = {"runs": 0, "frames": 0, "messages": 0, "started": 0.0, "target": 0, "reported": False}
JSON_OUT = False


def _count(where: str, err: EdgeError) -> None:
    SEEN[f"{where}: {type(err).__name__}"] += 1


def _decode_all(buffer: bytes) -> list[Frame]:
    out = []
    while True:
        try:
            consumed, frame = codec.decode(buffer)
        except EdgeError as err:
            _count("decode", err)
            consumed = getattr(err, "consumed", 0)
            if not 1 <= consumed <= len(buffer):
                raise AssertionError(f"error consumed {consumed} of {len(buffer)} bytes") from err
            buffer = buffer[consumed:]
            continue
        if not 0 <= consumed <= len(buffer) or (consumed == 0 and frame is not None):
            raise AssertionError(f"decode returned ({consumed}, {frame}) for {len(buffer)} bytes")
        if consumed == 0:
            return out
        if frame is not None:
            out.append(frame)
        buffer = buffer[consumed:]


def _check_frame(frame: Frame, where: str) -> None:
    """from_frame, then the re-encoding invariants."""
    STATS["frames"] += 1
    try:
        payload = codec.encode_payload(frame)
    except FrameTooLongError as err:  # msgpack float32 in a body comes back as float64
        _count(f"{where} re-encode", err)
        payload = None
    if payload is not None:
        again = codec.decode_payload(payload)
        if codec.encode_payload(again) != payload:
            raise AssertionError(f"re-encoding is not stable for {frame}")
    try:
        message = messages.from_frame(frame)
    except EdgeError as err:
        _count(f"{where} from_frame", err)
        return
    STATS["messages"] += 1
    body = msgpack.packb(message.to_body(), use_bin_type=True)
    sent = messages.to_frame(message, frame.seq, frame.t_us)
    try:
        data = codec.encode(sent)
    except FrameTooLongError as err:
        _count(f"{where} message re-encode", err)
        return
    consumed, back = codec.decode(data)
    if back is None or consumed != len(data):
        raise AssertionError(f"{type(message).__name__} did not survive re-encoding")
    again_body = msgpack.packb(messages.from_frame(back).to_body(), use_bin_type=True)
    if again_body != body:
        raise AssertionError(f"{type(message).__name__} changed on a second trip")


def test_one_input(data: bytes) -> None:
    STATS["runs"] += 1
    # 1. serial stream, the whole input at once
    whole = _decode_all(data)
    for frame in whole:
        _check_frame(frame, "serial")
    # 2. streaming decoder, in two pieces
    decoder = FrameDecoder()
    split = data[0] * len(data) // 256 if data else 0
    pieces = decoder.feed(data[:split])
    if len(decoder._buf) > MAX_ENCODED:
        raise AssertionError("FrameDecoder buffer exceeds MAX_ENCODED")
    pieces += decoder.feed(data[split:])
    if len(decoder._buf) > MAX_ENCODED:
        raise AssertionError("FrameDecoder buffer exceeds MAX_ENCODED")
    if decoder.frames != len(pieces):
        raise AssertionError("FrameDecoder.frames miscounts")
    if len(data) <= MAX_ENCODED and pieces != whole:
        raise AssertionError("FrameDecoder in pieces disagrees with decode()")
    # 3. ZeroMQ message
    try:
        frame = codec.decode_message_bytes(data)
    except EdgeError as err:
        _count("message", err)
    else:
        _check_frame(frame, "message")
    # 4. the input as a payload with a correct CRC, over both framings
    sealed = codec.seal(data)
    try:
        as_message: Frame | None = codec.decode_message_bytes(sealed)
    except EdgeError as err:
        _count("sealed message", err)
        as_message = None
    try:
        as_serial = codec.decode(cobs.encode(sealed) + b"\x00")[1]
    except EdgeError as err:
        _count("sealed serial", err)
        as_serial = None
    if as_message != as_serial:
        raise AssertionError(f"framings disagree: {as_message} vs {as_serial}")
    if as_message is not None:
        _check_frame(as_message, "sealed")
    if STATS["runs"] == STATS["target"]:
        report()


def report() -> None:
    if STATS["reported"]:
        return
    STATS["reported"] = True
    elapsed = time.monotonic() - STATS["started"]
    runs = STATS["runs"]
    summary = {
        "runs": runs,
        "seconds": round(elapsed, 1),
        "runs_per_s": round(runs / elapsed) if elapsed > 0 else None,
        "frames_decoded": STATS["frames"],
        "messages_decoded": STATS["messages"],
        "crashes": 0,  # a crash stops libFuzzer before this report
        "errors_seen": dict(sorted(SEEN.items())),
    }
    print(f"\nfuzz_codec: {runs} inputs in {elapsed:.1f} s ({summary['runs_per_s']}/s), "
          f"{STATS['frames']} frames and {STATS['messages']} messages decoded, no crash",
          file=sys.stderr)
    for name, n in summary["errors_seen"].items():
        print(f"  {n:>10}  {name}", file=sys.stderr)
    if JSON_OUT:
        print(json.dumps(summary), flush=True)
    sys.stderr.flush()


def write_seed_corpus(directory: Path) -> int:
    """One file per golden frame framing (serial, message, bare payload) and per bad frame."""
    directory.mkdir(parents=True, exist_ok=True)
    doc = json.loads(VECTORS.read_text("utf-8"))
    n = 0
    for entry in doc["frames"]:
        for key in ("serial_hex", "message_hex", "payload_hex"):
            (directory / f"{entry['name']}.{key[:-4]}").write_bytes(bytes.fromhex(entry[key]))
            n += 1
    for entry in doc["bad_frames"]:
        for key in ("serial_hex", "message_hex"):
            if entry[key]:
                (directory / f"bad_{entry['name']}.{key[:-4]}").write_bytes(
                    bytes.fromhex(entry[key]))
                n += 1
    return n


def main() -> None:
    global JSON_OUT
    parser = argparse.ArgumentParser(description="Fuzz the codec with atheris.", add_help=True)
    parser.add_argument("--runs", type=int, help="inputs to run (same as libFuzzer -runs=N)")
    parser.add_argument("--corpus", type=Path, default=OUT / "fuzz_corpus",
                        help="corpus directory, seeded from tests/vectors (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args, libfuzzer_args = parser.parse_known_args()
    JSON_OUT = args.json
    if args.runs is not None:
        libfuzzer_args.append(f"-runs={args.runs}")
    for flag in libfuzzer_args:
        if flag.startswith("-runs="):
            STATS["target"] = int(flag.split("=", 1)[1])
    if not any(a.startswith("-max_len=") for a in libfuzzer_args):
        libfuzzer_args.append(f"-max_len={2 * MAX_ENCODED + 64}")  # room for oversize frames
    if not any(a.startswith("-artifact_prefix=") for a in libfuzzer_args):
        OUT.mkdir(parents=True, exist_ok=True)
        libfuzzer_args.append(f"-artifact_prefix={OUT}{os.sep}fuzz-")
    seeds = write_seed_corpus(args.corpus)
    print(f"fuzz_codec: {seeds} seed inputs in {args.corpus}", file=sys.stderr)
    atexit.register(report)
    STATS["started"] = time.monotonic()
    atheris.Setup([sys.argv[0], *libfuzzer_args, str(args.corpus)], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
