"""Calibration: the file format, the reduced-speed bound, the prompters, the guided flow and its
bad cases against the emulator (a separate process, the joints moved through its sim channel as
a technician would move them), check_before_torque, and the CLI run headless.

Budget: about 25 s on 2 cores (emulator processes start in ~0.7 s; each flow runs 1-4 s).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibration.answers import load_answers
from calibration.calibration_file import (
    CalibrationFile,
    JointCalibration,
    load_calibration,
    previous_path,
    save_calibration,
)
from calibration.errors import (
    AnswersError,
    CalibrationAborted,
    CalibrationError,
    CalibrationFileError,
    CalibrationMismatchError,
    CalibrationMissingError,
    DeviceLatchedError,
    MotorIdentityError,
    MotorMissingError,
    NoMovementError,
    OffsetOutOfRangeError,
    RangeTooSmallError,
    VerificationError,
    WrongRobotError,
)
from calibration.hardware import explain_handshake_failure, identify
from calibration.joints import CalibrationOptions, JointSpec
from calibration.motion import move_duration_s, tool_speed_bound
from calibration.procedure import run_calibration
from calibration.prompter import ScriptedPrompter, Style, Table
from calibration.terminal import TerminalPrompter
from calibration.verify import apply_calibration, check_before_torque, verification_move
from firmware_bridge.bus import MotorBus
from firmware_bridge.emulator.device import DeviceConfig, EmulatedMotorController
from firmware_bridge.emulator.plant import MotorPlant
from firmware_bridge.emulator.process import EmulatorProcess
from firmware_bridge.emulator.server import EmulatorServer
from firmware_bridge.emulator.sim_link import SimClient
from firmware_bridge.errors import DeviceTimeoutError, ProtocolError
from firmware_bridge.messages import Mode
from firmware_bridge.transport.zmq_link import ZmqDeviceTransport

ROBOT = "emulated-arm"
NAMES = ("shoulder_pan", "shoulder_lift", "elbow", "wrist_flex", "wrist_roll", "wrist_pitch",
         "gripper")
REACH = (0.6, 0.6, 0.35, 0.15, 0.15, 0.15, 0.0)
JOINTS = [JointSpec(n, "m" if n == "gripper" else "rad", r, 0.08 if n == "gripper" else 1.5,
                    gripper=n == "gripper") for n, r in zip(NAMES, REACH, strict=True)]
# raw readings of the marked reference pose (arm joints); the gripper's closed/open raw readings
REFERENCE_RAW = np.array([0.1, -0.2, 0.05, 0.0, 0.3, -0.1, 0.0])
CLOSED, OPEN = 0.035, 0.005  # mounted mirrored: closing increases the raw reading
SMALL_MOVES = CalibrationOptions(verify_amplitude={"rad": 0.05, "m": 0.005})


# -- helpers ------------------------------------------------------------------------------------
def make_calibration(offset: float = 0.1, robot_id: str = ROBOT) -> CalibrationFile:
    joints = [JointCalibration(n, "m" if n == "gripper" else "rad",
                               offset if n != "gripper" else 0.01, -1 if n == "wrist_roll" else 1,
                               -2.0 if n != "gripper" else 0.0, 2.0 if n != "gripper" else 0.03)
              for n in NAMES]
    return CalibrationFile.create(robot_id, joints, technician="test")


class Technician:
    """Moves the emulated joints by hand (raw coordinates) when a prompt comes up: the arm to
    the reference pose, each joint a little in its positive direction (the inverted ones'
    raw reading goes down), the gripper closed and open, each joint end stop to end stop."""

    def __init__(self, sim: SimClient, *, reference=REFERENCE_RAW, inverted=("wrist_roll",),
                 still: tuple[str, ...] = (), move_range: bool = True) -> None:
        self.sim, self.reference, self.inverted = sim, np.array(reference), set(inverted)
        self.still, self.move_range = set(still), move_range
        self.pose = np.array(reference, dtype=float)
        self.pose[6] = 0.02

    def move(self, pose) -> None:
        self.pose = np.array(pose, dtype=float)
        self.sim.move_by_hand(list(self.pose))

    def __call__(self, key: str):
        pose = self.pose.copy()
        if key == "reference_pose":
            pose[:6] = self.reference[:6]
            self.move(pose)
        elif key.startswith("direction."):
            name = key.split(".", 1)[1]
            if name not in self.still:
                i = NAMES.index(name)
                pose[i] += -0.2 if name in self.inverted else 0.2
                self.move(pose)
        elif key in ("gripper.closed", "gripper.open"):
            pose[6] = CLOSED if key.endswith("closed") else OPEN
            self.move(pose)
        elif key == "range" and self.move_range:
            return self._through_ranges()
        elif key == "verify.pose":
            pose[:6] = self.reference[:6]
            pose[6] = CLOSED
            self.move(pose)
        return None

    def _through_ranges(self):
        for i in range(6):
            for value in (-2.0, 2.1, self.reference[i]):
                pose = self.pose.copy()
                pose[i] = value
                self.move(pose)
                yield


@pytest.fixture(scope="module")
def arm(tmp_path_factory):
    """One emulator process (motor plant) with its sim channel, shared by the flow tests: each
    test poses the arm itself and the flow copes with whatever calibration the device holds."""
    d = tmp_path_factory.mktemp("arm")
    sim_url = f"zmq+ipc://{d}/sim.sock"
    with EmulatorProcess(f"pty://{d}/ttyEMU", ("--sim-url", sim_url)) as proc:
        sim = SimClient(sim_url)
        try:
            yield proc, sim, d
        finally:
            sim.close()


@contextlib.contextmanager
def connected(url: str):
    with MotorBus(url) as bus:
        bus.connect()
        yield bus


@contextlib.contextmanager
def threaded_emulator(url: str, config: DeviceConfig, plant=None):
    """The emulator's firmware and servo loop on a thread, over ZeroMQ: for devices the
    emulator's command line cannot describe (duplicate ids, a jammed joint)."""
    server = EmulatorServer(EmulatedMotorController(config, plant), ZmqDeviceTransport(url))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop()
        thread.join(timeout=2.0)


