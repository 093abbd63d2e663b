"""Teleop devices: the base class's contract, URL parsing, and the scripted expert and corrector
against the emulator with the MuJoCo plant as a separate process (driven over the real protocol
through MotorBus, as the controller will)."""

from __future__ import annotations

import gc
import time
import warnings

import numpy as np
import pytest

from firmware_bridge.bus import MotorBus
from firmware_bridge.emulator.process import EmulatorProcess
from firmware_bridge.emulator.sim_link import SimClient
from firmware_bridge.errors import EdgeError
from firmware_bridge.messages import Mode
from firmware_bridge.sim.tasks import make_episode
from ramp_edge.pacing import Pacer
from ramp_edge.teleop import (
    TeleopDevice,
    TeleopError,
    TeleopSample,
    TeleopTransientError,
    TeleopUrlError,
    open_teleop,
)
from ramp_edge.teleop.scripted import parse_query, scripted_url

RATE_HZ = 50


# -- the base class, with a minimal backend ------------------------------------------------
class CountingDevice(TeleopDevice):
    """Engaged with a constant target; ``script`` lists exceptions to raise, in order."""

    def __init__(self, script: list[BaseException | None] | None = None) -> None:
        super().__init__("counting", "counting://", rate_hz=200.0, max_consecutive_errors=2)
        self.script = list(script or [])
        self.closed_source = 0
        self.start()

    def _poll(self) -> TeleopSample | None:
        if self.script:
            err = self.script.pop(0)
            if err is not None:
                raise err
        return TeleopSample(time.monotonic(), True, np.zeros(7), self.source)

    def _close_source(self) -> None:
        self.closed_source += 1


def wait_for(predicate, timeout_s: float = 2.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def test_when_a_sample_is_engaged_expect_a_read_only_float64_target_and_none_otherwise():
    s = TeleopSample(1.0, True, [0, 1, 2], "x")
    assert s.target.dtype == np.float64 and not s.target.flags.writeable
    with pytest.raises(ValueError, match="exactly when"):
        TeleopSample(1.0, False, np.zeros(7), "x")
    with pytest.raises(ValueError, match="exactly when"):
        TeleopSample(1.0, True, None, "x")


def test_when_polling_expect_samples_at_the_rate_and_idempotent_close():
    with CountingDevice() as dev:
        assert wait_for(lambda: dev.samples >= 20)
        sample = dev.latest()
        assert sample is not None and sample.engaged and sample.source == "counting"
        assert dev.engaged_sample() is sample
        assert dev.engaged_sample(now_s=sample.t_s + 1.0) is None  # stale: not followed
        assert dev.running
    dev.close()
    assert dev.closed_source == 1 and dev.latest() is None and not dev.running


def test_when_the_backend_raises_expect_the_device_stopped_disengaged_with_the_error():
    dev = CountingDevice([None, OSError("device unplugged")])
    try:
        assert wait_for(lambda: dev.error is not None)
        assert isinstance(dev.error, TeleopError) and "device unplugged" in str(dev.error)
        assert isinstance(dev.error.__cause__, OSError)
        sample = dev.latest()
        assert sample is not None and not sample.engaged and sample.target is None
        assert "device unplugged" in sample.reason
        assert dev.engaged_sample() is None and dev.errors == 1
        assert wait_for(lambda: not dev.running)
    finally:
        dev.close()


def test_when_transient_errors_repeat_expect_them_counted_then_the_device_stopped():
    glitch = TeleopTransientError("no reply")
    with CountingDevice([glitch, glitch, None, glitch, glitch, glitch]) as dev:
        assert wait_for(lambda: dev.error is not None)
        assert dev.errors == 5 and dev.samples == 1  # two tolerated, a sample, then three
        assert "3 readings in a row" in str(dev.error)


def test_when_a_device_is_not_closed_expect_a_resource_warning():
    dev = CountingDevice()
    end = time.monotonic() + 2.0
    while dev.samples == 0 and time.monotonic() < end:
        time.sleep(0.005)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del dev
        gc.collect()
        time.sleep(0.05)  # the reader thread drops its reference between readings
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)


