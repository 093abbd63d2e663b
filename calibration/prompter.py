"""The person in the calibration flow, behind one interface.

The flow never reads input itself: it asks a :class:`Prompter` to show text and tables, to
wait until a step is done (``wait``), to answer a yes/no question (``confirm``) and to show a
table refreshed while the technician works (``live``). Every prompt has a key (``identity``,
``reference_pose``, ``direction.elbow``, ``write`` ...), which is how an answers file names it.

- :class:`ScriptedPrompter` answers from a mapping (``--answers FILE``, ``--yes``) so the flow
  runs headless; a ``hand`` callback lets tests move the joints when a prompt comes up.
- :class:`calibration.terminal.TerminalPrompter` asks a person at a terminal.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from calibration.errors import AnswersError, CalibrationAborted


def signed(value: float, decimals: int = 3) -> str:
    """``value`` with its sign, never "-0.000" for a value that rounds to zero."""
    text = f"{value:+.{decimals}f}"
    return "+" + text[1:] if float(text) == 0 else text


_ANSI = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}


class Style:
    """ANSI colours when ``enabled``; plain text otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    @classmethod
    def for_stream(cls, stream: TextIO, environ: Mapping[str, str] | None = None) -> Style:
        """Colour only on a terminal, unless NO_COLOR is set (https://no-color.org) or the
        terminal is dumb."""
        env = os.environ if environ is None else environ
        isatty = getattr(stream, "isatty", None)
        tty = bool(isatty and isatty())
        return cls(tty and not env.get("NO_COLOR") and env.get("TERM", "") != "dumb")

    def paint(self, text: str, *styles: str) -> str:
        if not self.enabled or not styles:
            return text
        codes = ";".join(_ANSI[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"

    def bold(self, text: str) -> str:
        return self.paint(text, "bold")

    def ok(self, text: str) -> str:
        return self.paint(text, "green")

    def warn(self, text: str) -> str:
        return self.paint(text, "yellow")

    def bad(self, text: str) -> str:
        return self.paint(text, "red", "bold")

    def ask(self, text: str) -> str:
        return self.paint(text, "cyan", "bold")

    def dim(self, text: str) -> str:
        return self.paint(text, "dim")


@dataclass(frozen=True)
class Table:
    """Rows of text under a header; ``status`` per row ("ok", "bad", "warn" or None) colours
    the row on a terminal."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    status: tuple[str | None, ...] = ()

    def lines(self, style: Style | None = None) -> list[str]:
        style = style or Style(False)
        cols = [self.header, *self.rows]
        widths = [max(len(r[i]) for r in cols) for i in range(len(self.header))]

        def fmt(row: tuple[str, ...]) -> str:
            first = row[0].ljust(widths[0])
            rest = [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
            return "  ".join([first, *rest]).rstrip()

        out = [style.bold(fmt(self.header))]
        for i, row in enumerate(self.rows):
            text = fmt(row)
            mark = self.status[i] if i < len(self.status) else None
            if mark == "ok":
                text = style.ok(text)
            elif mark == "bad":
                text = style.bad(text)
            elif mark == "warn":
                text = style.warn(text)
            out.append(text)
        return out


Sample = Callable[[], Table]


class Prompter:
    """Base: output shared by both prompters (``out`` is stderr by default: human output)."""

    def __init__(self, out: TextIO | None = None, style: Style | None = None) -> None:
        self.out = out if out is not None else sys.stderr
        self.style = style if style is not None else Style.for_stream(self.out)

    def _emit(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def section(self, title: str) -> None:
        """A new step of the flow."""
        self._emit("")
        self._emit(self.style.bold(f"== {title}"))

    def say(self, text: str) -> None:
        self._emit(f"   {text}")

    def ok(self, text: str) -> None:
        self._emit(self.style.ok(f"OK {text}"))

    def warn(self, text: str) -> None:
        self._emit(self.style.warn(f"!! {text}"))

    def show(self, table: Table) -> None:
        for line in table.lines(self.style):
            self._emit(f"   {line}")

    # -- interaction (the subclasses) -----------------------------------------------------
    def wait(self, key: str, instruction: str) -> None:
        """Show ``instruction`` and return when the person says it is done. Raises
        CalibrationAborted if they quit."""
        raise NotImplementedError

    def confirm(self, key: str, question: str, default: bool | None = None) -> bool:
        """A yes/no question; ``default`` is what Enter (or ``--yes``) answers, None for a
        question that needs an explicit answer."""
        raise NotImplementedError

    def live(self, key: str, instruction: str, sample: Sample, period_s: float = 0.1) -> None:
        """Show ``instruction`` and a table from ``sample()`` refreshed every ``period_s``
        until the person says they are done. ``sample`` also records (it reads the device)."""
        raise NotImplementedError


_YES = {"y", "yes", "true", "1", "ok"}
_NO = {"n", "no", "false", "0"}
_READY = {"", "ready", "done", "y", "yes", "ok", "true", "enter"}
_QUIT = {"q", "quit", "abort", "no", "n", "false"}


def parse_yes_no(value: Any, where: str) -> bool:
    """True/False from a bool or yes/no words. Raises AnswersError naming ``where``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _YES:
            return True
        if word in _NO:
            return False
    raise AnswersError(f"{where}: expected yes or no, got {value!r}")


Hand = Callable[[str], Iterable[Any] | None]


class ScriptedPrompter(Prompter):
    """Answers each prompt from ``answers`` (prompt key -> answer), headless.

    - ``wait`` prompts need no answer (the step is taken as done); ``"quit"`` aborts there.
    - ``confirm`` questions take yes/no; unanswered ones take their default when ``yes`` is
      set, else raise AnswersError naming the key (a headless run must say yes to writing).
    - ``live`` prompts record for ``{"duration_s": N}`` (or a number), else
      ``live_duration_s``.
    - ``hand(key)`` (tests, simulations) is called when each prompt comes up and may move the
      joints; if it returns an iterable, a ``live`` prompt samples after each of its steps.
    ``asked`` lists the keys in the order they came up.
    """

    def __init__(
        self,
        answers: Mapping[str, Any] | None = None,
        *,
        yes: bool = False,
        hand: Hand | None = None,
        source: str = "answers",
        live_duration_s: float = 0.0,
        out: TextIO | None = None,
        style: Style | None = None,
    ) -> None:
        super().__init__(out, style)
        self.answers = dict(answers or {})
        self.yes = yes
        self.hand = hand
        self.source = source
        self.live_duration_s = live_duration_s
        self.asked: list[str] = []

    def _steps(self, key: str) -> Iterable[Any]:
        self.asked.append(key)
        steps = self.hand(key) if self.hand is not None else None
        return steps if steps is not None else ()

    def _note(self, key: str, answer: str) -> None:
        self._emit(self.style.dim(f"   [{key}] {answer} ({self.source})"))

    def wait(self, key: str, instruction: str) -> None:
        self._emit(self.style.ask(f">> {instruction}"))
        for _ in self._steps(key):
            pass
        value = self.answers.get(key, "ready")
        word = str(value).strip().lower() if not isinstance(value, bool) else (
            "ready" if value else "quit")
        if word in _QUIT:
            raise CalibrationAborted(f"stopped at {key!r} as {self.source} says")
        if word not in _READY:
            raise AnswersError(f"{self.source}: prompts.{key}: expected 'ready' or 'quit', got "
                               f"{value!r}")
        self._note(key, "ready")

    def confirm(self, key: str, question: str, default: bool | None = None) -> bool:
        self._emit(self.style.ask(f">> {question}"))
        for _ in self._steps(key):
            pass
        if key in self.answers:
            answer = parse_yes_no(self.answers[key], f"{self.source}: prompts.{key}")
        elif self.yes and default is not None:
            answer = default
        elif self.yes:
            answer = True
        else:
            raise AnswersError(f"{self.source} has no answer to {key!r} ({question}): add "
                               f'"{key}" = "yes" or "no" under [prompts], or pass --yes')
        self._note(key, "yes" if answer else "no")
        return answer

    def live(self, key: str, instruction: str, sample: Sample, period_s: float = 0.1) -> None:
        self._emit(self.style.ask(f">> {instruction}"))
        table = sample()
        for _ in self._steps(key):
            table = sample()
        value = self.answers.get(key)
        if isinstance(value, Mapping):
            value = value.get("duration_s")
        duration = self.live_duration_s if value is None else value
        if isinstance(duration, bool) or not isinstance(duration, int | float) or duration < 0:
            raise AnswersError(f"{self.source}: {key}.duration_s: expected seconds >= 0, got "
                               f"{duration!r}")
        end = time.monotonic() + float(duration)
        while time.monotonic() < end:
            time.sleep(period_s)
            table = sample()
        self.show(table)
        self._note(key, f"recorded for {float(duration):g} s")
