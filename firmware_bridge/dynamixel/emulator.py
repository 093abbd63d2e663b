"""The emulator's DYNAMIXEL mode: a chain of X-series servos answering Protocol 2.0 packets
over a pseudo-terminal, one servo per id, over the emulator's motor plant.

:class:`ServoChain` is the servos' logic, free of I/O (packets in, status bytes out, a servo
tick); :class:`DynamixelServer` binds it to a pty at the servo rate with the emulator's failure
knobs (drop or corrupt status packets, stall, unplug). Modelled behaviour: each servo owns a
control table (EEPROM writable only with torque off, read-only registers refused with an
access error), tracks Goal_Position only with torque on (a servo switched on moves to its
Goal_Position, as real ones do), waits Return_Delay_Time before answering, honours
Status_Return_Level, and in a SYNC_READ answers in the order of the listed ids, so a missing
servo silences the ones listed after it. Present_Position is ``actual + Homing_Offset``, or
``4096 - actual + Homing_Offset`` with Drive_Mode's reverse bit set (this emulator's model).
"""

from __future__ import annotations

import contextlib
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from firmware_bridge.dynamixel import control_table as ct
from firmware_bridge.dynamixel.packet import (
    ALERT,
    BROADCAST_ID,
    Instruction,
    Packet,
    PacketDecoder,
    StatusError,
    status,
)
from firmware_bridge.emulator.plant import MotorPlant
from firmware_bridge.emulator.server import FailureKnobs, ServoStats
from firmware_bridge.errors import LinkError, TransportUrlError
from firmware_bridge.transport.base import Transport
from firmware_bridge.transport.url import TransportUrl

MAX_CATCH_UP_TICKS = 50
_VEL_POS = struct.Struct("<ii")  # Present_Velocity, Present_Position
READ_ONLY = {range(0, 2), range(6, 7), range(70, 71), range(120, ct.TABLE_SIZE)}


def _read_only(address: int) -> bool:
    return any(address in r for r in READ_ONLY)


class ServoPlant(MotorPlant):
    """The motor plant with torque switched per joint (one joint per servo)."""

    def step_masked(self, command: np.ndarray, torque: np.ndarray, dt_s: float) -> None:
        on = self._w**2 * (command - self.position) - 2.0 * self._w * self.velocity
        off = -self._friction / self._inertia * self.velocity
        acc = np.where(torque, on, off)
        self.velocity = np.clip(self.velocity + acc * dt_s, -self._vmax, self._vmax)
        self.position = self.position + self.velocity * dt_s
        self.effort = np.where(torque, self._inertia * acc + self._friction * self.velocity, 0.0)


@dataclass
class ChainCounters:
    packets_in: int = 0
    status_out: int = 0
    not_ours: int = 0
    refused_writes: int = 0
    goal_out_of_limits: int = 0


