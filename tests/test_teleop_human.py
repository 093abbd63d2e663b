"""A person's teleop devices against real parts: a gamepad/pedal as real ``input_event`` records
through a FIFO (no /dev/uinput here), the keyboard on a real pseudo-terminal, a leader arm on a
second emulator process moved by hand over its sim channel, and the controller taking over from
them (follower pose fed in, handover both ways, e-stop from the keyboard)."""

from __future__ import annotations

import contextlib
import os
import pty
import sys
import termios
import threading
import time
from importlib import resources

import numpy as np
import pytest

from firmware_bridge.bus import MotorBus
from firmware_bridge.emulator.process import EmulatorProcess
from firmware_bridge.emulator.sim_link import SimClient
from firmware_bridge.errors import EdgeError
from ramp_edge.config import load_config
from ramp_edge.controller import Controller, ControllerError, StepRecord
from ramp_edge.teleop import TeleopDevice, TeleopError, TeleopSample, TeleopUrlError, open_teleop
from ramp_edge.teleop.evdev_device import (
    EV_ABS,
    EV_KEY,
    EV_SYN,
    EVENT,
    SYN_DROPPED,
    EvdevReader,
    EvdevTrigger,
)
from ramp_edge.teleop.human import HumanDevice
from ramp_edge.teleop.keyboard import key_tokens
from ramp_edge.teleop.leader_arm import LeaderArmDevice, split_leader_url

BTN_SOUTH, BTN_MODE, ABS_X, ABS_Y = 0x130, 0x13C, 0x00, 0x01
# Replies may be slow on a shared 2-core machine: a generous leader state timeout (ms).
LOADED = "timeout_ms=50&"
REST = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.02])  # the emulator's initial pose


def pose(*deltas: float) -> np.ndarray:
    """REST moved by ``deltas`` on the first joints."""
    out = REST.copy()
    out[:len(deltas)] += deltas
    return out


