"""The keyboard as a teleop device: the controlling terminal or a given one, in cbreak mode
(keys arrive one by one, not echoed; Ctrl-C still interrupts), restored on close and on error.

``keyboard://`` (the controlling terminal, ``/dev/tty``) or ``keyboard:///dev/pts/N``, with
``keys=qa,ws,ed,rf,tg,yh,uj`` (per joint, in joint order: the key that moves it up, then the
one that moves it down), ``step=0.02`` (joint unit per key press; one value or one per joint),
``lead=0.2`` (how far a jogged target may run ahead of the follower, joint unit) and
``rate_hz=50``.

Space toggles takeover: the target starts at the follower's pose and the jog keys move it; a
second space hands back. Esc requests an e-stop (:meth:`~HumanDevice.take_estop_request`) and
disengages. A terminal sends no key-up events, so a held key repeats at the terminal's rate
and there is no hold-to-take-over. Only the arrow keys' escape sequences (``ESC [ A``..``D``,
``ESC O A``..``D``, complete within one read) are skipped; any other Esc byte is the e-stop,
whatever follows it (a function key, or an arrow key's sequence split across two reads, also
e-stops: the safe side of the ambiguity).

A leader arm can take the terminal as its trigger (``leader+...?trigger=keyboard://``): space
toggles, Esc requests an e-stop. Either way the terminal is restored as soon as the device
fails, not only when it is closed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import termios
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import numpy as np

from ramp_edge.teleop.base import TeleopError, TeleopSample, TeleopUrlError
from ramp_edge.teleop.human import (
    HumanDevice,
    broadcast,
    limit_lead,
    number,
    per_joint,
    split_params,
)

ESC, SPACE = 0x1B, 0x20
DEFAULT_KEYS = "qa,ws,ed,rf,tg,yh,uj"


#: The escape sequences skipped as keys (the arrow keys, ANSI and application cursor mode).
ARROW_SEQUENCES = frozenset(bytes([ESC, intro, final]) for intro in b"[O" for final in b"ABCD")


def key_tokens(data: bytes) -> list[str]:
    """The keys in ``data``: ``"esc"`` for an Esc byte, ``" "`` and other single characters
    as themselves; only complete arrow-key sequences (:data:`ARROW_SEQUENCES`) are dropped, so
    an Esc is never lost to what follows it in the same read."""
    out: list[str] = []
    i, n = 0, len(data)
    while i < n:
        b = data[i]
        if b == ESC and data[i:i + 3] in ARROW_SEQUENCES:
            i += 3
            continue
        if b == ESC:
            out.append("esc")
        elif b < 0x80:
            out.append(chr(b))
        i += 1
    return out


class Terminal:
    """A terminal in cbreak mode (no line buffering, no echo, signals kept), read without
    blocking. :meth:`restore` puts the saved settings back; :meth:`close` restores and closes.
    Raises :class:`TeleopError` if ``path`` cannot be opened or is not a terminal."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as err:
            hint = " (no controlling terminal: name one, keyboard:///dev/pts/N)" if (
                path == "/dev/tty") else ""
            raise TeleopError(f"cannot open terminal {path}: {err.strerror}{hint}") from err
        self._fd: int | None = fd
        try:
            if not os.isatty(fd):
                raise TeleopError(f"{path} is not a terminal")
            self._saved: list | None = termios.tcgetattr(fd)
            mode = termios.tcgetattr(fd)
            mode[3] &= ~(termios.ICANON | termios.ECHO)  # lflag
            # VMIN 1 with O_NONBLOCK: no input reads as EAGAIN, so b"" means hung up.
            mode[6][termios.VMIN], mode[6][termios.VTIME] = 1, 0
            termios.tcsetattr(fd, termios.TCSANOW, mode)
        except BaseException:
            os.close(fd)
            self._fd = None
            raise

    def read(self) -> bytes:
        """What was typed since the last call (b"" if nothing). Raises :class:`TeleopError`
        when the terminal is gone."""
        if self._fd is None:
            raise TeleopError(f"terminal {self.path} is closed")
        try:
            data = os.read(self._fd, 1024)
        except BlockingIOError:
            return b""
        except OSError as err:
            gone = "hung up" if err.errno == errno.EIO else err.strerror
            raise TeleopError(f"terminal {self.path}: {gone}") from err
        if not data:
            raise TeleopError(f"terminal {self.path}: hung up")
        return data

    def restore(self) -> None:
        """Put the terminal's settings back as they were (idempotent)."""
        if self._fd is not None and self._saved is not None:
            with contextlib.suppress(termios.error, OSError):  # a hung-up terminal is gone
                termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def close(self) -> None:
        self.restore()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def terminal_path(url: str, extra: dict[str, str | None]) -> tuple[str, dict[str, str]]:
    """The terminal a ``keyboard://`` URL names and its parameters (of ``extra``). Raises
    :class:`TeleopUrlError`."""
    parts = urlsplit(url)
    if parts.scheme != "keyboard" or parts.netloc:
        raise TeleopUrlError(f"{url}: a keyboard URL is keyboard:// (the controlling terminal) "
                             "or keyboard:///dev/pts/N")
    return parts.path or "/dev/tty", split_params(url, parts.query, extra)


