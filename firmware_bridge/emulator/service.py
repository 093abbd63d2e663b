"""Starting the emulator: build the device and its link from a URL, run it, stop on signals.

Device-side URLs: ``pty://`` (a new pseudo-terminal), ``pty:///path/link`` (the same, with a
stable symbolic link at that path, kept across unplug/replug), ``zmq+tcp://host:port``,
``zmq+ipc:///path``. :func:`serve` prints the host-side URL as the first line on stdout.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace

from firmware_bridge.emulator.device import DeviceConfig, EmulatedMotorController
from firmware_bridge.emulator.server import EmulatorServer, FailureKnobs
from firmware_bridge.errors import TransportUrlError
from firmware_bridge.transport.base import Transport
from firmware_bridge.transport.url import TransportUrl


@dataclass(frozen=True)
class DeviceLinkSpec:
    """How to open (and reopen, after an unplug) the device side, and what hosts dial."""

    open: Callable[[], Transport]
    host_url: Callable[[Transport], str]


def device_link(url: str) -> DeviceLinkSpec:
    parsed = TransportUrl.parse(url) if "://" in url else TransportUrl(url, "", "", {})
    if parsed.scheme == "pty":
        from firmware_bridge.transport.pty_device import PtyDeviceTransport

        link_path = parsed.path or None

        def open_pty() -> Transport:
            return PtyDeviceTransport(url, link=link_path)

        def pty_host_url(t: Transport) -> str:
            assert isinstance(t, PtyDeviceTransport)
            return f"serial://{link_path or t.slave_path}"

        return DeviceLinkSpec(open_pty, pty_host_url)
    if parsed.scheme in ("zmq+tcp", "zmq+ipc"):
        from firmware_bridge.transport.zmq_link import ZmqDeviceTransport

        return DeviceLinkSpec(lambda: ZmqDeviceTransport(url), lambda t: url)
    raise TransportUrlError(
        f"the emulator cannot listen on {url!r}: use pty://[LINK], zmq+tcp://HOST:PORT "
        "or zmq+ipc:///PATH"
    )


@dataclass(frozen=True)
class SimOptions:
    """The plant (MuJoCo or the motor model) and the side channels of a simulated robot (see
    :mod:`firmware_bridge.emulator.sim_link`)."""

    task: str | None = None
    seed: int = 0
    camera_url: str | None = None
    camera_hz: float = 30.0
    camera_size: int = 96
    sim_url: str | None = None
    mujoco: bool = True


def serve(
    url: str,
    config: DeviceConfig,
    knobs: FailureKnobs,
    stall_s: float = 0.5,
    unplug_s: float = 1.0,
    announce: Callable[[str], None] = print,
    sim: SimOptions | None = None,
    realtime_priority: int = 0,
) -> EmulatorServer:
    """Run the emulator until SIGTERM/SIGINT. SIGUSR1 stalls it for ``stall_s``; SIGUSR2
    unplugs it for ``unplug_s`` (then it comes back, on a new pty behind the same link).
    With ``sim`` the plant is the MuJoCo arm, with cameras and sim control if their URLs are
    given."""
    if realtime_priority > 0:
        # The whole emulator runs SCHED_FIFO, as firmware outranks the host: its threads are
        # light (the servo loop, copying snapshots, answering sim requests) and one that is
        # preempted while it holds the GIL would hold up the servo loop. The camera renderer
        # (a child process) drops back to normal priority.
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(realtime_priority))
        except (OSError, AttributeError):
            realtime_priority = 0  # not permitted here: normal priority
    plant = None
    if sim is not None and sim.mujoco:
        from firmware_bridge.sim.plant import MujocoPlant

        plant = MujocoPlant(sim.task, seed=sim.seed)
        config = replace(config, initial_position=tuple(float(x) for x in plant.position))
    spec = device_link(url)
    link = spec.open()
    server = EmulatorServer(EmulatedMotorController(config, plant), link, knobs,
                            relink=spec.open)
    server.realtime_priority = realtime_priority
    side: list = []
    try:
        if sim is not None and sim.mujoco and sim.camera_url:
            from firmware_bridge.emulator.sim_link import CameraPublisherThread

            side.append(CameraPublisherThread(plant, sim.camera_url, sim.camera_hz,
                                              sim.camera_size))
        if sim is not None and sim.sim_url:
            from firmware_bridge.emulator.sim_link import SimControlThread

            side.append(SimControlThread(server, sim.sim_url))
    except BaseException:
        for s in side:
            s.stop()
        link.close()
        raise
    server.side_channels = side
    announce(spec.host_url(link))
    sys.stdout.flush()
    server.on_relink = lambda t: (announce(spec.host_url(t)), sys.stdout.flush())
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    signal.signal(signal.SIGUSR1, lambda *_: server.stall(stall_s))
    signal.signal(signal.SIGUSR2, lambda *_: server.unplug(unplug_s))
    try:
        server.run()
    finally:
        for s in side:
            s.stop()
    return server
