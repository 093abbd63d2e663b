"""The controller state machine: legal paths, latching, logged reasons."""

from __future__ import annotations

import pytest

from ramp_edge.states import ControllerState as S
from ramp_edge.states import ControllerStateMachine, IllegalTransitionError


def test_when_running_the_normal_cycle_expect_each_transition_logged():
    sm = ControllerStateMachine()
    for target in (S.ARMED, S.RUNNING, S.TAKEOVER, S.RUNNING, S.STOPPING, S.IDLE):
        sm.to(target, f"to {target.name}")
    assert sm.state is S.IDLE
    assert [t.target for t in sm.history] == [S.ARMED, S.RUNNING, S.TAKEOVER, S.RUNNING,
                                              S.STOPPING, S.IDLE]
    assert sm.history[1].reason == "to RUNNING"


def test_when_transition_is_illegal_expect_error_and_state_unchanged():
    sm = ControllerStateMachine()
    with pytest.raises(IllegalTransitionError, match="IDLE to RUNNING"):
        sm.to(S.RUNNING, "skip arming")
    assert sm.state is S.IDLE and not sm.history


@pytest.mark.parametrize("latch", [S.FAULT, S.ESTOP])
def test_when_latched_expect_only_clear_to_leave(latch):
    sm = ControllerStateMachine()
    sm.to(S.ARMED, "arm")
    sm.to(S.RUNNING, "run")
    sm.to(latch, "trouble")
    for target in (S.RUNNING, S.IDLE, S.ARMED, S.STOPPING):
        with pytest.raises(IllegalTransitionError):
            sm.to(target, "try to leave")
    assert sm.latched
    sm.clear("operator cleared")
    assert sm.state is S.IDLE


def test_when_fault_is_latched_expect_estop_still_to_win():
    sm = ControllerStateMachine()
    sm.to(S.FAULT, "bus lost")
    sm.to(S.ESTOP, "button")
    assert sm.state is S.ESTOP
    sm.to(S.FAULT, "another fault")  # does not downgrade an e-stop
    assert sm.state is S.ESTOP
