"""``python -m firmware_bridge.emulator serve ...``: the emulator without the root CLI."""

from firmware_bridge.cli import emulator_app, run_guarded

if __name__ == "__main__":
    run_guarded(emulator_app, "ramp-edge emulator")
