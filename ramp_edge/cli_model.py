"""``ramp-edge model ...``: swap the running controller's model bundle, activate a staged one, or
roll it back."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ramp_edge.control_socket import send_command, socket_path
from ramp_edge.home import resolve_home

model_app = typer.Typer(help="Model bundles of the running controller: swap, roll back.",
                        no_args_is_help=True)
HomeOpt = Annotated[str | None, typer.Option(
    help="Where the robot keeps its files (default: $RAMP_EDGE_HOME or the user's data dir).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="The controller's reply as JSON.")]


def _reply(request: dict, home: str | None, as_json: bool) -> dict:
    reply = send_command(socket_path(resolve_home(home)), request, timeout_s=120.0)
    if as_json:
        print(json.dumps(reply))
    if not reply.get("ok"):
        print(f"ramp-edge: error: {reply.get('error')}", file=sys.stderr)
        raise typer.Exit(1)
    if not as_json:
        print(f"now running {reply.get('bundle')}", file=sys.stderr)
    return reply


@model_app.command("swap")
def swap(
    bundle: Annotated[Path | None, typer.Argument(
        help="Bundle directory (default: HOME/bundles/active).")] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Load, check and verify BUNDLE, then have the running controller use it from the next
    chunk. A bundle that fails is refused and the running one stays; the previous one is kept
    for `ramp-edge model rollback`. (SIGHUP to the controller swaps to HOME/bundles/active.)"""
    _reply({"cmd": "swap", "bundle": str(bundle.resolve()) if bundle else None}, home, as_json)


@model_app.command("rollback")
def rollback(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Go back to the bundle that ran before the last swap, from the next chunk; after an
    `activate`, HOME/bundles/active goes back too (with no controller running, only that)."""
    from ramp_edge.control_socket import ControlSocketError
    from ramp_edge.sync.bundles import previous_label, swap_active_links

    h = resolve_home(home)
    try:
        reply = _reply({"cmd": "rollback"}, home, as_json)
    except ControlSocketError as err:
        back = swap_active_links(h)
        if back is None:
            raise ControlSocketError(
                f"nothing to roll back: {err}, and {h / 'bundles' / 'previous'} does not "
                f"exist") from err
        if as_json:
            print(json.dumps({"ok": True, "bundle": str(back), "controller": None}))
        else:
            print(f"no controller running; the next run starts with {back}", file=sys.stderr)
        return
    if reply.get("bundle") == previous_label(h):  # the controller went back to that link
        swap_active_links(h)


@model_app.command("activate")
def activate(
    bundle: Annotated[Path | None, typer.Argument(
        help="Bundle directory (default: the newest bundle `ramp-edge sync pull` staged).")]
    = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make BUNDLE the robot's bundle: a running controller checks it now and switches to it
    before its next episode (never mid-episode); HOME/bundles/active points at it for later
    runs, the previous one kept for `ramp-edge model rollback`. A bundle that failed
    verification is refused."""
    from ramp_edge.sync.bundles import activate_bundle

    result = activate_bundle(resolve_home(home), bundle)
    if as_json:
        print(json.dumps({"ok": True, **result}))
    else:
        print(f"activated {result['bundle']} ({result['when']})", file=sys.stderr)
