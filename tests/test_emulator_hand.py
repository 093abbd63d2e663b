"""Moving the emulated joints by hand (what a technician does with torque off), through the
emulator's simulation channel, as calibration tests need."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge.bus import MotorBus
from firmware_bridge.emulator.sim_link import SimClient, SimLinkError
from firmware_bridge.messages import Mode


def test_when_torque_is_off_expect_joints_moved_by_hand_and_reported(emulator_factory, tmp_path):
    sim_url = f"zmq+ipc://{tmp_path}/sim.sock"
    proc = emulator_factory("pty", "--sim-url", sim_url)
    client = SimClient(sim_url)
    try:
        with MotorBus(proc.host_url) as bus:
            bus.connect()
            bus.set_mode(Mode.TORQUE_OFF)
            target = [0.5, -0.4, 0.3, 0.0, 0.1, -0.2, 0.03]
            client.move_by_hand(target)
            np.testing.assert_allclose(bus.read_state().position, target, atol=1e-5)
            assert client.state()["raw_position"] == pytest.approx(target)
            bus.set_mode(Mode.HOLD)
            with pytest.raises(SimLinkError, match="only with torque off"):
                client.move_by_hand([0.0] * 7)
            with pytest.raises(SimLinkError, match="needs the MuJoCo plant"):
                client.reset(1)
            with pytest.raises(SimLinkError, match="position must be a list"):
                client.request({"cmd": "move_by_hand", "position": "up"})
    finally:
        client.close()
