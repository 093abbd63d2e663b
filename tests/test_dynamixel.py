"""DYNAMIXEL Protocol 2.0: the packet codec against the e-manual's vectors, the emulator's
servos, and the dynamixel:// bus against the emulator as a separate process on a real pty."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import sys
import threading
import time
import tty
from pathlib import Path

import numpy as np
import pytest

from firmware_bridge.dynamixel import control_table as ct
from firmware_bridge.dynamixel.emulator import ServoChain, parse_ids
from firmware_bridge.dynamixel.errors import DynamixelSdkMissingError, ServoMissingError
from firmware_bridge.dynamixel.packet import (
    Instruction,
    Packet,
    PacketDecoder,
    StatusError,
    crc16,
    encode,
    instruction,
    status,
    stuff,
    unstuff,
)
from firmware_bridge.emulator.process import EmulatorProcess
from firmware_bridge.errors import DeviceRejectedError, DeviceTimeoutError, EdgeError, LinkError
from firmware_bridge.messages import Calibration, FaultCode, Mode

sdk = pytest.importorskip("dynamixel_sdk", reason="the dynamixel extra is not installed")

from firmware_bridge.dynamixel.bus import DynamixelBus, latency_timer_check  # noqa: E402

# Packets printed in the ROBOTIS e-manual (Protocol 2.0 examples), as sent on the wire.
EMANUAL_VECTORS = [
    ("FF FF FD 00 01 03 00 01 19 4E", Packet(1, Instruction.PING)),
    ("FF FF FD 00 01 07 00 55 00 06 04 26 65 5D", Packet(1, 0x55, bytes.fromhex("00 06 04 26"))),
    ("FF FF FD 00 01 07 00 02 84 00 04 00 1D 15",
     Packet(1, Instruction.READ, bytes.fromhex("84 00 04 00"))),
    ("FF FF FD 00 01 08 00 55 00 A6 00 00 00 8C C0",
     Packet(1, 0x55, bytes.fromhex("00 A6 00 00 00"))),
    ("FF FF FD 00 01 09 00 03 74 00 00 02 00 00 CA 89",
     Packet(1, Instruction.WRITE, bytes.fromhex("74 00 00 02 00 00"))),
    ("FF FF FD 00 01 04 00 55 00 A1 0C", Packet(1, 0x55, b"\x00")),
    ("FF FF FD 00 FE 11 00 83 74 00 04 00 01 96 00 00 00 02 AA 00 00 00 82 87",
     Packet(0xFE, Instruction.SYNC_WRITE,
            bytes.fromhex("74 00 04 00 01 96 00 00 00 02 AA 00 00 00"))),
]
IDS = "1-7"
# Generous: other test runs share these two cores.
CYCLE_MS = 30.0
REQUEST_MS = 100.0


# -- codec ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("wire", "packet"), EMANUAL_VECTORS)
def test_when_emanual_packets_are_encoded_and_decoded_expect_the_same_bytes(wire, packet):
    raw = bytes.fromhex(wire)
    assert encode(packet) == raw
    assert PacketDecoder().feed(raw) == [packet]


def test_when_the_emanual_ping_is_built_expect_its_printed_bytes():
    assert instruction(1, Instruction.PING) == bytes.fromhex("FF FF FD 00 01 03 00 01 19 4E")


def test_when_crc_is_computed_expect_the_sdk_table_result_on_random_data():
    """The SDK carries the e-manual's CRC table verbatim; 300 random buffers."""
    ph = sdk.PacketHandler(2.0)
    rng = np.random.default_rng(1)
    for _ in range(300):
        data = rng.integers(0, 256, int(rng.integers(1, 80))).tolist()
        assert crc16(bytes(data)) == ph.updateCRC(0, data, len(data))


