"""Technician calibration: procedures, the calibration file format, verification.

- :mod:`calibration.calibration_file`: one JSON file per robot id, versioned, with its sha256,
  written atomically; checked on load.
- :mod:`calibration.procedure`: the guided flow (:func:`~calibration.procedure.run_calibration`),
  driven by a prompter (:mod:`calibration.prompter`, :mod:`calibration.terminal`); headless
  from an answers file (:mod:`calibration.answers`).
- :mod:`calibration.verify`: :func:`~calibration.verify.check_before_torque` (what the
  controller calls before switching torque on), the verification move at reduced speed
  (:mod:`calibration.motion`), ``calibrate verify`` and ``apply``.
- :mod:`calibration.hardware`: identifying the motor controller and its motors.

Depends on ``firmware_bridge`` only.
"""
