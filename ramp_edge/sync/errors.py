"""Errors of sync with the training host; all derive from the project root :class:`EdgeError`."""

from __future__ import annotations

from ramp_edge.errors import EdgeError


class SyncError(EdgeError, RuntimeError):
    """Sync could not finish what was asked (an episode refused, a bundle not staged)."""


class SyncUnavailableError(EdgeError, ConnectionError):
    """The training host did not answer in time (offline, down, wrong address). Nothing is
    lost: unsynced episodes stay on the robot and the next run picks up where this one ended."""


class SyncAuthError(EdgeError, PermissionError):
    """The CURVE handshake failed: the host refused this robot's key (not on its allow-list),
    or the host is not the one whose key the robot holds."""


class KeyFileError(EdgeError, ValueError):
    """A CURVE key file is missing, unreadable, has unsafe permissions or holds no valid key."""


class ProtocolViolation(EdgeError, ValueError):
    """A sync message is malformed (not msgpack, unknown op, missing or mistyped field). ``t``
    is its transfer epoch when that much could be read (else 0), for the ``error`` reply."""

    t: int = 0


class CurveUnavailableError(EdgeError, RuntimeError):
    """The installed libzmq was built without CURVE (libsodium), so sync cannot be secured."""