class ServoChain:
    """Servos ``ids`` of model ``model_number``; joint ``i`` of the plant is servo ``ids[i]``.
    ``handle`` returns ``(return_delay_s, status_bytes)`` pairs in the order they go out."""

    def __init__(self, ids: Sequence[int], model_number: int = 1200,
                 initial_position_rad: Sequence[float] | None = None,
                 firmware_version: int = 52) -> None:
        if not ids or len(set(ids)) != len(ids) or not all(0 <= i <= 252 for i in ids):
            raise ValueError("ids must be distinct servo ids 0..252")
        self.ids = tuple(ids)
        self.index = {dxl_id: i for i, dxl_id in enumerate(self.ids)}
        model = ct.MODELS.get(model_number)
        if model is None:
            raise ValueError(f"unknown model number {model_number}")
        n = len(ids)
        self.tables = [bytearray(ct.TABLE_SIZE) for _ in ids]
        for dxl_id, t in zip(self.ids, self.tables, strict=True):
            t[ct.MODEL_NUMBER: ct.MODEL_NUMBER + 2] = model_number.to_bytes(2, "little")
            t[ct.FIRMWARE_VERSION] = firmware_version
            t[ct.ID] = dxl_id
            t[ct.BAUD_RATE] = 3  # 1 Mbps
            t[ct.RETURN_DELAY_TIME] = 250  # factory: 500 us
            t[ct.OPERATING_MODE] = ct.POSITION_CONTROL_MODE
            t[ct.VELOCITY_LIMIT: ct.VELOCITY_LIMIT + 4] = ct.u32(model.velocity_limit)
            t[ct.MAX_POSITION_LIMIT: ct.MAX_POSITION_LIMIT + 4] = ct.u32(ct.TICKS_PER_REV - 1)
            t[ct.STATUS_RETURN_LEVEL] = 2
        start = np.zeros(n) if initial_position_rad is None else np.asarray(
            initial_position_rad, np.float64)
        vmax = np.full(n, model.velocity_limit * ct.RAD_S_PER_VELOCITY_UNIT)
        self.plant = ServoPlant(start, vmax)
        self._command = self.plant.position.copy()
        self._torque = np.zeros(n, bool)
        for i in range(n):  # Goal_Position starts where the servo is, as after power-up
            self._put(i, ct.GOAL_POSITION, ct.u32(self._present_ticks(i)))
        self.counters = ChainCounters()
        self._refresh()

    # -- coordinates: actual ticks (the plant) <-> the servo's present/goal ticks -------------
    def _reverse(self, i: int) -> bool:
        return bool(self.tables[i][ct.DRIVE_MODE] & 1)

    def _offset(self, i: int) -> int:
        return ct.read_int(self.tables[i], ct.HOMING_OFFSET, 4, signed=True)

    def _present_ticks(self, i: int) -> int:
        actual = round(self.plant.position[i] / ct.RAD_PER_TICK) + ct.CENTER_TICK
        return (ct.TICKS_PER_REV - actual if self._reverse(i) else actual) + self._offset(i)

    def _goal_to_actual_rad(self, i: int, goal: int) -> float:
        g = goal - self._offset(i)
        actual = ct.TICKS_PER_REV - g if self._reverse(i) else g
        return ct.ticks_to_rad(actual)

    def _put(self, i: int, address: int, data: bytes) -> None:
        self.tables[i][address: address + len(data)] = data

    def _refresh(self, only: int | None = None) -> None:
        """Copy the plant into the Present_* registers (of servo ``only``, or all)."""
        which = range(len(self.tables)) if only is None else (only,)
        actual = np.rint(self.plant.position / ct.RAD_PER_TICK).astype(np.int64) + ct.CENTER_TICK
        vel = np.rint(self.plant.velocity / ct.RAD_S_PER_VELOCITY_UNIT).astype(np.int64)
        for i in which:
            t = self.tables[i]
            rev = t[ct.DRIVE_MODE] & 1
            present = (ct.TICKS_PER_REV - actual[i] if rev else actual[i]) + self._offset(i)
            t[ct.PRESENT_VELOCITY: ct.PRESENT_POSITION + 4] = _VEL_POS.pack(
                int(-vel[i] if rev else vel[i]), int(present))
            t[ct.TORQUE_ENABLE] = int(self._torque[i])

    # -- servo loop ---------------------------------------------------------------------------
    def tick(self, dt_s: float) -> None:
        self.plant.step_masked(self._command, self._torque, dt_s)
        self._refresh()

    def move_by_hand(self, position_rad: Sequence[float]) -> None:
        """Put the joints (actual coordinates) where a person moved them; torque-off servos
        only (a servo holding torque does not move)."""
        pos = np.asarray(position_rad, np.float64)
        self.plant.position = np.where(self._torque, self.plant.position, pos)
        self.plant.velocity = np.zeros_like(pos)
        self._refresh()

    # -- registers ----------------------------------------------------------------------------
    def _write(self, i: int, address: int, data: bytes) -> int:
        """Apply a write to servo ``i``; returns the status error (0: done)."""
        end = address + len(data)
        if not data or end > ct.TABLE_SIZE:
            return StatusError.ACCESS
        if any(_read_only(a) for a in range(address, end)):
            return StatusError.ACCESS
        t = self.tables[i]
        if address < ct.EEPROM_END and t[ct.TORQUE_ENABLE]:
            return StatusError.ACCESS  # EEPROM is locked while torque is on
        if address <= ct.GOAL_POSITION and end >= ct.GOAL_POSITION + 4:
            k = ct.GOAL_POSITION - address
            goal = ct.signed32(int.from_bytes(data[k: k + 4], "little"))
            lo = ct.read_int(t, ct.MIN_POSITION_LIMIT, 4, signed=True)
            hi = ct.read_int(t, ct.MAX_POSITION_LIMIT, 4, signed=True)
            if t[ct.OPERATING_MODE] == ct.POSITION_CONTROL_MODE and not lo <= goal <= hi:
                self.counters.goal_out_of_limits += 1
                return StatusError.DATA_LIMIT
        t[address:end] = data
        if address <= ct.TORQUE_ENABLE < end:
            self._torque[i] = bool(t[ct.TORQUE_ENABLE])
        if (address <= ct.GOAL_POSITION + 3 and end > ct.GOAL_POSITION) or (
                address <= ct.TORQUE_ENABLE < end):
            goal = ct.read_int(t, ct.GOAL_POSITION, 4, signed=True)
            self._command[i] = self._goal_to_actual_rad(i, goal)
        if address < ct.EEPROM_END or address <= ct.TORQUE_ENABLE < end:
            self._refresh(i)  # offset, direction or torque changed what it reports
        return StatusError.NONE

    def _read(self, i: int, address: int, length: int) -> tuple[int, bytes]:
        if length == 0 or address + length > ct.TABLE_SIZE:
            return StatusError.ACCESS, b""
        return StatusError.NONE, bytes(self.tables[i][address: address + length])

    # -- packets ------------------------------------------------------------------------------
    def _status(self, i: int, error: int = 0, data: bytes = b"") -> tuple[float, bytes]:
        t = self.tables[i]
        hw = ALERT if t[ct.HARDWARE_ERROR_STATUS] else 0
        delay_s = t[ct.RETURN_DELAY_TIME] * ct.RETURN_DELAY_UNIT_US / 1e6
        self.counters.status_out += 1
        return delay_s, status(self.ids[i], error | hw, data)

    def _answers(self, i: int, inst: int) -> bool:
        level = self.tables[i][ct.STATUS_RETURN_LEVEL]
        return inst == Instruction.PING or level >= 2 or (level == 1 and inst == Instruction.READ)

    def handle(self, packet: Packet) -> list[tuple[float, bytes]]:
        """Answer one instruction packet; returns the status packets to send, in order."""
        self.counters.packets_in += 1
        inst, p = packet.instruction, packet.params
        if packet.id == BROADCAST_ID:
            if inst == Instruction.PING:
                return [self._status(i, data=self._ping_data(i)) for i in range(len(self.ids))]
            if inst == Instruction.SYNC_WRITE and len(p) >= 4:
                address, length = p[0] | p[1] << 8, p[2] | p[3] << 8
                step = length + 1
                for k in range(4, len(p) - step + 1, step):
                    i = self.index.get(p[k])
                    if i is not None and self._write(i, address, bytes(p[k + 1: k + step])):
                        self.counters.refused_writes += 1
                return []
            if inst == Instruction.SYNC_READ and len(p) >= 4:
                address, length = p[0] | p[1] << 8, p[2] | p[3] << 8
                out = []
                for dxl_id in p[4:]:
                    i = self.index.get(dxl_id)
                    if i is None:
                        break  # the servos after it wait for a status that never comes
                    error, data = self._read(i, address, length)
                    out.append(self._status(i, error, data))
                return out
            if inst == Instruction.WRITE and len(p) >= 3:
                for i in range(len(self.ids)):
                    self._write(i, p[0] | p[1] << 8, bytes(p[2:]))
            return []
        i = self.index.get(packet.id)
        if i is None:
            self.counters.not_ours += 1
            return []
        if inst == Instruction.PING:
            return [self._status(i, data=self._ping_data(i))]
        if inst == Instruction.READ:
            if len(p) != 4:
                error, data = StatusError.DATA_LENGTH, b""
            else:
                error, data = self._read(i, p[0] | p[1] << 8, p[2] | p[3] << 8)
        elif inst == Instruction.WRITE:
            error, data = (StatusError.DATA_LENGTH if len(p) < 3 else
                           self._write(i, p[0] | p[1] << 8, bytes(p[2:]))), b""
            if error:
                self.counters.refused_writes += 1
        else:
            error, data = StatusError.INSTRUCTION, b""
        return [self._status(i, error, data)] if self._answers(i, inst) else []

    def _ping_data(self, i: int) -> bytes:
        t = self.tables[i]
        return bytes(t[ct.MODEL_NUMBER: ct.MODEL_NUMBER + 2]) + bytes((t[ct.FIRMWARE_VERSION],))


