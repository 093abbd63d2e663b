"""The emulator with the MuJoCo plant, as a separate process: the bridge works over it, its
cameras publish frames, and its sim-control channel resets and reports the task."""

from __future__ import annotations

import time

import numpy as np
import pytest

from firmware_bridge.bus import MotorBus
from firmware_bridge.emulator.process import EmulatorProcess
from firmware_bridge.emulator.sim_link import SimClient, SimLinkError
from firmware_bridge.errors import LinkError
from firmware_bridge.messages import Mode
from ramp_edge.cameras import open_camera

pytest.importorskip("mujoco", reason="the sim extra (MuJoCo) is not installed")


@pytest.fixture(scope="module")
def sim_emulator(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    urls = {"cam": f"zmq+ipc://{d}/cam.sock", "sim": f"zmq+ipc://{d}/sim.sock"}
    try:
        proc = EmulatorProcess(f"pty://{d}/tty", ("--plant", "mujoco", "--task", "pack_box",
                                                  "--camera-url", urls["cam"],
                                                  "--sim-url", urls["sim"]), 90.0)
    except LinkError as err:
        if "camera renderer failed" in str(err):
            pytest.skip(f"no offscreen OpenGL here: {err}")
        raise
    with proc:
        yield proc, urls


def test_when_setpoints_stream_to_the_mujoco_arm_expect_it_to_follow(sim_emulator):
    proc, _ = sim_emulator
    with MotorBus(proc.host_url, cycle_timeout_ms=20) as bus:
        info = bus.connect()
        assert info.joint_names[-1] == "gripper" and len(info.joint_names) == 7
        bus.set_mode(Mode.HOLD)
        start = bus.read_state().position.astype(np.float64)
        target = start.copy()
        target[0] += 0.3  # shoulder pan: swings the arm above the table
        bus.set_mode(Mode.POSITION)
        state = None
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            state = bus.exchange(target, reach_in_us=10_000) or state
            time.sleep(0.01)
        bus.set_mode(Mode.HOLD)
    assert state is not None
    assert abs(state.position[0] - target[0]) < 0.03


def test_when_cameras_publish_expect_fresh_96px_frames_at_about_30_hz(sim_emulator):
    _, urls = sim_emulator
    with open_camera("scene", urls["cam"] + "#scene") as scene, \
            open_camera("wrist", urls["cam"] + "#wrist") as wrist:
        time.sleep(0.3)
        first = scene.frames
        time.sleep(1.0)
        rate = scene.frames - first
        image, t = scene.latest()
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
        assert time.monotonic() - t < 0.5
        assert image.std() > 5  # a scene, not a blank frame
        assert wrist.latest() is not None
    assert 15 <= rate <= 40, f"{rate} scene frames in 1 s"


def test_when_reset_while_tracking_expect_refusal_then_reset_in_hold(sim_emulator):
    proc, urls = sim_emulator
    client = SimClient(urls["sim"])
    try:
        with MotorBus(proc.host_url, cycle_timeout_ms=20) as bus:
            bus.connect()
            bus.set_mode(Mode.POSITION)
            with pytest.raises(SimLinkError, match="tracking setpoints"):
                client.reset(3)
            bus.set_mode(Mode.HOLD)
            info = client.reset(3)
            assert info["task"] == "pack_box" and info["instruction"]
            status = client.status()
            assert status["seed"] == 3 and status["progress"] == 0.0
            assert status["success"] is False and status["failure"] is None
        with pytest.raises(SimLinkError, match="unknown sim command"):
            client.request({"cmd": "teleport"})
    finally:
        client.close()
