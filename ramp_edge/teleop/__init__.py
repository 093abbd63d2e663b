"""Teleop devices chosen by URL from a registry that is data; backends are imported lazily.

Every device is a :class:`TeleopDevice`: a reader thread polls the backend (50 Hz by default)
and :meth:`TeleopDevice.latest` returns the newest :class:`TeleopSample` without blocking
(engaged or not, absolute joint targets in the robot's joint order). A device whose backend
failed stops, reports why in ``error`` and is disengaged from then on.

``scripted+expert://?sim=...&task=...&seed=...``: the scripted expert, always engaged.
``scripted+corrector://?sim=...&task=...&seed=...``: the scripted corrector, engaged while it
wants control. (Both need the emulator's MuJoCo plant; see :mod:`ramp_edge.teleop.scripted`.)

A person's devices (:class:`~ramp_edge.teleop.human.HumanDevice`: the controller feeds them
the follower's pose and polls them for an e-stop request):

``leader+<bus URL>?auto=0.15`` or ``...?trigger=always|<evdev or keyboard URL>``: a leader arm
on its own motor bus (:mod:`ramp_edge.teleop.leader_arm`; ``sync=1`` for an actuated one).
``evdev:///dev/input/by-id/...?button=BTN_SOUTH&jog=ABS_X:0:0.5``: a gamepad or foot pedal
(:mod:`ramp_edge.teleop.evdev_device`).
``keyboard://`` or ``keyboard:///dev/pts/N``: space toggles takeover, keys jog joints, Esc
requests an e-stop (:mod:`ramp_edge.teleop.keyboard`).

New backends subclass :class:`TeleopDevice` (``_poll``, ``_close_source``) and add their scheme
here; nothing else dispatches on names.
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from ramp_edge.teleop.base import (
    TeleopDevice,
    TeleopError,
    TeleopSample,
    TeleopTransientError,
    TeleopUrlError,
)

#: URL scheme -> "module:class". The class takes ``(url, **kw)``.
BACKENDS: dict[str, str] = {
    "scripted+expert": "ramp_edge.teleop.scripted:ScriptedExpertDevice",
    "scripted+corrector": "ramp_edge.teleop.scripted:ScriptedCorrectorDevice",
    "evdev": "ramp_edge.teleop.evdev_device:EvdevDevice",
    "keyboard": "ramp_edge.teleop.keyboard:KeyboardDevice",
}
#: URL prefix -> "module:class", for schemes that wrap another URL (``leader+serial://...``).
PREFIXED_BACKENDS: dict[str, str] = {
    "leader+": "ramp_edge.teleop.leader_arm:LeaderArmDevice",
}


def open_teleop(url: str, **kw: Any) -> TeleopDevice:
    """Open the teleop device at ``url``; ``kw`` go to the backend (e.g. ``model=`` to share a
    compiled MuJoCo model with the scripted devices). The device is reading when returned;
    close it (or use it as a context manager).

    Raises :class:`TeleopUrlError` for an unknown scheme or bad parameters, and the backend's
    own errors (all :class:`~firmware_bridge.errors.EdgeError`) if it cannot open.
    """
    scheme = urlsplit(url).scheme
    spec = BACKENDS.get(scheme) or next(
        (s for prefix, s in PREFIXED_BACKENDS.items() if url.startswith(prefix)), None)
    if spec is None:
        known = [*sorted(BACKENDS), *(f"{p}<bus URL>" for p in PREFIXED_BACKENDS)]
        raise TeleopUrlError(f"unknown teleop URL scheme {scheme!r} in {url!r} "
                             f"(known: {', '.join(known)})")
    module, _, cls = spec.partition(":")
    return getattr(importlib.import_module(module), cls)(url, **kw)


__all__ = [
    "BACKENDS",
    "PREFIXED_BACKENDS",
    "TeleopDevice",
    "TeleopError",
    "TeleopSample",
    "TeleopTransientError",
    "TeleopUrlError",
    "open_teleop",
]
