"""Bundles on the robot: pull what the host publishes into ``HOME/bundles/staged/`` (every chunk
and file hash-checked, the manifest's sha256 matched to the bundle id, then
:func:`ramp_edge.bundle.load_bundle` and the probe on this machine's best engine), and activate a
staged bundle: the running controller takes it between episodes, and ``HOME/bundles/active``
(a symbolic link, which ``ramp-edge run`` starts with) points at it, the one before kept as
``HOME/bundles/previous`` for rollback. A bundle that failed any check is never staged and never
activated.

Trust: the robot pins the host's CURVE public key, so a bundle list can only come from the host
that holds the matching secret key; a bundle's id is its manifest's sha256 and the manifest holds
every artifact's sha256, so what is staged is exactly what that host published.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ramp_edge.episodes.seal import fsync_path, sha256_file
from ramp_edge.errors import EdgeError
from ramp_edge.sync import protocol as P
from ramp_edge.sync.client import SyncClient
from ramp_edge.sync.errors import SyncError, SyncUnavailableError
from ramp_edge.sync.state import SyncState

log = logging.getLogger(__name__)


def bundles_dir(home: Path) -> Path:
    return home / "bundles"


def staged_dir(home: Path) -> Path:
    return bundles_dir(home) / "staged"


@dataclass
class PullReport:
    staged: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # "name@id12" -> reason


def verify_bundle(path: Path) -> str:
    """Load ``path`` (manifest, artifact hashes, probe file) and run its probe on the best engine
    this machine has. Returns the engine line; raises BundleError / EngineError."""
    from ramp_edge.bundle import load_bundle
    from ramp_edge.engines import select_engine

    engine, message = select_engine(load_bundle(path))
    engine.close()
    return message


def _listing(item: Any) -> tuple[str, str, list[tuple[str, int, str]]]:
    try:
        bid, name, files = item["id"], item["name"], item["files"]
        out = [(str(r), int(s), str(h)) for r, s, h in files]
    except (KeyError, TypeError, ValueError) as err:
        raise SyncError(f"the host listed a malformed bundle: {err}") from None
    if not P.SHA_RE.match(str(bid)) or not isinstance(name, str):
        raise SyncError("the host listed a bundle with a malformed id or name")
    for rel, size, sha in out:
        p = PurePosixPath(rel)
        if p.is_absolute() or ".." in p.parts or str(p) != rel or not P.SHA_RE.match(sha) \
                or not 0 <= size <= P.MAX_FILE_BYTES:
            raise SyncError(f"bundle {name}: the host listed a bad file entry {rel!r}")
    return bid, name, out


def _fetch(client: SyncClient, root: Path, bid: str, name: str,
           files: list[tuple[str, int, str]]) -> Path:
    tmp = root / f".{bid}.part"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for rel, size, sha in files:
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                client.fetch_file(bid, rel, size, fd)
                os.ftruncate(fd, size)
                os.fsync(fd)
            finally:
                os.close(fd)
            if sha256_file(target) != sha:
                raise SyncError(f"bundle {name}: {rel} does not match its sha256 in the host's "
                                "listing (corrupted in transit or on the host); refused")
        manifest = tmp / "manifest.json"
        if not manifest.is_file() or sha256_file(manifest) != bid:
            raise SyncError(f"bundle {name}: manifest.json does not match the bundle id; "
                            "refused")
        message = verify_bundle(tmp)
        log.info("bundle %s@%s verified: %s", name, bid[:12], message)
        final = root / f"{re.sub(r'[^A-Za-z0-9._-]', '_', name)}-{bid[:12]}"
        if final.exists():
            shutil.rmtree(final)
        for d in [tmp, *[p for p in tmp.rglob("*") if p.is_dir()]]:
            fsync_path(d)
        os.replace(tmp, final)
        fsync_path(root)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def pull_bundles(client: SyncClient, home: Path, state: SyncState,
                 say: Callable[[str], None] = lambda _s: None) -> PullReport:
    """Fetch, check and stage every published bundle not staged yet. A bundle that fails a
    check is recorded as failed (tried again next pull) and never staged. Raises
    SyncUnavailableError when the link is lost."""
    root = staged_dir(home)
    root.mkdir(parents=True, exist_ok=True)
    rep = PullReport()
    for item in client.list_bundles():
        bid, name, files = _listing(item)
        label = f"{name}@{bid[:12]}"
        rec = state.bundle(bid)
        if rec is not None and rec.status == "staged" and rec.path and Path(rec.path).is_dir():
            rep.known.append(label)
            continue
        try:
            path = _fetch(client, root, bid, name, files)
        except SyncUnavailableError:
            raise
        except (EdgeError, OSError) as err:
            state.record_bundle(bid, name, "failed", reason=str(err))
            rep.failed[label] = str(err)
            say(f"bundle {label} refused: {err}")
            continue
        state.record_bundle(bid, name, "staged", path=str(path))
        rep.staged.append(label)
        say(f"bundle {label} staged at {path}")
    return rep


# activation -------------------------------------------------------------------------------


def newest_staged(home: Path, state: SyncState) -> Path:
    for rec in state.bundles("staged"):
        if rec.path and Path(rec.path).is_dir():
            return Path(rec.path)
    raise SyncError(f"no staged bundle under {staged_dir(home)}: run `ramp-edge sync pull`")


def _link(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` atomically (relative when under the same directory)."""
    try:
        dest: Path | str = os.path.relpath(target, link.parent)
    except ValueError:
        dest = target
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(dest, tmp)
    os.replace(tmp, link)
    fsync_path(link.parent)


