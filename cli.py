"""The ``ramp-edge`` command: a thin shell over the library; each area mounts its sub-app.

Human output goes to stderr, ``--json`` output to stdout. Exit codes: 0 success, 1 error (one
line on stderr says what and what to do), 2 bad usage, 3 finished but some data was lost,
130 interrupted.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from firmware_bridge.cli import bridge_app, emulator_app, run_guarded
from firmware_bridge.sim.cli import sim_app
from models.cli_train import train_app
from models.engines_cli import engine_app
from ramp_edge import __version__
from ramp_edge.cli_calibrate import calibrate_app
from ramp_edge.cli_config import config_app
from ramp_edge.cli_doctor import doctor
from ramp_edge.cli_episodes import episodes_app
from ramp_edge.cli_model import model_app
from ramp_edge.cli_run import estop, run, status
from ramp_edge.cli_sim_eval import sim_eval
from ramp_edge.cli_sim_record import sim_record
from ramp_edge.cli_sync import sync_app
from ramp_edge.cli_systemd import systemd_app

app = typer.Typer(
    help="ramp-edge: run a RAMP-trained robot policy on the robot, and the tools around it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(bridge_app, name="bridge")
app.add_typer(emulator_app, name="emulator")
app.add_typer(config_app, name="config")
app.add_typer(systemd_app, name="systemd")
sim_app.command("eval")(sim_eval)
sim_app.command("record")(sim_record)
app.add_typer(sim_app, name="sim")
app.add_typer(model_app, name="model")
app.add_typer(engine_app, name="engine")
app.add_typer(calibrate_app, name="calibrate")
app.add_typer(sync_app, name="sync")
app.add_typer(episodes_app, name="episodes")
app.add_typer(train_app, name="train")
app.command("doctor")(doctor)
app.command("run")(run)
app.command("estop")(estop)
app.command("status")(status)


def _version(value: bool) -> None:
    if value:
        print(f"ramp-edge {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    log_level: Annotated[str, typer.Option(
        help="Log level on stderr (debug, info, warning, error): state transitions and engine "
             "swaps are info, a control loop falling behind is a warning.")] = "warning",
) -> None:
    """ramp-edge: run a RAMP-trained robot policy on the robot, and the tools around it."""
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise typer.BadParameter(f"unknown log level {log_level!r}")
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one clear line for the project's errors, never a traceback."""
    run_guarded(app, "ramp-edge", argv)


if __name__ == "__main__":
    main()
