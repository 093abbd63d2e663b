"""Faults on the link and at the device: corruption, silence, unplug, restart, wrong firmware."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from firmware_bridge.bus import MotorBus
from firmware_bridge.codec import Frame
from firmware_bridge.errors import IncompatibleFirmwareError, LinkError
from firmware_bridge.messages import FaultCode, Mode, State
from firmware_bridge.transport import open_transport
from firmware_bridge.transport.pty_device import PtyDeviceTransport

FRAMES = 100_000


def test_when_100k_frames_cross_a_flipping_dropping_pty_expect_no_corrupt_frame_accepted():
    """Every frame that arrives must be byte-for-byte one that was sent (matched by seq)."""
    rng = np.random.default_rng(7)
    sent: dict[int, Frame] = {}
    accepted = 0
    with PtyDeviceTransport() as device, open_transport(
        f"faulty+serial://{device.slave_path}?flip=1e-3&drop=1e-3&seed=11"
    ) as host:
        for seq in range(1, FRAMES + 1):
            body = [1, 0, rng.random(7, dtype=np.float32).tobytes(),
                    rng.random(7, dtype=np.float32).tobytes(), b""]
            frame = Frame(type=4, seq=seq, t_us=seq * 10_000, body=body)
            sent[seq] = frame
            host.send(frame)
            while (got := device.recv(0)) is not None:
                assert got == sent.pop(got.seq), f"corrupted frame accepted (seq {got.seq})"
                accepted += 1
        while (got := device.recv(0.05)) is not None:
            assert got == sent.pop(got.seq)
            accepted += 1
        injected = host.injected
        rejected = device.crc_failures + device.malformed
    lost = FRAMES - accepted
    assert injected["flipped_bytes"] > 1000 and injected["dropped"] > 20
    # every frame that was not accepted was dropped or rejected by CRC/framing; a flipped
    # delimiter merges two frames into one rejection, so a rejection may cost two frames
    assert lost >= injected["dropped"] and rejected > 0
    assert lost <= injected["dropped"] + 2 * rejected


def test_when_bus_cycles_over_a_faulty_pty_expect_it_keeps_cycling_and_counts_losses(
    emulator_factory,
):
    proc = emulator_factory("pty")
    url = f"faulty+{proc.host_url}?flip=1e-3&drop=1e-3&seed=5"
    cycles = 50_000  # 10^5 frames: a setpoint and a state each
    with MotorBus(url, cycle_timeout_ms=1.0, request_timeout_ms=20, retries=10) as bus:
        bus.connect()
        home = bus.read_state() or bus.read_state()
        bus.set_mode(Mode.POSITION)
        good = 0
        for i in range(cycles):
            target = home.position + 0.05 * np.sin(i / 200.0)
            state = bus.exchange(target, reach_in_us=1000)
            if state is not None:
                assert isinstance(state, State) and np.all(np.isfinite(state.position))
                good += 1
        health = bus.health()
    assert health["requests"] >= cycles
    assert good + health["timeouts"] >= cycles
    assert health["crc_failures"] > 0 and health["timeouts"] > 0
    assert good > 0.7 * cycles


def test_when_host_goes_silent_expect_hold_within_watchdog_then_fault(emulator_factory):
    proc = emulator_factory("pty", "--watchdog-ms", "50", "--fault-after-ms", "200")
    with MotorBus(proc.host_url) as bus:
        bus.connect()
        start = bus.read_state().position.astype(np.float64)
        bus.set_mode(Mode.POSITION)
        for i in range(100):  # move joint 0 steadily so a hold is visible as velocity -> 0
            target = start.copy()
            target[0] += 0.01 * i
            bus.exchange(target, reach_in_us=10_000)
            time.sleep(0.005)
        last_setpoint = time.monotonic()
        held_at = None
        while time.monotonic() - last_setpoint < 0.2:
            state = bus.read_state()  # state requests are not setpoints: the watchdog runs
            if state is not None and state.mode == Mode.HOLD:
                held_at = time.monotonic()
                break
            time.sleep(0.002)
        assert held_at is not None, "the device never held"
        hold_ms = (held_at - last_setpoint) * 1000
        assert hold_ms <= 50 + 25, f"held after {hold_ms:.1f} ms, watchdog is 50 ms"
        time.sleep(0.4)  # now truly silent: past watchdog + fault_after
        state = bus.read_state()
        assert state.mode == Mode.FAULT and state.fault == FaultCode.WATCHDOG
        assert any(f.code == FaultCode.WATCHDOG for f in bus.faults)
        pos = state.position.copy()
        time.sleep(0.1)
        assert np.allclose(bus.read_state().position, pos, atol=1e-4)


def _cycle_until(bus: MotorBus, predicate, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        state = bus.read_state()
        if predicate(state):
            return True
        time.sleep(0.005)
    return False


def test_when_port_unplugged_and_back_expect_bus_to_reconnect_without_raising(emulator_factory):
    proc = emulator_factory("pty")
    with MotorBus(proc.host_url, reconnect_interval_s=0.05) as bus:
        bus.connect()
        assert bus.read_state() is not None
        proc.unplug()
        assert _cycle_until(bus, lambda s: s is None, 2.0), "unplug never noticed"
        assert _cycle_until(bus, lambda s: s is not None, 5.0), "never came back"
        assert bus.stats.reconnects >= 1
        assert bus.stats.link_errors >= 1


def test_when_emulator_killed_and_restarted_expect_bus_to_resume(emulator_factory, tmp_path):
    url = f"pty://{tmp_path}/ttyRESTART"
    first = emulator_factory(url=url)
    with MotorBus(first.host_url, reconnect_interval_s=0.05) as bus:
        bus.connect()
        assert bus.read_state() is not None
        first.kill()
        assert _cycle_until(bus, lambda s: s is None, 2.0)
        emulator_factory(url=url)
        assert _cycle_until(bus, lambda s: s is not None, 5.0)
        assert bus.stats.reconnects >= 1


def test_when_a_different_device_answers_after_reconnect_expect_refusal(emulator_factory, tmp_path):
    url = f"pty://{tmp_path}/ttySWAP"
    first = emulator_factory(url=url)
    with MotorBus(first.host_url, reconnect_interval_s=0.05) as bus:
        bus.connect()
        first.kill()
        emulator_factory("pty", "--device-id", "someone-else", url=url)
        assert not _cycle_until(bus, lambda s: s is not None, 1.0)
        assert "different device" in (bus.last_error or "")


def test_when_firmware_speaks_another_version_expect_clear_error(emulator_factory):
    proc = emulator_factory("pty", "--protocol-version", "2")
    with MotorBus(proc.host_url) as bus, pytest.raises(
        IncompatibleFirmwareError, match="protocol version 2"
    ):
        bus.connect()


def test_when_device_replies_are_dropped_or_corrupted_expect_retries_then_success(
    emulator_factory,
):
    proc = emulator_factory("pty", "--drop-replies", "0.2", "--corrupt-replies", "0.2")
    with MotorBus(proc.host_url, retries=8) as bus:
        bus.connect()
        for _ in range(20):
            bus.set_mode(Mode.HOLD)
        health = bus.health()
    assert health["retries"] > 0
    assert health["crc_failures"] > 0


def test_when_port_does_not_exist_expect_link_error():
    with pytest.raises(LinkError, match="cannot open serial port"):
        MotorBus(f"serial:///dev/does-not-exist-{os.getpid()}").connect()


def test_when_device_stalls_expect_timeouts_then_cycling_resumes(emulator_factory):
    proc = emulator_factory("pty", "--stall-ms", "300")
    with MotorBus(proc.host_url, cycle_timeout_ms=5) as bus:
        bus.connect()
        assert bus.read_state() is not None
        proc.stall()
        assert _cycle_until(bus, lambda s: s is None, 1.0), "stall never noticed"
        assert _cycle_until(bus, lambda s: s is not None, 2.0), "never answered again"
        assert bus.stats.timeouts >= 1 and bus.stats.reconnects == 0
