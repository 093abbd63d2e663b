"""The model bundle that ships with ramp-edge: the best RAMP bundle of the closed loop in
simulation (``benchmarks/ramp_loop.py``; its manifest's ``provenance.recipe`` says how it was
made, so the run can be reproduced). ``ramp-edge run`` loads it when the robot's home has no
bundle of its own and the bundle fits the robot (the emulated arm and its two cameras)."""

from __future__ import annotations

from pathlib import Path

SHIPPED_DIR = Path(__file__).resolve().parent


def shipped_bundles() -> list[Path]:
    """The bundle directories shipped with the package (each holds a ``manifest.json``)."""
    return sorted(p.parent for p in SHIPPED_DIR.glob("*/manifest.json"))