def wait_for(predicate, timeout_s: float = 3.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def event(etype: int, code: int, value: int) -> bytes:
    return EVENT.pack(0, 0, etype, code, value)


def syn() -> bytes:
    return event(EV_SYN, 0, 0)


# -- URLs -------------------------------------------------------------------------------------
@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "event0"
    os.mkfifo(path)
    return str(path)


@pytest.mark.parametrize(("url", "match"), [
    ("leader+serial:///dev/ttyACM9", "give one of trigger="),
    ("leader+serial:///dev/ttyACM9?auto=0.1&trigger=always", "give one of trigger="),
    ("leader+serial:///dev/ttyACM9?auto=0.1&release=0.2", "release must be below auto"),
    ("leader+serial:///dev/ttyACM9?auto=-1", "auto='-1' must be a finite number > 0"),
    ("leader+serial:///dev/ttyACM9?trigger=gamepad://x", "trigger must be always or a URL"),
    ("leader+serial:///dev/ttyACM9?trigger=always&sim_url=zmq+ipc:///x", "emulated leader"),
    ("leader+serial:///dev/ttyACM9?trigger=always&sync=yes", "sync is 0 or 1"),
    ("evdev://{fifo}?button=BTN_NOPE", "button='BTN_NOPE' is not a known"),
    ("evdev://{fifo}?mode=latch", "mode must be hold or toggle"),
    ("evdev://{fifo}?jog=ABS_X:0", "jog binding 'ABS_X:0' is AXIS:JOINT:RATE"),
    ("evdev://{fifo}?jog=ABS_X:1.5:0.5", "not a joint index"),
    ("evdev://{fifo}?bogus=1", "unknown parameter 'bogus'"),
    ("evdev://{fifo}?button=BTN_A&button=BTN_B", "given twice"),
    ("evdev://", "names a device file"),
    ("evdev://host/dev/input/event0", "names a device file"),
    ("keyboard://host/dev/pts/1", "keyboard://"),
    ("keyboard://?keys=qq", "one pair of distinct keys"),
    ("keyboard://?step=0", "step='0' must be a finite number > 0"),
])
def test_when_a_persons_device_url_is_bad_expect_one_clear_url_error(url, match, fifo):
    with pytest.raises(TeleopUrlError, match=match) as info:
        open_teleop(url.format(fifo=fifo))
    assert isinstance(info.value, EdgeError) and "\n" not in str(info.value)


def test_when_a_leader_url_mixes_parameters_expect_the_bus_to_get_only_its_own():
    bus, params = split_leader_url(
        "leader+serial:///dev/ttyACM1?baud=3000000&auto=0.15&trigger=")
    assert bus == "serial:///dev/ttyACM1?baud=3000000"
    assert params["auto"] == "0.15" and params["sync"] == "0"
    bus, params = split_leader_url(
        "leader+zmq+ipc:///run/leader?trigger=evdev%3A%2F%2F%2Fdev%2Finput%2Fe%3Fbutton%3DBTN_0"
        "%26mode%3Dtoggle")
    assert bus == "zmq+ipc:///run/leader"
    assert params["trigger"] == "evdev:///dev/input/e?button=BTN_0&mode=toggle"


def test_when_a_device_file_is_missing_expect_a_teleop_error_naming_it(tmp_path):
    with pytest.raises(TeleopError, match=r"cannot open input device .*nothing"):
        open_teleop(f"evdev://{tmp_path}/nothing")
    with pytest.raises(TeleopError, match="is a directory"):
        open_teleop(f"evdev://{tmp_path}")
    with pytest.raises(TeleopError, match=r"cannot open terminal .*nothing"):
        open_teleop(f"keyboard://{tmp_path}/nothing")
    with pytest.raises(TeleopError, match="is not a terminal"):
        open_teleop(f"keyboard://{os.devnull}")


# -- gamepad and pedal through evdev ------------------------------------------------------------
@pytest.fixture
def evdev_writer(fifo):
    """Opens the device at the FIFO, then the writing end (a reader must exist first)."""
    opened = []

    def open_device(query: str):
        dev = open_teleop(f"evdev://{fifo}?{query}")
        opened.append(dev)
        fd = os.open(fifo, os.O_WRONLY)
        opened.append(fd)
        return dev, fd

    yield open_device
    for item in opened:
        if isinstance(item, int):
            os.close(item)
        else:
            item.close()


def test_when_the_button_is_held_and_a_stick_pushed_expect_jogging_from_the_follower_pose(
    evdev_writer,
):
    dev, fd = evdev_writer("button=BTN_SOUTH&jog=ABS_X:0:0.5,ABS_Y:1:-0.5&axis_range=-100:100"
                           "&lead=0.3")
    pose = np.array([0.1, 0.2, -0.3, 0.0, 0.0, 0.0, 0.02])
    dev.set_follower(pose)
    assert wait_for(lambda: dev.samples > 0)
    assert not dev.latest().engaged and dev.latest().reason == "BTN_SOUTH released"
    os.write(fd, event(EV_KEY, BTN_SOUTH, 1) + syn())
    assert wait_for(lambda: dev.engaged_sample() is not None)
    np.testing.assert_allclose(dev.engaged_sample().target, pose)  # starts where the arm is
    # Full deflection on X, half on Y (-100..100), written as two halves of the records.
    data = event(EV_ABS, ABS_X, 100) + event(EV_ABS, ABS_Y, 50) + syn()
    os.write(fd, data[:30])
    os.write(fd, data[30:])
    assert wait_for(lambda: dev.engaged_sample().target[0] > pose[0] + 0.1)
    target = dev.engaged_sample().target
    assert target[1] < pose[1]  # negative rate: pushing Y up moves joint 1 down
    assert abs(target[1] - pose[1]) < abs(target[0] - pose[0])  # half deflection, after dead zone
    np.testing.assert_allclose(target[2:], pose[2:])
    assert wait_for(lambda: dev.engaged_sample().target[0] >= pose[0] + 0.3 - 1e-9)
    time.sleep(0.1)  # the follower stood still: the target stops 0.3 (lead) ahead
    assert dev.engaged_sample().target[0] == pytest.approx(pose[0] + 0.3)
    os.write(fd, event(EV_KEY, BTN_SOUTH, 0) + syn())
    assert wait_for(lambda: not dev.latest().engaged)
    assert dev.latest().target is None and dev.error is None


def test_when_a_pedal_toggles_and_its_estop_button_is_pressed_expect_an_estop_request(
    evdev_writer,
):
    dev, fd = evdev_writer("button=KEY_B&mode=toggle&estop=BTN_MODE")
    dev.set_follower(REST)
    for press in (1, 0):  # press and release: on
        os.write(fd, event(EV_KEY, 48, press) + syn())
    assert wait_for(lambda: dev.engaged_sample() is not None)
    np.testing.assert_allclose(dev.engaged_sample().target, REST)  # no jog: hold where it is
    assert dev.take_estop_request() is None
    os.write(fd, event(EV_KEY, BTN_MODE, 1) + syn())
    assert wait_for(lambda: not dev.latest().engaged)
    assert "e-stop button" in dev.latest().reason
    assert "e-stop button" in dev.take_estop_request()
    assert dev.take_estop_request() is None  # once


def test_when_events_were_dropped_expect_the_held_button_treated_as_released(evdev_writer):
    dev, fd = evdev_writer("button=BTN_SOUTH")
    dev.set_follower(REST)
    os.write(fd, event(EV_KEY, BTN_SOUTH, 1) + syn())
    assert wait_for(lambda: dev.engaged_sample() is not None)
    # A FIFO cannot answer EVIOCGKEY: the button's state is unknown, so not held.
    os.write(fd, event(EV_SYN, SYN_DROPPED, 0))
    assert wait_for(lambda: not dev.latest().engaged)
    assert dev.trigger.reader.dropped == 1


# -- the keyboard on a pseudo-terminal -----------------------------------------------------------
@pytest.fixture
def terminal():
    master, slave = pty.openpty()
    yield master, slave, os.ttyname(slave)
    os.close(slave)
    with contextlib.suppress(OSError):  # unless the test closed it
        os.close(master)


def test_when_keys_are_typed_expect_toggle_jog_and_estop_and_the_terminal_restored(terminal):
    master, slave, path = terminal
    before = termios.tcgetattr(slave)
    dev = open_teleop(f"keyboard://{path}?step=0.05")
    try:
        lflag = termios.tcgetattr(slave)[3]
        assert not lflag & (termios.ICANON | termios.ECHO) and lflag & termios.ISIG
        os.write(master, b"q")  # jogging before a takeover moves nothing
        dev.set_follower(REST)
        os.write(master, b" ")
        assert wait_for(lambda: dev.engaged_sample() is not None)
        np.testing.assert_allclose(dev.engaged_sample().target, REST)
        os.write(master, b"qqw\x1b[Aa")  # an arrow key is an escape sequence, not Esc
        expect = pose(0.05, 0.05)
        assert wait_for(lambda: np.allclose(dev.engaged_sample().target, expect))
        assert dev.take_estop_request() is None
        os.write(master, b" ")
        assert wait_for(lambda: not dev.latest().engaged)
        os.write(master, b" ")
        assert wait_for(lambda: dev.engaged_sample() is not None)
        os.write(master, b"\x1b")
        assert wait_for(lambda: not dev.latest().engaged)
        assert "Esc" in dev.take_estop_request() and "Esc" in dev.latest().reason
    finally:
        dev.close()
    assert termios.tcgetattr(slave) == before


def test_when_the_terminal_hangs_up_expect_the_device_failed_and_disengaged(terminal):
    master, _slave, path = terminal
    dev = open_teleop(f"keyboard://{path}")
    try:
        dev.set_follower(REST)
        os.write(master, b" ")
        assert wait_for(lambda: dev.engaged_sample() is not None)
        os.close(master)  # the terminal goes away under the device
        assert wait_for(lambda: dev.error is not None)
        assert "hung up" in str(dev.error)
        assert not dev.latest().engaged and dev.engaged_sample() is None
    finally:
        dev.close()


def test_when_the_device_fails_expect_the_terminal_restored_before_close(terminal):
    master, slave, path = terminal
    before = termios.tcgetattr(slave)
    dev = open_teleop(f"keyboard://{path}?step=0.1,0.2,0.3")  # 3 steps for 7 joints
    try:
        assert termios.tcgetattr(slave) != before
        dev.set_follower(REST)
        os.write(master, b" ")
        assert wait_for(lambda: dev.error is not None)
        assert "step has 3 values for 7 joints" in str(dev.error)
        # The failure is published first (the controller hands back at once), then the
        # person gets their terminal back, before anyone closes the device.
        assert wait_for(lambda: termios.tcgetattr(slave) == before)
    finally:
        dev.close()
    assert termios.tcgetattr(slave) == before


def test_when_bytes_mix_keys_and_arrow_key_sequences_expect_only_keys():
    assert key_tokens(b" q\x1b[Aw\x1bODx\x1b") == [" ", "q", "w", "x", "esc"]
    assert key_tokens(b"\x1b[A\x1b[B\x1b[C\x1b[D\x1bOA\x1bOB\x1bOC\x1bOD") == []


@pytest.mark.parametrize("data", [
    b"\x1b[", b"\x1bO", b"\x1b[q", b"\x1bOq", b"\x1b[1;5A", b"\x1bOP", b"\x1b\x1b[A", b"\x1b[\x1b",
])
def test_when_esc_is_followed_by_anything_but_an_arrow_key_sequence_expect_an_estop(data):
    assert key_tokens(data)[0] == "esc"


def test_when_esc_and_a_bracket_arrive_in_one_read_expect_the_keyboard_estop(terminal):
    master, _slave, path = terminal
    with open_teleop(f"keyboard://{path}") as dev:
        dev.set_follower(REST)
        os.write(master, b" ")
        assert wait_for(lambda: dev.engaged_sample() is not None)
        os.write(master, b"\x1b[")  # Esc, then "[" typed at once: not an arrow key
        assert wait_for(lambda: not dev.latest().engaged)
        assert "Esc" in dev.take_estop_request()


# -- the leader arm on its own emulator ----------------------------------------------------------
@pytest.fixture
def leader_emulator(tmp_path):
    """A second emulator process as the leader arm, movable by hand over its sim channel."""
    sim_url = f"zmq+ipc://{tmp_path}/leader-sim.sock"
    with EmulatorProcess(f"pty://{tmp_path}/leader", ("--sim-url", sim_url,
                                                      "--device-id", "leader")) as proc:
        client = SimClient(sim_url)
        try:
            yield proc.host_url, client
        finally:
            client.close()


def test_when_the_leader_is_moved_beyond_auto_expect_takeover_and_handback_near_rest(
    leader_emulator,
):
    host_url, hand = leader_emulator
    with open_teleop(f"leader+{host_url}?{LOADED}auto=0.15&release=0.05") as dev:
        assert wait_for(lambda: dev.phase == "ready")  # no sync: rest is where it stands
        np.testing.assert_allclose(dev.rest, REST, atol=1e-6)
        hand.move_by_hand(list(pose(0.1)))  # within the threshold
        time.sleep(0.1)
        assert not dev.latest().engaged
        moved = pose(0.1, 0.2)
        hand.move_by_hand(list(moved))
        assert wait_for(lambda: dev.engaged_sample() is not None)
        sample = dev.engaged_sample()
        np.testing.assert_allclose(sample.target, moved, atol=1e-6)
        assert sample.source == "leader" and "moved 0.20" in sample.reason
        hand.move_by_hand(list(pose(0.08)))  # between release and auto
        time.sleep(0.1)
        assert dev.engaged_sample() is not None  # hysteresis: still the person's
        hand.move_by_hand(list(pose(0.03)))
        assert wait_for(lambda: not dev.latest().engaged)
        assert "handback" in dev.latest().reason and dev.error is None


def test_when_the_leader_is_actuated_expect_it_driven_to_the_follower_pose_then_limp(
    leader_emulator,
):
    host_url, hand = leader_emulator
    follower = pose(0.15, -0.1, 0.05)
    with open_teleop(f"leader+{host_url}?{LOADED}trigger=always&sync=1&sync_speed=0.5") as dev:
        time.sleep(0.1)
        assert dev.phase == "idle" and dev.latest().reason == "waiting for the follower's pose"
        dev.set_follower(follower)
        assert wait_for(lambda: dev.phase == "sync")
        assert dev.engaged_sample() is None  # no takeover before it arrives
        assert wait_for(lambda: dev.engaged_sample() is not None, 5.0), dev.latest()
        np.testing.assert_allclose(dev.engaged_sample().target, follower, atol=0.011)
        assert dev.syncs == 1
        hand.move_by_hand(list(follower))  # only possible with torque off: it is limp again


def test_when_the_leader_cannot_reach_the_follower_expect_the_device_stopped_limp(
    leader_emulator,
):
    host_url, hand = leader_emulator
    url = f"leader+{host_url}?{LOADED}trigger=always&sync=1&sync_speed=0.1&sync_timeout_s=0.3"
    with open_teleop(url) as dev:
        dev.set_follower(pose(1.0))
        assert wait_for(lambda: dev.error is not None)
        assert "did not reach the follower's pose within 0.3 s" in str(dev.error)
        assert not dev.latest().engaged
        hand.move_by_hand(list(REST))  # torque is off


# -- the controller taking over from a person's device -------------------------------------------
class SteadyEngine:
    """Chunks that hold the pose they were given: the policy keeps the arm still."""

    backend = "test-steady"

    def predict(self, obs, mode="standard"):
        class Prediction:
            actions = np.tile(np.asarray(obs, dtype=np.float64), (50, 1))
            value = -0.5

        return Prediction()


def run_controller(teleop, duration_s: float, script, **kw) -> tuple[dict, list[StepRecord]]:
    """Run an episode against the in-process emulator (``sim://``) while ``script(controller)``
    runs on another thread, as a person would; the episode stops when the script ends (or
    after ``duration_s``, a bound for a slow machine)."""
    bus = MotorBus("sim://")
    bus.connect()
    steps: list[StepRecord] = []
    controller = Controller(load_config(), bus, SteadyEngine(), lambda s, i: s.position,
                            on_step=steps.append, teleop=teleop, **kw)
    failures: list[BaseException] = []

    def person() -> None:
        try:
            script(controller)
        except BaseException as err:  # reported by the test below
            failures.append(err)
        controller.request_stop("the person is done")

    thread = threading.Thread(target=person, daemon=True)
    with bus:
        thread.start()
        summary = controller.run_episode(duration_s)
    thread.join(timeout=10)
    if failures:
        raise failures[0]
    return summary, steps


def test_when_a_leader_arm_is_moved_expect_takeover_the_follower_following_and_handback(
    leader_emulator,
):
    """The emulated robot (sim://) runs a policy that holds still; the leader is a second
    emulator process. Budget: about 3 s of episode."""
    host_url, hand = leader_emulator
    moved = pose(0.3, -0.2)
    log: dict[str, float] = {}

    def person(controller: Controller) -> None:
        assert wait_for(lambda: controller.states.state.name == "RUNNING", 10.0), "no policy"
        assert wait_for(lambda: dev.phase == "ready", 10.0), dev.latest()
        hand.move_by_hand(list(moved))
        assert wait_for(lambda: controller.states.state.name == "TAKEOVER", 5.0), dev.latest()
        assert wait_for(lambda: np.allclose(controller._latest.position, moved, atol=0.01),
                        5.0), controller._latest.position
        hand.move_by_hand(list(dev.rest))
        assert wait_for(lambda: controller.states.state.name == "RUNNING", 5.0), dev.latest()
        log["handback"] = time.monotonic()
        # The policy drives again while the leader is driven to where the follower now is.
        assert wait_for(lambda: dev.syncs == 2, 10.0), dev.latest()

    with open_teleop(f"leader+{host_url}?{LOADED}auto=0.15&sync=1&sync_speed=0.6") as dev:
        summary, steps = run_controller(dev, 30.0, person, handover_s=0.3)
        assert dev.error is None, dev.error
        # at start and after the handback: then at rest where the policy holds the follower
        assert dev.syncs == 2 and dev.phase == "ready"
        np.testing.assert_allclose(dev.rest, steps[-1].command, atol=0.02)
    names = [(a, b) for a, b, _ in summary["transitions"]]
    assert ("RUNNING", "TAKEOVER") in names and ("TAKEOVER", "RUNNING") in names
    reason = next(r for a, b, r in summary["transitions"] if b == "TAKEOVER")
    assert reason.startswith("takeover by leader: leader moved")
    human = [s for s in steps if s.source == "human"]
    assert human and summary["source_steps"]["human"] == len(human)
    np.testing.assert_allclose(human[-1].command, moved, atol=0.01)  # the follower followed
    after = [s for s in steps if s.t_s > log["handback"] and s.state is not None]
    assert after and {s.source for s in after} <= {"policy", "ramp", "hold", "stop"}
    # Smooth both ways: no command step beyond what the blend and the safety filter allow.
    config = load_config()
    vmax = np.array([j.max_velocity_per_s for j in config.joints])
    jumps = np.abs(np.diff([s.command for s in steps], axis=0))
    assert np.all(jumps <= vmax / config.rates.control_hz + 1e-6)
    assert summary["final_state"] == "IDLE"


def test_when_esc_is_pressed_during_a_keyboard_takeover_expect_the_controller_estopped(
    terminal,
):
    master, _slave, path = terminal

    def person(controller: Controller) -> None:
        assert wait_for(lambda: controller.states.state.name == "RUNNING", 10.0), "no policy"
        os.write(master, b" ")
        assert wait_for(lambda: controller.states.state.name == "TAKEOVER", 5.0), dev.latest()
        os.write(master, b"qqqq")  # joint 0 up by 4 x 0.05
        assert wait_for(lambda: controller._latest.position[0] > 0.199, 5.0)
        os.write(master, b"\x1b")
        assert wait_for(lambda: controller.states.state.name == "ESTOP", 5.0), dev.latest()

    with open_teleop(f"keyboard://{path}?step=0.05") as dev:
        summary, steps = run_controller(dev, 30.0, person)
    assert summary["final_state"] == "ESTOP"
    assert "Esc" in summary["transitions"][-1][2]
    assert "human" in summary["source_steps"]
    assert max(s.command[0] for s in steps) == pytest.approx(0.2, abs=1e-3)


# -- the [teleop] config section ---------------------------------------------------------------
def test_when_the_config_has_a_teleop_section_expect_the_controller_to_use_its_times():
    from ramp_edge.config import parse_config
    from ramp_edge.errors import ConfigError

    text = resources.files("ramp_edge.robots").joinpath("emulated.toml").read_text("utf-8")
    config = parse_config(text + '\n[teleop]\nurl = "leader+serial:///dev/ttyACM1?auto=0.15"\n'
                          "handover_s = 0.8\nmax_sample_age_ms = 150\n", "test.toml")
    assert config.teleop.url.startswith("leader+") and config.teleop.handover_s == 0.8
    controller = Controller(config, MotorBus("sim://"), SteadyEngine(), lambda s, i: s)
    assert controller.handover_s == 0.8 and controller.teleop_max_age_s == pytest.approx(0.15)
    assert load_config().teleop.url == ""  # the built-in robot has no takeover device
    with pytest.raises(ConfigError, match="handover_s must be >= 0"):
        parse_config(text + "\n[teleop]\nhandover_s = -1\n", "test.toml")


# -- e-stop requests are never lost ---------------------------------------------------------------
class Unstarted(HumanDevice):
    """A person's device whose thread never starts: the test plays the device thread."""

    def __init__(self) -> None:
        super().__init__("unstarted", "unstarted://")

    def _poll(self):
        return None


def test_when_an_estop_is_filed_at_any_point_of_a_take_expect_a_take_to_report_it():
    """Every interleaving of one filing with one take: the filing runs at the k-th bytecode
    instruction of take_estop_request (where the GIL may hand over to the device thread), for
    every k. A take made then, or the next one, must report it."""
    take_code = HumanDevice.take_estop_request.__code__
    k = 0
    while True:
        dev = Unstarted()
        dev.request_estop("first")
        executed = [0]

        def on_call(frame, event, arg, dev=dev, executed=executed, k=k):
            if frame.f_code is not take_code:
                return None
            frame.f_trace_opcodes = True

            def on_opcode(frame, event, arg):
                if event == "opcode":
                    if executed[0] == k:
                        dev.request_estop("second")  # the device thread, preempting here
                    executed[0] += 1
                return on_opcode

            return on_opcode

        previous = sys.gettrace()
        sys.settrace(on_call)
        try:
            first = dev.take_estop_request()
        finally:
            sys.settrace(previous)
        if executed[0] <= k:  # the take ran to its end before point k: all points tried
            break
        second = dev.take_estop_request()
        assert "second" in (first, second), f"a request filed at instruction {k} was lost"
        assert first is not None and dev.take_estop_request() is None  # then nothing pending
        k += 1
    assert k >= 4  # the take was traced instruction by instruction


# -- a device's joints and targets ---------------------------------------------------------------
class FixedTarget(TeleopDevice):
    """A device that always wants control with one fixed target (a broken backend)."""

    def __init__(self, target: np.ndarray) -> None:
        super().__init__("fixed", "fixed://")
        self.target = target
        self.start()

    def _poll(self) -> TeleopSample:
        return TeleopSample(time.monotonic(), True, self.target, "fixed", "wants control")


@pytest.mark.parametrize("target", [np.zeros(6), np.array([0.3]), np.full(7, np.nan)],
                         ids=["6 joints", "1 element", "not finite"])
def test_when_a_device_target_has_the_wrong_shape_or_is_not_finite_expect_no_takeover(
    target, caplog,
):
    def person(controller: Controller) -> None:
        assert wait_for(lambda: controller.states.state.name == "RUNNING", 10.0), "no policy"
        time.sleep(0.3)

    with FixedTarget(target) as dev, caplog.at_level("WARNING", "ramp_edge.controller"):
        summary, steps = run_controller(dev, 30.0, person)
    assert summary["final_state"] == "IDLE"
    assert "TAKEOVER" not in {b for _, b, _ in summary["transitions"]}
    assert "human" not in summary["source_steps"]
    assert summary["teleop_rejected"] >= 1
    warned = [r for r in caplog.records if "teleop_rejected" in r.getMessage()]
    assert len(warned) == 1  # once, however many samples
    assert max(abs(s.command - REST).max() for s in steps) < 1e-6  # the policy held still


@pytest.fixture
def small_leader(tmp_path):
    """A leader arm with 6 joints (an emulator process), for a robot with 7."""
    url = f"leader+emulator+pty://{tmp_path}/leader6?{LOADED}joints=6&trigger=always"
    with open_teleop(url) as dev:
        yield dev


def test_when_the_leader_has_other_joints_than_the_robot_expect_it_refused(small_leader):
    config = load_config()
    with pytest.raises(TeleopError, match="moves 6 joints, the robot has 7"):
        small_leader.check_joints(config.joint_names)
    with pytest.raises(ControllerError, match="cannot lead this robot") as info:
        Controller(config, MotorBus("sim://"), SteadyEngine(), lambda s, i: s.position,
                   teleop=small_leader)
    assert "\n" not in str(info.value)
    small_leader.set_follower(REST)  # fed anyway: the device stops rather than lead
    assert wait_for(lambda: small_leader.error is not None)
    assert "has 6 joints, the follower 7" in str(small_leader.error)
    assert small_leader.engaged_sample() is None


def test_when_the_leader_names_other_joints_expect_a_clear_error_at_open(leader_emulator):
    host_url, _hand = leader_emulator
    names = [f"j{i}" for i in range(7)]
    with pytest.raises(TeleopError, match=r"reports joints \['shoulder_pan'.*the robot has"):
        LeaderArmDevice(f"leader+{host_url}?{LOADED}trigger=always", joint_names=names)
    with LeaderArmDevice(f"leader+{host_url}?{LOADED}trigger=always",
                         joint_names=load_config().joint_names) as dev:
        dev.check_joints(load_config().joint_names)  # the same joints: accepted
        with pytest.raises(TeleopError, match="reports joints"):
            dev.check_joints(names)


# -- the leader's keyboard trigger ----------------------------------------------------------------
def test_when_esc_is_pressed_again_after_a_leader_estop_expect_every_press_forwarded(
    leader_emulator, terminal,
):
    master, _slave, path = terminal
    host_url, _hand = leader_emulator
    with open_teleop(f"leader+{host_url}?{LOADED}trigger=keyboard://{path}") as dev:
        for press in range(3):
            os.write(master, b"\x1b")
            got: list[str | None] = []
            assert wait_for(lambda got=got: got.append(dev.take_estop_request()) or any(got))
            assert "Esc" in next(r for r in got if r), press
            assert wait_for(lambda: dev.phase == "estop" and not dev.latest().engaged)
        assert dev.error is None


def test_when_a_leader_with_a_keyboard_trigger_fails_expect_the_terminal_restored_at_once(
    leader_emulator, terminal,
):
    _master, slave, path = terminal
    host_url, _hand = leader_emulator
    before = termios.tcgetattr(slave)
    url = (f"leader+{host_url}?{LOADED}trigger=keyboard://{path}&sync=1&sync_speed=0.1"
           "&sync_timeout_s=0.3")
    with open_teleop(url) as dev:
        assert termios.tcgetattr(slave) != before  # cbreak while it runs
        dev.set_follower(pose(1.0))  # too far for the timeout: the leader fails
        assert wait_for(lambda: dev.error is not None)
        assert wait_for(lambda: termios.tcgetattr(slave) == before)  # before close


# -- a leader built from DYNAMIXEL servos ---------------------------------------------------------
def test_when_the_leader_bus_is_dynamixel_expect_it_opened_as_the_robot_bus_is(tmp_path):
    with pytest.raises(TeleopError, match="cannot use the leader arm") as info:
        open_teleop(f"leader+dynamixel://{tmp_path}/no-port?ids=1-7&trigger=always")
    assert "\n" not in str(info.value)
    with open_teleop(f"leader+emulator+dynamixel+pty://{tmp_path}/dxl?ids=1-7&{LOADED}"
                     "trigger=always") as dev:
        assert wait_for(lambda: dev.engaged_sample() is not None, 5.0), dev.latest()
        assert dev.n_joints == 7 and dev.joint_names is None  # servos know no names
        target = dev.engaged_sample().target
        assert target.shape == (7,) and np.all(np.abs(target) < 0.1)  # where the servos rest
        dev.check_joints(load_config().joint_names)  # the count matches


# -- evdev: lost events ----------------------------------------------------------------------------
class KernelKeys(EvdevReader):
    """A reader whose device answers EVIOCGKEY with ``down`` held (what a kernel input device
    does; a FIFO cannot, and this machine has no /dev/uinput to make one)."""

    def __init__(self, path: str, watch: tuple[int, ...], down: set[int]) -> None:
        super().__init__(path, watch)
        self.down = down

    def _key_bits(self) -> bytes:
        bits = bytearray(0x300 // 8)
        for code in self.down:
            bits[code // 8] |= 1 << (code % 8)
        return bytes(bits)


def test_when_an_estop_press_is_lost_in_an_overflow_expect_it_read_back_and_requested(fifo):
    trigger = EvdevTrigger(f"evdev://{fifo}?button=BTN_SOUTH&estop=BTN_MODE")
    fd = None
    try:
        reader = KernelKeys(fifo, trigger.reader.watch, {BTN_MODE})
        trigger.reader.close()
        trigger.reader = reader
        fd = os.open(fifo, os.O_WRONLY)
        os.write(fd, event(EV_KEY, BTN_SOUTH, 1) + syn())
        assert trigger.update() and trigger.take_estop_request() is None
        # The e-stop press (and the takeover button's release) were lost; the kernel says so.
        os.write(fd, event(EV_SYN, SYN_DROPPED, 0) + syn())
        reader.down = {BTN_MODE}
        assert not trigger.update()
        assert "e-stop button" in trigger.take_estop_request()
        os.write(fd, event(EV_SYN, SYN_DROPPED, 0) + syn())  # nothing changed meanwhile
        assert not trigger.update()
        assert trigger.take_estop_request() is None  # the same press, still held: not again
    finally:
        if fd is not None:
            os.close(fd)
        trigger.close()


def test_when_events_are_lost_and_the_key_state_cannot_be_read_expect_an_estop(evdev_writer):
    dev, fd = evdev_writer("button=BTN_SOUTH&estop=BTN_MODE")
    dev.set_follower(REST)
    os.write(fd, event(EV_KEY, BTN_SOUTH, 1) + syn())
    assert wait_for(lambda: dev.engaged_sample() is not None)
    os.write(fd, event(EV_SYN, SYN_DROPPED, 0))  # a FIFO cannot answer EVIOCGKEY
    assert wait_for(lambda: not dev.latest().engaged)
    assert "cannot be read" in dev.take_estop_request()


# -- the device's rate against the sample age limit ------------------------------------------------
def test_when_a_device_reads_too_slowly_for_the_sample_age_limit_expect_a_warning(
    terminal, caplog,
):
    _master, _slave, path = terminal
    config = load_config()  # max_sample_age_ms = 200 by default
    for rate_hz, warned in ((5, True), (50, False)):
        caplog.clear()
        with open_teleop(f"keyboard://{path}?rate_hz={rate_hz}") as dev, \
                caplog.at_level("WARNING", "ramp_edge.controller"):
            Controller(config, MotorBus("sim://"), SteadyEngine(), lambda s, i: s.position,
                       teleop=dev)
        hits = [r for r in caplog.records if "max_sample_age_ms" in r.getMessage()]
        assert bool(hits) is warned, (rate_hz, caplog.text)
