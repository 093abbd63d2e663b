"""A bundle evaluated on the simulated tasks on a simulated clock, faster than real time.

``ramp-edge run`` on the emulated robot runs at wall-clock rate: an evaluation of 50 episodes
per point, per method, per iteration takes hours on a small machine. This evaluator runs the
same decision path with the clock taken from the simulation instead of the wall:

* the bundle's engine (:func:`ramp_edge.engine_slot.open_bundle_engine`: the same selection,
  load checks and probe as the controller), fed the observation the controller builds: newest
  camera frames, measured joint position and velocity, the instruction's tokens;
* cameras sampled at the robot config's ``camera_hz`` (a snapshot of the scene per frame, posed
  in a second scene and rendered when an observation needs it, as the emulator's renderer does),
  so a frame is up to one camera period old, as on the emulated robot;
* the controller's :class:`~ramp_edge.chunks.ActionScheduler` (replanning, time alignment,
  crossfades, staleness) and :class:`~ramp_edge.safety.SafetyFilter` (limits, rates, the startup
  ramp), stepped at ``control_hz``; a chunk is pushed when its inference would have finished
  (the measured wall time of the call, in simulated seconds);
* the emulator's servo arithmetic (:class:`firmware_bridge.sim.rollout.ServoEmulation`: each
  setpoint tracked over one control period in 1 ms ticks, rate-limited per joint);
* the task's detectors checked every control step: success or failure ends the episode, the
  duration (default: the task's step budget plus one second, as ``benchmarks/ramp_loop.py``
  runs) ends it as a timeout.

What it leaves out, and the emulated robot has: threads and their jitter, the serial link and
its lost replies, the inference thread's GIL contention. Figures from it are labelled as such;
``benchmarks/ramp_loop.py`` checks it against ``ramp-edge run`` on the same seeds.
The emulated robot's factory calibration is the identity (joint = raw), so plant coordinates
are joint coordinates here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ramp_edge.chunks import ActionScheduler, Staleness
from ramp_edge.config import RobotConfig
from ramp_edge.safety import ChunkRejectedError, JointLimits, SafetyFilter, check_chunk

__all__ = ["SimCameras", "SimEpisode", "evaluate_bundle", "open_sim_arm", "summarise"]


@dataclass(frozen=True)
class SimEpisode:
    """One evaluated episode. ``outcome``: ``success``, ``failure: <why>`` or ``timeout``;
    ``progress``: share of the task's sub-goals holding at the end, ``best_progress`` the most
    reached at any step; ``grasped``: how many different objects the gripper held at some
    point (a finer sign of learning than sub-goals, which need an object placed and released);
    ``steps``: control steps; ``sim_s``/``wall_s``: simulated and wall
    seconds; ``chunk_ms_p50``: median inference time per chunk."""

    seed: int
    outcome: str
    progress: float
    best_progress: float
    grasped: int
    steps: int
    chunks: int
    chunks_rejected: int
    safety_clamps: int
    sim_s: float
    wall_s: float
    chunk_ms_p50: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SimCameras:
    """Frames at ``rate_hz`` of simulated time: a snapshot of the scene per frame time, posed
    in a mirror scene and rendered only when an observation asks for the newest frame."""

    def __init__(self, plant: Any, size: tuple[int, int], rate_hz: float) -> None:
        from firmware_bridge.sim.plant import MujocoPlant
        from firmware_bridge.sim.render import SimRenderer

        self.plant, self.period_s = plant, 1.0 / rate_hz
        self.mirror = MujocoPlant(None)
        self.renderer = SimRenderer(self.mirror, size[1], size[0])
        self._snapshot: tuple | None = None
        self._next_t = 0.0
        self._rendered: dict[str, np.ndarray] | None = None

    def reset(self) -> None:
        self._snapshot, self._next_t, self._rendered = None, 0.0, None

    def tick(self, t_s: float) -> bool:
        """Take the scene's snapshot when a frame is due at ``t_s``; True when one was."""
        if t_s + 1e-9 < self._next_t:
            return False
        self._snapshot = self.plant.pose_snapshot()
        self._rendered = None
        self._next_t += self.period_s
        while self._next_t <= t_s:
            self._next_t += self.period_s
        return True

    def latest(self) -> dict[str, np.ndarray]:
        if self._rendered is None:
            assert self._snapshot is not None, "tick() first"
            self.mirror.pose_from(self._snapshot)
            self._rendered = self.renderer.render_all()
        return self._rendered

    def close(self) -> None:
        self.renderer.close()


