"""Teleop devices chosen by URL from a registry that is data; backends are imported lazily.

Every device is a :class:`TeleopDevice`: a reader thread polls the backend (50 Hz by default)
and :meth:`TeleopDevice.latest` returns the newest :class:`TeleopSample` without blocking
(engaged or not, absolute joint targets in the robot's joint order). A device whose backend
failed stops, reports why in ``error`` and is disengaged from then on.

``scripted+expert://?sim=...&task=...&seed=...``: the scripted expert, always engaged.
``scripted+corrector://?sim=...&task=...&seed=...``: the scripted corrector, engaged while it
wants control. (Both need the emulator's MuJoCo plant; see :mod:`ramp_edge.teleop.scripted`.)

A person's devices (a leader arm on its own bus, a gamepad or pedal through evdev, the
keyboard) join by subclassing :class:`TeleopDevice` (``_poll``, ``_close_source``) and adding
their scheme here; nothing else dispatches on names.
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
}


def open_teleop(url: str, **kw: Any) -> TeleopDevice:
    """Open the teleop device at ``url``; ``kw`` go to the backend (e.g. ``model=`` to share a
    compiled MuJoCo model with the scripted devices). The device is reading when returned;
    close it (or use it as a context manager).

    Raises :class:`TeleopUrlError` for an unknown scheme or bad parameters, and the backend's
    own errors (all :class:`~firmware_bridge.errors.EdgeError`) if it cannot open.
    """
    scheme = urlsplit(url).scheme
    spec = BACKENDS.get(scheme)
    if spec is None:
        raise TeleopUrlError(f"unknown teleop URL scheme {scheme!r} in {url!r} "
                             f"(known: {', '.join(sorted(BACKENDS))})")
    module, _, cls = spec.partition(":")
    return getattr(importlib.import_module(module), cls)(url, **kw)


__all__ = [
    "BACKENDS",
    "TeleopDevice",
    "TeleopError",
    "TeleopSample",
    "TeleopTransientError",
    "TeleopUrlError",
    "open_teleop",
]
