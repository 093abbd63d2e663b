"""Pacing logic with a fake clock: deadlines are absolute, overruns skip ahead."""

from __future__ import annotations

import pytest

from ramp_edge.pacing import Pacer


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_when_steps_take_time_expect_deadlines_not_to_drift():
    clock = FakeClock()
    pacer = Pacer(100.0, tail_s=0.0, clock=clock, sleep=clock.sleep)
    deadlines = []
    for _ in range(50):
        deadlines.append(pacer.wait())
        clock.t += 0.004  # the step's own work
    assert deadlines[-1] == pytest.approx(100.0 + 49 * 0.01)
    assert pacer.stats.overruns == 0
    assert pacer.stats.summary()["max_ms"] == pytest.approx(0.0, abs=1e-9)


def test_when_a_step_overruns_expect_it_counted_and_the_schedule_to_skip_ahead():
    clock = FakeClock()
    pacer = Pacer(100.0, tail_s=0.0, clock=clock, sleep=clock.sleep)
    pacer.wait()
    clock.t += 0.035  # a 35 ms stall
    pacer.wait()
    assert pacer.stats.overruns == 1
    assert pacer.stats.max_ms == pytest.approx(25.0)
    nxt = pacer.wait()
    assert nxt == pytest.approx(100.04)  # next on-grid deadline, no burst of catch-up steps


def test_when_rate_is_not_positive_expect_value_error():
    with pytest.raises(ValueError):
        Pacer(0)
