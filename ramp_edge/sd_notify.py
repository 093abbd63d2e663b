"""A small client for systemd's notify protocol (``sd_notify(3)``), written against the protocol.

Under a ``Type=notify`` unit, systemd passes the address of a datagram socket in
``NOTIFY_SOCKET``: a filesystem path (``/run/systemd/notify``) or, when it starts with ``@``, a
name in the Linux abstract namespace. A message is one datagram of newline-separated
``KEY=VALUE`` assignments. systemd learns the sender's PID from the socket credentials, so with
``NotifyAccess=main`` only the main process (any of its threads) may send.

The controller uses it to say when it is ready (after engines load and the bus answers), to ping
the watchdog from the control loop, to say it is stopping, and to ask for more stop time while it
seals the current episode.

Outside systemd (``NOTIFY_SOCKET`` unset) every call is a no-op that returns ``False``. On the
control path nothing here blocks or raises: a failed send is counted (``failures``,
``last_error``) and the caller carries on. The watchdog must be pinged from the loop whose
progress it vouches for (the control thread), never from a helper thread that would keep pinging
while the loop is stuck.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import warnings
from collections.abc import Mapping, MutableMapping

NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"

# systemd reads at most PIPE_BUF (4096) bytes per notification; keep STATUS well inside it.
MAX_STATUS_BYTES = 1024

_WATCHDOG = b"WATCHDOG=1"


def notify_address(value: str | None) -> str | bytes | None:
    """The socket address for a ``NOTIFY_SOCKET`` value, or ``None`` if it is unset or not one
    this client speaks (a path starting with ``/``, or ``@name`` for the abstract namespace;
    systemd 253's ``vsock:`` addresses are not supported)."""
    if not value:
        return None
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    return None


def watchdog_period_s(
    environ: Mapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """The watchdog period systemd enforces on this process, in seconds, or ``None`` if there is
    none for it: ``WATCHDOG_USEC`` unset, not a positive integer, or ``WATCHDOG_PID`` naming
    another process (the variables were inherited from a parent). A missing ``WATCHDOG_PID`` is
    accepted, as ``sd_watchdog_enabled(3)`` does. Ping at least every half period."""
    env = os.environ if environ is None else environ
    raw_usec = env.get(WATCHDOG_USEC)
    if not raw_usec:
        return None
    try:
        usec = int(raw_usec, 10)
    except ValueError:
        return None
    if usec <= 0:
        return None
    raw_pid = env.get(WATCHDOG_PID)
    if raw_pid:
        try:
            wanted = int(raw_pid, 10)
        except ValueError:
            return None
        if wanted != (os.getpid() if pid is None else pid):
            return None
    return usec / 1e6


def _clean_status(text: str) -> str:
    # A newline would start another assignment (text could forge READY=1 or STOPPING=1).
    one_line = " ".join(text.splitlines())
    raw = one_line.encode("utf-8", "replace")
    if len(raw) <= MAX_STATUS_BYTES:
        return one_line
    return raw[:MAX_STATUS_BYTES].decode("utf-8", "ignore")


class Notifier:
    """Sends notifications to the service manager; a no-op when there is none.

    ``address`` is a ``NOTIFY_SOCKET`` value (``/path`` or ``@abstract``); ``None`` disables the
    notifier. ``watchdog_period_s`` is the period systemd enforces (see :func:`watchdog_period_s`).
    Build one from the environment with :meth:`from_environ`. Every sending method returns
    ``True`` if the datagram left, ``False`` otherwise (disabled, closed, or failed: failures are
    counted in ``failures`` with the last one in ``last_error``); none raises on a send failure.
    Safe to share between threads. ``close()`` is idempotent; the object is a context manager.
    """

    def __init__(self, address: str | None, *, watchdog_period_s: float | None = None,
                 retry_s: float = 0.05) -> None:
        self.address = address
        self._target = notify_address(address)
        self.watchdog_period_s = watchdog_period_s if self._target is not None else None
        self.watchdog_interval_s = (self.watchdog_period_s / 2
                                    if self.watchdog_period_s else None)
        self._retry_s = retry_s
        self._sock: socket.socket | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._last_watchdog = float("-inf")
        self.sent = 0
        self.failures = 0
        self.last_error: str | None = None
        if address and self._target is None:
            self._fail(f"unsupported {NOTIFY_SOCKET} address {address!r}")

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None, *,
                     unset_environment: bool = False) -> Notifier:
        """A notifier for the service manager named in the environment (``os.environ`` by
        default). With ``unset_environment`` the variables are removed afterwards, so child
        processes (an emulator, a helper) neither inherit the socket nor the watchdog."""
        env = os.environ if environ is None else environ
        notifier = cls(env.get(NOTIFY_SOCKET), watchdog_period_s=watchdog_period_s(env))
        if unset_environment:
            for key in (NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID):
                env.pop(key, None)
        return notifier

    @property
    def enabled(self) -> bool:
        """Whether there is a service manager to notify (and the notifier is open)."""
        return self._target is not None and not self._closed

    # -- the protocol's messages -------------------------------------------------------------

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: start-up finished (systemd then considers the service started)."""
        return self.notify("READY=1", *self._status(status))

    def status(self, text: str) -> bool:
        """``STATUS=...``: one line shown by ``systemctl status`` (newlines become spaces,
        cut to :data:`MAX_STATUS_BYTES` bytes)."""
        return self.notify(*self._status(text))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the service is alive. One non-blocking attempt, no retry."""
        sent = self._send(_WATCHDOG, retry=False)
        if sent:
            self._last_watchdog = time.monotonic()
        return sent

    def watchdog_if_due(self, now_s: float | None = None) -> bool:
        """Ping the watchdog if half the period has passed since the last ping; call it every
        control step. ``now_s`` is ``time.monotonic()`` (pass it if the loop already has it).
        Returns whether a ping was sent."""
        interval = self.watchdog_interval_s
        if interval is None:
            return False
        now = time.monotonic() if now_s is None else now_s
        if now - self._last_watchdog < interval:
            return False
        sent = self._send(_WATCHDOG, retry=False)
        if sent:
            self._last_watchdog = now
        return sent

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: shutdown has begun (sent on SIGTERM, before sealing)."""
        return self.notify("STOPPING=1", *self._status(status))

    def reloading(self, status: str | None = None) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC`` (as ``Type=notify-reload`` requires); send
        :meth:`ready` when the reload is done."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *self._status(status))

    def extend_timeout(self, usec: int, status: str | None = None) -> bool:
        """``EXTEND_TIMEOUT_USEC=usec``: the current start or stop timeout is extended to
        ``usec`` microseconds from now (systemd >= 236). Send it repeatedly while a long job
        (sealing an episode at stop) makes progress. Raises ``ValueError`` if ``usec`` is not a
        positive integer (a bug in the caller, not a send failure)."""
        if isinstance(usec, bool) or not isinstance(usec, int) or usec <= 0:
            raise ValueError(f"extend_timeout wants a positive integer of microseconds, "
                             f"not {usec!r}")
        return self.notify(f"EXTEND_TIMEOUT_USEC={usec}", *self._status(status))

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments as one datagram. Values must not contain newlines
        (use :meth:`status` for free text). Retries for up to ``retry_s`` while systemd's queue
        is full."""
        if not assignments:
            return False
        return self._send("\n".join(assignments).encode("utf-8"), retry=True)

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the socket. Idempotent; later sends return ``False``."""
        self._closed = True
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_sock", None) is not None:
            warnings.warn(f"Notifier for {self.address!r} was not closed", ResourceWarning,
                          stacklevel=2)
            self.close()

    def __repr__(self) -> str:
        return (f"Notifier(address={self.address!r}, sent={self.sent}, "
                f"failures={self.failures})")

    # -- internals -----------------------------------------------------------------------------

    @staticmethod
    def _status(text: str | None) -> tuple[str, ...]:
        return () if text is None else (f"STATUS={_clean_status(text)}",)

    def _socket(self) -> socket.socket | None:
        sock = self._sock
        if sock is None:
            with self._lock:
                if self._sock is None and not self._closed:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    # Non-blocking: a full queue at systemd's end must not stall the control loop.
                    sock.setblocking(False)
                    self._sock = sock
                sock = self._sock
        return sock

    def _send(self, payload: bytes, *, retry: bool) -> bool:
        target = self._target
        if target is None or self._closed:
            return False
        deadline = None
        while True:
            try:
                sock = self._socket()
                if sock is None:
                    return False
                sock.sendto(payload, target)
            except BlockingIOError as err:
                if retry and self._retry_s > 0:
                    now = time.monotonic()
                    deadline = deadline or now + self._retry_s
                    if now < deadline:
                        time.sleep(0.001)
                        continue
                self._fail(f"notify socket busy: {err}")
                return False
            except OSError as err:
                self._fail(f"notify send failed: {err}")
                return False
            with self._lock:
                self.sent += 1
            return True

    def _fail(self, message: str) -> None:
        with self._lock:
            self.failures += 1
            self.last_error = message


__all__ = [
    "MAX_STATUS_BYTES",
    "NOTIFY_SOCKET",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
    "Notifier",
    "notify_address",
    "watchdog_period_s",
]
