"""``ramp-edge config ...``: inspect and check robot configs."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Annotated

import typer

from ramp_edge.config import load_config

config_app = typer.Typer(help="Robot configs: check one before the robot uses it.",
                         no_args_is_help=True)


@config_app.command("check")
def check(
    path: Annotated[str | None, typer.Argument(
        help="Robot config (TOML). Leave out for the built-in emulated robot.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the parsed config as JSON.")]
    = False,
) -> None:
    """Load and validate a robot config; errors name the file and the key."""
    config = load_config(path)
    if as_json:
        print(json.dumps(dataclasses.asdict(config)))
    else:
        print(f"{config.source}: OK, robot {config.robot_id}, {len(config.joints)} joints, "
              f"bus {config.bus.url}, control {config.rates.control_hz:g} Hz", file=sys.stderr)
