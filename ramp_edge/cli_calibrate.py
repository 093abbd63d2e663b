"""``ramp-edge calibrate ...``: the technician's calibration at the robot's console.

A thin shell over :mod:`calibration`: ``run`` (the guided flow), ``show``, ``verify``,
``apply``, ``diff``. Human output on stderr, ``--json`` on stdout. Exit codes: 0 done; 1 an
error (one line says what to do), and also when ``verify`` finds the motor controller
disagreeing with the file or the verification is not confirmed, and when ``diff`` finds
differences; 2 bad usage; 130 interrupted (torque stays off, or holding after a verification
move).

The emulated robot (bus ``emulator+...``) starts a fresh emulator for each command, and the
emulator keeps its calibration in RAM only: to calibrate it as a real robot, start one yourself
(``ramp-edge emulator serve --url pty:///tmp/ttyEMU --sim-url zmq+ipc:///tmp/sim.sock``), point
a robot config's bus at ``serial:///tmp/ttyEMU`` and move its joints through the sim channel
(``SimClient.move_by_hand``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from calibration.answers import Answers, load_answers
from calibration.calibration_file import (
    CalibrationFile,
    calibration_path,
    diff_joints,
    load_calibration,
)
from calibration.errors import AnswersError, CalibrationError
from calibration.joints import CalibrationOptions, JointSpec, prompt_keys
from calibration.prompter import Prompter, ScriptedPrompter, Style, Table
from calibration.terminal import TerminalPrompter
from firmware_bridge.bus import MotorBus
from firmware_bridge.errors import DeviceTimeoutError, ProtocolError
from ramp_edge.config import RobotConfig, load_config
from ramp_edge.control_socket import ControlSocketError, send_command, socket_path
from ramp_edge.home import resolve_home
from ramp_edge.robot_link import EMULATOR_PREFIX, open_robot_bus

calibrate_app = typer.Typer(
    help="Calibrate the robot: the guided procedure (run), show the file, verify it against "
         "the robot, apply it to the motor controller, diff two calibrations.",
    no_args_is_help=True)

EXIT_INTERRUPTED = 130

RobotOpt = Annotated[str | None, typer.Option(
    help="Robot config (TOML). Default: the built-in emulated robot.")]
HomeOpt = Annotated[str | None, typer.Option(
    help="Where the robot keeps its files (default: $RAMP_EDGE_HOME or the user's data dir).")]
FileOpt = Annotated[Path | None, typer.Option(
    "--file", help="Calibration file. Default: HOME/calibration/ROBOT_ID.json.")]
AnswersOpt = Annotated[Path | None, typer.Option(
    help="Answer every prompt from this TOML/JSON file and run headless (see "
         "calibration/answers.py for the keys).")]
YesOpt = Annotated[bool, typer.Option(
    "--yes", "-y", help="Headless: take every step as done and answer every question yes "
                        "(unless the answers file says otherwise).")]
TechnicianOpt = Annotated[str | None, typer.Option(
    help="Who calibrates (recorded in the file). Default: the login name.")]
SimUrlOpt = Annotated[str | None, typer.Option(
    help="Emulated robot only: serve the emulator's simulation channel here (zmq+ipc:///PATH) "
         "so its joints can be moved by hand from a script.")]
AmplitudeRadOpt = Annotated[float | None, typer.Option(
    min=0.001, max=0.5, help="Verification move of each revolute joint, rad (default 0.1).")]
AmplitudeMOpt = Annotated[float | None, typer.Option(
    min=0.0005, max=0.05, help="Verification move of each prismatic joint, m (default 0.01).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")]


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def joint_specs(config: RobotConfig) -> list[JointSpec]:
    """The calibration's view of the configured joints; a joint whose name contains "gripper"
    is calibrated as a gripper (closed = 0, open = its stroke)."""
    return [JointSpec(j.name, j.unit, j.reach_m, j.max_velocity_per_s,
                      gripper="gripper" in j.name.lower()) for j in config.joints]


def _technician(name: str | None) -> str:
    if name is not None:
        return name
    with contextlib.suppress(Exception):  # no login name in some containers
        return os.environ.get("SUDO_USER") or getpass.getuser()
    return ""


def _setup(robot: str | None, home: str | None, file: Path | None
           ) -> tuple[RobotConfig, Path, Path]:
    config = load_config(robot)
    home_dir = resolve_home(home)
    path = file if file is not None else calibration_path(home_dir, config.robot_id)
    return config, home_dir, path


def _controller_must_be_stopped(home: Path) -> None:
    """The running controller owns the motor bus: calibrating under it would fight it."""
    try:
        reply = send_command(socket_path(home), {"cmd": "status"}, timeout_s=1.0)
    except ControlSocketError:
        return
    raise CalibrationError(f"the controller is running (state {reply.get('state', '?')}) and "
                           "owns the motor bus: stop it first (`sudo systemctl stop ramp-edge` "
                           "or Ctrl-C in its terminal)")


@contextlib.contextmanager
def _robot_bus(config: RobotConfig, sim_url: str | None) -> Iterator[MotorBus]:
    from calibration.hardware import explain_handshake_failure

    args: list[str] = []
    if sim_url:
        if not config.bus.url.startswith(EMULATOR_PREFIX):
            raise typer.BadParameter("--sim-url is only for an emulated robot (bus emulator+...)")
        args = ["--sim-url", sim_url]
    stack = contextlib.ExitStack()
    try:
        bus, _emulator = stack.enter_context(open_robot_bus(config, args))
    except (ProtocolError, DeviceTimeoutError) as err:  # duplicate motor ids: say which
        raise explain_handshake_failure(config.bus.url, err) from err
    with stack:
        yield bus


def _prompter(answers_path: Path | None, yes: bool, joints: list[JointSpec]
              ) -> tuple[Prompter, Answers | None]:
    if answers_path is None and not yes:
        return TerminalPrompter(), None
    answers = load_answers(answers_path) if answers_path else Answers(source="--yes")
    known = set(prompt_keys(joints))
    unknown = sorted(set(answers.prompts) - known)
    if unknown:
        raise AnswersError(f"{answers.source}: prompts.{unknown[0]}: no such prompt (known: "
                           f"{', '.join(sorted(known))})")
    return ScriptedPrompter(answers.prompt_answers(), yes=yes, source=answers.source), answers


def _options(joints: list[JointSpec], answers: Answers | None, technician: str | None,
             amplitude_rad: float | None, amplitude_m: float | None,
             verify_move: bool | None = None) -> CalibrationOptions:
    options = CalibrationOptions(technician=_technician(technician))
    if answers is not None:
        options = options.with_answers(answers)
        options.check_joints(joints, answers.source)
    changes: dict[str, Any] = {}
    amplitude = dict(options.verify_amplitude)
    if amplitude_rad is not None:
        amplitude["rad"] = amplitude_rad
    if amplitude_m is not None:
        amplitude["m"] = amplitude_m
    changes["verify_amplitude"] = amplitude
    if technician is not None:
        changes["technician"] = technician
    if verify_move is not None:
        changes["verify_move"] = verify_move
    return dataclasses.replace(options, **changes)


def _interrupted(what: str) -> typer.Exit:
    _say(f"ramp-edge calibrate: interrupted ({what})")
    return typer.Exit(EXIT_INTERRUPTED)


def _joint_rows(cal: CalibrationFile) -> Table:
    rows = tuple((j.name, j.unit, f"{j.homing_offset:+.6f}", f"{j.drive_sign:+d}",
                  f"{j.position_min:+.6f}", f"{j.position_max:+.6f}") for j in cal.joints)
    return Table(("joint", "unit", "homing_offset", "sign", "min", "max"), rows,
                 tuple("warn" if j.drive_sign < 0 else None for j in cal.joints))


@calibrate_app.command("run")
def run(
    robot: RobotOpt = None,
    home: HomeOpt = None,
    file: FileOpt = None,
    answers: AnswersOpt = None,
    yes: YesOpt = False,
    technician: TechnicianOpt = None,
    no_verify: Annotated[bool, typer.Option(
        "--no-verify", help="Skip the verification move (the file stays unverified).")] = False,
    verify_amplitude_rad: AmplitudeRadOpt = None,
    verify_amplitude_m: AmplitudeMOpt = None,
    clear_latched: Annotated[bool, typer.Option(
        "--clear-latched", help="Clear a latched fault or e-stop on the motor controller first "
        "(only after checking the robot).")] = False,
    sim_url: SimUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Calibrate the robot, guided step by step.

    Identify the motors, torque off, homing at the reference pose, directions, gripper, range
    of motion (live table), write to the motor controller and the file, then a verification
    move at reduced speed (tool <= 250 mm/s) you confirm. Interactive at a terminal; headless
    with --answers FILE or --yes."""
    from calibration.procedure import run_calibration

    config, home_dir, path = _setup(robot, home, file)
    joints = joint_specs(config)
    prompter, given = _prompter(answers, yes, joints)
    options = dataclasses.replace(
        _options(joints, given, technician, verify_amplitude_rad, verify_amplitude_m,
                 False if no_verify else None), clear_latched=clear_latched)
    _controller_must_be_stopped(home_dir)
    if config.bus.url.startswith(EMULATOR_PREFIX) and not sim_url:
        prompter.warn("emulated robot without --sim-url: nothing can move its joints by hand, "
                      "and its emulator forgets the calibration when this command ends")
    try:
        with _robot_bus(config, sim_url) as bus:
            outcome = run_calibration(bus, config.robot_id, joints, prompter, path, options)
    except KeyboardInterrupt:
        raise _interrupted("torque is off, or holding if the verification move had "
                           "started; nothing written unless step 7 said so") from None
    if as_json:
        cal = outcome.calibration
        print(json.dumps({
            "robot_id": cal.robot_id, "file": str(outcome.path), "sha256": cal.sha256,
            "verified": outcome.verification is not None,
            "device": outcome.identity.to_dict(),
            "joints": [j.to_dict() for j in cal.joints],
            "verification": outcome.verification.to_dict() if outcome.verification else None,
        }))