class DynamixelServer:
    """The loop: answer packets as they arrive, tick the servos at ``servo_rate_hz``."""

    def __init__(self, chain: ServoChain, link: Transport, knobs: FailureKnobs | None = None,
                 relink: Callable[[], Transport] | None = None,
                 servo_rate_hz: int = 1000) -> None:
        self.chain = chain
        self.link = link
        self.knobs = knobs or FailureKnobs()
        self.servo_rate_hz = servo_rate_hz
        self._relink = relink
        self._rng = np.random.default_rng(self.knobs.seed)
        self._decoder = PacketDecoder()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._requests: list[tuple[str, float]] = []
        self._stall_until_ns = 0
        self._unplug_until_ns = 0
        self.stats = ServoStats()
        self.on_relink: Callable[[Transport], None] | None = None

    def stop(self) -> None:
        self._stop.set()

    def stall(self, seconds: float) -> None:
        with self._lock:
            self._requests.append(("stall", seconds))

    def unplug(self, seconds: float) -> None:
        with self._lock:
            self._requests.append(("unplug", seconds))

    @property
    def crc_failures(self) -> int:
        return self._decoder.crc_failures

    def run(self) -> None:
        period_ns = 1_000_000_000 // self.servo_rate_hz
        dt_s = period_ns / 1e9
        next_tick = time.monotonic_ns()
        try:
            while not self._stop.is_set():
                now = time.monotonic_ns()
                if self._requests:
                    self._apply_requests(now)
                if now < next_tick:
                    self._serve((next_tick - now) / 1e9, now)
                    continue
                late_ms = (now - next_tick) / 1e6
                self.stats.max_tick_late_ms = max(self.stats.max_tick_late_ms, late_ms)
                behind = (now - next_tick) // period_ns
                if behind > MAX_CATCH_UP_TICKS:
                    self.stats.skipped_ticks += int(behind)
                    next_tick += behind * period_ns
                self.chain.tick(dt_s)
                self.stats.ticks += 1
                next_tick += period_ns
        finally:
            self.link.close()

    def _apply_requests(self, now: int) -> None:
        with self._lock:
            requests, self._requests = self._requests, []
        for kind, seconds in requests:
            until = now + int(seconds * 1e9)
            if kind == "stall":
                self._stall_until_ns = until
            elif kind == "unplug" and self._relink is not None:
                self.stats.unplugs += 1
                self.link.close()
                self._decoder.reset()
                self._unplug_until_ns = until

    def _serve(self, timeout_s: float, now: int) -> None:
        if self._unplug_until_ns:
            if now < self._unplug_until_ns:
                time.sleep(min(timeout_s, (self._unplug_until_ns - now) / 1e9))
                return
            self._unplug_until_ns = 0
            assert self._relink is not None
            self.link = self._relink()
            if self.on_relink:
                self.on_relink(self.link)
        if now < self._stall_until_ns:
            time.sleep(min(timeout_s, (self._stall_until_ns - now) / 1e9))
            return
        try:
            data = self.link._read_raw(timeout_s)
        except LinkError:
            time.sleep(timeout_s)
            return
        if not data:
            return
        out = bytearray()  # status packets without a return delay leave in one write
        for packet in self._decoder.feed(data):
            for delay_s, raw in self.chain.handle(packet):
                if delay_s > 0:
                    self._write(out)
                    time.sleep(delay_s)
                out += self._mangle(raw)
        self._write(out)

    def _mangle(self, raw: bytes) -> bytes:
        """Apply the failure knobs to one status packet (dropped: empty)."""
        knobs = self.knobs
        if knobs.drop_replies and self._rng.random() < knobs.drop_replies:
            self.stats.replies_dropped += 1
            return b""
        if knobs.corrupt_replies and self._rng.random() < knobs.corrupt_replies:
            self.stats.replies_corrupted += 1
            buf = bytearray(raw)
            # a bit of the id, length, body or CRC: the header stays findable
            k = int(self._rng.integers(4, len(buf)))
            buf[k] ^= 1 << int(self._rng.integers(8))
            return bytes(buf)
        return raw

    def _write(self, out: bytearray) -> None:
        if not out:
            return
        with contextlib.suppress(LinkError):  # host side gone; it will reopen the port
            self.link._write_raw(bytes(out))
        out.clear()


