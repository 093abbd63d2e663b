"""Action scheduler: interpolation, blending at chunk boundaries, time alignment, staleness and
the hand-over between the inference thread and the control thread.

Budget: about 3 s on 2 cores; ``max_examples`` is stated in each property test.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ramp_edge.chunks import ActionScheduler, Staleness
from ramp_edge.config import load_config
from ramp_edge.safety import ChunkRejectedError

H, HZ, N = 50, 50.0, 3
SPAN_S = (H - 1) / HZ  # first to last action of a chunk: 0.98 s


def scheduler(**kwargs) -> ActionScheduler:
    return ActionScheduler(N, H, HZ, 25, **kwargs)


def ramp_chunk(t0: float, slope=(0.2, -0.2, 0.1), offset: float = 0.0) -> np.ndarray:
    """Actions of the trajectory x(t) = slope * t + offset, sampled at t0 + k / HZ."""
    t = t0 + np.arange(H) / HZ
    return t[:, None] * np.asarray(slope) + offset


def constant_chunk(value: float) -> np.ndarray:
    return np.full((H, N), value)


def stream(s: ActionScheduler, times) -> np.ndarray:
    out = []
    for t in times:
        cmd = s.next_command(t)
        out.append(np.full(N, np.nan) if cmd is None else cmd)
    return np.array(out)


# -- interpolation and time alignment ---------------------------------------------------------


@pytest.mark.parametrize("control_hz", [100.0, 250.0, 500.0])
def test_when_chunk_is_a_linear_ramp_expect_exact_interpolation_at_control_rate(control_hz):
    s = scheduler()
    t0 = 1.0
    actions = ramp_chunk(t0, offset=0.3)
    assert s.push(7, actions, t0)
    times = t0 + np.arange(int(SPAN_S * control_hz) + 1) / control_hz
    out = stream(s, times)
    expected = times[:, None] * np.array([0.2, -0.2, 0.1]) + 0.3
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
    # At the policy's own ticks the actions come out as they are.
    np.testing.assert_allclose(stream(s, t0 + np.arange(H) / HZ), actions, rtol=0, atol=1e-12)


def test_when_first_chunk_arrives_late_expect_it_aligned_by_time_not_index():
    s = scheduler()
    now = 10.0
    actions = ramp_chunk(now - 0.2)  # its observation was 0.2 s (10 actions) ago
    s.push(1, actions, now - 0.2)
    np.testing.assert_allclose(s.next_command(now), actions[10], atol=1e-12)
    assert s.action_index == pytest.approx(10.0)


def test_when_next_chunk_arrives_late_expect_a_seamless_start_and_time_alignment_after():
    s = scheduler()
    old = ramp_chunk(0.0)
    new = ramp_chunk(0.5, offset=0.05)
    s.push(1, old, 0.0)
    stream(s, np.arange(0, 70) / 100)  # up to 0.69 s on the old chunk
    s.push(2, new, 0.5)  # computed from the observation at 0.5 s, arrives at 0.7 s
    at_arrival = s.next_command(0.7)
    np.testing.assert_allclose(at_arrival, old[35], atol=1e-12)  # weight 0: no jump
    assert s.chunk_id == 2 and s.blend_from_id == 1 and s.blend_weight == 0.0
    after = s.next_command(1.2)  # blend over (old chunk ended at 0.98 s)
    np.testing.assert_allclose(after, new[35], atol=1e-12)  # index (1.2 - 0.5) * 50
    assert s.blend_from_id is None and s.blend_weight == 1.0


def test_when_chunk_starts_in_the_future_expect_it_used_from_its_start_only():
    s = scheduler()
    s.push(1, constant_chunk(0.0), 0.0)
    s.next_command(0.0)
    s.push(2, constant_chunk(1.0), 0.5)
    assert s.next_command(0.49)[0] == 0.0 and s.chunk_id == 1
    assert s.next_command(0.5)[0] == 0.0 and s.chunk_id == 2  # starts blending at weight 0
    assert s.next_command(0.75)[0] == pytest.approx(0.5 - 0.5 * math.cos(math.pi * 0.25 / 0.48))


# -- chunk boundaries -------------------------------------------------------------------------


def largest_step_at_boundary(blend: str, offset: float) -> tuple[float, float]:
    """Two chunks of one ramp (0.2 /s) that disagree by ``offset``; the next chunk is computed
    at 0.5 s (25 actions left, as configured). Returns (largest step, overlap in s)."""
    s = scheduler(blend=blend)
    s.push(1, ramp_chunk(0.0), 0.0)
    times = np.arange(0, 140) / 100  # 100 Hz, 0 to 1.39 s
    first = stream(s, times[:50])
    s.push(2, ramp_chunk(0.5, offset=offset), 0.5)  # arrives in time for 0.5 s
    out = np.vstack([first, stream(s, times[50:])])
    assert np.isfinite(out).all()
    return float(np.abs(np.diff(out, axis=0)).max()), SPAN_S - 0.5


def test_when_chunks_disagree_by_an_offset_expect_blending_to_bound_the_boundary_step():
    offset, period = 0.1, 0.01
    blended, overlap = largest_step_at_boundary("cosine", offset)
    unblended, _ = largest_step_at_boundary("none", offset)
    # Cosine crossfade: d/dt (offset * w) peaks at offset * pi / 2 / overlap; plus the ramp.
    bound = 0.2 * period + offset * (math.pi / 2) * period / overlap
    assert blended <= bound + 1e-12, (blended, bound)
    assert unblended >= offset  # the switch carries the whole disagreement in one step
    assert blended < 0.1 * unblended, (blended, unblended)


def test_when_blend_is_linear_expect_the_weight_to_grow_linearly_over_the_overlap():
    s = scheduler(blend="linear")
    s.push(1, constant_chunk(0.0), 0.0)
    s.next_command(0.0)
    s.push(2, constant_chunk(1.0), 0.5)
    s.next_command(0.5)
    assert s.next_command(0.74)[0] == pytest.approx(0.5)
    assert s.blend_weight == pytest.approx(0.5)


def test_when_a_chunk_arrives_after_the_previous_ran_out_expect_a_blend_from_its_last_action():
    s = scheduler(min_blend_s=0.1)
    s.push(1, constant_chunk(0.0), 0.0)
    assert s.next_command(0.0) is not None
    assert s.next_command(1.1) is None  # ran out at 0.98 s
    s.push(2, constant_chunk(1.0), 1.05)
    assert s.next_command(1.1)[0] == 0.0  # starts from where the old chunk left off
    assert s.next_command(1.15)[0] == pytest.approx(0.5)
    assert s.next_command(1.2)[0] == 1.0


# -- staleness and replanning -----------------------------------------------------------------


def test_when_chunk_is_stale_expect_none_and_staleness_by_the_thresholds():
    s = scheduler(stale_hold_s=0.2, stale_stop_s=1.0)
    s.push(1, constant_chunk(0.5), 0.0)
    assert s.next_command(0.98) is not None and s.staleness(0.98) is Staleness.FRESH
    buf = np.full(N, 7.0)
    assert s.next_command(1.0, out=buf) is None and s.chunk_id is None
    assert np.all(buf == 7.0)  # left untouched
    assert s.stale_s(1.08) == pytest.approx(0.1)
    assert s.staleness(1.08) is Staleness.LATE
    assert s.staleness(1.2) is Staleness.HOLD
    assert s.staleness(2.0) is Staleness.STOP
    assert s.age_s(1.08) == pytest.approx(1.08)


def test_when_no_chunk_ever_came_expect_none_and_stop_unless_cleared_with_a_time():
    s = scheduler(stale_hold_s=0.2, stale_stop_s=1.0)
    assert s.next_command(0.0) is None
    assert s.stale_s(0.0) == math.inf and s.staleness(0.0) is Staleness.STOP
    s.clear(t_s=5.0)
    assert s.staleness(5.1) is Staleness.LATE and s.staleness(5.3) is Staleness.HOLD


def test_when_replan_point_is_reached_expect_needs_chunk_until_a_newer_one_is_pushed():
    s = scheduler()
    assert s.needs_chunk(0.0)  # nothing at all
    s.push(1, constant_chunk(0.0), 0.0)
    assert not s.needs_chunk(0.0)
    assert not s.needs_chunk(0.49)  # action 24: 26 left
    assert s.needs_chunk(0.5)  # action 25: 25 left
    s.push(2, constant_chunk(0.0), 0.5)
    assert not s.needs_chunk(0.5)  # pending counts as the newest


def test_when_from_config_expect_rates_and_stale_thresholds_of_the_config():
    config = load_config()
    s = ActionScheduler.from_config(config)
    assert (s.n_joints, s.chunk_size) == (len(config.joints), config.rates.chunk_size)
    assert s.policy_hz == config.rates.policy_hz
    assert s.replan_at_remaining == config.rates.replan_at_remaining
    assert s.stale_hold_s == config.safety.stale_hold_ms / 1000
    assert s.stale_stop_s == config.safety.stale_stop_ms / 1000


# -- push -------------------------------------------------------------------------------------


def test_when_pushed_chunk_is_older_than_the_newest_expect_it_dropped():
    s = scheduler()
    assert s.push(2, constant_chunk(1.0), 0.5)
    assert not s.push(1, constant_chunk(9.0), 0.4)
    assert not s.push(3, constant_chunk(9.0), 0.5)
    assert s.dropped_older == 2
    assert s.next_command(0.6)[0] == 1.0


def test_when_two_chunks_arrive_before_use_expect_only_the_newer_used():
    s = scheduler()
    s.push(1, constant_chunk(1.0), 0.0)
    s.push(2, constant_chunk(2.0), 0.01)
    assert s.next_command(0.02)[0] == 2.0 and s.chunk_id == 2
    assert s.replaced_unused == 1


def test_when_pushed_chunk_had_run_out_before_use_expect_it_never_used():
    s = scheduler()
    s.push(1, constant_chunk(1.0), 0.0)
    assert s.next_command(5.0) is None
    assert s.expired_unused == 1


@pytest.mark.parametrize(
    ("actions", "t0"),
    [
        (np.full((H, N), np.nan), 0.5),
        (np.zeros((H - 1, N)), 0.5),
        (np.zeros((H, N + 1)), 0.5),
        (np.zeros((H, N)), math.nan),
    ],
    ids=["nan", "short", "wide", "nan-t0"],
)
def test_when_pushed_chunk_is_malformed_expect_rejection_and_the_schedule_unchanged(actions, t0):
    s = scheduler()
    s.push(1, constant_chunk(1.0), 0.0)
    with pytest.raises(ChunkRejectedError):
        s.push(2, actions, t0)
    assert s.rejected == 1
    assert s.next_command(0.6)[0] == 1.0 and s.chunk_id == 1


def test_when_source_is_given_expect_it_reported_for_logging():
    s = scheduler()
    s.push(3, constant_chunk(0.0), 0.0, source="efficient")
    s.next_command(0.1)
    assert (s.chunk_id, s.source) == (3, "efficient")


# -- threads ----------------------------------------------------------------------------------


def test_when_pushing_from_another_thread_during_next_command_expect_consistent_commands():
    s = scheduler(min_blend_s=0.02)
    start = time.monotonic()
    s.push(0, constant_chunk(0.0), start)
    stop = threading.Event()
    errors: list[BaseException] = []
    pushed = [0]

    def inference() -> None:
        try:
            k = 0
            while not stop.is_set():
                k += 1
                if s.push(k, constant_chunk(float(k)), time.monotonic()):
                    pushed[0] = k
                time.sleep(0.0005)
        except BaseException as err:  # surfaced by the assertion below
            errors.append(err)

    thread = threading.Thread(target=inference)
    thread.start()
    outputs = []
    try:
        while time.monotonic() - start < 0.4:
            cmd = s.next_command(time.monotonic())
            if cmd is not None:
                outputs.append(cmd.copy())
    finally:
        stop.set()
        thread.join()
    assert not errors
    out = np.array(outputs)
    assert len(out) > 100 and np.isfinite(out).all()
    assert np.all(out == out[:, :1])  # joints never mixed between chunks (all share a value)
    assert out.min() >= 0.0 and out.max() <= pushed[0]
    # The buffer pool came through intact: many more pushes still find a free buffer.
    s.clear()
    for k in range(50):
        s.push(10_000 + k, constant_chunk(0.0), 100.0 + k)
        s.next_command(100.0 + k)


# -- properties -------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 40),  # control steps until the next push
            st.floats(-1.0, 1.0),  # the chunk's (constant) value
            st.floats(-0.4, 0.1),  # its t0 relative to now: late or early
        ),
        min_size=1,
        max_size=20,
    )
)
def test_when_chunks_arrive_at_any_time_expect_bounded_steps_within_their_values(pushes):
    # Constant chunks: any motion comes from blending. Each crossfade lasts >= min_blend_s and
    # moves at most pi/2 * T / min_blend_s of the value range per step; at most MAX_ACTIVE - 1
    # crossfades overlap.
    period, min_blend = 0.01, 0.2
    s = scheduler(min_blend_s=min_blend)
    bound = 2 * (math.pi / 2) * (period / min_blend) * 2.0 + 1e-12
    values: list[float] = []
    step, prev, t = 0, None, 0.0
    for wait, value, rel in pushes:
        s.push(len(values), constant_chunk(value), t + rel)
        values.append(value)
        for _ in range(wait):
            t = step * period
            step += 1
            cmd = s.next_command(t)
            if cmd is None:
                prev = None
                continue
            assert min(values) - 1e-12 <= cmd[0] <= max(values) + 1e-12
            if prev is not None:
                assert abs(cmd[0] - prev) <= bound
            prev = cmd[0]
