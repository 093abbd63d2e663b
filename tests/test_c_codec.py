"""The portable C codec (firmware_bridge/c/) against the golden frames and the Python codec.

The C code is built with the host's gcc into a small driver (firmware_bridge/c/test_driver.c)
that decodes hex frames given on stdin and encodes messages described on stdin, answering with
JSON lines. Bodies are compared in one representation on both sides: integers, "s:<hex>" for a
str, "b:<hex>" for a bin (joint vectors as their exact little-endian float32 bytes), None for
nil, lists for joint_names. Skipped only when no C compiler is installed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from firmware_bridge import codec, errors, messages
from firmware_bridge.codec import Frame
from firmware_bridge.messages import MsgType

C_DIR = Path(__file__).resolve().parent.parent / "firmware_bridge" / "c"
VECTORS = json.loads((Path(__file__).parent / "vectors" / "frames.json").read_text("utf-8"))
FRAMES: list[dict[str, Any]] = VECTORS["frames"]
BAD_FRAMES: list[dict[str, Any]] = VECTORS["bad_frames"]
GOOD_HEX = next(f for f in FRAMES if f["name"] == "heartbeat")["serial_hex"]
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1", "-g"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
ENV = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0",
       "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
# Which streaming-decoder counter each codec error class is counted in (as FrameDecoder).
COUNTER = {"CrcError": "crc_failures", "FrameTooLongError": "oversize",
           "MalformedFrameError": "malformed", "FrameError": "malformed"}
GENERATED = 300  # seeded generated messages per direction
FUZZED = 400  # seeded mutated payloads compared for their verdict
SEED = 20261126

# --------------------------------------------------------------------------------------------
# Building and driving the C code


def _compiler() -> str | None:
    return shutil.which("gcc") or shutil.which("cc")


def _build(cc: str, out: Path, sources: list[Path],
           extra: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([cc, *CFLAGS, *extra, "-I", str(C_DIR), *map(str, sources), "-o",
                           str(out)], capture_output=True, text=True, timeout=120)


def _sanitizers_work(cc: str, tmp: Path) -> bool:
    probe = tmp / "probe.c"
    probe.write_text("int main(void) { return 0; }\n")
    if _build(cc, tmp / "probe", [probe], SANITIZE).returncode != 0:
        return False
    return subprocess.run([str(tmp / "probe")], env=ENV, timeout=30).returncode == 0


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> dict[str, Any]:
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler (gcc or cc) on PATH: the C codec cannot be built")
    tmp = tmp_path_factory.mktemp("c_codec")
    extra = SANITIZE if _sanitizers_work(cc, tmp) else []
    built = {}
    for name, main in (("driver", "test_driver.c"), ("example", "example_main.c")):
        result = _build(cc, tmp / name, [C_DIR / "ramp_codec.c", C_DIR / main], extra)
        assert result.returncode == 0, result.stderr
        built[name] = tmp / name
    built["sanitized"] = bool(extra)
    return built


def _drive(build: dict[str, Any], commands: list[str]) -> list[Any]:
    """Run the driver on ``commands``; one answer per command (a list of events for S)."""
    result = subprocess.run([str(build["driver"])], input="\n".join(commands) + "\n",
                            capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "runtime error" not in result.stderr, result.stderr[-4000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    answers: list[Any] = []
    it = iter(lines)
    for command in commands:
        if command.startswith("S "):
            events = []
            for event in it:
                events.append(event)
                if event["event"] == "end":
                    break
            answers.append(events)
        else:
            answers.append(next(it))
    assert next(it, None) is None
    return answers


# --------------------------------------------------------------------------------------------
# The shared body representation


def _rep(value: Any) -> Any:
    if isinstance(value, bytes):
        return "b:" + value.hex()
    if isinstance(value, str):
        return "s:" + value.encode("utf-8").hex()
    if isinstance(value, list):
        return [_rep(v) for v in value]
    return value  # int or None


def _fields_rep(entry: dict[str, Any]) -> list[Any]:
    """The golden entry's ``fields`` in body order, built from the JSON alone."""
    out: list[Any] = []
    for name, value in entry["fields"].items():
        if name == "drive_sign":
            out.append("b:" + struct.pack(f"<{len(value)}b", *value).hex())
        elif name == "joint_names":
            out.append([_rep(v) for v in value])
        elif isinstance(value, list):
            floats = [float(v) for v in value]  # "NaN", "Infinity" included
            out.append("b:" + struct.pack(f"<{len(floats)}f", *floats).hex())
        else:
            out.append(_rep(value))
    return out


