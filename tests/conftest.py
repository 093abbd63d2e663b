"""Shared fixtures: the emulator as a real separate process on each transport."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from firmware_bridge.emulator.process import EmulatorProcess


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def device_url(kind: str, tmp_path) -> str:
    if kind == "pty":
        return f"pty://{tmp_path}/ttyEMU"
    if kind == "zmq+ipc":
        return f"zmq+ipc://{tmp_path}/bus.sock"
    if kind == "zmq+tcp":
        return f"zmq+tcp://127.0.0.1:{free_tcp_port()}"
    raise ValueError(kind)


@pytest.fixture(params=["sim", "pty", "zmq+ipc", "zmq+tcp", "mujoco", "hardware"])
def host_url(request, tmp_path) -> Iterator[str]:
    """The host-side URL of a motor controller: in-process, emulator process over a
    pseudo-terminal / ZeroMQ ipc / ZeroMQ tcp, the emulator with the MuJoCo arm as its plant,
    or a real port named by RAMP_EDGE_TEST_PORT."""
    kind = request.param
    if kind == "sim":
        yield "sim://"
        return
    if kind == "mujoco":
        pytest.importorskip("mujoco", reason="the sim extra (MuJoCo) is not installed")
        with EmulatorProcess(device_url("pty", tmp_path), ("--plant", "mujoco", "--task",
                                                             "pack_box"), 60.0) as proc:
            yield proc.host_url
        return
    if kind == "hardware":
        port = os.environ.get("RAMP_EDGE_TEST_PORT")
        if not port:
            pytest.skip("no real motor controller: set RAMP_EDGE_TEST_PORT to a transport URL")
        yield port
        return
    with EmulatorProcess(device_url(kind, tmp_path)) as proc:
        yield proc.host_url


@pytest.fixture
def emulator_factory(tmp_path):
    """Start emulator processes with extra arguments; all are stopped at the end."""
    started: list[EmulatorProcess] = []

    def start(kind: str = "pty", *args: str, url: str | None = None) -> EmulatorProcess:
        proc = EmulatorProcess(url or device_url(kind, tmp_path), args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
def emulated_bundle(tmp_path_factory):
    """An untrained reference bundle with the emulated robot's joints, limits and cameras: what
    the simulated-clock evaluator and the tools around it can load (not one that does a task)."""
    from models.reference import build_reference_bundle
    from ramp_edge.config import load_config

    config = load_config()
    out = tmp_path_factory.mktemp("bundle") / "reference"
    build_reference_bundle(out, config.joint_names,
                           joint_limits=[(j.position_min, j.position_max) for j in config.joints],
                           camera_names=tuple(c.name for c in config.cameras))
    return out
