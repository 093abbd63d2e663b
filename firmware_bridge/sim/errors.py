"""Errors of the simulated robot, under the project's root :class:`EdgeError`."""

from __future__ import annotations

from firmware_bridge.errors import EdgeError


class SimUnavailableError(EdgeError, ImportError):
    """MuJoCo (the ``sim`` extra) is not installed, or the scene file is missing."""


class UnknownTaskError(EdgeError, LookupError):
    """A task name that is not in the registry (``firmware_bridge.sim.tasks.TASKS``)."""


class LayoutError(EdgeError, RuntimeError):
    """No valid random layout was found for a task (its sampling region is too crowded)."""


class RenderError(EdgeError, RuntimeError):
    """Offscreen rendering is not available (no OpenGL / EGL / OSMesa) or failed."""
