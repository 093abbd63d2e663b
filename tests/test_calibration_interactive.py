"""The interactive calibration end to end in a real terminal (pexpect: a pseudo-terminal),
against an emulator process; the test plays the technician: it reads the prompts, moves the
emulated joints through the emulator's sim channel, watches the live table follow them, and
presses Enter or answers y.

Budget: about 10 s on 2 cores.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from calibration.calibration_file import load_calibration
from calibration.prompter import signed
from calibration.verify import check_before_torque
from firmware_bridge.bus import MotorBus
from firmware_bridge.emulator.process import EmulatorProcess
from firmware_bridge.emulator.sim_link import SimClient
from firmware_bridge.messages import Mode

pexpect = pytest.importorskip("pexpect")

ROBOT = "emulated-arm"
NAMES = ("shoulder_pan", "shoulder_lift", "elbow", "wrist_flex", "wrist_roll", "wrist_pitch")
REFERENCE_RAW = [0.1, -0.2, 0.05, 0.0, 0.0, 0.0]
INVERTED = "wrist_roll"
CLOSED, OPEN = 0.035, 0.005  # a gripper mounted mirrored


def calibrate_cmd(*args: str) -> list[str]:
    """``ramp-edge calibrate ARGS`` through the installed console script, as a technician."""
    return [str(Path(sys.executable).parent / "ramp-edge"), "calibrate", *args]


@pytest.fixture
def robot(tmp_path):
    """An emulator process on a stable pseudo-terminal link (as a real port would be), a robot
    config dialling it, and the sim channel to move its joints by hand."""
    from importlib import resources

    sim_url = f"zmq+ipc://{tmp_path}/sim.sock"
    with EmulatorProcess(f"pty://{tmp_path}/ttyEMU", ("--sim-url", sim_url)) as proc:
        text = resources.files("ramp_edge.robots").joinpath("emulated.toml").read_text()
        config = tmp_path / "robot.toml"
        config.write_text(text.replace('url = "emulator+pty://"', f'url = "{proc.host_url}"'))
        sim = SimClient(sim_url)
        try:
            yield proc, sim, config
        finally:
            sim.close()


def spawn(config: Path, home: Path, *extra: str):
    cmd = calibrate_cmd("run", "--robot", str(config), "--home", str(home), "--technician",
                        "pat", *extra)
    env = dict(os.environ, NO_COLOR="1", TERM="xterm", COLUMNS="120")
    child = pexpect.spawn(cmd[0], cmd[1:], env=env, encoding="utf-8", timeout=30,
                          dimensions=(40, 120))
    return child


def step(child, text: str) -> None:
    """Wait for a step's instruction and its Enter prompt."""
    child.expect(text)
    child.expect(r"\[q\] quit: ")


def test_when_technician_calibrates_at_a_terminal_expect_calibrated_and_verified(robot,
                                                                                 tmp_path):
    proc, sim, config = robot
    pose = np.array([*REFERENCE_RAW, 0.02])

    def move() -> None:
        sim.move_by_hand(list(pose))

    child = spawn(config, tmp_path / "home", "--verify-amplitude-rad", "0.05",
                  "--verify-amplitude-m", "0.005")
    try:
        child.expect(r"all 7 motors answer")
        child.expect(r"Is this the robot you are calibrating\? \[Y/n\]")
        child.sendline("y")
        step(child, "Torque goes OFF next")
        child.sendline("")
        step(child, r"marked reference pose \(line up the marks")
        move()
        child.sendline("")
        for i, name in enumerate(NAMES):
            step(child, f"Move {name} by hand a little")
            pose[i] += -0.2 if name == INVERTED else 0.2
            move()
            child.sendline("")
            child.expect(f"{name}: reading went {'down' if name == INVERTED else 'up'}")
        step(child, "Close gripper fully")
        pose[6] = CLOSED
        move()
        child.sendline("")
        step(child, "Open gripper fully")
        pose[6] = OPEN
        move()
        child.sendline("")
        child.expect(r"through its full range.*\[q\] quit")
        for i, name in enumerate(NAMES):  # end stop to end stop, watching the live table
            sign = -1 if name == INVERTED else 1
            for raw in (-2.0, 2.1, REFERENCE_RAW[i]):
                pose[i] = raw
                move()
                shown = re.escape(signed(sign * (raw - REFERENCE_RAW[i])))
                child.expect(rf"{name}\s+[-+]\d\.\d+\s+{shown}\s")
        child.expect(r"wrist_pitch\s+-2\.000\s+\+0\.000\s+\+2\.100\s+4\.100 rad\s+ok")
        child.sendline("")
        child.expect(r"gripper\s+\+0\.0350\s+-1\s+\+0\.0000\s+\+0\.0300\s+m\s+inverted")
        child.expect(r"Write this calibration .*\? \[Y/n\]")
        child.sendline("y")
        child.expect("written to the motor controller and read back")
        step(child, "Put the arm in its marked reference pose and close the gripper")
        pose[:6] = REFERENCE_RAW
        pose[6] = CLOSED
        move()
        child.sendline("")
        child.expect(r"Keep clear of the arm\. Start\? \[Y/n\]")
        child.sendline("")
        child.expect(r"measured peak (\d\.\d+) m/s \(limit 0\.250\)")
        assert float(child.match.group(1)) <= 0.25 * 1.05
        child.expect(r"come back\? \[y/n\]")
        child.sendline("y")
        child.expect("OK verified")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before
    path = tmp_path / "home" / "calibration" / f"{ROBOT}.json"
    cal = load_calibration(path, ROBOT)
    assert cal.verified is not None and cal.technician == "pat"
    signs = {j.name: j.drive_sign for j in cal.joints}
    assert signs[INVERTED] == -1 and signs["gripper"] == -1 and signs["elbow"] == 1
    with MotorBus(proc.host_url) as bus:
        bus.connect()
        check_before_torque(path, ROBOT, bus)  # the controller would accept it
        assert bus.read_state().mode == Mode.HOLD


@pytest.mark.parametrize(("how", "code", "said"), [
    ("q", 1, r"error: stopped by the technician at 'reference_pose'"),
    ("ctrl-c", 130, r"interrupted \(torque is off"),
], ids=["q", "ctrl-c"])
def test_when_technician_quits_expect_exit_code_torque_off_and_nothing_written(
        robot, tmp_path, how, code, said):
    proc, _sim, config = robot
    child = spawn(config, tmp_path / "home")
    try:
        child.expect(r"\[Y/n\]")
        child.sendline("")
        step(child, "Torque goes OFF next")
        child.sendline("")
        step(child, "marked reference pose")
        if how == "q":
            child.sendline("q")
        else:
            child.sendintr()
        child.expect(said)
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == code
    assert not (tmp_path / "home" / "calibration").exists()
    with MotorBus(proc.host_url) as bus:
        bus.connect()
        assert bus.read_state().mode == Mode.TORQUE_OFF
        assert bus.read_calibration().calibration_id == ""
