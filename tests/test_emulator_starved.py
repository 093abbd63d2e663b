"""The emulator keeps answering while its servo loop runs behind (a process starved of CPU on
a busy machine), as firmware's serial interrupt would: a slow plant stands in for starvation."""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np

from firmware_bridge.bus import MotorBus
from firmware_bridge.emulator.device import DeviceConfig, EmulatedMotorController
from firmware_bridge.emulator.plant import MotorPlant
from firmware_bridge.emulator.server import EmulatorServer
from firmware_bridge.transport.zmq_link import ZmqDeviceTransport


@contextlib.contextmanager
def emulator_thread(tmp_path, plant_cls: type, watchdog_ms: int):
    """The emulator's firmware and servo loop on a thread over ZeroMQ, with a 2-joint plant of
    ``plant_cls``; yields (server, plant, url)."""
    config = DeviceConfig(joint_names=("a", "b"), position_min=(-1.0, -1.0),
                          position_max=(1.0, 1.0), velocity_max=(1.0, 1.0),
                          initial_position=(0.0, 0.0), watchdog_ms=watchdog_ms)
    url = f"zmq+ipc://{tmp_path}/bus.sock"
    plant = plant_cls(np.array(config.initial_position), np.array(config.velocity_max))
    server = EmulatorServer(EmulatedMotorController(config, plant), ZmqDeviceTransport(url))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield server, plant, url
    finally:
        server.stop()
        thread.join(timeout=2.0)


class SlowPlant(MotorPlant):
    """Each 1 ms servo step takes 1.5 ms: the loop is always behind."""

    def step(self, command: np.ndarray, torque_on: bool, dt_s: float) -> None:
        time.sleep(0.0015)
        super().step(command, torque_on, dt_s)


class StallingPlant(MotorPlant):
    """Stalls one servo step for ``stall_s`` when asked (then steps normally)."""

    stall_s = 0.0

    def step(self, command: np.ndarray, torque_on: bool, dt_s: float) -> None:
        if self.stall_s:
            stall, self.stall_s = self.stall_s, 0.0
            time.sleep(stall)
        super().step(command, torque_on, dt_s)


def test_when_the_servo_loop_runs_behind_expect_the_host_still_answered(tmp_path):
    with emulator_thread(tmp_path, SlowPlant, watchdog_ms=1000) as (server, _, url), \
            MotorBus(url, cycle_timeout_ms=20.0) as bus:
        bus.connect()
        answered = sum(bus.read_state() is not None for _ in range(50))
    assert server.stats.served_behind > 0
    assert answered >= 45, f"only {answered} of 50 state reads answered"


def test_when_the_emulator_was_stalled_but_the_host_kept_sending_expect_no_watchdog(tmp_path):
    """Setpoints that arrived while the emulator's process was not scheduled count for the
    watchdog: it judges the host by what it sent, not by the emulator's own stall."""
    from firmware_bridge.messages import Mode

    with emulator_thread(tmp_path, StallingPlant, watchdog_ms=100) as (_, plant, url), \
            MotorBus(url, cycle_timeout_ms=20.0) as bus:
        bus.connect()
        bus.set_mode(Mode.POSITION)
        target = np.zeros(2)
        # Freeze the servo loop inside a tick for 300 ms (3 watchdog periods), as a starved
        # process would be, while the host keeps streaming setpoints.
        plant.stall_s = 0.3
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            bus.exchange(target, reach_in_us=10_000)
            time.sleep(0.01)
        state = next(s for s in (bus.read_state() for _ in range(20)) if s is not None)
    assert state.mode == Mode.POSITION, state.mode