def _header(event: dict[str, Any]) -> tuple[int, int, int, int]:
    return event["version"], event["type"], event["seq"], event["t_us"]


def _token(value: Any) -> str:
    """One field of an E command."""
    if value is None:
        return "nil"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return ",".join(_token(v) for v in value)
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return raw.hex() or "-"


def _encode_command(frame: Frame) -> str:
    return " ".join(["E", str(frame.type), str(frame.version), str(frame.seq), str(frame.t_us),
                     *(_token(v) for v in frame.body)])


def _python_verdict(sealed: bytes) -> dict[str, Any]:
    """What the Python codec makes of a sealed payload, in the driver's terms."""
    try:
        frame = codec.decode_message_bytes(sealed)
    except errors.FrameError as err:
        return {"event": "error", "error": type(err).__name__}
    event = {"event": "frame", "version": frame.version, "type": frame.type, "seq": frame.seq,
             "t_us": frame.t_us}
    try:
        event["body"] = _rep(messages.from_frame(frame).to_body())
    except errors.ProtocolError as err:
        event["error"] = type(err).__name__
    return event


def _c_verdict(event: dict[str, Any]) -> dict[str, Any]:
    event = dict(event)
    event.pop("code", None)
    return event


# --------------------------------------------------------------------------------------------
# Golden frames


