"""``ramp-edge sync ...``: episodes to the training host, bundles back (DESIGN.md, "Sync to the
training host").

Robot: ``keygen`` once (give the host the ``.key`` file), then ``push`` and ``pull`` (run by
ramp-edge-sync.timer), ``status``. Host: ``keygen --out DIR``, ``serve --root DIR --allow KEYS``
(one robot public key per file, file name = robot id), ``publish BUNDLE --root DIR``.
Exit codes: 0 done, 1 error (host unreachable, key refused, an episode or bundle refused; nothing
is lost and the next run resumes), 2 bad usage.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from ramp_edge.home import resolve_home

sync_app = typer.Typer(help="Sync with the training host: push episodes, pull bundles.",
                       no_args_is_help=True)
HomeOpt = Annotated[str | None, typer.Option(
    help="Where the robot keeps its files (default: $RAMP_EDGE_HOME or the user's data dir).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable report on stdout.")]
HostOpt = Annotated[str | None, typer.Option(
    "--host", help="The training host's sync server, tcp://HOST:PORT (default: sync.toml).")]
ServerKeyOpt = Annotated[Path | None, typer.Option(
    "--server-key", help="The host's public key file (default: sync.toml's server_key).")]
TimeoutOpt = Annotated[float, typer.Option(
    "--timeout", help="Seconds to wait for the host to answer at all.")]
StallOpt = Annotated[float, typer.Option(
    "--stall-timeout", help="Give up after this many seconds without progress (resumes later).")]


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def _client(home: Path, host: str | None, server_key: Path | None, timeout_s: float,
            stall_s: float, max_rate: str | None = None) -> Any:
    from ramp_edge.sync.client import SyncClient
    from ramp_edge.sync.errors import SyncError
    from ramp_edge.sync.keys import DEFAULT_NAME, SECRET_SUFFIX, load_public, load_secret
    from ramp_edge.sync.progress import parse_rate
    from ramp_edge.sync.settings import load_settings

    settings = load_settings(home)
    host = host or settings.host
    key_file = server_key or settings.server_key
    if not host or not key_file:
        raise SyncError(f"no training host configured: pass --host and --server-key, or set "
                        f"host and server_key in {home / 'sync.toml'}")
    rate = settings.max_rate_bytes_s
    if max_rate:
        try:
            rate = parse_rate(max_rate)
        except ValueError as err:
            raise typer.BadParameter(str(err), param_hint="--max-rate") from None
    keys = load_secret(home / "keys" / f"{DEFAULT_NAME}{SECRET_SUFFIX}")
    return SyncClient(host, load_public(key_file), keys, connect_timeout_s=timeout_s,
                      reply_timeout_s=min(15.0, stall_s), stall_timeout_s=stall_s,
                      max_rate_bytes_s=rate)


@sync_app.command("keygen")
def keygen(
    out: Annotated[Path | None, typer.Option(
        help="Directory for the key pair (default: HOME/keys).")] = None,
    name: Annotated[str, typer.Option(help="File name stem: NAME.key and NAME.key_secret.")]
    = "sync",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key pair.")]
    = False,
    home: HomeOpt = None,
) -> None:
    """Create a CURVE key pair (secret file mode 0600, written atomically). On a robot, copy
    NAME.key to the host's allow-list directory as ROBOT_ID.key; on the host, give robots
    its NAME.key for --server-key."""
    from ramp_edge.sync.keys import generate_keypair

    pub, sec = generate_keypair(out or resolve_home(home) / "keys", name, overwrite=force)
    _say(f"public key {pub} (give this one out); secret key {sec} (mode 0600, keep it here)")


@sync_app.command("serve")
def serve(
    root: Annotated[Path, typer.Option(help="The host's sync directory (episodes, bundles).")],
    allow: Annotated[Path, typer.Option(
        help="Directory of robot public keys, one file per robot named ROBOT_ID.key.")],
    bind: Annotated[str, typer.Option(help="Where to listen.")] = "tcp://*:5601",
    key: Annotated[Path | None, typer.Option(
        help="The host's secret key (default: ROOT/keys/sync.key_secret).")] = None,
    chunk_kib: Annotated[int, typer.Option(
        min=4, max=4096, help="Chunk size robots send, KiB (credit window: 8 chunks).")] = 1024,
) -> None:
    """Run the training host's sync server until SIGTERM or Ctrl-C."""
    from ramp_edge.sync.keys import load_secret
    from ramp_edge.sync.server import SyncServer

    keys = load_secret(key or root / "keys" / "sync.key_secret")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with SyncServer(root, allow, keys, bind, chunk_bytes=chunk_kib * 1024) as srv:
        for problem in srv.allow.problems:
            _say(f"allow-list: {problem}")
        _say(f"serving {len(srv.allow)} robot key(s) at {srv.endpoint}, storing under {root}")
        srv.serve_forever(stop)


