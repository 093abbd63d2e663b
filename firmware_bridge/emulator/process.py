"""The emulator as a separate process, for tests, benchmarks and ``ramp-edge run``."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Any

from firmware_bridge.errors import LinkError


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the process that started us dies, so a
    controller killed with SIGKILL (a crash) leaves no emulator running on (Linux prctl;
    elsewhere the emulator must be stopped by hand)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class _Drain(threading.Thread):
    """Reads a child's pipe to its end, keeping the last lines. A pipe nobody reads fills up
    (64 KiB) and then blocks the child on its next write: an emulator that logs a warning now
    and then would, hours later, stop answering mid-episode."""

    def __init__(self, stream: Any, name: str, keep: int = 200) -> None:
        super().__init__(name=name, daemon=True)
        self.stream = stream
        self.lines: deque[str] = deque(maxlen=keep)

    def run(self) -> None:
        try:
            for line in self.stream:
                self.lines.append(line.rstrip("\n"))
        except (OSError, ValueError):  # closed under us at stop()
            pass

    def tail(self, n: int = 20) -> str:
        return "\n".join(list(self.lines)[-n:])


class EmulatorProcess:
    """Start ``python -m firmware_bridge.emulator serve --url URL [args]`` and learn the URL
    hosts should dial from its first line. Its output is drained for as long as it runs (the
    last lines of stderr are in :meth:`stderr_tail`). A context manager; ``stop()`` is
    idempotent."""

    def __init__(
        self, url: str = "pty://", args: tuple[str, ...] = (), start_timeout_s: float = 20.0
    ) -> None:
        cmd = [sys.executable, "-m", "firmware_bridge.emulator", "serve", "--url", url, *args]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, env=env, preexec_fn=_die_with_parent,
        )
        self._stderr = _Drain(self.proc.stderr, "emulator-stderr")
        self._stderr.start()
        self._stdout: _Drain | None = None
        self.host_url = self._read_line(start_timeout_s)
        # Later stdout lines (none are expected) are drained too, never left to fill the pipe.
        self._stdout = _Drain(self.proc.stdout, "emulator-stdout")
        self._stdout.start()

    def stderr_tail(self, n: int = 20) -> str:
        """The last ``n`` lines the emulator wrote to stderr."""
        return self._stderr.tail(n)

    def _read_line(self, timeout_s: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                line = self.proc.stdout.readline().strip()
                if line:
                    return line
            if self.proc.poll() is not None:
                self._stderr.join(timeout=2.0)
                raise LinkError(f"emulator exited with {self.proc.returncode}: "
                                f"{self._stderr.tail().strip()}")
        self.stop()
        raise LinkError("emulator did not announce its URL in time")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stall(self) -> None:
        self.signal(signal.SIGUSR1)

    def unplug(self) -> None:
        self.signal(signal.SIGUSR2)

    def stop(self, timeout_s: float = 5.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for drain in (self._stdout, self._stderr):
            if drain is not None:
                drain.join(timeout=1.0)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash or power cut would."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
