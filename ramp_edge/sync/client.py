"""The robot's side of sync: a DEALER socket with CURVE (the host's public key pinned), pushing
sealed episodes and pulling published bundles.

Push, per episode: ``offer`` -> ``have`` (host has it: one round trip) or ``want off`` -> chunks
from ``off``, at most ``window`` unacknowledged (each ``ack`` is a credit) -> ``done`` after the
host verified, fsynced and renamed the file -> only then the robot records the ack. A rejected
chunk rewinds to the host's offset (go-back-N). A dropped link, a restarted host or a silent
one (no reply within ``reply_timeout_s``) leads to a new ``offer``, which resumes from the
offset the host reports. Every wait is bounded: no progress for ``stall_timeout_s`` ends the run
with :class:`SyncUnavailableError`, and nothing is lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from ramp_edge.episodes.index import EpisodeIndex, IndexEntry
from ramp_edge.sync import protocol as P
from ramp_edge.sync.errors import (
    ProtocolViolation,
    SyncAuthError,
    SyncError,
    SyncUnavailableError,
)
from ramp_edge.sync.faults import ChunkFaults
from ramp_edge.sync.keys import KeyPair, require_curve
from ramp_edge.sync.progress import Progress, RateLimit
from ramp_edge.sync.state import SyncState

log = logging.getLogger(__name__)

SYNCED_STATUSES = ("sealed", "aborted")  # both are sealed files with a sha256
_RECONNECTED = object()
_EVENTS = (zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
           | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
           | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
_META_FIELDS = ("outcome", "instruction", "operator", "robot_id", "calibration_hash",
                "bundle_hash", "software_version", "steps", "started_at", "ended_at", "status")


@dataclass
class PushReport:
    """``sent``: episodes the host stored in this run; ``known``: ones it already had;
    ``failed``: episode id -> reason (left unacknowledged, retried next run);
    ``bytes_resumed``: bytes an earlier run had delivered, not sent again."""

    robot: str = ""
    sent: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    pending: int = 0
    bytes_sent: int = 0
    bytes_resumed: int = 0
    resumes: int = 0  # transfers picked up from the host's offset after a cut or restart
    chunks_rejected: int = 0
    rewinds: int = 0
    seconds: float = 0.0


def pending_episodes(index: EpisodeIndex, state: SyncState) -> list[IndexEntry]:
    """Sealed episodes (oldest first) the host has not acknowledged with their sha256."""
    acked = state.acked()
    return [e for e in index.list() if e.status in SYNCED_STATUSES and e.sha256
            and acked.get(e.id) != e.sha256]


class SyncClient:
    """A connection to the host at ``host`` (``tcp://H:P``) whose public key is ``server_key``,
    as the robot with ``keys``. ``faults`` damages outgoing episode chunks (drills only)."""

    def __init__(self, host: str, server_key: bytes, keys: KeyPair, *,
                 connect_timeout_s: float = 10.0, reply_timeout_s: float = 15.0,
                 stall_timeout_s: float = 120.0, max_rate_bytes_s: float | None = None,
                 faults: ChunkFaults | None = None) -> None:
        require_curve()
        self.host = host
        self.connect_timeout_s, self.reply_timeout_s = connect_timeout_s, reply_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self.limit = RateLimit(max_rate_bytes_s) if max_rate_bytes_s else None
        self.faults = faults
        self.robot = ""
        self.chunk_bytes, self.window = P.CHUNK_BYTES, P.WINDOW
        self.rejected = self.rewinds = 0
        self._epoch = 0
        self._up_once = self._tcp_seen = False
        self._refused: int | None = None
        self._handshake_failures = 0
        self._closed = False
        self.ctx = zmq.Context()
        s = self.sock = self.ctx.socket(zmq.DEALER)
        s.curve_serverkey = server_key
        s.curve_publickey, s.curve_secretkey = keys.public, keys.secret
        s.setsockopt(zmq.MAXMSGSIZE, P.MAX_MESSAGE_BYTES)
        s.linger = 0
        s.reconnect_ivl, s.reconnect_ivl_max = 100, 2000
        s.setsockopt(zmq.HEARTBEAT_IVL, 1000)  # a link that dies silently is noticed in ~5 s
        s.setsockopt(zmq.HEARTBEAT_TIMEOUT, 5000)
        self.monitor = s.get_monitor_socket(_EVENTS)
        self.poller = zmq.Poller()
        self.poller.register(s, zmq.POLLIN)
        self.poller.register(self.monitor, zmq.POLLIN)
        try:
            s.connect(host)
        except zmq.ZMQError as err:
            self.close()
            raise SyncError(f"bad host address {host!r}: {err} (expected tcp://HOST:PORT)") \
                from err

    # plumbing -------------------------------------------------------------------------------

    def _send(self, op: str, **fields: Any) -> None:
        # A full queue while the link is down drops the message: the next offer starts over.
        with contextlib.suppress(zmq.Again):
            self.sock.send(P.encode(op, **fields), flags=zmq.NOBLOCK)

    def _send_chunk(self, t: int, sha: str, off: int, data: bytes, h: bytes) -> None:
        # The chunk's bytes go as their own frame, handed to libzmq without a copy (``data`` is
        # a fresh object per chunk, never reused, so it may stay queued after this returns).
        with contextlib.suppress(zmq.Again):
            self.sock.send_multipart([P.encode("chunk", t=t, sha=sha, off=off, h=h), data],
                                     flags=zmq.NOBLOCK, copy=False)

    def _next_t(self) -> int:
        self._epoch += 1
        return self._epoch

    def _events(self) -> bool:
        """Drain monitor events; True if the link came back after a drop."""
        back = False
        while True:
            try:
                ev = recv_monitor_message(self.monitor, flags=zmq.NOBLOCK)
            except zmq.Again:
                return back
            kind = ev["event"]
            if kind == zmq.EVENT_CONNECTED:
                self._tcp_seen = True
            elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                back = back or self._up_once
                self._up_once = True
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self._refused = int(ev["value"])
            elif kind in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                          zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                self._handshake_failures += 1

    def _recv(self, timeout_s: float) -> dict[str, Any] | object | None:
        """The next valid message, ``_RECONNECTED`` after a link drop, or None on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            ready = dict(self.poller.poll(max(0, int(left * 1000)))) if left > 0 else {}
            if self.monitor in ready and self._events():
                return _RECONNECTED
            if self.sock in ready:
                raw = self.sock.recv(copy=False)
                try:
                    return P.decode(raw.buffer)
                except ProtocolViolation as err:
                    log.warning("host sent a malformed message: %s", err)
                    continue
            if left <= 0:
                return None

    def _raise_handshake(self) -> None:
        if self._refused is not None:
            raise SyncAuthError(f"the host at {self.host} refused this robot's key (ZAP "
                                f"{self._refused}): it is not on the host's allow-list; give "
                                "the host this robot's .key file")

    def connect(self) -> str:
        """Say hello; returns the robot id the host knows this robot by. Raises
        SyncAuthError or SyncUnavailableError within ``connect_timeout_s``."""
        self._send("hello", v=P.VERSION)
        deadline = time.monotonic() + self.connect_timeout_s
        while (left := deadline - time.monotonic()) > 0:
            msg = self._recv(min(left, 0.25))
            self._raise_handshake()
            if isinstance(msg, dict) and msg["op"] == "hello":
                if msg["v"] != P.VERSION:
                    raise SyncError(f"the host at {self.host} speaks sync protocol "
                                    f"{msg['v']}, this robot {P.VERSION}: install the same "
                                    "ramp-edge release on both")
                self.robot = str(msg.get("robot", ""))
                self.chunk_bytes = min(int(msg.get("chunk", P.CHUNK_BYTES)), P.MAX_CHUNK_BYTES)
                self.window = max(1, min(int(msg.get("window", P.WINDOW)), 64))
                return self.robot
            if msg is _RECONNECTED:
                self._send("hello", v=P.VERSION)
        # A cut link also fails handshakes, so only a whole timeout of them means a wrong key.
        if self._handshake_failures and not self._up_once:
            raise SyncAuthError(f"the CURVE handshake with {self.host} never completed "
                                f"({self._handshake_failures} tries): the server key given is "
                                "probably not this host's key (or the host does not use CURVE)")
        raise SyncUnavailableError(f"the training host at {self.host} did not answer within "
                                   f"{self.connect_timeout_s:g} s (offline or down?); nothing "
                                   "was lost, unsynced episodes wait for the next run")

    # push -----------------------------------------------------------------------------------

    def push(self, index: EpisodeIndex, state: SyncState, *, progress: Progress | None = None,
             limit: int | None = None, on_acked: Callable[[IndexEntry], None] | None = None
             ) -> PushReport:
        """Push every pending sealed episode, oldest first (at most ``limit``). An episode the
        host rejects as damaged is reported in ``failed`` and the others still go. Raises
        SyncUnavailableError when the link stays down past ``stall_timeout_s``."""
        t0 = time.monotonic()
        if not self.robot:
            self.connect()
        todo = pending_episodes(index, state)[:limit]
        rep = PushReport(robot=self.robot, pending=len(todo))
        try:
            for e in todo:
                path = index.resolve(e)
                if not path.is_file():
                    rep.failed[e.id] = f"file {path} is missing"
                    continue
                try:
                    status = self._push_one(e, path, rep, progress)
                except SyncError as err:
                    rep.failed[e.id] = str(err)
                    continue
                state.mark_acked(e.id, e.sha256 or "", e.bytes, self.host)
                (rep.known if status == "have" else rep.sent).append(e.id)
                if progress:
                    progress.item_done()
                if on_acked:
                    on_acked(e)
        finally:
            rep.chunks_rejected, rep.rewinds = self.rejected, self.rewinds
            rep.seconds = time.monotonic() - t0
        return rep

    def _push_one(self, e: IndexEntry, path: os.PathLike[str], rep: PushReport,
                  progress: Progress | None) -> str:
        sha = e.sha256 or ""
        meta = {k: getattr(e, k) for k in _META_FIELDS}
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            fd = f.fileno()

            def offer() -> int:
                t = self._next_t()
                self._send("offer", t=t, sha=sha, size=size, episode=e.id, meta=meta)
                return t

            t = offer()
            acked: int | None = None  # the host's offset, once known
            sent = counted = 0  # counted: bytes of this episode shown in the progress bar
            bad_seen = errors = 0
            last_progress = time.monotonic()

            def show(off: int, *, skipped: bool) -> int:
                if progress and off > counted:
                    (progress.skip if skipped else progress.advance)(off - counted)
                return max(counted, off)

            while True:
                while acked is not None and sent < size and \
                        sent - acked < self.window * self.chunk_bytes:
                    data = os.pread(fd, min(self.chunk_bytes, size - sent), sent)
                    if not data:
                        raise SyncError(f"episode {e.id}: file shrank while sending")
                    h = P.digest(data)
                    if self.limit:
                        self.limit.wait(len(data))
                    if self.faults:
                        data = self.faults.apply(data)
                    self._send_chunk(t, sha, sent, data, h)
                    sent += len(data)
                msg = self._recv(min(self.reply_timeout_s, 1.0))
                now = time.monotonic()
                if now - last_progress > self.stall_timeout_s:
                    raise SyncUnavailableError(
                        f"no progress with {self.host} for {self.stall_timeout_s:g} s (link "
                        f"down?); episode {e.id} resumes from the host's offset next run")
                if msg is None:
                    if now - last_progress > self.reply_timeout_s or acked is None:
                        t, acked = offer(), None  # silent host: ask where it stands
                    continue
                if msg is _RECONNECTED:
                    t, acked = offer(), None
                    continue
                assert isinstance(msg, dict)
                if msg.get("t") != t or msg.get("sha", sha) != sha:
                    continue  # a reply to a message sent before a rewind
                op = msg["op"]
                if op in ("have", "done"):
                    if op == "done":
                        rep.bytes_sent += size - (acked or 0)
                    show(size, skipped=op == "have")
                    return op
                if op == "want":
                    last_progress = now
                    if acked is None and msg["off"] > 0:
                        rep.resumes += 1  # the host kept what came before a cut
                    if msg["off"] > counted:
                        rep.bytes_resumed += msg["off"] - counted
                        counted = show(msg["off"], skipped=True)
                    if acked is not None:  # mid-stream: something was lost, go back
                        self.rewinds += 1
                        t = self._next_t()
                    acked = sent = msg["off"]
                elif op == "ack":
                    last_progress, errors = now, 0
                    if acked is not None and msg["off"] > acked:
                        rep.bytes_sent += msg["off"] - acked
                        acked = msg["off"]
                        counted = show(acked, skipped=False)
                elif op == "reject":
                    self.rejected += 1
                    t = self._next_t()
                    acked = sent = msg["off"]
                elif op == "bad":
                    bad_seen += 1
                    if bad_seen > 1:
                        raise SyncError(f"episode {e.id}: the host found the file's sha256 "
                                        f"wrong twice ({msg['reason']}): the file on the robot "
                                        "no longer matches its sha256 in the index (damaged?)")
                    t, acked = offer(), None
                elif op == "error":
                    errors += 1
                    if errors > 3:
                        raise SyncError(f"episode {e.id}: the host refused it: {msg['reason']}")
                    t, acked = offer(), None

    # pull -----------------------------------------------------------------------------------

    def list_bundles(self) -> list[dict[str, Any]]:
        """What the host publishes: ``[{id, name, files: [[path, size, sha256], ...]}]``."""
        if not self.robot:
            self.connect()
        deadline = time.monotonic() + self.stall_timeout_s
        while time.monotonic() < deadline:
            self._send("bundles")
            msg = self._recv(self.reply_timeout_s)
            while isinstance(msg, dict) and msg["op"] != "bundles":
                msg = self._recv(self.reply_timeout_s)  # late replies to earlier requests
            if isinstance(msg, dict):
                out = msg.get("list")
                if not isinstance(out, list):
                    raise SyncError("the host sent a malformed bundle list")
                return out
        raise SyncUnavailableError(f"the host at {self.host} did not list its bundles within "
                                   f"{self.stall_timeout_s:g} s")

    def fetch_file(self, bundle_id: str, rel: str, size: int, fd: int,
                   max_tries: int = 4) -> None:
        """Fetch one published file into ``fd``, every chunk hash-checked; a damaged chunk is
        asked again up to ``max_tries`` times. Raises SyncError / SyncUnavailableError."""
        offsets = list(range(0, size, self.chunk_bytes))
        todo = list(reversed(offsets))
        inflight: set[int] = set()
        tries: dict[int, int] = {}
        t = self._next_t()
        last_progress = time.monotonic()
        while todo or inflight:
            while todo and len(inflight) < self.window:
                off = todo.pop()
                inflight.add(off)
                self._send("get", t=t, bundle=bundle_id, path=rel, off=off,
                           len=min(self.chunk_bytes, size - off))
            msg = self._recv(min(self.reply_timeout_s, 1.0))
            now = time.monotonic()
            if now - last_progress > self.stall_timeout_s:
                raise SyncUnavailableError(f"no progress with {self.host} for "
                                           f"{self.stall_timeout_s:g} s fetching {rel}")
            if msg is _RECONNECTED or (msg is None and now - last_progress > self.reply_timeout_s):
                t = self._next_t()
                todo.extend(sorted(inflight, reverse=True))
                inflight.clear()
                continue
            if not isinstance(msg, dict) or msg.get("t") != t:
                continue
            if msg["op"] == "error":
                raise SyncError(f"bundle {bundle_id[:12]}: {rel}: {msg['reason']}")
            if msg["op"] != "data" or msg["path"] != rel or msg["off"] not in inflight:
                continue
            off, data = msg["off"], msg["data"]
            inflight.discard(off)
            if P.digest(data) != msg["h"] or len(data) != min(self.chunk_bytes, size - off):
                self.rejected += 1
                tries[off] = tries.get(off, 0) + 1
                if tries[off] >= max_tries:
                    raise SyncError(f"bundle {bundle_id[:12]}: {rel} at {off} arrived damaged "
                                    f"{max_tries} times; refused")
                todo.append(off)
                continue
            os.pwrite(fd, data, off)
            last_progress = now

    # lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        """Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(zmq.ZMQError):
            self.sock.disable_monitor()
        self.monitor.close(linger=0)
        self.sock.close(linger=0)
        self.ctx.term()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
