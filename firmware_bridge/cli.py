"""``ramp-edge bridge ...`` and ``ramp-edge emulator ...``: the link to motor controllers."""

from __future__ import annotations

import json
import math
import sys
from typing import Annotated

import typer

from firmware_bridge import PROTOCOL_VERSION

bridge_app = typer.Typer(help="Talk to a motor controller: probe it, benchmark the link.",
                         no_args_is_help=True)
emulator_app = typer.Typer(help="The motor-controller emulator (a device that speaks the "
                           "protocol exactly as firmware must).", no_args_is_help=True)

@emulator_app.callback()
def _emulator_group() -> None:
    """The motor-controller emulator (a device that speaks the protocol as firmware must)."""


# Exit codes shared by every ramp-edge command.
EXIT_ERROR = 1
EXIT_DATA_LOSS = 3

JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")]


def run_guarded(app: typer.Typer, prog_name: str, argv: list[str] | None = None) -> None:
    """Run a typer app; the project's errors become one line on stderr and exit code 1."""
    from firmware_bridge.errors import EdgeError

    try:
        app(args=argv, prog_name=prog_name)
    except EdgeError as err:
        print(f"{prog_name}: error: {err}", file=sys.stderr)
        sys.exit(EXIT_ERROR)


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def _json_clean(obj: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in obj.items()}


@bridge_app.command("probe")
def probe(
    url: Annotated[str, typer.Argument(help="Transport URL, e.g. serial:///dev/ttyACM0, "
                                       "zmq+tcp://10.0.0.2:5555, sim://, or a DYNAMIXEL chain "
                                       "dynamixel:///dev/ttyUSB0?ids=1-7&model=xl330")],
    as_json: JsonOpt = False,
) -> None:
    """Handshake with the device at URL: firmware, joints, limits, link health."""
    if url.startswith("dynamixel://"):
        from firmware_bridge.dynamixel.bus import DynamixelBus as Bus
    else:
        from firmware_bridge.bus import MotorBus as Bus

    with Bus(url) as bus:
        info = bus.connect()
        state = bus.read_state()
        report = {
            "url": url,
            "device_id": info.device_id,
            "firmware_version": info.firmware_version,
            "protocol_version": info.protocol_version,
            "joints": [
                {"name": n, "min": float(lo), "max": float(hi), "velocity_max": float(v)}
                for n, lo, hi, v in zip(info.joint_names, info.position_min, info.position_max,
                                        info.velocity_max, strict=True)
            ],
            "watchdog_ms": info.watchdog_ms,
            "servo_rate_hz": info.servo_rate_hz,
            "mode": state.mode.name if state else None,
            "fault": state.fault.name if state else None,
            "position": [float(x) for x in state.position] if state else None,
            "link": _json_clean(bus.health()),
        }
    if as_json:
        print(json.dumps(report))
        return
    _say(f"{url}: {info.device_id}, firmware {info.firmware_version}, protocol "
         f"{info.protocol_version}, servo {info.servo_rate_hz} Hz, watchdog {info.watchdog_ms} ms")
    _say(f"mode {report['mode']}, fault {report['fault']}")
    for j, pos in zip(report["joints"], report["position"] or [None] * len(report["joints"]),
                      strict=True):
        where = "?" if pos is None else f"{pos:+.4f}"
        _say(f"  {j['name']:<14} {where:>9}  [{j['min']:+.3f}, {j['max']:+.3f}]  "
             f"vmax {j['velocity_max']:.2f}")
    link = report["link"]
    _say(f"link: rtt p50 {link['rtt_p50_ms']:.3f} ms, crc failures {link['crc_failures']}, "
         f"timeouts {link['timeouts']}")


