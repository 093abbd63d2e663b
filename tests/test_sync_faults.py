"""Pushes interrupted at random moments, with real processes: the host's sync server killed
(SIGKILL) and restarted, the robot's push killed, the link cut by a TCP proxy in between, while
the robot keeps recording. Afterwards every episode is on the host byte for byte, once."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_sync import Keys, host_files, make_home, record

from ramp_edge.episodes.index import EpisodeIndex
from ramp_edge.sync.state import SyncState

EXE = Path(sys.executable).parent / "ramp-edge"


class FaultyProxy:
    """A TCP proxy on loopback to ``target_port``; :meth:`drop` cuts every connection at once
    (RST), as a link going down does. New connections are forwarded again right away."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.drops = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
                up.settimeout(None)
            except OSError:
                down.close()  # server not up (being restarted): the client retries
                continue
            with self._lock:
                self._conns += [down, up]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def drop(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self.drops += 1

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        self.drop()


class Host:
    """``ramp-edge sync serve`` as a process that can be killed and started again."""

    def __init__(self, root: Path, keys: Keys, port: int) -> None:
        self.args = [str(EXE), "sync", "serve", "--root", str(root), "--allow", str(keys.allow),
                     "--key", str(keys.host_sec), "--bind", f"tcp://127.0.0.1:{port}",
                     "--chunk-kib", "64"]
        self.port = port
        self.proc: subprocess.Popen | None = None
        self.kills = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)

    def wait_up(self, timeout_s: float = 30.0) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            assert self.proc and self.proc.poll() is None, "sync server exited"
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.5):
                return
            time.sleep(0.05)
        raise AssertionError("sync server did not come up")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.kills += 1

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Pusher:
    """Runs ``ramp-edge sync push`` again and again (as the timer would), one at a time."""

    def __init__(self, home: Path, keys: Keys, proxy_port: int) -> None:
        self.args = [str(EXE), "sync", "push", "--host", f"tcp://127.0.0.1:{proxy_port}",
                     "--server-key", str(keys.host_pub), "--max-rate", "3M",
                     "--timeout", "20", "--stall-timeout", "20", "--no-progress", "--json"]
        self.env = {**os.environ, "RAMP_EDGE_HOME": str(home)}
        self.current: subprocess.Popen | None = None
        self.kills = self.runs = self.resumes = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                self.current = subprocess.Popen(self.args, env=self.env, stdin=subprocess.DEVNULL,
                                                stdout=subprocess.PIPE,
                                                stderr=subprocess.DEVNULL)
            out, _ = self.current.communicate()
            self.runs += 1
            with contextlib.suppress(ValueError):  # killed runs print nothing
                self.resumes += json.loads(out or "{}").get("resumes", 0)
            time.sleep(0.05)

    def kill(self) -> None:
        with self._lock:
            if self.current is not None and self.current.poll() is None:
                self.current.send_signal(signal.SIGKILL)
                self.kills += 1

    def stop(self) -> None:
        self._stop.set()
        self.kill()
        self._thread.join(timeout=30)


def _in_flight(root: Path) -> bool:
    """Whether the host holds part of an episode right now."""
    for p in (root / "incoming").rglob("*.part"):
        with contextlib.suppress(FileNotFoundError):  # renamed into place meanwhile
            if p.stat().st_size:
                return True
    return False


def _run_interruptions(tmp_path: Path, n: int) -> None:
    from conftest import free_tcp_port

    seed = int(os.environ.get("RAMP_EDGE_FAULT_SEED", time.time_ns() % 10**9))
    rng = random.Random(seed)
    keys = Keys(tmp_path / "keys")
    home = make_home(tmp_path / "robot", keys)
    root = tmp_path / "host"
    host = Host(root, keys, free_tcp_port())
    host.start()
    host.wait_up()
    proxy = FaultyProxy(host.port)
    contents: dict[str, bytes] = {}
    pusher = Pusher(home, keys, proxy.port)
    kinds: list[str] = []
    mid_transfer = 0
    try:
        for i in range(n):
            eid, data = record(home, f"ep{i:03d}", rng.randint(300_000, 2_000_000))
            contents[eid] = data
            # Let a transfer get going (processes take a second to start on a busy machine),
            # then cut at a random moment into it.
            end = time.monotonic() + 2.0
            while time.monotonic() < end and not _in_flight(root):
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.25))
            kind = rng.choice(["server", "server", "client", "client", "link", "link", "link"])
            kinds.append(kind)
            mid_transfer += _in_flight(root)
            if kind == "server":
                host.kill()
                time.sleep(rng.uniform(0.0, 0.3))
                host.start()
            elif kind == "client":
                pusher.kill()
            else:
                proxy.drop()
        pusher.stop()
        host.wait_up()
        final = subprocess.run([*pusher.args[:7], "--timeout", "30", "--stall-timeout", "60"],
                               env=pusher.env, capture_output=True, text=True, timeout=300)
        assert final.returncode == 0, f"seed {seed}: {final.stderr}"
    finally:
        pusher.stop()
        proxy.close()
        host.stop()
    why = f"seed {seed}, faults {kinds}"
    files = host_files(root)  # also: one index row per file, no sha twice
    assert files == {f"{eid}.sqlite": data for eid, data in contents.items()}, why
    assert not list((root / "incoming").rglob("*.part")), why
    with EpisodeIndex(home / "index.sqlite") as ix, SyncState(home) as state:
        assert state.acked() == {e.id: e.sha256 for e in ix.list()}, why
    assert host.kills + pusher.kills + proxy.drops >= n, why
    assert mid_transfer > 0, f"{why}: no cut landed in the middle of a transfer"


def test_when_pushes_are_interrupted_20_times_expect_every_episode_once_and_identical(
        tmp_path):
    _run_interruptions(tmp_path, 20)


@pytest.mark.slow
def test_when_pushes_are_interrupted_100_times_expect_every_episode_once_and_identical(
        tmp_path):
    _run_interruptions(tmp_path, 100)
