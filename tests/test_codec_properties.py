"""Property tests of the frame codec (Hypothesis). Budget: every test writes out its
``max_examples``; the whole file runs in well under 20 s on 2 cores."""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge import codec, errors, messages
from firmware_bridge.codec import MAX_ENCODED, MAX_SEALED, Frame, FrameDecoder
from firmware_bridge.messages import (
    AckStatus,
    FaultCode,
    Mode,
    from_frame,
    to_frame,
)

U32 = 0xFFFF_FFFF
U64 = 0xFFFF_FFFF_FFFF_FFFF
# No deadline: a 2-core CI machine under load must not turn a slow example into a failure.
FAST = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies -----------------------------------------------------------------------------------
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), U64)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=12,
)

frames = st.builds(
    Frame,
    type=st.integers(0, 255),
    seq=st.integers(0, U32),
    t_us=st.integers(0, U64),
    body=st.lists(msgpack_values, max_size=5),
    version=st.integers(0, 255),
)


def _f32(draw: st.DrawFn, n: int) -> np.ndarray:
    # Any 32-bit pattern, NaN payloads and infinities included: vectors travel as raw bytes.
    return np.frombuffer(draw(st.binary(min_size=4 * n, max_size=4 * n)), "<f4")


@st.composite
def typed_messages(draw: st.DrawFn) -> messages.Message:
    """One message of any type with arbitrary (valid) fields."""
    cls = draw(st.sampled_from(sorted(messages.MESSAGE_TYPES.values(), key=lambda c: c.TYPE)))
    n = draw(st.integers(1, 32))
    text = st.text(max_size=24)
    uint = st.integers(0, U32)
    if cls is messages.Hello:
        return cls(draw(uint), draw(uint), draw(text))
    if cls is messages.Info:
        names = draw(st.lists(st.text(min_size=1, max_size=8), min_size=n, max_size=n,
                              unique=True))
        return cls(draw(uint), draw(text), draw(text), tuple(names), _f32(draw, n),
                   _f32(draw, n), _f32(draw, n), draw(uint), draw(uint))
    if cls is messages.State:
        return cls(draw(st.sampled_from(Mode)), draw(st.sampled_from(FaultCode)),
                   _f32(draw, n), _f32(draw, n), _f32(draw, n))
    if cls is messages.Setpoint:
        position = _f32(draw, n)
        return cls(draw(uint), position, _f32(draw, n) if draw(st.booleans()) else None)
    if cls is messages.ModeRequest:
        return cls(draw(st.sampled_from(Mode)))
    if cls is messages.EStop:
        return cls(draw(text))
    if cls in (messages.Calibration, messages.CalWrite):
        signs = np.array(draw(st.lists(st.sampled_from([1, -1]), min_size=n, max_size=n)),
                         np.int8)
        return cls(_f32(draw, n), signs, _f32(draw, n), _f32(draw, n), draw(text))
    if cls is messages.Fault:
        return cls(draw(st.sampled_from(FaultCode)), draw(text))
    if cls is messages.Ack:
        return cls(draw(st.sampled_from(AckStatus)), draw(text))
    return cls()  # the messages without a body


@st.composite
def mutated(draw: st.DrawFn, encode=codec.encode) -> bytes:
    """A valid encoded frame after a few random edits (flip, delete, insert, cut, repeat)."""
    data = bytearray(encode(draw(frames)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "cut", "repeat"]))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "delete" and data:
            del data[i]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "cut":
            del data[i:]
        elif op == "repeat":
            data += data[i:]
    return bytes(data)


def _assert_same_message(a: messages.Message, b: messages.Message) -> None:
    assert type(a) is type(b)
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            assert np.asarray(x).dtype == np.asarray(y).dtype, name
            assert np.asarray(x).tobytes() == np.asarray(y).tobytes(), name
        else:
            assert x == y, name


def _decode_all(buffer: bytes) -> list[Frame]:
    """Use ``decode`` the way a caller must: drop ``consumed`` bytes after each call or error.
    Checks the contract on ``consumed`` as it goes."""
    out = []
    while True:
        try:
            consumed, frame = codec.decode(buffer)
        except errors.FrameError as err:
            assert 1 <= err.consumed <= len(buffer)
            buffer = buffer[err.consumed:]
            continue
        assert 0 <= consumed <= len(buffer)
        if consumed == 0:
            assert frame is None
            return out
        if frame is not None:
            out.append(frame)
        buffer = buffer[consumed:]


def _feed_in_pieces(decoder: FrameDecoder, data: bytes, cuts: list[int]) -> list[Frame]:
    out: list[Frame] = []
    edges = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    for a, b in itertools.pairwise(edges):
        out += decoder.feed(data[a:b])
        assert len(decoder._buf) <= MAX_ENCODED  # private, but the bound is the contract
    return out


