"""The calibration prompter for a person at a terminal: clear prompts, colours (not with
NO_COLOR or when the output is not a terminal), a live table redrawn in place at 10 Hz.

Input is read line by line from the input's file descriptor (``select`` + ``os.read``), so a
live table can refresh while it waits for Enter. Enter accepts a step, ``q`` quits.
"""

from __future__ import annotations

import os
import select
import sys
from typing import TextIO

from calibration.errors import CalibrationAborted
from calibration.prompter import Prompter, Sample, Style

_YES = {"y", "yes"}
_NO = {"n", "no"}
_QUIT = {"q", "quit"}


class _LineInput:
    """Lines from a stream, optionally with a timeout. Raises EOFError at its end."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        try:
            self.fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):
            self.fd = None  # an in-memory stream (tests): plain, blocking readline
        self._buf = b""

    def readline(self, timeout_s: float | None = None) -> str | None:
        """The next line without its newline, or None if ``timeout_s`` passed first."""
        if self.fd is None:
            line = self.stream.readline()
            if line == "":
                raise EOFError
            return line.rstrip("\r\n")
        while b"\n" not in self._buf:
            if timeout_s is not None:
                ready, _, _ = select.select([self.fd], [], [], timeout_s)
                if not ready:
                    return None
            chunk = os.read(self.fd, 1024)
            if not chunk:
                if self._buf:
                    line, self._buf = self._buf, b""
                    return line.decode("utf-8", "replace").rstrip("\r")
                raise EOFError
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode("utf-8", "replace").rstrip("\r")


class TerminalPrompter(Prompter):
    """Asks the person at the terminal. Output goes to ``out`` (stderr by default)."""

    def __init__(self, stdin: TextIO | None = None, out: TextIO | None = None,
                 style: Style | None = None) -> None:
        super().__init__(out, style)
        self._in = _LineInput(stdin if stdin is not None else sys.stdin)
        isatty = getattr(self.out, "isatty", None)
        self._redraw = bool(isatty and isatty())

    def _line(self, prompt: str, timeout_s: float | None = None) -> str | None:
        if prompt:
            self.out.write(prompt)
            self.out.flush()
        try:
            return self._in.readline(timeout_s)
        except EOFError:
            self.out.write("\n")
            raise CalibrationAborted("input ended: stopped (run headless with --answers FILE "
                                     "or --yes)") from None

    def wait(self, key: str, instruction: str) -> None:
        self._emit(self.style.ask(f">> {instruction}"))
        answer = self._line(self.style.dim("   [Enter] done, [q] quit: ")) or ""
        if answer.strip().lower() in _QUIT:
            raise CalibrationAborted(f"stopped by the technician at {key!r}")

    def confirm(self, key: str, question: str, default: bool | None = None) -> bool:
        hint = {True: "[Y/n]", False: "[y/N]", None: "[y/n]"}[default]
        while True:
            answer = (self._line(f"{self.style.ask('?? ' + question)} {hint} ") or "")
            word = answer.strip().lower()
            if not word and default is not None:
                return default
            if word in _YES:
                return True
            if word in _NO:
                return False
            if word in _QUIT:
                raise CalibrationAborted(f"stopped by the technician at {key!r}")
            self._emit(self.style.warn("   please answer y or n (q quits)"))

    def live(self, key: str, instruction: str, sample: Sample, period_s: float = 0.1) -> None:
        self._emit(self.style.ask(f">> {instruction}"))
        self._emit(self.style.dim("   [Enter] done, [q] quit"))
        drawn = 0
        frame = 0
        every = max(1, round(1.0 / period_s))  # without a terminal: one table a second
        while True:
            lines = sample().lines(self.style)
            if self._redraw:
                if drawn:
                    self.out.write(f"\x1b[{drawn}F")  # back to the table's first line
                self.out.write("".join(f"\x1b[2K   {line}\n" for line in lines))
                self.out.flush()
                drawn = len(lines)
            elif frame % every == 0:
                for line in lines:
                    self._emit(f"   {line}")
            frame += 1
            answer = self._line("", timeout_s=period_s)
            if answer is None:
                continue
            if answer.strip().lower() in _QUIT:
                raise CalibrationAborted(f"stopped by the technician at {key!r}")
            break
        if not self._redraw:
            for line in sample().lines(self.style):
                self._emit(f"   {line}")
