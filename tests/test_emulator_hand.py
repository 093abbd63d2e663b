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


def test_when_the_process_that_started_the_emulator_is_killed_expect_no_emulator_left():
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    code = ("from firmware_bridge.emulator.process import EmulatorProcess; import time; "
            "p = EmulatorProcess('pty://'); print(p.proc.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.kill()  # a controller crash: nothing of ours runs its cleanup
    parent.wait()
    parent.stdout.close()
    end = time.monotonic() + 10
    alive = True
    while alive and time.monotonic() < end:
        status = Path(f"/proc/{child}/status")
        alive = status.exists() and "State:\tZ" not in status.read_text()
        time.sleep(0.1)
    if alive:
        os.kill(child, 9)
    assert not alive, "the emulator outlived the process that started it"