# -- round trips ---------------------------------------------------------------------------------
@settings(max_examples=300, **FAST)
@given(frames)
def test_when_any_frame_encoded_for_serial_expect_decode_returns_it(frame):
    data = codec.encode(frame)
    assert data.index(0) == len(data) - 1  # exactly one 0x00: the delimiter at the end
    assert codec.decode(data) == (len(data), frame)


@settings(max_examples=300, **FAST)
@given(frames)
def test_when_any_frame_encoded_as_message_expect_decode_returns_it(frame):
    assert codec.decode_message_bytes(codec.encode_message_bytes(frame)) == frame


@settings(max_examples=300, **FAST)
@given(typed_messages(), st.integers(0, U32), st.integers(0, U64))
def test_when_any_message_sent_over_either_framing_expect_same_message_back(message, seq, t_us):
    frame = to_frame(message, seq, t_us)
    for decoded in (codec.decode(codec.encode(frame))[1],
                    codec.decode_message_bytes(codec.encode_message_bytes(frame))):
        assert decoded is not None
        assert (decoded.type, decoded.seq, decoded.t_us) == (int(message.TYPE), seq, t_us)
        _assert_same_message(from_frame(decoded), message)


@settings(max_examples=100, **FAST)
@given(st.sampled_from(sorted(messages.MESSAGE_TYPES)), st.binary(max_size=300))
def test_when_body_too_large_for_a_frame_expect_frame_too_long_on_encode(msg_type, pad):
    body = [b"\x01" * (codec.MAX_PAYLOAD + 1 - len(pad)), pad]
    with pytest.raises(errors.FrameTooLongError):
        codec.encode(Frame(type=msg_type, seq=1, t_us=1, body=body))


_bad_headers = st.one_of(
    st.builds(Frame, type=st.integers(256, 2**16) | st.integers(-100, -1), seq=st.just(1),
              t_us=st.just(1)),
    st.builds(Frame, type=st.just(1), seq=st.just(1), t_us=st.just(1),
              version=st.integers(256, 2**16) | st.integers(-100, -1)),
    st.builds(Frame, type=st.just(1), seq=st.booleans(), t_us=st.just(1)),
    st.builds(Frame, type=st.just(1), seq=st.just(1), t_us=st.just(1),
              body=st.tuples(st.integers()) | st.dictionaries(st.text(), st.integers())),
)


@settings(max_examples=50, **FAST)
@given(_bad_headers)
def test_when_encode_accepts_a_frame_expect_decode_to_return_it(frame):
    try:
        data = codec.encode(frame)
    except errors.FrameError:
        return
    assert codec.decode(data) == (len(data), frame)


# -- hostile input -------------------------------------------------------------------------------
@settings(max_examples=300, **FAST)
@given(st.binary(max_size=600) | mutated())
def test_when_random_or_mutated_bytes_decoded_expect_only_frame_errors(data):
    for frame in _decode_all(data):
        with contextlib.suppress(errors.ProtocolError):
            from_frame(frame)
    with contextlib.suppress(errors.FrameError):
        codec.decode_message_bytes(data)


@settings(max_examples=300, **FAST)
@given(st.binary(max_size=600) | mutated(), st.lists(st.integers(0, 700), max_size=6))
def test_when_random_or_mutated_bytes_fed_in_pieces_expect_no_exception_and_bounded_buffer(
    data, cuts
):
    decoder = FrameDecoder()
    out = _feed_in_pieces(decoder, data, cuts)
    assert decoder.frames == len(out)
    assert out == _decode_all(data)  # the streaming decoder agrees with decode()


@settings(max_examples=300, **FAST)
@given(mutated(encode=codec.encode_message_bytes))
def test_when_mutated_message_decoded_expect_only_frame_errors(data):
    try:
        frame = codec.decode_message_bytes(data)
    except errors.FrameError:
        return
    with contextlib.suppress(errors.ProtocolError):
        from_frame(frame)


# -- streams -------------------------------------------------------------------------------------
_gaps = st.one_of(
    st.just(b""),
    st.binary(min_size=1, max_size=3).map(lambda b: b"\x00" * len(b)),  # filler delimiters
    # short garbage, ended by a delimiter so that it cannot swallow the next frame
    st.binary(min_size=1, max_size=80).map(lambda b: b.replace(b"\x00", b"\x01") + b"\x00"),
)


@settings(max_examples=300, **FAST)
@given(st.lists(st.tuples(frames, _gaps), min_size=1, max_size=6),
       st.lists(st.integers(0, 4000), max_size=12))
def test_when_stream_of_frames_split_at_any_points_expect_same_frames_in_order(items, cuts):
    stream = b"".join(gap + codec.encode(frame) for frame, gap in items)
    want = [frame for frame, _ in items]
    decoder = FrameDecoder()
    assert _feed_in_pieces(decoder, stream, cuts) == want
    assert decoder.frames == len(want)