# -- the file -----------------------------------------------------------------------------------
def test_when_calibration_saved_and_loaded_expect_same_values_and_hash(tmp_path):
    cal = make_calibration(0.1234567891)
    path = save_calibration(cal, tmp_path / "cal" / f"{ROBOT}.json")
    loaded = load_calibration(path, ROBOT)
    assert loaded.sha256 == cal.sha256 and len(cal.sha256) == 64
    assert loaded.joints[0].homing_offset == 0.123457  # rounded to 1e-6, as stored
    assert loaded.to_message().calibration_id == cal.sha256
    text = path.read_text()
    assert text.count("\n") == 20 and '"name": "gripper"' in text  # one joint per line
    assert [p.name for p in path.parent.iterdir()] == [f"{ROBOT}.json"]  # no temp files left


def test_when_file_replaced_expect_previous_kept_but_not_for_a_verification_mark(tmp_path):
    path = tmp_path / f"{ROBOT}.json"
    first, second = make_calibration(0.1), make_calibration(0.2)
    save_calibration(first, path)
    save_calibration(second, path)
    assert load_calibration(previous_path(path)).sha256 == first.sha256
    save_calibration(second.with_verification(by="ana"), path)
    assert load_calibration(previous_path(path)).sha256 == first.sha256
    assert load_calibration(path).verified["by"] == "ana"
    assert load_calibration(path).sha256 == second.sha256  # metadata is outside the hash


def _edit(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda t: t[: len(t) // 2], "not valid JSON (truncated?)"),
    (lambda t: _edit(t, '"drive_sign": 1', '"drive_sign": 0'), "joints[0].drive_sign: expected"),
    (lambda t: _edit(t, '"version": 1', '"version": 9'), "version: 9 was written by a newer"),
    (lambda t: _edit(t, '"format": "ramp-edge-calibration"', '"format": "x"'), "format:"),
    (lambda t: _edit(t, '"homing_offset": 0.1', '"homing_offset": 0.2'), "sha256 does not match"),
    (lambda t: _edit(t, '"homing_offset": 0.1', '"homing_offset": 4.0'),
     "joints[0].homing_offset: 4 rad is outside the representable"),
    (lambda t: _edit(t, '"position_min": -2.0', '"position_min": 3.0'),
     "joints[0].position_min: 3 is not below"),
    (lambda t: _edit(t, '"unit": "rad"', '"unit": "deg"'), "joints[0].unit"),
    (lambda t: _edit(t, '"technician"', '"tecnician"'), "tecnician: unknown key"),
])
def test_when_file_is_bad_expect_one_line_naming_the_key(tmp_path, mutate, message):
    path = tmp_path / "cal.json"
    path.write_text(mutate(make_calibration(0.1).to_json()))
    with pytest.raises(CalibrationFileError) as err:
        load_calibration(path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)


