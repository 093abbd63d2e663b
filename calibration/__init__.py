"""Technician calibration: procedures, the calibration file format, verification."""
