"""``ramp-edge episodes ...``: review the episodes recorded on this robot.

``list`` (filters by status, outcome, start time), ``show ID`` (metadata, control sources,
takeovers, events, loop lateness, value range, hash and verification), ``label ID OUTCOME``
(an operator corrects the outcome: the file is re-sealed atomically and the index updated),
``plot ID`` (a PNG: joints, commands, takeovers, value, lateness; the ``review`` extra) and
``verify [ID ...]`` (sha256, SQLite integrity and structure). An ID may be a unique prefix.

Human output on stderr, ``--json`` on stdout. Exit codes: 0 done; 1 an error (one line says
what), and also when ``verify`` finds a damaged episode or ``plot --all`` could not draw one;
2 bad usage (an unknown status, outcome or label).

Other commands mount themselves here from their own module with
``@episodes_app.command("NAME")`` (``export`` lives in :mod:`ramp_edge.cli_episodes_export`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import getpass
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from ramp_edge.episodes.index import IndexEntry
from ramp_edge.episodes.review import (
    EpisodeDetail,
    EpisodeRow,
    acked_hashes,
    episode_detail,
    episode_row,
    find_entry,
    open_index,
    relabel,
    verify_episode,
)
from ramp_edge.episodes.schema import OUTCOMES, STATUSES
from ramp_edge.errors import EdgeError
from ramp_edge.home import resolve_home

episodes_app = typer.Typer(
    help="Review recorded episodes: list, show, label the outcome, plot, verify.",
    no_args_is_help=True)

EXIT_USAGE = 2
REVIEWABLE = ("sealed", "aborted")

HomeOpt = Annotated[str | None, typer.Option(
    help="Where the robot keeps its files (default: $RAMP_EDGE_HOME or the user's data dir).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON on stdout.")]
IdArg = Annotated[str, typer.Argument(help="Episode id, or a unique prefix of one.")]


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _usage(message: str) -> typer.Exit:
    _say(f"ramp-edge episodes: {message}")
    return typer.Exit(EXIT_USAGE)


def _choice(value: str | None, allowed: tuple[str, ...], what: str) -> str | None:
    if value is not None and value not in allowed:
        raise _usage(f"unknown {what} {value!r} (one of {', '.join(allowed)})")
    return value


_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: float | None = None) -> float:
    """Unix seconds from ``--since``: an age (``90m``, ``12h``, ``7d``, ``2w``) or an ISO date
    or date-time; a time without a zone is UTC, as in episode ids."""
    m = _RELATIVE.match(text.strip())
    if m:
        return (time.time() if now is None else now) - float(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise _usage(f"--since {text!r}: expected an age like 12h or 7d, or a date like "
                     "2026-05-01 or 2026-05-01T14:00") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(round(seconds), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


def _clip(text: str | None, width: int) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()

    return [fmt(header), *(fmt(r) for r in rows)]


@contextlib.contextmanager
def _index(home: str | None):
    with open_index(resolve_home(home)) as index:
        yield index


@episodes_app.command("list")
def list_episodes(
    status: Annotated[str | None, typer.Option(
        help=f"Only episodes with this status ({', '.join(STATUSES)}).")] = None,
    outcome: Annotated[str | None, typer.Option(
        help=f"Only episodes with this outcome ({', '.join(OUTCOMES)}).")] = None,
    since: Annotated[str | None, typer.Option(
        help="Only episodes started since: an age (12h, 7d) or a date (2026-05-01, UTC).")]
    = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the recorded episodes, oldest first.

    Status, outcome, steps, duration, takeovers, task and instruction, note."""
    _choice(status, STATUSES, "status")
    _choice(outcome, OUTCOMES, "outcome")
    t_since = parse_since(since) if since is not None else None
    home_dir = resolve_home(home)
    with open_index(home_dir) as index:
        entries = [e for e in index.list(status)
                   if (outcome is None or e.outcome == outcome)
                   and (t_since is None or (e.started_at or 0.0) >= t_since)]
        acked = acked_hashes(home_dir)
        rows = [episode_row(index, e, acked) for e in entries]
    if as_json:
        print(json.dumps([r.to_dict() for r in rows]))
        return
    if not rows:
        _say("no episodes" + (" match" if status or outcome or since else ""))
        return
    for line in _list_lines(rows):
        _say(line)


