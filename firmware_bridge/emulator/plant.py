"""Simulated motors the emulator's servo loop drives.

A plant works in raw motor coordinates (before calibration). :class:`MotorPlant` is the simple
per-joint model; the MuJoCo arm (``--plant mujoco``) implements the same interface.
"""

from __future__ import annotations

import numpy as np


class Plant:
    """What the servo loop needs from a plant. Units: rad or m, rad/s or m/s, N·m or N."""

    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray

    def step(self, command: np.ndarray, torque_on: bool, dt_s: float) -> None:
        """Advance by ``dt_s`` tracking ``command`` (ignored when torque is off)."""
        raise NotImplementedError

    def move_by_hand(self, position: np.ndarray) -> None:
        """Put the joints where a person moved them (only meaningful with torque off)."""
        self.position = np.array(position, dtype=np.float64)
        self.velocity = np.zeros_like(self.position)


class MotorPlant(Plant):
    """Each joint is a position servo with a critically damped second-order response
    (natural frequency ``omega_rad_s``) and a velocity limit; effort is inertia x acceleration
    plus viscous friction. With torque off a joint coasts to rest by friction."""

    def __init__(
        self,
        initial_position: np.ndarray,
        velocity_max: np.ndarray,
        omega_rad_s: float = 40.0,
        inertia: float = 0.05,
        friction: float = 0.2,
    ) -> None:
        self.position = np.array(initial_position, dtype=np.float64)
        self.velocity = np.zeros_like(self.position)
        self.effort = np.zeros_like(self.position)
        self._vmax = np.asarray(velocity_max, dtype=np.float64) * 1.2
        self._w = omega_rad_s
        self._inertia = inertia
        self._friction = friction

    def step(self, command: np.ndarray, torque_on: bool, dt_s: float) -> None:
        if torque_on:
            acc = self._w**2 * (command - self.position) - 2.0 * self._w * self.velocity
        else:
            acc = -self._friction / self._inertia * self.velocity
        self.velocity = np.clip(self.velocity + acc * dt_s, -self._vmax, self._vmax)
        self.position = self.position + self.velocity * dt_s
        self.effort = self._inertia * acc + self._friction * self.velocity if torque_on else (
            np.zeros_like(self.position)
        )
