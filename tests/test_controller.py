"""The controller loop in-process against the emulator (sim://): what every step records,
and what happens when the engine misbehaves (the robot never moves on bad data)."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge.bus import MotorBus
from ramp_edge.config import load_config
from ramp_edge.controller import Controller, StepRecord
from ramp_edge.safety import JointLimits


class Prediction:
    def __init__(self, actions: np.ndarray, value: float | None = -0.5) -> None:
        self.actions, self.value = actions, value


class HoldStillEngine:
    """Chunks that ask for a small, steady offset from the pose it was given."""

    backend = "test-steady"

    def __init__(self, offset: float = 0.05) -> None:
        self.offset = offset

    def predict(self, obs, mode="standard"):
        target = np.asarray(obs, dtype=np.float64) + self.offset
        return Prediction(np.tile(target, (50, 1)))


class NaNEngine:
    backend = "test-nan"

    def predict(self, obs, mode="standard"):
        actions = np.zeros((50, 7))
        actions[10, 3] = np.nan
        return Prediction(actions)


class CrashingEngine:
    backend = "test-crash"

    def predict(self, obs, mode="standard"):
        raise RuntimeError("the accelerator went away")


def _controller(engine, **kw) -> tuple[Controller, MotorBus, list[StepRecord]]:
    config = load_config()
    bus = MotorBus("sim://")
    bus.connect()
    steps: list[StepRecord] = []
    controller = Controller(config, bus, engine, lambda state, images: state.position,
                            on_step=steps.append, **kw)
    return controller, bus, steps


def test_when_the_policy_drives_expect_every_step_recorded_within_limits():
    controller, bus, steps = _controller(HoldStillEngine())
    with bus:
        summary = controller.run_episode(2.0)
    limits = JointLimits.from_config(controller.config)
    assert summary["final_state"] == "IDLE" and summary["chunks"] >= 2
    assert len(steps) == summary["steps"]
    for step in steps:
        assert step.t_sent_s >= step.t_s
        assert np.all(step.command >= limits.lower - 1e-9)
        assert np.all(step.command <= limits.upper + 1e-9)
    sources = [s.source for s in steps]
    assert sources[0] == "hold" and "ramp" in sources and sources[-1] == "stop"
    assert any(s.value == -0.5 for s in steps)
    deadlines = np.diff([s.t_s for s in steps])
    assert np.allclose(deadlines, 0.01, atol=1e-6) or summary["overruns"] > 0


def test_when_the_engine_returns_nan_expect_chunks_rejected_and_the_arm_still():
    controller, bus, steps = _controller(NaNEngine(), first_chunk_timeout_s=1.0)
    with bus:
        start = bus.read_state().position.astype(np.float64)
        summary = controller.run_episode(3.0)
        end = bus.read_state().position.astype(np.float64)
    assert summary["chunks"] == 0 and summary["chunks_rejected"] > 0
    assert {s.source for s in steps} <= {"hold", "stop"}
    np.testing.assert_allclose(end, start, atol=1e-4)
    assert "no chunk within 1 s" in summary["transitions"][-1][2]


@pytest.mark.parametrize("engine", [CrashingEngine()])
def test_when_the_engine_fails_expect_a_stop_with_the_reason(engine):
    controller, bus, _ = _controller(engine, first_chunk_timeout_s=1.0)
    with bus:
        summary = controller.run_episode(5.0)
    assert summary["final_state"] == "IDLE"
    assert "the accelerator went away" in summary["transitions"][-1][2]


def _calibration_file(tmp_path, robot_id="emulated-arm", offset=0.0):
    from calibration.calibration_file import (
        CalibrationFile,
        JointCalibration,
        calibration_path,
        save_calibration,
    )

    config = load_config()
    joints = [JointCalibration(j.name, j.unit, offset, 1, j.position_min, j.position_max)
              for j in config.joints]
    path = calibration_path(tmp_path, robot_id)
    save_calibration(CalibrationFile.create(robot_id, joints), path)
    return path


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda tmp: tmp / "calibration" / "missing.json", "CalibrationMissingError"),
        (lambda tmp: _calibration_file(tmp, robot_id="another-arm"), "WrongRobotError"),
        (lambda tmp: _calibration_file(tmp), "CalibrationMismatchError"),  # device holds none
    ],
)
def test_when_the_calibration_is_unusable_expect_torque_to_stay_off(tmp_path, make, error):
    from calibration.verify import check_before_torque
    from firmware_bridge.messages import Mode

    path = make(tmp_path)
    controller, bus, _ = _controller(HoldStillEngine(), before_torque=lambda: check_before_torque(
        path, "emulated-arm", bus))
    with bus:
        with pytest.raises(Exception) as info:
            controller.arm()
        assert type(info.value).__name__ == error
        assert bus.read_state().mode == Mode.TORQUE_OFF
        assert controller.states.state.name == "IDLE"


def test_when_the_device_holds_the_files_calibration_expect_arming_and_its_hash(tmp_path):
    from calibration.calibration_file import load_calibration
    from calibration.verify import check_before_torque

    path = _calibration_file(tmp_path, offset=0.01)
    controller, bus, _ = _controller(HoldStillEngine(), before_torque=lambda: check_before_torque(
        path, "emulated-arm", bus))
    with bus:
        bus.write_calibration(load_calibration(path).to_message())
        summary = controller.run_episode(0.5)
    assert summary["calibration"] == load_calibration(path).sha256


@pytest.mark.parametrize(("exit_torque", "mode"), [("hold", "HOLD"), ("off", "TORQUE_OFF")])
def test_when_an_episode_ends_expect_the_configured_torque_policy(exit_torque, mode):
    import dataclasses

    controller, bus, _ = _controller(HoldStillEngine())
    controller.config = dataclasses.replace(controller.config, safety=dataclasses.replace(
        controller.config.safety, exit_torque=exit_torque))
    with bus:
        controller.run_episode(0.5)
        assert bus.read_state().mode.name == mode