# -- URLs ---------------------------------------------------------------------------------------
SIM = "zmq+ipc:///tmp/ramp-edge-test-none.sock"


@pytest.mark.parametrize(("url", "match"), [
    ("gamepad:///dev/input/event3", "unknown teleop URL scheme 'gamepad'"),
    ("scripted+expert://?task=pack_box", "sim=.* is required"),
    (f"scripted+expert://?sim={SIM}&bogus=1", r"unknown parameter\(s\) bogus"),
    (f"scripted+expert://?sim={SIM}&seed=x", "seed='x' is not an integer"),
    (f"scripted+expert://?sim={SIM}&seed=1&seed=2", "given twice"),
    (f"scripted+expert://?sim={SIM}&task=fold_laundry", "unknown task 'fold_laundry'"),
    (f"scripted+expert://?sim={SIM}&failure_rate=2", "failure_rate must be in 0..1"),
    (f"scripted+expert://?sim={SIM}&noise=nan", "not finite"),
    ("scripted+expert://?sim=http://example.org", "not a ZeroMQ URL"),
    (f"scripted+corrector://?sim={SIM}&stall_steps=1.5", "stall_steps='1.5' is not an integer"),
    (f"scripted+corrector://?sim={SIM}&noise=0.1", r"unknown parameter\(s\) noise"),
    (f"scripted+expert://host/path?sim={SIM}", "only a query"),
])
def test_when_a_teleop_url_is_bad_expect_one_clear_project_error(url, match):
    with pytest.raises(TeleopUrlError, match=match) as info:
        open_teleop(url)
    assert isinstance(info.value, EdgeError) and isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


def test_when_building_a_scripted_url_expect_the_sim_url_to_survive_encoding():
    url = scripted_url("corrector", "zmq+ipc:///tmp/a b/sim.sock", seed=3, stall_steps=20)
    assert url.startswith("scripted+corrector://?sim=zmq%2Bipc")
    assert parse_query(url) == {"sim": "zmq+ipc:///tmp/a b/sim.sock", "seed": "3",
                                "stall_steps": "20"}
    # Typed by hand, unencoded: a '+' stays a '+', it is not read as a space.
    assert parse_query("scripted+expert://?sim=zmq+ipc:///tmp/s")["sim"] == "zmq+ipc:///tmp/s"


# -- the scripted devices against the emulator -----------------------------------------------
@pytest.fixture(scope="module")
def sim_emulator(tmp_path_factory):
    pytest.importorskip("mujoco", reason="the sim extra (MuJoCo) is not installed")
    d = tmp_path_factory.mktemp("teleop")
    sim_url = f"zmq+ipc://{d}/sim.sock"
    with EmulatorProcess(f"pty://{d}/tty", ("--plant", "mujoco", "--task", "pack_box",
                                            "--sim-url", sim_url), 90.0) as proc:
        client = SimClient(sim_url)
        try:
            yield proc, sim_url, client
        finally:
            client.close()


def reset_to(bus: MotorBus, client: SimClient, seed: int) -> dict:
    """Hold the arm (a reset is refused while it tracks setpoints) and start episode ``seed``."""
    bus.set_mode(Mode.HOLD)
    return client.reset(seed)


def test_when_the_expert_device_runs_expect_engaged_7_joint_targets_at_50_hz(sim_emulator):
    proc, sim_url, client = sim_emulator
    with MotorBus(proc.host_url, cycle_timeout_ms=20) as bus:
        bus.connect()
        reset_to(bus, client, 0)
    with open_teleop(scripted_url("expert", sim_url, task="pack_box", seed=0)) as dev:
        assert wait_for(lambda: dev.samples > 0, 10.0), dev.error
        first, t0 = dev.samples, time.monotonic()
        time.sleep(1.0)
        rate = (dev.samples - first) / (time.monotonic() - t0)
        sample = dev.latest()
        assert dev.error is None and dev.errors == 0
    assert 40 <= rate <= 55, f"{rate:.1f} samples/s"
    assert sample.engaged and sample.source == "scripted+expert"
    assert sample.target.shape == (7,) and sample.target.dtype == np.float64
    assert np.all(np.isfinite(sample.target))


