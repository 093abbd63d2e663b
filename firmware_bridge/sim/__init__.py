"""The simulated robot: a MuJoCo table-top arm, its tasks, a scripted expert and corrector.

Modules (import them directly; this package imports nothing heavy itself):

- ``scene``: the MJCF model (``assets/tabletop.xml``) and the indices into it.
- ``state``: :class:`Layout` (what a reset puts in the scene) and :class:`SimState`.
- ``errors``: this package's errors (``RenderError``, ``UnknownTaskError``, ...).
- ``plant``: :class:`~firmware_bridge.sim.plant.MujocoPlant`, the emulator's plant over MuJoCo,
  and :class:`~firmware_bridge.sim.plant.SimState`, the privileged state snapshot.
- ``tasks``: the task registry (``TASKS``), episodes, success / progress / failure detectors.
- ``expert``: a scripted expert that solves each task from privileged state at 50 Hz.
- ``corrector``: the simulated person of human-in-the-loop rollouts.
- ``rollout``: a stand-alone 50 Hz control loop over a 1 kHz servo emulation (tests, benchmarks).
- ``render``: offscreen scene and wrist camera images.

MuJoCo picks its OpenGL backend when it is first imported, so the default (``egl``, headless) is
set here, before any submodule imports it; export ``MUJOCO_GL=osmesa`` to use software OSMesa.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
