"""The same bus tests against every transport: in-process, pseudo-terminal, ZeroMQ ipc and tcp
(emulator as a separate process), and a real port when one is given."""

from __future__ import annotations

import time

import numpy as np
import pytest

from firmware_bridge.bus import MotorBus
from firmware_bridge.errors import DeviceRejectedError
from firmware_bridge.messages import Calibration, FaultCode, Mode


def _state(bus: MotorBus, tries: int = 20):
    """A state read; a cyclic read is not retried by the bus (one missed reply is normal on a
    loaded machine), so the tests retry it."""
    for _ in range(tries):
        state = bus.read_state()
        if state is not None:
            return state
    raise AssertionError(f"no state from {bus.url} in {tries} reads")


def _track(bus: MotorBus, target: np.ndarray, seconds: float, period_s: float = 0.005):
    state = None
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        state = bus.exchange(target, reach_in_us=int(period_s * 1e6)) or state
        time.sleep(period_s)
    return state


def test_when_connected_expect_info_and_state(host_url):
    with MotorBus(host_url) as bus:
        info = bus.connect()
        assert len(info.joint_names) >= 2
        assert info.watchdog_ms > 0
        state = _state(bus)
        assert state is not None
        assert state.position.shape == (len(info.joint_names),)
        assert np.all(np.isfinite(state.position))


def test_when_setpoints_stream_expect_joints_to_follow(host_url):
    with MotorBus(host_url) as bus:
        bus.connect()
        start = _state(bus).position.astype(np.float64)
        target = start.copy()
        target[0] += 0.2
        bus.set_mode(Mode.POSITION)
        state = _track(bus, target, 0.6)
        bus.set_mode(Mode.HOLD)
        assert state is not None and state.mode == Mode.POSITION
        assert abs(state.position[0] - target[0]) < 0.02
        assert np.allclose(state.position[1:], start[1:], atol=0.02)


def test_when_estop_latched_expect_setpoints_ignored_until_cleared(host_url):
    with MotorBus(host_url) as bus:
        bus.connect()
        bus.set_mode(Mode.POSITION)
        bus.estop("test")
        held = _state(bus)
        assert held.mode == Mode.ESTOP and held.fault == FaultCode.ESTOP
        target = held.position.astype(np.float64) + 0.3
        state = _track(bus, target, 0.2)
        assert np.allclose(state.position, held.position, atol=1e-3)
        with pytest.raises(DeviceRejectedError):
            bus.set_mode(Mode.POSITION)
        bus.clear_fault()
        assert _state(bus).mode == Mode.HOLD


def test_when_calibration_written_with_torque_off_expect_it_read_back(host_url):
    with MotorBus(host_url) as bus:
        info = bus.connect()
        n = len(info.joint_names)
        bus.set_mode(Mode.TORQUE_OFF)
        before = _state(bus).position.astype(np.float64)
        cal = Calibration(
            homing_offset=np.full(n, 0.1, np.float32),
            drive_sign=np.array([-1] + [1] * (n - 1), np.int8),
            position_min=np.asarray(info.position_min),
            position_max=np.asarray(info.position_max),
            calibration_id="sha256:test",
        )
        bus.write_calibration(cal)
        back = bus.read_calibration()
        assert back.calibration_id == "sha256:test"
        np.testing.assert_allclose(back.homing_offset, cal.homing_offset)
        np.testing.assert_array_equal(back.drive_sign, cal.drive_sign)
        after = _state(bus).position.astype(np.float64)
        # user = sign * (raw - offset): joint 0 is mirrored, the others shift by the offset.
        # 5 mrad: a limp MuJoCo arm sags a little under gravity between the two readings.
        assert after[0] == pytest.approx(-(before[0] - 0.1), abs=5e-3)
        assert after[1] == pytest.approx(before[1] - 0.1, abs=5e-3)


def test_when_torque_on_expect_calibration_write_refused(host_url):
    with MotorBus(host_url) as bus:
        info = bus.connect()
        n = len(info.joint_names)
        bus.set_mode(Mode.HOLD)
        cal = Calibration(np.zeros(n, np.float32), np.ones(n, np.int8),
                          np.asarray(info.position_min), np.asarray(info.position_max))
        with pytest.raises(DeviceRejectedError, match="torque off"):
            bus.write_calibration(cal)


def test_when_setpoint_is_nan_expect_fault_and_no_motion(host_url):
    with MotorBus(host_url) as bus:
        bus.connect()
        before = _state(bus).position.astype(np.float64)
        bus.set_mode(Mode.POSITION)
        bad = before.copy()
        bad[0] = np.nan
        state = bus.exchange(bad, 10_000)
        state = _track(bus, before + 0.2, 0.2)
        assert state.mode == Mode.FAULT and state.fault == FaultCode.BAD_SETPOINT
        assert np.allclose(state.position, before, atol=1e-3)
        bus.clear_fault()