def test_when_file_missing_or_for_another_robot_expect_the_matching_errors(tmp_path):
    with pytest.raises(CalibrationMissingError, match="calibrate the robot first") as err:
        load_calibration(tmp_path / "none.json", ROBOT)
    assert isinstance(err.value, FileNotFoundError)
    path = save_calibration(make_calibration(robot_id="other-arm"), tmp_path / "x.json")
    with pytest.raises(WrongRobotError, match="is for robot 'other-arm', not 'emulated-arm'"):
        load_calibration(path, ROBOT)


# -- reduced speed ------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(-0.5, 0.5), st.floats(0.0, 1.0), st.floats(0.05, 3.0)),
                min_size=1, max_size=8))
def test_when_move_planned_expect_tool_speed_bound_and_joint_limits_kept(joints):
    delta, reach, vmax = (np.array(x) for x in zip(*joints, strict=True))
    duration = move_duration_s(delta, reach, vmax, 0.25)
    # peak joint speeds of the cosine profile: pi/2 * |d| / T
    peak = math.pi / 2 * np.abs(delta) / duration
    assert tool_speed_bound(peak, reach) <= 0.25 * (1 + 1e-9)
    assert np.all(peak <= vmax * (1 + 1e-9))


# -- prompters ----------------------------------------------------------------------------------
class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_when_no_color_or_not_a_terminal_expect_plain_text():
    assert Style.for_stream(_Tty(), {"TERM": "xterm"}).bad("x") == "\x1b[31;1mx\x1b[0m"
    assert Style.for_stream(_Tty(), {"TERM": "xterm", "NO_COLOR": "1"}).bad("x") == "x"
    assert Style.for_stream(io.StringIO(), {"TERM": "xterm"}).bad("x") == "x"


def test_when_scripted_question_unanswered_expect_error_naming_the_key():
    p = ScriptedPrompter({"identity": "no"}, source="answers.toml", out=io.StringIO())
    assert p.confirm("identity", "Is this the robot?", default=True) is False
    with pytest.raises(AnswersError, match=r"answers\.toml has no answer to 'write'"):
        p.confirm("write", "Write it?", default=True)
    assert ScriptedPrompter(yes=True, out=io.StringIO()).confirm("write", "?", default=True)
    with pytest.raises(CalibrationAborted):
        ScriptedPrompter({"torque_off": "quit"}, out=io.StringIO()).wait("torque_off", "go")


def test_when_terminal_answers_come_expect_retries_defaults_and_quit():
    out = io.StringIO()
    p = TerminalPrompter(io.StringIO("maybe\nY\n\n"), out, Style(False))
    assert p.confirm("write", "Write?", default=False) is True
    assert "please answer y or n" in out.getvalue()
    assert p.confirm("write", "Write?", default=False) is False  # Enter: the default
    with pytest.raises(CalibrationAborted, match="stopped by the technician at 'range'"):
        TerminalPrompter(io.StringIO("q\n"), io.StringIO()).live(
            "range", "move", lambda: Table(("joint",), (("elbow",),)))
    with pytest.raises(CalibrationAborted, match="input ended"):
        TerminalPrompter(io.StringIO(""), io.StringIO()).wait("torque_off", "go")


@pytest.mark.parametrize(("text", "message"), [
    ("[prompts]\nwrite = 3\n", "prompts.write: expected a string"),
    ("[ranges]\nelbow = [1.0, -1.0]\n", "ranges.elbow: min 1 is not below max -1"),
    ("[drive_sign]\nelbow = 2\n", "drive_sign.elbow: expected 1 or -1"),
    ("[range]\nseconds = 3\n", "range.seconds: unknown key"),
    ("colour = 1\n", "unknown key 'colour'"),
    ("[prompts\n", "not valid TOML"),
])
def test_when_answers_file_is_bad_expect_error_naming_the_key(tmp_path, text, message):
    path = tmp_path / "answers.toml"
    path.write_text(text)
    with pytest.raises(AnswersError, match=message.replace("[", r"\[")):
        load_answers(path)


