"""Errors of the controller side. The root, :class:`EdgeError`, lives in
``firmware_bridge.errors`` (the one package everything else may import) and is re-exported."""

from __future__ import annotations

from firmware_bridge.errors import EdgeError


class ConfigError(EdgeError, ValueError):
    """A robot config file is missing, unreadable or invalid; the message names file and key."""


__all__ = ["ConfigError", "EdgeError"]