def test_when_the_expert_drives_the_arm_through_teleop_over_the_bus_expect_pack_box_solved(
    sim_emulator,
):
    """The expert acts only through the teleop interface: the loop below is the controller's
    side (latest sample -> setpoint at 50 Hz over the real protocol); the step budget is the
    episode's. Budget: under 20 s of wall time (seed 0 has 2-3 sub-goals, 600-850 steps)."""
    proc, sim_url, client = sim_emulator
    budget = make_episode("pack_box", 0).step_budget
    stale = steps = 0
    success = False
    with MotorBus(proc.host_url, cycle_timeout_ms=20) as bus:
        bus.connect()
        assert reset_to(bus, client, 0)["step_budget"] == budget
        with open_teleop(scripted_url("expert", sim_url, task="pack_box", seed=0)) as dev:
            assert wait_for(lambda: dev.engaged_sample() is not None, 10.0), dev.latest()
            target = dev.engaged_sample().target
            bus.set_mode(Mode.POSITION)
            try:
                pacer = Pacer(RATE_HZ)
                while steps < budget and not success:
                    pacer.wait()
                    sample = dev.engaged_sample()
                    if sample is None:
                        stale += 1  # keep the last target: the arm holds
                    else:
                        target = sample.target
                    bus.exchange(target, reach_in_us=1_000_000 // RATE_HZ)
                    steps += 1
                    if steps % 10 == 0:
                        success = client.status()["success"]
            finally:
                bus.set_mode(Mode.HOLD)
            assert dev.error is None, dev.error
    status = client.status()
    assert success and status["success"], f"{status} after {steps}/{budget} steps"
    assert steps <= budget and stale <= 5


def test_when_the_arm_sits_idle_expect_the_corrector_to_engage_after_the_stall(sim_emulator):
    proc, sim_url, client = sim_emulator
    stall, delay = 25, 5  # control steps (0.5 s, 0.1 s)
    with MotorBus(proc.host_url, cycle_timeout_ms=20) as bus:
        bus.connect()
        reset_to(bus, client, 0)  # the arm holds still: no progress
        url = scripted_url("corrector", sim_url, task="pack_box", seed=0, stall_steps=stall,
                           reaction_delay_steps=delay)
        with open_teleop(url) as dev:
            assert wait_for(lambda: dev.samples >= 10, 10.0), dev.latest()
            early = dev.latest()
            assert not early.engaged and early.target is None
            assert early.source == "scripted+corrector"
            assert wait_for(lambda: dev.engaged_sample() is not None, 5.0), dev.events
            sample = dev.engaged_sample()
            steps = dev.samples
            assert dev.error is None
            events = dev.events
    assert sample.reason == "stall" and sample.target.shape == (7,)
    assert np.all(np.isfinite(sample.target))
    assert [e.kind for e in events[:2]] == ["noticed", "takeover"]
    assert events[1].step >= stall + delay and steps <= 2 * (stall + delay)


def test_when_the_emulator_runs_another_seed_expect_the_device_waits_then_follows_a_reset(
    sim_emulator,
):
    proc, sim_url, client = sim_emulator
    with MotorBus(proc.host_url, cycle_timeout_ms=20) as bus:
        bus.connect()
        reset_to(bus, client, 1)
        with open_teleop(scripted_url("expert", sim_url, task="pack_box", seed=0)) as dev:
            assert wait_for(lambda: dev.samples >= 3, 10.0)
            waiting = dev.latest()
            assert not waiting.engaged and "pack_box seed 1, not pack_box seed 0" in waiting.reason
            dev.reset_episode(seed=1)
            assert wait_for(lambda: dev.engaged_sample() is not None, 5.0), dev.latest()
            assert dev.episode.seed == 1
            with pytest.raises(TypeError, match="takes seed and task"):
                dev.reset_episode(speed=2)
