"""The motor-controller emulator: a device that speaks the protocol exactly as firmware must.

``device`` holds the firmware logic (sans-IO: frames in, frames out, a servo tick), ``plant``
the simulated motors, ``server`` the loop that binds them to a transport at the servo rate.
"""