def test_when_built_expect_example_main_loop_answers_setpoint_with_state(build):
    result = subprocess.run([str(build["example"])], capture_output=True, text=True, env=ENV,
                            timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    replies = [bytes.fromhex(line.split()[1]) for line in result.stdout.splitlines()
               if line.startswith("reply ")]
    decoder = codec.FrameDecoder()
    frames = decoder.feed(b"".join(replies))
    assert decoder.frames == 3 and (decoder.crc_failures, decoder.malformed) == (0, 0)
    state, ack, info = (messages.from_frame(f) for f in frames)
    assert isinstance(state, messages.State) and frames[0].seq == 42  # the SETPOINT's seq
    assert state.position.tolist() == [0.5, -0.25] and state.mode == messages.Mode.POSITION
    assert isinstance(ack, messages.Ack) and ack.status == messages.AckStatus.OK
    assert isinstance(info, messages.Info) and info.joint_names == ("shoulder", "elbow")


def test_when_golden_frames_decoded_by_c_expect_their_fields(build):
    commands = []
    for entry in FRAMES:
        commands += ["R", "S " + entry["serial_hex"], "M " + entry["message_hex"]]
    answers = _drive(build, commands)
    for i, entry in enumerate(FRAMES):
        events, message = answers[3 * i + 1], answers[3 * i + 2]
        assert len(events) == 2 and events[1]["frames"] == 1, entry["name"]
        for event in (events[0], message):
            assert event["event"] == "frame", (entry["name"], event)
            assert _header(event) == (entry["version"], entry["type"], entry["seq"],
                                      entry["t_us"]), entry["name"]
            assert MsgType(event["type"]).name == entry["type_name"]
            assert event["body"] == _fields_rep(entry), entry["name"]


def test_when_golden_fields_encoded_by_c_expect_golden_bytes(build):
    canonical = [f for f in FRAMES if f["canonical"]]
    commands = []
    for entry in canonical:
        frame = codec.decode_message_bytes(bytes.fromhex(entry["message_hex"]))
        commands.append(_encode_command(frame))
    for entry, answer in zip(canonical, _drive(build, commands), strict=True):
        assert answer["event"] == "encoded", (entry["name"], answer)
        assert answer["serial"] == entry["serial_hex"], entry["name"]
        assert answer["message"] == entry["message_hex"], entry["name"]


def test_when_non_canonical_frames_reencoded_by_c_expect_python_shortest_form(build):
    entries = [f for f in FRAMES if not f["canonical"]]
    frames = [codec.decode_message_bytes(bytes.fromhex(f["message_hex"])) for f in entries]
    for frame, answer in zip(frames, _drive(build, [_encode_command(f) for f in frames]),
                             strict=True):
        assert answer["message"] == codec.encode_message_bytes(frame).hex()


def test_when_all_golden_frames_arrive_as_one_stream_expect_all_in_order(build):
    stream = "00" + "".join(f["serial_hex"] for f in FRAMES) + "0000"
    events = _drive(build, ["S " + stream])[0]
    assert [e["body"] for e in events[:-1]] == [_fields_rep(f) for f in FRAMES]
    end = events[-1]
    assert (end["frames"], end["crc_failures"], end["malformed"], end["oversize"]) == (
        len(FRAMES), 0, 0, 0)


# --------------------------------------------------------------------------------------------
# Bad frames

SERIAL_BAD = [b for b in BAD_FRAMES if b["serial_hex"] and b["stage"] == "codec"]
MESSAGE_BAD = [b for b in BAD_FRAMES if b["message_hex"] and b["stage"] == "codec"]
MESSAGES_STAGE_BAD = [b for b in BAD_FRAMES if b["stage"] == "messages"]


def test_when_bad_serial_frames_fed_expect_named_error_counted_and_next_frame_decoded(build):
    commands = []
    for entry in SERIAL_BAD:
        data = entry["serial_hex"]
        commands += ["R", "S " + data, "S " + GOOD_HEX, "R", "S " + GOOD_HEX + data + GOOD_HEX]
    answers = _drive(build, commands)
    for i, entry in enumerate(SERIAL_BAD):
        bad, good, _, mixed = answers[5 * i + 1: 5 * i + 5]
        name, counter = entry["name"], COUNTER[entry["error"]]
        assert [e["event"] for e in bad] == ["error", "end"], name
        assert bad[0]["error"] == entry["error"], name
        assert bad[1][counter] == 1 and bad[1]["frames"] == 0, name
        assert [e["event"] for e in good] == ["frame", "end"], name
        assert good[0]["type"] == MsgType.HEARTBEAT, name
        frames = [e for e in mixed if e["event"] == "frame"]
        errs = [e["error"] for e in mixed if e["event"] == "error"]
        # Also when bad and good frames arrive in one read (oversize ones included: the C
        # decoder restarts right after the byte that made a frame too long).
        assert len(frames) == 2 and errs == [entry["error"]], (name, mixed)
        assert mixed[-1][counter] == 1, name


def test_when_oversize_then_good_frame_expect_good_frame_kept(build):
    streams = ["01" * (codec.MAX_ENCODED + 1) + "00" + GOOD_HEX,
               next(b for b in BAD_FRAMES if b["name"] == "oversize_payload")["serial_hex"]
               + GOOD_HEX]
    answers = _drive(build, [c for s in streams for c in ("R", "S " + s)])
    for events in answers[1::2]:
        assert [e.get("error") for e in events[:-1]] == ["FrameTooLongError", None]
        assert events[1]["type"] == MsgType.HEARTBEAT
        assert events[-1]["oversize"] == 1 and events[-1]["frames"] == 1


def test_when_bad_messages_decoded_by_c_expect_named_error(build):
    answers = _drive(build, ["M " + b["message_hex"] for b in MESSAGE_BAD])
    for entry, answer in zip(MESSAGE_BAD, answers, strict=True):
        assert answer == {"event": "error", "error": entry["error"]}, entry["name"]


def test_when_frame_breaks_message_layout_expect_c_codec_accepts_and_body_refused(build):
    commands = []
    for entry in MESSAGES_STAGE_BAD:
        commands += ["R", "S " + entry["serial_hex"], "M " + entry["message_hex"]]
    answers = _drive(build, commands)
    for i, entry in enumerate(MESSAGES_STAGE_BAD):
        events, message = answers[3 * i + 1], answers[3 * i + 2]
        frame = codec.decode_message_bytes(bytes.fromhex(entry["message_hex"]))
        # A device answers an unassigned type with ACK UNSUPPORTED, a bad layout BAD_REQUEST.
        code = "UNSUPPORTED" if frame.type not in messages.MESSAGE_TYPES else "BAD_BODY"
        for event in (events[0], message):
            assert event["event"] == "frame", entry["name"]
            assert _header(event) == (frame.version, frame.type, frame.seq, frame.t_us)
            assert (event["error"], event["code"]) == (entry["error"], code), entry["name"]
        assert events[-1]["frames"] == 1


# --------------------------------------------------------------------------------------------
# Generated messages, both directions


def _f32(rng: random.Random, n: int) -> np.ndarray:
    """n float32 values, exact bits: mostly ordinary numbers, some NaN/inf/denormal/-0."""
    raw = bytearray()
    for _ in range(n):
        pick = rng.random()
        if pick < 0.1:
            bits = rng.getrandbits(32)  # any pattern, NaN payloads included
        elif pick < 0.15:
            bits = rng.choice([0x7F800000, 0xFF800000, 0x7FC00000, 0x80000000, 0x00000001])
        else:
            raw += struct.pack("<f", rng.uniform(-4.0, 4.0))
            continue
        raw += struct.pack("<I", bits)
    return np.frombuffer(bytes(raw), dtype="<f4")


def _text(rng: random.Random, max_len: int) -> str:
    alphabet = "abcXYZ019 _-./:röbµ€漢😀"
    length = rng.choice([0, 1, rng.randint(0, 31), rng.randint(32, 255), rng.randint(0, max_len)])
    return "".join(rng.choice(alphabet) for _ in range(min(length, max_len)))


def _uint(rng: random.Random, bits: int) -> int:
    edges = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**bits - 1]
    return rng.choice([e for e in edges if e < 2**bits] + [rng.getrandbits(bits)] * 3)


