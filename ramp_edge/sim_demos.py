"""Scripted-expert demonstrations recorded on a simulated clock, faster than real time.

``ramp-edge run --no-policy --teleop expert`` records a demonstration through the controller at
wall-clock rate: tens of demonstrations take most of an hour. This recorder runs the same
demonstration path with the clock taken from the simulation (as :mod:`ramp_edge.sim_eval` does
for a bundle) and writes into the robot's episode store what the controller's recorder would:

* the scripted expert (:class:`firmware_bridge.sim.expert.ScriptedExpert`) reads the scene at the
  task's control rate (50 Hz), as the ``scripted+expert`` teleop device does; the control loop
  at the robot config's ``control_hz`` takes its newest target;
* the controller's takeover path: a ``takeover_start`` event, the hand-over blend over
  ``[teleop] handover_s``, the :class:`~ramp_edge.safety.SafetyFilter` (limits, rates, the startup
  ramp), steps labelled ``human`` with the filter's intervention flags;
* the emulator's servo arithmetic (:class:`firmware_bridge.sim.rollout.ServoEmulation`) and
  camera frames at ``camera_hz`` (:class:`ramp_edge.sim_eval.SimCameras`);
* the episode sealed ``success`` when the task's detector says so, else ``failure`` at the
  duration's end or at a task failure (as a simulated run labels them).

Times in the file are synthetic ``time.monotonic`` seconds (episode start + simulated time).
What it leaves out: threads, the serial link and its lost replies, the teleop link's sample age.
Data recorded this way is labelled in the episode's operator field.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ramp_edge.config import RobotConfig
from ramp_edge.controller import StateSnapshot, StepRecord, blend_handover
from ramp_edge.episodes import EpisodeMeta, EpisodeStore
from ramp_edge.episodes.errors import EpisodeStoreError
from ramp_edge.episodes.recorder import RecorderConfig
from ramp_edge.safety import JointLimits, SafetyFilter

__all__ = ["OPERATOR", "DemoEpisode", "RecordingLostDataError", "record_demonstrations"]

OPERATOR = "scripted expert (simulated clock)"


@dataclass(frozen=True)
class DemoEpisode:
    """One recorded demonstration: its seed, ``outcome`` (``success``, ``failure: <why>`` or
    ``timeout``), the label it was sealed with, the episode id, steps and images written,
    simulated and wall seconds."""

    seed: int
    outcome: str
    label: str
    episode_id: str
    steps: int
    images: int
    sim_s: float
    wall_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class RecordingLostDataError(EpisodeStoreError):
    """The recorder dropped steps or frames: the episode was sealed ``aborted``."""


def record_demonstrations(
    home: str | Path,
    *,
    task: str,
    seeds: Sequence[int],
    config: RobotConfig | None = None,
    duration_s: float | None = None,
    noise_rad: float = 0.0,
    on_episode: Callable[[DemoEpisode], None] | None = None,
) -> list[DemoEpisode]:
    """Record one scripted demonstration of ``task`` per seed into the episode store under
    ``home`` (the robot's home, as ``ramp-edge run --record`` writes). Raises UnknownTaskError,
    SimUnavailableError (no MuJoCo) and :class:`RecordingLostDataError`."""
    from firmware_bridge.sim.expert import ExpertConfig, ScriptedExpert
    from firmware_bridge.sim.rollout import ServoEmulation
    from ramp_edge.config import load_config
    from ramp_edge.sim_eval import SimCameras, open_sim_arm

    cfg = config or load_config(None)
    plant, limits = open_sim_arm(task, cfg)
    sizes = {(c.height, c.width) for c in cfg.cameras}
    if len(sizes) != 1:
        raise ValueError(f"the robot config's cameras differ in size ({sorted(sizes)}); the "
                         "simulated cameras render one size")
    cameras = SimCameras(plant, sizes.pop(), cfg.rates.camera_hz)
    names = [c.name for c in cfg.cameras]
    # A frame burst of a whole episode fits the queues: nothing is dropped for speed.
    store = EpisodeStore(home, config=RecorderConfig(step_queue_len=1 << 20,
                                                     image_queue_len=1 << 16))
    out: list[DemoEpisode] = []
    try:
        for seed in seeds:
            episode = plant.reset(int(seed))
            expert = ScriptedExpert(episode, ExpertConfig(action_noise_rad=noise_rad,
                                                          control_hz=episode.control_hz),
                                    model=plant.model)
            demo = _record(store, plant, ServoEmulation(plant), cameras, names, expert, episode,
                           cfg, limits, task, int(seed), duration_s)
            out.append(demo)
            if on_episode is not None:
                on_episode(demo)
    finally:
        cameras.close()
        store.close()
    return out


def _record(store: EpisodeStore, plant: Any, servo: Any, cameras: Any, names: list[str],
            expert: Any, episode: Any, cfg: RobotConfig, limits: JointLimits, task: str,
            seed: int, duration_s: float | None) -> DemoEpisode:
    wall0 = time.perf_counter()
    n = len(cfg.joints)
    period = 1.0 / cfg.rates.control_hz
    expert_period = 1.0 / episode.control_hz
    duration = duration_s if duration_s is not None else (
        episode.step_budget / episode.control_hz + 1.0)
    rec = store.start_episode(EpisodeMeta(
        instruction=episode.instruction, operator=OPERATOR, robot_id=cfg.robot_id, task=task,
        joint_names=cfg.joint_names), joint_count=n)
    t0 = time.monotonic()  # the file's clock: episode start + simulated seconds
    cameras.reset()
    safety = SafetyFilter(limits, period, cfg.safety.startup_ramp_s)
    safety.reset(plant.position.astype(np.float64))
    blend_from = safety.command.copy()
    desired, command = np.zeros(n), np.zeros(n)
    target: np.ndarray | None = None
    next_expert = 0.0
    outcome, steps, images = "timeout", 0, 0
    rec.event("takeover_start", "takeover by scripted-expert (simulated clock)", t0)
    try:
        t = 0.0
        while t < duration - 1e-9:
            state = plant.sim_state()
            if episode.success(state):
                outcome = "success"
                break
            failure = episode.failure(state)
            if failure is not None:
                outcome = f"failure: {failure}"
                break
            if cameras.tick(t):
                frames = cameras.latest()
                for name in names:
                    frame = frames[name]
                    frame.flags.writeable = False  # kept by reference: rendered fresh each time
                    rec.on_image(name, frame, t0 + t)
                images += len(names)
            if t + 1e-9 >= next_expert:  # the device reads the scene at the task's rate
                target = expert.act(state)
                next_expert += expert_period
            snapshot = StateSnapshot(t0 + t, plant.position.astype(np.float32),
                                     plant.velocity.astype(np.float32))
            desired[:] = target
            blend_handover(desired, blend_from, t, cfg.teleop.handover_s)
            safety.filter(desired, out=command)
            rec.on_step(StepRecord(t0 + t, t0 + t, command.astype(np.float32), snapshot,
                                   "human", None, None, int(safety.flags)))
            servo.track(command, period)
            steps += 1
            t = steps * period
    except BaseException:
        rec.finish("aborted")  # keep what was recorded; the caller sees the error
        raise
    label = "success" if outcome == "success" else "failure"
    rec.event("takeover_end", f"demonstration over: {outcome}", t0 + steps * period)
    rec.close()
    stats = rec.stats
    if stats.dropped or stats.images_dropped:
        rec.finish("aborted")
        raise RecordingLostDataError(
            f"episode {rec.episode_id}: the recorder dropped {stats.dropped} step(s) and "
            f"{stats.images_dropped} frame(s); sealed aborted")
    entry = rec.finish(label)
    return DemoEpisode(seed=seed, outcome=outcome, label=label, episode_id=entry.id,
                       steps=steps, images=images, sim_s=round(steps * period, 3),
                       wall_s=round(time.perf_counter() - wall0, 3))
