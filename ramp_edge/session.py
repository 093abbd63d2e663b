"""One ``ramp-edge run``: config, bundle and engine, motor bus (starting the emulator when the
config says so), cameras, control socket and signals, then the episodes.

Simulation runs (bus ``emulator+...``) start the emulator with the MuJoCo plant, its rendered
cameras and its sim-control channel, reset the task scene before each episode and end an
episode when the task succeeds or fails, which a person would otherwise label.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal as signal_module
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from calibration.calibration_file import (
    CalibrationFile,
    calibration_path,
    joints_from_message,
    load_calibration,
    save_calibration,
)
from calibration.verify import apply_calibration, check_before_torque
from firmware_bridge.messages import Mode
from ramp_edge.config import RobotConfig, load_config
from ramp_edge.control_socket import ControlSocketServer, socket_path
from ramp_edge.controller import Controller, ControllerError, StateSnapshot
from ramp_edge.engine_slot import EngineSlot, LoadedEngine, open_bundle_engine
from ramp_edge.episodes import EpisodeMeta, EpisodeStore
from ramp_edge.errors import EdgeError
from ramp_edge.robot_link import EMULATOR_PREFIX, open_robot_bus
from ramp_edge.sd_notify import Notifier
from ramp_edge.states import ControllerState

EMULATOR_CAMERA = "emulator://"
DEFAULT_TASK = "pack_box"
REFERENCE_BUNDLE = "reference"


@dataclass(frozen=True)
class RunRequest:
    robot: str | None
    model: str | None
    task: str | None
    instruction: str | None
    episodes: int
    duration_s: float
    mode: str
    backend: str | None
    home: Path
    seed: int = 0
    clear_latched: bool = False
    engine_threads: int | None = 1  # the control thread keeps a core of its own
    teleop: str | None = None  # a teleop URL, or "expert" / "corrector" in simulation
    policy: bool = True  # False: demonstration, the teleop device alone drives
    operator: str = ""
    record: bool = True  # record every episode in HOME's episode store


def _shipped_fit(config: RobotConfig) -> Path | None:
    """The first bundle shipped with the package that fits this robot (joints, cameras and
    their image size), if any."""
    from models.shipped import shipped_bundles
    from ramp_edge.bundle import load_bundle

    sizes = {c.name: (c.height, c.width) for c in config.cameras}
    for path in shipped_bundles():
        try:
            b = load_bundle(path)
        except EdgeError:  # a damaged install: say nothing here, the next choice runs
            continue
        h, w = b.manifest.image_shape[:2]
        if b.joint_names == config.joint_names and all(sizes.get(c) == (h, w)
                                                       for c in b.camera_names):
            return path
    return None


def resolve_bundle(request: RunRequest, config: RobotConfig, say: Callable[[str], None]) -> Path:
    """The bundle to run: ``--model``, else HOME/bundles/active, else HOME/bundles/reference if
    the home has one, else the bundle shipped with the package when it fits the robot, else a
    reference bundle built on first use (random init, untrained: it moves, it does not do the
    task)."""
    if request.model:
        return Path(request.model)
    bundles = request.home / "bundles"
    active = bundles / "active"
    if active.exists():
        return active
    reference = bundles / REFERENCE_BUNDLE
    if not reference.exists() and (shipped := _shipped_fit(config)) is not None:
        return shipped
    if not reference.exists():
        from models.reference import build_reference_bundle

        say(f"building the reference bundle at {reference} (random init, untrained; seconds)")
        bundles.mkdir(parents=True, exist_ok=True)
        limits = [(j.position_min, j.position_max) for j in config.joints]
        cameras = tuple(c.name for c in config.cameras)
        build_reference_bundle(reference, config.joint_names, joint_limits=limits,
                               camera_names=cameras)
    return reference


def _swap_in_background(swap: Callable[[dict[str, Any]], dict[str, Any]],
                        say: Callable[[str], None]) -> None:
    """SIGHUP: load HOME/bundles/active off the signal handler (loading takes seconds)."""

    def work() -> None:
        try:
            swap({})
        except EdgeError as err:
            say(f"SIGHUP: bundle not swapped: {err}")

    threading.Thread(target=work, name="bundle-swap", daemon=True).start()


@contextlib.contextmanager
def _signals(signal: ModuleType, controller_ref: list[Controller | None],
             notifier: Notifier, on_hup: Callable[[], None]) -> Iterator[None]:
    """SIGTERM / first SIGINT: graceful stop; second SIGINT or SIGUSR1: e-stop; SIGHUP: swap
    to HOME/bundles/active between chunks."""
    interrupts = [0]

    def stop(signum: int, _frame: Any) -> None:
        if signum == signal.SIGINT:
            interrupts[0] += 1
        if signum == signal.SIGTERM:
            notifier.stopping("stopping on SIGTERM")
        controller = controller_ref[0]
        if controller is None:
            return
        if interrupts[0] >= 2:
            controller.request_estop("second Ctrl-C")
        else:
            controller.request_stop(f"{signal.Signals(signum).name} received")

    def estop(_signum: int, _frame: Any) -> None:
        if controller_ref[0] is not None:
            controller_ref[0].request_estop("SIGUSR1")

    handlers = ((signal.SIGTERM, stop), (signal.SIGINT, stop), (signal.SIGUSR1, estop),
                (signal.SIGHUP, lambda *_: on_hup()))
    previous = {s: signal.signal(s, h) for s, h in handlers}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class _SimWatcher:
    """Polls the simulator's task status and ends the episode on success or failure."""

    def __init__(self, client: Any, controller: Controller, period_s: float = 0.1) -> None:
        self.client, self.controller, self.period_s = client, controller, period_s
        self.outcome: str | None = None
        self.progress = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from firmware_bridge.emulator.sim_link import SimLinkError

        while not self._stop.wait(self.period_s):
            try:
                status = self.client.status()
            except SimLinkError:
                continue
            self.progress = status.get("progress", 0.0)
            if status.get("success"):
                self.outcome = "success"
                self.controller.request_stop("task succeeded")
                return
            if status.get("failure"):
                self.outcome = f"failure: {status['failure']}"
                self.controller.request_stop(f"task failed: {status['failure']}")
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


