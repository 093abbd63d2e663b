"""A gamepad or foot pedal through Linux evdev: ``input_event`` records read straight from the
device file, non-blocking (no python-evdev needed; its code names are used when installed).

``evdev:///dev/input/by-id/<device>?button=BTN_SOUTH&mode=hold&jog=ABS_X:0:0.5,ABS_Y:1:-0.5``
    Engaged while ``button`` is held (``mode=hold``, a pedal) or between two presses
    (``mode=toggle``). When engaged, the target starts at the follower's pose and the ``jog``
    axes move joints from there: ``AXIS:JOINT:RATE`` binds an absolute axis (name or code) to
    a joint index, ``RATE`` the joint's speed at full deflection (joint unit per s, its sign
    the direction). Without ``jog`` the device holds the follower where it was: a pedal that
    pauses the policy. ``deadzone`` (0..1, default 0.1) is ignored around an axis's centre.
    ``estop=BTN_MODE`` names a button that requests an e-stop. ``axis_range=-32768:32767``
    is used for axes whose range the device cannot report (a FIFO in tests); real devices
    report theirs (``EVIOCGABS``). ``lead`` (joint unit, default 0.2; one value or one per
    joint) bounds how far a jogged target runs ahead of the follower, so jogging into a limit
    does not wind up. ``rate_hz`` sets the polling rate (default 50).

A leader arm can use the same device as its trigger (``leader+...?trigger=evdev:///dev/...``,
with ``button``, ``mode`` and ``estop``; percent-encode the trigger URL if it has more than one
parameter).

On ``SYN_DROPPED`` (the kernel's queue overflowed) the state of the takeover and e-stop buttons
is read back from the device (``EVIOCGKEY``) and each change found is handled as the press or
release that was lost: an e-stop button found down requests an e-stop. Where that read fails
the takeover button counts as released and, with an e-stop button configured, an e-stop is
requested (its press may have been among the lost events). A press and release both lost
leave no trace in the state and cannot be recovered.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
import time
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

#: ``struct input_event`` with the native ``long`` (24 bytes on 64-bit Linux, 16 on 32-bit).
EVENT = struct.Struct("llHHi")
EV_SYN, EV_KEY, EV_ABS = 0x00, 0x01, 0x03
SYN_DROPPED = 3
KEY_MAX = 0x2FF

#: Key and button names a person is likely to bind (linux/input-event-codes.h); numbers work too.
KEY_CODES: dict[str, int] = {
    "KEY_ESC": 1, "KEY_ENTER": 28, "KEY_SPACE": 57, "KEY_A": 30, "KEY_B": 48, "KEY_C": 46,
    "KEY_LEFT": 105, "KEY_RIGHT": 106, "KEY_UP": 103, "KEY_DOWN": 108,
    **{f"BTN_{i}": 0x100 + i for i in range(10)},
    "BTN_LEFT": 0x110, "BTN_RIGHT": 0x111, "BTN_MIDDLE": 0x112,
    "BTN_TRIGGER": 0x120, "BTN_THUMB": 0x121, "BTN_THUMB2": 0x122, "BTN_TOP": 0x123,
    "BTN_TOP2": 0x124, "BTN_PINKIE": 0x125, "BTN_BASE": 0x126,
    "BTN_SOUTH": 0x130, "BTN_A": 0x130, "BTN_EAST": 0x131, "BTN_B": 0x131, "BTN_C": 0x132,
    "BTN_NORTH": 0x133, "BTN_X": 0x133, "BTN_WEST": 0x134, "BTN_Y": 0x134, "BTN_Z": 0x135,
    "BTN_TL": 0x136, "BTN_TR": 0x137, "BTN_TL2": 0x138, "BTN_TR2": 0x139,
    "BTN_SELECT": 0x13A, "BTN_START": 0x13B, "BTN_MODE": 0x13C, "BTN_THUMBL": 0x13D,
    "BTN_THUMBR": 0x13E,
}
ABS_CODES: dict[str, int] = {
    "ABS_X": 0x00, "ABS_Y": 0x01, "ABS_Z": 0x02, "ABS_RX": 0x03, "ABS_RY": 0x04, "ABS_RZ": 0x05,
    "ABS_THROTTLE": 0x06, "ABS_RUDDER": 0x07, "ABS_WHEEL": 0x08, "ABS_GAS": 0x09,
    "ABS_BRAKE": 0x0A, "ABS_HAT0X": 0x10, "ABS_HAT0Y": 0x11,
}


def _ioc_read(nr: int, size: int) -> int:
    return (2 << 30) | (size << 16) | (ord("E") << 8) | nr  # _IOR('E', nr, size)


def event_code(url: str, key: str, text: str, table: dict[str, int], prefixes: tuple) -> int:
    """A key/button or axis code from its name (``BTN_SOUTH``) or number (``304``, ``0x130``).
    Raises :class:`TeleopUrlError`."""
    try:
        return int(text, 0)
    except ValueError:
        pass
    if text in table:
        return table[text]
    try:  # python-evdev, if installed, knows every name
        from evdev import ecodes  # type: ignore[import-not-found]

        code = ecodes.ecodes.get(text)
        if isinstance(code, int) and text.startswith(prefixes):
            return code
    except ImportError:
        pass
    raise TeleopUrlError(f"{url}: {key}={text!r} is not a known "
                         f"{'/'.join(p.rstrip('_') for p in prefixes)} name or a number")


class EvdevReader:
    """Reads ``input_event`` records from ``path`` without blocking and keeps the state of keys
    and axes. ``watch``: key codes whose state is read back after ``SYN_DROPPED`` even if no
    event of theirs arrived yet. Raises :class:`TeleopError` if the file cannot be opened."""

    def __init__(self, path: str, watch: tuple[int, ...] = ()) -> None:
        self.path = path
        self.watch = watch
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as err:
            raise TeleopError(f"cannot open input device {path}: {err.strerror}") from err
        if stat.S_ISDIR(os.fstat(self._fd).st_mode):
            os.close(self._fd)
            raise TeleopError(f"{path} is a directory, not an input device")
        self._rest = b""
        self.keys: dict[int, int] = {}  # code -> last value (0 released, 1 pressed, 2 repeat)
        self.axes: dict[int, int] = {}
        self.events = 0
        self.dropped = 0
        self.resync_failures = 0  # SYN_DROPPED after which the key state could not be read
        self._last_resync_ok = True

    def read(self) -> list[tuple[int, int, int]]:
        """The ``(type, code, value)`` events that arrived since the last call (none if none).
        After a ``SYN_DROPPED`` event come ``EV_KEY`` events for the keys whose state, read
        back from the device, differs from what was known (the lost presses and releases);
        ``key_state_known`` says whether that read worked. Raises :class:`TeleopError` when
        the device is gone (unplugged)."""
        assert self._fd is not None
        chunks = []
        while True:
            try:
                data = os.read(self._fd, EVENT.size * 64)
            except BlockingIOError:
                break
            except OSError as err:
                if err.errno == errno.EINTR:
                    continue
                raise TeleopError(f"input device {self.path}: {err.strerror}") from err
            if not data:  # a FIFO without a writer; a real device never ends
                break
            chunks.append(data)
        if not chunks:
            return []
        data = self._rest + b"".join(chunks)
        whole = len(data) - len(data) % EVENT.size
        self._rest = data[whole:]
        out = []
        for _sec, _usec, etype, code, value in EVENT.iter_unpack(data[:whole]):
            self.events += 1
            if etype == EV_KEY:
                self.keys[code] = value
            elif etype == EV_ABS:
                self.axes[code] = value
            out.append((etype, code, value))
            if etype == EV_SYN and code == SYN_DROPPED:
                self.dropped += 1
                out.extend(self._resync_keys())
        return out

    @property
    def key_state_known(self) -> bool:
        """Whether the last read-back of the key state (after lost events) worked."""
        return self._last_resync_ok

    def _key_bits(self) -> bytes | None:
        """Which keys are down, one bit per code (EVIOCGKEY), or None if the device cannot
        say (not an input device)."""
        assert self._fd is not None
        size = KEY_MAX // 8 + 1
        try:
            return bytes(fcntl.ioctl(self._fd, _ioc_read(0x18, size), bytes(size)))
        except OSError:
            return None

    def _resync_keys(self) -> list[tuple[int, int, int]]:
        """After lost events: read which keys are down (if that fails, none are) and return
        an ``EV_KEY`` event for each known or watched key whose state changed."""
        bits = self._key_bits()
        self._last_resync_ok = bits is not None
        if bits is None:
            self.resync_failures += 1
        changed = []
        for code in sorted({*self.keys, *self.watch}):
            byte = bits[code // 8] if bits is not None and code // 8 < len(bits) else 0
            down = (byte >> (code % 8)) & 1
            if (self.keys.get(code, 0) != 0) != bool(down):
                changed.append((EV_KEY, code, down))
            self.keys[code] = down
        return changed

    def abs_range(self, code: int) -> tuple[int, int] | None:
        """The axis's ``(minimum, maximum)`` as the device reports it (EVIOCGABS), or None where
        it cannot (not an input device)."""
        assert self._fd is not None
        try:
            raw = fcntl.ioctl(self._fd, _ioc_read(0x40 + code, 24), bytes(24))
        except OSError:
            return None
        _value, lo, hi, _fuzz, _flat, _res = struct.unpack("6i", raw)
        return (lo, hi) if hi > lo else None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


TRIGGER_PARAMS: dict[str, str | None] = {"button": "BTN_SOUTH", "mode": "hold", "estop": None}


class EvdevTrigger:
    """A button (or pedal) as an on/off takeover trigger: :meth:`update` reads what arrived
    and says whether takeover is wanted. ``url``: ``evdev:///dev/input/...?button=...&mode=
    hold|toggle&estop=...``; ``extra`` names more parameters the caller handles (their values
    land in ``params``). Raises :class:`TeleopUrlError`, :class:`TeleopError`."""

    def __init__(self, url: str, extra: dict[str, str | None] | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "evdev" or not parts.path or parts.netloc:
            raise TeleopUrlError(f"{url}: an evdev URL names a device file: "
                                 "evdev:///dev/input/by-id/...")
        self.url = url
        self.params = split_params(url, parts.query, {**TRIGGER_PARAMS, **(extra or {})})
        self.mode = self.params["mode"]
        if self.mode not in ("hold", "toggle"):
            raise TeleopUrlError(f"{url}: mode must be hold or toggle, not {self.mode!r}")
        self.button_name = self.params["button"]
        self.button = event_code(url, "button", self.button_name, KEY_CODES, ("KEY_", "BTN_"))
        estop = self.params.get("estop")
        self.estop = None if estop is None else event_code(url, "estop", estop, KEY_CODES,
                                                           ("KEY_", "BTN_"))
        self.reader = EvdevReader(parts.path, tuple(
            code for code in (self.button, self.estop) if code is not None))
        self.on = False
        self._blocked = False  # an e-stop came while the button was held
        self.estop_request: str | None = None

    def update(self) -> bool:
        """Read pending events; True while takeover is wanted. Raises :class:`TeleopError`
        when the device is gone."""
        for etype, code, value in self.reader.read():
            if etype == EV_SYN and code == SYN_DROPPED and self.estop is not None:
                self._lost_events()
                continue
            if etype != EV_KEY:
                continue
            if code == self.estop and value == 1:
                self.estop_request = f"e-stop button on {self.reader.path}"
                self.on, self._blocked = False, True
            elif code == self.button and self.mode == "toggle" and value == 1:
                self.on = not self.on
        if self.mode == "hold":
            held = self.reader.keys.get(self.button, 0) != 0
            self._blocked = self._blocked and held  # after an e-stop: released first
            self.on = held and not self._blocked
        return self.on

    def _lost_events(self) -> None:
        """Events were lost: an e-stop press among them comes back as a read-back EV_KEY event
        (:meth:`EvdevReader.read`); where the state cannot be read back, e-stop to be safe."""
        if not self.reader.key_state_known:
            self.estop_request = (f"e-stop: input events from {self.reader.path} were lost and "
                                  "its e-stop button's state cannot be read")
            self.on, self._blocked = False, True

    @property
    def reason(self) -> str:
        if self.mode == "hold":
            return f"{self.button_name} held" if self.on else f"{self.button_name} released"
        return f"{self.button_name} toggled {'on' if self.on else 'off'}"

    def take_estop_request(self) -> str | None:
        """The e-stop request read by :meth:`update`, once (both on the device's thread)."""
        reason, self.estop_request = self.estop_request, None
        return reason

    def restore(self) -> None:
        """Nothing to give back (the device file is only read)."""

    def close(self) -> None:
        self.reader.close()


class EvdevDevice(HumanDevice):
    """A gamepad or pedal as a teleop device (module docstring for the URL). Raises
    :class:`TeleopUrlError` for a bad URL and :class:`TeleopError` if the device file cannot be
    opened."""

    def __init__(self, url: str, *, max_consecutive_errors: int = 5) -> None:
        trigger = EvdevTrigger(url, {"jog": "", "deadzone": "0.1", "axis_range": "-32768:32767",
                                     "lead": "0.2", "rate_hz": "50"})
        try:
            p = trigger.params
            rate_hz = number(url, "rate_hz", p["rate_hz"], positive=True)
            self.lead = per_joint(url, "lead", p["lead"])
            self.deadzone = number(url, "deadzone", p["deadzone"])
            if not 0 <= self.deadzone < 1:
                raise TeleopUrlError(f"{url}: deadzone must be in 0..1")
            lo, sep, hi = p["axis_range"].partition(":")
            fallback = (int(number(url, "axis_range", lo)), int(number(url, "axis_range", hi)))
            if not sep or fallback[1] <= fallback[0]:
                raise TeleopUrlError(f"{url}: axis_range is MIN:MAX with MIN < MAX")
            # (axis code, joint index, rate per s, centre, half range)
            self.jog: list[tuple[int, int, float, float, float]] = []
            for binding in filter(None, p["jog"].split(",")):
                fields = binding.split(":")
                if len(fields) != 3:
                    raise TeleopUrlError(f"{url}: jog binding {binding!r} is AXIS:JOINT:RATE")
                axis = event_code(url, "jog", fields[0], ABS_CODES, ("ABS_",))
                joint = int(number(url, "jog", fields[1]))
                if joint < 0 or joint != number(url, "jog", fields[1]):
                    raise TeleopUrlError(f"{url}: jog joint {fields[1]!r} is not a joint index")
                rate = number(url, "jog", fields[2])
                amin, amax = trigger.reader.abs_range(axis) or fallback
                self.jog.append((axis, joint, rate, (amin + amax) / 2, (amax - amin) / 2))
        except BaseException:
            trigger.close()
            raise
        super().__init__("evdev", url, rate_hz=rate_hz,
                         max_consecutive_errors=max_consecutive_errors)
        self.trigger = trigger
        self._target: np.ndarray | None = None
        self._stopped = ""  # the last e-stop request, until takeover is wanted again
        self._last_t: float | None = None
        self.start()

    def axis(self, code: int, centre: float, half: float) -> float:
        """An axis's deflection in -1..1, zero inside the dead zone, rescaled outside it."""
        raw = self.trigger.reader.axes.get(code)
        if raw is None:
            return 0.0
        x = max(-1.0, min(1.0, (raw - centre) / half))
        mag = abs(x) - self.deadzone
        return 0.0 if mag <= 0 else float(np.copysign(mag / (1 - self.deadzone), x))

    def _poll(self) -> TeleopSample | None:
        on = self.trigger.update()
        estop = self.trigger.take_estop_request()
        now = time.monotonic()
        dt = 0.0 if self._last_t is None else min(now - self._last_t, 2.0 / self.rate_hz)
        self._last_t = now
        if estop:
            self.request_estop(estop)
            self._stopped = estop  # said in every sample until takeover is wanted again
        if not on:
            self._target = None
            return self._disengaged(self._stopped or self.trigger.reason)
        self._stopped = ""
        if self._target is None:
            n = max([j for _, j, *_ in self.jog], default=-1) + 1
            follower = self._follower
            if follower is None:
                return self._disengaged("waiting for the follower's pose")
            if follower.size < n:
                raise TeleopError(f"{self.url}: jog binds joint {n - 1}, the follower has "
                                  f"{follower.size} joints")
            self.lead = broadcast(self.url, "lead", self.lead, follower.size)
            self._target = np.array(follower, dtype=np.float64)
            dt = 0.0  # the takeover starts here: no jog before it
        for code, joint, rate, centre, half in self.jog:
            self._target[joint] += rate * self.axis(code, centre, half) * dt
        limit_lead(self._target, self._follower, self.lead)
        return TeleopSample(now, True, self._target, self.source, self.trigger.reason)

    def _close_source(self) -> None:
        self.trigger.close()


__all__ = ["EVENT", "EvdevDevice", "EvdevReader", "EvdevTrigger", "event_code"]