# -- the guided flow against the emulator -------------------------------------------------------
def test_when_technician_calibrates_expect_device_file_and_verified_move(arm, tmp_path):
    proc, sim, _ = arm
    tech = Technician(sim)
    prompter = ScriptedPrompter({}, yes=True, hand=tech, out=io.StringIO())
    path = tmp_path / f"{ROBOT}.json"
    with connected(proc.host_url) as bus:
        outcome = run_calibration(bus, ROBOT, JOINTS, prompter, path, SMALL_MOVES)
        cal = load_calibration(path, ROBOT)
        assert check_before_torque(path, ROBOT, bus).sha256 == cal.sha256
        state = bus.read_state()
    by_name = {j.name: j for j in cal.joints}
    for i, name in enumerate(NAMES[:6]):  # offset = raw reading at the reference pose (ref 0)
        assert by_name[name].homing_offset == pytest.approx(REFERENCE_RAW[i], abs=1e-5)
    assert by_name["wrist_roll"].drive_sign == -1 and by_name["elbow"].drive_sign == 1
    # recorded end stops raw -2.0 / +2.1 in user coordinates
    assert by_name["elbow"].position_min == pytest.approx(-2.0 - 0.05, abs=1e-4)
    assert by_name["elbow"].position_max == pytest.approx(2.1 - 0.05, abs=1e-4)
    assert (by_name["wrist_roll"].position_min, by_name["wrist_roll"].position_max) == \
        pytest.approx((0.3 - 2.1, 0.3 + 2.0), abs=1e-4)  # inverted: the raw range flips
    grip = by_name["gripper"]  # mirrored: closed is 0, open is the stroke
    assert (grip.drive_sign, grip.homing_offset) == (-1, pytest.approx(CLOSED))
    assert (grip.position_min, grip.position_max) == (0.0, pytest.approx(CLOSED - OPEN))
    report = outcome.verification
    assert report is not None and cal.verified is not None
    assert len(report.moves) == 7 and all(m.measured == pytest.approx(m.commanded, rel=0.15)
                                          for m in report.moves)
    assert report.planned_peak_tool_speed_m_s <= 0.25 + 1e-9
    assert report.measured_peak_tool_speed_m_s <= 0.25 * 1.05  # measured from reported speeds
    assert state.mode == Mode.HOLD  # verified: torque on, holding
    assert np.allclose(state.position, 0.0, atol=0.01)  # back in the reference pose
    assert prompter.asked[:3] == ["identity", "torque_off", "reference_pose"]
    assert prompter.asked[-3:] == ["verify.pose", "verify.start", "verify.result"]


def test_when_range_too_small_expect_error_and_nothing_written(arm, tmp_path):
    proc, sim, _ = arm
    path = tmp_path / "cal.json"
    with connected(proc.host_url) as bus:
        before = bus.read_calibration().calibration_id
        prompter = ScriptedPrompter({}, yes=True, hand=Technician(sim, move_range=False),
                                    out=io.StringIO())
        with pytest.raises(RangeTooSmallError, match=r"range of motion too small for "
                                                     r"shoulder_pan \(0.200 rad recorded"):
            run_calibration(bus, ROBOT, JOINTS, prompter, path, SMALL_MOVES)
        assert bus.read_calibration().calibration_id == before
    assert not path.exists()


def test_when_offset_beyond_half_a_turn_expect_refused(arm, tmp_path):
    proc, sim, _ = arm
    reference = REFERENCE_RAW.copy()
    reference[2] = 3.3  # elbow a turn-half off: raw 3.3 rad at the marks
    prompter = ScriptedPrompter({}, yes=True, hand=Technician(sim, reference=reference),
                                out=io.StringIO())
    with connected(proc.host_url) as bus, pytest.raises(
            OffsetOutOfRangeError, match=r"homing offset of elbow would be \+3.300 rad, beyond "
                                         r"what the motor controller can store \(\+-3.142 rad\)"):
        run_calibration(bus, ROBOT, JOINTS, prompter, tmp_path / "cal.json", SMALL_MOVES)


def test_when_joint_does_not_move_by_hand_expect_error_after_retries(arm, tmp_path):
    proc, sim, _ = arm
    tech = Technician(sim, still=("elbow",))
    prompter = ScriptedPrompter({}, yes=True, hand=tech, out=io.StringIO())
    with connected(proc.host_url) as bus, pytest.raises(
            NoMovementError, match="no clear movement of elbow seen after 3 tries"):
        run_calibration(bus, ROBOT, JOINTS, prompter, tmp_path / "cal.json", SMALL_MOVES)
    assert prompter.asked.count("direction.elbow") == 3


