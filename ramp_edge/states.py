"""The controller's state machine (DESIGN.md, "Safety layers").

IDLE -> ARMED -> RUNNING (policy) <-> TAKEOVER (human) -> STOPPING -> IDLE. FAULT and ESTOP can
be entered from anywhere and latch: only :meth:`ControllerStateMachine.clear` leaves them, to
IDLE. Every transition is logged with its reason; an illegal one raises and changes nothing.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ramp_edge.errors import EdgeError

log = logging.getLogger("ramp_edge.states")


class ControllerState(enum.Enum):
    IDLE = "idle"
    ARMED = "armed"  # torque on, holding the measured pose, ready to run
    RUNNING = "running"  # the policy drives
    TAKEOVER = "takeover"  # a person drives through the teleop device
    STOPPING = "stopping"  # controlled stop in progress
    FAULT = "fault"  # latched
    ESTOP = "estop"  # latched


S = ControllerState
LATCHED = frozenset({S.FAULT, S.ESTOP})
ALLOWED: dict[ControllerState, frozenset[ControllerState]] = {
    S.IDLE: frozenset({S.ARMED}),
    S.ARMED: frozenset({S.RUNNING, S.TAKEOVER, S.STOPPING, S.IDLE}),
    S.RUNNING: frozenset({S.TAKEOVER, S.STOPPING}),
    S.TAKEOVER: frozenset({S.RUNNING, S.STOPPING}),
    S.STOPPING: frozenset({S.IDLE}),
    S.FAULT: frozenset(),
    S.ESTOP: frozenset(),
}


class IllegalTransitionError(EdgeError, RuntimeError):
    """A transition the state machine does not allow (the state is unchanged)."""


@dataclass(frozen=True)
class Transition:
    t_s: float  # time.monotonic()
    source: ControllerState
    target: ControllerState
    reason: str


class ControllerStateMachine:
    """Thread-safe: the control thread, the control socket and signal handlers all use it."""

    def __init__(self, clock=time.monotonic) -> None:
        self._state = S.IDLE
        self._lock = threading.Lock()
        self._clock = clock
        self.history: list[Transition] = []
        # Called with each transition on the thread that made it: must be quick, never raise
        # (the recorder's event queue, a status display).
        self.listeners: list[Callable[[Transition], None]] = []

    @property
    def state(self) -> ControllerState:
        return self._state

    def to(self, target: ControllerState, reason: str) -> None:
        """Move to ``target``. FAULT and ESTOP are always allowed (ESTOP also from FAULT; FAULT
        while in ESTOP is ignored). Otherwise raises IllegalTransitionError if ``target`` is
        not allowed from here."""
        with self._lock:
            source = self._state
            if target == source or (target is S.FAULT and source is S.ESTOP):
                return  # a fault never downgrades a latched e-stop
            if target not in LATCHED and target not in ALLOWED[source]:
                raise IllegalTransitionError(
                    f"cannot go from {source.name} to {target.name} ({reason})"
                )
            self._record(source, target, reason)

    def clear(self, reason: str) -> None:
        """Leave a latched FAULT/ESTOP for IDLE (an explicit operator action)."""
        with self._lock:
            if self._state not in LATCHED:
                raise IllegalTransitionError(f"nothing to clear in {self._state.name}")
            self._record(self._state, S.IDLE, reason)

    def _record(self, source: ControllerState, target: ControllerState, reason: str) -> None:
        self._state = target
        transition = Transition(self._clock(), source, target, reason)
        self.history.append(transition)
        for listener in self.listeners:
            listener(transition)
        level = logging.WARNING if target in LATCHED else logging.INFO
        log.log(level, "state %s -> %s: %s", source.name, target.name, reason)

    @property
    def latched(self) -> bool:
        return self._state in LATCHED
