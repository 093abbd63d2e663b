"""The controller: one process, a control thread, an inference thread (DESIGN.md, "Data flow").

The control thread (the one calling :meth:`Controller.run_episode`) paces itself to absolute
deadlines and, every step, computes the command (policy chunk, hold, or controlled stop) through
the safety filter, exchanges it with the motor controller for the measured state, and publishes
that state for inference. It never waits on inference or disk: chunks arrive through the
:class:`~ramp_edge.chunks.ActionScheduler`, observations leave as one reference swap.

The inference thread waits until the scheduler wants a chunk, builds an observation from the
newest state and camera frames, runs the engine, checks the chunk (safety layer 1) and pushes it.

Other threads (control socket, signal handlers) only set requests the control thread acts on at
its next step: e-stop, stop, clear.
"""

from __future__ import annotations

import gc
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from firmware_bridge.bus import MotorBus
from firmware_bridge.errors import DeviceRejectedError, DeviceTimeoutError, LinkError
from firmware_bridge.messages import Mode
from firmware_bridge.realtime import realtime_thread
from ramp_edge.cameras.base import Camera
from ramp_edge.chunks import ActionScheduler, Staleness
from ramp_edge.config import RobotConfig
from ramp_edge.errors import EdgeError
from ramp_edge.pacing import LatenessStats, Pacer
from ramp_edge.safety import ChunkRejectedError, JointLimits, SafetyFilter, check_chunk
from ramp_edge.sd_notify import Notifier
from ramp_edge.states import ControllerState, ControllerStateMachine
from ramp_edge.states import ControllerState as S

log = logging.getLogger("ramp_edge.controller")


def blend_handover(desired: np.ndarray, start: np.ndarray, elapsed_s: float,
                   handover_s: float) -> bool:
    """A hand-over from one control source to another: move ``desired`` (in place) from
    ``start`` to where it is along a smoothstep over ``handover_s``, ``elapsed_s`` into it.
    Returns False (``desired`` untouched) once the hand-over is over or when there is none."""
    if handover_s <= 0 or elapsed_s >= handover_s:
        return False
    w = 0.5 - 0.5 * math.cos(math.pi * max(elapsed_s / handover_s, 0.0))
    desired += (1.0 - w) * (start - desired)
    return True


class ControllerError(EdgeError, RuntimeError):
    """The controller cannot start or had to stop (the message says why and what to do)."""


class PolicyEngine(Protocol):
    backend: str

    def predict(self, obs: Any, mode: str = "standard") -> Any:
        """An object with ``actions`` (H x n, absolute joint targets) and ``value``."""


@dataclass(frozen=True)
class StateSnapshot:
    """The newest measured state, published by the control thread (one reference swap)."""

    t_s: float
    position: np.ndarray
    velocity: np.ndarray


@dataclass
class StepRecord:
    """What one control step did; handed to ``on_step`` (the recorder) when set."""

    t_s: float  # the step's deadline (time.monotonic s)
    t_sent_s: float  # when its setpoint actually left (time.monotonic s)
    command: np.ndarray  # the command actually sent, after the safety filter
    state: StateSnapshot | None  # the state the device answered with (None: no reply)
    source: str  # "policy" | "ramp" | "human" | "hold" | "stop"
    chunk_id: int | None
    value: float | None
    interventions: int  # safety.Intervention flags of this step


@dataclass
class RunStats:
    steps: int = 0
    missed_replies: int = 0
    safety_clamps: int = 0
    chunks: int = 0
    chunks_rejected: int = 0
    chunk_latency_ms: list[float] = field(default_factory=list)
    compute_ms: LatenessStats = field(default_factory=LatenessStats)
    state_to_setpoint_ms: LatenessStats = field(default_factory=LatenessStats)
    largest_step: float = 0.0
    source_steps: dict[str, int] = field(default_factory=dict)
    teleop_rejected: int = 0  # engaged teleop samples ignored: target of bad shape or not finite


ObservationBuilder = Callable[[StateSnapshot, Mapping[str, np.ndarray]], Any]