def parse_ids(text: str) -> tuple[int, ...]:
    """``"1,2,3"`` or ``"1-7"`` (or a mix) -> servo ids. Raises ValueError."""
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        first, last = int(lo), int(hi) if sep else int(lo)
        ids.extend(range(first, last + 1))
    if not ids or len(set(ids)) != len(ids) or not all(0 <= i <= 252 for i in ids):
        raise ValueError(f"servo ids {text!r} must be distinct numbers 0..252 (e.g. 1,2,3 or 1-7)")
    return tuple(ids)


def host_url(path: str, ids: Sequence[int], family: str) -> str:
    return f"dynamixel://{path}?ids={','.join(str(i) for i in ids)}&model={family}"


def serve_dynamixel(url: str, ids: Sequence[int], family: str, knobs: FailureKnobs,
                    servo_rate_hz: int = 1000, stall_s: float = 0.5, unplug_s: float = 1.0,
                    announce: Callable[[str], None] = print,
                    initial_position_rad: Sequence[float] | None = None) -> DynamixelServer:
    """Run emulated servos on a pty until SIGTERM/SIGINT; prints the ``dynamixel://`` URL a
    host dials as the first line on stdout. SIGUSR1 stalls, SIGUSR2 unplugs (as the
    emulator's own protocol mode). Raises TransportUrlError for a URL other than pty://."""
    from firmware_bridge.emulator.service import device_link
    from firmware_bridge.transport.pty_device import PtyDeviceTransport

    if not url.startswith("pty://"):
        raise TransportUrlError(f"DYNAMIXEL servos are emulated on a pty:// only, not {url!r}")
    if family not in ct.DEFAULT_MODEL:
        raise TransportUrlError(f"unknown servo model {family!r} (known: "
                                f"{', '.join(ct.DEFAULT_MODEL)})")
    spec = device_link(url)
    chain = ServoChain(ids, ct.DEFAULT_MODEL[family], initial_position_rad)
    server = DynamixelServer(chain, spec.open(), knobs, relink=spec.open,
                             servo_rate_hz=servo_rate_hz)

    def say(t: Transport) -> None:
        assert isinstance(t, PtyDeviceTransport)
        announce(host_url(t.link or t.slave_path, ids, family))
        sys.stdout.flush()

    say(server.link)
    server.on_relink = say
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    signal.signal(signal.SIGUSR1, lambda *_: server.stall(stall_s))
    signal.signal(signal.SIGUSR2, lambda *_: server.unplug(unplug_s))
    server.run()
    return server


