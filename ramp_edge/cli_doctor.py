"""``ramp-edge doctor``: check the robot's setup; each line says OK or what to do.

Exit codes: 0 every check OK or a warning, 1 at least one check failed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from calibration.prompter import Style
from ramp_edge.config import load_config
from ramp_edge.doctor import FAIL, OK, WARN, DoctorContext, run_checks
from ramp_edge.home import resolve_home


def doctor(
    robot: Annotated[str | None, typer.Option(
        help="Robot config (TOML). Default: the built-in emulated robot.")] = None,
    home: Annotated[str | None, typer.Option(
        help="Where the robot keeps its files (default: $RAMP_EDGE_HOME or the user's data "
             "dir).")] = None,
    bundle: Annotated[Path | None, typer.Option(
        help="Model bundle to check. Default: HOME/bundles/active, else the reference.")]
    = None,
    no_bus: Annotated[bool, typer.Option(
        "--no-bus", help="Do not open the motor bus (no handshake).")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object with every check on stdout.")] = False,
) -> None:
    """Check the robot's setup, as a technician would by hand.

    Serial ports and permissions, USB latency timer, bus handshake, calibration, model bundle
    (hashes and probe), engine backends, disk space, clock, sync. Exit 1 if any check fails."""
    config = load_config(robot)
    home_dir = resolve_home(home)
    ctx = DoctorContext(config=config, home=home_dir, bundle=bundle, handshake=not no_bus)
    results = run_checks(ctx)
    failed = [r for r in results if r.status == FAIL]
    if as_json:
        print(json.dumps({"ok": not failed, "robot_id": config.robot_id,
                          "home": str(home_dir), "checks": [r.to_dict() for r in results]}))
    else:
        style = Style.for_stream(sys.stderr)
        paint = {OK: style.ok, WARN: style.warn, FAIL: style.bad}
        for r in results:
            label = paint[r.status](f"{r.status.upper():<4}")
            print(f"{label}  {r.name}: {r.message}", file=sys.stderr)
            if r.fix:
                print(f"      -> {r.fix}", file=sys.stderr)
        warned = sum(r.status == WARN for r in results)
        summary = (f"{len(results) - len(failed) - warned} OK, {warned} warning(s), "
                   f"{len(failed)} failed")
        print(paint[FAIL if failed else WARN if warned else OK](summary), file=sys.stderr)
    if failed:
        raise typer.Exit(1)