@sync_app.command("push")
def push(
    host: HostOpt = None,
    server_key: ServerKeyOpt = None,
    home: HomeOpt = None,
    progress: Annotated[bool | None, typer.Option(
        "--progress/--no-progress", help="Progress bar on stderr (default: when a tty).")]
    = None,
    max_rate: Annotated[str | None, typer.Option(
        "--max-rate", help="Bandwidth cap in bytes/s, e.g. 500k, 20M, 1Gi.")] = None,
    limit: Annotated[int | None, typer.Option(help="Push at most this many episodes.")] = None,
    timeout: TimeoutOpt = 10.0,
    stall_timeout: StallOpt = 120.0,
    as_json: JsonOpt = False,
) -> None:
    """Push sealed episodes the host has not acknowledged, oldest first, resuming partial
    transfers; then apply retention (delete the oldest acknowledged episodes while the disk is
    above its high-water mark)."""
    from ramp_edge.episodes.index import EpisodeIndex
    from ramp_edge.errors import EdgeError
    from ramp_edge.sync.client import pending_episodes
    from ramp_edge.sync.progress import Progress, human_bytes
    from ramp_edge.sync.retention import enforce
    from ramp_edge.sync.settings import load_settings
    from ramp_edge.sync.state import SyncState

    h = resolve_home(home)
    settings = load_settings(h)
    with EpisodeIndex(h / "index.sqlite") as index, SyncState(h) as state:
        todo = pending_episodes(index, state)
        total = sum(e.bytes or 0 for e in todo)
        bar = Progress(total, len(todo), enabled=sys.stderr.isatty() if progress is None
                       else progress)
        report: dict[str, Any] = {"pending": len(todo), "pending_bytes": total}
        try:
            if todo:
                with _client(h, host, server_key, timeout, stall_timeout, max_rate) as client:
                    try:
                        rep = client.push(index, state, progress=bar, limit=limit)
                    finally:
                        bar.close()
                report.update(robot=rep.robot, sent=rep.sent, known=rep.known,
                              failed=rep.failed, bytes_sent=rep.bytes_sent,
                              bytes_resumed=rep.bytes_resumed, resumes=rep.resumes,
                              chunks_rejected=rep.chunks_rejected, seconds=rep.seconds)
        except EdgeError as err:
            state.record_run("push", False, str(err))
            raise
        finally:
            ret = enforce(h, index, state, settings.retention)
            report["retention"] = {"deleted": ret.deleted, "freed_bytes": ret.freed_bytes,
                                   "disk_used_pct": round(ret.used_pct_after, 1),
                                   "blocked": ret.blocked}
            if ret.deleted:
                _say(f"retention: deleted {len(ret.deleted)} acknowledged episode(s), freed "
                     f"{human_bytes(ret.freed_bytes)}")
        failed = report.get("failed") or {}
        msg = (f"pushed {len(report.get('sent', []))} episode(s) "
               f"({human_bytes(report.get('bytes_sent', 0))}), "
               f"{len(report.get('known', []))} already on the host, {len(failed)} refused")
        state.record_run("push", not failed, msg)
    if as_json:
        print(json.dumps(report))
    else:
        _say(msg if todo else "nothing to push: every sealed episode is acknowledged")
    for eid, why in failed.items():
        _say(f"episode {eid}: {why}")
    if failed:
        raise typer.Exit(1)