def _message(rng: random.Random, kind: type[messages.Message]) -> messages.Message:
    n = rng.randint(0, 32)
    m = messages
    if kind is m.Hello:
        return m.Hello(_uint(rng, 32), _uint(rng, 32), _text(rng, 300))
    if kind is m.Info:
        n = max(n, 1)
        names = tuple(f"{_text(rng, 8)}#{i}" for i in range(n))
        return m.Info(_uint(rng, 32), _text(rng, 40), _text(rng, 40), names, _f32(rng, n),
                      _f32(rng, n), _f32(rng, n), _uint(rng, 32), _uint(rng, 32))
    if kind is m.State:
        return m.State(m.Mode(rng.randint(0, 4)), m.FaultCode(rng.randint(0, 6)),
                       _f32(rng, n), _f32(rng, n), _f32(rng, n))
    if kind is m.Setpoint:
        return m.Setpoint(_uint(rng, 32), _f32(rng, n), rng.choice([None, _f32(rng, n)]))
    if kind is m.ModeRequest:
        return m.ModeRequest(m.Mode(rng.randint(0, 4)))
    if kind is m.EStop:
        # Now and then longer than MAX_PAYLOAD: both sides must refuse to encode it.
        return m.EStop("x" * rng.randint(2030, 2100) if rng.random() < 0.05 else _text(rng, 600))
    if kind in (m.Calibration, m.CalWrite):
        signs = np.array([rng.choice([1, -1]) for _ in range(n)], dtype=np.int8)
        return kind(_f32(rng, n), signs, _f32(rng, n), _f32(rng, n), _text(rng, 80))
    if kind in (m.Fault, m.Ack):
        enum = m.FaultCode if kind is m.Fault else m.AckStatus
        return kind(enum(rng.randint(0, len(enum) - 1)), _text(rng, 300))
    return kind()


