"""Tasks, the scripted expert and the scripted corrector, physics only (no rendering).

Budgets, stated: the expert is run on N_RESETS = 12 seeded resets per task and must succeed on
at least 90% of them (noise 0, failure rate 0); benchmarks/sim_bench.py runs 100 seeds per task.
The whole file takes about 40 s on 2 cores.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("mujoco", reason="the sim extra (mujoco) is not installed")

from firmware_bridge.errors import EdgeError
from firmware_bridge.sim.corrector import CorrectorConfig, ScriptedCorrector
from firmware_bridge.sim.errors import UnknownTaskError
from firmware_bridge.sim.expert import ExpertConfig, ScriptedExpert
from firmware_bridge.sim.plant import MujocoPlant
from firmware_bridge.sim.rollout import SOURCE_CORRECTOR, ServoEmulation, run_episode
from firmware_bridge.sim.scene import OBJECTS, TABLE_X_M, TABLE_Y_M
from firmware_bridge.sim.tasks import (
    MIN_OBJECT_GAP_M,
    TASKS,
    get_task,
    make_episode,
)

N_RESETS = 12
MIN_SUCCESS_RATE = 0.9
TASK_NAMES = sorted(TASKS)


@pytest.fixture(scope="module")
def plants() -> dict[str, MujocoPlant]:
    return {name: MujocoPlant(name) for name in TASK_NAMES}


# -- the registry ---------------------------------------------------------------------------
def test_when_the_registry_is_read_expect_three_multi_stage_tasks_with_phrasings():
    assert len(TASKS) >= 3
    for name, spec in TASKS.items():
        assert spec.name == name
        assert len(spec.instructions) >= 3
        ep = make_episode(name, 0)
        assert len(ep.subgoals) >= 2, "multi-stage"
        assert ep.step_budget > 0


def test_when_a_task_is_unknown_expect_an_edge_error():
    with pytest.raises(UnknownTaskError) as info:
        get_task("juggle")
    assert isinstance(info.value, EdgeError)


@pytest.mark.parametrize("task", TASK_NAMES)
def test_when_seeded_expect_deterministic_varied_layouts_on_the_table(task):
    eps = [make_episode(task, s) for s in range(N_RESETS)]
    again = make_episode(task, 3)
    assert again.instruction == eps[3].instruction
    assert np.array_equal(again.layout.object_xy, eps[3].layout.object_xy)
    assert len({e.instruction for e in eps}) >= 3, "several phrasings and object choices"
    assert len({e.layout.object_xy.tobytes() for e in eps}) == N_RESETS
    for e in eps:
        xy = e.layout.object_xy
        assert np.all((TABLE_X_M[0] < xy[:, 0]) & (xy[:, 0] < TABLE_X_M[1]))
        assert np.all((TABLE_Y_M[0] < xy[:, 1]) & (xy[:, 1] < TABLE_Y_M[1]))
        gaps = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(len(xy))
        assert gaps.min() >= MIN_OBJECT_GAP_M


# -- detectors on scripted states -------------------------------------------------------------
def _settle(plant: MujocoPlant, seconds: float = 0.4) -> None:
    for _ in range(round(seconds / 0.001)):
        plant.step(plant.position, True, 0.001)


def _put_on_target(plant: MujocoPlant, i: int, offset_xy=(0.0, 0.0)) -> None:
    ep = plant.episode
    g = ep.subgoals[i]
    target = ep.place_target(i, plant.sim_state()).copy()
    target[:2] += offset_xy
    target[2] += 0.002  # drop from 2 mm
    plant.place_object(g.obj, target)


@pytest.mark.parametrize("task", TASK_NAMES)
def test_when_objects_are_placed_right_expect_success_and_wrongly_expect_none(plants, task):
    plant = plants[task]
    ep = plant.reset(seed=11)
    corners = np.array([(0.028, 0.028), (-0.028, -0.028), (0.028, -0.028)])
    for i, g in enumerate(ep.subgoals):
        # Objects sharing the bin or a pad go to different corners of it.
        offset = {"in_bin": corners[i], "on_pad": 0.78 * corners[i]}.get(g.kind, (0.0, 0.0))
        _put_on_target(plant, i, offset)
        _settle(plant, 0.2)
    _settle(plant)
    state = plant.sim_state()
    assert ep.progress(state) == 1.0
    assert ep.success(state) and ep.failure(state) is None
    # Now move the last one 12 cm off its place: not a success, progress drops.
    last = len(ep.subgoals) - 1
    _put_on_target(plant, last, (0.0, 0.12))
    _settle(plant)
    state = plant.sim_state()
    assert not ep.success(state)
    assert ep.progress(state) == pytest.approx((len(ep.subgoals) - 1) / len(ep.subgoals))
    assert ep.current_subgoal(state) == last


def test_when_an_object_leaves_the_table_expect_failure_named(plants):
    plant = plants["pack_box"]
    ep = plant.reset(seed=12)
    plant.place_object(1, np.array([0.9, 0.0, -0.4]))
    state = plant.sim_state()
    assert ep.failure(state) == f"the {ep.object_names[1]} fell off the table"
    assert not ep.success(state)


# -- the expert --------------------------------------------------------------------------------
@pytest.mark.parametrize("task", TASK_NAMES)
def test_when_the_expert_runs_clean_expect_90_percent_success_on_seeded_resets(plants, task):
    """Also watches with a corrector that never gets control: a clean expert should not make
    the simulated person want to take over (no false alarms)."""
    plant = plants[task]
    results, alarms, progress_seen = [], 0, set()
    for seed in range(N_RESETS):
        ep = plant.reset(seed)
        expert = ScriptedExpert(ep, ExpertConfig(), model=plant.model)
        watcher = ScriptedCorrector(ep, model=plant.model)

        def watch(k, state, action, source, watcher=watcher) -> None:
            nonlocal alarms
            alarms += watcher.observe(state)

        r = run_episode(plant, ep, expert, on_step=watch)
        results.append(r.success)
        progress_seen.update(np.round(r.progress, 2).tolist())
        assert r.steps <= ep.step_budget
    rate = float(np.mean(results))
    assert rate >= MIN_SUCCESS_RATE, f"{task}: {rate:.0%} of {N_RESETS} resets"
    assert alarms == 0
    assert len(progress_seen) >= 3, "progress moves through the sub-goals"


@pytest.mark.parametrize("task", TASK_NAMES)
def test_when_the_expert_always_fails_expect_the_detector_to_reject(plants, task):
    plant = plants[task]
    for seed in range(3):
        ep = plant.reset(seed)
        cfg = ExpertConfig(failure_rate=1.0, seed=seed)
        expert = ScriptedExpert(ep, cfg, model=plant.model)
        r = run_episode(plant, ep, expert)
        assert not r.success
        assert r.final_progress < 1.0
        assert expert.deliberate_failures >= 1


def test_when_noise_is_asked_for_expect_different_actions_same_plan(plants):
    plant = plants["stack_blocks"]
    ep = plant.reset(0)
    state = plant.sim_state()
    clean = ScriptedExpert(ep, model=plant.model).act(state)
    noisy = ScriptedExpert(ep, ExpertConfig(action_noise_rad=0.02), model=plant.model).act(state)
    assert not np.array_equal(clean, noisy)
    assert np.max(np.abs(clean - noisy)) < 0.1
    with pytest.raises(ValueError):
        ExpertConfig(failure_rate=1.5)


def test_when_a_fresh_expert_takes_over_a_held_object_expect_it_kept_and_placed(plants):
    """What the corrector relies on: planning from the middle of someone else's grasp."""
    plant = plants["pack_box"]
    ep = plant.reset(seed=7)
    first = ScriptedExpert(ep, model=plant.model)
    servo = ServoEmulation(plant)
    for _ in range(150):
        state = plant.sim_state()
        if state.held >= 0:
            break
        servo.track(first.act(state), 0.02)
    held = plant.sim_state().held
    assert held == ep.subgoals[0].obj
    second = ScriptedExpert(ep, model=plant.model)
    for _ in range(200):
        state = plant.sim_state()
        action = second.act(state)
        if second.phase in ("lift", "transfer"):
            assert action[-1] < 2 * OBJECTS[held].half_width_m  # still squeezing
        if ep.subgoal_done(0, state):
            break
        servo.track(action, 0.02)
    assert ep.subgoal_done(0, plant.sim_state())