def test_when_verification_not_confirmed_expect_written_but_unverified(arm, tmp_path):
    proc, sim, _ = arm
    prompter = ScriptedPrompter({"verify.result": "no"}, yes=True, hand=Technician(sim),
                                out=io.StringIO())
    path = tmp_path / "cal.json"
    with connected(proc.host_url) as bus:
        with pytest.raises(VerificationError, match="not confirmed"):
            run_calibration(bus, ROBOT, JOINTS, prompter, path, SMALL_MOVES)
        cal = load_calibration(path, ROBOT)
        assert cal.verified is None
        assert bus.read_calibration().calibration_id == cal.sha256


def test_when_device_latched_expect_refused_unless_asked_to_clear(arm, tmp_path):
    proc, _sim, _ = arm
    with connected(proc.host_url) as bus:
        bus.estop("test")
        with pytest.raises(DeviceLatchedError, match=r"latched in ESTOP .*--clear-latched"):
            run_calibration(bus, ROBOT, JOINTS, ScriptedPrompter(yes=True, out=io.StringIO()),
                            tmp_path / "cal.json")
        prompter = ScriptedPrompter({"torque_off": "quit"}, yes=True, out=io.StringIO())
        with pytest.raises(CalibrationAborted):  # cleared, then stopped at the next step
            run_calibration(bus, ROBOT, JOINTS, prompter, tmp_path / "cal.json",
                            CalibrationOptions(clear_latched=True))
        assert bus.read_state().mode == Mode.HOLD


def test_when_motor_missing_expect_error_naming_it(emulator_factory, tmp_path):
    proc = emulator_factory("pty", "--joints", "6")
    prompter = ScriptedPrompter({}, yes=True, out=io.StringIO())
    with connected(proc.host_url) as bus, pytest.raises(
            MotorMissingError, match=r"motor\(s\) missing: .* reports 6 joint\(s\).* expects 7; "
                                     r"missing: wrist_pitch"):
        run_calibration(bus, ROBOT, JOINTS, prompter, tmp_path / "cal.json")


def test_when_two_motors_answer_to_one_id_expect_error_naming_it(tmp_path):
    url = f"zmq+ipc://{tmp_path}/dup.sock"
    names = ("shoulder_pan", "elbow", "elbow", "gripper")
    config = DeviceConfig.default(4, joint_names=names)
    with threaded_emulator(url, config), MotorBus(url) as bus:
        with pytest.raises((ProtocolError, DeviceTimeoutError)) as err:
            bus.connect()  # the bus drops an INFO with duplicate names as a bad message
        bus.close()
        clear = explain_handshake_failure(url, err.value)
    assert isinstance(clear, MotorIdentityError)
    assert "duplicate motor ids" in str(clear) and "'elbow' at positions [1, 2]" in str(clear)


