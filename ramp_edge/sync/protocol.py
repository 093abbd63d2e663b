"""The sync wire protocol: one msgpack map per ZeroMQ message (DEALER on the robot, ROUTER on the
host, CURVE-encrypted), ``op`` naming the message. Every field is checked on decode; a message
that fails raises :class:`ProtocolViolation` and is answered with ``error``, never a crash.

Robot -> host
    ``hello {v}``; ``offer {t, sha, size, episode, meta}``; ``chunk {t, sha, off, data, h}``;
    ``bundles {}``; ``get {t, bundle, path, off, len}``.
Host -> robot
    ``hello {v, robot, chunk, window}``; ``have {t, sha}`` (already stored: one round trip);
    ``want {t, sha, off}`` (send from ``off``: resume point); ``ack {t, sha, off}`` (chunk
    written, one credit back); ``reject {t, sha, off}`` (chunk hash wrong: resend from ``off``);
    ``done {t, sha}`` (verified, fsynced, renamed, indexed); ``bad {t, sha, reason}`` (whole-file
    hash wrong, partial data dropped); ``bundles {list}``; ``data {t, bundle, path, off, data, h}``;
    ``error {t, reason}``.

``t`` is the sender's transfer epoch, echoed in replies: after a rewind or reconnect the robot
bumps it and ignores replies to older messages. ``h`` is the sha256 of ``data``, so a damaged
chunk is caught alone and resent.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import msgpack

from ramp_edge.sync.errors import ProtocolViolation

VERSION = 1
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
    "chunk": {"t": _INT, "sha": _STR, "off": _INT, "data": _BYTES, "h": _BYTES},
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


def digest(data: bytes | memoryview) -> bytes:
    """The per-chunk hash: sha256, 32 bytes."""
    return hashlib.sha256(data).digest()


def encode(op: str, **fields: Any) -> bytes:
    return msgpack.packb({"op": op, **fields}, use_bin_type=True)


def decode(raw: bytes | memoryview, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Parse and check one message. Raises ProtocolViolation naming what is wrong."""
    try:
        msg = msgpack.unpackb(raw, raw=False, strict_map_key=True, max_bin_len=MAX_CHUNK_BYTES,
                              max_str_len=MAX_META_BYTES, max_array_len=10_000,
                              max_map_len=1_000)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError,
            TypeError) as err:
        raise ProtocolViolation(f"not a msgpack message: {err}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
        raise ProtocolViolation("a message is a msgpack map with an 'op' string")
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
    if "h" in FIELDS[op] and len(msg["h"]) != 32:
        raise ProtocolViolation(f"{op}: h must be a 32-byte sha256")
    if op == "get" and not 0 < msg["len"] <= MAX_CHUNK_BYTES:
        raise ProtocolViolation(f"get: len must be 1..{MAX_CHUNK_BYTES}")
    return msg