# -- the corrector -----------------------------------------------------------------------------
@pytest.mark.parametrize("task", TASK_NAMES)
def test_when_the_policy_keeps_failing_expect_the_corrector_to_repair_it(plants, task):
    plant = plants[task]
    wins = 0
    for seed in range(3):
        ep = plant.reset(seed)
        policy = ScriptedExpert(ep, ExpertConfig(failure_rate=1.0, seed=seed), model=plant.model)
        corrector = ScriptedCorrector(ep, model=plant.model)
        # A policy that fails every sub-goal wastes time before each repair: allow twice the
        # budget, as an operator would let such an episode run on.
        r = run_episode(plant, ep, policy, corrector=corrector, max_steps=2 * ep.step_budget)
        wins += r.success
        assert r.takeovers >= 1
        kinds = [e.kind for e in corrector.events]
        assert "takeover" in kinds
        assert 0.0 < float(np.mean(r.source == SOURCE_CORRECTOR)) < 1.0
    assert wins == 3


class HoldStill:
    """A policy that does nothing: commands wherever the arm is."""

    def act(self, state):
        return state.joint_pos.copy()


class LeanBack:
    """A policy that pulls the arm up and back, away from every object."""

    def act(self, state):
        q = state.joint_pos.copy()
        q[1] = max(q[1] - 0.03, -0.9)
        return q