def test_when_params_contain_a_header_expect_stuffing_counted_in_length_and_undone():
    params = bytes.fromhex("74 00 FF FF FD 01")
    raw = instruction(1, Instruction.WRITE, params)
    body = raw[7:-2]
    assert body == bytes.fromhex("03 74 00 FF FF FD FD 01")
    assert raw[5] | raw[6] << 8 == len(body) + 2
    assert PacketDecoder().feed(raw) == [Packet(1, Instruction.WRITE, params)]
    for text in ("FF FF FD", "FF FF FD FF FF FD", "00 FF FF FD FD", "FF FF FF FD"):
        data = bytes.fromhex(text)
        assert b"\xff\xff\xfd" not in stuff(data).replace(b"\xff\xff\xfd\xfd", b"")
        assert unstuff(stuff(data)) == data


def test_when_the_stream_has_garbage_halves_and_bad_crc_expect_only_good_packets():
    good = [status(i, 0, bytes([i, 0xFF, 0xFF, 0xFD])) for i in range(1, 5)]
    bad = bytearray(good[1])
    bad[-3] ^= 0x10
    stream = b"\x00\xff\x12" + good[0] + bytes(bad) + good[2] + b"\xff\xff" + good[3]
    decoder = PacketDecoder()
    got = []
    for k in range(0, len(stream), 5):  # 5-byte chunks: every packet arrives in halves
        got += decoder.feed(stream[k: k + 5])
    assert [p.id for p in got] == [1, 3, 4]
    assert got[0].data == bytes([1, 0xFF, 0xFF, 0xFD])
    assert decoder.crc_failures == 1


# -- emulated servos (sans-IO) ---------------------------------------------------------------------
def _one(chain: ServoChain, raw: bytes) -> Packet:
    [(_, reply)] = chain.handle(PacketDecoder().feed(raw)[0])
    return PacketDecoder().feed(reply)[0]


def test_when_eeprom_is_written_with_torque_on_expect_access_error_and_no_change():
    chain = ServoChain([1, 2])
    write = Packet(1, Instruction.WRITE, bytes((ct.RETURN_DELAY_TIME, 0, 0)))
    assert _one(chain, encode(write)).error == StatusError.NONE
    assert chain.tables[0][ct.RETURN_DELAY_TIME] == 0
    assert _one(chain, instruction(1, Instruction.WRITE, bytes((ct.TORQUE_ENABLE, 0, 1)))).error \
        == 0
    refused = _one(chain, instruction(1, Instruction.WRITE, bytes((ct.RETURN_DELAY_TIME, 0, 9))))
    assert refused.error == StatusError.ACCESS
    assert chain.tables[0][ct.RETURN_DELAY_TIME] == 0
    read_only = _one(chain, instruction(2, Instruction.WRITE, bytes((ct.PRESENT_POSITION, 0, 1))))
    assert read_only.error == StatusError.ACCESS


def test_when_sync_read_lists_a_missing_id_expect_the_servos_after_it_silent():
    chain = ServoChain([1, 2, 3])
    params = bytes((ct.PRESENT_POSITION, 0, 4, 0, 1, 9, 2))
    replies = chain.handle(Packet(0xFE, Instruction.SYNC_READ, params))
    assert [PacketDecoder().feed(r)[0].id for _, r in replies] == [1]


def test_when_ids_text_is_parsed_expect_lists_and_ranges():
    assert parse_ids("1-3,7") == (1, 2, 3, 7)
    with pytest.raises(ValueError):
        parse_ids("1,1")


# -- the bus against the emulator process ---------------------------------------------------
def _emulator(tmp_path, *args: str, link: str | None = None) -> EmulatorProcess:
    where = f"pty://{link}" if link else "pty://"
    return EmulatorProcess(where, ("--protocol", "dynamixel", "--ids", IDS, "--model", "xl330",
                                   *args))


def _bus(url: str, tmp_path, *, watchdog_ms: float = 1000, extra: str = "", **kw) -> DynamixelBus:
    """Generous watchdog: a test stalled by other runs on these cores must not trip it."""
    kw.setdefault("cycle_timeout_ms", CYCLE_MS)
    kw.setdefault("request_timeout_ms", REQUEST_MS)
    return DynamixelBus(f"{url}&baud=4000000&calibration={tmp_path}/cal.json"
                        f"&watchdog_ms={watchdog_ms}{extra}", **kw)


