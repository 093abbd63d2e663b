"""ramp-edge: the controller that runs a RAMP-trained policy on the robot."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ramp-edge")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
