"""Opening the robot's motor bus from its config, starting the emulator when the config says so.

``emulator+pty://`` (or ``emulator+zmq+ipc:///path``, ``emulator+zmq+tcp://host:port``) in
``[bus] url`` means: start the motor-controller emulator as a separate process listening there
and dial it, exactly as a real robot's port would be dialled.
``dynamixel:///dev/ttyUSB0?baud=4000000&ids=1-7&model=xl330`` opens an arm built from DYNAMIXEL
servos (the ``dynamixel`` extra); ``emulator+dynamixel+pty://[LINK]?ids=...&model=...`` starts
the emulator in its DYNAMIXEL mode and dials that.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from firmware_bridge.bus import MotorBus
from firmware_bridge.emulator.process import EmulatorProcess
from ramp_edge.config import RobotConfig

EMULATOR_PREFIX = "emulator+"
DYNAMIXEL_PREFIX = "dynamixel://"
DYNAMIXEL_EMULATED = "dynamixel+pty://"


def inner_is_dynamixel(url: str) -> bool:
    return url[len(EMULATOR_PREFIX):].startswith(DYNAMIXEL_EMULATED)


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
        if not inner_is_dynamixel(url):  # the emulated firmware's servo loop keeps time too
            args += ["--realtime-priority", str(config.rates.realtime_priority)]
        inner = url[len(EMULATOR_PREFIX):]
        if inner.startswith(DYNAMIXEL_EMULATED):
            from firmware_bridge.dynamixel.emulator import dial_url, emulator_launch

            device_url, dxl_args = emulator_launch(inner, len(config.joints))
            emulator = EmulatorProcess(device_url, (*args, *dxl_args))
            url = dial_url(emulator.host_url, inner)
        else:
            emulator = EmulatorProcess(inner, tuple(args))
            url = emulator.host_url
    try:
        timeouts = dict(cycle_timeout_ms=config.bus.cycle_timeout_ms,
                        request_timeout_ms=config.bus.request_timeout_ms,
                        retries=config.bus.retries)
        if url.startswith(DYNAMIXEL_PREFIX):  # servos know no joint names: the config's
            from firmware_bridge.dynamixel.bus import DynamixelBus

            if "watchdog_ms=" not in url:  # the servos have none: the bus keeps the config's
                url += ("&" if "?" in url else "?") + \
                    f"watchdog_ms={int(config.safety.watchdog_timeout_ms)}"
            bus = DynamixelBus(url, joint_names=config.joint_names, **timeouts)
        else:
            bus = MotorBus(url, **timeouts)
        with bus:
            bus.connect()
            yield bus, emulator
    finally:
        if emulator is not None:
            emulator.stop()