def _list_lines(rows: list[EpisodeRow]) -> list[str]:
    synced = any(r.synced is not None for r in rows)
    header = ("id", "status", "outcome", "steps", "duration", "takeovers", "task: instruction",
              *(("synced",) if synced else ()), "note")
    cells = []
    for r in rows:
        what = ": ".join(x for x in (r.task, r.instruction) if x)
        cells.append((r.id, r.status, r.outcome or "-", str(r.steps), _duration(r.duration_s),
                      "?" if r.takeovers is None else str(r.takeovers), _clip(what, 40),
                      *((("?" if r.synced is None else "yes" if r.synced else "no"),)
                        if synced else ()),
                      _clip(r.note, 60)))
    return [*_table(header, cells, right={3, 4, 5}), f"{len(rows)} episode(s)"]


@episodes_app.command("show")
def show(
    episode: IdArg,
    no_verify: Annotated[bool, typer.Option(
        "--no-verify", help="Skip hashing and checking the file (quicker for long episodes).")]
    = False,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Everything about one episode.

    Metadata, steps per control source, takeovers with their times, events, loop lateness
    (p50/p99/max), value prediction range, sha256 and whether the file verifies."""
    home_dir = resolve_home(home)
    with open_index(home_dir) as index:
        detail = episode_detail(index, find_entry(index, episode), check=not no_verify,
                                acked=acked_hashes(home_dir))
    if as_json:
        print(json.dumps(detail.to_dict()))
        return
    for line in _show_lines(detail):
        _say(line)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _show_lines(d: EpisodeDetail) -> list[str]:
    m = d.meta
    out = [f"episode {d.id}  ({d.path})",
           f"  status {d.status}, outcome {d.outcome or '-'}, {d.steps} steps over "
           f"{_duration(d.duration_s)}"]
    if d.note:
        out.append(f"  note: {d.note}")
    for key in ("task", "instruction", "operator", "robot_id", "software_version",
                "calibration_hash", "bundle_hash", "relabelled"):
        if m.get(key):
            out.append(f"  {key}: {m[key]}")
    for key in ("started_at", "ended_at"):
        with contextlib.suppress(TypeError, ValueError):
            out.append(f"  {key}: " + dt.datetime.fromtimestamp(
                float(m[key]), dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z")
    out.append("  control sources: " + (", ".join(
        f"{s} {n} ({100 * n / max(d.steps, 1):.0f}%)" for s, n in d.sources.items()) or "-"))
    out.append(f"  safety interventions on {d.interventions} steps; {d.transition_steps} "
               "transition steps (dropped in training)")
    out.append("  images: " + (", ".join(f"{c} {n}" for c, n in d.images.items()) or "none"))
    lat = d.lateness_ms
    out.append(f"  loop lateness ms: p50 {_ms(lat['p50'])}, p99 {_ms(lat['p99'])}, "
               f"max {_ms(lat['max'])}")
    vr = d.value_range
    out.append("  value prediction: " + (f"{vr[0]:+.3f} .. {vr[1]:+.3f}" if vr else "none"))
    out.append(f"  takeovers: {len(d.takeovers)}")
    for k in d.takeovers:
        out.append(f"    {k['start_s']:8.2f}s .. {k['end_s']:8.2f}s  ({k['duration_s']:.2f}s, "
                   f"{k['steps']} steps)")
    out.append(f"  events: {len(d.events)}")
    for ev in d.events[:50]:
        out.append(f"    {ev['t_s']:8.2f}s  {ev['kind']}"
                   + (f"  {_clip(ev['detail'], 80)}" if ev["detail"] else ""))
    if len(d.events) > 50:
        out.append(f"    ... {len(d.events) - 50} more (--json lists all)")
    out.append(f"  sha256: {d.sha256 or '-'}" + (f"  ({d.bytes} bytes)" if d.bytes else ""))
    if d.synced is not None:
        out.append("  synced: " + ("yes" if d.synced else "no (the host has not acknowledged "
                                                          "this sha256)"))
    if d.verify is not None:
        v = d.verify
        out.append("  verify: " + ("ok" if v["state"] == "ok" else
                                   f"{v['state']}: {'; '.join(v['problems'])}"))
    return out


@episodes_app.command("label")
def label(
    episode: IdArg,
    outcome: Annotated[str, typer.Argument(
        help=f"The corrected outcome: {', '.join(OUTCOMES)}.", show_default=False)],
    by: Annotated[str | None, typer.Option(
        help="Who corrects it (noted in the index and the file). Default: the login name.")]
    = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Correct an episode's outcome (success, failure, aborted).

    The file is re-sealed (written to a copy, fsynced, renamed over the original), its new
    sha256 goes to the index, and the index note records the change. An episode still
    recording is refused."""
    _choice(outcome, OUTCOMES, "label")
    with _index(home) as index:
        entry = find_entry(index, episode)
        if entry.outcome == outcome:
            _say(f"episode {entry.id} is already labelled {outcome}: nothing to do")
            new = entry
        else:
            new = relabel(index, entry, outcome, by=_login() if by is None else by)
            _say(f"episode {new.id}: {entry.outcome or 'unlabelled'} -> {new.outcome}, "
                 f"re-sealed (sha256 {new.sha256[:12]}...)")
    if as_json:
        print(json.dumps(_entry_dict(new)))


def _login() -> str:
    with contextlib.suppress(Exception):  # no login name in some containers
        return os.environ.get("SUDO_USER") or getpass.getuser()
    return ""


def _entry_dict(e: IndexEntry) -> dict:
    return dataclasses.asdict(e)


@episodes_app.command("plot")
def plot(
    episode: Annotated[str | None, typer.Argument(
        help="Episode id, or a unique prefix of one (leave out with --all).")] = None,
    out: Annotated[Path | None, typer.Option(
        help="The PNG to write (default ./ID.png); with --all a directory (default .).")]
    = None,
    all_episodes: Annotated[bool, typer.Option(
        "--all", help="Plot every sealed or aborted episode, one PNG each.")] = False,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Plot an episode to a PNG.

    Each joint's position (solid) and command sent (dashed), the value prediction and the loop
    lateness over time, human takeovers shaded. Needs the 'review' extra (matplotlib)."""
    from ramp_edge.episodes.plot import PlotUnavailableError, plot_episode

    if all_episodes == (episode is not None):
        raise _usage("plot takes an episode id or --all (not both)")
    failed: list[str] = []
    done: list[dict] = []
    with _index(home) as index:
        if all_episodes:
            entries = [e for e in index.list() if e.status in REVIEWABLE]
            targets = [(e, (out or Path(".")) / f"{e.id}.png") for e in entries]
        else:
            e = find_entry(index, episode or "")
            targets = [(e, out or Path(f"{e.id}.png"))]
        for e, path in targets:
            try:
                res = plot_episode(index.resolve(e), path)
            except PlotUnavailableError:
                raise
            except EdgeError as err:
                if not all_episodes:
                    raise
                failed.append(f"{e.id}: not plotted: {err}")
                continue
            done.append({"id": e.id, "png": str(res.path), "width_px": res.width_px,
                         "height_px": res.height_px, "takeovers": res.takeovers})
            _say(f"{e.id}: {res.path} ({res.width_px}x{res.height_px}, "
                 f"{res.takeovers} takeover(s) shaded)")
    if as_json:
        print(json.dumps(done))
    for line in failed:
        _say(line)
    if failed:
        raise typer.Exit(1)


@episodes_app.command("verify")
def verify(
    episodes: Annotated[list[str] | None, typer.Argument(
        help="Episode ids or unique prefixes (default: every sealed or aborted episode).")]
    = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check episode files; exit 1 if any is damaged.

    sha256 against the index, SQLite's integrity check, and structure (tables, meta keys,
    steps in order, vectors of the right length). Prints a line per episode."""
    with _index(home) as index:
        entries = ([find_entry(index, e) for e in episodes] if episodes
                   else [e for e in index.list() if e.status in REVIEWABLE])
        checks = [verify_episode(index, e) for e in entries]
    if as_json:
        print(json.dumps([c.to_dict() for c in checks]))
    for c in checks:
        _say(c.line())
    damaged = [c for c in checks if not c.ok]
    _say(f"{len(checks)} episode(s) checked, {len(damaged)} damaged")
    if damaged:
        raise typer.Exit(1)


# Commands defined in their own modules mount themselves on episodes_app when imported.
try:
    import ramp_edge.cli_episodes_export  # noqa: F401
except ModuleNotFoundError as err:  # not there (yet): `episodes` works without `export`
    if err.name != "ramp_edge.cli_episodes_export":
        raise
