"""The one directory everything the robot writes lives under (episodes, index, calibration,
keys, bundles): ``--home``, else ``RAMP_EDGE_HOME``, else the user's data directory."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "RAMP_EDGE_HOME"


def resolve_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "ramp-edge"
