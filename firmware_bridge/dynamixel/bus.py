"""``dynamixel:///dev/ttyUSB0?baud=4000000&ids=1-7&model=xl330``: an arm built directly from
DYNAMIXEL X-series servos (Protocol 2.0), behind the interface of
:class:`firmware_bridge.bus.MotorBus`.

The servos replace the motor controller, so the parts of its firmware the servos lack run
here, on the host:
- one control cycle = one SYNC_WRITE of Goal_Position (only in POSITION) + one SYNC_READ of
  Present_Velocity and Present_Position (packets built by the SDK's GroupSyncWrite and
  GroupSyncRead; the status packets are read servo by servo so a silent one can be named); a
  sync read that fails (timeout, bad CRC) is retried ``read_retries`` times within the cycle,
  then the cycle returns None;
- modes map to Torque_Enable: TORQUE_OFF = off; HOLD and POSITION = on, and torque is switched
  on only after Goal_Position was set to the present position (a servo switched on moves to
  its Goal_Position); the e-stop and faults (a servo's hardware alert, a NaN setpoint) latch
  here, holding (``estop=hold``, the default) or switching torque off (``estop=off``);
- calibration (homing offset, drive sign, limits; raw radians = (ticks - 2048) 2 pi / 4096)
  is applied with firmware's formulas; it is stored on the host per port
  (:mod:`firmware_bridge.dynamixel.calibration_store`);
- there is no command watchdog on the servos (a host that stops sending leaves each servo
  holding its last Goal_Position), so the bus keeps firmware's on the host: when the link is
  lost, or no cycle succeeded for ``watchdog_ms``, POSITION drops to HOLD (Goal_Position :=
  the present position at the next cycle that reaches the servos) and POSITION must be
  requested again; the controller sees HOLD and faults, as with firmware;
- a sync-read reply with an error code or the wrong data length is a failed read, never a
  position;
- the e-stop latch outlives the process: it is stored beside the calibration store
  (:mod:`firmware_bridge.dynamixel.latch_store`) until cleared; an e-stop that cannot reach
  the servos (link down) is applied when they answer again.

At connect every servo is pinged (a missing one is named), its EEPROM read, its
Return_Delay_Time set to 0 (when torque is off; EEPROM is locked otherwise) and the USB
latency timer checked. Requests (mode, e-stop, calibration) are retried ``retries`` times per
servo; a lost port is reopened in the background of later calls, as for MotorBus (one short
attempt per call: a servo that does not answer one ping within ``cycle_timeout_ms`` ends it).

URL parameters: ``baud`` (default 1000000), ``ids`` (``1,2,3`` or ``1-7``, joint order),
``model`` (family, e.g. ``xl330``, ``xm430``; checked against each servo's model number),
``estop`` (``hold`` | ``off``), ``calibration`` (path of the calibration store),
``latency_ms`` (USB latency allowance per reply, default 1 for a timer of 1 ms),
``watchdog_ms`` (the host-side command watchdog, default 100).
Needs the ``dynamixel`` extra (``dynamixel-sdk``).
"""

from __future__ import annotations

import os
import select
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from firmware_bridge import PROTOCOL_VERSION
from firmware_bridge.dynamixel import control_table as ct
from firmware_bridge.dynamixel.calibration_store import (
    CalibrationStoreError,
    ServoIdentity,
    default_store_path,
    load_calibration,
    save_calibration,
)
from firmware_bridge.dynamixel.emulator import parse_ids
from firmware_bridge.dynamixel.errors import (
    DynamixelSdkMissingError,
    ServoMissingError,
    ServoSetupError,
)
from firmware_bridge.dynamixel.latch_store import clear_latch, latch_path, load_latch, save_latch
from firmware_bridge.dynamixel.packet import ALERT, StatusError
from firmware_bridge.errors import (
    DeviceRejectedError,
    DeviceTimeoutError,
    LinkError,
    ProtocolError,
    TransportUrlError,
)
from firmware_bridge.link_stats import LinkStats
from firmware_bridge.messages import (
    AckStatus,
    Calibration,
    Fault,
    FaultCode,
    Info,
    Mode,
    State,
)
from firmware_bridge.transport.url import TransportUrl

DEFAULT_BAUD = 1_000_000
SDK_BAUDS = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000, 576000, 921600,
             1000000, 1152000, 2000000, 2500000, 3000000, 3500000, 4000000)
DEFAULT_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow", "wrist_flex", "wrist_roll",
                  "wrist_pitch")
LATENCY_SYSFS = "/sys/bus/usb-serial/devices/{tty}/latency_timer"
DEFAULT_WATCHDOG_MS = 100.0
# Status packet layout as the SDK's rxPacket returns it (stuffing removed).
_PKT_ID, _PKT_LENGTH, _PKT_ERROR, _PKT_DATA = 4, 5, 8, 9

_sdk_cache: dict[str, Any] = {}


