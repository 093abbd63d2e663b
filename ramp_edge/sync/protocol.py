"""The sync wire protocol (version 2): one msgpack map per ZeroMQ message (DEALER on the robot,
ROUTER on the host, CURVE-encrypted), ``op`` naming the message. Every field is checked on decode;
a message that fails raises :class:`ProtocolViolation` and is answered with ``error``, never a
crash.

Robot -> host
    ``hello {v}``; ``offer {t, sha, size, episode, meta}``; ``chunk {t, sha, off, h}`` followed
    by the chunk's bytes as a second ZeroMQ frame (sent and written without copies);
    ``bundles {}``; ``get {t, bundle, path, off, len}``.
Host -> robot
    ``hello {v, robot, chunk, window}``; ``have {t, sha}`` (already stored: one round trip);
    ``want {t, sha, off}`` (send from ``off``: resume point); ``ack {t, sha, off}`` (chunk
    written, one credit back); ``reject {t, sha, off}`` (chunk check failed: resend from
    ``off``); ``done {t, sha}`` (verified, fsynced, renamed, indexed); ``bad {t, sha, reason}``
    (whole-file hash wrong, partial data dropped); ``bundles {list}``;
    ``data {t, bundle, path, off, data, h}``; ``error {t, reason}``.

``t`` is the sender's transfer epoch, echoed in replies: after a rewind or reconnect the robot
bumps it and ignores replies to older messages.

Integrity: ``h`` is the CRC-32 of a chunk's bytes (4 bytes, big-endian), so a chunk damaged
between reading and sending (bad RAM, a faulty copy) is caught alone and resent. CRC-32 is an
accidental-corruption check, not a cryptographic one: it catches every error burst of up to 32
bits and all but 1 in 2**32 others. Deliberate tampering on the link is excluded by CURVE, which
authenticates every message (Poly1305); what decides acceptance is the whole-file sha256 the host
computes as chunks arrive in order, which must equal the offered content address. Bundle files
are checked against their sha256 in the same way once fetched.

Version 1 sent the chunk's bytes inside the map and a 32-byte sha256 as ``h``. Peers check the
version in ``hello``; a version-1 robot's chunk is answered with an ``error`` naming the mismatch.
"""

from __future__ import annotations

import re
import zlib
from typing import Any

import msgpack

from ramp_edge.sync.errors import ProtocolViolation

VERSION = 2
CHUNK_BYTES = 1 << 20  # default chunk: large enough that per-message costs vanish
MAX_CHUNK_BYTES = 4 << 20
WINDOW = 8  # chunks in flight per transfer (credits)
MAX_MESSAGE_BYTES = MAX_CHUNK_BYTES + 64 * 1024  # zmq.MAXMSGSIZE on both ends
MAX_FILE_BYTES = 1 << 40
SHA_RE = re.compile(r"^[0-9a-f]{64}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_META_BYTES = 16 * 1024

_INT, _STR, _BYTES, _MAP = int, str, bytes, dict
FIELDS: dict[str, dict[str, type]] = {
    "hello": {"v": _INT},
    "offer": {"t": _INT, "sha": _STR, "size": _INT, "episode": _STR, "meta": _MAP},
    "chunk": {"t": _INT, "sha": _STR, "off": _INT, "h": _BYTES},  # + a data frame
    "bundles": {},
    "get": {"t": _INT, "bundle": _STR, "path": _STR, "off": _INT, "len": _INT},
    # replies
    "have": {"t": _INT, "sha": _STR},
    "want": {"t": _INT, "sha": _STR, "off": _INT},
    "ack": {"t": _INT, "sha": _STR, "off": _INT},
    "reject": {"t": _INT, "sha": _STR, "off": _INT},
    "done": {"t": _INT, "sha": _STR},
    "bad": {"t": _INT, "sha": _STR, "reason": _STR},
    "data": {"t": _INT, "bundle": _STR, "path": _STR, "off": _INT, "data": _BYTES,
             "h": _BYTES},
    "error": {"t": _INT, "reason": _STR},
}
REQUESTS = ("hello", "offer", "chunk", "bundles", "get")
WITH_DATA_FRAME = ("chunk",)
CHECK_BYTES = 4


def digest(data: bytes | memoryview) -> bytes:
    """The per-chunk check: CRC-32 of ``data``, 4 bytes big-endian (zlib releases the GIL)."""
    return zlib.crc32(data).to_bytes(CHECK_BYTES, "big")


def encode(op: str, **fields: Any) -> bytes:
    return msgpack.packb({"op": op, **fields}, use_bin_type=True)


def decode(raw: bytes | memoryview, allowed: tuple[str, ...] | None = None,
           data: memoryview | None = None) -> dict[str, Any]:
    """Parse and check one message; ``data`` is its second frame, if any, put in the result as
    ``data`` (a ``chunk`` must have one, nothing else may). Raises ProtocolViolation naming what
    is wrong."""
    try:
        msg = msgpack.unpackb(raw, raw=False, strict_map_key=True, max_bin_len=MAX_CHUNK_BYTES,
                              max_str_len=MAX_META_BYTES, max_array_len=10_000,
                              max_map_len=1_000)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError,
            TypeError) as err:
        raise ProtocolViolation(f"not a msgpack message: {err}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
        raise ProtocolViolation("a message is a msgpack map with an 'op' string")
    try:
        return _check(msg, allowed, data)
    except ProtocolViolation as err:
        # Echo the sender's epoch, so that it reads the error as the reply to this message.
        t = msg.get("t")
        err.t = t if type(t) is int and 0 <= t <= MAX_FILE_BYTES else 0
        raise


def _check(msg: dict[str, Any], allowed: tuple[str, ...] | None,
           data: memoryview | None) -> dict[str, Any]:
    op = msg["op"]
    if op not in FIELDS or (allowed is not None and op not in allowed):
        raise ProtocolViolation(f"unexpected message {op[:32]!r}")
    for name, kind in FIELDS[op].items():
        value = msg.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ProtocolViolation(f"{op}: field {name!r} must be {kind.__name__}")
        if kind is int and not 0 <= value <= MAX_FILE_BYTES:
            raise ProtocolViolation(f"{op}: field {name!r} out of range")
    for name in ("sha", "bundle"):
        if name in FIELDS[op] and not SHA_RE.match(msg[name]):
            raise ProtocolViolation(f"{op}: {name} must be 64 lowercase hex digits")
    if "episode" in FIELDS[op] and not NAME_RE.match(msg["episode"]):
        raise ProtocolViolation(f"{op}: episode id {msg['episode'][:80]!r} is not a plain name")
    if op in WITH_DATA_FRAME:
        if data is None:
            raise ProtocolViolation(
                f"{op} without its data frame: the robot speaks an older sync protocol than "
                f"the host (version {VERSION}); install the same ramp-edge release on both")
        if len(data) > MAX_CHUNK_BYTES:
            raise ProtocolViolation(f"{op}: data frame over {MAX_CHUNK_BYTES} bytes")
        msg["data"] = data
    elif data is not None:
        raise ProtocolViolation(f"{op}: unexpected second frame")
    if "h" in FIELDS[op] and len(msg["h"]) != CHECK_BYTES:
        raise ProtocolViolation(f"{op}: h must be a {CHECK_BYTES}-byte CRC-32 (sync protocol "
                                f"version {VERSION}); install the same ramp-edge release on "
                                "both ends")
    if op == "get" and not 0 < msg["len"] <= MAX_CHUNK_BYTES:
        raise ProtocolViolation(f"get: len must be 1..{MAX_CHUNK_BYTES}")
    return msg
