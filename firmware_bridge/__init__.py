"""The link to motor controllers: frame codec, messages, transports, bus client and emulator.

Depends on nothing else of ramp-edge, so firmware tools and tests can use it alone.
"""

PROTOCOL_VERSION = 1