def _generated(seed: int) -> list[Frame]:
    rng = random.Random(seed)
    kinds = list(messages.MESSAGE_TYPES.values())
    out = []
    for i in range(GENERATED):
        message = _message(rng, kinds[i % len(kinds)])
        out.append(messages.to_frame(message, _uint(rng, 32), _uint(rng, 64)))
    # One payload of MAX_PAYLOAD + 1 bytes: both encoders must refuse it.
    out.append(messages.to_frame(messages.EStop("x" * (codec.MAX_PAYLOAD - 8)), 1, 0))
    return out


def test_when_generated_messages_encoded_by_c_expect_python_bytes_and_fields(build):
    frames = _generated(SEED)
    answers = _drive(build, [_encode_command(f) for f in frames])
    too_long = 0
    for frame, answer in zip(frames, answers, strict=True):
        try:
            want_serial = codec.encode(frame)
        except errors.FrameTooLongError:
            assert answer == {"event": "error", "error": "FrameTooLongError"}
            too_long += 1
            continue
        assert answer["event"] == "encoded", (frame.type, answer)
        assert answer["serial"] == want_serial.hex()
        assert answer["message"] == codec.encode_message_bytes(frame).hex()
        # And what the C encoder wrote, decoded by the Python codec and messages:
        consumed, decoded = codec.decode(bytes.fromhex(answer["serial"]))
        assert consumed == len(want_serial)
        assert decoded == codec.decode_message_bytes(bytes.fromhex(answer["message"]))
        assert _rep(messages.from_frame(decoded).to_body()) == _rep(frame.body)
    assert too_long < len(frames) // 10


def test_when_generated_python_frames_decoded_by_c_expect_same_fields(build):
    frames = _generated(SEED + 1)
    commands, expected = [], []
    for frame in frames:
        try:
            serial, sealed = codec.encode(frame), codec.encode_message_bytes(frame)
        except errors.FrameTooLongError:
            continue
        commands += ["S " + serial.hex(), "M " + sealed.hex()]
        expected.append(_python_verdict(sealed))
    stream = "".join(c[2:] for c in commands[0::2])
    commands.append("R")
    commands.append("S " + stream)  # all of them as one byte stream, too
    answers = _drive(build, commands)
    for i, want in enumerate(expected):
        events, message = answers[2 * i], answers[2 * i + 1]
        assert events[0] == want and message == want
    assert [e for e in answers[-1] if e["event"] != "end"] == expected


# --------------------------------------------------------------------------------------------
# Mutated payloads: the C codec must reach the Python codec's verdict


def _outside_c_limits(verdict: dict[str, Any]) -> bool:
    """Bodies Python accepts but the C codec refuses on purpose (see firmware_bridge/c/README.md):
    more than RAMP_MAX_JOINTS joints, or a HELLO/INFO integer that is not a uint32."""
    body = verdict.get("body")
    if body is None:
        return False
    ints = [v for v in body if isinstance(v, int)]
    vectors = [v for v in body if isinstance(v, str) and v.startswith("b:")]
    names = [v for v in body if isinstance(v, list)]
    return (any(not 0 <= v <= 0xFFFF_FFFF for v in ints)
            or any(len(v) - 2 > 2 * 4 * 32 for v in vectors) or any(len(v) > 32 for v in names))