EMULATED_SCHEME = "dynamixel+pty"


def emulator_launch(url: str, n_joints: int) -> tuple[str, tuple[str, ...]]:
    """``dynamixel+pty://[LINK]?ids=1-7&model=xl330&baud=...`` (what follows ``emulator+``
    in a robot config) -> the emulator's device URL and its ``serve`` arguments.
    Raises TransportUrlError."""
    parsed = TransportUrl.parse(url)
    if parsed.scheme != EMULATED_SCHEME:
        raise TransportUrlError(f"{url!r}: expected {EMULATED_SCHEME}://[LINK]?ids=...")
    ids = parsed.params.get("ids") or f"1-{n_joints}"
    try:
        n_ids = len(parse_ids(ids))
    except ValueError as err:
        raise TransportUrlError(f"{url}: {err}") from err
    if n_ids != n_joints:
        raise TransportUrlError(f"{url}: {n_ids} servo ids for {n_joints} joints")
    return f"pty://{parsed.path}", ("--protocol", "dynamixel", "--ids", ids,
                                    "--model", parsed.params.get("model", "xl330"))


def dial_url(announced: str, url: str) -> str:
    """The emulator's announced ``dynamixel://`` URL plus the host-side parameters of ``url``
    (baud, estop, calibration, latency_ms)."""
    host = {k: v for k, v in TransportUrl.parse(url).params.items()
            if k in ("baud", "estop", "calibration", "latency_ms")}
    return announced + "".join(f"&{k}={v}" for k, v in host.items())
