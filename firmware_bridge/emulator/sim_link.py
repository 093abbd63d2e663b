"""The emulator's simulated-world side channels (the MuJoCo plant only; real firmware has none).

- Cameras: a thread renders the plant's cameras at ``camera_hz`` and publishes each frame over
  ZeroMQ (:mod:`firmware_bridge.camera_stream`), as a networked camera would.
- Sim control: a REP socket answering JSON requests about the simulated world, which a robot
  does not have: ``{"cmd": "reset", "seed": N}`` starts a new task episode (only while the
  motors are not tracking setpoints), ``{"cmd": "status"}`` reports task progress, success and
  failure (what a person watching would label), ``{"cmd": "state"}`` the privileged scene state
  (what a scripted expert or corrector sees), ``{"cmd": "move_by_hand", "position": [...]}``
  moves the joints as a technician would (torque off only; raw coordinates). Any plant answers
  ``move_by_hand`` and ``state`` (raw positions); the rest need the MuJoCo plant.
  :class:`SimClient` is the other end.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from typing import Any

import zmq

from firmware_bridge.camera_stream import FramePublisher
from firmware_bridge.errors import EdgeError, LinkError
from firmware_bridge.transport.zmq_link import zmq_endpoint


class SimLinkError(EdgeError, RuntimeError):
    """The simulated world refused or could not answer a request."""


class CameraPublisherThread:
    """Publishes the plant's cameras at ``rate_hz``. Rendering runs in a child process (its
    own copy of the scene, fed a snapshot of the world per frame) so that OpenGL work never
    holds this process's GIL against the 1 kHz servo loop; this thread only copies the state.
    ``render_ms`` collects the child's render time per frame (all cameras)."""

    def __init__(self, plant: Any, url: str, rate_hz: float, size: int) -> None:
        import multiprocessing

        self.plant, self.url, self.rate_hz, self.size = plant, url, rate_hz, size
        self._stop = threading.Event()
        self.render_ms: list[float] = []
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(target=_render_worker, args=(child_conn, url, size),
                                 name="camera-render", daemon=True)
        self._proc.start()
        child_conn.close()
        if not self._conn.poll(60.0):
            self._proc.kill()
            raise SimLinkError("the camera renderer did not start")
        hello = self._conn.recv()
        if hello != "ready":
            self._proc.join(timeout=2.0)
            raise SimLinkError(str(hello))
        self._thread = threading.Thread(target=self._run, name="camera-feed", daemon=True)
        self._thread.start()

    def _snapshot(self) -> tuple:
        return self.plant.pose_snapshot()

    def _run(self) -> None:
        period = 1.0 / self.rate_hz
        next_t = time.monotonic()
        busy = False
        while not self._stop.is_set():
            while self._conn.poll(0):
                self.render_ms.append(self._conn.recv())
                busy = False
            if len(self.render_ms) > 10_000:
                del self.render_ms[:5_000]
            if not busy:  # one frame in flight at most: a slow renderer drops, never queues
                try:
                    self._conn.send(self._snapshot())
                    busy = True
                except (BrokenPipeError, OSError):
                    return
            next_t += period
            delay = next_t - time.monotonic()
            if delay < -period:
                next_t = time.monotonic()
            self._stop.wait(max(0.0, delay))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        with contextlib.suppress(BrokenPipeError, OSError):
            self._conn.send(None)
        self._proc.join(timeout=3.0)
        if self._proc.is_alive():
            self._proc.kill()
        self._conn.close()


def _render_worker(conn: Any, url: str, size: int) -> None:
    """Child process: a scene of its own, posed from each snapshot, rendered and published."""
    # Rendering is heavy and may start worker threads: never real time, whatever the emulator
    # that started us runs at.
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    try:
        from firmware_bridge.sim.plant import MujocoPlant
        from firmware_bridge.sim.render import SimRenderer

        mirror = MujocoPlant(None)
        renderer = SimRenderer(mirror, size, size)
        publisher = FramePublisher(url)
    except Exception as err:  # reported to the parent as its one-line reason
        conn.send(f"camera renderer failed: {err}")
        return
    conn.send("ready")
    seq = 0
    try:
        while True:
            snapshot = conn.recv()
            if snapshot is None:
                return
            t0 = time.monotonic()
            mirror.pose_from(snapshot)
            frames = renderer.render_all()
            t_capture = time.monotonic()
            seq += 1
            for name, image in frames.items():
                publisher.publish(name, seq, image, t_capture)
            conn.send((t_capture - t0) * 1000)
    except (EOFError, BrokenPipeError, OSError, KeyboardInterrupt):
        return
    finally:
        renderer.close()
        publisher.close()