@bridge_app.command("bench")
def bench(
    url: Annotated[str | None, typer.Argument(help="Transport URL of the device to benchmark. "
                                              "Leave out with --emulator.")] = None,
    emulator: Annotated[str | None, typer.Option(
        help="Start an emulator process listening on this device URL (pty://, "
             "zmq+ipc:///tmp/x, zmq+tcp://127.0.0.1:PORT) and benchmark against it.")] = None,
    seconds: Annotated[float, typer.Option(help="How long to stream setpoints.")] = 5.0,
    cycle_timeout_ms: Annotated[float, typer.Option(help="Wait for each reply.")] = 5.0,
    as_json: JsonOpt = False,
) -> None:
    """Stream setpoints as fast as the link answers: round trips/s, RTT p50/p99/max, CRC
    failures, timeouts, loss. The device moves a few hundredths of a radian around its pose."""
    from firmware_bridge.bench import bench_round_trips
    from firmware_bridge.bus import MotorBus
    from firmware_bridge.emulator.process import EmulatorProcess

    if (url is None) == (emulator is None):
        raise typer.BadParameter("give a device URL or --emulator URL (one of them)")
    proc = EmulatorProcess(emulator) if emulator else None
    try:
        target = proc.host_url if proc else url
        assert target is not None
        with MotorBus(target, cycle_timeout_ms=cycle_timeout_ms) as bus:
            bus.connect()
            result = bench_round_trips(bus, seconds)
    finally:
        if proc:
            proc.stop()
    result = _json_clean(result)
    if as_json:
        print(json.dumps(result))
        return
    _say(f"{result['url']}: {result['round_trips_per_s']:.0f} round trips/s over "
         f"{result['seconds']:.1f} s; rtt p50 {result['rtt_p50_ms']:.3f} ms, p99 "
         f"{result['rtt_p99_ms']:.3f} ms, max {result['rtt_max_ms']:.3f} ms; crc failures "
         f"{result['crc_failures']}, timeouts {result['timeouts']}, late {result['late']}")


