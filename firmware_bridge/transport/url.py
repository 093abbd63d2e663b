"""Transport URL parsing: ``scheme://netloc/path?key=value``."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from firmware_bridge.errors import TransportUrlError


@dataclass(frozen=True)
class TransportUrl:
    scheme: str
    netloc: str
    path: str
    params: dict[str, str]

    @classmethod
    def parse(cls, url: str) -> TransportUrl:
        parts = urlsplit(url)
        if not parts.scheme:
            raise TransportUrlError(f"{url!r} is not a transport URL (scheme://...)")
        try:
            params = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False))
        except ValueError as err:
            raise TransportUrlError(f"{url}: bad query string: {err}") from err
        return cls(parts.scheme, parts.netloc, parts.path, params)

    def float_param(self, key: str, default: float) -> float:
        raw = self.params.get(key)
        if raw is None:
            return default
        try:
            return float(raw)
        except ValueError as err:
            raise TransportUrlError(f"parameter {key}={raw!r} is not a number") from err

    def int_param(self, key: str, default: int) -> int:
        raw = self.params.get(key)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError as err:
            raise TransportUrlError(f"parameter {key}={raw!r} is not an integer") from err