def _sdk() -> Any:
    """Import ``dynamixel_sdk`` (and build the port class on it) on first use."""
    if "sdk" not in _sdk_cache:
        try:
            import termios

            import dynamixel_sdk
            import serial
        except ImportError as err:
            raise DynamixelSdkMissingError(
                "dynamixel:// buses need the dynamixel-sdk package: install the dynamixel "
                "extra (pip install 'ramp-edge[dynamixel]')") from err

        class Port(dynamixel_sdk.PortHandler):
            """The SDK's port with our timeout (the SDK assumes a 16 ms USB latency timer
            and allows 34 ms per reply), a read that sleeps in select instead of spinning
            on a non-blocking read, and writes of bytes."""

            timeout_ms = 5.0

            def setPacketTimeout(self, packet_length: int) -> None:
                self.packet_start_time = self.getCurrentTime()
                self.packet_timeout = self.tx_time_per_byte * packet_length + self.timeout_ms

            def clearPort(self) -> None:
                # drop stale input before each instruction (SDK 3.7 flushed output instead)
                self.ser.reset_input_buffer()

            def writePort(self, packet: list[int]) -> int:
                # bytes, not the SDK's list of ints: pyserial writes a list far slower
                return self.ser.write(bytes(packet))

            def readPort(self, length: int) -> bytes:
                if not self.ser.in_waiting:
                    left_ms = self.packet_timeout - self.getTimeSinceStart()
                    if left_ms > 0:
                        select.select([self.ser.fileno()], [], [], min(left_ms, 2.0) / 1000)
                return self.ser.read(length)

        _sdk_cache.update(sdk=dynamixel_sdk, port=Port,
                          io_errors=(serial.SerialException, OSError, termios.error))
    return _sdk_cache["sdk"]


def _error_name(code: int) -> str:
    return StatusError(code).name if code in StatusError._value2member_map_ else str(code)


def latency_timer_check(port: str) -> tuple[int | None, str]:
    """The USB-serial latency timer of ``port`` in ms (None if not applicable) and a note.

    A timer above 1 ms delays every status packet by up to that much (FTDI default: 16 ms)."""
    real = os.path.realpath(port)
    tty = os.path.basename(real)
    if real.startswith("/dev/pts/") or real == "/dev/ptmx":
        return None, "not applicable: a pseudo-terminal has no USB latency timer"
    path = LATENCY_SYSFS.format(tty=tty)
    try:
        value = int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None, f"unknown: {path} does not exist ({tty} is not a USB-serial adapter)"
    if value <= 1:
        return value, f"{value} ms"
    return value, (f"{value} ms, should be 1: each reply waits up to {value} ms in the adapter."
                   f" Fix: echo 1 | sudo tee {path} (or a udev rule: ATTR{{latency_timer}}=\"1\""
                   " for the adapter)")


