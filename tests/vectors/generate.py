"""Write the golden protocol frames in ``tests/vectors/frames.json`` (run by hand).

    .venv/bin/python tests/vectors/generate.py          # (re)write frames.json
    .venv/bin/python tests/vectors/generate.py --check  # exit 1 if frames.json is out of date

The bytes are built *independently of* ``firmware_bridge``: bodies from the field layout of
docs/PROTOCOL.md with ``struct`` and ``msgpack``, the CRC with a bitwise reference
implementation (cross-checked with ``zlib``), COBS with the reference encoder below
(cross-checked with the ``cobs`` package). ``tests/test_vectors.py`` then checks the project's
codec and messages against these bytes. For bad frames the expected error is stated here by
hand; the generator only verifies, after writing nothing, that the codec agrees, and refuses
to write a file that disagrees (a codec bug must be fixed, not recorded as golden).

frames.json, for firmware authors:
- ``frames``: valid frames. ``serial_hex`` is the whole serial frame (COBS, then the 0x00
  delimiter), ``message_hex`` the ZeroMQ message (msgpack payload + CRC-32 little-endian),
  ``payload_hex`` the msgpack payload alone and ``crc32`` its CRC. ``fields`` holds the
  message body by field name: integers, strings, float32 vectors as lists of numbers (the
  exact float32 value; non-finite values as the strings "NaN", "Infinity", "-Infinity"),
  int8 vectors as lists of integers, an absent optional vector as null. ``canonical`` is
  false for frames that use longer-than-needed msgpack forms: a receiver must accept them,
  but a sender encodes the same values in the shortest form, so re-encoding gives other bytes.
- ``bad_frames``: inputs a receiver must reject, with the stage that rejects them ("codec":
  framing, CRC or header; "messages": a well-formed frame whose body breaks its message's
  layout) and the name of the error ``firmware_bridge`` raises.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import msgpack
from cobs import cobs

HERE = Path(__file__).resolve().parent
OUT = HERE / "frames.json"

PROTOCOL_VERSION = 1
MAX_PAYLOAD = 2048
CRC_BYTES = 4
MAX_SEALED = MAX_PAYLOAD + CRC_BYTES
MAX_ENCODED = MAX_SEALED + MAX_SEALED // 254 + 1
U32 = 0xFFFF_FFFF
U64 = 0xFFFF_FFFF_FFFF_FFFF

TYPES = {
    "HELLO": 0x01, "INFO": 0x02, "STATE_REQUEST": 0x03, "STATE": 0x04, "SETPOINT": 0x05,
    "MODE": 0x06, "ESTOP": 0x07, "CLEAR_FAULT": 0x08, "CAL_READ": 0x09, "CAL_DATA": 0x0A,
    "CAL_WRITE": 0x0B, "HEARTBEAT": 0x0C, "FAULT": 0x0D, "ACK": 0x0E,
}
MODE = {"TORQUE_OFF": 0, "HOLD": 1, "POSITION": 2, "FAULT": 3, "ESTOP": 4}
FAULT = {"NONE": 0, "WATCHDOG": 1, "JOINT_LIMIT": 2, "ESTOP": 3, "BAD_SETPOINT": 4, "STALL": 5,
         "INTERNAL": 6}
ACK = {"OK": 0, "REJECTED": 1, "BAD_REQUEST": 2, "UNSUPPORTED": 3}

# Body layout of every message type (docs/PROTOCOL.md, "Messages"): (field, kind) in order.
# kinds: uint, str, str_list, f32 (bin of float32 LE), f32_or_nil, i8 (bin of int8).
_CAL = [("homing_offset", "f32"), ("drive_sign", "i8"), ("position_min", "f32"),
        ("position_max", "f32"), ("calibration_id", "str")]
LAYOUT: dict[str, list[tuple[str, str]]] = {
    "HELLO": [("version_min", "uint"), ("version_max", "uint"), ("host_name", "str")],
    "INFO": [("protocol_version", "uint"), ("firmware_version", "str"), ("device_id", "str"),
             ("joint_names", "str_list"), ("position_min", "f32"), ("position_max", "f32"),
             ("velocity_max", "f32"), ("watchdog_ms", "uint"), ("servo_rate_hz", "uint")],
    "STATE_REQUEST": [],
    "STATE": [("mode", "uint"), ("fault", "uint"), ("position", "f32"), ("velocity", "f32"),
              ("effort", "f32")],
    "SETPOINT": [("reach_in_us", "uint"), ("position", "f32"), ("velocity", "f32_or_nil")],
    "MODE": [("mode", "uint")],
    "ESTOP": [("reason", "str")],
    "CLEAR_FAULT": [],
    "CAL_READ": [],
    "CAL_DATA": _CAL,
    "CAL_WRITE": _CAL,
    "HEARTBEAT": [],
    "FAULT": [("code", "uint"), ("detail", "str")],
    "ACK": [("status", "uint"), ("detail", "str")],
}


# -- reference implementations (what a firmware author writes) ---------------------------------
def crc32_reference(data: bytes) -> int:
    """CRC-32/ISO-HDLC bit by bit: reflected poly 0xEDB88320 (0x04C11DB7), init and xorout
    0xFFFFFFFF."""
    crc = 0xFFFF_FFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB8_8320 if crc & 1 else 0)
    return crc ^ 0xFFFF_FFFF


def cobs_encode_reference(data: bytes) -> bytes:
    """Canonical COBS: a block of 254 non-zero bytes is coded 0xFF and, when the input ends
    right after it, no empty block follows."""
    out = bytearray()
    block = bytearray()
    ended_full_block = False
    for byte in data:
        ended_full_block = False
        if byte == 0:
            out.append(len(block) + 1)
            out += block
            block.clear()
        else:
            block.append(byte)
            if len(block) == 254:
                out.append(0xFF)
                out += block
                block.clear()
                ended_full_block = True
    if not ended_full_block:
        out.append(len(block) + 1)
        out += block
    return bytes(out)


def _cobs(data: bytes) -> bytes:
    ours = cobs_encode_reference(data)
    if ours != cobs.encode(data):
        raise SystemExit(f"reference COBS disagrees with the cobs package for {data.hex()}")
    return ours


def seal(payload: bytes) -> bytes:
    crc = crc32_reference(payload)
    if crc != zlib.crc32(payload):
        raise SystemExit("reference CRC-32 disagrees with zlib")
    return payload + crc.to_bytes(CRC_BYTES, "little")


def serial(payload: bytes) -> bytes:
    return _cobs(seal(payload)) + b"\x00"


# -- values -----------------------------------------------------------------------------------
def _f32(value: float | str) -> float:
    """The float32 nearest ``value`` (a number or "NaN"/"Infinity"/"-Infinity") as a double."""
    return struct.unpack("<f", struct.pack("<f", float(value)))[0]


def _json_float(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def f32_list(values: list[float | str]) -> list[float | str]:
    return [_json_float(_f32(v)) for v in values]


def _pack_field(kind: str, value: Any) -> Any:
    if kind in ("uint", "str"):
        return value
    if kind == "str_list":
        return list(value)
    if kind == "f32" or (kind == "f32_or_nil" and value is not None):
        return struct.pack(f"<{len(value)}f", *(float(v) for v in value))
    if kind == "f32_or_nil":
        return None
    if kind == "i8":
        return struct.pack(f"<{len(value)}b", *value)
    raise ValueError(kind)


def body_of(type_name: str, fields: dict[str, Any]) -> list[Any]:
    layout = LAYOUT[type_name]
    if [name for name, _ in layout] != list(fields):
        raise SystemExit(f"{type_name}: fields {list(fields)} do not follow the layout")
    return [_pack_field(kind, fields[name]) for name, kind in layout]


def payload_of(version: int, type_num: int, seq: int, t_us: int, body: list[Any]) -> bytes:
    return msgpack.packb([version, type_num, seq, t_us, body], use_bin_type=True)


# -- valid frames ---------------------------------------------------------------------------------
ARM = ["shoulder_pan", "shoulder_lift", "elbow", "wrist_flex", "wrist_roll", "wrist_pitch"]
JOINTS7 = [*ARM, "gripper"]
POS7 = f32_list([0.0, -0.5, 1.25, -1.0, 0.1, 2.5, 0.02])
VEL7 = f32_list([0.25, 0.0, -0.125, 1.5, -2.0, 0.0, 0.01])
EFF7 = f32_list([1.5, -3.25, 0.75, 0.0, 0.05, -0.2, 4.0])
CAL7 = {
    "homing_offset": f32_list([0.1, -0.2, 0.3, 0.0, 3.14159265, -1.5707963, 0.0]),
    "drive_sign": [1, -1, 1, 1, -1, 1, 1],
    "position_min": f32_list([-2.8] * 6 + [0.0]),
    "position_max": f32_list([2.8] * 6 + [0.04]),
    "calibration_id": "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
}


def _valid_specs() -> list[dict[str, Any]]:
    """Each spec: name, description, type, seq, t_us, fields (and version, raw payload)."""
    s: list[dict[str, Any]] = []

    def add(name: str, description: str, type_name: str, seq: int, t_us: int,
            fields: dict[str, Any], version: int = PROTOCOL_VERSION) -> None:
        s.append(dict(name=name, description=description, type_name=type_name, seq=seq,
                      t_us=t_us, fields=fields, version=version))

    add("worked_example_setpoint_2_joints",
        "The worked example of docs/PROTOCOL.md: move 2 joints to 0.5 and -0.25 rad in 10 ms.",
        "SETPOINT", 42, 1_000_000,
        {"reach_in_us": 10_000, "position": f32_list([0.5, -0.25]), "velocity": None})
    add("hello", "Host -> device: speaks versions 1..1.", "HELLO", 1, 123_456_789,
        {"version_min": 1, "version_max": 1, "host_name": "ramp-edge"})
    add("hello_utf8_host_name", "HELLO with a non-ASCII host name (UTF-8 in a msgpack str).",
        "HELLO", 2, 5, {"version_min": 1, "version_max": 3, "host_name": "röbot-µ-01"})
    add("info_7_joints", "Device -> host: the emulator's default 7-joint arm (6 revolute + "
        "prismatic gripper in m).", "INFO", 1, 987_654,
        {"protocol_version": 1, "firmware_version": "emulator-1.0", "device_id": "emu-0",
         "joint_names": JOINTS7, "position_min": f32_list([-2.8] * 6 + [0.0]),
         "position_max": f32_list([2.8] * 6 + [0.04]),
         "velocity_max": f32_list([2.0] * 6 + [0.1]), "watchdog_ms": 100,
         "servo_rate_hz": 1000})
    add("state_request_max_seq_and_t_us",
        "STATE_REQUEST with seq = 2^32-1 and t_us = 2^64-1 (largest header values).",
        "STATE_REQUEST", U32, U64, {})
    add("state_7_joints", "Device -> host: measured state of 7 joints, tracking in POSITION.",
        "STATE", 3, 1_700_000_000_123,
        {"mode": MODE["POSITION"], "fault": FAULT["NONE"], "position": POS7,
         "velocity": VEL7, "effort": EFF7})
    add("state_zero_vectors", "STATE whose vectors are all 0.0: long runs of 0x00 bytes in the "
        "payload (COBS replaces each), and t_us = 0.", "STATE", 7, 0,
        {"mode": MODE["TORQUE_OFF"], "fault": FAULT["NONE"], "position": f32_list([0.0] * 7),
         "velocity": f32_list([0.0] * 7), "effort": f32_list([0.0] * 7)})
    add("state_fault_estop", "STATE after an e-stop: mode ESTOP, fault ESTOP.", "STATE", 99,
        4_000_000, {"mode": MODE["ESTOP"], "fault": FAULT["ESTOP"], "position": POS7,
                    "velocity": f32_list([0.0] * 7), "effort": EFF7})
    add("setpoint_7_joints_worst_case_header",
        "SETPOINT for 7 joints, no velocity, seq = 2^32-1 and t_us = 2^64-1: the frame "
        "benchmarks/wire_bytes.py counts.", "SETPOINT", U32, U64,
        {"reach_in_us": 10_000, "position": POS7, "velocity": None})
    add("setpoint_7_joints_with_velocity", "SETPOINT with velocity feed-forward.", "SETPOINT",
        1000, 2_000_000, {"reach_in_us": 20_000, "position": POS7, "velocity": VEL7})
    add("setpoint_max_reach", "SETPOINT with reach_in_us = 2^32-1 (about 71.6 min).",
        "SETPOINT", 11, 12, {"reach_in_us": U32, "position": POS7, "velocity": None})
    add("setpoint_non_finite", "A well-formed SETPOINT carrying NaN and infinities: the codec "
        "accepts it; a device in POSITION latches FAULT BAD_SETPOINT.", "SETPOINT", 12, 13,
        {"reach_in_us": 10_000,
         "position": f32_list(["NaN", "Infinity", "-Infinity", 0.0, 0.0, 0.0, 0.0]),
         "velocity": None})
    for mode in ("TORQUE_OFF", "HOLD", "POSITION"):
        add(f"mode_{mode.lower()}", f"MODE request: switch to {mode}.", "MODE", 20 + MODE[mode],
            30_000, {"mode": MODE[mode]})
    add("estop", "ESTOP with a reason.", "ESTOP", 40, 41, {"reason": "teleop e-stop button"})
    add("estop_empty_reason", "ESTOP without a reason (empty string).", "ESTOP", 41, 42,
        {"reason": ""})
    add("clear_fault", "CLEAR_FAULT.", "CLEAR_FAULT", 50, 51, {})
    add("cal_read", "CAL_READ.", "CAL_READ", 60, 61, {})
    add("cal_data_7_joints", "Device -> host: stored calibration of 7 joints.", "CAL_DATA", 60,
        62, CAL7)
    add("cal_write_7_joints", "Host -> device: store this calibration (torque off only).",
        "CAL_WRITE", 70, 71, CAL7)
    n = 32
    add("cal_data_32_joints", "Calibration of 32 joints (the most MAX_PAYLOAD was sized for): "
        "a payload over 254 bytes.", "CAL_DATA", 80, 81,
        {"homing_offset": f32_list([0.01 * (i - 16) for i in range(n)]),
         "drive_sign": [1 if i % 3 else -1 for i in range(n)],
         "position_min": f32_list([-3.0 + 0.01 * i for i in range(n)]),
         "position_max": f32_list([3.0 - 0.01 * i for i in range(n)]),
         "calibration_id": "cal-32"})
    add("heartbeat", "HEARTBEAT.", "HEARTBEAT", 1, 0, {})
    add("fault_watchdog", "Device -> host, unsolicited (seq 0): watchdog fault latched.",
        "FAULT", 0, 5_500_000, {"code": FAULT["WATCHDOG"], "detail": "no setpoint for 500 ms"})
    add("fault_estop", "Unsolicited FAULT sent after an ESTOP was latched.", "FAULT", 0,
        5_600_000, {"code": FAULT["ESTOP"], "detail": "teleop e-stop button"})
    for status, detail in (("OK", "POSITION"), ("REJECTED", "calibration can only be written "
                           "with torque off"), ("BAD_REQUEST", "SETPOINT body has 2 fields, "
                           "expected 3"), ("UNSUPPORTED", "protocol version mismatch")):
        add(f"ack_{status.lower()}", f"ACK with status {status}.", "ACK", 300 + ACK[status],
            6_000_000, {"status": ACK[status], "detail": detail})
    add("estop_long_reason_cobs_block", "ESTOP with a 300-character reason: more than 254 "
        "non-zero bytes in a row, so COBS needs a 0xFF block and then another.", "ESTOP", 0x0101,
        0x0101_0101, {"reason": "x" * 300})
    add("future_version_heartbeat", "A HEARTBEAT in a version-2 header: the codec decodes it; "
        "a version-1 device answers ACK UNSUPPORTED and a version-1 host ignores it.",
        "HEARTBEAT", 5, 6, {}, version=2)
    s.append(_sized_estop("sealed_exactly_254_bytes", 254 - CRC_BYTES,
                          "ESTOP whose sealed payload is exactly 254 non-zero bytes: canonical "
                          "COBS is 0xFF + 254 bytes with no empty block after it."))
    s.append(_sized_estop("largest_payload", MAX_PAYLOAD,
                          "ESTOP whose payload is exactly MAX_PAYLOAD (2048) bytes with no "
                          "0x00 anywhere: the serial frame is exactly MAX_ENCODED (2061) bytes "
                          "plus the delimiter, the longest a receiver must accept."))
    return s


def _sized_estop(name: str, payload_len: int, description: str) -> dict[str, Any]:
    """An ESTOP frame with seq = t_us = 1 whose payload is ``payload_len`` bytes and whose
    payload and CRC hold no 0x00 (the reason's last letters are varied until the CRC has none)."""
    head = len(payload_of(PROTOCOL_VERSION, TYPES["ESTOP"], 1, 1, [""]))
    reason_len = payload_len - head - (1 if payload_len - head > 31 else 0)
    reason_len -= 1 if reason_len > 255 else 0  # str16 takes 3 header bytes, str8 2
    for i in range(26 * 26):
        reason = "r" * (reason_len - 2) + chr(97 + i // 26) + chr(97 + i % 26)
        payload = payload_of(PROTOCOL_VERSION, TYPES["ESTOP"], 1, 1, [reason])
        if len(payload) != payload_len:
            raise SystemExit(f"{name}: payload is {len(payload)} bytes, wanted {payload_len}")
        if 0 not in seal(payload):
            return dict(name=name, description=description, type_name="ESTOP", seq=1, t_us=1,
                        fields={"reason": reason}, version=PROTOCOL_VERSION)
    raise SystemExit(f"{name}: no reason found whose CRC has no 0x00 byte")


def _non_canonical_specs() -> list[dict[str, Any]]:
    """Frames in longer-than-needed msgpack forms that C encoders often emit (fixed widths)."""
    heartbeat = bytes.fromhex(
        "dd00000005"  # array32 of 5
        "cc01"  # version 1 as uint8
        "d00c"  # type 12 as int8
        "ce00000001"  # seq 1 as uint32
        "cf0000000000000005"  # t_us 5 as uint64
        "dc0000"  # body: array16 of 0
    )
    pos = struct.pack("<2f", 0.5, -0.25)
    setpoint = (
        bytes.fromhex("95") + bytes([PROTOCOL_VERSION, TYPES["SETPOINT"]])
        + bytes.fromhex("cd0007")  # seq 7 as uint16
        + bytes.fromhex("d300000000000f4240")  # t_us 1_000_000 as int64
        + bytes.fromhex("93")
        + bytes.fromhex("ce00002710")  # reach_in_us 10_000 as uint32
        + bytes.fromhex("c50008") + pos  # position as bin16
        + bytes.fromhex("c0")
    )
    estop = (
        bytes.fromhex("9501070808") + bytes.fromhex("91")
        + bytes.fromhex("da0002") + b"hi"  # reason as str16
    )
    return [
        dict(name="non_canonical_fixed_width_ints", description="HEARTBEAT whose integers are "
             "sent in fixed widths (array32, uint8, int8, uint32, uint64, array16): the same "
             "frame as seq 1, t_us 5 in shortest form.", type_name="HEARTBEAT", seq=1, t_us=5,
             fields={}, version=PROTOCOL_VERSION, payload=heartbeat),
        dict(name="non_canonical_setpoint", description="SETPOINT with a uint16 seq, an int64 "
             "t_us, a uint32 reach_in_us and the position in bin16.", type_name="SETPOINT",
             seq=7, t_us=1_000_000, fields={"reach_in_us": 10_000,
                                            "position": f32_list([0.5, -0.25]),
                                            "velocity": None},
             version=PROTOCOL_VERSION, payload=setpoint),
        dict(name="non_canonical_str16", description="ESTOP whose reason is sent as str16.",
             type_name="ESTOP", seq=8, t_us=8, fields={"reason": "hi"},
             version=PROTOCOL_VERSION, payload=estop),
    ]


def _frame_entry(spec: dict[str, Any]) -> dict[str, Any]:
    type_num = TYPES[spec["type_name"]]
    canonical_payload = payload_of(spec["version"], type_num, spec["seq"], spec["t_us"],
                                   body_of(spec["type_name"], spec["fields"]))
    payload = spec.get("payload", canonical_payload)
    canonical = payload == canonical_payload
    if "payload" in spec and canonical:
        raise SystemExit(f"{spec['name']}: meant to be non-canonical but is not")
    if msgpack.unpackb(payload) != msgpack.unpackb(canonical_payload):
        raise SystemExit(f"{spec['name']}: payload does not hold the stated values")
    sealed = seal(payload)
    return {
        "name": spec["name"],
        "description": spec["description"],
        "version": spec["version"],
        "type": type_num,
        "type_name": spec["type_name"],
        "seq": spec["seq"],
        "t_us": spec["t_us"],
        "fields": spec["fields"],
        "canonical": canonical,
        "payload_hex": payload.hex(),
        "crc32": f"0x{zlib.crc32(payload):08X}",
        "message_hex": sealed.hex(),
        "serial_hex": serial(payload).hex(),
    }


# -- bad frames ----------------------------------------------------------------------------------
def _bad_specs() -> list[dict[str, Any]]:
    def pl(*obj: Any) -> bytes:
        return msgpack.packb(list(obj), use_bin_type=True)

    hb = pl(1, TYPES["HEARTBEAT"], 9, 10, [])
    hb_sealed = seal(hb)
    bad_crc = hb_sealed[:-1] + bytes([hb_sealed[-1] ^ 0x01])
    if 0 in bad_crc:
        raise SystemExit("bad_crc: choose another frame (a 0x00 in the CRC)")
    long_payload = pl(1, TYPES["ESTOP"], 1, 1, ["y" * (MAX_PAYLOAD - 9 + 1)])
    assert len(long_payload) == MAX_PAYLOAD + 1, len(long_payload)
    zero_payload = pl(1, TYPES["ESTOP"], 1, 1, [b"\0" * (MAX_PAYLOAD - 9 + 1)])
    assert len(zero_payload) == MAX_PAYLOAD + 1, len(zero_payload)
    sp = seal(pl(1, TYPES["SETPOINT"], 5, 6, [1000, struct.pack("<3f", 1, 2, 3), None]))
    sp_cobs = _cobs(sp)
    if sp_cobs[0] <= 4:
        raise SystemExit("truncated: the first COBS block is too short to cut inside")
    pos7 = struct.pack("<7f", *[0.1] * 7)

    def both(name: str, description: str, error: str, payload: bytes,
             stage: str = "codec") -> dict[str, Any]:
        return dict(name=name, description=description, stage=stage, error=error,
                    serial_hex=serial(payload).hex(), message_hex=seal(payload).hex())

    def msg_stage(name: str, description: str, payload: bytes) -> dict[str, Any]:
        return both(name, description, "ProtocolError", payload, stage="messages")

    return [
        dict(name="bad_crc", description="HEARTBEAT whose last CRC byte has one bit flipped.",
             stage="codec", error="CrcError", serial_hex=(_cobs(bad_crc) + b"\0").hex(),
             message_hex=bad_crc.hex()),
        dict(name="bad_cobs", description="A COBS code byte (0x05) that points past the frame's "
             "end.", stage="codec", error="FrameError", serial_hex="05010200", message_hex=None),
        dict(name="truncated_serial", description="A SETPOINT frame cut inside its first COBS "
             "block (bytes lost on the line), then the delimiter.", stage="codec",
             error="FrameError", serial_hex=(sp_cobs[:4] + b"\0").hex(), message_hex=None),
        dict(name="truncated_message", description="A SETPOINT message missing its last byte.",
             stage="codec", error="CrcError", serial_hex=None, message_hex=sp[:-1].hex()),
        dict(name="too_short_for_crc", description="A frame of 1 byte (serial: COBS 02 11) / 4 "
             "bytes (message): no room for payload and CRC.", stage="codec", error="CrcError",
             serial_hex="021100", message_hex="11223344"),
        dict(name="empty_after_cobs", description="The serial frame 01 00 decodes to nothing.",
             stage="codec", error="CrcError", serial_hex="0100", message_hex=None),
        dict(name="oversize_no_delimiter", description="MAX_ENCODED + 1 bytes of 0x01 and no "
             "delimiter: rejected once more bytes arrived than any frame can have.",
             stage="codec", error="FrameTooLongError",
             serial_hex=(b"\x01" * (MAX_ENCODED + 1)).hex(), message_hex=None),
        dict(name="oversize_payload", description="A correctly sealed payload of MAX_PAYLOAD "
             "+ 1 bytes: serial encoding is MAX_ENCODED + 1 bytes before the delimiter; the "
             "message is MAX_SEALED + 1 bytes.", stage="codec", error="FrameTooLongError",
             serial_hex=serial(long_payload).hex(), message_hex=seal(long_payload).hex()),
        dict(name="oversize_payload_short_encoding", description="A correctly sealed payload "
             "of MAX_PAYLOAD + 1 bytes, mostly 0x00, so its COBS encoding is within "
             "MAX_ENCODED: still rejected for its length.", stage="codec",
             error="MalformedFrameError", serial_hex=serial(zero_payload).hex(),
             message_hex=None),
        both("not_msgpack", "Payload 0xC1 (a byte msgpack never uses), correct CRC.",
             "MalformedFrameError", b"\xc1"),
        both("non_array_payload", "Payload is the integer 7, not an array.",
             "MalformedFrameError", msgpack.packb(7)),
        both("wrong_arity_4", "Payload array of 4 elements (no body).", "MalformedFrameError",
             msgpack.packb([1, TYPES["HEARTBEAT"], 1, 2])),
        both("wrong_arity_6", "Payload array of 6 elements.", "MalformedFrameError",
             msgpack.packb([1, TYPES["HEARTBEAT"], 1, 2, [], 0])),
        both("trailing_bytes", "A valid HEARTBEAT payload followed by one more byte, CRC over "
             "both.", "MalformedFrameError", hb + b"\x01"),
        both("type_out_of_range", "type = 256.", "MalformedFrameError", pl(1, 256, 1, 2, [])),
        both("version_negative", "version = -1.", "MalformedFrameError", pl(-1, 12, 1, 2, [])),
        both("seq_out_of_range", "seq = 2^32.", "MalformedFrameError", pl(1, 12, U32 + 1, 2, [])),
        both("seq_bool", "seq = true (a msgpack bool is not an integer).", "MalformedFrameError",
             pl(1, 12, True, 2, [])),
        both("t_us_negative", "t_us = -1.", "MalformedFrameError", pl(1, 12, 1, -1, [])),
        both("t_us_float", "t_us = 1.0 (a msgpack float).", "MalformedFrameError",
             pl(1, 12, 1, 1.0, [])),
        both("body_is_map", "body = {} instead of an array.", "MalformedFrameError",
             pl(1, 12, 1, 2, {})),
        both("body_is_nil", "body = nil.", "MalformedFrameError", pl(1, 12, 1, 2, None)),
        both("invalid_utf8", "ESTOP whose reason is a msgpack str holding invalid UTF-8.",
             "MalformedFrameError", bytes.fromhex("950107010191a2c328")),
        msg_stage("unknown_type_0x7f", "type 0x7F, which no version-1 message has: the codec "
                  "accepts the frame, the message layer refuses it (a device answers ACK "
                  "UNSUPPORTED).", pl(1, 0x7F, 1, 2, [])),
        msg_stage("type_zero", "type 0x00 is not a message type.", pl(1, 0, 1, 2, [])),
        msg_stage("heartbeat_with_body", "HEARTBEAT with one body field (it has none).",
                  pl(1, TYPES["HEARTBEAT"], 1, 2, [1])),
        msg_stage("setpoint_missing_velocity", "SETPOINT body of 2 fields (velocity must be "
                  "present, as nil when unused).",
                  pl(1, TYPES["SETPOINT"], 1, 2, [1000, pos7])),
        msg_stage("setpoint_position_as_floats", "SETPOINT position as a msgpack array of "
                  "floats instead of float32 bytes.",
                  pl(1, TYPES["SETPOINT"], 1, 2, [1000, [0.1] * 7, None])),
        msg_stage("setpoint_position_as_str", "SETPOINT position as a msgpack str holding the "
                  "bytes (must be bin).", bytes.fromhex("9501050102") + bytes.fromhex("93cd03e8")
                  + bytes.fromhex("a4") + b"abcd" + bytes.fromhex("c0")),
        msg_stage("setpoint_position_odd_length", "SETPOINT position of 27 bytes (not a "
                  "multiple of 4).", pl(1, TYPES["SETPOINT"], 1, 2, [1000, pos7[:-1], None])),
        msg_stage("setpoint_velocity_length_mismatch", "SETPOINT with 7 positions and 6 "
                  "velocities.", pl(1, TYPES["SETPOINT"], 1, 2, [1000, pos7, pos7[:24]])),
        msg_stage("setpoint_reach_negative", "SETPOINT with reach_in_us = -1.",
                  pl(1, TYPES["SETPOINT"], 1, 2, [-1, pos7, None])),
        msg_stage("setpoint_reach_too_large", "SETPOINT with reach_in_us = 2^32.",
                  pl(1, TYPES["SETPOINT"], 1, 2, [U32 + 1, pos7, None])),
        msg_stage("state_unknown_mode", "STATE with mode 9.",
                  pl(1, TYPES["STATE"], 1, 2, [9, 0, pos7, pos7, pos7])),
        msg_stage("state_effort_length_mismatch", "STATE with 7 positions and 6 efforts.",
                  pl(1, TYPES["STATE"], 1, 2, [2, 0, pos7, pos7, pos7[:24]])),
        msg_stage("mode_as_string", "MODE with \"POSITION\" instead of 2.",
                  pl(1, TYPES["MODE"], 1, 2, ["POSITION"])),
        msg_stage("ack_unknown_status", "ACK with status 7.",
                  pl(1, TYPES["ACK"], 1, 2, [7, ""])),
        msg_stage("fault_unknown_code", "FAULT with code 200.",
                  pl(1, TYPES["FAULT"], 0, 2, [200, ""])),
        msg_stage("cal_write_drive_sign_zero", "CAL_WRITE with a drive sign of 0 (must be +1 "
                  "or -1).", pl(1, TYPES["CAL_WRITE"], 1, 2,
                                [pos7, struct.pack("<7b", 1, 1, 0, 1, 1, 1, 1), pos7, pos7, ""])),
        msg_stage("info_duplicate_joint_names", "INFO naming a joint twice.",
                  pl(1, TYPES["INFO"], 1, 2, [1, "fw", "id", ["a", "a"], pos7[:8], pos7[:8],
                                               pos7[:8], 100, 1000])),
        msg_stage("info_no_joints", "INFO with an empty joint_names array.",
                  pl(1, TYPES["INFO"], 1, 2, [1, "fw", "id", [], b"", b"", b"", 100, 1000])),
    ]


# -- self-check against the codec and messages --------------------------------------------------
def _self_check(doc: dict[str, Any]) -> list[str]:
    """What the project's codec does with each vector, where it differs from the vector."""
    sys.path.insert(0, str(HERE.parents[1]))
    from firmware_bridge import codec, errors, messages

    problems = []
    for entry in doc["frames"]:
        for hex_key, decode in (("serial_hex", codec.decode),
                                ("message_hex", codec.decode_message_bytes)):
            data = bytes.fromhex(entry[hex_key])
            result = decode(data)
            frame = result[1] if isinstance(result, tuple) else result
            if frame is None or (frame.seq, frame.t_us) != (entry["seq"], entry["t_us"]):
                problems.append(f"{entry['name']} ({hex_key}): decoded as {frame}")
            else:
                messages.from_frame(frame)
    for entry in doc["bad_frames"]:
        for hex_key in ("serial_hex", "message_hex"):
            if entry[hex_key] is None:
                continue
            data = bytes.fromhex(entry[hex_key])
            got = "no error"
            try:
                if hex_key == "serial_hex":
                    frame = codec.decode(data)[1]
                else:
                    frame = codec.decode_message_bytes(data)
                if frame is not None:
                    messages.from_frame(frame)
            except errors.EdgeError as err:
                got = type(err).__name__
            if got != entry["error"]:
                problems.append(f"bad frame {entry['name']} ({hex_key}): {got}, "
                                f"expected {entry['error']}")
    return problems


def build() -> dict[str, Any]:
    if crc32_reference(b"123456789") != 0xCBF43926:
        raise SystemExit("CRC-32 reference check value is wrong")
    frames = [_frame_entry(spec) for spec in _valid_specs() + _non_canonical_specs()]
    names = [f["name"] for f in frames]
    if len(set(names)) != len(names):
        raise SystemExit("duplicate vector names")
    missing = set(TYPES) - {f["type_name"] for f in frames}
    if missing:
        raise SystemExit(f"no vector for {sorted(missing)}")
    return {
        "about": "Golden frames of the ramp-edge motor-controller protocol (docs/PROTOCOL.md). "
                 "Generated by tests/vectors/generate.py; do not edit by hand.",
        "protocol_version": PROTOCOL_VERSION,
        "constants": {"MAX_PAYLOAD": MAX_PAYLOAD, "CRC_BYTES": CRC_BYTES,
                      "MAX_SEALED": MAX_SEALED, "MAX_ENCODED": MAX_ENCODED},
        "crc32": {"name": "CRC-32/ISO-HDLC", "poly": "0x04C11DB7", "reflected": True,
                  "init": "0xFFFFFFFF", "xorout": "0xFFFFFFFF", "check_input": "123456789",
                  "check": "0xCBF43926", "byte_order": "little-endian"},
        "frames": frames,
        "bad_frames": _bad_specs(),
    }


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the existing file instead of writing it")
    args = parser.parse_args(argv)
    doc = build()
    text = render(doc)
    problems = _self_check(doc)
    if problems:
        print("the codec disagrees with these vectors (fix the codec or the vector):",
              *problems, sep="\n  ", file=sys.stderr)
        return 1
    if args.check:
        current = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
        if current != text:
            print(f"{OUT} is out of date: run tests/vectors/generate.py", file=sys.stderr)
            return 1
        print(f"{OUT} is up to date", file=sys.stderr)
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {len(doc['frames'])} frames and {len(doc['bad_frames'])} bad frames to {OUT}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
