"""A leader arm on its own motor bus: a person moves it (torque off), the follower copies its
joint positions.

``leader+<bus URL>?<bus parameters>&<leader parameters>``, e.g.
``leader+serial:///dev/ttyACM1?baud=3000000&auto=0.15``,
``leader+dynamixel:///dev/ttyUSB1?ids=1-7&model=xl330&trigger=always`` (a leader built from
DYNAMIXEL servos, the ``dynamixel`` extra) or ``leader+emulator+pty://?trigger=always``
(``emulator+`` starts an emulator process as the leader, as the robot's bus does;
``emulator+dynamixel+pty://?ids=1-7`` in its DYNAMIXEL mode). Parameters that are not the
leader's go to the bus URL. The leader's:

``trigger=always``
    Engaged all the time (demonstrations).
``trigger=evdev:///dev/input/...?button=BTN_0`` or ``trigger=keyboard://``
    Engaged while a button or pedal is held (or toggled, ``mode=toggle``; space on the
    keyboard). Its e-stop key requests an e-stop. Percent-encode a trigger URL that has more
    than one parameter of its own.
``auto=0.15`` (rad), ``release=0.05`` (default ``auto``/3)
    Engaged when a person moves the leader more than ``auto`` (largest joint difference) from
    its rest pose; handed back when it is brought within ``release`` of that pose again
    (hysteresis). The rest pose is where the leader was put at rest: the follower's pose after
    a sync, else where the leader stood at start or at the last handback. (Not the follower's
    live pose: the policy moves the follower, and a leader left behind would take over on its
    own.)
``sync=1``, ``sync_speed=0.3`` (joint unit per s; one value or one per joint),
``sync_timeout_s=10``, ``sync_tol=0.01`` (joint unit)
    An actuated leader: at start and after each handback it is driven (torque on, speed
    limited) to the follower's pose as it was when the move began, then goes limp again;
    no takeover starts before it arrives. Not arriving within the timeout stops the device.
``timeout_ms=20`` (the state reply timeout), ``rate_hz=50``; with ``emulator+`` also
``sim_url=`` (the emulator's sim-control URL, to move it by hand in tests) and ``joints=7``.

Exactly one of ``trigger`` and ``auto`` is required. The leader must have the follower's joints
in the same order and units: the joint names its motor controller reports are checked against
the robot's (:meth:`~ramp_edge.teleop.human.HumanDevice.check_joints`, or ``joint_names=`` at
construction; DYNAMIXEL servos know no names, so there only the count is checked and the
names given are the bus's), and a follower pose of another joint count stops the device. An
e-stop from the trigger leaves the leader limp and the device disengaged until it is reopened;
every later e-stop press is still forwarded.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import numpy as np

from firmware_bridge.bus import MotorBus
from firmware_bridge.emulator.process import EmulatorProcess
from firmware_bridge.errors import EdgeError
from firmware_bridge.messages import Mode
from ramp_edge.teleop.base import TeleopError, TeleopSample, TeleopTransientError, TeleopUrlError
from ramp_edge.teleop.human import HumanDevice, broadcast, number, per_joint, split_params

PREFIX = "leader+"
EMULATOR_PREFIX = "emulator+"
DYNAMIXEL_EMULATED = "dynamixel+pty://"

#: Bus URL prefix -> "module:class" of the buses that are not a motor controller's MotorBus
#: (lazily imported; the class takes the URL, ``joint_names=`` and MotorBus's timeouts).
#: As in :mod:`ramp_edge.robot_link`.
BUSES: dict[str, str] = {
    "dynamixel://": "firmware_bridge.dynamixel.bus:DynamixelBus",
}

#: The leader's own URL parameters and their defaults (None: optional).
LEADER_PARAMS: dict[str, str | None] = {
    "trigger": None, "auto": None, "release": None, "sync": "0", "sync_speed": "0.3",
    "sync_timeout_s": "10", "sync_tol": "0.01", "timeout_ms": "20", "rate_hz": "50",
    "sim_url": None, "joints": None,
}

#: Trigger URL scheme -> "module:class" (lazily imported; the class takes the URL).
TRIGGERS: dict[str, str] = {
    "evdev": "ramp_edge.teleop.evdev_device:EvdevTrigger",
    "keyboard": "ramp_edge.teleop.keyboard:KeyboardTrigger",
}


class Trigger(Protocol):
    reason: str

    def update(self) -> bool: ...

    def take_estop_request(self) -> str | None: ...

    def restore(self) -> None: ...

    def close(self) -> None: ...


def split_leader_url(url: str) -> tuple[str, dict[str, str]]:
    """``(bus URL, leader parameters)`` of a ``leader+`` URL. Raises :class:`TeleopUrlError`."""
    if not url.startswith(PREFIX) or "://" not in url:
        raise TeleopUrlError(f"{url}: a leader arm URL is leader+<bus URL>, e.g. "
                             "leader+serial:///dev/ttyACM1?auto=0.15")
    base, _, query = url[len(PREFIX):].partition("?")
    ours, theirs = [], []
    for item in filter(None, query.split("&")):
        (ours if unquote(item.partition("=")[0]) in LEADER_PARAMS else theirs).append(item)
    params = split_params(url, "&".join(ours), LEADER_PARAMS)
    return base + ("?" + "&".join(theirs) if theirs else ""), params


def make_bus(url: str, bus_url: str, timeout_ms: float,
             joint_names: Sequence[str] | None) -> tuple[Any, bool]:
    """The leader's bus for ``bus_url``, not connected, and whether it reports joint names of
    its own (a motor controller does; DYNAMIXEL servos are named by ``joint_names``). Raises
    :class:`TeleopError` (e.g. the extra a bus needs is missing, or its URL is bad)."""
    spec = next((s for prefix, s in BUSES.items() if bus_url.startswith(prefix)), None)
    try:
        if spec is None:
            return MotorBus(bus_url, cycle_timeout_ms=timeout_ms), True
        module, _, cls = spec.partition(":")
        bus_cls = getattr(importlib.import_module(module), cls)
        return bus_cls(bus_url, joint_names=joint_names, cycle_timeout_ms=timeout_ms), False
    except EdgeError as err:
        raise TeleopError(f"{url}: cannot use the leader arm's bus {bus_url}: {err}") from err


def open_trigger(url: str, trigger_url: str) -> Trigger:
    scheme = urlsplit(trigger_url).scheme
    spec = TRIGGERS.get(scheme)
    if spec is None:
        raise TeleopUrlError(f"{url}: trigger must be always or a URL of "
                             f"{', '.join(s + '://' for s in sorted(TRIGGERS))}")
    module, _, cls = spec.partition(":")
    return getattr(importlib.import_module(module), cls)(trigger_url)


class LeaderArmDevice(HumanDevice):
    """A leader arm as a teleop device (module docstring for the URL). Connects, switches the
    leader's torque off and starts reading. ``joint_names``: the follower's, if known here
    (checked against the leader's; names DYNAMIXEL servos). Raises :class:`TeleopUrlError` for
    a bad URL and :class:`TeleopError` if the leader (or its trigger) cannot be opened or has
    other joints."""

    def __init__(self, url: str, *, joint_names: Sequence[str] | None = None,
                 max_consecutive_errors: int = 5) -> None:
        bus_url, p = split_leader_url(url)
        rate_hz = number(url, "rate_hz", p["rate_hz"], positive=True)
        timeout_ms = number(url, "timeout_ms", p["timeout_ms"], positive=True)
        if (p.get("trigger") is None) == (p.get("auto") is None):
            raise TeleopUrlError(f"{url}: give one of trigger=always|<evdev or keyboard URL> "
                                 "and auto=<rad>")
        self.auto = None if p.get("auto") is None else number(url, "auto", p["auto"],
                                                               positive=True)
        self.release = None
        if self.auto is not None:
            self.release = number(url, "release", p.get("release") or str(self.auto / 3),
                                  positive=True)
            if self.release >= self.auto:
                raise TeleopUrlError(f"{url}: release must be below auto (hysteresis)")
        if p["sync"] not in ("0", "1"):
            raise TeleopUrlError(f"{url}: sync is 0 or 1")
        self.sync = p["sync"] == "1"
        self.sync_speed = per_joint(url, "sync_speed", p["sync_speed"])
        self.sync_timeout_s = number(url, "sync_timeout_s", p["sync_timeout_s"], positive=True)
        self.sync_tol = number(url, "sync_tol", p["sync_tol"], positive=True)
        emulated = bus_url.startswith(EMULATOR_PREFIX)
        if not emulated and (p.get("sim_url") or p.get("joints")):
            raise TeleopUrlError(f"{url}: sim_url and joints are for an emulated leader "
                                 "(leader+emulator+...)")
        emulator_args = ["--device-id", "leader"]
        if p.get("joints"):
            emulator_args += ["--joints", str(int(number(url, "joints", p["joints"])))]
        if p.get("sim_url"):
            emulator_args += ["--sim-url", p["sim_url"]]
        trigger_url = p.get("trigger")
        self.trigger: Trigger | None = None
        self.emulator: EmulatorProcess | None = None
        self.bus: Any = None  # a MotorBus, or a bus of BUSES with its interface
        try:
            if trigger_url is not None and trigger_url != "always":
                self.trigger = open_trigger(url, trigger_url)
            if emulated:
                bus_url = self._start_emulator(url, bus_url[len(EMULATOR_PREFIX):],
                                               emulator_args, p.get("joints"))
            self.bus, named = make_bus(url, bus_url, timeout_ms, joint_names)
            try:
                self.bus.connect()
                self.bus.set_mode(Mode.TORQUE_OFF)  # limp: a person moves it
            except EdgeError as err:
                raise TeleopError(f"cannot use the leader arm at {bus_url}: {err}") from err
            assert self.bus.info is not None
            leader_names = tuple(self.bus.info.joint_names)
            if joint_names is not None and tuple(joint_names) != leader_names:
                raise TeleopError(f"the leader arm at {bus_url} reports joints "
                                  f"{list(leader_names)}, the robot has {list(joint_names)}")
        except BaseException:
            self._release_parts()
            raise
        n_joints = len(leader_names)
        self.sync_speed = broadcast(url, "sync_speed", self.sync_speed, n_joints)
        self.bus_url = bus_url
        super().__init__("leader", url, rate_hz=rate_hz,
                         max_consecutive_errors=max_consecutive_errors)
        self.n_joints = n_joints
        self.joint_names = leader_names if named or joint_names is not None else None
        # idle (needs a rest pose or a sync) -> sync -> ready <-> engaged; estop is final
        self.phase = "idle"
        self.rest: np.ndarray | None = None  # the pose auto-takeover measures from
        self.syncs = 0  # completed moves to the follower's pose
        self._sync_target = np.zeros(self.n_joints)
        self._sync_cmd = np.zeros(self.n_joints)
        self._sync_deadline = 0.0
        self._last_t = 0.0
        self._reason = ""  # why the current takeover started
        self.start()

    def _start_emulator(self, url: str, inner: str, args: list[str],
                        joints: str | None) -> str:
        """Start the emulator process as the leader (its DYNAMIXEL mode for
        ``dynamixel+pty://``); returns the URL to dial. Raises TeleopError."""
        if not inner.startswith(DYNAMIXEL_EMULATED):
            self.emulator = EmulatorProcess(inner, tuple(args))
            return self.emulator.host_url
        from firmware_bridge.dynamixel.emulator import dial_url, emulator_launch, parse_ids

        ids = dict(item.partition("=")[::2] for item in inner.partition("?")[2].split("&")
                   if item).get("ids")
        try:
            n = int(joints) if joints else len(parse_ids(ids)) if ids else 7
            device_url, dxl_args = emulator_launch(inner, n)
        except (EdgeError, ValueError) as err:
            raise TeleopError(f"{url}: {err}") from err
        if not joints:
            args = [*args, "--joints", str(n)]
        self.emulator = EmulatorProcess(device_url, (*args, *dxl_args))
        return dial_url(self.emulator.host_url, inner)

    @property
    def source(self) -> str:
        return "leader"

    # -- reading ---------------------------------------------------------------------------
    def _state(self) -> Any:
        assert self.bus is not None
        state = self.bus.read_state()
        if state is None:
            raise TeleopTransientError(f"no state from the leader arm at {self.bus_url} "
                                       f"({self.bus.last_error or 'timeout'})")
        if state.mode in (Mode.FAULT, Mode.ESTOP):
            raise TeleopError(f"the leader arm at {self.bus_url} is latched in "
                              f"{state.mode.name} ({state.fault.name})")
        return state

    def _poll(self) -> TeleopSample | None:
        now = time.monotonic()
        dt, self._last_t = min(now - self._last_t, 2.0 / self.rate_hz), now
        pressed = self.trigger.update() if self.trigger is not None else True
        estop = self.trigger.take_estop_request() if self.trigger is not None else None
        if estop:  # every press is forwarded, also after the first e-stop
            self.request_estop(estop)
            if self.phase != "estop":
                self._limp()
                self.phase = "estop"
            return self._disengaged(estop)
        if self.phase == "estop":
            return self._disengaged("e-stop requested: reopen the leader arm to use it again")
        if self.phase == "sync":
            return self._sync_step(now, dt)
        follower = self._follower
        if follower is not None and follower.shape != (self.n_joints,):
            raise TeleopError(f"the leader arm at {self.bus_url} has {self.n_joints} joints, "
                              f"the follower {follower.size}: it cannot lead this robot")
        leader = self._state().position.astype(np.float64)
        if self.phase == "idle":
            if self.sync:
                follower = self._follower_for(self.n_joints)
                if follower is None:
                    return self._disengaged("waiting for the follower's pose")
                return self._begin_sync(now, leader, follower)
            self.rest, self.phase = leader, "ready"
        assert self.rest is not None
        moved = float(np.max(np.abs(leader - self.rest)))
        if self.phase == "ready":
            if self.auto is not None and moved > self.auto:
                reason = f"leader moved {moved:.2f} from rest"
            elif self.auto is None and pressed:
                reason = self.trigger.reason if self.trigger is not None else "always"
            else:
                return self._disengaged("at rest" if self.auto is not None
                                        else self.trigger.reason if self.trigger else "")
            self.phase, self._reason = "engaged", reason
            return TeleopSample(now, True, leader, self.source, reason)
        if self.auto is not None:
            assert self.release is not None
            handback = moved < self.release
        else:
            handback = not pressed
        if not handback:
            return TeleopSample(now, True, leader, self.source, self._reason)
        if self.sync:
            self.phase = "idle"  # driven to the follower's pose before the next takeover
        else:
            self.rest, self.phase = leader, "ready"  # at rest again, here
        return self._disengaged("handback: leader back at rest" if self.auto is not None
                                else f"handback: {self.trigger.reason if self.trigger else ''}")

    # -- driving an actuated leader to the follower's pose ----------------------------------------
    def _begin_sync(self, now: float, leader: np.ndarray, follower: np.ndarray) -> TeleopSample:
        assert self.bus is not None
        self._sync_target[:] = follower
        self._sync_cmd[:] = leader
        self._sync_deadline = now + self.sync_timeout_s
        self.bus.set_mode(Mode.POSITION)  # torque on where it stands
        self.phase = "sync"
        return self._disengaged("moving the leader arm to the follower's pose")

    def _sync_step(self, now: float, dt: float) -> TeleopSample:
        assert self.bus is not None
        step = self.sync_speed * dt
        self._sync_cmd += np.clip(self._sync_target - self._sync_cmd, -step, step)
        state = self.bus.exchange(self._sync_cmd, int(1e6 / self.rate_hz))
        error = np.inf
        if state is not None:
            if state.mode in (Mode.FAULT, Mode.ESTOP):
                raise TeleopError(f"the leader arm at {self.bus_url} latched {state.mode.name} "
                                  f"({state.fault.name}) while moving to the follower's pose")
            if state.mode is not Mode.POSITION:  # its watchdog held it: we were late
                self.bus.set_mode(Mode.POSITION)
            error = float(np.max(np.abs(state.position - self._sync_target)))
            if error <= self.sync_tol and np.array_equal(self._sync_cmd, self._sync_target):
                self.bus.set_mode(Mode.TORQUE_OFF)
                self.rest = state.position.astype(np.float64)
                self.phase = "ready"
                self.syncs += 1
                return self._disengaged("leader arm at the follower's pose")
        if now > self._sync_deadline:
            self._limp()
            raise TeleopError(f"the leader arm did not reach the follower's pose within "
                              f"{self.sync_timeout_s:g} s (off by {error:.3f}): is it held or "
                              "blocked?")
        return self._disengaged("moving the leader arm to the follower's pose")

    def _limp(self) -> None:
        if self.bus is not None:
            with contextlib.suppress(EdgeError):
                self.bus.set_mode(Mode.TORQUE_OFF)

    # -- closing ---------------------------------------------------------------------------------
    def _release_parts(self) -> None:
        if self.bus is not None:
            if self.bus.connected:
                self._limp()  # a leader left moving would hold, then fault on its watchdog
            self.bus.close()
            self.bus = None
        if self.trigger is not None:
            self.trigger.close()
            self.trigger = None
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None

    def _on_failure(self) -> None:
        if self.trigger is not None:
            self.trigger.restore()  # a keyboard trigger gives the person their terminal now

    def _close_source(self) -> None:
        self._release_parts()


__all__ = ["BUSES", "LEADER_PARAMS", "TRIGGERS", "LeaderArmDevice", "split_leader_url"]