def test_when_progress_stalls_expect_takeover_after_the_reaction_delay_then_handback(plants):
    plant = plants["stack_blocks"]
    ep = plant.reset(seed=4)
    cfg = CorrectorConfig(stall_steps=40, reaction_delay_steps=12)
    corrector = ScriptedCorrector(ep, cfg, model=plant.model)
    r = run_episode(plant, ep, HoldStill(), corrector=corrector, max_steps=300)
    noticed, takeover, handback = corrector.events[:3]
    assert (noticed.kind, noticed.reason) == ("noticed", "stall")
    assert noticed.step == 40
    assert takeover.kind == "takeover" and takeover.step == noticed.step + 12
    assert handback.kind == "handback"
    assert r.progress[handback.step] > 0.0, "handed back once the sub-goal was done"


def test_when_the_gripper_drifts_away_expect_takeover(plants):
    plant = plants["pack_box"]
    ep = plant.reset(seed=5)
    corrector = ScriptedCorrector(ep, CorrectorConfig(reaction_delay_steps=0), model=plant.model)
    run_episode(plant, ep, LeanBack(), corrector=corrector, max_steps=120)
    assert corrector.events, "no takeover"
    assert corrector.events[0].reason == "the gripper drifted away from the current sub-goal"
    assert corrector.events[0].step < 100  # well before the stall window


def test_when_an_object_heads_off_the_table_expect_takeover(plants):
    """Pure logic: a state in which an object slides toward the table's edge."""
    plant = plants["sort_by_colour"]
    ep = plant.reset(seed=6)
    corrector = ScriptedCorrector(ep, CorrectorConfig(reaction_delay_steps=2), model=plant.model)
    calm = plant.sim_state()
    assert corrector.observe(calm) is False
    vel = calm.object_vel.copy()
    vel[2] = (0.0, 2.0, 0.0)  # m/s toward +y; reaches the edge within the horizon
    sliding = dataclasses.replace(calm, object_vel=vel)
    wants = [corrector.observe(sliding) for _ in range(3)]
    assert wants == [False, False, True]
    assert "heading off the table" in corrector.events[0].reason
    assert ep.object_names[2] in corrector.events[0].reason


def test_object_table_is_what_the_tasks_assume():
    assert [o.shape for o in OBJECTS].count("cube") >= 3  # stacking needs three cubes
