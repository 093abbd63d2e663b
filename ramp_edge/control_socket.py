"""The running controller's local control socket: one JSON request per line, one JSON reply.

A Unix stream socket under the home directory (mode 0660), so ``ramp-edge estop`` and
``ramp-edge status`` reach the controller with no network. Requests: ``{"cmd": "status"}``,
``{"cmd": "estop", "reason": "..."}``, ``{"cmd": "clear"}``, ``{"cmd": "swap", "bundle": PATH}``,
``{"cmd": "rollback"}``. Replies: ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
Each request runs on a thread of its own, so handlers must be thread-safe (set a flag, copy a
snapshot, or do slow work such as loading a bundle without holding anything the control thread
needs).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ramp_edge.errors import EdgeError

MAX_REQUEST = 64 * 1024
Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlSocketError(EdgeError, ConnectionError):
    """No controller answers at the control socket (not running, or another home)."""


def socket_path(home: Path) -> Path:
    return home / "run" / "control.sock"


class ControlSocketServer:
    """Serves ``handlers[cmd](request) -> reply`` on a background thread until ``close()``."""

    def __init__(self, path: Path, handlers: dict[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            if _answers(path):
                raise ControlSocketError(f"another controller is already running ({path})")
            path.unlink()  # left over from a crash
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        os.chmod(path, 0o660)
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="control-socket", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            # one thread per request: a slow one (a bundle swap loads for seconds) must not
            # hold up an e-stop behind it
            threading.Thread(target=self._handle, args=(conn,), name="control-request",
                             daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(2.0)
            with contextlib.suppress(OSError):
                conn.sendall(self._answer(_read_line(conn)) + b"\n")

    def _answer(self, raw: bytes | None) -> bytes:
        try:
            if raw is None:
                raise ValueError("request too long or not terminated by a newline")
            request = json.loads(raw)
            if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
                raise ValueError('a request is a JSON object with a "cmd" string')
            handler = self.handlers.get(request["cmd"])
            if handler is None:
                known = ", ".join(sorted(self.handlers))
                raise ValueError(f"unknown command {request['cmd']!r} (known: {known})")
            reply = {"ok": True, **handler(request)}
        except (ValueError, EdgeError) as err:
            reply = {"ok": False, "error": str(err)}
        return json.dumps(reply).encode()

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(timeout=2.0)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> ControlSocketServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_line(conn: socket.socket) -> bytes | None:
    buf = bytearray()
    while b"\n" not in buf:
        chunk = conn.recv(4096)
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_REQUEST:
            return None
    return bytes(buf.split(b"\n", 1)[0])


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def send_command(path: Path, request: dict[str, Any], timeout_s: float = 3.0) -> dict[str, Any]:
    """Send one request to the controller and return its reply. Raises ControlSocketError.

    A swap loads and verifies a bundle before answering: give it ``timeout_s`` of a minute."""
    return _send(path, request, timeout_s)


def _send(path: Path, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        try:
            s.connect(str(path))
            s.sendall(json.dumps(request).encode() + b"\n")
            raw = _read_line(s)
        except FileNotFoundError as err:
            raise ControlSocketError(f"no controller is running (no socket at {path})") from err
        except ConnectionRefusedError as err:
            raise ControlSocketError(f"no controller answers at {path} (stale socket)") from err
        except OSError as err:
            raise ControlSocketError(f"control socket {path}: {err}") from err
    if not raw:
        raise ControlSocketError(f"the controller at {path} closed without answering")
    try:
        reply = json.loads(raw)
    except ValueError as err:
        raise ControlSocketError(f"the controller at {path} sent a malformed reply") from err
    return reply