def run_session(request: RunRequest, say: Callable[[str], None],
                status_line: Callable[[dict[str, Any]], str],
                signals: ModuleType = signal_module) -> dict[str, Any]:
    from firmware_bridge.emulator.sim_link import SimClient
    from ramp_edge.cameras import open_camera
    from ramp_edge.engines.base import Observation

    config = load_config(request.robot)
    request.home.mkdir(parents=True, exist_ok=True)
    notifier = Notifier.from_environ(unset_environment=True)  # children must not inherit it
    first = open_bundle_engine(resolve_bundle(request, config, say), config, request.backend,
                               request.engine_threads)
    slot = EngineSlot(first, config, request.backend, request.engine_threads)
    bundle = first.bundle
    say(first.message)
    if not bundle.trained:
        say("note: this bundle is untrained (random weights): the arm moves, it does not do "
            "the task")
    recipe = bundle.manifest.provenance.get("recipe")
    if isinstance(recipe, dict) and "success_rate" in recipe:
        say(f"note: the shipped bundle ({recipe.get('chosen')} of the loop in simulation) "
            f"succeeded in {recipe['success_rate']:.0%} of {recipe.get('evaluation_episodes')} "
            "evaluation episodes: benchmarks/ramp_report.md")
    simulated = config.bus.url.startswith(EMULATOR_PREFIX)
    run_dir = Path(tempfile.mkdtemp(prefix="ramp-run-", dir=_short_tmp()))
    emulator_args: list[str] = []
    cam_url = f"zmq+ipc://{run_dir}/cameras.sock"
    sim_url = f"zmq+ipc://{run_dir}/sim.sock"
    task = request.task or DEFAULT_TASK
    if simulated:
        emulator_args = ["--plant", "mujoco", "--task", task, "--seed", str(request.seed),
                         "--camera-url", cam_url, "--camera-hz", str(config.rates.camera_hz),
                         "--sim-url", sim_url]
    store = EpisodeStore(request.home) if request.record else None
    if store is not None:
        recovered = store.recover()  # a crash or power cut left these unfinished
        if recovered:
            say(f"recovered {len(recovered)} unfinished episode(s), sealed as aborted: "
                + ", ".join(e.id for e in recovered))
    episodes: list[dict[str, Any]] = []
    controller_ref: list[Controller | None] = [None]
    cameras: dict[str, Any] = {}
    sim_client = None
    teleop = None
    try:
        with open_robot_bus(config, emulator_args) as (bus, _emulator):
            say(f"motor controller: {bus.info.device_id}, firmware {bus.info.firmware_version}"
                f" on {bus.url}")
            for cam in config.cameras:
                url = cam.url
                if url.startswith(EMULATOR_CAMERA):
                    url = f"{cam_url}#{url[len(EMULATOR_CAMERA):]}"
                cameras[cam.name] = open_camera(cam.name, url, size=(cam.width, cam.height))
            if simulated:
                sim_client = SimClient(sim_url)
            teleop = _open_teleop(request, simulated, sim_url, task, config.teleop.url)
            if request.clear_latched:
                bus.clear_fault()
            calibration_file = calibration_path(request.home, config.robot_id)
            if simulated:
                _calibrate_emulator(bus, config, calibration_file, say)

            def check_calibration() -> Any:
                return check_before_torque(calibration_file, config.robot_id, bus)

            def status(_req: dict[str, Any]) -> dict[str, Any]:
                c = controller_ref[0]
                return c.status() if c else {"state": "STARTING"}

            def swap(req: dict[str, Any]) -> dict[str, Any]:
                path = req.get("bundle") or str(request.home / "bundles" / "active")
                loaded = slot.swap(Path(str(path)))
                say(f"swapped to {loaded.name}: {loaded.message}")
                return {"bundle": loaded.name, "engine": loaded.message}

            def rollback(_req: dict[str, Any]) -> dict[str, Any]:
                loaded = slot.rollback()
                say(f"rolled back to {loaded.name}")
                return {"bundle": loaded.name}

            def hand_over(loaded: LoadedEngine) -> None:
                c = controller_ref[0]
                if c is not None:
                    c.request_engine(loaded.engine, loaded.name)

            slot.on_change = hand_over

            def estop(req: dict[str, Any]) -> dict[str, Any]:
                c = controller_ref[0]
                if c is None:  # between episodes the arm is held by the motor controller
                    raise ValueError("no episode is running: nothing moves to e-stop")
                c.request_estop(str(req.get("reason", "control socket")))
                return {"state": "ESTOP"}

            pending: list[Path] = []  # bundles told to activate, applied between episodes

            def activate(req: dict[str, Any]) -> dict[str, Any]:
                path = Path(str(req.get("bundle") or request.home / "bundles" / "active"))
                checked = open_bundle_engine(path, config, request.backend,
                                             request.engine_threads)  # refuse a bad one now
                checked.engine.close()
                pending[:] = [path]
                say(f"{checked.name} activates before the next episode")
                return {"bundle": checked.name, "pending": True}

            handlers = {"status": status, "estop": estop, "swap": swap, "rollback": rollback,
                        "activate": activate}
            try:
                with ControlSocketServer(socket_path(request.home), handlers), \
                        _signals(signals, controller_ref, notifier,
                                 lambda: _swap_in_background(swap, say)):
                    for index in range(request.episodes):
                        if pending:
                            try:
                                say(f"activated {slot.swap(pending.pop()).name}")
                            except EdgeError as err:
                                say(f"bundle not activated, the running one stays: {err}")
                        result = _episode(request, config, bus, slot.current, cameras,
                                          sim_client, teleop, notifier, controller_ref, index,
                                          status_line, say, Observation, check_calibration,
                                          store, calibration_file)
                        episodes.append(result)
                        if result["final_state"] in ("ESTOP", "FAULT") or result.get(
                                "interrupted"):
                            break
            finally:
                if teleop is not None:  # before the emulator goes: it reads the sim channel
                    teleop.close()
                    teleop = None
    finally:
        if teleop is not None:
            teleop.close()
        for cam in cameras.values():
            cam.close()
        if sim_client is not None:
            sim_client.close()
        slot.close()
        if store is not None:
            store.close()
        notifier.stopping("controller stopped")
        notifier.close()
        shutil.rmtree(run_dir, ignore_errors=True)
    return _aggregate(episodes, slot.current.engine.backend, slot.current.name)


