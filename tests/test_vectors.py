"""The codec and messages against the golden frames in tests/vectors/frames.json.

The vectors are built without firmware_bridge (tests/vectors/generate.py), so these tests
check the project's codec against an independent construction of the same bytes.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from firmware_bridge import PROTOCOL_VERSION, codec, errors, messages
from firmware_bridge.codec import Frame, FrameDecoder
from firmware_bridge.messages import MsgType

VECTORS = json.loads((Path(__file__).parent / "vectors" / "frames.json").read_text("utf-8"))
FRAMES: list[dict[str, Any]] = VECTORS["frames"]
BAD_FRAMES: list[dict[str, Any]] = VECTORS["bad_frames"]
GOOD = bytes.fromhex(next(f for f in FRAMES if f["name"] == "heartbeat")["serial_hex"])

# Which FrameDecoder counter a codec error is counted in.
COUNTER = {
    "CrcError": "crc_failures",
    "FrameTooLongError": "oversize",
    "MalformedFrameError": "malformed",
    "FrameError": "malformed",
}


def _ids(entries: list[dict[str, Any]]) -> list[str]:
    return [e["name"] for e in entries]


def _bytes(entry: dict[str, Any], key: str) -> bytes:
    return bytes.fromhex(entry[key])


def _assert_header(frame: Frame, entry: dict[str, Any]) -> None:
    assert frame.version == entry["version"]
    assert frame.type == entry["type"] == MsgType[entry["type_name"]]
    assert frame.seq == entry["seq"]
    assert frame.t_us == entry["t_us"]


def _assert_field(name: str, actual: Any, expected: Any) -> None:
    if expected is None:
        assert actual is None, name
    elif isinstance(expected, list) and isinstance(actual, np.ndarray):
        # Compare the exact bytes: the JSON holds exact float32 values ("NaN" etc. as strings).
        want = np.array([float(v) if isinstance(v, str) else v for v in expected],
                        dtype=actual.dtype)
        assert actual.dtype == (np.int8 if name == "drive_sign" else np.dtype("<f4")), name
        assert actual.tobytes() == want.tobytes(), name
    elif isinstance(expected, list):
        assert list(actual) == expected, name
    else:
        assert type(expected) is type(actual) or isinstance(actual, type(expected)), name
        assert actual == expected, name


def _assert_message(message: messages.Message, entry: dict[str, Any]) -> None:
    assert message.TYPE.name == entry["type_name"]
    names = [f for f in message.__dataclass_fields__ if f != "TYPE"]
    assert sorted(names) == sorted(entry["fields"]), "the vector must give every field"
    for name, expected in entry["fields"].items():
        _assert_field(name, getattr(message, name), expected)


def test_when_crc_check_input_sealed_expect_standard_check_value():
    sealed = codec.seal(b"123456789")
    assert sealed[-4:] == (0xCBF43926).to_bytes(4, "little")
    assert VECTORS["crc32"]["check"] == "0xCBF43926"


def test_when_vectors_read_expect_constants_match_codec():
    c = VECTORS["constants"]
    assert VECTORS["protocol_version"] == PROTOCOL_VERSION
    assert (c["MAX_PAYLOAD"], c["CRC_BYTES"], c["MAX_SEALED"], c["MAX_ENCODED"]) == (
        codec.MAX_PAYLOAD, codec.CRC_BYTES, codec.MAX_SEALED, codec.MAX_ENCODED
    )


def test_when_vectors_listed_expect_every_message_type_covered():
    assert {f["type_name"] for f in FRAMES} >= {t.name for t in MsgType}


@pytest.mark.parametrize("entry", FRAMES, ids=_ids(FRAMES))
def test_when_golden_serial_frame_decoded_expect_its_fields(entry):
    data = _bytes(entry, "serial_hex")
    consumed, frame = codec.decode(data)
    assert consumed == len(data)
    assert frame is not None
    _assert_header(frame, entry)
    _assert_message(messages.from_frame(frame), entry)


@pytest.mark.parametrize("entry", FRAMES, ids=_ids(FRAMES))
def test_when_golden_message_decoded_expect_its_fields(entry):
    frame = codec.decode_message_bytes(_bytes(entry, "message_hex"))
    _assert_header(frame, entry)
    _assert_message(messages.from_frame(frame), entry)


@pytest.mark.parametrize("entry", FRAMES, ids=_ids(FRAMES))
def test_when_golden_frame_parts_checked_expect_payload_crc_and_cobs_consistent(entry):
    payload = _bytes(entry, "payload_hex")
    assert int(entry["crc32"], 16) == zlib.crc32(payload)
    assert _bytes(entry, "message_hex") == codec.seal(payload)
    serial = _bytes(entry, "serial_hex")
    assert serial.count(0) == 1 and serial[-1] == 0


@pytest.mark.parametrize("entry", [f for f in FRAMES if f["canonical"]],
                         ids=_ids([f for f in FRAMES if f["canonical"]]))
def test_when_decoded_golden_frame_reencoded_expect_identical_bytes(entry):
    frame = codec.decode_message_bytes(_bytes(entry, "message_hex"))
    message = messages.from_frame(frame)
    again = messages.to_frame(message, frame.seq, frame.t_us)
    if frame.version != PROTOCOL_VERSION:
        # to_frame always writes this host's version; the header is rebuilt by hand here.
        again = Frame(type=again.type, seq=again.seq, t_us=again.t_us, body=again.body,
                      version=frame.version)
    assert codec.encode_message_bytes(again) == _bytes(entry, "message_hex")
    assert codec.encode(again) == _bytes(entry, "serial_hex")
    assert codec.encode(frame) == _bytes(entry, "serial_hex")


@pytest.mark.parametrize("entry", [f for f in FRAMES if not f["canonical"]],
                         ids=_ids([f for f in FRAMES if not f["canonical"]]))
def test_when_non_canonical_frame_reencoded_expect_shortest_form_of_same_values(entry):
    frame = codec.decode_message_bytes(_bytes(entry, "message_hex"))
    again = codec.encode_payload(frame)
    assert len(again) < len(_bytes(entry, "payload_hex"))
    assert codec.decode_payload(again) == frame


def test_when_all_golden_frames_arrive_as_one_stream_expect_all_in_order():
    stream = b"".join(_bytes(f, "serial_hex") for f in FRAMES)
    want = [codec.decode_message_bytes(_bytes(f, "message_hex")) for f in FRAMES]
    decoder = FrameDecoder()
    assert decoder.feed(stream) == want
    bytewise = FrameDecoder()
    got = [frame for i in range(len(stream)) for frame in bytewise.feed(stream[i:i + 1])]
    assert got == want
    assert (decoder.crc_failures, decoder.malformed, decoder.oversize) == (0, 0, 0)


def test_when_delimiters_pad_a_frame_expect_them_skipped_without_errors():
    decoder = FrameDecoder()
    assert len(decoder.feed(b"\x00\x00" + GOOD + b"\x00")) == 1
    assert (decoder.crc_failures, decoder.malformed, decoder.oversize) == (0, 0, 0)
    assert codec.decode(b"\x00" + GOOD) == (1, None)


def test_when_one_byte_too_many_expect_longest_legal_frame_still_accepted():
    entry = next(f for f in FRAMES if f["name"] == "largest_payload")
    data = _bytes(entry, "serial_hex")
    assert len(data) == codec.MAX_ENCODED + 1  # the delimiter is not counted in MAX_ENCODED
    assert codec.decode(data)[1] is not None


SERIAL_BAD = [b for b in BAD_FRAMES if b["serial_hex"] and b["stage"] == "codec"]
MESSAGE_BAD = [b for b in BAD_FRAMES if b["message_hex"] and b["stage"] == "codec"]
MESSAGES_STAGE_BAD = [b for b in BAD_FRAMES if b["stage"] == "messages"]


@pytest.mark.parametrize("entry", SERIAL_BAD, ids=_ids(SERIAL_BAD))
def test_when_bad_serial_frame_decoded_expect_named_error_and_whole_frame_consumed(entry):
    data = _bytes(entry, "serial_hex")
    with pytest.raises(errors.FrameError) as info:
        codec.decode(data)
    assert type(info.value).__name__ == entry["error"]
    # Each bad vector is one frame (up to its delimiter, or all of it if it has none).
    assert info.value.consumed == len(data)


@pytest.mark.parametrize("entry", SERIAL_BAD, ids=_ids(SERIAL_BAD))
def test_when_bad_serial_frame_fed_expect_it_counted_and_next_frame_decoded(entry):
    data = _bytes(entry, "serial_hex")
    want = codec.decode(GOOD)[1]
    counter = COUNTER[entry["error"]]
    decoder = FrameDecoder()
    assert decoder.feed(data) == []
    assert getattr(decoder, counter) == 1
    assert decoder.feed(GOOD) == [want]
    # Also when bad and good frames arrive in one read; the oversize case is the known codec
    # bug tested below.
    if data.endswith(b"\x00") and entry["error"] != "FrameTooLongError":
        decoder = FrameDecoder()
        assert decoder.feed(GOOD + data + GOOD) == [want, want]
        assert getattr(decoder, counter) == 1
        assert decoder.frames == 2


OVERSIZE_THEN_GOOD = {
    "no_delimiter": b"\x01" * (codec.MAX_ENCODED + 1) + b"\x00",
    "delimited": bytes.fromhex(next(b for b in BAD_FRAMES if b["name"] == "oversize_payload")
                               ["serial_hex"]),
}


@pytest.mark.parametrize("oversize", list(OVERSIZE_THEN_GOOD.values()),
                         ids=list(OVERSIZE_THEN_GOOD))
def test_when_oversize_frame_and_a_good_frame_arrive_in_one_read_expect_the_good_frame_kept(
    oversize,
):
    want = codec.decode(GOOD)[1]
    stream = oversize + GOOD
    bytewise = FrameDecoder()
    assert [f for i in range(len(stream)) for f in bytewise.feed(stream[i:i + 1])] == [want]
    assert FrameDecoder().feed(stream) == [want]


@pytest.mark.parametrize("entry", MESSAGE_BAD, ids=_ids(MESSAGE_BAD))
def test_when_bad_message_decoded_expect_named_error(entry):
    with pytest.raises(errors.FrameError) as info:
        codec.decode_message_bytes(_bytes(entry, "message_hex"))
    assert type(info.value).__name__ == entry["error"]


@pytest.mark.parametrize("entry", MESSAGES_STAGE_BAD, ids=_ids(MESSAGES_STAGE_BAD))
def test_when_frame_breaks_its_message_layout_expect_codec_accepts_and_messages_refuse(entry):
    frame = codec.decode_message_bytes(_bytes(entry, "message_hex"))
    _consumed, serial_frame = codec.decode(_bytes(entry, "serial_hex"))
    assert serial_frame == frame
    assert FrameDecoder().feed(_bytes(entry, "serial_hex")) == [frame]
    with pytest.raises(errors.ProtocolError) as info:
        messages.from_frame(frame)
    assert type(info.value).__name__ == entry["error"]


def test_when_generator_rerun_expect_frames_json_unchanged():
    import importlib.util

    path = Path(__file__).parent / "vectors" / "generate.py"
    spec = importlib.util.spec_from_file_location("vectors_generate", path)
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    assert generate.render(generate.build()) == path.with_name("frames.json").read_text("utf-8")