# -- corruption ----------------------------------------------------------------------------------
@settings(max_examples=300, **FAST)
@given(frames, st.data())
def test_when_one_bit_flips_in_a_serial_frame_expect_it_never_accepted(frame, data):
    encoded = bytearray(codec.encode(frame))
    i = data.draw(st.integers(0, len(encoded) - 1), label="byte")
    encoded[i] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    sentinel = Frame(type=0x0C, seq=7, t_us=7)
    decoder = FrameDecoder()
    out = decoder.feed(bytes(encoded) + codec.encode(sentinel))
    # Never accepted at all (a CRC-32 miss on a restructured COBS frame is 2^-32 per try).
    assert all(f == sentinel for f in out)
    assert _decode_all(bytes(encoded)) == []


@settings(max_examples=300, **FAST)
@given(frames, st.data())
def test_when_burst_of_up_to_32_bits_hits_a_message_expect_crc_error(frame, data):
    # CRC-32 detects every error burst of at most 32 bits, the CRC field included (bits
    # counted least significant first, the order of this reflected CRC).
    message = codec.encode_message_bytes(frame)
    nbits = 8 * len(message)
    length = data.draw(st.integers(1, min(32, nbits)), label="burst length")
    pattern = 1 | (1 << (length - 1)) | data.draw(st.integers(0, 2 ** max(length - 1, 0) - 1))
    offset = data.draw(st.integers(0, nbits - length), label="offset")
    damaged = int.from_bytes(message, "little") ^ (pattern << offset)
    with pytest.raises(errors.CrcError):
        codec.decode_message_bytes(damaged.to_bytes(len(message), "little"))


@settings(max_examples=40, **FAST)
@given(frames)
def test_when_each_single_bit_of_a_message_flipped_expect_crc_error_every_time(frame):
    message = bytearray(codec.encode_message_bytes(frame))
    for i in range(len(message) * 8):
        message[i // 8] ^= 1 << (i % 8)
        with pytest.raises(errors.CrcError):
            codec.decode_message_bytes(bytes(message))
        message[i // 8] ^= 1 << (i % 8)


# -- oversize ------------------------------------------------------------------------------------
_no_zero = st.binary(min_size=1, max_size=64).map(lambda b: b.replace(b"\x00", b"\x01"))


@settings(max_examples=100, **FAST)
@given(_no_zero, st.integers(MAX_ENCODED + 1, 3 * MAX_ENCODED))
def test_when_more_than_max_encoded_bytes_without_delimiter_expect_frame_too_long(pattern, n):
    data = (pattern * (n // len(pattern) + 1))[:n]
    with pytest.raises(errors.FrameTooLongError) as info:
        codec.decode(data)
    assert info.value.consumed == n
    assert codec.decode(data[:MAX_ENCODED]) == (0, None)  # one byte fewer: still waiting


@settings(max_examples=100, **FAST)
@given(_no_zero, st.lists(st.integers(1, 1500), min_size=1, max_size=12), frames)
def test_when_endless_bytes_without_delimiter_fed_expect_buffer_bounded_and_recovery(
    pattern, chunk_sizes, frame
):
    decoder = FrameDecoder()
    total = 0
    for size in chunk_sizes:
        assert decoder.feed((pattern * (size // len(pattern) + 1))[:size]) == []
        total += size
        assert len(decoder._buf) <= MAX_ENCODED  # private, but the bound is the contract
    assert (decoder.oversize >= 1) == (total > MAX_ENCODED)
    # Once a delimiter ends the junk, the next frame gets through.
    assert decoder.feed(b"\x00") == []
    assert decoder.feed(codec.encode(frame)) == [frame]


@settings(max_examples=100, **FAST)
@given(st.integers(MAX_SEALED + 1, 3 * MAX_SEALED), st.binary(min_size=1, max_size=8))
def test_when_message_longer_than_max_sealed_expect_frame_too_long(n, pattern):
    with pytest.raises(errors.FrameTooLongError):
        codec.decode_message_bytes((pattern * n)[:n])


def _is_uint(value: Any, limit: int) -> bool:
    return type(value) is int and 0 <= value <= limit


_element = (st.integers(-5, 300) | st.integers(0, U64) | st.integers(-(2**63), -1)
            | st.booleans() | st.floats(allow_nan=False) | st.none() | st.text(max_size=3))
_header_like = (
    st.tuples(_element, _element, _element, _element,
              st.lists(msgpack_values, max_size=3) | msgpack_values).map(list)
    | st.lists(_element, min_size=4, max_size=6)
)


@settings(max_examples=300, **FAST)
@given(_header_like | msgpack_values)
def test_when_sealed_payload_is_any_msgpack_value_expect_frame_only_if_header_valid(value):
    valid = (
        type(value) is list and len(value) == 5
        and _is_uint(value[0], 0xFF) and _is_uint(value[1], 0xFF)
        and _is_uint(value[2], U32) and _is_uint(value[3], U64) and type(value[4]) is list
    )
    message = codec.seal(msgpack.packb(value))
    if valid:
        frame = codec.decode_message_bytes(message)
        assert [frame.version, frame.type, frame.seq, frame.t_us, frame.body] == value
    else:
        with pytest.raises(errors.MalformedFrameError):
            codec.decode_message_bytes(message)