def _transition_events(recorder: Any) -> Callable[[Any], None]:
    """State transitions as episode events: takeover start/end (training drops the steps
    around them), e-stops, faults."""

    def on_transition(t: Any) -> None:
        if t.target is ControllerState.TAKEOVER:
            recorder.event("takeover_start", t.reason, t.t_s)
        elif t.source is ControllerState.TAKEOVER:
            recorder.event("takeover_end", t.reason, t.t_s)
        if t.target is ControllerState.ESTOP:
            recorder.event("estop", t.reason, t.t_s)
        elif t.target is ControllerState.FAULT:
            recorder.event("fault", t.reason, t.t_s)

    return on_transition


class _FramePump:
    """Hands each new camera frame to the recorder (a thread polling ``latest()``; the
    control thread never sees images)."""

    def __init__(self, cameras: dict[str, Any], recorder: Any, rate_hz: float) -> None:
        self.cameras, self.recorder = cameras, recorder
        self.period_s = 0.5 / rate_hz  # twice the camera rate: no frame missed
        self._seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="frame-pump", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            for name, cam in self.cameras.items():
                got = cam.latest()
                if got is not None and got[1] != self._seen.get(name):
                    self._seen[name] = got[1]
                    self.recorder.on_image(name, got[0], got[1])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


