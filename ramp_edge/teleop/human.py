"""What a person's teleop devices (leader arm, gamepad or pedal, keyboard) share: the follower's
pose that the controller feeds in, the e-stop request the controller polls, and URL parameters.

The controller calls :meth:`HumanDevice.check_joints` once with the robot's joint names,
:meth:`HumanDevice.set_follower` with each measured pose (one reference swap, never blocks) and
:meth:`HumanDevice.take_estop_request` once a step; a device that gets an e-stop from its person
(Esc, an e-stop button) files the request there and disengages.

E-stop requests are counted, not kept in a slot that the reader clears: the device thread only
raises ``estop_requests`` and the controller only moves its own ``_estops_taken`` up to it, so a
request filed while the controller is taking the previous one is never lost (no lock, and the
control thread never waits).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from urllib.parse import unquote

import numpy as np

from ramp_edge.teleop.base import TeleopDevice, TeleopError, TeleopUrlError


class HumanDevice(TeleopDevice):
    """A :class:`TeleopDevice` that knows the follower's pose and can ask for an e-stop."""

    def __init__(self, name: str, url: str, **kw: object) -> None:
        super().__init__(name, url, **kw)  # type: ignore[arg-type]
        self._follower: np.ndarray | None = None
        # Joint names and count the device knows (a leader arm's bus reports them); None: not
        # known, nothing to check.
        self.joint_names: tuple[str, ...] | None = None
        self.n_joints: int | None = None
        self.estop_requests = 0  # e-stop requests filed; only request_estop raises it
        self._estops_taken = 0  # how many of them take_estop_request has handed out
        self._estop_reason = ""
        self._estop_lock = threading.Lock()  # between filers only; the taker never waits

    def set_follower(self, position: np.ndarray) -> None:
        """The follower's measured joint positions (robot joint order and units). Kept by
        reference, not copied: pass an array nobody changes afterwards. Never blocks."""
        self._follower = position

    def follower(self) -> np.ndarray | None:
        """The newest follower pose given to :meth:`set_follower`, or None before the first."""
        return self._follower

    def check_joints(self, joint_names: Sequence[str]) -> None:
        """Check that the device moves the robot's joints (``joint_names``, in order), where
        it knows its own. Raises :class:`TeleopError` naming both sides on a mismatch."""
        names = tuple(joint_names)
        if self.n_joints is not None and self.n_joints != len(names):
            raise TeleopError(f"teleop {self.name} moves {self.n_joints} joints, the robot "
                              f"has {len(names)}")
        if self.joint_names is not None and self.joint_names != names:
            raise TeleopError(f"teleop {self.name} reports joints {list(self.joint_names)}, "
                              f"the robot has {list(names)}")

    def request_estop(self, reason: str) -> None:
        """File an e-stop request from the person (read by :meth:`take_estop_request`)."""
        with self._estop_lock:
            self._estop_reason = reason or f"e-stop from {self.source}"
            self.estop_requests += 1  # after the reason: a taker that sees the count sees it

    def take_estop_request(self) -> str | None:
        """The reason of the newest e-stop request filed since the last call (requests filed
        in between count as one), else None. Never blocks; call it from one thread only."""
        filed = self.estop_requests
        if filed == self._estops_taken:
            return None
        reason = self._estop_reason
        self._estops_taken = filed  # a request filed after the read above stays pending
        return reason

    def _follower_for(self, n_joints: int) -> np.ndarray | None:
        """A copy of the follower pose, checked to have ``n_joints`` joints; None before the
        controller gave one. Raises :class:`TeleopError` on a joint-count mismatch."""
        pose = self._follower
        if pose is None:
            return None
        if pose.shape != (n_joints,):
            raise TeleopError(f"teleop {self.name} moves {n_joints} joints, the follower has "
                              f"{pose.size}")
        return np.array(pose, dtype=np.float64)


def split_params(url: str, query: str, known: Mapping[str, str | None]) -> dict[str, str]:
    """Parse ``query`` (``k=v&...``, values percent-decoded, a ``+`` kept) into a dict with
    every key of ``known`` (its value the default; None: optional and absent). Raises
    :class:`TeleopUrlError` for an unknown or repeated key or a key without ``=``."""
    out: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        key = unquote(key)
        if not eq:
            raise TeleopUrlError(f"{url}: parameter {key!r} has no value")
        if key not in known:
            raise TeleopUrlError(f"{url}: unknown parameter {key!r} "
                                 f"(known: {', '.join(sorted(known))})")
        if key in out:
            raise TeleopUrlError(f"{url}: parameter {key!r} is given twice")
        out[key] = unquote(value)
    for key, default in known.items():
        if key not in out and default is not None:
            out[key] = default
    return out


def number(url: str, key: str, text: str, *, positive: bool = False) -> float:
    """``text`` as a finite float (> 0 with ``positive``). Raises :class:`TeleopUrlError`."""
    try:
        value = float(text)
    except ValueError as err:
        raise TeleopUrlError(f"{url}: {key}={text!r} is not a number") from err
    if not math.isfinite(value) or (positive and value <= 0):
        raise TeleopUrlError(f"{url}: {key}={text!r} must be a finite number"
                             + (" > 0" if positive else ""))
    return value


def per_joint(url: str, key: str, text: str) -> np.ndarray:
    """``0.02`` (every joint) or ``0.02,0.02,...,0.002`` (one per joint), all > 0, as a float64
    array of length 1 or n (broadcast against a joint vector). Raises :class:`TeleopUrlError`."""
    return np.array([number(url, key, part, positive=True) for part in text.split(",")])


def broadcast(url: str, key: str, values: np.ndarray, n_joints: int) -> np.ndarray:
    """``values`` for ``n_joints`` joints (a single value repeats). Raises
    :class:`TeleopUrlError` for another count."""
    if values.size == 1:
        return np.full(n_joints, values[0])
    if values.size != n_joints:
        raise TeleopUrlError(f"{url}: {key} has {values.size} values for {n_joints} joints")
    return values


def limit_lead(target: np.ndarray, follower: np.ndarray | None, lead: np.ndarray) -> None:
    """Keep a jogged ``target`` within ``lead`` of the follower's pose, in place, so jogging
    against a joint limit (where the safety filter stops the follower) does not wind up."""
    if follower is not None and follower.shape == target.shape:
        np.clip(target, follower - lead, follower + lead, out=target)


__all__ = ["HumanDevice", "broadcast", "limit_lead", "number", "per_joint", "split_params"]