class DynamixelBus:
    """MotorBus's interface over a chain of DYNAMIXEL servos. One thread drives it.

    ``joint_names`` name the servos in ``ids`` order (default: the emulated arm's names).
    ``cycle_timeout_ms`` bounds each sync read, ``request_timeout_ms`` each reply to a
    request, ``retries`` the retries of each request per servo.
    """

    def __init__(
        self,
        url: str,
        *,
        joint_names: Sequence[str] | None = None,
        cycle_timeout_ms: float = 5.0,
        request_timeout_ms: float = 50.0,
        retries: int = 3,
        read_retries: int = 1,
        reconnect_interval_s: float = 0.2,
    ) -> None:
        parsed = TransportUrl.parse(url)
        if parsed.scheme != "dynamixel" or not parsed.path:
            raise TransportUrlError(f"{url}: expected dynamixel:///dev/PORT?ids=1,2,...")
        self.url = url
        self.port_path = parsed.path
        self.baud = parsed.int_param("baud", DEFAULT_BAUD)
        if self.baud not in SDK_BAUDS:
            raise TransportUrlError(f"{url}: baud {self.baud} is not one the servos support "
                                    f"({', '.join(str(b) for b in SDK_BAUDS)})")
        try:
            self.ids = parse_ids(parsed.params.get("ids", "1"))
        except ValueError as err:
            raise TransportUrlError(f"{url}: {err}") from err
        self.family = parsed.params.get("model", "").lower() or None
        if self.family is not None and self.family not in ct.FAMILIES:
            raise TransportUrlError(f"{url}: unknown servo model {self.family!r} (known: "
                                    f"{', '.join(ct.FAMILIES)})")
        self.estop_action = parsed.params.get("estop", "hold")
        if self.estop_action not in ("hold", "off"):
            raise TransportUrlError(f"{url}: estop must be hold or off")
        store = parsed.params.get("calibration")
        self.calibration_path = Path(store) if store else default_store_path(self.port_path)
        self.latch_path = latch_path(self.calibration_path)
        self.latency_ms = parsed.float_param("latency_ms", 1.0)
        self.watchdog_ms = parsed.float_param("watchdog_ms", DEFAULT_WATCHDOG_MS)
        if not 0 < self.watchdog_ms < float("inf"):
            raise TransportUrlError(f"{url}: watchdog_ms must be a positive number of ms")
        n = len(self.ids)
        if joint_names is None:
            arm = [DEFAULT_JOINTS[i] if i < len(DEFAULT_JOINTS) else f"joint_{i}"
                   for i in range(n - 1)]
            joint_names = (*arm, "gripper") if n > 1 else ("joint_0",)
        self.joint_names = tuple(joint_names)
        if len(self.joint_names) != n:
            raise TransportUrlError(f"{url}: {n} servo ids for {len(self.joint_names)} joints")
        self.cycle_timeout_ms = cycle_timeout_ms
        self.request_timeout_ms = request_timeout_ms
        self.retries = retries
        self.read_retries = read_retries
        self.reconnect_interval_s = reconnect_interval_s
        self.info: Info | None = None
        self.stats = LinkStats()
        self.faults: deque[Fault] = deque(maxlen=64)
        self.last_error: str | None = None
        self.crc_failures = 0
        self.goal_clamps = 0
        self.hardware_alerts = 0
        self.status_errors = 0  # sync-read replies with an error code or wrong length
        self.watchdog_holds = 0
        self.watchdog_note = ""
        self.latch_note = ""
        self.latency_timer_ms: int | None = None
        self.latency_note = ""
        self.return_delay_us: list[int] = []
        self.calibration_note = ""
        self._port: Any = None
        self._ph: Any = None
        self._next_reconnect = 0.0
        self._mode = Mode.TORQUE_OFF
        self._fault = FaultCode.NONE
        self._last_ok_s = 0.0  # last successful cycle or mode request (monotonic s)
        self._hold_pending = False  # Goal_Position := present position at the next read
        self._estop_pending = False  # the e-stop's action has not reached the servos yet
        self._servos: tuple[ServoIdentity, ...] = ()
        self._raw_lo = np.zeros(n)  # servo limits, ticks
        self._raw_hi = np.zeros(n)
        self._clip = np.zeros(n, bool)  # servos whose limits apply to Goal_Position
        self._cal = self._default_calibration()
        self._group_read: Any = None
        self._group_write: Any = None

    # -- connection -----------------------------------------------------------------------------
    def connect(self) -> Info:
        """Open the port, find every servo and set it up. Raises LinkError, ServoMissingError
        (a servo does not answer), ServoSetupError, DeviceTimeoutError,
        DynamixelSdkMissingError. An e-stop latched before (by this or an earlier process)
        stays latched: the state reports ESTOP until :meth:`clear_fault`."""
        stored = load_latch(self.latch_path)
        if stored is not None and self._mode != Mode.ESTOP:
            self._latch(Mode.ESTOP, FaultCode.ESTOP, f"e-stop latched before connect: {stored}")
            self._estop_pending = self.estop_action == "off"  # "hold": leave torque as it is
        self._open()
        try:
            info = self._setup()
        except BaseException:
            self._drop_link()
            raise
        self.info = info
        self._last_ok_s = time.monotonic()
        self._retry_estop_action()
        if self.latency_timer_ms is not None and self.latency_timer_ms > 1:
            warnings.warn(f"{self.port_path}: USB latency timer {self.latency_note}",
                          RuntimeWarning, stacklevel=2)
        return info

    def _open(self) -> None:
        sdk = _sdk()
        port = _sdk_cache["port"](self.port_path)
        try:
            port.baudrate = self.baud
            port.setupPort(self.baud)
        except _sdk_cache["io_errors"] as err:
            raise LinkError(f"cannot open serial port {self.port_path}: {err}") from err
        ph = sdk.PacketHandler(2.0)
        self._port, self._ph = port, ph
        # the SDK's group objects build the SYNC_READ / SYNC_WRITE packets (their signatures
        # differ between SDK versions); the status packets are read here, servo by servo
        self._group_read = sdk.GroupSyncRead(port, ph, ct.STATE_START, ct.STATE_LENGTH)
        self._group_write = sdk.GroupSyncWrite(port, ph, ct.GOAL_POSITION, 4)
        for dxl_id in self.ids:
            self._group_read.addParam(dxl_id)
            self._group_write.addParam(dxl_id, [0, 0, 0, 0])

    @property
    def connected(self) -> bool:
        return self._port is not None

    @property
    def n_joints(self) -> int:
        return len(self.ids)

    def _drop_link(self) -> None:
        self._watchdog_hold("the link was lost")
        if self._port is not None:
            try:
                self._port.closePort()
            except _sdk_cache["io_errors"]:
                pass  # already gone (unplugged)
            self._port = None
        self._next_reconnect = time.monotonic() + self.reconnect_interval_s

    def _ensure_link(self) -> bool:
        if self._port is not None:
            return True
        if self.info is None or time.monotonic() < self._next_reconnect:
            return False
        previous = self._servos
        try:
            self._open()
            self._probe()
            info = self._setup()
        except (LinkError, DeviceTimeoutError, ProtocolError, DeviceRejectedError) as err:
            self.last_error = f"reconnect to {self.port_path} failed: {err}"
            self._drop_link()
            return False
        if [(s.id, s.model_number) for s in self._servos] != [
                (s.id, s.model_number) for s in previous]:
            self.last_error = (f"other servos answered on {self.port_path} after reconnecting; "
                               "refusing to use them")
            self._servos = previous
            self._drop_link()
            return False
        self.info = info
        self.stats.reconnects += 1
        self.last_error = None
        self._retry_estop_action()
        return True

    def _probe(self) -> None:
        """One ping per servo with the cycle's timeout, no retries: a reconnect to servos that
        are silent (port open, power off) ends in milliseconds and is tried again later."""
        sdk = _sdk_cache["sdk"]
        for k, dxl_id in enumerate(self.ids):
            _model, result, _error = self._io(self._ph.ping, dxl_id,
                                              timeout_ms=self.cycle_timeout_ms)
            if result != sdk.COMM_SUCCESS:
                self._note_failure(result)
                raise DeviceTimeoutError(f"{self._name(k)} did not answer a ping")

    def _name(self, k: int) -> str:
        return f"servo {self.ids[k]} ({self.joint_names[k]})"

    # -- one transaction with the SDK -------------------------------------------------------------
    def _io(self, fn: Callable[..., Any], *args: Any, timeout_ms: float) -> Any:
        """Call an SDK packet-handler function; a port error becomes LinkError."""
        port = self._port
        if port is None:
            raise LinkError(f"link to {self.port_path} is down")
        port.timeout_ms = timeout_ms + self.latency_ms
        try:
            return fn(port, *args)
        except _sdk_cache["io_errors"] as err:
            self.stats.link_errors += 1
            self.last_error = f"{self.port_path}: {err}"
            self._drop_link()
            raise LinkError(f"{self.port_path}: port lost ({err})") from err
        finally:
            port.is_using = False

    def _note_failure(self, result: int) -> None:
        sdk = _sdk_cache["sdk"]
        if result == sdk.COMM_RX_CORRUPT:
            self.crc_failures += 1
        else:
            self.stats.timeouts += 1

    def _check_error(self, k: int, error: int, what: str) -> None:
        if error & ALERT:
            self._hardware_alert(k)
        code = error & 0x7F
        if code:
            raise DeviceRejectedError(f"{self._name(k)} refused {what}: {_error_name(code)} error",
                                      code)

    def _transact(self, k: int, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """A request to servo ``k`` with the bus's retries; returns the SDK's data part.
        Raises DeviceTimeoutError, DeviceRejectedError, LinkError."""
        sdk = _sdk_cache["sdk"]
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
            self.stats.requests += 1
            t0 = time.perf_counter_ns()
            out = self._io(fn, self.ids[k], *args, timeout_ms=self.request_timeout_ms)
            result, error = out[-2], out[-1]
            if result == sdk.COMM_SUCCESS:
                self.stats.replies += 1
                self.stats.add_rtt((time.perf_counter_ns() - t0) / 1000)
                self._check_error(k, error, what)
                return out[0] if len(out) == 3 else None
            self._note_failure(result)
        raise DeviceTimeoutError(
            f"{self._name(k)} did not answer {what} on {self.port_path} after "
            f"{self.retries + 1} tries of {self.request_timeout_ms:.0f} ms")

    def _read(self, k: int, address: int, length: int, what: str) -> bytes:
        return bytes(self._transact(k, f"reading {what}", self._ph.readTxRx, address, length))

    def _write(self, k: int, address: int, data: bytes, what: str) -> None:
        self._transact(k, f"writing {what}", self._ph.writeTxRx, address, len(data), list(data))

    # -- set-up ---------------------------------------------------------------------------------
    def _setup(self) -> Info:
        missing: list[int] = []
        models: list[int] = []
        sdk = _sdk_cache["sdk"]
        for k, dxl_id in enumerate(self.ids):
            for _attempt in range(self.retries + 1):
                model, result, _error = self._io(self._ph.ping, dxl_id,
                                                 timeout_ms=self.request_timeout_ms)
                if result == sdk.COMM_SUCCESS:
                    break
                self._note_failure(result)
            else:
                missing.append(k)
                model = 0
            models.append(model)
        if missing:
            answered = [str(i) for k, i in enumerate(self.ids) if k not in missing]
            raise ServoMissingError(
                f"{', '.join(self._name(k) for k in missing)} did not answer a ping on "
                f"{self.port_path} at {self.baud} baud (servos that answered: "
                f"{', '.join(answered) or 'none'}): check each missing servo's power, cable, id"
                " and baud rate")
        wrong = [k for k, m in enumerate(models) if m not in ct.MODELS
                 or (self.family and ct.MODELS[m].family != self.family)]
        if wrong:
            k = wrong[0]
            want = f"an {self.family.upper()}" if self.family else "an X-series servo"
            raise ServoSetupError(f"{self._name(k)} on {self.port_path} is "
                                  f"{ct.model_name(models[k])}, the bus URL expects {want}")
        tables = [self._read(k, 0, ct.SETUP_LENGTH, "its EEPROM") for k in range(len(self.ids))]
        self.return_delay_us = []
        servos = []
        vmax = []
        for k, t in enumerate(tables):
            torque = bool(t[ct.TORQUE_ENABLE])
            mode = t[ct.OPERATING_MODE]
            if mode not in ct.POSITION_MODES:
                if torque:
                    raise ServoSetupError(
                        f"{self._name(k)} is in operating mode {mode}, not position control, "
                        "with torque on: switch its torque off, then connect again")
                self._write(k, ct.OPERATING_MODE, bytes((ct.POSITION_CONTROL_MODE,)),
                            "Operating_Mode")
                mode = ct.POSITION_CONTROL_MODE
            rdt = t[ct.RETURN_DELAY_TIME]
            if rdt and not torque:
                self._write(k, ct.RETURN_DELAY_TIME, b"\x00", "Return_Delay_Time")
                rdt = 0
            self.return_delay_us.append(rdt * ct.RETURN_DELAY_UNIT_US)
            self._raw_lo[k] = ct.read_int(t, ct.MIN_POSITION_LIMIT, 4, signed=True)
            self._raw_hi[k] = ct.read_int(t, ct.MAX_POSITION_LIMIT, 4, signed=True)
            self._clip[k] = mode == ct.POSITION_CONTROL_MODE
            vmax.append(ct.read_int(t, ct.VELOCITY_LIMIT, 4) * ct.RAD_S_PER_VELOCITY_UNIT)
            servos.append(ServoIdentity(self.ids[k], models[k],
                                        ct.read_int(t, ct.HOMING_OFFSET, 4, signed=True),
                                        t[ct.DRIVE_MODE]))
        status_level = self._read_status_levels()
        for k, level in enumerate(status_level):
            if level < 2:  # writes must be acknowledged for the bus to know they arrived
                self._write(k, ct.STATUS_RETURN_LEVEL, b"\x02", "Status_Return_Level")
        self._servos = tuple(servos)
        cal, why = load_calibration(self.calibration_path, self._servos)
        self._cal = cal if cal is not None else self._default_calibration()
        self.calibration_note = why
        torque = [bool(t[ct.TORQUE_ENABLE]) for t in tables]
        if self.info is not None and self._mode in (Mode.HOLD, Mode.POSITION):
            # a reconnect: servos that stayed powered still hold their goals; one that lost
            # torque was power-cycled and hangs limp while the others hold
            limp = [k for k, on in enumerate(torque) if not on]
            if limp:
                self._latch(Mode.FAULT, FaultCode.INTERNAL,
                            f"{', '.join(self._name(k) for k in limp)} lost torque while the "
                            "link was down (power cycled?)")
        elif not self._latched:
            self._mode = Mode.HOLD if any(torque) else Mode.TORQUE_OFF
        self.latency_timer_ms, self.latency_note = latency_timer_check(self.port_path)
        self._vmax = np.asarray(vmax, np.float32)
        families = sorted({ct.model_name(m) for m in models})
        fw = sorted({t[ct.FIRMWARE_VERSION] for t in tables})
        self._firmware = (f"DYNAMIXEL Protocol 2.0: {', '.join(families)}, firmware "
                          f"{', '.join(str(v) for v in fw)}")
        return self._make_info()

    def _read_status_levels(self) -> list[int]:
        return [self._read(k, ct.STATUS_RETURN_LEVEL, 1, "Status_Return_Level")[0]
                for k in range(len(self.ids))]

    def _make_info(self) -> Info:
        lo = self._to_user(ct.ticks_to_rad(self._raw_lo))
        hi = self._to_user(ct.ticks_to_rad(self._raw_hi))
        return Info(
            protocol_version=PROTOCOL_VERSION,
            firmware_version=self._firmware,
            device_id=f"dynamixel ids {','.join(str(i) for i in self.ids)}",
            joint_names=self.joint_names,
            position_min=np.minimum(lo, hi).astype(np.float32),
            position_max=np.maximum(lo, hi).astype(np.float32),
            velocity_max=self._vmax,
            watchdog_ms=round(self.watchdog_ms),  # the host's (the servos have none)
            servo_rate_hz=0,  # the servos' own loop rate is not reported
        )

    def _default_calibration(self) -> Calibration:
        n = len(self.ids)
        return Calibration(np.zeros(n, np.float32), np.ones(n, np.int8),
                           ct.ticks_to_rad(self._raw_lo).astype(np.float32),
                           ct.ticks_to_rad(self._raw_hi).astype(np.float32), "")

    # -- coordinates ----------------------------------------------------------------------------
    def _to_user(self, raw_rad: np.ndarray) -> np.ndarray:
        cal = self._cal
        return cal.drive_sign * (raw_rad - cal.homing_offset.astype(np.float64))

    def _to_ticks(self, user: np.ndarray) -> np.ndarray:
        cal = self._cal
        raw = user * cal.drive_sign + cal.homing_offset.astype(np.float64)
        return np.rint(raw / ct.RAD_PER_TICK) + ct.CENTER_TICK

    # -- the control cycle ----------------------------------------------------------------------
    @property
    def _latched(self) -> bool:
        return self._mode in (Mode.FAULT, Mode.ESTOP)

    def _rx_status(self, port: Any, dxl_id: int) -> tuple[bytes, int, int]:
        """The status packet of ``dxl_id``: ``(data, result, error)``. As the SDK's readRx, but
        the data is the packet's own parameters (readRx slices a fixed length, which runs into
        the CRC of a short packet)."""
        sdk = _sdk_cache["sdk"]
        while True:
            rx, result = self._ph.rxPacket(port, False)
            if result != sdk.COMM_SUCCESS or rx[_PKT_ID] == dxl_id:
                break
        if result != sdk.COMM_SUCCESS:
            return b"", result, 0
        size = (rx[_PKT_LENGTH] | rx[_PKT_LENGTH + 1] << 8) - 4  # less instruction, error, CRC
        return bytes(rx[_PKT_DATA: _PKT_DATA + size]), result, rx[_PKT_ERROR]

    def _sync_read(self, timeout_ms: float, tries: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Present position (ticks) and velocity (units) of every servo, or None. A reply with
        an error code or the wrong data length fails the attempt as a missing one does."""
        sdk = _sdk_cache["sdk"]
        n = len(self.ids)
        ticks = np.empty(n)
        vel = np.empty(n)
        for attempt in range(tries):
            if attempt:
                self.stats.retries += 1
            # one deadline for the whole read: the reply time of every servo
            result = self._io(lambda _port: self._group_read.txPacket(), timeout_ms=timeout_ms)
            if result != sdk.COMM_SUCCESS:
                self._note_failure(result)
                continue
            for k, dxl_id in enumerate(self.ids):
                raw, result, error = self._io(self._rx_status, dxl_id, timeout_ms=timeout_ms)
                if result != sdk.COMM_SUCCESS:
                    self._note_failure(result)
                    what = "a bad CRC" if result == sdk.COMM_RX_CORRUPT else "no reply"
                    self.last_error = f"sync read: {what} from {self._name(k)}"
                    break
                if error & ALERT:
                    self._hardware_alert(k)
                code = error & 0x7F
                if code or len(raw) != ct.STATE_LENGTH:
                    self.status_errors += 1
                    what = (f"error {_error_name(code)}" if code
                            else f"{len(raw)} data bytes, not {ct.STATE_LENGTH},")
                    self.last_error = f"sync read: {what} in the reply of {self._name(k)}"
                    break
                vel[k] = int.from_bytes(raw[0:4], "little", signed=True)
                ticks[k] = int.from_bytes(raw[4:8], "little", signed=True)
            else:
                return ticks, vel
        return None

    def _make_state(self, ticks: np.ndarray, vel: np.ndarray) -> State:
        sign = self._cal.drive_sign
        return State(
            mode=self._mode, fault=self._fault,
            position=self._to_user(ct.ticks_to_rad(ticks)).astype(np.float32),
            velocity=(sign * vel * ct.RAD_S_PER_VELOCITY_UNIT).astype(np.float32),
            effort=np.zeros(len(self.ids), np.float32),  # not read: no torque constants
        )

    def _write_goals(self, ticks: np.ndarray) -> None:
        """One SYNC_WRITE of Goal_Position (ticks, joint order). Raises LinkError."""
        group = self._group_write
        for dxl_id, value in zip(self.ids, ticks.astype(np.int64).tolist(), strict=True):
            group.changeParam(dxl_id, list(ct.u32(value)))
        self._io(lambda _port: group.txPacket(), timeout_ms=self.cycle_timeout_ms)

    def _send_goal(self, position: np.ndarray) -> None:
        target = np.asarray(position, np.float64)
        if target.shape != (len(self.ids),) or not np.all(np.isfinite(target)):
            self._latch(Mode.FAULT, FaultCode.BAD_SETPOINT, "setpoint with wrong size or NaN/inf")
            return
        with np.errstate(over="ignore", invalid="ignore"):
            ticks = self._to_ticks(target)
        # beyond what Goal_Position can hold in any mode (it would wrap through 32 bits)
        if not np.all(np.abs(ticks) <= ct.GOAL_TICKS_MAX):
            self._latch(Mode.FAULT, FaultCode.BAD_SETPOINT,
                        f"setpoint beyond +-{ct.GOAL_TICKS_MAX * ct.RAD_PER_TICK:.0f} rad")
            return
        clipped = np.where(self._clip, np.clip(ticks, self._raw_lo, self._raw_hi), ticks)
        if not np.array_equal(clipped, ticks):
            self.goal_clamps += 1
        self._write_goals(clipped)

    def _watchdog_hold(self, why: str) -> None:
        """Firmware's command watchdog, on the host: POSITION -> HOLD where the arm is."""
        if self._mode == Mode.POSITION:
            self._mode = Mode.HOLD
            self._hold_pending = True
            self.watchdog_holds += 1
            self.watchdog_note = f"{why}: holding; POSITION must be requested again"

    def _cycle(self, position: np.ndarray | None) -> State | None:
        if not self._ensure_link():
            return None
        silent_s = time.monotonic() - self._last_ok_s
        if silent_s * 1000 > self.watchdog_ms:
            self._watchdog_hold(f"no cycle succeeded for {silent_s * 1000:.0f} ms")
        self.stats.requests += 1
        t0 = time.perf_counter_ns()
        try:
            if self._estop_pending:
                self._retry_estop_action()
            if position is not None and self._mode == Mode.POSITION:
                self._send_goal(position)
            got = self._sync_read(self.cycle_timeout_ms, 1 + self.read_retries)
            if got is not None and self._hold_pending:
                self._write_goals(got[0])
                self._hold_pending = False
        except LinkError:
            return None
        if got is None:
            return None
        self._last_ok_s = time.monotonic()
        self.stats.replies += 1
        self.stats.add_rtt((time.perf_counter_ns() - t0) / 1000)
        return self._make_state(*got)

    def exchange(self, position: np.ndarray, reach_in_us: int,
                 velocity: np.ndarray | None = None) -> State | None:
        """Send Goal_Position (joint order, rad; clipped to the servos' own limits, only in
        POSITION) and return the measured state, or None if the sync read failed or the link
        is down. ``reach_in_us`` and ``velocity`` are not used: servos take a goal at once."""
        return self._cycle(position)

    def read_state(self) -> State | None:
        """Read the joint state without commanding anything; None as for :meth:`exchange`."""
        return self._cycle(None)

    # -- requests -------------------------------------------------------------------------------
    def _require_link(self) -> None:
        if not self._ensure_link():
            raise LinkError(self.last_error or f"link to {self.port_path} is down")

    def _present_ticks(self) -> np.ndarray:
        got = self._sync_read(self.request_timeout_ms, self.retries + 1)
        if got is None:
            raise DeviceTimeoutError(f"no usable sync read reply from the servos on "
                                     f"{self.port_path} ({self.last_error})")
        return got[0]

    def _torque_on_here(self) -> None:
        """Goal_Position := present position, then torque on: the arm stays where it is."""
        ticks = self._present_ticks()
        for k in range(len(self.ids)):
            self._write(k, ct.GOAL_POSITION, ct.u32(int(ticks[k])), "Goal_Position")
        self._hold_pending = False
        for k in range(len(self.ids)):
            self._write(k, ct.TORQUE_ENABLE, b"\x01", "Torque_Enable")

    def _torque_off(self) -> None:
        for k in range(len(self.ids)):
            self._write(k, ct.TORQUE_ENABLE, b"\x00", "Torque_Enable")

    def set_mode(self, mode: Mode) -> None:
        """TORQUE_OFF, HOLD (torque on, holding where the joints are now) or POSITION.
        Raises DeviceRejectedError (latched, or a mode that cannot be requested),
        DeviceTimeoutError, LinkError."""
        self._require_link()
        if self._latched:
            raise DeviceRejectedError(f"device refused ModeRequest: REJECTED latched "
                                      f"{self._mode.name}: send CLEAR_FAULT first",
                                      int(AckStatus.REJECTED))
        if mode == Mode.TORQUE_OFF:
            self._torque_off()
        elif mode == Mode.HOLD or (mode == Mode.POSITION and (
                self._mode == Mode.TORQUE_OFF or self._hold_pending)):
            self._torque_on_here()
        elif mode != Mode.POSITION:
            raise DeviceRejectedError(f"device refused ModeRequest: BAD_REQUEST mode "
                                      f"{mode.name} cannot be requested",
                                      int(AckStatus.BAD_REQUEST))
        self._mode = mode
        self._last_ok_s = time.monotonic()  # the watchdog counts from the request

    def _latch(self, mode: Mode, code: FaultCode, detail: str) -> None:
        if self._latched and mode == Mode.FAULT:
            return  # first fault wins; an e-stop still overrides a fault
        self._mode, self._fault = mode, code
        self.faults.append(Fault(code, detail))
        self.stats.faults_reported += 1

    def _hardware_alert(self, k: int) -> None:
        self.hardware_alerts += 1
        self._latch(Mode.FAULT, FaultCode.INTERNAL,
                    f"{self._name(k)} reports a hardware error (alert bit): read its "
                    "Hardware_Error_Status; it clears only by rebooting the servo")

    def _apply_estop_action(self) -> None:
        if self.estop_action == "off":
            self._torque_off()
        else:
            self._torque_on_here()
        self._estop_pending = False

    def _retry_estop_action(self) -> None:
        """Apply an e-stop that has not reached the servos yet; on failure, try again at the
        next cycle."""
        if not self._estop_pending or self._mode != Mode.ESTOP:
            return
        try:
            self._apply_estop_action()
        except (LinkError, DeviceTimeoutError, DeviceRejectedError) as err:
            self.last_error = f"e-stop not applied yet: {err}"

    def estop(self, reason: str = "") -> None:
        """Latch the e-stop here and in the latch file (so it outlives this process), then hold
        where the arm is (or switch torque off with ``estop=off``). The latch holds even if
        the servos cannot be reached (raises LinkError / DeviceTimeoutError then, and the
        action is applied when they answer again). A latch file that cannot be written is
        reported in ``latch_note`` and warned about."""
        why = reason or "e-stop requested"
        self._latch(Mode.ESTOP, FaultCode.ESTOP, why)
        self._estop_pending = True
        try:
            save_latch(self.latch_path, self.port_path, why)
        except CalibrationStoreError as err:
            self.latch_note = f"{err}: the e-stop is latched in this process only"
            warnings.warn(self.latch_note, RuntimeWarning, stacklevel=2)
        self._require_link()
        self._apply_estop_action()

    def clear_fault(self) -> None:
        """Clear a latched fault or e-stop (and the latch file): the arm comes back in HOLD
        where it is. Raises LinkError, DeviceTimeoutError, DeviceRejectedError,
        CalibrationStoreError (the latch file cannot be removed: still latched)."""
        self._require_link()
        if self._latched:
            self._torque_on_here()
        clear_latch(self.latch_path)
        if self._latched:
            self._mode, self._fault = Mode.HOLD, FaultCode.NONE
            self._estop_pending = False
            self.latch_note = ""

    def heartbeat(self) -> None:
        self._require_link()
        self._transact(0, "a ping", self._ph.ping)

    def read_calibration(self) -> Calibration:
        """The calibration this chain holds (see calibration_store); offset 0, sign +1, the
        servos' own limits and ``calibration_id`` "" if none applies."""
        self._require_link()
        return self._cal

    def write_calibration(self, calibration: Calibration) -> None:
        """Store and apply ``calibration``: only with torque off (else DeviceRejectedError
        REJECTED) and one finite value per servo in each vector, signs +-1 (else
        BAD_REQUEST). Raises CalibrationStoreError."""
        self._require_link()
        n = len(self.ids)
        if self._mode != Mode.TORQUE_OFF:
            raise DeviceRejectedError("device refused CalWrite: REJECTED calibration can only "
                                      "be written with torque off", int(AckStatus.REJECTED))
        vectors = {name: np.asarray(getattr(calibration, name), np.float64).ravel()
                   for name in ("homing_offset", "drive_sign", "position_min", "position_max")}
        wrong = [f"{name} has {v.size} values" for name, v in vectors.items() if v.size != n]
        wrong += [f"{name} is not finite" for name, v in vectors.items()
                  if v.size == n and not np.all(np.isfinite(v))]
        sign = vectors["drive_sign"]
        if sign.size == n and np.all(np.isfinite(sign)) and not np.all(np.abs(sign) == 1):
            wrong.append("drive_sign holds values other than +1 and -1")
        if wrong:
            raise DeviceRejectedError(f"device refused CalWrite: BAD_REQUEST calibration for "
                                      f"{n} joints: {'; '.join(wrong)}",
                                      int(AckStatus.BAD_REQUEST))
        cal = Calibration(
            vectors["homing_offset"].astype(np.float32),
            sign.astype(np.int8),
            vectors["position_min"].astype(np.float32),
            vectors["position_max"].astype(np.float32),
            calibration.calibration_id)
        save_calibration(self.calibration_path, self.port_path, self._servos, cal)
        self._cal = cal
        self.calibration_note = ""
        self.info = self._make_info()

    # -- health ---------------------------------------------------------------------------------
    def health(self) -> dict[str, object]:
        """Link statistics (counts since creation, RTT in ms) plus the servo bus's settings."""
        rtt = self.stats.rtt_ms()
        return {
            "url": self.url,
            "connected": self.connected,
            "backend": "dynamixel",
            "requests": self.stats.requests,
            "replies": self.stats.replies,
            "timeouts": self.stats.timeouts,
            "lost": self.stats.lost,
            "late": self.stats.late,
            "retries": self.stats.retries,
            "reconnects": self.stats.reconnects,
            "link_errors": self.stats.link_errors,
            "crc_failures": self.crc_failures,
            "malformed": 0,
            "faults_reported": self.stats.faults_reported,
            "rtt_p50_ms": rtt["p50"],
            "rtt_p99_ms": rtt["p99"],
            "rtt_max_ms": rtt["max"],
            "last_error": self.last_error,
            "baud": self.baud,
            "latency_timer": self.latency_note,
            "return_delay_us": list(self.return_delay_us),
            "goal_clamps": self.goal_clamps,
            "hardware_alerts": self.hardware_alerts,
            "status_errors": self.status_errors,
            "watchdog_ms": self.watchdog_ms,
            "watchdog_holds": self.watchdog_holds,
            "watchdog_note": self.watchdog_note,
            "estop_latch_file": str(self.latch_path),
            "latch_note": self.latch_note,
            "calibration_store": str(self.calibration_path),
            "calibration_note": self.calibration_note,
        }

    def close(self) -> None:
        """Close the port (idempotent). Leaves torque as it is: each servo holds its goal."""
        self._drop_link()

    def __enter__(self) -> DynamixelBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

