"""Opening the robot's motor bus from its config, starting the emulator when the config says so.

``emulator+pty://`` (or ``emulator+zmq+ipc:///path``, ``emulator+zmq+tcp://host:port``) in
``[bus] url`` means: start the motor-controller emulator as a separate process listening there
and dial it, exactly as a real robot's port would be dialled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from firmware_bridge.bus import MotorBus
from firmware_bridge.emulator.process import EmulatorProcess
from ramp_edge.config import RobotConfig

EMULATOR_PREFIX = "emulator+"


@contextlib.contextmanager
def open_robot_bus(
    config: RobotConfig, emulator_args: Sequence[str] = ()
) -> Iterator[tuple[MotorBus, EmulatorProcess | None]]:
    """Connect to the robot's motor controller (handshake done). Yields ``(bus, emulator)``;
    the emulator process, if one was started, is stopped on exit. Raises LinkError,
    DeviceTimeoutError, IncompatibleFirmwareError."""
    url = config.bus.url
    emulator = None
    if url.startswith(EMULATOR_PREFIX):
        args = ["--joints", str(len(config.joints)),
                "--watchdog-ms", str(int(config.safety.watchdog_timeout_ms)), *emulator_args]
        emulator = EmulatorProcess(url[len(EMULATOR_PREFIX):], tuple(args))
        url = emulator.host_url
    try:
        bus = MotorBus(url, cycle_timeout_ms=config.bus.cycle_timeout_ms,
                       request_timeout_ms=config.bus.request_timeout_ms,
                       retries=config.bus.retries)
        with bus:
            bus.connect()
            yield bus, emulator
    finally:
        if emulator is not None:
            emulator.stop()
