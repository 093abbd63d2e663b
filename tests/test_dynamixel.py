"""DYNAMIXEL Protocol 2.0: the packet codec against the e-manual's vectors, the emulator's
servos, and the dynamixel:// bus against the emulator as a separate process on a real pty."""

from __future__ import annotations

import json
import signal
import sys
import time

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
from firmware_bridge.errors import DeviceRejectedError, EdgeError
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


def _bus(url: str, tmp_path, **kw) -> DynamixelBus:
    kw.setdefault("cycle_timeout_ms", CYCLE_MS)
    kw.setdefault("request_timeout_ms", REQUEST_MS)
    return DynamixelBus(f"{url}&baud=4000000&calibration={tmp_path}/cal.json", **kw)


def _state(bus: DynamixelBus, tries: int = 20):
    for _ in range(tries):
        state = bus.read_state()
        if state is not None:
            return state
    raise AssertionError(f"no state: {bus.last_error}")


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
        assert state.mode == Mode.POSITION  # the servos stayed powered: still tracking