def _calibrate_emulator(bus: Any, config: RobotConfig, path: Path,
                        say: Callable[[str], None]) -> None:
    """A fresh emulator holds no calibration, as firmware without flash would after a restart:
    write the robot's calibration file to it (creating the file from the emulator's factory
    values on first use), exactly as ``ramp-edge calibrate apply`` does on a real robot."""
    if not path.exists():
        joints = joints_from_message(bus.read_calibration(), config.joint_names,
                                     [j.unit for j in config.joints])
        info = bus.info
        save_calibration(CalibrationFile.create(
            config.robot_id, joints, technician="factory calibration of the emulated robot",
            device={"device_id": info.device_id, "firmware_version": info.firmware_version}),
            path)
        say(f"wrote the emulated robot's factory calibration to {path}")
    apply_calibration(bus, path, config.robot_id, config.joint_names)


def _open_teleop(request: RunRequest, simulated: bool, sim_url: str, task: str,
                 config_url: str = "") -> Any:
    """The teleop device the request names (else the robot config's ``[teleop] url``): a URL,
    or in simulation "expert" (demonstrates the task) or "corrector" (takes over when the
    policy stalls or heads for failure)."""
    if request.teleop is None and config_url:
        request = dataclasses.replace(request, teleop=config_url)
    if request.teleop is None:
        if not request.policy:
            raise ControllerError("--no-policy (demonstration) needs a --teleop device")
        return None
    from ramp_edge.teleop import open_teleop
    from ramp_edge.teleop.scripted import scripted_url

    url = request.teleop
    if url in ("expert", "corrector"):
        if not simulated:
            raise ControllerError(f"--teleop {url} is the simulated person: it needs the "
                                  "emulated robot")
        url = scripted_url(url, sim_url, task=task, seed=request.seed)
    return open_teleop(url)


