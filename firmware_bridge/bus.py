"""The host's client for one motor controller.

One state read plus one setpoint write per control cycle is a single round trip: the device
answers every SETPOINT with STATE. The bus owns its failure policy so callers need none:
- requests that change the device (mode, e-stop, calibration) are retried a bounded number of
  times, then raise :class:`DeviceTimeoutError`;
- the cyclic exchange is never retried: a late setpoint is worse than the next fresh one, so a
  missing reply returns ``None`` and is counted;
- a lost link (port unplugged, device restarted) is reopened in the background of later calls
  and the handshake repeated; until then cyclic calls return ``None``. The caller keeps running.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import numpy as np

from firmware_bridge import PROTOCOL_VERSION
from firmware_bridge.errors import (
    DeviceRejectedError,
    DeviceTimeoutError,
    IncompatibleFirmwareError,
    LinkError,
    ProtocolError,
)
from firmware_bridge.link_stats import LinkStats
from firmware_bridge.messages import (
    Ack,
    AckStatus,
    Calibration,
    CalRead,
    CalWrite,
    ClearFault,
    EStop,
    Fault,
    Heartbeat,
    Hello,
    Info,
    Message,
    Mode,
    ModeRequest,
    Setpoint,
    State,
    StateRequest,
    from_frame,
    to_frame,
)
from firmware_bridge.transport import Transport, open_transport

SUPPORTED_VERSIONS = (PROTOCOL_VERSION, PROTOCOL_VERSION)


class MotorBus:
    """Client for the motor controller at ``url``. Thread-compatible, not thread-safe: one
    thread (the control thread) drives it.

    ``cycle_timeout_ms`` bounds the wait for a STATE reply in the cyclic exchange;
    ``request_timeout_ms`` x (1 + ``retries``) bounds other requests.
    """

    def __init__(
        self,
        url: str,
        *,
        cycle_timeout_ms: float = 5.0,
        request_timeout_ms: float = 50.0,
        retries: int = 3,
        reconnect_interval_s: float = 0.2,
        opener: Callable[[str], Transport] = open_transport,
    ) -> None:
        self.url = url
        self.cycle_timeout_s = cycle_timeout_ms / 1000
        self.request_timeout_s = request_timeout_ms / 1000
        self.retries = retries
        self.reconnect_interval_s = reconnect_interval_s
        self._opener = opener
        self._transport: Transport | None = None
        self._seq = 0
        self._next_reconnect = 0.0
        self.info: Info | None = None
        self.stats = LinkStats()
        self.faults: deque[Fault] = deque(maxlen=64)
        self.last_error: str | None = None
        # counters of transports already closed (a reconnect opens a new one)
        self._crc_failures = 0
        self._malformed = 0

    # -- connection -----------------------------------------------------------------------------
    def connect(self) -> Info:
        """Open the transport and handshake. Raises LinkError, DeviceTimeoutError,
        IncompatibleFirmwareError."""
        self._transport = self._opener(self.url)
        try:
            info = self._handshake()
        except BaseException:
            self._drop_link()
            raise
        self.info = info
        return info

    def _handshake(self) -> Info:
        reply = self._request(Hello(*SUPPORTED_VERSIONS))
        if not isinstance(reply, Info):
            raise ProtocolError(f"device answered HELLO with {type(reply).__name__}, not INFO")
        lo, hi = SUPPORTED_VERSIONS
        if not lo <= reply.protocol_version <= hi:
            raise IncompatibleFirmwareError(
                f"firmware {reply.firmware_version!r} on {self.url} speaks protocol version "
                f"{reply.protocol_version}; this host speaks {lo}..{hi}: update one of them"
            )
        return reply

    @property
    def connected(self) -> bool:
        return self._transport is not None

    @property
    def n_joints(self) -> int:
        if self.info is None:
            raise LinkError("bus is not connected")
        return len(self.info.joint_names)

    def _drop_link(self) -> None:
        if self._transport is not None:
            self._crc_failures += self._transport.crc_failures
            self._malformed += self._transport.malformed
            self._transport.close()
            self._transport = None
        self._next_reconnect = time.monotonic() + self.reconnect_interval_s

    def _ensure_link(self) -> bool:
        """Reopen a lost link if it is time to try. True if the link is up."""
        if self._transport is not None:
            return True
        if self.info is None or time.monotonic() < self._next_reconnect:
            return False
        previous = self.info
        try:
            self._transport = self._opener(self.url)
            info = self._handshake()
        except (LinkError, DeviceTimeoutError, ProtocolError) as err:
            self.last_error = f"reconnect to {self.url} failed: {err}"
            self._drop_link()
            return False
        if info.device_id != previous.device_id or info.joint_names != previous.joint_names:
            self.last_error = (
                f"a different device answered on {self.url} ({info.device_id}, "
                f"{len(info.joint_names)} joints); refusing to use it"
            )
            self._drop_link()
            return False
        self.info = info
        self.stats.reconnects += 1
        self.last_error = None
        return True

    # -- frames ---------------------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq = (self._seq % 0xFFFF_FFFF) + 1  # 1..2^32-1; 0 is for unsolicited frames
        return self._seq

    def _send(self, msg: Message) -> tuple[int, int]:
        assert self._transport is not None
        seq = self._next_seq()
        t_us = time.monotonic_ns() // 1000
        self._transport.send(to_frame(msg, seq, t_us))
        self.stats.requests += 1
        return seq, time.perf_counter_ns()

    def _await_reply(self, seq: int, sent_ns: int, timeout_s: float) -> Message | None:
        """Wait for the reply echoing ``seq``; file away unsolicited faults, count late ones."""
        assert self._transport is not None
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            frame = self._transport.recv(remaining)
            if frame is None:
                return None
            if frame.version != PROTOCOL_VERSION:
                if frame.seq == seq:  # our reply, in a version we do not speak
                    raise IncompatibleFirmwareError(
                        f"the device on {self.url} answered in protocol version {frame.version};"
                        f" this host speaks {PROTOCOL_VERSION}: update one of them"
                    )
                continue  # not ours to interpret; the decoder already checked the CRC
            try:
                msg = from_frame(frame)
            except ProtocolError as err:
                self.last_error = f"device sent a bad message: {err}"
                continue
            if isinstance(msg, Fault) and frame.seq == 0:
                self.faults.append(msg)
                self.stats.faults_reported += 1
                continue
            if frame.seq != seq:
                self.stats.late += 1
                continue
            self.stats.replies += 1
            self.stats.add_rtt((time.perf_counter_ns() - sent_ns) / 1000)
            return msg

    def _request(self, msg: Message) -> Message:
        """Send ``msg`` and return its reply, retrying on timeout. Raises DeviceTimeoutError,
        LinkError."""
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
            seq, sent = self._send(msg)
            reply = self._await_reply(seq, sent, self.request_timeout_s)
            if reply is not None:
                return reply
            self.stats.timeouts += 1
        raise DeviceTimeoutError(
            f"no reply to {type(msg).__name__} from {self.url} after {self.retries + 1} tries "
            f"of {self.request_timeout_s * 1000:.0f} ms"
        )

    def request(self, msg: Message) -> Message:
        """Send a non-cyclic request with the bus's retry policy; reconnects first if needed.

        Raises LinkError (link down), DeviceTimeoutError, DeviceRejectedError (NACK)."""
        if not self._ensure_link():
            raise LinkError(self.last_error or f"link to {self.url} is down")
        try:
            reply = self._request(msg)
        except LinkError as err:
            self.stats.link_errors += 1
            self.last_error = str(err)
            self._drop_link()
            raise
        if isinstance(reply, Ack) and reply.status != AckStatus.OK:
            raise DeviceRejectedError(
                f"device refused {type(msg).__name__}: {reply.status.name} {reply.detail}".strip(),
                int(reply.status),
            )
        return reply

    def _cyclic(self, msg: Message) -> State | None:
        if not self._ensure_link():
            return None
        try:
            seq, sent = self._send(msg)
            reply = self._await_reply(seq, sent, self.cycle_timeout_s)
        except LinkError as err:
            self.stats.link_errors += 1
            self.last_error = str(err)
            self._drop_link()
            return None
        if reply is None:
            self.stats.timeouts += 1
            return None
        if not isinstance(reply, State) or reply.position.size != self.n_joints:
            self.last_error = f"bad reply to {type(msg).__name__}: {type(reply).__name__}"
            return None
        return reply

    # -- the control cycle ----------------------------------------------------------------------
    def exchange(
        self, position: np.ndarray, reach_in_us: int, velocity: np.ndarray | None = None
    ) -> State | None:
        """Send one setpoint (joint order of ``info.joint_names``) and return the STATE the
        device answers with, or None if no valid reply came within the cycle timeout or the
        link is down (the device's own watchdog covers a host that stops sending)."""
        return self._cyclic(Setpoint(reach_in_us, position, velocity))

    def read_state(self) -> State | None:
        """Read the joint state without commanding anything; None as for :meth:`exchange`."""
        return self._cyclic(StateRequest())

    # -- device requests ------------------------------------------------------------------------
    def set_mode(self, mode: Mode) -> None:
        self.request(ModeRequest(mode))

    def estop(self, reason: str = "") -> None:
        self.request(EStop(reason))

    def clear_fault(self) -> None:
        self.request(ClearFault())

    def heartbeat(self) -> None:
        self.request(Heartbeat())

    def read_calibration(self) -> Calibration:
        reply = self.request(CalRead())
        if not isinstance(reply, Calibration):
            raise ProtocolError(f"device answered CAL_READ with {type(reply).__name__}")
        return reply

    def write_calibration(self, calibration: Calibration) -> None:
        self.request(CalWrite(
            calibration.homing_offset, calibration.drive_sign, calibration.position_min,
            calibration.position_max, calibration.calibration_id,
        ))

    # -- health -----------------------------------------------------------------------------------
    def health(self) -> dict[str, object]:
        """Link statistics for probes and benchmarks (counts since creation, RTT in ms)."""
        t = self._transport
        rtt = self.stats.rtt_ms()
        return {
            "url": self.url,
            "connected": self.connected,
            "requests": self.stats.requests,
            "replies": self.stats.replies,
            "timeouts": self.stats.timeouts,
            "lost": self.stats.lost,
            "late": self.stats.late,
            "retries": self.stats.retries,
            "reconnects": self.stats.reconnects,
            "link_errors": self.stats.link_errors,
            "crc_failures": self._crc_failures + (t.crc_failures if t else 0),
            "malformed": self._malformed + (t.malformed if t else 0),
            "faults_reported": self.stats.faults_reported,
            "rtt_p50_ms": rtt["p50"],
            "rtt_p99_ms": rtt["p99"],
            "rtt_max_ms": rtt["max"],
            "last_error": self.last_error,
        }

    def close(self) -> None:
        """Close the link (idempotent). Does not change the device's mode: use
        :meth:`set_mode` first, or the device's watchdog will hold it."""
        self._drop_link()

    def __enter__(self) -> MotorBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