@sync_app.command("pull")
def pull(
    host: HostOpt = None,
    server_key: ServerKeyOpt = None,
    home: HomeOpt = None,
    timeout: TimeoutOpt = 10.0,
    stall_timeout: StallOpt = 120.0,
    as_json: JsonOpt = False,
) -> None:
    """Fetch bundles the host published and this robot has not staged; check every chunk's and
    file's sha256, load the bundle and run its probe, then stage it under
    HOME/bundles/staged/. With `activate = "on_pull"` in sync.toml the newest one is then
    activated (the running controller switches between episodes)."""
    from ramp_edge.errors import EdgeError
    from ramp_edge.sync.bundles import activate_bundle, pull_bundles
    from ramp_edge.sync.settings import load_settings
    from ramp_edge.sync.state import SyncState

    h = resolve_home(home)
    with SyncState(h) as state:
        try:
            with _client(h, host, server_key, timeout, stall_timeout) as client:
                rep = pull_bundles(client, h, state, _say)
        except EdgeError as err:
            state.record_run("pull", False, str(err))
            raise
        state.record_run("pull", not rep.failed, f"{len(rep.staged)} staged, "
                         f"{len(rep.failed)} refused")
    report: dict[str, Any] = {"staged": rep.staged, "known": rep.known, "failed": rep.failed}
    if rep.staged and load_settings(h).activate == "on_pull":
        report["activated"] = activate_bundle(h)
        _say(f"activated {report['activated']['bundle']}: {report['activated']['when']}")
    if as_json:
        print(json.dumps(report))
    elif not rep.staged and not rep.failed:
        _say("no new bundles")
    if rep.failed:
        raise typer.Exit(1)


@sync_app.command("publish")
def publish(
    bundle: Annotated[Path, typer.Argument(help="The bundle directory to publish.")],
    root: Annotated[Path, typer.Option(help="The host's sync directory.")],
) -> None:
    """Check BUNDLE (manifest, artifact hashes, probe file) and make it available to robots."""
    from ramp_edge.sync.host_store import HostStore

    store = HostStore(root)
    try:
        pub = store.publish(bundle)
    finally:
        store.close()
    _say(f"published {pub.name}@{pub.id[:12]} ({len(pub.files)} files) under {pub.path}")


@sync_app.command("status")
def status(
    home: HomeOpt = None,
    root: Annotated[Path | None, typer.Option(
        help="On the host: report the sync directory ROOT instead of a robot home.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """What waits to be pushed, what the host acknowledged, staged bundles, last runs."""
    if root is not None:
        from ramp_edge.sync.host_store import HostStore

        store = HostStore(root)
        try:
            eps = store.episodes()
            robots: dict[str, int] = {}
            for e in eps:
                robots[e["robot"]] = robots.get(e["robot"], 0) + 1
            out: dict[str, Any] = {"episodes": len(eps), "bytes": sum(e["size"] for e in eps),
                                   "robots": robots,
                                   "bundles": [f"{b.name}@{b.id[:12]}" for b in store.bundles()]}
        finally:
            store.close()
    else:
        out = _robot_status(resolve_home(home))
    if as_json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            _say(f"{k}: {v}")


def _robot_status(h: Path) -> dict[str, Any]:
    import shutil

    from ramp_edge.episodes.index import EpisodeIndex
    from ramp_edge.sync.client import pending_episodes
    from ramp_edge.sync.state import SyncState

    with EpisodeIndex(h / "index.sqlite") as index, SyncState(h) as state:
        todo = pending_episodes(index, state)
        total, used, _free = shutil.disk_usage(h)
        return {
            "pending": len(todo),
            "pending_bytes": sum(e.bytes or 0 for e in todo),
            "acknowledged": len(state.acked()),
            "recording": len(index.list("recording")),
            "disk_used_pct": round(100.0 * used / total, 1) if total else None,
            "staged_bundles": [f"{b.name}@{b.id[:12]}" for b in state.bundles("staged")],
            "refused_bundles": {f"{b.name}@{b.id[:12]}": b.reason
                                for b in state.bundles("failed")},
            "last_runs": state.runs(),
        }