@emulator_app.command("serve")
def serve(
    url: Annotated[str, typer.Option(help="Where to listen: pty:// (new pseudo-terminal), "
                                     "pty:///PATH (also a stable link at PATH), "
                                     "zmq+tcp://HOST:PORT, zmq+ipc:///PATH")] = "pty://",
    joints: Annotated[int, typer.Option(help="Number of joints (the last is the gripper).")] = 7,
    watchdog_ms: Annotated[int, typer.Option(help="No setpoint this long in POSITION -> hold.")]
    = 100,
    fault_after_ms: Annotated[int, typer.Option(help="Then this much more silence -> FAULT.")]
    = 400,
    servo_rate_hz: Annotated[int, typer.Option(help="Servo loop rate.")] = 1000,
    device_id: Annotated[str, typer.Option(help="Device id reported in INFO.")] = "emu-0",
    protocol_version: Annotated[int, typer.Option(
        help="Protocol version to claim (to test version checks).")] = PROTOCOL_VERSION,
    drop_replies: Annotated[float, typer.Option(help="Probability each reply is dropped.")] = 0.0,
    corrupt_replies: Annotated[float, typer.Option(
        help="Probability each reply has a bit flipped.")] = 0.0,
    fault_seed: Annotated[int, typer.Option(help="Seed for the failure knobs.")] = 0,
    stall_ms: Annotated[int, typer.Option(help="SIGUSR1 stops answering for this long.")] = 500,
    unplug_ms: Annotated[int, typer.Option(
        help="SIGUSR2 closes the port for this long, then reopens it.")] = 1000,
    plant: Annotated[str, typer.Option(
        help="motor (a per-joint motor model) or mujoco (the simulated arm and its task scene; "
             "needs the sim extra).")] = "motor",
    task: Annotated[str | None, typer.Option(
        help="Task scene for the MuJoCo plant (ramp-edge sim tasks lists them).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the first episode's initial state.")] = 0,
    camera_url: Annotated[str | None, typer.Option(
        help="MuJoCo plant: publish rendered camera frames here (zmq+tcp:// or zmq+ipc://).")]
    = None,
    camera_hz: Annotated[float, typer.Option(help="Camera frame rate.")] = 30.0,
    camera_size: Annotated[int, typer.Option(help="Camera image width = height, pixels.")] = 96,
    sim_url: Annotated[str | None, typer.Option(
        help="Answer simulation requests here: move joints by hand (torque off), state; with "
             "the MuJoCo plant also reset and task status.")] = None,
    protocol: Annotated[str, typer.Option(
        help="ramp (this project's protocol) or dynamixel (one emulated X-series servo per id, "
             "answering DYNAMIXEL Protocol 2.0 on a pty; prints a dynamixel:// URL).")] = "ramp",
    ids: Annotated[str | None, typer.Option(
        help="--protocol dynamixel: servo ids, e.g. 1,2,3 or 1-7 (default 1..--joints).")] = None,
    model: Annotated[str, typer.Option(
        help="--protocol dynamixel: servo family (xl330, xm430, ...).")] = "xl330",
    realtime_priority: Annotated[int, typer.Option(
        min=0, max=99, help="Run the servo loop SCHED_FIFO at this priority when permitted "
                            "(0: normal priority).")] = 0,
) -> None:
    """Run the emulated motor controller until SIGTERM or Ctrl-C.

    Prints the URL a host should dial as the first line on stdout (for a pseudo-terminal:
    serial:///dev/pts/N, or the stable link). The emulator runs a 1 kHz servo loop with its own
    joint limits, command watchdog and e-stop latch."""
    from firmware_bridge.emulator.device import DeviceConfig
    from firmware_bridge.emulator.server import FailureKnobs
    from firmware_bridge.emulator.service import SimOptions
    from firmware_bridge.emulator.service import serve as run_service

    if protocol == "dynamixel":
        if plant != "motor" or camera_url or sim_url:
            raise typer.BadParameter("--protocol dynamixel emulates servos over the motor plant "
                                     "only (no --plant mujoco, --camera-url or --sim-url)")
        _serve_dynamixel(url, ids or f"1-{joints}", model, servo_rate_hz, stall_ms, unplug_ms,
                         FailureKnobs(drop_replies=drop_replies, corrupt_replies=corrupt_replies,
                                      seed=fault_seed))
        return
    if protocol != "ramp":
        raise typer.BadParameter("protocol must be 'ramp' or 'dynamixel'")
    if plant not in ("motor", "mujoco"):
        raise typer.BadParameter("plant must be 'motor' or 'mujoco'")
    if plant == "motor" and (task or camera_url):
        raise typer.BadParameter("--task and --camera-url need --plant mujoco")
    if plant == "mujoco" and joints != 7:
        raise typer.BadParameter("the MuJoCo arm has 7 joints (6 + gripper)")
    sim = SimOptions(task, seed, camera_url, camera_hz, camera_size, sim_url,
                     mujoco=plant == "mujoco")
    try:
        config = DeviceConfig.default(
            joints, watchdog_ms=watchdog_ms, fault_after_ms=fault_after_ms,
            servo_rate_hz=servo_rate_hz, device_id=device_id, protocol_version=protocol_version,
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    knobs = FailureKnobs(drop_replies=drop_replies, corrupt_replies=corrupt_replies,
                         seed=fault_seed)
    server = run_service(url, config, knobs, stall_s=stall_ms / 1000, unplug_s=unplug_ms / 1000,
                         sim=sim, realtime_priority=realtime_priority)
    s = server.stats
    _say(f"emulator stopped: {s.ticks} servo ticks, {s.skipped_ticks} skipped, max tick lateness "
         f"{s.max_tick_late_ms:.2f} ms, {server.device.counters.frames_in} frames in")
    for side in server.side_channels:
        render_ms = getattr(side, "render_ms", None)
        if render_ms:
            _say(f"cameras: {len(render_ms)} renders, "
                 f"{sum(render_ms) / len(render_ms):.2f} ms per render (all cameras)")


def _serve_dynamixel(url: str, ids: str, model: str, servo_rate_hz: int, stall_ms: int,
                     unplug_ms: int, knobs: object) -> None:
    from firmware_bridge.dynamixel.emulator import parse_ids, serve_dynamixel

    try:
        servo_ids = parse_ids(ids)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    server = serve_dynamixel(url, servo_ids, model, knobs, servo_rate_hz,  # type: ignore[arg-type]
                             stall_s=stall_ms / 1000, unplug_s=unplug_ms / 1000)
    c, s = server.chain.counters, server.stats
    _say(f"emulator stopped: {s.ticks} servo ticks, {s.skipped_ticks} skipped, max tick lateness "
         f"{s.max_tick_late_ms:.2f} ms, {c.packets_in} packets in, {server.crc_failures} bad CRC")