def _episode(request: RunRequest, config: RobotConfig, bus: Any, loaded: LoadedEngine,
             cameras: dict[str, Any], sim_client: Any, teleop: Any, notifier: Notifier,
             controller_ref: list[Controller | None], index: int,
             status_line: Callable[[dict[str, Any]], str], say: Callable[[str], None],
             observation_cls: type, check_calibration: Callable[[], Any],
             store: EpisodeStore | None, calibration_file: Path) -> dict[str, Any]:
    instruction = request.instruction
    task_name = request.task or ""
    if sim_client is not None:
        check_calibration()  # torque goes on next: the same check as before arming
        bus.set_mode(Mode.HOLD)  # hold the arm; the scene is reset under it
        info = sim_client.reset(request.seed + index)
        instruction = instruction or info.get("instruction")
        task_name = info.get("task") or task_name or DEFAULT_TASK
        if teleop is not None:  # after the scene: a scripted person checks it sees the same one
            teleop.reset_episode(seed=request.seed + index, task=info.get("task"))
    instruction = instruction or "do the task"
    bundle = loaded.bundle
    tokens = bundle.tokenizer().encode(instruction)

    def make_observation(state: StateSnapshot, images: dict[str, np.ndarray]) -> Any:
        return observation_cls(images=images,
                               joint_position=state.position.astype(np.float32),
                               joint_velocity=state.velocity.astype(np.float32),
                               tokens=tokens)

    recorder = None
    if store is not None:
        recorder = store.start_episode(EpisodeMeta(
            instruction=instruction, operator=request.operator, robot_id=config.robot_id,
            calibration_hash=load_calibration(calibration_file, config.robot_id).sha256,
            bundle_hash=bundle.sha256, task=task_name,
            joint_names=tuple(j.name for j in config.joints)), joint_count=len(config.joints))
    controller = Controller(config, bus, loaded.engine, make_observation,
                            cameras={n: cameras[n] for n in bundle.camera_names},
                            notifier=notifier, mode=request.mode, engine_name=loaded.name,
                            teleop=teleop, policy=request.policy,
                            before_torque=check_calibration,
                            on_step=recorder.on_step if recorder else None,
                            on_event=recorder.event if recorder else None)
    if recorder is not None:
        controller.states.listeners.append(_transition_events(recorder))
    controller_ref[0] = controller
    say(f"episode {index + 1}/{request.episodes}: {instruction!r}"
        + (f" (recording {recorder.episode_id})" if recorder else ""))
    watcher = _SimWatcher(sim_client, controller) if sim_client is not None else None
    pump = _FramePump(cameras, recorder, config.rates.camera_hz) if recorder else None
    summary: dict[str, Any] = {}
    try:
        summary = controller.run_episode(request.duration_s,
                                         status_cb=lambda s: say(status_line(s)))
    finally:
        if watcher is not None:
            watcher.close()
        if pump is not None:
            pump.close()
        controller_ref[0] = None
        if recorder is not None and not summary:
            recorder.finish("aborted")  # the episode broke off: keep what was committed
    outcome = watcher.outcome if watcher else None
    transitions = summary["transitions"]
    last_reason = transitions[-1][2] if transitions else ""
    if summary["final_state"] in ("ESTOP", "FAULT"):
        outcome = summary["final_state"].lower()
    elif outcome is None:
        outcome = "timeout" if last_reason == "episode time is up" else "stopped"
    summary.update(episode=index, instruction=instruction, outcome=outcome,
                   task_progress=watcher.progress if watcher else None,
                   interrupted="received" in last_reason)
    if recorder is not None:
        label = ("success" if outcome == "success" else
                 "failure" if outcome.startswith("failure") or (
                     outcome == "timeout" and sim_client is not None) else "aborted")
        entry = recorder.finish(label)
        stats = recorder.stats
        summary["recording"] = {
            "episode_id": entry.id, "label": label, "sha256": entry.sha256,
            "steps_written": stats.written, "steps_dropped": stats.dropped,
            "images_written": stats.images_written, "stopped": stats.stop_reason}
        if stats.stop_reason:
            say(f"recording stopped early: {stats.stop_reason}")
    say(f"episode {index + 1}: {outcome}; {summary['steps']} steps at "
        f"{summary['loop_rate_hz']:.1f} Hz, lateness p99 {summary['lateness_p99_ms']:.2f} ms, "
        f"{summary['chunks']} chunks")
    return summary


def _aggregate(episodes: list[dict[str, Any]], backend: str, bundle: str) -> dict[str, Any]:
    def pick(key: str, fn: Callable[[list[float]], float]) -> float | None:
        values = [e[key] for e in episodes if e.get(key) is not None]
        return fn(values) if values else None

    return {
        "episodes": len(episodes),
        "outcomes": [e["outcome"] for e in episodes],
        "loop_rate_hz": pick("loop_rate_hz", lambda v: float(np.mean(v))),
        "lateness_p99_ms": pick("lateness_p99_ms", max),
        "lateness_max_ms": pick("lateness_max_ms", max),
        "overruns": sum(e["overruns"] for e in episodes),
        "chunk_latency_p50_ms": pick("chunk_latency_p50_ms", lambda v: float(np.median(v))),
        "chunk_latency_p99_ms": pick("chunk_latency_p99_ms", max),
        "state_to_setpoint_p99_ms": pick("state_to_setpoint_p99_ms", max),
        "compute_p99_ms": pick("compute_p99_ms", max),
        "safety_clamps": sum(e["safety_clamps"] for e in episodes),
        "missed_replies": sum(e["missed_replies"] for e in episodes),
        "largest_command_step": pick("largest_command_step", max),
        "backend": backend,
        "bundle": bundle,
        "aborted": any(e["outcome"] in ("estop", "fault") for e in episodes),
        "per_episode": episodes,
    }


def _short_tmp() -> str:
    """A short directory for ipc socket paths (a Unix socket path has at most 107 bytes)."""
    return "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
