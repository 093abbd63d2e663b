"""``ramp-edge episodes export``: episodes to MCAP files (Foxglove) or one LeRobotDataset v3.0
directory (training tools). Needs the ``export`` extra (mcap, pyarrow, av).

Progress goes to stderr, one line per episode; ``--json`` prints what was written on stdout.
Exit codes: 0 done, 1 an error (one line says what), 2 bad usage.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ramp_edge.cli_episodes import HomeOpt, JsonOpt, episodes_app
from ramp_edge.episodes.index import EpisodeIndex, IndexEntry
from ramp_edge.episodes.review import find_entry, open_index
from ramp_edge.episodes.schema import OUTCOMES
from ramp_edge.home import resolve_home

FORMATS = ("mcap", "lerobot")
EXPORTABLE = ("sealed", "aborted")
EXIT_USAGE = 2


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _usage(message: str) -> typer.Exit:
    _say(f"ramp-edge episodes export: {message}")
    return typer.Exit(EXIT_USAGE)


@episodes_app.command("export")
def export(
    episodes: Annotated[list[str] | None, typer.Argument(
        help="Episode ids or unique prefixes (or --all).", show_default=False)] = None,
    fmt: Annotated[str, typer.Option(
        "--format", help="mcap: one .mcap file per episode; lerobot: one LeRobotDataset v3.0 "
                         "directory holding all of them.")] = "mcap",
    out: Annotated[Path | None, typer.Option(
        help="mcap: a directory for ID.mcap files (a file name for a single episode); "
             "lerobot: the dataset directory, new or empty.", show_default=False)] = None,
    all_episodes: Annotated[bool, typer.Option(
        "--all", help="Every sealed or aborted episode (with --outcome: those of it).")]
    = False,
    outcome: Annotated[str | None, typer.Option(
        help=f"Only episodes with this outcome ({', '.join(OUTCOMES)}).")] = None,
    fps: Annotated[int, typer.Option(help="lerobot: the dataset's frame rate (Hz).")] = 50,
    vcodec: Annotated[str | None, typer.Option(
        help="lerobot: video encoder (default libsvtav1 as LeRobot, else libx264, mpeg4).")]
    = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Export episodes for Foxglove (MCAP: joint states, camera images, events, metadata) or
    for training (LeRobotDataset v3.0: parquet frames resampled to --fps, one mp4 per camera,
    with intervention / control source / value / advantage columns)."""
    if fmt not in FORMATS:
        raise _usage(f"unknown --format {fmt!r} (one of {', '.join(FORMATS)})")
    if outcome is not None and outcome not in OUTCOMES:
        raise _usage(f"unknown --outcome {outcome!r} (one of {', '.join(OUTCOMES)})")
    if all_episodes == bool(episodes):
        raise _usage("give episode ids or --all (not both)")
    if out is None:
        raise _usage("--out is required")
    with open_index(resolve_home(home)) as index:
        entries = _select(index, episodes or [], outcome)
        if not entries:
            raise _usage("no episodes to export" + (f" with outcome {outcome}" if outcome
                                                    else ""))
        paths = [index.resolve(e) for e in entries]
    if fmt == "mcap":
        written = _export_mcap(entries, paths, out)
    else:
        written = _export_lerobot(paths, out, fps, vcodec)
    if as_json:
        print(json.dumps(written))


def _select(index: EpisodeIndex, ids: list[str], outcome: str | None) -> list[IndexEntry]:
    if ids:
        entries = [find_entry(index, i) for i in ids]
    else:
        entries = [e for e in index.list() if e.status in EXPORTABLE]
    return [e for e in entries if outcome is None or e.outcome == outcome]


def _export_mcap(entries: list[IndexEntry], paths: list[Path], out: Path) -> dict:
    from ramp_edge.episodes.export_mcap import export_mcap

    single_file = len(entries) == 1 and out.suffix == ".mcap"
    files = []
    for n, (e, path) in enumerate(zip(entries, paths, strict=True), start=1):
        target = out if single_file else out / f"{e.id}.mcap"
        rep = export_mcap(path, target)
        files.append({"id": e.id, "path": str(rep.path), "bytes": rep.bytes,
                      "messages": rep.messages})
        _say(f"[{n}/{len(entries)}] {e.id}: {rep.path} ({rep.bytes / 1e6:.1f} MB, "
             + ", ".join(f"{t} {c}" for t, c in rep.messages.items()) + ")")
    return {"format": "mcap", "files": files}


def _export_lerobot(paths: list[Path], out: Path, fps: int, vcodec: str | None) -> dict:
    from ramp_edge.episodes.export_lerobot import export_lerobot

    def progress(done: int, total: int, episode_id: str) -> None:
        _say(f"[{done}/{total}] {episode_id}")

    rep = export_lerobot(paths, out, fps=fps, vcodec=vcodec, on_episode=progress)
    for eid, why in rep.skipped:
        _say(f"{eid}: skipped ({why})")
    _say(f"{out}: LeRobotDataset v3.0, {len(rep.episodes)} episode(s), {rep.frames} frames at "
         f"{rep.fps} Hz, cameras {', '.join(rep.cameras) or 'none'}"
         + (f" ({rep.vcodec})" if rep.vcodec else ""))
    return {"format": "lerobot", "root": str(rep.root), "episodes": rep.episodes,
            "frames": rep.frames, "fps": rep.fps, "cameras": rep.cameras,
            "vcodec": rep.vcodec, "skipped": [list(s) for s in rep.skipped]}
