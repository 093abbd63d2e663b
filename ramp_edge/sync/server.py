"""The training host's sync server: a ROUTER socket with CURVE, a ZAP allow-list mapping each
robot key to a robot id, and the host store. One thread serves every robot; each request is
answered from the store and what is on disk, so a killed server resumes every transfer from the
size of its ``.part`` file.

Writes happen only for authenticated robots and only under that robot's own directories: the
robot id comes from the ZAP ``User-Id`` of each message, never from the message itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from ramp_edge.sync import protocol as P
from ramp_edge.sync.auth import AllowListAuthenticator
from ramp_edge.sync.errors import ProtocolViolation
from ramp_edge.sync.faults import ChunkFaults
from ramp_edge.sync.host_store import HostStore
from ramp_edge.sync.keys import AllowList, KeyPair, require_curve

log = logging.getLogger(__name__)

DEFAULT_BIND = "tcp://*:5601"
IDLE_CLOSE_S = 60.0  # close the file of a transfer nobody touched for this long (kept on disk)
HASH_BACKLOG = 8  # chunks the sha256 thread may lag behind the writes (bounds the memory held)


@dataclass
class _Transfer:
    robot: str
    sha: str
    size: int
    episode: str
    meta: dict[str, Any]
    path: Path
    fd: int
    offset: int
    hasher: Any = field(repr=False)
    used_at: float = 0.0


def _open_transfer(store: HostStore, robot: str, req: dict[str, Any]) -> _Transfer:
    path = store.incoming_path(robot, req["sha"])
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    hasher = hashlib.sha256()
    size = os.fstat(fd).st_size
    if size > req["size"]:
        os.ftruncate(fd, 0)
        size = 0
    # Resume: what is on disk was CRC-checked chunk by chunk; the whole-file hash at the end
    # is what proves it, so hash the prefix again rather than trust any saved state.
    off = 0
    while off < size:
        block = os.pread(fd, min(1 << 20, size - off), off)
        if not block:
            break
        hasher.update(block)
        off += len(block)
    os.ftruncate(fd, off)
    return _Transfer(robot, req["sha"], req["size"], req["episode"], req["meta"], path, fd, off,
                     hasher, time.monotonic())


def _pwrite_all(fd: int, data: memoryview, off: int) -> None:
    while data:
        n = os.pwrite(fd, data, off)
        data, off = data[n:], off + n


class SyncServer:
    """Serve robots at ``bind`` (e.g. ``tcp://*:5601``) with the host's ``keys`` and the robot
    keys in ``allow_dir``. ``faults`` damages outgoing bundle chunks (drills only).

    >>> with SyncServer(root, allow_dir, keys) as srv:
    ...     srv.serve_forever(stop_event)
    """

    def __init__(self, root: str | os.PathLike[str], allow_dir: str | os.PathLike[str],
                 keys: KeyPair, bind: str = DEFAULT_BIND, *, chunk_bytes: int = P.CHUNK_BYTES,
                 window: int = P.WINDOW, faults: ChunkFaults | None = None) -> None:
        require_curve()
        self.store = HostStore(root)
        self.allow = AllowList(allow_dir)
        self.chunk_bytes, self.window, self.faults = chunk_bytes, window, faults
        self._transfers: dict[tuple[str, str], _Transfer] = {}
        # The whole-file sha256 runs on its own thread (hashlib releases the GIL), overlapping
        # the next chunk's receive, CRC and write; one worker keeps the updates in order.
        self._hash_pool = ThreadPoolExecutor(1, thread_name_prefix="sync-sha256")
        self._hashing: deque[Future[None]] = deque()
        self.ctx = zmq.Context()
        self.auth = AllowListAuthenticator(self.ctx, self.allow)
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.curve_server = True
        self.sock.curve_publickey, self.sock.curve_secretkey = keys.public, keys.secret
        self.sock.setsockopt(zmq.MAXMSGSIZE, P.MAX_MESSAGE_BYTES)
        self.sock.linger = 0
        self.sock.rcvhwm = self.sock.sndhwm = 4 * window + 16
        self.sock.setsockopt(zmq.HEARTBEAT_IVL, 2000)
        self.sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 10000)
        self.sock.bind(bind)
        self.endpoint = self.sock.last_endpoint.decode()
        self.handled = self.violations = 0
        self._closed = False
        self._handlers = {"hello": self._hello, "offer": self._offer, "chunk": self._chunk,
                          "bundles": self._bundles, "get": self._get}

    # loop -----------------------------------------------------------------------------------

    def serve_forever(self, stop: threading.Event | None = None) -> None:
        """Serve until ``stop`` is set (checked every 200 ms)."""
        while stop is None or not stop.is_set():
            self.serve_once(200)

    def serve_once(self, timeout_ms: int) -> None:
        """Answer at most one message arriving within ``timeout_ms``, then close idle files."""
        if self.sock.poll(timeout_ms):
            frames = self.sock.recv_multipart(copy=False)
            reply = self._answer(frames)
            if reply is not None:
                with contextlib.suppress(zmq.Again):
                    self.sock.send_multipart([frames[0].bytes, reply], flags=zmq.NOBLOCK)
        now = time.monotonic()
        for key, tr in list(self._transfers.items()):
            if now - tr.used_at > IDLE_CLOSE_S:
                self._drop(key)

    def _answer(self, frames: list[zmq.Frame]) -> bytes | None:
        self.handled += 1
        if len(frames) not in (2, 3):
            self.violations += 1
            return None
        try:
            robot = frames[1].get("User-Id")
        except zmq.ZMQError:
            robot = None
        if not robot:  # cannot happen with CURVE + ZAP; never write for an unknown sender
            return None
        t = 0
        try:
            req = P.decode(frames[1].buffer, P.REQUESTS,
                           frames[2].buffer if len(frames) == 3 else None)
            t = req.get("t", 0)
            return self._handlers[req["op"]](robot, req)
        except ProtocolViolation as err:
            self.violations += 1
            log.warning("robot %s sent a malformed message: %s", robot, err)
            return P.encode("error", t=err.t or t, reason=f"malformed message: {err}")
        except OSError as err:
            log.error("host storage error for robot %s: %s", robot, err)
            return P.encode("error", t=t, reason=f"host storage error: {err}")

    # episodes -------------------------------------------------------------------------------

    def _hello(self, robot: str, req: dict[str, Any]) -> bytes:
        # Answered with this host's version whatever the robot's: the robot refuses a mismatch.
        if req["v"] != P.VERSION:
            log.warning("robot %s speaks sync protocol %d, this host %d: its chunks will be "
                        "refused until both run the same ramp-edge release", robot, req["v"],
                        P.VERSION)
        return P.encode("hello", v=P.VERSION, robot=robot, chunk=self.chunk_bytes,
                        window=self.window)

    def _offer(self, robot: str, req: dict[str, Any]) -> bytes:
        sha, t = req["sha"], req["t"]
        if len(P.encode("x", meta=req["meta"])) > P.MAX_META_BYTES:
            raise ProtocolViolation("offer: meta too large")
        if self.store.has(sha):
            self._drop((robot, sha))
            return P.encode("have", t=t, sha=sha)
        tr = self._transfers.get((robot, sha))
        if tr is not None and tr.size != req["size"]:
            self._drop((robot, sha))
            tr = None
        if tr is None:
            tr = self._transfers[(robot, sha)] = _open_transfer(self.store, robot, req)
        tr.episode, tr.meta, tr.used_at = req["episode"], req["meta"], time.monotonic()
        if tr.offset == tr.size:  # complete on disk, but not committed (a crash came between)
            return self._finish(tr, t)
        return P.encode("want", t=t, sha=sha, off=tr.offset)

    def _chunk(self, robot: str, req: dict[str, Any]) -> bytes:
        sha, t, off, data = req["sha"], req["t"], req["off"], req["data"]
        tr = self._transfers.get((robot, sha))
        if tr is None:
            if self.store.has(sha):
                return P.encode("have", t=t, sha=sha)
            return P.encode("error", t=t, reason="chunk of a transfer not offered")
        tr.used_at = time.monotonic()
        if off != tr.offset:  # stale (sent before a rewind) or out of order
            return P.encode("want", t=t, sha=sha, off=tr.offset)
        if P.digest(data) != req["h"]:
            log.warning("robot %s: chunk at %d of %s failed its CRC, asked again", robot, off,
                        sha[:12])
            return P.encode("reject", t=t, sha=sha, off=tr.offset)
        if off + len(data) > tr.size or len(data) > self.chunk_bytes:
            raise ProtocolViolation("chunk: runs past the offered size or the chunk limit")
        # ``data`` is the received frame's own buffer: hashed and written without a copy.
        _pwrite_all(tr.fd, data, off)
        while len(self._hashing) >= HASH_BACKLOG:
            self._hashing.popleft().result()
        self._hashing.append(self._hash_pool.submit(tr.hasher.update, data))
        tr.offset += len(data)
        if tr.offset == tr.size:
            return self._finish(tr, t)
        return P.encode("ack", t=t, sha=sha, off=tr.offset)

    def _finish(self, tr: _Transfer, t: int) -> bytes:
        key = (tr.robot, tr.sha)
        while self._hashing:  # every update of this file is in
            self._hashing.popleft().result()
        if tr.hasher.hexdigest() != tr.sha:
            self._drop(key)
            tr.path.unlink(missing_ok=True)
            return P.encode("bad", t=t, sha=tr.sha, reason="whole-file sha256 does not match "
                                                          "the offer; partial data dropped")
        os.fsync(tr.fd)
        self._drop(key)
        final = self.store.final_path(tr.robot, tr.episode, tr.sha)
        self.store.commit_episode(tr.path, final, sha=tr.sha, robot=tr.robot,
                                  episode_id=tr.episode, size=tr.size, meta=tr.meta)
        log.info("robot %s: episode %s stored (%d bytes)", tr.robot, tr.episode, tr.size)
        return P.encode("done", t=t, sha=tr.sha)

    def _drop(self, key: tuple[str, str]) -> None:
        tr = self._transfers.pop(key, None)
        if tr is not None:
            with contextlib.suppress(OSError):
                os.close(tr.fd)

    # bundles --------------------------------------------------------------------------------

    def _bundles(self, robot: str, req: dict[str, Any]) -> bytes:
        return P.encode("bundles", list=[{"id": b.id, "name": b.name,
                                          "files": [list(f) for f in b.files]}
                                         for b in self.store.bundles()])

    def _get(self, robot: str, req: dict[str, Any]) -> bytes:
        t = req["t"]
        b = self.store.bundle(req["bundle"])
        if b is None or req["path"] not in {f[0] for f in b.files}:
            return P.encode("error", t=t, reason="no such published bundle file")
        with open(b.path / req["path"], "rb") as f:
            data = os.pread(f.fileno(), min(req["len"], self.chunk_bytes), req["off"])
        h = P.digest(data)
        if self.faults is not None:
            data = self.faults.apply(data)
        return P.encode("data", t=t, bundle=b.id, path=req["path"], off=req["off"], data=data,
                        h=h)

    # lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        """Close files, sockets and the ZAP thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for key in list(self._transfers):
            self._drop(key)
        self._hash_pool.shutdown(wait=True)
        self.sock.close(linger=0)
        self.auth.stop()
        self.ctx.term()
        self.store.close()

    def __enter__(self) -> SyncServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