def open_sim_arm(task: str, cfg: RobotConfig) -> tuple[Any, JointLimits]:
    """The task's MuJoCo plant and the joint limits the controller arms with on the emulated
    robot: the config's limits within the motor controller's (the emulator's defaults) and the
    calibration's (the same, for the emulated robot). Raises UnknownTaskError, and ValueError
    when the simulated arm's joints are not the config's."""
    from firmware_bridge.emulator.device import DeviceConfig
    from firmware_bridge.sim.plant import MujocoPlant

    plant = MujocoPlant(task)
    if tuple(plant.joint_names) != cfg.joint_names:
        raise ValueError(f"the simulated arm has joints {list(plant.joint_names)}, the robot "
                         f"config {cfg.source} names {list(cfg.joint_names)}")
    device = DeviceConfig.default(len(cfg.joints))
    limits = JointLimits.from_config(cfg).intersect(np.asarray(device.position_min, np.float64),
                                                    np.asarray(device.position_max, np.float64))
    return plant, limits


def evaluate_bundle(
    bundle_path: str | Path,
    *,
    task: str,
    seeds: Sequence[int],
    mode: str = "standard",
    config: RobotConfig | None = None,
    backend: str | None = None,
    threads: int | None = 1,
    duration_s: float | None = None,
    on_episode: Callable[[SimEpisode], None] | None = None,
    on_step: Callable[[int, float, np.ndarray, str], None] | None = None,
    on_state: Callable[[int, Any, Any], None] | None = None,
) -> list[SimEpisode]:
    """Run the bundle at ``bundle_path`` on ``task`` once per seed in ``seeds`` (the seed is
    the scene's, as ``ramp-edge run --seed`` sets it). ``on_step(seed, t_s, command, source)``
    sees every command sent (source: ``policy``, ``ramp`` or ``hold``, as the controller labels
    its steps). ``on_state(seed, episode, state)`` sees the scene's
    :class:`~firmware_bridge.sim.state.SimState` at every step, before it is judged and acted
    on, with the task :class:`~firmware_bridge.sim.tasks.Episode` (instruction, sub-goals): what
    an analysis of where the arm went needs. Raises what loading the bundle raises
    (BundleError, BundleMismatchError, EngineUnavailableError) and UnknownTaskError."""
    from firmware_bridge.sim.rollout import ServoEmulation
    from ramp_edge.config import load_config
    from ramp_edge.engine_slot import open_bundle_engine
    from ramp_edge.engines.base import Observation

    cfg = config or load_config(None)
    loaded = open_bundle_engine(Path(bundle_path), cfg, backend, threads)
    engine, bundle = loaded.engine, loaded.bundle
    plant, limits = open_sim_arm(task, cfg)
    n, horizon = len(cfg.joints), cfg.rates.chunk_size
    h, w = bundle.manifest.image_shape[:2]
    cameras = SimCameras(plant, (h, w), cfg.rates.camera_hz)
    tokenizer = bundle.tokenizer()
    period = 1.0 / cfg.rates.control_hz
    out: list[SimEpisode] = []
    try:
        for seed in seeds:
            ep = _episode(plant, cameras, engine, bundle, tokenizer, Observation,
                          ServoEmulation, cfg, limits, period, n, horizon, int(seed), mode,
                          duration_s, on_step, on_state)
            out.append(ep)
            if on_episode is not None:
                on_episode(ep)
    finally:
        cameras.close()
        engine.close()
    return out


