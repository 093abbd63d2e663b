"""Errors of the DYNAMIXEL backend, each under the project's root error."""

from __future__ import annotations

from firmware_bridge.errors import DeviceTimeoutError, EdgeError, ProtocolError


class DynamixelSdkMissingError(EdgeError, ImportError):
    """The ``dynamixel-sdk`` package (the ``dynamixel`` extra) is not installed."""


class ServoMissingError(DeviceTimeoutError):
    """Servos named on the bus URL do not answer a ping."""


class ServoSetupError(ProtocolError):
    """A servo answers but cannot be used as configured (wrong model, operating mode)."""
