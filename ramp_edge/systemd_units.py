"""The systemd units that run ramp-edge on the robot: render them from their templates and write
them where systemd reads them.

Three units (templates in ``ramp_edge/units/*.in``):

- ``ramp-edge.service``: the controller, ``Type=notify`` with a watchdog (see
  :mod:`ramp_edge.sd_notify`), restarted on failure, 30 s to seal the current episode at stop.
- ``ramp-edge-sync.service``: one ``ramp-edge sync push`` then ``ramp-edge sync pull``, at idle
  priority.
- ``ramp-edge-sync.timer``: runs the sync 5 minutes after boot, then 15 minutes after each run.

Rendering fills in the executable, the home directory and the service user; everything else is
in the templates, with the reasons for each setting. Nothing here calls ``systemctl``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath

from ramp_edge.errors import EdgeError

CONTROLLER_UNIT = "ramp-edge.service"
SYNC_UNIT = "ramp-edge-sync.service"
SYNC_TIMER = "ramp-edge-sync.timer"
UNIT_NAMES = (CONTROLLER_UNIT, SYNC_UNIT, SYNC_TIMER)

EXECUTABLE_NAME = "ramp-edge"
DEFAULT_HOME = PurePosixPath("/var/lib/ramp-edge")
DEFAULT_USER = "ramp-edge"
DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
# Serial ports (dialout), cameras and the Jetson GPU nodes (video), teleop devices (input).
DEFAULT_GROUPS = ("dialout", "video", "input")

# systemd's StateDirectory= lives under this; a home elsewhere is opened with ReadWritePaths=.
_STATE_ROOT = PurePosixPath("/var/lib")
# ProtectHome=yes hides these; an executable or interpreter under them needs read-only instead.
_HOME_ROOTS = (PurePosixPath("/home"), PurePosixPath("/root"), PurePosixPath("/run/user"))
# Characters a rendered path may hold: no whitespace, quotes, backslashes or control bytes, so
# it is one word everywhere systemd reads it (ExecStart=, ReadWritePaths=, Environment=).
_SAFE_PATH = re.compile(r"/[A-Za-z0-9_@%+=:,./~-]*")
_SAFE_ARG = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
# useradd's and systemd's portable user/group names.
_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,30}")
_PLACEHOLDER = re.compile(r"@([A-Z_]+)@")


class UnitError(EdgeError, ValueError):
    """A unit cannot be rendered from these settings (a path or name systemd would misread)."""


class UnitInstallError(EdgeError, OSError):
    """A rendered unit could not be written where it was asked to go."""


@dataclass(frozen=True)
class WrittenUnit:
    """One unit file written (or, in a dry run, that would be): where, and whether it changed.
    ``change`` is ``"new"``, ``"updated"`` or ``"unchanged"``."""

    name: str
    path: Path
    change: str


def find_executable() -> Path:
    """The real path of the ``ramp-edge`` executable in use: the one running now (``argv[0]``),
    else the one beside this interpreter (a virtualenv's ``bin``), else the first on ``PATH``.
    Raises :class:`UnitError` if there is none."""
    candidates: list[str | None] = []
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == EXECUTABLE_NAME:
        candidates.append(argv0 if os.sep in argv0 else shutil.which(argv0))
    candidates.append(os.path.join(os.path.dirname(sys.executable), EXECUTABLE_NAME))
    candidates.append(shutil.which(EXECUTABLE_NAME))
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return Path(os.path.realpath(candidate))
    raise UnitError(f"cannot find the {EXECUTABLE_NAME} executable (not running as it, not "
                    f"beside {sys.executable}, not on PATH); pass --prefix")


def executable_for(prefix: str | os.PathLike[str] | None) -> PurePosixPath:
    """``PREFIX/bin/ramp-edge``, or the real path of the one in use when ``prefix`` is None."""
    if prefix is None:
        return PurePosixPath(_check_path(find_executable(), "executable"))
    return PurePosixPath(_check_path(prefix, "prefix")) / "bin" / EXECUTABLE_NAME


def interpreter_of(executable: str | os.PathLike[str]) -> Path | None:
    """The interpreter named on a script's ``#!`` line, as written and resolved; ``None`` if the
    file is missing, not a script, or starts it through ``env`` (found on PATH at run time)."""
    try:
        with open(executable, "rb") as f:
            first = f.readline(4096)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode("utf-8", "replace").split()
    if not words or os.path.basename(words[0]) == "env":
        return None
    return Path(words[0])


def paths_under_home(executable: str | os.PathLike[str]) -> list[str]:
    """The paths the service must read (the executable and its interpreter, as written and
    resolved) that lie under ``/home``, ``/root`` or ``/run/user``, which ``ProtectHome=yes``
    hides and whose owners' permissions usually keep a service user out."""
    paths = [Path(executable)]
    interpreter = interpreter_of(executable)
    if interpreter is not None:
        paths.append(interpreter)
    found: list[str] = []
    for path in paths:
        for candidate in (str(path), os.path.realpath(path)):
            if _is_under_home(candidate) and candidate not in found:
                found.append(candidate)
    return found


def render_units(
    prefix: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] = DEFAULT_HOME,
    user: str = DEFAULT_USER,
    *,
    groups: Sequence[str] = DEFAULT_GROUPS,
    run_args: Sequence[str] = (),
    executable: str | os.PathLike[str] | None = None,
) -> dict[str, str]:
    """The three unit files, name -> text, for ``PREFIX/bin/ramp-edge`` (by default the real path
    of the ``ramp-edge`` in use), running as ``user`` with ``home`` as ``RAMP_EDGE_HOME``.

    ``executable``, if given, is used as is instead of ``PREFIX/bin/ramp-edge``. ``groups``
    are the controller's supplementary groups; ``run_args`` are appended to
    ``ramp-edge run --home HOME`` (quoted for systemd). A home under ``/var/lib`` becomes the
    units' ``StateDirectory=`` (systemd creates it, owned by ``user``); any other home must exist,
    owned by ``user``, and is opened with ``ReadWritePaths=``. Raises :class:`UnitError` for a
    relative or oddly spelled path or name."""
    if executable is not None:
        executable = PurePosixPath(_check_path(executable, "executable"))
    else:
        executable = executable_for(prefix)
    home_path = PurePosixPath(_check_path(home, "home"))
    if home_path in (PurePosixPath("/"), _STATE_ROOT):
        raise UnitError(f"home {home_path} would hand a system directory to the service")
    user = _check_name(user, "user")
    groups = [_check_name(g, "group") for g in groups]
    exe = _escape(str(executable))

    if home_path.is_relative_to(_STATE_ROOT):
        state = str(home_path.relative_to(_STATE_ROOT))
        home_directives = f"StateDirectory={_escape(state)}\nStateDirectoryMode=0750"
    else:
        home_directives = f"ReadWritePaths={_escape(str(home_path))}"
    needs_home = bool(paths_under_home(executable)) or _is_under_home(str(home_path))

    values = {
        "EXE": exe,
        "EXEC_START": " ".join([exe, "run", "--home", _escape(str(home_path)),
                                *(_quote_arg(a) for a in run_args)]),
        "HOME": _escape(str(home_path)),
        "HOME_DIRECTIVES": home_directives,
        "USER": user,
        "GROUPS": " ".join(groups),
        "PROTECT_HOME": "read-only" if needs_home else "yes",
    }
    return {name: _fill(name, _template(name), values) for name in UNIT_NAMES}