class KeyboardTrigger:
    """Space toggles takeover, Esc requests an e-stop. ``url``: ``keyboard://[/dev/pts/N]``;
    ``extra`` names parameters the caller handles (their values land in ``params``). Raises
    :class:`TeleopUrlError`, :class:`TeleopError`."""

    def __init__(self, url: str, extra: dict[str, str | None] | None = None) -> None:
        path, self.params = terminal_path(url, extra or {})
        self.terminal = Terminal(path)
        self.on = False
        self.estop_request: str | None = None

    def update(self, other_key: Callable[[str], None] | None = None) -> bool:
        """Read typed keys; True while takeover is toggled on. Keys other than space and Esc go
        to ``other_key``. Raises :class:`TeleopError` when the terminal is gone."""
        for key in key_tokens(self.terminal.read()):
            if key == "esc":
                self.estop_request = f"e-stop from the keyboard (Esc on {self.terminal.path})"
                self.on = False
            elif key == " ":
                self.on = not self.on
            elif other_key is not None:
                other_key(key)
        return self.on

    @property
    def reason(self) -> str:
        return f"space toggled {'on' if self.on else 'off'}"

    def take_estop_request(self) -> str | None:
        """The e-stop request read by :meth:`update`, once (both on the device's thread)."""
        reason, self.estop_request = self.estop_request, None
        return reason

    def restore(self) -> None:
        """Give the person their terminal back (its saved settings); idempotent."""
        self.terminal.restore()

    def close(self) -> None:
        self.terminal.close()


class KeyboardDevice(HumanDevice):
    """The keyboard as a teleop device (module docstring for the URL and keys). Raises
    :class:`TeleopUrlError` for a bad URL and :class:`TeleopError` if the terminal cannot be
    opened."""

    def __init__(self, url: str, *, max_consecutive_errors: int = 5) -> None:
        params = {"keys": DEFAULT_KEYS, "step": "0.02", "lead": "0.2", "rate_hz": "50"}
        _path, p = terminal_path(url, params)  # checked before the terminal changes mode
        rate_hz = number(url, "rate_hz", p["rate_hz"], positive=True)
        self.step = per_joint(url, "step", p["step"])
        self.lead = per_joint(url, "lead", p["lead"])
        self.keymap: dict[str, tuple[int, float]] = {}  # key -> (joint, +1 | -1)
        for joint, pair in enumerate(p["keys"].split(",")):
            if len(pair) != 2 or " " in pair or len({*pair, *self.keymap}) != len(self.keymap) + 2:
                raise TeleopUrlError(f"{url}: keys is one pair of distinct keys per joint "
                                     f"(up, down), e.g. {DEFAULT_KEYS}")
            self.keymap[pair[0]], self.keymap[pair[1]] = (joint, 1.0), (joint, -1.0)
        self.trigger = KeyboardTrigger(url, params)
        super().__init__("keyboard", url, rate_hz=rate_hz,
                         max_consecutive_errors=max_consecutive_errors)
        self._target: np.ndarray | None = None
        self._stopped = ""  # the last e-stop request, until takeover is wanted again
        self.start()

    def _jog(self, key: str) -> None:
        hit = self.keymap.get(key)
        if hit is None or self._target is None or hit[0] >= self._target.size:
            return
        joint, sign = hit
        self._target[joint] += sign * self.step[joint if self.step.size > 1 else 0]

    def _on_failure(self) -> None:
        self.trigger.restore()  # the device stopped: give the person their terminal now

    def _poll(self) -> TeleopSample | None:
        was_on = self.trigger.on
        on = self.trigger.update(self._jog)
        estop = self.trigger.take_estop_request()
        if estop:
            self.request_estop(estop)
            self._stopped = estop  # said in every sample until takeover is wanted again
        if not on:
            self._target = None
            return self._disengaged(self._stopped or self.trigger.reason)
        self._stopped = ""
        if self._target is None:
            follower = self._follower
            if follower is None:
                self.trigger.on = was_on  # nothing to hold yet: the press is dropped
                return self._disengaged("waiting for the follower's pose")
            self.step = broadcast(self.url, "step", self.step, follower.size)
            self.lead = broadcast(self.url, "lead", self.lead, follower.size)
            self._target = np.array(follower, dtype=np.float64)
        limit_lead(self._target, self._follower, self.lead)
        return TeleopSample(time.monotonic(), True, self._target, self.source,
                            self.trigger.reason)

    def _close_source(self) -> None:
        self.trigger.close()


__all__ = ["ARROW_SEQUENCES", "KeyboardDevice", "KeyboardTrigger", "Terminal", "key_tokens"]