def _episode(plant: Any, cameras: SimCameras, engine: Any, bundle: Any, tokenizer: Any,
             observation_cls: type, servo_cls: type, cfg: RobotConfig, limits: JointLimits,
             period: float, n: int, horizon: int, seed: int, mode: str,
             duration_s: float | None,
             on_step: Callable[[int, float, np.ndarray, str], None] | None,
             on_state: Callable[[int, Any, Any], None] | None) -> SimEpisode:
    wall0 = time.perf_counter()
    episode = plant.reset(seed)
    servo = servo_cls(plant)
    cameras.reset()
    tokens = tokenizer.encode(episode.instruction)
    duration = duration_s if duration_s is not None else (
        episode.step_budget / episode.control_hz + 1.0)
    scheduler = ActionScheduler.from_config(cfg)
    safety = SafetyFilter(limits, period, cfg.safety.startup_ramp_s)
    safety.reset(plant.position.astype(np.float64))
    desired, command = np.zeros(n), np.zeros(n)
    running = False
    pending: tuple[float, int, np.ndarray, float] | None = None  # ready at, id, actions, t0
    seq = rejected = clamps = steps = 0
    latencies: list[float] = []
    best = 0.0
    held: set[int] = set()
    outcome = "timeout"
    t = 0.0
    while t < duration - 1e-9:
        state = plant.sim_state()
        if on_state is not None:
            on_state(seed, episode, state)
        progress = episode.progress(state)
        best = max(best, progress)
        if state.held >= 0:
            held.add(int(state.held))
        if episode.success(state):
            outcome = "success"
            break
        failure = episode.failure(state)
        if failure is not None:
            outcome = f"failure: {failure}"
            break
        cameras.tick(t)
        if pending is not None and t + 1e-9 >= pending[0]:
            scheduler.push(pending[1], pending[2], pending[3])
            pending = None
        if pending is None and scheduler.needs_chunk(t):
            obs = observation_cls(images=cameras.latest(),
                                  joint_position=plant.position.astype(np.float32),
                                  joint_velocity=plant.velocity.astype(np.float32),
                                  tokens=tokens)
            t0 = time.perf_counter()
            prediction = engine.predict(obs, mode)
            latency = time.perf_counter() - t0
            latencies.append(latency * 1000)
            try:
                actions = check_chunk(prediction.actions, n, horizon)
            except ChunkRejectedError:
                rejected += 1
            else:
                seq += 1
                pending = (t + latency, seq, actions, t)
        if not running and scheduler.staleness(t) is Staleness.FRESH:
            running = True  # the first chunk: the policy drives
        source = "hold"
        if running:
            staleness = scheduler.staleness(t)
            if staleness is Staleness.FRESH and scheduler.next_command(t, out=desired) is not None:
                safety.filter(desired, out=command)
                source = "ramp" if safety.ramping else "policy"
            elif staleness is Staleness.STOP:
                outcome = "stopped: no usable chunk"
                break
            else:
                safety.hold(out=command)
        else:
            safety.hold(out=command)
        if safety.flags:
            clamps += 1
        if on_step is not None:
            on_step(seed, t, command, source)
        servo.track(command, period)
        steps += 1
        t = steps * period
    final = episode.progress(plant.sim_state())
    return SimEpisode(
        seed=seed, outcome=outcome, progress=float(final), best_progress=float(max(best, final)),
        grasped=len(held),
        steps=steps, chunks=seq, chunks_rejected=rejected, safety_clamps=clamps,
        sim_s=round(steps * period, 3), wall_s=round(time.perf_counter() - wall0, 3),
        chunk_ms_p50=float(np.median(latencies)) if latencies else 0.0)


def summarise(episodes: Sequence[SimEpisode]) -> dict[str, Any]:
    """Success count and rate, mean final progress, simulated and wall seconds."""
    k = sum(1 for e in episodes if e.outcome == "success")
    return {"episodes": len(episodes), "success": k,
            "success_rate": k / len(episodes) if episodes else 0.0,
            "mean_progress": float(np.mean([e.progress for e in episodes])) if episodes else 0.0,
            "grasped_any": sum(1 for e in episodes if e.grasped),
            "sim_s": round(sum(e.sim_s for e in episodes), 1),
            "wall_s": round(sum(e.wall_s for e in episodes), 1)}