@calibrate_app.command("show")
def show(
    robot: RobotOpt = None,
    home: HomeOpt = None,
    file: FileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the calibration file, checked (format, values, sha256, robot id)."""
    config, _home, path = _setup(robot, home, file)
    cal = load_calibration(path, None if file is not None else config.robot_id)
    if as_json:
        print(json.dumps({"file": str(path), **json.loads(cal.to_json())}))
        return
    style = Style.for_stream(sys.stderr)
    _say(style.bold(f"{path}"))
    _say(f"  robot {cal.robot_id}, format version {cal.version}, sha256 {cal.sha256}")
    _say(f"  created {cal.created_at or '?'} by {cal.technician or '?'}")
    dev = cal.device
    if dev:
        _say(f"  device {dev.get('device_id', '?')}, firmware {dev.get('firmware_version', '?')}"
             f" on {dev.get('url', '?')}")
    if cal.verified:
        _say(style.ok(f"  verified {cal.verified.get('at', '?')} by "
                      f"{cal.verified.get('by') or '?'}"))
    else:
        _say(style.warn("  not verified: run `ramp-edge calibrate verify`"))
    for line in _joint_rows(cal).lines(style):
        _say(f"  {line}")


@calibrate_app.command("verify")
def verify(
    robot: RobotOpt = None,
    home: HomeOpt = None,
    file: FileOpt = None,
    answers: AnswersOpt = None,
    yes: YesOpt = False,
    technician: TechnicianOpt = None,
    no_move: Annotated[bool, typer.Option(
        "--no-move", help="Only compare the file with the motor controller.")] = False,
    verify_amplitude_rad: AmplitudeRadOpt = None,
    verify_amplitude_m: AmplitudeMOpt = None,
    sim_url: SimUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check the calibration against the robot.

    Compare the file with what the motor controller holds, then the physical check: the arm in
    its reference pose, a verification move at reduced speed, your confirmation (the file is
    then marked verified). Exit 1 if they disagree or the check is not confirmed."""
    from calibration.verify import verify_robot

    config, home_dir, path = _setup(robot, home, file)
    joints = joint_specs(config)
    prompter, given = _prompter(answers, yes, joints)
    options = _options(joints, given, technician, verify_amplitude_rad, verify_amplitude_m)
    _controller_must_be_stopped(home_dir)
    try:
        with _robot_bus(config, sim_url) as bus:
            outcome = verify_robot(bus, path, config.robot_id, joints, prompter, options,
                                   move=not no_move)
    except KeyboardInterrupt:
        raise _interrupted("torque is off, or holding if the move had started") from None
    verified = outcome.report is not None
    if as_json:
        print(json.dumps({
            "file": str(path), "sha256": outcome.calibration.sha256,
            "device_matches": not outcome.differences,
            "differences": list(outcome.differences), "moved": verified,
            "verified": bool(outcome.calibration.verified),
            "verification": outcome.report.to_dict() if outcome.report else None,
        }))
    if outcome.differences:
        _say(f"ramp-edge calibrate: the motor controller disagrees with {path}: if the file is "
             "right, `ramp-edge calibrate apply`; if the robot changed, `ramp-edge calibrate run`")
        raise typer.Exit(1)
    if not no_move and not verified:
        _say("ramp-edge calibrate: not verified (the move did not run)")
        raise typer.Exit(1)


@calibrate_app.command("apply")
def apply(
    robot: RobotOpt = None,
    home: HomeOpt = None,
    file: FileOpt = None,
    yes: YesOpt = False,
    sim_url: SimUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the file's calibration to the motor controller.

    Torque goes OFF first (support the arm); the calibration is read back. For a replaced or
    reset motor controller."""
    from calibration.verify import apply_calibration

    config, home_dir, path = _setup(robot, home, file)
    cal = load_calibration(path, config.robot_id)  # fail before touching the robot
    if not yes:
        ok = TerminalPrompter().confirm(
            "apply", f"Torque goes OFF (support the arm), then calibration {cal.sha256[:12]}... "
                     f"from {path} is written to the motor controller. Go on?", default=False)
        if not ok:
            _say("nothing written")
            raise typer.Exit(1)
    _controller_must_be_stopped(home_dir)
    try:
        with _robot_bus(config, sim_url) as bus:
            cal = apply_calibration(bus, path, config.robot_id, config.joint_names)
            device_id = bus.info.device_id if bus.info else "?"
    except KeyboardInterrupt:
        raise _interrupted("torque is off") from None
    if as_json:
        print(json.dumps({"file": str(path), "sha256": cal.sha256, "device_id": device_id,
                          "applied": True}))
        return
    _say(f"OK the motor controller ({device_id}) now holds {path} (sha256 {cal.sha256[:12]}...);"
         " torque is off. Check it with `ramp-edge calibrate verify`")


@calibrate_app.command("diff")
def diff(
    first: Annotated[Path | None, typer.Argument(
        help="A calibration file (default: this robot's).")] = None,
    second: Annotated[Path | None, typer.Argument(
        help="Another calibration file; leave out to compare with the motor controller.")]
    = None,
    robot: RobotOpt = None,
    home: HomeOpt = None,
    sim_url: SimUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare two calibrations (files, or a file and the motor controller).

    Exit 0 if they are the same, 1 if they differ."""
    config, home_dir, default_path = _setup(robot, home, None)
    a_path = first if first is not None else default_path
    if second is not None:
        a, b = load_calibration(a_path), load_calibration(second)
        b_name = str(second)
        lines = []
        if a.robot_id != b.robot_id:
            lines.append(f"robot_id: a {a.robot_id!r}, b {b.robot_id!r}")
        lines += [d.describe("a", "b") for d in diff_joints(a.joints, b.joints)]
        sha_b = b.sha256
    else:
        from calibration.verify import device_differences

        a = load_calibration(a_path, config.robot_id)
        _controller_must_be_stopped(home_dir)
        with _robot_bus(config, sim_url) as bus:
            assert bus.info is not None
            held = bus.read_calibration()
            lines = device_differences(a, held, bus.info.joint_names)
            b_name = f"motor controller {bus.info.device_id} ({bus.url})"
        sha_b = held.calibration_id or None
    if as_json:
        print(json.dumps({"a": str(a_path), "b": b_name, "a_sha256": a.sha256,
                          "b_sha256": sha_b, "same": not lines, "differences": lines}))
    else:
        _say(f"a: {a_path} ({a.sha256[:12]}...)")
        _say(f"b: {b_name}" + (f" ({sha_b[:12]}...)" if sha_b else ""))
        for line in lines:
            _say(f"  {line}")
        _say("same" if not lines else f"{len(lines)} difference(s)")
    if lines:
        raise typer.Exit(1)