class SimControlThread:
    """REP server for sim requests; world-changing work runs on the servo thread."""

    def __init__(self, server: Any, url: str) -> None:
        self.server, self.url = server, url
        self._sock = zmq.Context.instance().socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, 65536)
        try:
            self._sock.bind(zmq_endpoint(url))
        except zmq.ZMQError as err:
            self._sock.close(linger=0)
            raise LinkError(f"cannot serve sim control on {url}: {err}") from err
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-control", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._sock.poll(100):
                continue
            try:
                raw = self._sock.recv()
            except zmq.ZMQError:
                return
            reply = self._answer(raw)
            try:
                self._sock.send(json.dumps(reply).encode())
            except zmq.ZMQError:
                return

    def _answer(self, raw: bytes) -> dict[str, Any]:
        try:
            request = json.loads(raw)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
            cmd = request.get("cmd")
            if cmd == "status":
                return {"ok": True, **self.server.call_in_loop(self._status).result(2.0)}
            if cmd == "state":
                return {"ok": True, **self.server.call_in_loop(self._state).result(2.0)}
            if cmd == "move_by_hand":
                position = request.get("position")
                if not (isinstance(position, list) and all(
                        isinstance(x, int | float) and not isinstance(x, bool) for x in position)):
                    raise ValueError("position must be a list of numbers (raw joint units)")
                return {"ok": True, **self.server.call_in_loop(
                    lambda: self._move_by_hand(position)).result(2.0)}
            if cmd == "reset":
                seed = request.get("seed", 0)
                if type(seed) is not int:
                    raise ValueError("seed must be an integer")
                return {"ok": True, **self.server.call_in_loop(
                    lambda: self._reset(seed)).result(5.0)}
            raise ValueError(f"unknown sim command {cmd!r} (known: move_by_hand, reset, state, "
                             "status)")
        except (ValueError, SimLinkError) as err:
            return {"ok": False, "error": str(err)}
        except TimeoutError:
            return {"ok": False, "error": "the emulator's servo loop did not answer"}

    def _status(self) -> dict[str, Any]:
        plant = self.server.device.plant
        episode = plant.episode
        if episode is None or not hasattr(plant, "sim_state"):
            return {"task": None}
        state = plant.sim_state()
        return {"task": episode.task, "seed": episode.seed, "instruction": episode.instruction,
                "progress": episode.progress(state), "success": episode.success(state),
                "failure": episode.failure(state), "subgoal": episode.current_subgoal(state),
                "held": state.held, "sim_time_s": state.time_s}

    def _state(self) -> dict[str, Any]:
        plant = self.server.device.plant
        if not hasattr(plant, "sim_state"):
            return {"raw_position": plant.position.tolist()}
        return {"raw_position": plant.position.tolist(), "state": plant.sim_state().to_dict()}

    def _move_by_hand(self, position: list[float]) -> dict[str, Any]:
        """A person moves the joints (raw coordinates); only with torque off, as on a robot."""
        import numpy as np

        from firmware_bridge.messages import Mode

        device = self.server.device
        if device.mode != Mode.TORQUE_OFF:
            raise SimLinkError(f"joints can be moved by hand only with torque off (mode is "
                               f"{device.mode.name})")
        if len(position) != len(device.config.joint_names):
            raise SimLinkError(f"{len(position)} positions for "
                               f"{len(device.config.joint_names)} joints")
        device.plant.move_by_hand(np.asarray(position, dtype=np.float64))
        device.resync_to_plant()
        return {"raw_position": device.plant.position.tolist()}

    def _reset(self, seed: int) -> dict[str, Any]:
        device = self.server.device
        if not hasattr(device.plant, "reset"):
            raise SimLinkError("reset needs the MuJoCo plant (--plant mujoco)")
        from firmware_bridge.messages import Mode

        if device.mode == Mode.POSITION:
            raise SimLinkError("reset refused: the motors are tracking setpoints (hold first)")
        episode = device.plant.reset(seed)
        device.resync_to_plant()
        return {"task": episode.task if episode else None,
                "instruction": episode.instruction if episode else None,
                "step_budget": episode.step_budget if episode else None,
                "control_hz": episode.control_hz if episode else None}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._sock.close(linger=0)


class SimClient:
    """The controller's end of the sim control channel (simulation runs only)."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url
        self._timeout_ms = int(timeout_s * 1000)
        self._ctx = zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._open()

    def _open(self) -> None:
        self._sock = self._ctx.socket(zmq.REQ)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(zmq_endpoint(self.url))

    def request(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request; raises SimLinkError on refusal or no answer."""
        assert self._sock is not None
        self._sock.send(json.dumps(request).encode())
        if not self._sock.poll(self._timeout_ms):
            self._sock.close(linger=0)  # a REQ socket without its reply is stuck: replace it
            self._open()
            raise SimLinkError(f"no answer from the simulator at {self.url}")
        reply = json.loads(self._sock.recv())
        if not reply.get("ok"):
            raise SimLinkError(reply.get("error", "sim request refused"))
        return reply

    def reset(self, seed: int) -> dict[str, Any]:
        return self.request({"cmd": "reset", "seed": seed})

    def state(self) -> dict[str, Any]:
        """``raw_position`` (raw joint coordinates) and, for the MuJoCo plant, ``state`` (a
        :class:`~firmware_bridge.sim.state.SimState` as plain values)."""
        return self.request({"cmd": "state"})

    def move_by_hand(self, position: list[float]) -> dict[str, Any]:
        """Move the joints as a technician would (torque off only), raw joint coordinates."""
        return self.request({"cmd": "move_by_hand", "position": [float(x) for x in position]})

    def status(self) -> dict[str, Any]:
        return self.request({"cmd": "status"})

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