def _state(bus: DynamixelBus, tries: int = 20):
    for _ in range(tries):
        state = bus.read_state()
        if state is not None:
            return state
    raise AssertionError(f"no state: {bus.last_error}")


def _state_within(bus: DynamixelBus, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = bus.read_state()
        if state is not None:
            return state
        time.sleep(0.01)
    raise AssertionError(f"no state within {seconds} s: {bus.last_error}")


def _track(bus: DynamixelBus, target: np.ndarray, seconds: float = 0.6):
    end = time.monotonic() + seconds
    state = None
    while time.monotonic() < end:
        state = bus.exchange(target, 10_000) or state
        time.sleep(0.005)
    assert state is not None
    return state


def test_when_bus_cycles_against_emulated_servos_expect_sync_write_moves_and_sync_read_tracks(
    tmp_path,
):
    with _emulator(tmp_path) as emu, _bus(emu.host_url, tmp_path) as bus:
        info = bus.connect()
        assert info.joint_names[-1] == "gripper" and len(info.joint_names) == 7
        assert "XL330" in info.firmware_version
        assert bus.return_delay_us == [0] * 7  # factory 500 us, set to 0 at connect
        start = _state(bus)
        assert start.mode == Mode.TORQUE_OFF
        target = start.position + np.linspace(-0.4, 0.4, 7)
        idle = _track(bus, target, 0.2)  # not in POSITION: goals are not sent
        assert np.allclose(idle.position, start.position, atol=1e-3)
        bus.set_mode(Mode.POSITION)
        state = _track(bus, target)
        assert state.mode == Mode.POSITION
        assert np.allclose(state.position, target, atol=2 * ct.RAD_PER_TICK)
        bus.set_mode(Mode.TORQUE_OFF)
        health = bus.health()
        assert health["replies"] > 20 and health["crc_failures"] == 0
        assert health["latency_timer"].startswith("not applicable")


def test_when_replies_are_corrupted_expect_retries_recover_and_count_bad_crcs(tmp_path):
    with _emulator(tmp_path, "--corrupt-replies", "0.03", "--fault-seed", "4") as emu, \
            _bus(emu.host_url, tmp_path, retries=8, read_retries=2) as bus:
        bus.connect()  # pings and EEPROM reads go through the request retries
        bus.set_mode(Mode.POSITION)
        home = _state(bus).position.astype(np.float64)
        good = 0
        for _ in range(150):
            state = bus.exchange(home, 10_000)
            if state is not None:
                good += 1
                assert np.allclose(state.position, home, atol=0.05)  # never a corrupt value
        health = bus.health()
    assert health["crc_failures"] > 0 and health["retries"] > 0
    assert good >= 140  # 7 replies per read, each corrupt with p=0.03: retries cover most


def test_when_the_emulator_restarts_expect_reconnect_and_a_fault_for_servos_that_went_limp(
    tmp_path,
):
    link = str(tmp_path / "ttyDXL")
    first = _emulator(tmp_path, link=link)
    try:
        bus = _bus(first.host_url, tmp_path, reconnect_interval_s=0.05)
        bus.connect()
        bus.set_mode(Mode.POSITION)
        assert _state(bus).mode == Mode.POSITION
    finally:
        first.stop()
    with bus:
        assert bus.read_state() is None  # the port is gone
        with _emulator(tmp_path, link=link):
            deadline = time.monotonic() + 10
            state = None
            while state is None and time.monotonic() < deadline:
                state = bus.read_state()
                time.sleep(0.02)
            assert state is not None, bus.last_error
            assert bus.health()["reconnects"] >= 1
            assert bus.health()["link_errors"] >= 1
            # restarted servos come up with torque off: the arm is no longer held
            assert state.mode == Mode.FAULT and state.fault == FaultCode.INTERNAL
            assert "lost torque" in bus.faults[-1].detail


def test_when_calibration_is_written_expect_it_applied_stored_and_dropped_if_servos_change(
    tmp_path,
):
    offset = np.array([0.3, -0.2, 0.1, 0.0, 0.5, -0.5, 0.25], np.float32)
    sign = np.array([1, -1, 1, -1, 1, 1, -1], np.int8)
    lo, hi = np.full(7, -1.5, np.float32), np.full(7, 1.5, np.float32)
    with _emulator(tmp_path) as emu:
        with _bus(emu.host_url, tmp_path) as bus:
            bus.connect()
            assert bus.read_calibration().calibration_id == ""
            raw = _state(bus).position.astype(np.float64)  # uncalibrated = raw rad
            bus.set_mode(Mode.HOLD)
            with pytest.raises(DeviceRejectedError, match="torque off"):
                bus.write_calibration(Calibration(offset, sign, lo, hi, "abc"))
            bus.set_mode(Mode.TORQUE_OFF)
            bus.write_calibration(Calibration(offset, sign, lo, hi, "abc"))
            user = _state(bus).position.astype(np.float64)
            assert np.allclose(user, sign * (raw - offset), atol=2 * ct.RAD_PER_TICK)
            # setpoints go through the same formulas: Goal_Position holds the raw ticks
            bus.set_mode(Mode.POSITION)
            target = user + 0.2
            _track(bus, target, 0.3)
            want = np.rint((sign * target + offset) / ct.RAD_PER_TICK) + ct.CENTER_TICK
            port, ph = bus._port, bus._ph
            goals = [ph.read4ByteTxRx(port, i, ct.GOAL_POSITION)[0] for i in range(1, 8)]
            assert goals == want.astype(int).tolist()
            bus.set_mode(Mode.TORQUE_OFF)
            # another tool changes a servo's Homing_Offset (torque is off: EEPROM writable)
            result, error = ph.write4ByteTxRx(port, 3, ct.HOMING_OFFSET, 100)
            assert result == sdk.COMM_SUCCESS and error == 0
        stored = json.loads((tmp_path / "cal.json").read_text())
        assert stored["calibration"]["calibration_id"] == "abc"
        with _bus(emu.host_url, tmp_path) as again:
            again.connect()
            cal = again.read_calibration()
            assert cal.calibration_id == ""
            assert "servos changed" in again.health()["calibration_note"]


def test_when_calibration_is_stored_expect_a_new_bus_to_read_it_back_exactly(tmp_path):
    offset = np.array([0.123457, -1.0, 0, 0, 0, 0, 0.5], np.float32)
    cal = Calibration(offset, np.ones(7, np.int8), np.full(7, -2.0, np.float32),
                      np.full(7, 2.0, np.float32), "f" * 64)
    with _emulator(tmp_path) as emu:
        with _bus(emu.host_url, tmp_path) as bus:
            bus.connect()
            bus.write_calibration(cal)
        with _bus(emu.host_url, tmp_path) as bus:
            bus.connect()
            got = bus.read_calibration()
    assert got.calibration_id == "f" * 64
    assert np.array_equal(got.homing_offset, offset)


def test_when_a_servo_is_missing_expect_an_error_naming_it(tmp_path):
    with EmulatorProcess("pty://", ("--protocol", "dynamixel", "--ids", "1-6")) as emu:
        url = emu.host_url.replace("ids=1,2,3,4,5,6", "ids=1-7")
        with _bus(url, tmp_path, retries=1) as bus, pytest.raises(ServoMissingError) as err:
            bus.connect()
    message = str(err.value)
    assert "servo 7 (gripper)" in message and "servo 6" not in message.split("answered")[0]
    assert "power, cable, id and baud rate" in message


def test_when_estop_is_latched_expect_hold_rejected_modes_and_ignored_setpoints(tmp_path):
    with _emulator(tmp_path) as emu, _bus(emu.host_url, tmp_path) as bus:
        bus.connect()
        bus.set_mode(Mode.POSITION)
        home = _state(bus).position.astype(np.float64)
        bus.estop("test")
        state = _track(bus, home + 0.5, 0.3)
        assert state.mode == Mode.ESTOP and state.fault == FaultCode.ESTOP
        assert np.allclose(state.position, home, atol=0.01)
        with pytest.raises(DeviceRejectedError, match="CLEAR_FAULT"):
            bus.set_mode(Mode.POSITION)
        bus.clear_fault()
        assert _state(bus).mode == Mode.HOLD
        assert not Path(bus.health()["estop_latch_file"]).exists()


def test_when_the_process_restarts_after_an_estop_expect_it_still_latched_until_cleared(
    tmp_path,
):
    with _emulator(tmp_path) as emu:
        with _bus(emu.host_url, tmp_path) as bus:
            bus.connect()
            bus.set_mode(Mode.POSITION)
            bus.estop("operator pressed the pedal")
        # a new process on the same chain (estop=off: its e-stop switches torque off)
        with _bus(emu.host_url, tmp_path, extra="&estop=off") as bus:
            bus.connect()
            state = _state(bus)
            assert state.mode == Mode.ESTOP and state.fault == FaultCode.ESTOP
            latch = Path(bus.health()["estop_latch_file"])
            assert latch == tmp_path / "cal.estop.json" and latch.exists()  # beside cal.json
            assert "operator pressed the pedal" in bus.faults[-1].detail
            torque = [bus._ph.read1ByteTxRx(bus._port, i, ct.TORQUE_ENABLE)[0]
                      for i in range(1, 8)]
            assert torque == [0] * 7
            with pytest.raises(DeviceRejectedError, match="CLEAR_FAULT"):
                bus.set_mode(Mode.POSITION)
            bus.clear_fault()
            assert _state(bus).mode == Mode.HOLD and not latch.exists()
        with _bus(emu.host_url, tmp_path) as bus:
            bus.connect()
            assert _state(bus).mode == Mode.HOLD  # cleared for good
        latch.write_text("{ torn")  # a latch file that cannot be read still latches
        with _bus(emu.host_url, tmp_path) as bus:
            bus.connect()
            assert _state(bus).mode == Mode.ESTOP


def test_when_robot_config_names_an_emulated_dynamixel_bus_expect_it_opens(tmp_path):
    from importlib import resources

    from ramp_edge.config import parse_config
    from ramp_edge.robot_link import open_robot_bus

    text = resources.files("ramp_edge.robots").joinpath("emulated.toml").read_text()
    lines = [f'url = "emulator+dynamixel+pty://?ids=1-7&model=xl330&baud=3000000'
             f'&calibration={tmp_path}/c.json"' if line.strip().startswith("url =")
             and "emulator+" in line else line for line in text.splitlines()]
    config = parse_config("\n".join(lines), "test")
    with open_robot_bus(config) as (bus, emulator):
        assert isinstance(bus, DynamixelBus) and emulator is not None
        assert bus.info.joint_names == config.joint_names and bus.baud == 3_000_000
        assert bus.read_state() is not None or bus.read_state() is not None


def test_when_the_usb_latency_timer_is_16_ms_expect_the_fix_in_the_note(tmp_path, monkeypatch):
    import firmware_bridge.dynamixel.bus as dxl_bus

    (tmp_path / "ttyUSB7").mkdir()
    (tmp_path / "ttyUSB7" / "latency_timer").write_text("16\n")
    monkeypatch.setattr(dxl_bus, "LATENCY_SYSFS", str(tmp_path / "{tty}" / "latency_timer"))
    value, note = latency_timer_check("/dev/ttyUSB7")
    assert value == 16 and "should be 1" in note and "echo 1 | sudo tee" in note
    (tmp_path / "ttyUSB7" / "latency_timer").write_text("1\n")
    assert latency_timer_check("/dev/ttyUSB7")[0] == 1


def test_when_the_sdk_is_missing_expect_one_error_naming_the_extra(tmp_path, monkeypatch):
    import firmware_bridge.dynamixel.bus as dxl_bus

    monkeypatch.setitem(sys.modules, "dynamixel_sdk", None)
    monkeypatch.setattr(dxl_bus, "_sdk_cache", {})
    with pytest.raises(DynamixelSdkMissingError, match=r"ramp-edge\[dynamixel\]") as err:
        DynamixelBus(f"dynamixel://{tmp_path}/nope?ids=1").connect()
    assert isinstance(err.value, EdgeError | ImportError)


def test_when_the_emulator_unplugs_expect_cycles_to_resume(tmp_path):
    link = str(tmp_path / "ttyDXL")
    with _emulator(tmp_path, "--unplug-ms", "300", link=link) as emu, \
            _bus(emu.host_url, tmp_path, reconnect_interval_s=0.05) as bus:
        bus.connect()
        bus.set_mode(Mode.POSITION)
        emu.signal(signal.SIGUSR2)
        time.sleep(0.1)
        assert bus.read_state() is None or bus.read_state() is None
        deadline = time.monotonic() + 10
        while bus.read_state() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        state = bus.read_state() or bus.read_state()
        assert state is not None and bus.health()["reconnects"] >= 1
        # the host's watchdog held the arm when the link went: no goal moves it until POSITION
        # is requested again (the controller sees HOLD and faults, as with firmware)
        assert state.mode == Mode.HOLD and bus.health()["watchdog_holds"] == 1
        held = _track(bus, state.position + 0.2, 0.2)
        assert held.mode == Mode.HOLD
        assert np.allclose(held.position, state.position, atol=0.01)
        bus.set_mode(Mode.POSITION)
        moved = _track(bus, state.position + 0.2, 0.4)
        assert np.allclose(moved.position, state.position + 0.2, atol=2 * ct.RAD_PER_TICK)


def test_when_no_cycle_succeeds_within_the_watchdog_time_expect_hold_until_position_again(
    tmp_path,
):
    with _emulator(tmp_path) as emu, _bus(emu.host_url, tmp_path, watchdog_ms=300) as bus:
        bus.connect()
        bus.set_mode(Mode.POSITION)
        home = _state(bus).position.astype(np.float64)
        time.sleep(0.6)  # the host goes quiet for longer than the watchdog time
        state = _track(bus, home + 0.5, 0.2)
        assert state.mode == Mode.HOLD
        assert np.allclose(state.position, home, atol=0.01)
        assert bus.health()["watchdog_holds"] == 1 and bus.health()["watchdog_ms"] == 300
        port, ph = bus._port, bus._ph
        goals = [ph.read4ByteTxRx(port, i, ct.GOAL_POSITION)[0] for i in range(1, 8)]
        assert np.allclose(ct.ticks_to_rad(np.array(goals)), home, atol=0.01)
        bus.set_mode(Mode.POSITION)
        state = _track(bus, home + 0.2, 0.4)
        assert state.mode == Mode.POSITION
        assert np.allclose(state.position, home + 0.2, atol=2 * ct.RAD_PER_TICK)


def test_when_estop_off_is_latched_while_the_link_is_down_expect_torque_off_after_reconnect(
    tmp_path,
):
    link = str(tmp_path / "ttyDXL")
    with _emulator(tmp_path, "--unplug-ms", "300", link=link) as emu, \
            _bus(emu.host_url, tmp_path, extra="&estop=off", reconnect_interval_s=0.05) as bus:
        bus.connect()
        bus.set_mode(Mode.HOLD)
        emu.signal(signal.SIGUSR2)
        time.sleep(0.1)
        bus.read_state()  # finds the port gone
        with pytest.raises((LinkError, DeviceTimeoutError)):
            bus.estop("pedal")
        deadline = time.monotonic() + 10
        state = None
        while state is None and time.monotonic() < deadline:
            state = bus.read_state()
            time.sleep(0.02)
        assert state is not None, bus.last_error
        assert state.mode == Mode.ESTOP
        torque = [bus._ph.read1ByteTxRx(bus._port, i, ct.TORQUE_ENABLE)[0] for i in range(1, 8)]
        assert torque == [0] * 7


# -- the bus against servos that misbehave on purpose (a ServoChain on a pty in a thread) -----
class PtyServos:
    """:class:`ServoChain` answering on a real pseudo-terminal, reached through a symbolic
    link that :meth:`replug` points at a fresh pty (as an unplugged adapter comes back).
    ``answer(packet)`` may answer in the chain's place (None: the chain answers);
    ``silent`` drops every status packet."""

    def __init__(self, link: Path, ids=(1, 2, 3)) -> None:
        self.chain = ServoChain(list(ids))
        self.link = link
        self.answer = None
        self.silent = False
        self._fds: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None
        self.replug()

    def url(self) -> str:
        ids = ",".join(str(i) for i in self.chain.ids)
        return f"dynamixel://{self.link}?ids={ids}"

    def replug(self) -> None:
        self.unplug()
        master, slave = pty.openpty()
        tty.setraw(slave)
        tmp = self.link.with_name(self.link.name + ".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(slave))
        os.replace(tmp, self.link)
        self._fds = (master, slave)
        self._thread = threading.Thread(target=self._serve, args=(master,), daemon=True)
        self._thread.start()

    def unplug(self) -> None:
        if self._fds is not None:
            fds, self._fds = self._fds, None
            for fd in fds:
                os.close(fd)
            self._thread.join(timeout=5)

    def _serve(self, master: int) -> None:
        decoder = PacketDecoder()
        while self._fds is not None and self._fds[0] == master:
            try:
                ready, _, _ = select.select([master], [], [], 0.02)
                data = os.read(master, 4096) if ready else b""
            except (OSError, ValueError):
                return
            for packet in decoder.feed(data):
                answer = self.answer
                replies = answer(packet) if answer is not None else None
                if replies is None:
                    replies = [raw for _, raw in self.chain.handle(packet)]
                if replies and not self.silent:
                    try:
                        os.write(master, b"".join(replies))
                    except OSError:
                        return

    def goals(self) -> list[int]:
        return [ct.read_int(t, ct.GOAL_POSITION, 4, signed=True) for t in self.chain.tables]

    def torque(self) -> list[int]:
        return [t[ct.TORQUE_ENABLE] for t in self.chain.tables]


@pytest.fixture
def servos(tmp_path):
    chain = PtyServos(tmp_path / "ttyPTY")
    yield chain
    chain.unplug()


def _pty_bus(servos: PtyServos, tmp_path, **kw) -> DynamixelBus:
    kw.setdefault("cycle_timeout_ms", CYCLE_MS)
    kw.setdefault("request_timeout_ms", REQUEST_MS)
    return DynamixelBus(f"{servos.url()}&calibration={tmp_path}/cal.json&watchdog_ms=1000",
                        joint_names=("a", "b", "c"), **kw)


def _servo_2_answers(servos: PtyServos, replacement: bytes, times: int | None = None):
    """An answer: servo 2's sync-read reply becomes ``replacement`` (``times`` times)."""
    left = [times]

    def answer(packet):
        if packet.instruction != Instruction.SYNC_READ or left[0] == 0:
            return None
        if left[0] is not None:
            left[0] -= 1
        replies = [raw for _, raw in servos.chain.handle(packet)]
        return [replacement if PacketDecoder().feed(r)[0].id == 2 else r for r in replies]

    return answer


@pytest.mark.parametrize(("reply", "says"), [
    (status(2, StatusError.ACCESS), "error ACCESS"),  # an error code and no data
    (status(2, 0, bytes(6)), "6 data bytes"),  # short: the SDK's slice would take the CRC
    (status(2, StatusError.DATA_RANGE, bytes(8)), "error DATA_RANGE"),  # error, full length
], ids=["error-no-data", "short-data", "error-full-data"])
def test_when_a_sync_read_reply_is_an_error_or_short_expect_a_failed_read_never_a_position(
    servos, tmp_path, reply, says,
):
    with _pty_bus(servos, tmp_path, retries=1) as bus:
        bus.connect()
        start = _state(bus)
        assert np.allclose(start.position, 0.0, atol=1e-3)
        goals = servos.goals()
        servos.answer = _servo_2_answers(servos, reply)
        assert bus.read_state() is None
        assert says in bus.last_error and "servo 2 (b)" in bus.last_error
        assert bus.health()["status_errors"] >= 2  # the read and its retry
        with pytest.raises(DeviceTimeoutError, match=says):
            bus.set_mode(Mode.HOLD)  # needs the present position: it has none
        assert servos.torque() == [0, 0, 0] and servos.goals() == goals
        servos.answer = _servo_2_answers(servos, reply, times=1)  # one bad reply: the retry reads
        state = bus.read_state()
        assert state is not None and np.allclose(state.position, start.position)


def test_when_a_goal_is_beyond_what_goal_position_holds_expect_a_fault_and_nothing_sent(
    servos, tmp_path,
):
    for t in servos.chain.tables:
        t[ct.OPERATING_MODE] = 4  # extended position: no limits clip the goal
    with _pty_bus(servos, tmp_path) as bus:
        bus.connect()
        bus.set_mode(Mode.POSITION)
        goals = servos.goals()
        state = bus.exchange(np.array([0.1, 1e12, 0.1]), 10_000)
        assert state is not None
        assert state.mode == Mode.FAULT and state.fault == FaultCode.BAD_SETPOINT
        assert servos.goals() == goals  # not wrapped through 32 bits into some other goal
        assert "beyond" in bus.faults[-1].detail


@pytest.mark.parametrize(("change", "says"), [
    ({"homing_offset": [0.0, float("nan"), 0.0]}, "homing_offset is not finite"),
    ({"position_max": [1.0, float("inf"), 1.0]}, "position_max is not finite"),
    ({"drive_sign": [1, 2, -1]}, "+1 and -1"),
    ({"position_min": [-1.0, -1.0]}, "position_min has 2 values"),
], ids=["nan-offset", "inf-limit", "sign-2", "short-vector"])
def test_when_a_calibration_is_malformed_expect_bad_request_and_nothing_stored(
    servos, tmp_path, change, says,
):
    good = {"homing_offset": [0.0] * 3, "drive_sign": [1, -1, 1],
            "position_min": [-1.0] * 3, "position_max": [1.0] * 3}
    fields = {k: np.array(v) for k, v in {**good, **change}.items()}
    with _pty_bus(servos, tmp_path) as bus:
        bus.connect()
        with pytest.raises(DeviceRejectedError, match="BAD_REQUEST") as err:
            bus.write_calibration(Calibration(**fields, calibration_id="x"))
        assert says in str(err.value)
        bus.write_calibration(Calibration(**{k: np.array(v) for k, v in good.items()}))
    assert json.loads((tmp_path / "cal.json").read_text())["calibration"]["drive_sign"] == [
        1, -1, 1]


def test_when_a_servo_refuses_set_up_after_a_reconnect_expect_none_then_recovery(
    servos, tmp_path,
):
    def refuse_writes(packet):
        if packet.instruction == Instruction.WRITE and packet.id == 2:
            return [status(2, StatusError.ACCESS)]
        return None

    with _pty_bus(servos, tmp_path, reconnect_interval_s=0.02) as bus:
        bus.connect()
        servos.chain.tables[1][ct.RETURN_DELAY_TIME] = 250  # set up again at reconnect
        servos.answer = refuse_writes
        servos.replug()
        for _ in range(20):  # a DeviceRejectedError must not escape the cycle
            assert bus.read_state() is None
            time.sleep(0.01)
        assert "refused writing Return_Delay_Time" in bus.last_error
        servos.answer = None
        assert _state_within(bus, 5.0) is not None
        assert bus.health()["reconnects"] == 1


def test_when_the_port_reopens_but_servos_are_silent_expect_each_cycle_short(servos, tmp_path):
    # set-up with these timeouts would wait 3 servos x 3 tries x 300 ms per attempt
    with _pty_bus(servos, tmp_path, request_timeout_ms=300, retries=2,
                  reconnect_interval_s=0.02) as bus:
        bus.connect()
        servos.silent = True
        servos.replug()
        longest = 0.0
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            t0 = time.monotonic()
            assert bus.read_state() is None
            longest = max(longest, time.monotonic() - t0)
            time.sleep(0.01)
        assert longest < 0.6, f"a cycle blocked {longest:.2f} s on silent servos"
        assert "did not answer a ping" in bus.last_error
        servos.silent = False
        assert _state_within(bus, 5.0) is not None
