"""Errors of the episode store; all derive from the project root :class:`EdgeError`."""

from __future__ import annotations

from ramp_edge.errors import EdgeError


class EpisodeStoreError(EdgeError, RuntimeError):
    """The episode store cannot do what was asked (unknown episode, file missing, bad state)."""


class EpisodeDamagedError(EdgeError, ValueError):
    """An episode file is not a readable episode (truncated, bit-flipped, wrong schema)."""


class BudgetExceededError(EdgeError, OSError):
    """The configured disk budget for episodes is used up; recording stopped or was refused."""
