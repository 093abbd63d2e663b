"""SCHED_FIFO for the one thread that keeps time, only while it runs, never for the threads it
started before."""

from __future__ import annotations

import os
import threading

from firmware_bridge.realtime import realtime_thread


def test_when_raised_expect_fifo_inside_and_the_old_policy_after():
    before = os.sched_getscheduler(0)
    seen = {}

    def other() -> None:  # started before the raise: keeps its policy
        started.wait()
        seen["other"] = os.sched_getscheduler(0)

    started = threading.Event()
    t = threading.Thread(target=other)
    t.start()
    with realtime_thread(10, "test thread") as why:
        started.set()
        t.join()
        inside = os.sched_getscheduler(0)
    assert os.sched_getscheduler(0) == before
    assert seen["other"] == before
    if why is None:
        assert inside == os.SCHED_FIFO
    else:  # no privilege here: a reason, normal priority, nothing fails
        assert "refused" in why and inside == before


def test_when_priority_is_zero_expect_nothing_changed():
    before = os.sched_getscheduler(0)
    with realtime_thread(0) as why:
        assert why == "real-time priority off" and os.sched_getscheduler(0) == before
