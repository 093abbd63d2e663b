"""The emulator's loop: answers frames as they arrive and ticks the servo at its rate.

One thread: wait for input until the next servo deadline, answer, tick. Failure knobs make it
misbehave the ways real links and firmware do: drop or corrupt replies, stall (stop answering
for a while, servo still running), unplug (close the port and come back on a new one).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from firmware_bridge import codec
from firmware_bridge.codec import Frame
from firmware_bridge.emulator.device import EmulatedMotorController
from firmware_bridge.errors import LinkError
from firmware_bridge.realtime import realtime_thread
from firmware_bridge.transport.base import Transport

# A servo loop this far behind skips ahead instead of replaying the missed ticks.
MAX_CATCH_UP_TICKS = 50


@dataclass
class FailureKnobs:
    """Probabilities per reply (0..1) and a seed, so a failing test can be replayed."""

    drop_replies: float = 0.0
    corrupt_replies: float = 0.0
    seed: int = 0


@dataclass
class ServoStats:
    ticks: int = 0
    skipped_ticks: int = 0
    served_behind: int = 0  # frames answered while the servo loop ran late
    max_tick_late_ms: float = 0.0
    replies_dropped: int = 0
    replies_corrupted: int = 0
    unplugs: int = 0


class EmulatorServer:
    def __init__(
        self,
        device: EmulatedMotorController,
        link: Transport,
        knobs: FailureKnobs | None = None,
        relink: Callable[[], Transport] | None = None,
    ) -> None:
        self.device = device
        self.link = link
        self.knobs = knobs or FailureKnobs()
        self._relink = relink
        self._rng = np.random.default_rng(self.knobs.seed)
        self._stop = threading.Event()
        self._stall_until_ns = 0
        self._unplug_until_ns = 0
        self._requests: list[tuple[str, float]] = []
        self._calls: list[tuple[Callable[[], Any], Future]] = []
        self._lock = threading.Lock()
        self.stats = ServoStats()
        self.on_relink: Callable[[Transport], None] | None = None
        self.side_channels: list[Any] = []  # camera publisher, sim control (MuJoCo plant)
        # SCHED_FIFO priority of the servo loop (0: normal), as firmware's timer interrupt
        # would outrank the rest of the machine.
        self.realtime_priority = 0

    # -- knobs callable from other threads or signal handlers ---------------------------------
    def stop(self) -> None:
        self._stop.set()

    def stall(self, seconds: float) -> None:
        """Stop reading and answering for ``seconds``; the servo keeps running."""
        with self._lock:
            self._requests.append(("stall", seconds))

    def unplug(self, seconds: float) -> None:
        """Close the port, stay away ``seconds``, then come back on a fresh one."""
        with self._lock:
            self._requests.append(("unplug", seconds))

    def call_in_loop(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn`` on the servo thread between ticks (the plant is never touched from two
        threads at once); returns a future with its result or exception."""
        future: Future = Future()
        with self._lock:
            self._calls.append((fn, future))
        return future

    # -- loop ---------------------------------------------------------------------------------
    def run(self) -> None:
        with realtime_thread(self.realtime_priority, "emulator servo loop"):
            self._run()

    def _run(self) -> None:
        period_ns = 1_000_000_000 // self.device.config.servo_rate_hz
        next_tick = time.monotonic_ns()
        try:
            while not self._stop.is_set():
                now = time.monotonic_ns()
                self._apply_requests(now)
                if now < next_tick:
                    self._serve((next_tick - now) / 1e9, now)
                    continue
                late_ms = (now - next_tick) / 1e6
                if late_ms > self.stats.max_tick_late_ms:
                    self.stats.max_tick_late_ms = late_ms
                if late_ms >= 1.0:
                    # Late (the process was starved of CPU, or is catching up tick by tick):
                    # first take everything the host sent meanwhile, as firmware's serial
                    # interrupt would have, so the host is answered while the loop catches up
                    # and the watchdog judges it by what it sent, not by our own stall.
                    while self._serve(0.0, time.monotonic_ns()):
                        self.stats.served_behind += 1
                behind = (now - next_tick) // period_ns
                if behind > MAX_CATCH_UP_TICKS:
                    self.stats.skipped_ticks += int(behind)
                    next_tick += behind * period_ns
                self._send_all(self.device.tick(next_tick))
                self.stats.ticks += 1
                next_tick += period_ns
        finally:
            self.link.close()

    def _apply_requests(self, now: int) -> None:
        if self._calls:
            with self._lock:
                calls, self._calls = self._calls, []
            for fn, future in calls:
                try:
                    future.set_result(fn())
                except Exception as err:  # handed to the caller's thread, which reports it
                    future.set_exception(err)
        if not self._requests:
            return
        with self._lock:
            requests, self._requests = self._requests, []
        for kind, seconds in requests:
            until = now + int(seconds * 1e9)
            if kind == "stall":
                self._stall_until_ns = until
            elif kind == "unplug" and self._relink is not None:
                self.stats.unplugs += 1
                self.link.close()
                self._unplug_until_ns = until

    def _serve(self, timeout_s: float, now: int) -> bool:
        """Wait up to ``timeout_s`` for one frame and answer it; True if one was handled."""
        if self._unplug_until_ns:
            if now < self._unplug_until_ns:
                time.sleep(min(timeout_s, (self._unplug_until_ns - now) / 1e9))
                return False
            self._unplug_until_ns = 0
            assert self._relink is not None
            self.link = self._relink()
            if self.on_relink:
                self.on_relink(self.link)
        if now < self._stall_until_ns:
            time.sleep(min(timeout_s, (self._stall_until_ns - now) / 1e9))
            return False
        try:
            frame = self.link.recv(timeout_s)
        except LinkError:
            time.sleep(timeout_s)
            return False
        if frame is None:
            return False
        self._send_all(self.device.handle(frame, time.monotonic_ns()))
        return True

    def _send_all(self, frames: list[Frame]) -> None:
        if self._unplug_until_ns:
            return
        for frame in frames:
            knobs = self.knobs
            if knobs.drop_replies and self._rng.random() < knobs.drop_replies:
                self.stats.replies_dropped += 1
                continue
            try:
                if knobs.corrupt_replies and self._rng.random() < knobs.corrupt_replies:
                    self.stats.replies_corrupted += 1
                    self._send_corrupted(frame)
                else:
                    self.link.send(frame)
            except LinkError:
                return  # host side gone; it will reconnect

    def _send_corrupted(self, frame: Frame) -> None:
        data = bytearray(codec.encode_payload(frame))
        data = bytearray(codec.seal(bytes(data)))
        i = int(self._rng.integers(len(data)))
        data[i] ^= 1 << int(self._rng.integers(8))
        if self.link.framing == "stream":
            from cobs import cobs

            self.link._write_raw(cobs.encode(bytes(data)) + b"\x00")
        else:
            self.link._write_raw(bytes(data))
