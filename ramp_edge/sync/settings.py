"""Sync settings of a robot, ``HOME/sync.toml`` (every key optional; command-line options win)::

    host = "tcp://trainhost.lan:5601"   # the training host's sync server
    server_key = "keys/host.key"        # its public key (relative paths: under HOME)
    max_rate = "20M"                    # bandwidth cap, bytes/s (k, M, G, Ki, Mi, Gi)
    [retention]
    high_water_pct = 90                 # above this disk usage, delete acknowledged episodes
    low_water_pct = 80                  # ... until usage is back under this
    [bundles]
    activate = "manual"                 # or "on_pull": activate a bundle as soon as it is staged
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from ramp_edge.errors import ConfigError
from ramp_edge.sync.progress import parse_rate
from ramp_edge.sync.retention import RetentionPolicy

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FILE_NAME = "sync.toml"
ACTIVATE_MODES = ("manual", "on_pull")


@dataclass(frozen=True)
class SyncSettings:
    host: str | None = None
    server_key: Path | None = None
    max_rate_bytes_s: float | None = None
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    activate: str = "manual"


def load_settings(home: Path) -> SyncSettings:
    """Read ``HOME/sync.toml``; defaults when it does not exist. Raises ConfigError."""
    path = home / FILE_NAME
    if not path.exists():
        return SyncSettings()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path}: {err}") from err
    try:
        key = data.get("server_key")
        rate = data.get("max_rate")
        ret = data.get("retention", {})
        activate = data.get("bundles", {}).get("activate", "manual")
        if activate not in ACTIVATE_MODES:
            raise ValueError(f"bundles.activate must be one of {ACTIVATE_MODES}")
        return SyncSettings(
            host=data.get("host"),
            server_key=(home / key) if key else None,
            max_rate_bytes_s=parse_rate(str(rate)) if rate else None,
            retention=RetentionPolicy(float(ret.get("high_water_pct", 90.0)),
                                      float(ret.get("low_water_pct", 80.0))),
            activate=activate,
        )
    except (ValueError, TypeError, AttributeError) as err:
        raise ConfigError(f"{path}: {err}") from err
