"""``ramp-edge run``, ``ramp-edge estop`` and ``ramp-edge status``: the controller and the
commands that reach it while it runs."""

from __future__ import annotations

import getpass
import json
import signal
import sys
from typing import Annotated, Any

import typer

from ramp_edge.control_socket import send_command, socket_path
from ramp_edge.home import resolve_home

HomeOpt = Annotated[str | None, typer.Option(
    help="Where the robot keeps its files (default: $RAMP_EDGE_HOME or the user's data dir).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")]


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _status_line(s: dict[str, Any]) -> str:
    chunk = s["chunk_latency_p50_ms"]
    chunk_text = "-" if chunk is None else f"{chunk:.1f} ms"
    return (f"{s['state']:<8} {s['loop_rate_hz']:6.1f} Hz  late p99 {s['lateness_p99_ms']:.2f} ms"
            f"  overruns {s['overruns']}  source {s['source']:<6}  chunk {s['chunk_id']}"
            f" ({chunk_text})  missed {s['missed_replies']}  clamps {s['safety_clamps']}")


def run(
    robot: Annotated[str | None, typer.Option(
        help="Robot config (TOML). Default: the built-in emulated robot.")] = None,
    model: Annotated[str | None, typer.Option(
        help="Model bundle directory. Default: the active bundle under HOME/bundles, or the "
             "reference bundle (built on first use).")] = None,
    task: Annotated[str | None, typer.Option(help="Task for the simulated robot.")] = None,
    instruction: Annotated[str | None, typer.Option(
        help="Language instruction for the policy (default: the task's).")] = None,
    episodes: Annotated[int, typer.Option(min=1, help="Episodes to run.")] = 1,
    duration: Annotated[float, typer.Option(min=0.1, help="Seconds per episode.")] = 10.0,
    mode: Annotated[str, typer.Option(
        help="standard (world model runs) or efficient (world model skipped).")] = "standard",
    backend: Annotated[str | None, typer.Option(
        help="Engine backend to prefer: torch-eager, torch-export, onnx-fp32, onnx-int8, "
             "tensorrt-fp16, tensorrt-int8 (default: the fastest the bundle has that runs "
             "here).")]
    = None,
    seed: Annotated[int, typer.Option(help="Simulation: seed of the first episode's scene.")]
    = 0,
    engine_threads: Annotated[int, typer.Option(
        min=1, help="Intra-op threads for inference (leave a core to the control thread).")]
    = 1,
    clear_latched: Annotated[bool, typer.Option(
        "--clear-latched", help="Clear a latched e-stop or fault on the motor controller "
        "before arming (only after checking the robot).")] = False,
    teleop: Annotated[str | None, typer.Option(
        help="Teleop device that can take over: a URL, or on the emulated robot 'expert' (the "
             "scripted expert) or 'corrector' (the scripted person of HILR rollouts).")] = None,
    policy: Annotated[bool, typer.Option(
        "--policy/--no-policy", help="--no-policy records a demonstration: the teleop device "
        "alone drives, no inference.")] = True,
    operator: Annotated[str, typer.Option(help="Who supervises (recorded with episodes).")]
    = "",
    record: Annotated[bool, typer.Option(
        "--record/--no-record", help="Record every episode in HOME's crash-safe episode "
        "store (sealed at the end; unfinished ones are recovered at the next start).")] = True,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the policy on the robot: start (or dial) the motor controller, load and verify the
    model bundle, then for each episode arm, run, stop in a controlled way and hold.

    With no arguments this runs one 10 s episode on the emulated robot. Ctrl-C or SIGTERM
    stops gracefully; a second Ctrl-C or SIGUSR1 is an e-stop (latched until cleared)."""
    from ramp_edge.session import RunRequest, run_session

    if mode not in ("standard", "efficient"):
        raise typer.BadParameter("mode must be 'standard' or 'efficient'")
    request = RunRequest(robot=robot, model=model, task=task, instruction=instruction,
                         episodes=episodes, duration_s=duration, mode=mode, backend=backend,
                         home=resolve_home(home), seed=seed, clear_latched=clear_latched,
                         engine_threads=engine_threads, teleop=teleop, policy=policy,
                         operator=operator or getpass.getuser(), record=record)
    summary = run_session(request, say=_say, status_line=_status_line, signals=signal)
    if as_json:
        print(json.dumps(summary))
    if summary.get("aborted"):
        raise typer.Exit(1)


def estop(
    reason: Annotated[str, typer.Option(help="Why (recorded with the e-stop).")] = "cli",
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """E-stop the running controller: the motor controller latches and holds; the run ends.
    Clear it with ``ramp-edge run --clear-latched`` after checking the robot.

    This is a software e-stop: a certified hardware e-stop circuit is outside software."""
    request = {"cmd": "estop", "reason": reason}
    reply = send_command(socket_path(resolve_home(home)), request)
    if as_json:
        print(json.dumps(reply))
    if not reply.get("ok"):
        _say(f"ramp-edge: error: {reply.get('error')}")
        raise typer.Exit(1)
    if not as_json:
        _say(f"controller state: {reply.get('state')}")


def status(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Print the running controller's state, loop rate, lateness and chunk latency."""
    reply = send_command(socket_path(resolve_home(home)), {"cmd": "status"})
    if as_json:
        print(json.dumps(reply))
    else:
        _say(_status_line(reply))
