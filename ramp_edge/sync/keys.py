"""CURVE key pairs and the host's allow-list of robot keys.

Key files use ZeroMQ's certificate format (``zmq.auth.load_certificate`` reads them): the public
file ``NAME.key`` holds the public key, the secret file ``NAME.key_secret`` both keys and is
written atomically with mode 0600. The host's allow-list is a directory with one public key file
per robot; the file name (less ``.key``) is the robot id the host files its episodes under.
"""

from __future__ import annotations

import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from firmware_bridge.durable_files import write_atomically
from ramp_edge.sync.errors import CurveUnavailableError, KeyFileError

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
DEFAULT_NAME = "sync"
ROBOT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def require_curve() -> None:
    """Raise CurveUnavailableError unless libzmq supports CURVE."""
    if not zmq.has("curve"):
        raise CurveUnavailableError(
            f"libzmq {zmq.zmq_version()} was built without CURVE security (libsodium); install "
            "a pyzmq wheel from PyPI, whose bundled libzmq has it")


@dataclass(frozen=True)
class KeyPair:
    """Z85-encoded CURVE keys (40 ASCII bytes each); ``secret`` is None for a public key."""

    public: bytes
    secret: bytes | None = None


def _text(public: bytes, secret: bytes | None) -> str:
    kind = "Secret" if secret else "Public"
    lines = [f"#   ****  Generated on {time.strftime('%Y-%m-%d %H:%M:%S')} by ramp-edge  ****",
             f"#   ZeroMQ CURVE {kind} Certificate"]
    if secret:
        lines.append("#   Keep this file private (mode 0600); give out the .key file only.")
    lines += ["", "metadata", "curve", f'    public-key = "{public.decode()}"']
    if secret:
        lines.append(f'    secret-key = "{secret.decode()}"')
    return "\n".join(lines) + "\n"


def generate_keypair(directory: str | os.PathLike[str], name: str = DEFAULT_NAME, *,
                     overwrite: bool = False) -> tuple[Path, Path]:
    """Create a CURVE key pair as ``directory/NAME.key`` and ``directory/NAME.key_secret``
    (mode 0600). Returns (public path, secret path). Raises KeyFileError if they exist and
    ``overwrite`` is false (a new key locks the robot out until the host lists it)."""
    require_curve()
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    pub_path, sec_path = d / f"{name}{PUBLIC_SUFFIX}", d / f"{name}{SECRET_SUFFIX}"
    if not overwrite and (pub_path.exists() or sec_path.exists()):
        raise KeyFileError(f"{sec_path} already exists; pass --force to replace it (the host "
                           f"must then be given the new {pub_path.name})")
    public, secret = zmq.curve_keypair()
    write_atomically(sec_path, _text(public, secret), 0o600)
    write_atomically(pub_path, _text(public, None), 0o644)
    return pub_path, sec_path


def _load(path: Path) -> KeyPair:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as err:
        raise KeyFileError(f"key file {path}: {err}") from err
    if public is None or len(public) != 40 or (secret is not None and len(secret) != 40):
        raise KeyFileError(f"key file {path} holds no valid CURVE key")
    try:
        zmq.utils.z85.decode(public)
    except ValueError as err:
        raise KeyFileError(f"key file {path} holds no valid CURVE key") from err
    return KeyPair(public, secret)


def load_public(path: str | os.PathLike[str]) -> bytes:
    """The Z85 public key in ``path`` (a ``.key`` or ``.key_secret`` file)."""
    return _load(Path(path)).public


def load_secret(path: str | os.PathLike[str]) -> KeyPair:
    """Both keys from a ``.key_secret`` file. Raises KeyFileError if it is missing, holds no
    secret key, or others can read it."""
    p = Path(path)
    if not p.exists():
        raise KeyFileError(f"secret key {p} is missing (create one with `ramp-edge sync keygen`)")
    if stat.S_IMODE(p.stat().st_mode) & 0o077:
        raise KeyFileError(f"secret key {p} is readable by others; chmod 600 it")
    pair = _load(p)
    if pair.secret is None:
        raise KeyFileError(f"{p} holds a public key only; a {SECRET_SUFFIX} file is needed")
    return pair


class AllowList:
    """Robot public keys from a directory, file name = robot id. :meth:`robot_for` re-reads the
    directory when it changed, so adding a robot needs no restart."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise KeyFileError(f"allow-list {self.directory} is not a directory")
        self._stamp: tuple[int, int] | None = None
        self._robots: dict[bytes, str] = {}
        self.problems: list[str] = []
        self.reload()

    def reload(self) -> None:
        st = self.directory.stat()
        robots: dict[bytes, str] = {}
        problems = []
        for p in sorted(self.directory.iterdir()):
            if not p.is_file() or p.name.startswith(".") or p.name.endswith(SECRET_SUFFIX):
                continue
            rid = p.name[: -len(PUBLIC_SUFFIX)] if p.name.endswith(PUBLIC_SUFFIX) else p.name
            if not ROBOT_ID_RE.match(rid):
                problems.append(f"{p.name}: {rid!r} is not a valid robot id")
                continue
            try:
                key = _load(p).public
            except KeyFileError as err:
                problems.append(str(err))
                continue
            if key in robots:
                problems.append(f"{p.name}: same key as robot {robots[key]!r}, ignored")
                continue
            robots[key] = rid
        self._robots, self.problems = robots, problems
        self._stamp = (st.st_mtime_ns, st.st_ino)

    def robot_for(self, public_z85: bytes) -> str | None:
        """The robot id of a key, or None if the key is not listed."""
        st = self.directory.stat()
        if (st.st_mtime_ns, st.st_ino) != self._stamp:
            self.reload()
        return self._robots.get(bytes(public_z85))

    def __len__(self) -> int:
        return len(self._robots)
