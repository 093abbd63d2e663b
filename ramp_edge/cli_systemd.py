"""``ramp-edge systemd ...``: render the robot's systemd units and install them.

Never calls ``systemctl``: ``install`` writes the unit files and prints the commands to run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ramp_edge import systemd_units as su

systemd_app = typer.Typer(help="systemd units for the robot: the controller service, the sync "
                          "service and its timer.", no_args_is_help=True)

PrefixOpt = Annotated[str | None, typer.Option(
    help="Installation prefix: units run PREFIX/bin/ramp-edge. Default: the real path of the "
         "ramp-edge in use.")]
HomeOpt = Annotated[str, typer.Option(
    help="RAMP_EDGE_HOME of the service. Under /var/lib systemd creates it (StateDirectory=); "
         "elsewhere it must exist, owned by the user.")]
UserOpt = Annotated[str, typer.Option(help="The dedicated user the units run as.")]
GroupOpt = Annotated[list[str] | None, typer.Option(
    "--group", help="A supplementary group of the controller (repeat it). Default: "
                    + ", ".join(su.DEFAULT_GROUPS) + ".")]
RunArgOpt = Annotated[list[str] | None, typer.Option(
    "--run-arg", help="An argument appended to `ramp-edge run --home HOME` (repeat it), e.g. "
                      "--run-arg=--robot --run-arg=/etc/ramp-edge/robot.toml.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")]


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def _render(prefix: str | None, home: str, user: str, groups: list[str] | None,
            run_args: list[str] | None) -> tuple[Path, dict[str, str], list[str]]:
    """The executable, the units, and warnings about where the executable lives."""
    executable = Path(su.executable_for(prefix))
    units = su.render_units(home=home, user=user, executable=executable,
                            groups=su.DEFAULT_GROUPS if groups is None else groups,
                            run_args=run_args or ())
    warnings = [f"{path} is under a home directory: the units use ProtectHome=read-only, and "
                f"user {user} must be able to read it (a robot installs ramp-edge under /opt "
                f"or /usr/local)" for path in su.paths_under_home(executable)]
    return executable, units, warnings


def _report(as_json: bool, *, executable: Path, written: list[su.WrittenUnit],
            warnings: list[str], steps: list[str], verb: str, dry_run: bool = False,
            units: dict[str, str] | None = None) -> None:
    if as_json:
        out = {
            "executable": str(executable),
            "dry_run": dry_run,
            "units": [{"name": w.name, "path": str(w.path), "change": w.change} for w in written],
            "warnings": warnings,
            "next_steps": steps,
        }
        if units is not None:
            out["texts"] = units
        print(json.dumps(out))
        return
    for warning in warnings:
        _say(f"warning: {warning}")
    for w in written:
        _say(f"{verb} {w.path} ({w.change})")
    if units is not None:
        for name, text in units.items():
            print(f"# ---- {name} ----\n{text}", end="" if text.endswith("\n") else "\n")
    if steps:
        _say("next:")
        for step in steps:
            _say(f"  {step}")


@systemd_app.command("render")
def render(
    out: Annotated[Path, typer.Option(help="Directory to write the unit files into (created "
                                      "if missing).")],
    prefix: PrefixOpt = None,
    home: HomeOpt = str(su.DEFAULT_HOME),
    user: UserOpt = su.DEFAULT_USER,
    group: GroupOpt = None,
    run_arg: RunArgOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the three unit files into a directory.

    ramp-edge.service, ramp-edge-sync.service and ramp-edge-sync.timer, to review or to ship in
    a robot image. Atomic writes; the directory is created if missing."""
    executable, units, warnings = _render(prefix, home, user, group, run_arg)
    written = su.write_units(units, out)
    _report(as_json, executable=executable, written=written, warnings=warnings, steps=[],
            verb="wrote")


@systemd_app.command("install")
def install(
    prefix: PrefixOpt = None,
    home: HomeOpt = str(su.DEFAULT_HOME),
    user: UserOpt = su.DEFAULT_USER,
    group: GroupOpt = None,
    run_arg: RunArgOpt = None,
    unit_dir: Annotated[Path, typer.Option(help="Where systemd reads system units.")]
    = su.DEFAULT_UNIT_DIR,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Write nothing; print the units on stdout and what would change.")]
    = False,
    as_json: JsonOpt = False,
) -> None:
    """Install the units and print the commands that enable them.

    Writes them into the unit directory (atomically, mode 0644); does not call systemctl. Needs
    root for /etc/systemd/system. Refuses when PREFIX/bin/ramp-edge is not there (except with
    --dry-run)."""
    import grp

    executable, units, warnings = _render(prefix, home, user, group, run_arg)
    if not executable.is_file():
        message = f"{executable} does not exist on this machine; install ramp-edge there first"
        if not dry_run:
            raise su.UnitError(message + " (or check --prefix)")
        warnings.append(message)
    for name in su.DEFAULT_GROUPS if group is None else group:
        try:
            grp.getgrnam(name)
        except KeyError:
            warnings.append(f"group {name} does not exist here: the controller would fail to "
                            f"start (216/GROUP); create it or leave it out with --group")
    written = su.write_units(units, unit_dir, dry_run=dry_run)
    steps = su.next_steps(user, home)
    _report(as_json, executable=executable, written=written, warnings=warnings, steps=steps,
            verb="would write" if dry_run else "wrote", dry_run=dry_run,
            units=units if dry_run else None)