def point_active(home: Path, target: Path) -> None:
    """``bundles/active`` -> ``target``; what it pointed at before becomes ``bundles/previous``.
    A real directory at ``active`` is moved aside (``active-<time>``) and kept as previous."""
    d = bundles_dir(home)
    d.mkdir(parents=True, exist_ok=True)
    active, previous = d / "active", d / "previous"
    old: Path | None = None
    if active.is_symlink():
        old = active.resolve()
    elif active.is_dir():
        old = d / f"active-{time.strftime('%Y%m%dT%H%M%S')}"
        os.rename(active, old)
    if old is not None and old != target.resolve():
        _link(previous, old)
    _link(active, target.resolve())


def swap_active_links(home: Path) -> Path | None:
    """Make ``previous`` active and ``active`` previous; returns the new active target, or None
    when there is no previous bundle."""
    d = bundles_dir(home)
    active, previous = d / "active", d / "previous"
    if not previous.is_symlink() or not previous.resolve().is_dir():
        return None
    back = previous.resolve()
    if active.is_symlink():
        _link(previous, active.resolve())
    _link(active, back)
    return back


def previous_label(home: Path) -> str | None:
    """``name@sha12`` of the bundle ``bundles/previous`` points at (as the controller names
    engines), or None."""
    from ramp_edge.bundle import BundleError, load_bundle

    previous = bundles_dir(home) / "previous"
    if not previous.is_symlink():
        return None
    try:
        b = load_bundle(previous.resolve())
    except BundleError:
        return None
    return f"{b.name}@{b.sha256[:12]}"


def activate_bundle(home: Path, bundle: Path | None = None) -> dict[str, Any]:
    """Activate ``bundle`` (default: the newest staged one). A running controller checks it
    (hashes, fit to the robot, probe) and switches before its next episode; with none running
    the probe runs here. Only then does ``bundles/active`` move. Raises SyncError for a bundle
    that failed verification (now or when it was pulled), BundleError, EngineError."""
    from ramp_edge.bundle import load_bundle
    from ramp_edge.control_socket import ControlSocketError, send_command, socket_path

    with SyncState(home) as state:
        path = Path(bundle) if bundle else newest_staged(home, state)
        b = load_bundle(path)
        rec = state.bundle(b.sha256)
        if rec is not None and rec.status == "failed":
            raise SyncError(f"bundle {b.name}@{b.sha256[:12]} failed verification when it was "
                            f"pulled ({rec.reason}); it is never activated")
    label = f"{b.name}@{b.sha256[:12]}"
    sock = socket_path(home)
    reply: dict[str, Any] | None = None
    try:
        reply = send_command(sock, {"cmd": "activate", "bundle": str(path.resolve())},
                             timeout_s=120.0)
    except ControlSocketError as err:
        # No socket, or a stale one a crash left: no controller. Anything else (it accepted
        # the request but did not answer) must not be taken for "not running".
        if not isinstance(err.__cause__, (FileNotFoundError, ConnectionRefusedError)):
            raise
    if reply is not None and not reply.get("ok"):
        raise SyncError(f"the running controller refused {label}: {reply.get('error')}")
    if reply is None:
        verify_bundle(path)
    point_active(home, path)
    return {"bundle": label, "path": str(path.resolve()),
            "when": "the running controller switches before its next episode" if reply else
            "no controller running; the next run starts with it"}