def test_when_payloads_mutated_expect_c_verdict_equals_python_verdict(build):
    rng = random.Random(SEED + 2)
    payloads = [bytes.fromhex(f["payload_hex"]) for f in FRAMES]
    payloads += [bytes.fromhex(b["message_hex"])[:-4] for b in BAD_FRAMES if b["message_hex"]]
    cases = []
    for _ in range(FUZZED):
        data = bytearray(rng.choice(payloads))
        for _ in range(rng.randint(1, 3)):
            op = rng.random()
            if op < 0.5 and data:
                data[rng.randrange(len(data))] = rng.getrandbits(8)
            elif op < 0.7 and data:
                del data[rng.randrange(len(data)):][: rng.randint(1, 4)]
            elif op < 0.85:
                data.insert(rng.randrange(len(data) + 1), rng.choice(
                    [0xC0, 0xC1, 0xC2, 0xC3, 0xD9, 0xC4, 0xCA, 0xD4, 0xFF, 0x81, 0x91, 0xA1]))
            elif data:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        cases.append(codec.seal(bytes(data)))
    answers = _drive(build, ["M " + c.hex() for c in cases])
    skipped = 0
    for sealed, answer in zip(cases, answers, strict=True):
        want = _python_verdict(sealed)
        if _outside_c_limits(want) and answer.get("error") == "ProtocolError":
            skipped += 1
            continue
        assert _c_verdict(answer) == want, sealed.hex()
    assert skipped < len(cases) // 10
    verdicts = [a.get("error") or a["event"] for a in answers]
    assert {"frame", "MalformedFrameError", "ProtocolError"} <= set(verdicts)


# Payloads of an unassigned type (0x7f) whose body exercises corners of the msgpack reader:
# the codec level must agree with msgpack-python (which builds Timestamps for ext -1, demands
# str or bin map keys, decodes str as strict UTF-8).
EDGE_BODIES = {
    "timestamp32": "91d6ff00000000",
    "timestamp64": "91d7ff0000000000000000",
    "timestamp64_nanoseconds_too_large": "91d7ffffffffffffffffff",
    "timestamp96": "91c70cff000000000000000000000000",
    "timestamp96_nanoseconds_too_large": "91c70cffffffffff0000000000000000",
    "timestamp_bad_length": "91c703ff000000",
    "ext_other_type": "91c70305000000",
    "map_int_key": "91810101",
    "map_str_key": "9181a16101",
    "map_bin_key": "9181c4016101",
    "nested_16_deep": "91" * 15 + "90",
    "utf8_surrogate": "91a3eda080",
    "utf8_overlong": "91a2c080",
    "utf8_u10ffff": "91a4f48fbfbf",
    "utf8_above_u10ffff": "91a4f4908080",
    "float32": "91ca3f800000",
    "truncated_str": "91a561",
    "array32_count_past_end": "91dd00010000",
}
# Where the C codec is stricter on purpose (firmware_bridge/c/README.md, "Differences").
KNOWN_DIFFERENCES = {
    "nested_17_deep": ("95017f0102" + "91" * 16 + "90", "MalformedFrameError"),
    "hello_negative_version_min": ("950101010293ff01a0", "ProtocolError"),
    # 33 joints: beyond RAMP_MAX_JOINTS, refused before anything is stored.
    "setpoint_33_joints": ("950105010293" + "00c484" + "00" * 132 + "c0", "ProtocolError"),
    "cal_write_33_joints": ("95010b010295" + "c484" + "00" * 132 + "c421" + "01" * 33
                            + ("c484" + "00" * 132) * 2 + "a0", "ProtocolError"),
}


def test_when_msgpack_corner_cases_decoded_expect_c_verdict_equals_python_verdict(build):
    sealed = [codec.seal(bytes.fromhex("95017f0102" + b)) for b in EDGE_BODIES.values()]
    for name, answer, data in zip(EDGE_BODIES, _drive(build, ["M " + s.hex() for s in sealed]),
                                  sealed, strict=True):
        assert _c_verdict(answer) == _python_verdict(data), name
    known = [codec.seal(bytes.fromhex(p)) for p, _ in KNOWN_DIFFERENCES.values()]
    for (name, (_, error)), answer, data in zip(
        KNOWN_DIFFERENCES.items(), _drive(build, ["M " + s.hex() for s in known]), known,
        strict=True,
    ):
        assert answer.get("error") == error, name
        assert "body" in _python_verdict(data) or _python_verdict(data)["error"] != error, name
