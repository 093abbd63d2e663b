"""``sim://?joints=7&watchdog_ms=50``: the motor-controller emulator in this process.

The emulator runs its own servo thread; frames cross through two queues as sealed messages,
so the codec and the bus run exactly as over a wire. Parameters are those of
:class:`firmware_bridge.emulator.device.DeviceConfig` that a URL can carry.
"""

from __future__ import annotations

import queue
import threading

from firmware_bridge.errors import LinkError
from firmware_bridge.transport.base import Transport
from firmware_bridge.transport.url import TransportUrl


class _QueueDeviceTransport(Transport):
    framing = "message"

    def __init__(self, to_device: queue.Queue, to_host: queue.Queue) -> None:
        super().__init__("sim-device://")
        self._in, self._out = to_device, to_host

    def _write_raw(self, data: bytes) -> None:
        self._out.put(data)

    def _read_raw(self, timeout_s: float) -> bytes | None:
        try:
            return self._in.get(timeout=timeout_s) if timeout_s > 0 else self._in.get_nowait()
        except queue.Empty:
            return None

    def _close_raw(self) -> None:
        pass


class SimTransport(Transport):
    framing = "message"

    def __init__(self, url: str) -> None:
        from firmware_bridge.emulator.device import DeviceConfig, EmulatedMotorController
        from firmware_bridge.emulator.server import EmulatorServer

        super().__init__(url)
        parsed = TransportUrl.parse(url)
        config = DeviceConfig.default(
            n_joints=parsed.int_param("joints", 7),
            watchdog_ms=parsed.int_param("watchdog_ms", 100),
        )
        self._to_device: queue.Queue = queue.Queue()
        self._to_host: queue.Queue = queue.Queue()
        link = _QueueDeviceTransport(self._to_device, self._to_host)
        self.server = EmulatorServer(EmulatedMotorController(config), link)
        self._thread = threading.Thread(target=self.server.run, name="sim-emulator", daemon=True)
        self._thread.start()

    def _write_raw(self, data: bytes) -> None:
        if not self._thread.is_alive():
            raise LinkError("the in-process emulator stopped")
        self._to_device.put(data)

    def _read_raw(self, timeout_s: float) -> bytes | None:
        try:
            if timeout_s > 0:
                return self._to_host.get(timeout=timeout_s)
            return self._to_host.get_nowait()
        except queue.Empty:
            return None

    def _close_raw(self) -> None:
        self.server.stop()
        self._thread.join(timeout=2.0)