class Controller:
    """Drives one robot. ``make_observation(state, images)`` builds the engine's input."""

    def __init__(
        self,
        config: RobotConfig,
        bus: MotorBus,
        engine: PolicyEngine,
        make_observation: ObservationBuilder,
        *,
        cameras: Mapping[str, Camera] | None = None,
        notifier: Notifier | None = None,
        mode: str = "standard",
        camera_max_age_s: float = 0.5,
        first_chunk_timeout_s: float = 10.0,
        on_step: Callable[[StepRecord], None] | None = None,
        engine_name: str | None = None,
        teleop: Any = None,
        policy: bool = True,
        before_torque: Callable[[], Any] | None = None,
        handover_s: float | None = None,
        teleop_max_age_s: float | None = None,
        on_event: Callable[[str, dict[str, Any], float], None] | None = None,
    ) -> None:
        self.config = config
        # on_event(kind, detail, t_s): events worth recording that are not state transitions
        # (a bundle swap taking effect); called from the inference thread, must not block.
        self.on_event = on_event
        self.bus = bus
        self.engine = engine
        self.make_observation = make_observation
        self.cameras = dict(cameras or {})
        self.notifier = notifier or Notifier(None)
        self.mode = mode
        self.camera_max_age_s = camera_max_age_s
        self.first_chunk_timeout_s = first_chunk_timeout_s
        self.teleop = teleop  # a ramp_edge.teleop device; engaged samples take over
        self.policy = policy  # False: demonstration (teleop only, no inference)
        # Called before torque goes on; raises to refuse (calibration missing, malformed, for
        # another robot, or not what the motor controller holds); returns the calibration.
        self.before_torque = before_torque
        self.calibration_sha256: str | None = None
        # Both default to the robot config's [teleop] section.
        self.handover_s = config.teleop.handover_s if handover_s is None else handover_s
        self.teleop_max_age_s = (config.teleop.max_sample_age_ms / 1000
                                 if teleop_max_age_s is None else teleop_max_age_s)
        # A person's device (ramp_edge.teleop.human) is fed the follower's measured pose each
        # step and may ask for an e-stop; other devices have neither.
        self._feed_follower = getattr(teleop, "set_follower", None)
        self._teleop_estop = getattr(teleop, "take_estop_request", None)
        self._check_teleop(teleop, config)
        self._checked_sample: Any = None  # the last engaged teleop sample checked, and its verdict
        self._checked_ok = False
        self._teleop_rejected_logged = False
        self._source = "hold"
        self._blend_from: np.ndarray | None = None
        self._blend_t0 = 0.0
        self.on_step = on_step
        self.states = ControllerStateMachine()
        self.period_s = 1.0 / config.rates.control_hz
        self.scheduler = ActionScheduler.from_config(config)
        self.stats = RunStats()
        self.max_missed = max(2, math.ceil(config.safety.watchdog_timeout_ms / 1000
                                           / self.period_s))
        self._latest: StateSnapshot | None = None
        self._estop_reason: str | None = None
        self._stop_reason: str | None = None
        self._clear_requested = False
        self._chunk_seq = 0
        self._value: float | None = None
        self._next_engine: tuple[PolicyEngine, str] | None = None
        self.engine_name = engine_name or getattr(engine, "backend", "?")
        self.swaps: list[dict[str, Any]] = []
        self._infer_stop = threading.Event()
        self._infer_error: str | None = None
        self.pacer: Pacer | None = None
        self.realtime = False  # whether the control thread ran SCHED_FIFO
        self.safety: SafetyFilter | None = None
        self.fault_reason: str | None = None
        self._t_start: float | None = None

    # -- requests from other threads ------------------------------------------------------------
    def request_estop(self, reason: str) -> None:
        self._estop_reason = reason or "e-stop"

    def request_engine(self, engine: PolicyEngine, name: str) -> None:
        """Run ``engine`` (already loaded and verified) from the next chunk on; the chunk in
        flight finishes with the old one and the scheduler blends across, as between any two
        chunks."""
        self._next_engine = (engine, name)

    def request_stop(self, reason: str) -> None:
        if self._stop_reason is None:
            self._stop_reason = reason

    # -- status ------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """A snapshot for the control socket and the live status line (allocates)."""
        lat = self.pacer.stats.summary() if self.pacer else {}
        chunk = self.stats.chunk_latency_ms[-200:]
        return {
            "state": self.states.state.name,
            "steps": self.stats.steps,
            "loop_rate_hz": self._achieved_rate(),
            "lateness_p99_ms": lat.get("p99_ms", 0.0),
            "overruns": lat.get("overruns", 0),
            "source": self._source,
            "chunk_id": self.scheduler.chunk_id,
            "chunk_latency_p50_ms": float(np.percentile(chunk, 50)) if chunk else None,
            "missed_replies": self.stats.missed_replies,
            "safety_clamps": self.stats.safety_clamps,
            "fault": self.fault_reason,
            "backend": getattr(self.engine, "backend", "?"),
            "bundle": self.engine_name,
        }

    def _achieved_rate(self) -> float:
        if not self.pacer or self._t_start is None:
            return 0.0
        elapsed = time.monotonic() - self._t_start
        return self.stats.steps / elapsed if elapsed > 0 else 0.0

    # -- start-up ----------------------------------------------------------------------------------
    def arm(self) -> None:
        """Check the device, torque on where the arm is, reset the safety filter (IDLE->ARMED).
        Raises ControllerError with what to do when the device is not usable."""
        info = self.bus.info
        if info is None:
            raise ControllerError("the motor bus is not connected")
        if tuple(info.joint_names) != self.config.joint_names:
            raise ControllerError(
                f"the motor controller reports joints {list(info.joint_names)}, the robot config "
                f"{self.config.source} names {list(self.config.joint_names)}"
            )
        state = None
        for _ in range(20):  # cyclic reads are not retried by the bus; give it ~100 ms
            state = self.bus.read_state()
            if state is not None:
                break
        if state is None:
            raise ControllerError(f"no state from the motor controller at {self.bus.url}")
        if state.mode in (Mode.FAULT, Mode.ESTOP):
            raise ControllerError(
                f"the motor controller is latched in {state.mode.name} ({state.fault.name}); "
                "check the robot, then clear it with ramp-edge run --clear-latched"
            )
        limits = JointLimits.from_config(self.config).intersect(
            np.asarray(info.position_min, np.float64), np.asarray(info.position_max, np.float64))
        if self.before_torque is not None:
            calibration = self.before_torque()
            self.calibration_sha256 = calibration.sha256
            measured = calibration.vectors()  # the range the technician measured
            limits = limits.intersect(measured["position_min"], measured["position_max"])
        self.safety = SafetyFilter(limits, self.period_s, self.config.safety.startup_ramp_s)
        position = state.position.astype(np.float64)
        self.safety.reset(position)
        self._latest = StateSnapshot(time.monotonic(), position,
                                     state.velocity.astype(np.float64))
        if self._feed_follower is not None:
            self._feed_follower(position)
        self.bus.set_mode(Mode.HOLD)  # torque on where the arm is; setpoints from run_episode
        self.states.to(S.ARMED, "torque on at the measured pose")

    # -- the episode ------------------------------------------------------------------------------
    def run_episode(self, duration_s: float, status_every_s: float = 1.0,
                    status_cb: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Arm, run the policy for ``duration_s`` (or until stopped), stop in a controlled way,
        hold. Returns the summary. Runs on the calling thread (the control thread)."""
        if self.states.state is S.IDLE:
            self.arm()
        assert self.safety is not None
        gc.collect()
        gc.freeze()  # start-up garbage stays put: fewer, shorter collections on the hot path
        old_switch = sys.getswitchinterval()
        sys.setswitchinterval(0.0005)  # the control thread gets the GIL back sooner
        inference = threading.Thread(target=self._inference_loop, name="inference", daemon=True)
        self.pacer = Pacer(self.config.rates.control_hz)
        self._t_start = time.monotonic()
        if self.policy:
            inference.start()  # ARMED: holding until the first chunk arrives
        self.notifier.ready(f"running, {self.config.rates.control_hz:g} Hz")
        end = self._t_start + duration_s
        next_status = self._t_start + status_every_s
        try:
            # After the inference thread started (it must not inherit SCHED_FIFO).
            with realtime_thread(self.config.rates.realtime_priority) as not_rt:
                self.realtime = not_rt is None
                # Last thing before the first setpoint: the device's watchdog counts from here.
                self.bus.set_mode(Mode.POSITION)
                self._loop(end, next_status, status_every_s, status_cb)
        finally:
            self._infer_stop.set()
            if inference.is_alive():
                inference.join(timeout=5.0)
            sys.setswitchinterval(old_switch)
            gc.unfreeze()
            self._leave_device_safe()
        return self.summary()

    def _loop(self, end: float, next_status: float, every: float,
              status_cb: Callable[[dict[str, Any]], None] | None) -> None:
        assert self.safety is not None and self.pacer is not None
        safety, scheduler, bus = self.safety, self.scheduler, self.bus
        reach_us = int(self.period_s * 1e6)
        desired = np.zeros(len(self.config.joints))
        command = np.zeros(len(self.config.joints))
        previous = safety.command
        consecutive_missed = 0
        last_state_at: float | None = None
        overruns_seen, next_warning = 0, 0.0
        while True:
            t = self.pacer.wait()
            if self.pacer.stats.overruns != overruns_seen and t >= next_warning:
                overruns_seen = self.pacer.stats.overruns
                next_warning = t + 1.0  # at most one warning a second
                log.warning("control loop fell behind: %d overruns so far, worst lateness "
                            "%.1f ms (period %.1f ms)", overruns_seen,
                            self.pacer.stats.max_ms, self.period_s * 1000)
            t_compute = time.perf_counter()
            self._handle_requests(t, end)
            state_now = self.states.state
            source = self._source = self._command(t, state_now, desired, command)
            if safety.flags:
                self.stats.safety_clamps += 1
            step = float(np.max(np.abs(command - previous)))
            if step > self.stats.largest_step:
                self.stats.largest_step = step
            previous[:] = command
            self.stats.compute_ms.add((time.perf_counter() - t_compute) * 1000)
            t_sent = time.monotonic()
            if last_state_at is not None:
                self.stats.state_to_setpoint_ms.add((t_sent - last_state_at) * 1000)
            reply = bus.exchange(command, reach_us)
            self.stats.steps += 1
            self.stats.source_steps[source] = self.stats.source_steps.get(source, 0) + 1
            snapshot = None
            if reply is None:
                self.stats.missed_replies += 1
                consecutive_missed += 1
                if consecutive_missed >= self.max_missed and not self.states.latched:
                    self._fault(f"no reply from the motor controller for {consecutive_missed} "
                                f"steps ({bus.last_error or 'timeout'})")
            else:
                consecutive_missed = 0
                last_state_at = time.monotonic()
                snapshot = StateSnapshot(last_state_at, reply.position.astype(np.float64),
                                         reply.velocity.astype(np.float64))
                self._latest = snapshot
                if self._feed_follower is not None:
                    self._feed_follower(snapshot.position)
                if reply.mode in (Mode.FAULT, Mode.ESTOP) and not self.states.latched:
                    if reply.mode is Mode.ESTOP:
                        self.states.to(S.ESTOP, "the motor controller reports an e-stop")
                    else:
                        self._fault(f"the motor controller reports {reply.fault.name}")
                elif reply.mode is not Mode.POSITION and not self.states.latched \
                        and self.states.state is not S.IDLE:
                    # e.g. its watchdog held the arm: our setpoints are being ignored
                    self._fault(f"the motor controller left POSITION mode ({reply.mode.name}) "
                                "and ignores setpoints")
            if self.on_step is not None:
                self.on_step(StepRecord(t, t_sent, command.copy(), snapshot, source,
                                        scheduler.chunk_id, self._value, int(safety.flags)))
            if consecutive_missed == 0 and not self.states.latched:
                self.notifier.watchdog_if_due(t)  # only a healthy loop keeps systemd happy
            if t >= next_status:
                next_status += every
                status = self.status()
                self.notifier.status(f"{status['state']} {status['loop_rate_hz']:.0f} Hz")
                if status_cb:
                    status_cb(status)
            if self.states.state is S.IDLE or self.states.latched:
                return  # a latched state ends the episode; the device holds by itself

    def _command(self, t: float, state_now: ControllerState, desired: np.ndarray,
                 command: np.ndarray) -> str:
        """Compute this step's command into ``command`` (through the safety filter); returns
        the control source: policy, ramp, human, hold or stop. May change state: takeover and
        handback, first chunk, stale chunks -> controlled stop."""
        safety, scheduler = self.safety, self.scheduler
        assert safety is not None
        sample = self.teleop.latest() if self.teleop is not None else None
        engaged = (sample is not None and sample.engaged and sample.target is not None
                   and t - sample.t_s <= self.teleop_max_age_s
                   and self._usable_target(sample, desired.shape))
        if engaged and state_now in (S.ARMED, S.RUNNING) and self._stop_reason is None:
            self.states.to(S.TAKEOVER, f"takeover by {sample.source}: {sample.reason}".rstrip(": "))
            state_now = S.TAKEOVER
            self._start_blend(t)
        elif not engaged and state_now is S.TAKEOVER and self.policy:
            self.states.to(S.RUNNING, "handback to the policy")
            scheduler.clear(t)  # chunks from before the takeover no longer apply
            state_now = S.RUNNING
            self._start_blend(t)
        if state_now is S.TAKEOVER:
            if not engaged:  # demonstration mode between strokes: hold
                safety.hold(out=command)
                return "hold"
            desired[:] = sample.target
            safety.filter(self._blended(t, desired), out=command)
            return "human"
        if state_now is S.RUNNING:
            staleness = scheduler.staleness(t)
            if staleness is Staleness.FRESH and scheduler.next_command(t, out=desired) is not None:
                safety.filter(self._blended(t, desired), out=command)
                return "ramp" if safety.ramping else "policy"
            if staleness is Staleness.STOP:
                self.states.to(S.STOPPING, "no usable chunk: controlled stop")
                safety.controlled_stop(out=command)
                return "stop"
            safety.hold(out=command)
            return "hold"
        if state_now is S.STOPPING:
            safety.controlled_stop(out=command)
            if safety.is_stopped:
                self.states.to(S.IDLE, self._stop_reason or "stopped")
            return "stop"
        safety.hold(out=command)  # ARMED, IDLE, FAULT, ESTOP: hold where we are
        if state_now is S.ARMED and self.policy and self._stop_reason is None:
            if scheduler.staleness(t) is Staleness.FRESH:
                self.states.to(S.RUNNING, "first chunk: the policy drives")
            elif t - self._t_start > self.first_chunk_timeout_s:
                self.request_stop(f"no chunk within {self.first_chunk_timeout_s:g} s of arming "
                                  f"({self._infer_error or self._waiting_for()})")
        return "hold"

    def _usable_target(self, sample: Any, shape: tuple[int, ...]) -> bool:
        """Whether an engaged teleop sample's target has the robot's joints (``shape``) and is
        finite; an unusable one counts as disengaged (``stats.teleop_rejected``, logged once).
        Checked once per sample (samples are immutable)."""
        if sample is self._checked_sample:
            return self._checked_ok
        target = sample.target
        ok = target.shape == shape and bool(np.isfinite(target).all())
        self._checked_sample, self._checked_ok = sample, ok
        if not ok:
            self.stats.teleop_rejected += 1
            if not self._teleop_rejected_logged:
                self._teleop_rejected_logged = True
                log.warning("teleop %s sent a target of shape %s%s for %d joints: ignored (not "
                            "a takeover; logged once, counted in teleop_rejected)",
                            sample.source, target.shape,
                            "" if target.shape != shape else " that is not finite", shape[0])
        return ok

    def _check_teleop(self, teleop: Any, config: RobotConfig) -> None:
        """Refuse a person's device that knows other joints than the robot's; warn when its
        rate lets samples age past ``teleop_max_age_s`` (takeovers would flicker)."""
        check_joints = getattr(teleop, "check_joints", None)
        if check_joints is not None:
            try:
                check_joints(config.joint_names)
            except EdgeError as err:
                raise ControllerError(f"the teleop device cannot lead this robot: {err}") from err
        rate_hz = getattr(teleop, "rate_hz", None)
        if isinstance(rate_hz, (int, float)) and rate_hz > 0 \
                and 2.0 / rate_hz > self.teleop_max_age_s:
            log.warning("teleop device %s reads at %g Hz: its samples reach %.0f ms of age, over "
                        "the %.0f ms a takeover follows ([teleop] max_sample_age_ms); raise its "
                        "rate_hz or that limit", getattr(teleop, "url", teleop), rate_hz,
                        2000.0 / rate_hz, self.teleop_max_age_s * 1000)

    def _start_blend(self, t: float) -> None:
        """Hand over smoothly: for ``handover_s`` the command moves from where it is to the new
        source's along a smoothstep, on top of the safety filter's own limits."""
        assert self.safety is not None
        self._blend_from = self.safety.command
        self._blend_t0 = t

    def _blended(self, t: float, desired: np.ndarray) -> np.ndarray:
        if self._blend_from is not None and not blend_handover(
                desired, self._blend_from, t - self._blend_t0, self.handover_s):
            self._blend_from = None
        return desired

    def _handle_requests(self, t: float, end: float) -> None:
        if self._teleop_estop is not None:
            teleop_estop = self._teleop_estop()
            if teleop_estop:
                self.request_estop(teleop_estop)
        if self._estop_reason is not None and self.states.state is not S.ESTOP:
            reason, self._estop_reason = self._estop_reason, None
            self.states.to(S.ESTOP, reason)
            try:
                self.bus.estop(reason)
            except (LinkError, DeviceTimeoutError, DeviceRejectedError) as err:
                log.error("e-stop could not reach the motor controller: %s", err)
        if self._infer_error and self.states.state is S.RUNNING:
            self.request_stop(f"inference failed: {self._infer_error}")
        if t >= end and self._stop_reason is None:
            self._stop_reason = "episode time is up"
        if self._stop_reason is not None and self.states.state in (S.RUNNING, S.TAKEOVER):
            self.states.to(S.STOPPING, self._stop_reason)
        elif self._stop_reason is not None and self.states.state is S.ARMED:
            self.states.to(S.IDLE, self._stop_reason)

    def _fault(self, reason: str) -> None:
        self.fault_reason = reason
        self.states.to(S.FAULT, reason)

    def _leave_device_safe(self) -> None:
        """Hold, or torque off where the config says so (``[safety] exit_torque``); the
        controlled stop has already brought the arm to rest. Latched states stay latched."""
        if self.states.latched:
            return
        mode = Mode.TORQUE_OFF if self.config.safety.exit_torque == "off" else Mode.HOLD
        try:
            self.bus.set_mode(mode)
        except (LinkError, DeviceTimeoutError, DeviceRejectedError) as err:
            log.error("could not put the motor controller in %s: %s", mode.name, err)
        if self.states.state is not S.IDLE:
            for target in (S.STOPPING, S.IDLE):
                if self.states.state is not target:
                    self.states.to(target, "episode ended")

    # -- inference thread -------------------------------------------------------------------------
    def _inference_loop(self) -> None:
        scheduler = self.scheduler
        n, horizon = len(self.config.joints), self.config.rates.chunk_size
        while not self._infer_stop.is_set():
            if self._next_engine is not None:  # between chunks: nothing of the old one in flight
                (self.engine, self.engine_name), self._next_engine = self._next_engine, None
                swap = {"t_s": time.monotonic(), "after_chunk": self._chunk_seq,
                        "bundle": self.engine_name}
                self.swaps.append(swap)
                if self.on_event is not None:
                    try:
                        self.on_event("bundle_swap", {"bundle": self.engine_name,
                                                      "after_chunk": self._chunk_seq},
                                      swap["t_s"])
                    except Exception:  # a listener's bug must not stop inference
                        log.exception("on_event listener failed")
                log.info("now running %s from chunk %d on", self.engine_name,
                         self._chunk_seq + 1)
            now = time.monotonic()
            if self.states.state not in (S.ARMED, S.RUNNING) or not scheduler.needs_chunk(now):
                self._infer_stop.wait(0.002)
                continue
            snapshot = self._latest
            images = self._images(now)
            if snapshot is None or images is None:
                self._infer_stop.wait(0.005)
                continue
            t0 = time.perf_counter()
            try:
                obs = self.make_observation(snapshot, images)
                prediction = self.engine.predict(obs, self.mode)
                actions = check_chunk(prediction.actions, n, horizon)
            except ChunkRejectedError as err:
                self.stats.chunks_rejected += 1
                log.warning("chunk rejected, holding: %s", err)
                continue
            except Exception as err:  # an engine failure must stop the robot, not hang it
                self._infer_error = f"{type(err).__name__}: {err}"
                log.error("inference failed: %s", self._infer_error)
                return
            self.stats.chunk_latency_ms.append((time.perf_counter() - t0) * 1000)
            self._value = getattr(prediction, "value", None)
            self._chunk_seq += 1
            if scheduler.push(self._chunk_seq, actions, snapshot.t_s):
                self.stats.chunks += 1

    def _waiting_for(self) -> str:
        now = time.monotonic()
        for name, cam in self.cameras.items():
            got = cam.latest()
            if got is None:
                return f"no frame yet from camera {name}"
            if now - got[1] > self.camera_max_age_s:
                return f"camera {name}'s newest frame is {now - got[1]:.1f} s old"
        return "the engine has not produced a chunk"

    def _images(self, now: float) -> dict[str, np.ndarray] | None:
        """Newest frame per camera, or None if any is missing or older than the limit (the
        policy never runs on stale images)."""
        images = {}
        for name, cam in self.cameras.items():
            got = cam.latest()
            if got is None or now - got[1] > self.camera_max_age_s:
                return None
            images[name] = got[0]
        return images

    # -- summary -----------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        lat = self.pacer.stats.summary() if self.pacer else {}
        chunk = self.stats.chunk_latency_ms
        e2e = self.stats.state_to_setpoint_ms.summary()
        compute = self.stats.compute_ms.summary()
        return {
            "final_state": self.states.state.name,
            "fault": self.fault_reason,
            "steps": self.stats.steps,
            "loop_rate_hz": self._achieved_rate(),
            "lateness_p50_ms": lat.get("p50_ms", 0.0),
            "lateness_p99_ms": lat.get("p99_ms", 0.0),
            "lateness_max_ms": lat.get("max_ms", 0.0),
            "overruns": lat.get("overruns", 0),
            "realtime": self.realtime,
            "chunks": self.stats.chunks,
            "chunks_rejected": self.stats.chunks_rejected,
            "chunk_latency_p50_ms": float(np.percentile(chunk, 50)) if chunk else None,
            "chunk_latency_p99_ms": float(np.percentile(chunk, 99)) if chunk else None,
            "compute_p99_ms": compute["p99_ms"],
            "state_to_setpoint_p99_ms": e2e["p99_ms"],
            "missed_replies": self.stats.missed_replies,
            "safety_clamps": self.stats.safety_clamps,
            "largest_command_step": self.stats.largest_step,
            "source_steps": dict(self.stats.source_steps),
            "teleop_rejected": self.stats.teleop_rejected,
            "transitions": [(t.source.name, t.target.name, t.reason)
                            for t in self.states.history],
            "backend": getattr(self.engine, "backend", "?"),
            "calibration": self.calibration_sha256,
            "bundle_swaps": list(self.swaps),
            "link": self.bus.health(),
        }