class _JammedPlant(MotorPlant):
    """A motor plant whose joint ``jammed`` never moves (a seized gearbox, a dead driver)."""

    def __init__(self, *args, jammed: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.jammed = jammed

    def step(self, command, torque_on, dt_s) -> None:
        held = self.position[self.jammed]
        super().step(command, torque_on, dt_s)
        self.position[self.jammed] = held
        self.velocity[self.jammed] = 0.0


def test_when_joint_jammed_under_torque_expect_it_named(tmp_path):
    url = f"zmq+ipc://{tmp_path}/jam.sock"
    config = DeviceConfig.default(7)
    plant = _JammedPlant(np.array(config.initial_position), np.array(config.velocity_max),
                         jammed=2)
    cal = make_calibration(0.0)
    with threaded_emulator(url, config, plant), connected(url) as bus:
        bus.set_mode(Mode.TORQUE_OFF)
        bus.write_calibration(cal.to_message())
        with pytest.raises(NoMovementError, match=r"elbow did not move when commanded: asked "
                                                  r"\+0.050 rad, it moved \+0.000 rad"):
            verification_move(bus, cal, JOINTS, amplitude={"rad": 0.05, "m": 0.005},
                              tool_speed_m_s=0.25)
        assert bus.read_state().mode == Mode.HOLD  # the arm is held after the error


def test_check_before_torque_refuses_every_bad_case(emulator_factory, tmp_path):
    proc = emulator_factory("pty")
    path = save_calibration(make_calibration(0.1), tmp_path / f"{ROBOT}.json")
    with connected(proc.host_url) as bus:
        with pytest.raises(CalibrationMissingError):
            check_before_torque(tmp_path / "missing.json", ROBOT, bus)
        with pytest.raises(WrongRobotError):
            check_before_torque(path, "other-arm", bus)
        with pytest.raises(CalibrationMismatchError, match="holds no calibration") as err:
            check_before_torque(path, ROBOT, bus)  # a fresh device
        assert "calibrate apply" in str(err.value) and isinstance(err.value, RuntimeError)
        apply_calibration(bus, path, ROBOT, NAMES)
        assert check_before_torque(path, ROBOT, bus).sha256 == load_calibration(path).sha256
        save_calibration(make_calibration(0.2), path)  # the file changed, not the device
        with pytest.raises(CalibrationMismatchError, match=r"shoulder_pan.homing_offset: file "
                                                           r"\+0.200000, device \+0.100000"):
            check_before_torque(path, ROBOT, bus)
        path.write_text("{}")
        with pytest.raises(CalibrationFileError, match="format: missing"):
            check_before_torque(path, ROBOT, bus)
        assert all(issubclass(e, CalibrationError) for e in (
            CalibrationMissingError, WrongRobotError, CalibrationMismatchError))
        ident = identify(bus, NAMES)
    assert ident.device_id == "emu-0"


# -- the command, headless ----------------------------------------------------------------------
def calibrate_cmd(*args: str) -> list[str]:
    """``ramp-edge calibrate ARGS`` through the installed console script, as a technician."""
    return [str(Path(sys.executable).parent / "ramp-edge"), "calibrate", *args]


def robot_config(path: Path, bus_url: str) -> Path:
    from importlib import resources

    text = resources.files("ramp_edge.robots").joinpath("emulated.toml").read_text()
    path.write_text(text.replace('url = "emulator+pty://"', f'url = "{bus_url}"'))
    return path


def test_when_calibrate_commands_run_headless_expect_files_device_and_exit_codes(arm, tmp_path):
    proc, sim, _ = arm
    with connected(proc.host_url) as bus:
        bus.set_mode(Mode.TORQUE_OFF)
    sim.move_by_hand([0.0] * 6 + [0.0])  # arm in the reference pose, gripper closed (raw 0)
    robot = robot_config(tmp_path / "robot.toml", proc.host_url)
    answers = tmp_path / "answers.toml"
    known = "\n".join(f"{n} = [-2.5, 2.5]" for n in NAMES[:6])
    answers.write_text(f'technician = "ci"\n[prompts]\nidentity = "yes"\nwrite = "yes"\n'
                       f'[ranges]\n{known}\ngripper = [0.0, 0.03]\n'
                       f'[drive_sign]\nwrist_roll = -1\n' + "".join(
                           f"{n} = 1\n" for n in NAMES if n != "wrist_roll") +
                       '[verification]\nmove = false\n')
    home = tmp_path / "home"
    env = dict(os.environ, NO_COLOR="1", RAMP_EDGE_HOME=str(home))

    def cal(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(calibrate_cmd(*args, "--robot", str(robot)), capture_output=True,
                              text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)

    out = cal("run", "--answers", str(answers), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["verified"] is False and result["joints"][4]["drive_sign"] == -1
    path = home / "calibration" / f"{ROBOT}.json"
    assert load_calibration(path).sha256 == result["sha256"]

    shown = cal("show", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["sha256"] == result["sha256"]
    same = cal("diff", "--json")
    assert same.returncode == 0 and json.loads(same.stdout)["same"] is True

    verified = cal("verify", "--yes", "--json", "--verify-amplitude-rad", "0.03",
                   "--verify-amplitude-m", "0.003")
    assert verified.returncode == 0, verified.stderr
    report = json.loads(verified.stdout)
    assert report["device_matches"] and report["verified"]
    assert report["verification"]["measured_peak_tool_speed_m_s"] <= 0.25 * 1.05
    assert load_calibration(path).verified is not None

    other = save_calibration(make_calibration(0.05), tmp_path / "other.json")
    assert cal("apply", "--yes", "--file", str(other)).returncode == 0
    differs = cal("diff")
    assert differs.returncode == 1 and "shoulder_pan.homing_offset" in differs.stderr
    files = cal("diff", str(path), str(other), "--json")
    assert files.returncode == 1 and not json.loads(files.stdout)["same"]
    stale = cal("verify", "--no-move")
    assert stale.returncode == 1 and "calibrate apply" in stale.stderr

    bad = tmp_path / "bad.toml"
    bad.write_text('[prompts]\nwrte = "yes"\n')
    typo = cal("run", "--answers", str(bad))
    assert typo.returncode == 1
    assert "prompts.wrte: no such prompt" in typo.stderr and "Traceback" not in typo.stderr
