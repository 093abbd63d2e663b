"""Safety layers 1 and 2: the engine-output check, joint limits and the host safety filter.

Budget: the property tests run about 10 s on 2 cores; ``max_examples`` is stated in each.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ramp_edge.config import load_config
from ramp_edge.errors import EdgeError
from ramp_edge.safety import (
    ChunkRejectedError,
    FilterNotResetError,
    Intervention,
    InvalidPoseError,
    JointLimits,
    LimitsError,
    SafetyFilter,
    check_chunk,
)

# Rounding allowance for the invariants: absolute, in the joint's unit (or unit/period).
TOL = 1e-12


def make_limits(n: int = 2, lo: float = -1.0, hi: float = 1.0, margin: float = 0.1,
                vmax: float = 1.0, amax: float = 10.0) -> JointLimits:
    return JointLimits(
        names=tuple(f"j{i}" for i in range(n)),
        position_min=[lo] * n,
        position_max=[hi] * n,
        margin=[margin] * n,
        max_velocity_per_s=[vmax] * n,
        max_acceleration_per_s2=[amax] * n,
    )


def run(filt: SafetyFilter, desired_seq) -> np.ndarray:
    return np.array([filt.filter(d) for d in desired_seq])


# -- JointLimits ------------------------------------------------------------------------------


def test_when_built_from_config_expect_margins_inside_the_configured_range():
    config = load_config()
    limits = JointLimits.from_config(config)
    assert limits.names == config.joint_names
    for i, joint in enumerate(config.joints):
        assert limits.lower[i] == pytest.approx(joint.position_min + limits.margin[i])
        assert limits.upper[i] == pytest.approx(joint.position_max - limits.margin[i])
        assert limits.max_velocity_per_s[i] == joint.max_velocity_per_s
        assert limits.max_acceleration_per_s2[i] == joint.max_acceleration_per_s2
    assert limits.margin[0] == config.safety.joint_margin


def test_when_the_margin_swallows_a_small_joint_expect_it_reduced_with_a_warning(caplog):
    # The emulated gripper spans 0.04 m; the shared 0.05 margin would leave nothing.
    config = load_config()
    joints = tuple(dataclasses.replace(j, margin=-1.0) for j in config.joints)
    config = dataclasses.replace(config, joints=joints)
    with caplog.at_level(logging.WARNING, logger="ramp_edge.safety"):
        limits = JointLimits.from_config(config, max_margin_fraction=0.1)
    g = config.joint_names.index("gripper")
    assert limits.margin[g] == pytest.approx(0.004)
    assert limits.lower[g] < limits.upper[g]
    assert "gripper" in caplog.text


def test_when_a_joint_has_its_own_margin_expect_it_used_without_warning(caplog):
    config = load_config()
    g = config.joint_names.index("gripper")
    with caplog.at_level(logging.WARNING, logger="ramp_edge.safety"):
        limits = JointLimits.from_config(config)
    assert limits.margin[g] == pytest.approx(config.joints[g].margin) == pytest.approx(0.002)
    assert caplog.text == ""


def test_when_intersected_with_device_limits_expect_the_narrower_range_and_margin_kept():
    limits = make_limits(lo=-1.0, hi=1.0, margin=0.1)
    narrowed = limits.intersect([-0.5, -2.0], [2.0, 0.4], max_velocity_per_s=[0.5, 5.0])
    np.testing.assert_allclose(narrowed.lower, [-0.4, -0.9])
    np.testing.assert_allclose(narrowed.upper, [0.9, 0.3])
    np.testing.assert_allclose(narrowed.max_velocity_per_s, [0.5, 1.0])


@pytest.mark.parametrize(
    ("lo", "hi"),
    [([0.95, 0.0], [1.0, 1.0]), ([np.nan, 0.0], [1.0, 1.0]), ([0.0], [1.0])],
    ids=["no-room", "nan", "wrong-shape"],
)
def test_when_intersection_is_unusable_expect_limits_error(lo, hi):
    with pytest.raises(LimitsError):
        make_limits().intersect(lo, hi)


@pytest.mark.parametrize(
    "kwargs",
    [{"margin": -0.1}, {"vmax": 0.0}, {"amax": -1.0}, {"margin": 1.0}, {"lo": math.inf}],
    ids=["negative-margin", "zero-velocity", "negative-acceleration", "no-room", "inf"],
)
def test_when_limits_are_invalid_expect_limits_error(kwargs):
    with pytest.raises(LimitsError) as info:
        make_limits(**kwargs)
    assert isinstance(info.value, EdgeError) and isinstance(info.value, ValueError)


def test_when_limits_are_built_expect_read_only_arrays():
    limits = make_limits()
    with pytest.raises(ValueError):
        limits.upper[0] = 5.0


# -- check_chunk (layer 1) --------------------------------------------------------------------


def test_when_chunk_is_valid_expect_a_float64_copy():
    actions = np.ones((4, 3), dtype=np.float32)
    out = check_chunk(actions, n_joints=3, chunk_size=4)
    assert out.dtype == np.float64 and out.shape == (4, 3)
    actions[0, 0] = 9.0  # the engine reusing its buffer must not change the checked chunk
    assert out[0, 0] == 1.0


@pytest.mark.parametrize(
    "actions",
    [
        np.zeros((3, 3)),
        np.zeros((4, 2)),
        np.zeros(12),
        np.full((4, 3), np.nan),
        np.where(np.eye(4, 3) > 0, np.inf, 0.0),
        np.zeros((4, 3), dtype=bool),
        np.zeros((4, 3), dtype=complex),
        [["a"] * 3] * 4,
        None,
        [[1.0, 2.0, 3.0]] * 3 + [[1.0, 2.0]],
    ],
    ids=["short", "narrow", "flat", "nan", "inf", "bool", "complex", "strings", "none",
         "ragged"],
)
def test_when_chunk_is_malformed_expect_chunk_rejected(actions):
    with pytest.raises(ChunkRejectedError) as info:
        check_chunk(actions, n_joints=3, chunk_size=4)
    assert isinstance(info.value, EdgeError) and isinstance(info.value, ValueError)


# -- SafetyFilter: plain behaviour ------------------------------------------------------------


def test_when_used_before_reset_expect_filter_not_reset_error():
    filt = SafetyFilter(make_limits(), period_s=0.01, startup_ramp_s=0.0)
    with pytest.raises(FilterNotResetError):
        filt.filter(np.zeros(2))
    with pytest.raises(FilterNotResetError):
        filt.hold()


@pytest.mark.parametrize("pose", [[np.nan, 0.0], [0.0], [0.0, math.inf]])
def test_when_measured_pose_is_unusable_expect_invalid_pose_error(pose):
    filt = SafetyFilter(make_limits(), period_s=0.01, startup_ramp_s=0.0)
    with pytest.raises(InvalidPoseError):
        filt.reset(pose)


def test_when_desired_is_feasible_expect_it_passed_through_unchanged():
    # x(t) = 0.3 (1 - cos(w t)) starts at rest; peak velocity 0.3 w, acceleration 0.3 w^2.
    limits = make_limits(vmax=1.0, amax=10.0)
    period = 0.01
    filt = SafetyFilter(limits, period_s=period, startup_ramp_s=0.0)
    filt.reset([0.0, 0.0])
    w = 3.0  # 0.9 rad/s, 2.7 rad/s^2: within the limits
    t = np.arange(1, 500) * period
    desired = np.stack([0.3 * (1 - np.cos(w * t)), -0.3 * (1 - np.cos(w * t))], axis=1)
    out = run(filt, desired)
    np.testing.assert_allclose(out, desired, rtol=0, atol=1e-15)
    assert filt.intervention_summary() == dict.fromkeys(
        ("position", "velocity", "acceleration", "nonfinite", "ramp", "hold", "stop"), 0)


def test_when_startup_ramp_is_feasible_expect_a_smooth_blend_that_arrives_after_ramp_s():
    # 0.3 in 0.5 s with a cosine blend: peak 0.94 /s and 5.9 /s^2, within 1.0 and 10.
    limits = make_limits(vmax=1.0, amax=10.0)
    filt = SafetyFilter(limits, period_s=0.01, startup_ramp_s=0.5)
    start = np.array([0.0, 0.2])
    filt.reset(start)
    goal = np.array([0.3, -0.1])
    out = run(filt, [goal] * 60)
    alpha = 0.5 - 0.5 * np.cos(np.pi * np.arange(1, 51) / 50)
    np.testing.assert_allclose(out[:50], start + alpha[:, None] * (goal - start), atol=1e-15)
    np.testing.assert_allclose(out[49:], np.broadcast_to(goal, (11, 2)), atol=1e-15)
    assert filt.flags == Intervention.NONE and not filt.ramping
    assert filt.intervention_summary()["ramp"] == 50
    assert filt.intervention_summary()["velocity"] == 0


def test_when_startup_ramp_is_too_fast_for_the_limits_expect_it_slowed_without_overshoot():
    limits = make_limits(n=1, vmax=1.0, amax=10.0, margin=0.0)
    filt = SafetyFilter(limits, period_s=0.01, startup_ramp_s=0.5)
    filt.reset([-0.8])
    out = run(filt, [[0.8]] * 300)[:, 0]
    assert np.all(np.diff(out) >= 0) and out.max() <= 0.8
    assert out[-1] == pytest.approx(0.8, abs=1e-9)
    assert filt.intervention_summary()["velocity"] > 0


def test_when_target_jumps_far_expect_arrival_without_overshoot():
    limits = make_limits(n=1, lo=-3.0, hi=3.0, margin=0.05, vmax=1.5, amax=8.0)
    filt = SafetyFilter(limits, period_s=0.01, startup_ramp_s=0.0)
    filt.reset([0.0])
    out = run(filt, [[2.0]] * 400)[:, 0]
    assert out.max() <= 2.0
    assert out[-1] == pytest.approx(2.0, abs=1e-9)
    assert np.all(np.diff(out) >= 0)  # no ringing: never turns back


def test_when_desired_goes_beyond_the_limit_at_full_speed_expect_a_stop_at_the_margin():
    limits = make_limits(n=1, lo=-1.0, hi=1.0, margin=0.1, vmax=2.0, amax=5.0)
    filt = SafetyFilter(limits, period_s=0.01, startup_ramp_s=0.0)
    filt.reset([-0.8])
    out = run(filt, [[50.0]] * 300)[:, 0]
    assert out.max() <= 0.9 + TOL
    assert out[-1] == pytest.approx(0.9, abs=1e-9)
    assert filt.intervention_summary()["position"] > 0


@pytest.mark.parametrize("bad", [None, [np.nan, 0.0], [0.0, -np.inf], [1.0], "x"])
def test_when_desired_is_unusable_while_moving_expect_a_hold_at_the_acceleration_limit(bad):
    limits = make_limits(vmax=1.0, amax=10.0)
    period = 0.01
    filt = SafetyFilter(limits, period_s=period, startup_ramp_s=0.0)
    filt.reset([-0.8, -0.8])
    run(filt, [[0.8, 0.8]] * 40)  # accelerate
    v0 = filt.velocity_per_s[0]
    assert v0 > 0.5
    steps = [filt.filter(bad)[0] for _ in range(30)]
    assert filt.flags == Intervention.HOLD | Intervention.NONFINITE
    vel = np.diff(steps) / period
    a_step = 10.0 * period  # velocity change per step at the limit
    np.testing.assert_allclose(vel[:5], v0 - a_step * np.arange(2, 7), atol=1e-9)
    assert filt.is_stopped and np.all(vel >= -1e-12)
    assert filt.intervention_summary()["nonfinite"] == 30


def test_when_controlled_stop_expect_zero_velocity_within_the_predicted_steps():
    limits = make_limits(vmax=1.0, amax=10.0)
    period = 0.01
    filt = SafetyFilter(limits, period_s=period, startup_ramp_s=0.0)
    filt.reset([-0.8, -0.8])
    run(filt, [[0.8, 0.8]] * 30)
    v = float(np.abs(filt.velocity_per_s).max())
    needed = math.ceil(v / (0.5 * 10.0 * period)) + 1
    for _ in range(needed):
        filt.controlled_stop(0.5)
        assert filt.flags & Intervention.STOP
    assert filt.is_stopped
    with pytest.raises(ValueError):
        filt.controlled_stop(0.0)


def test_when_measured_pose_is_outside_the_margins_expect_it_brought_inside():
    limits = make_limits(n=2, lo=-1.0, hi=1.0, margin=0.1)
    filt = SafetyFilter(limits, period_s=0.01, startup_ramp_s=0.2)
    filt.reset([0.97, -1.05])  # beyond the margin, and beyond the raw limit
    out = run(filt, [[0.97, -1.05]] * 200)  # even a policy that asks to stay outside
    assert np.all(np.diff(out[:, 0]) <= 0) and np.all(np.diff(out[:, 1]) >= 0)
    np.testing.assert_allclose(out[-1], [0.9, -0.9], atol=1e-9)


def test_when_out_is_given_expect_the_command_written_there():
    filt = SafetyFilter(make_limits(), period_s=0.01, startup_ramp_s=0.0)
    filt.reset([0.0, 0.0])
    buf = np.empty(2)
    assert filt.filter(np.array([0.0, 0.0]), out=buf) is buf
    np.testing.assert_array_equal(buf, filt.command)


# -- SafetyFilter: properties -----------------------------------------------------------------

SPECIAL = st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1e300, 0.0])


@st.composite
def filter_scenarios(draw):
    n = draw(st.integers(1, 3))
    lo = np.array(draw(st.lists(st.floats(-3.0, 0.0), min_size=n, max_size=n)))
    span = np.array(draw(st.lists(st.floats(0.05, 4.0), min_size=n, max_size=n)))
    margin = span * np.array(draw(st.lists(st.floats(0.0, 0.3), min_size=n, max_size=n)))
    limits = JointLimits(
        names=tuple(f"j{i}" for i in range(n)),
        position_min=lo,
        position_max=lo + span,
        margin=margin,
        max_velocity_per_s=draw(st.lists(st.floats(0.01, 3.0), min_size=n, max_size=n)),
        max_acceleration_per_s2=draw(st.lists(st.floats(0.1, 30.0), min_size=n, max_size=n)),
    )
    period = draw(st.sampled_from([0.002, 0.005, 0.01, 0.02]))
    ramp = draw(st.sampled_from([0.0, 0.03, 0.1, 0.3]))
    # The measured pose may lie anywhere from half a range below to half a range above.
    where = np.array(draw(st.lists(st.floats(-0.5, 1.5), min_size=n, max_size=n)))
    measured = lo + where * span
    value = st.one_of(
        st.floats(-6.0, 6.0),
        SPECIAL,
        st.floats(allow_nan=True, allow_infinity=True),
    )
    vector = st.lists(value, min_size=n, max_size=n)
    # Bang-bang: every joint to one far end, flipping sign between calls.
    jump = st.sampled_from([-1.0, 1.0]).map(lambda s: [s * 1e3] * n)
    call = st.one_of(
        st.tuples(st.just("filter"), st.one_of(vector, jump), st.integers(1, 40)),
        st.tuples(st.just("filter"), st.just(None), st.integers(1, 5)),
        st.tuples(st.just("hold"), st.none(), st.integers(1, 5)),
        st.tuples(st.just("stop"), st.floats(0.05, 1.0), st.integers(1, 10)),
    )
    calls = draw(st.lists(call, min_size=1, max_size=25))
    return limits, period, ramp, measured, calls


def check_invariants(limits: JointLimits, filt: SafetyFilter, measured, calls) -> None:
    lower, upper = limits.lower, limits.upper
    vmax = limits.max_velocity_per_s * filt.period_s
    amax = limits.max_acceleration_per_s2 * filt.period_s**2
    prev = np.array(measured, dtype=float)
    prev_step = np.zeros_like(prev)
    for kind, arg, repeat in calls:
        for _ in range(repeat):
            if kind == "filter":
                cmd = filt.filter(arg)
            elif kind == "hold":
                cmd = filt.hold()
            else:
                cmd = filt.controlled_stop(arg)
            assert np.isfinite(cmd).all()
            step = cmd - prev
            inside = (prev >= lower) & (prev <= upper)
            # Inside stays inside; outside never moves further out.
            assert np.all(~inside | ((cmd >= lower - TOL) & (cmd <= upper + TOL)))
            assert np.all((prev <= upper) | (step <= TOL))
            assert np.all((prev >= lower) | (step >= -TOL))
            assert np.all(np.abs(step) <= vmax + TOL)
            assert np.all(np.abs(step - prev_step) <= amax + TOL)
            prev, prev_step = cmd, step


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(filter_scenarios())
def test_when_desired_is_arbitrary_expect_position_velocity_and_acceleration_limits_kept(
    scenario,
):
    limits, period, ramp, measured, calls = scenario
    filt = SafetyFilter(limits, period_s=period, startup_ramp_s=ramp)
    filt.reset(measured)
    check_invariants(limits, filt, measured, calls)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(filter_scenarios(), st.lists(st.floats(-0.5, 1.5), min_size=3, max_size=3))
def test_when_reset_again_mid_motion_from_a_new_pose_expect_limits_kept_from_rest(
    scenario, where
):
    # A reset re-starts from a measured pose at rest (e.g. after a takeover): the invariants
    # hold afresh from there.
    limits, period, ramp, measured, calls = scenario
    filt = SafetyFilter(limits, period_s=period, startup_ramp_s=ramp)
    filt.reset(measured)
    check_invariants(limits, filt, measured, calls)
    n = limits.n_joints
    pose = limits.position_min + np.array(where[:n]) * (limits.position_max - limits.position_min)
    filt.reset(pose)
    check_invariants(limits, filt, pose, calls)


@settings(max_examples=100, deadline=None)
@given(
    st.floats(0.1, 0.9),  # amplitude as a fraction of the largest feasible one
    st.floats(0.5, 6.0),  # angular frequency, rad/s
    st.sampled_from([0.002, 0.01, 0.02]),
)
def test_when_trajectory_is_within_limits_expect_no_intervention(fraction, w, period):
    # x(t) = a (1 - cos(w t)) from rest: peak velocity a w, peak acceleration a w^2.
    vmax, amax = 1.5, 8.0
    limits = make_limits(n=1, lo=-3.0, hi=3.0, margin=0.05, vmax=vmax, amax=amax)
    a = fraction * min(vmax / w, amax / w**2, 1.4)
    filt = SafetyFilter(limits, period_s=period, startup_ramp_s=0.0)
    filt.reset([0.0])
    t = np.arange(1, 300) * period
    desired = (a * (1 - np.cos(w * t)))[:, None]
    out = run(filt, desired)
    np.testing.assert_allclose(out, desired, rtol=0, atol=1e-12)
    assert sum(filt.intervention_counts) == 0