def write_units(units: Mapping[str, str], directory: str | os.PathLike[str], *,
                dry_run: bool = False) -> list[WrittenUnit]:
    """Write each unit to ``directory/NAME`` atomically (temporary file, fsync, rename, fsync
    the directory), mode 0644, creating ``directory`` if needed. With ``dry_run`` nothing is
    written. Returns what was (or would be) written. Raises :class:`UnitInstallError`."""
    directory = Path(directory)
    written: list[WrittenUnit] = []
    for name, text in units.items():
        path = directory / name
        try:
            old = path.read_text() if path.exists() else None
        except OSError as err:
            raise UnitInstallError(f"cannot read {path}: {err.strerror or err}") from err
        change = "new" if old is None else ("unchanged" if old == text else "updated")
        if not dry_run and change != "unchanged":
            write_text_atomic(path, text)
        written.append(WrittenUnit(name, path, change))
    return written


def write_text_atomic(path: str | os.PathLike[str], text: str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text`` so that a crash or power cut leaves the old file or the new
    one, never a torn one. Raises :class:`UnitInstallError`."""
    path = Path(path)
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as err:
        hint = " (run as root, or use --dry-run)" if isinstance(err, PermissionError) else ""
        raise UnitInstallError(f"cannot write {path}: {err.strerror or err}{hint}") from err
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


def next_steps(user: str = DEFAULT_USER, home: str | os.PathLike[str] = DEFAULT_HOME, *,
               user_exists: bool | None = None) -> list[str]:
    """The commands a person runs after installing the units, in order. Creating the service
    user is included when it does not exist (``user_exists`` None: look it up here)."""
    if user_exists is None:
        user_exists = _user_exists(user)
    steps = []
    if not user_exists:
        steps.append(f"useradd --system --user-group --home-dir {home} --no-create-home "
                     f"--shell /usr/sbin/nologin {user}")
    steps.append(f"systemctl daemon-reload && systemctl enable --now {CONTROLLER_UNIT}")
    steps.append(f"systemctl enable --now {SYNC_TIMER}  # once the training host is configured")
    return steps


# -- internals -------------------------------------------------------------------------------


def _template(name: str) -> str:
    return resources.files("ramp_edge").joinpath("units", f"{name}.in").read_text("utf-8")


def _fill(name: str, template: str, values: Mapping[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise UnitError(f"template {name}.in has an unknown placeholder @{key}@")
        return values[key]

    return _PLACEHOLDER.sub(sub, template)


def _check_path(value: str | os.PathLike[str], what: str) -> str:
    text = os.fspath(value)
    if not text.startswith("/"):
        raise UnitError(f"{what} must be an absolute path, not {text!r}")
    normal = os.path.normpath(text)
    if not _SAFE_PATH.fullmatch(normal):
        raise UnitError(f"{what} {text!r} has characters systemd would misread (whitespace, "
                        f"quotes, backslashes); choose a plain path")
    return normal


def _check_name(value: str, what: str) -> str:
    if not _NAME.fullmatch(value):
        raise UnitError(f"{what} name {value!r} is not a portable system name "
                        f"(lowercase letters, digits, '_' and '-', at most 31, not first digit)")
    return value


def _escape(word: str) -> str:
    # systemd expands %-specifiers everywhere and $VAR in Exec lines; keep both literal.
    return word.replace("%", "%%").replace("$", "$$")


def _quote_arg(arg: str) -> str:
    """One argument for an Exec line, quoted if systemd would otherwise split or expand it."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in arg):
        raise UnitError(f"argument {arg!r} has control characters")
    if _SAFE_ARG.fullmatch(arg):
        return _escape(arg)
    return '"' + _escape(arg.replace("\\", "\\\\").replace('"', '\\"')) + '"'


def _is_under_home(path: str) -> bool:
    p = PurePosixPath(path)
    return any(p == root or p.is_relative_to(root) for root in _HOME_ROOTS)


def _user_exists(user: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True
