"""``faulty+<url>?flip=1e-4&drop=1e-3&dup=0&truncate=0&seed=1``: injects link faults for tests.

Faults apply to raw bytes in both directions, below the codec, so the CRC and the resync logic
are what stands between a corrupted byte and the robot:
- ``flip``: probability per byte that one random bit of it is inverted;
- ``drop``: probability per write or read that its bytes vanish;
- ``dup``: probability per write that it is sent twice;
- ``truncate``: probability per write that it is cut at a random point.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit, urlunsplit

import numpy as np

from firmware_bridge.transport.base import Transport
from firmware_bridge.transport.url import TransportUrl

FAULT_KEYS = ("flip", "drop", "dup", "truncate", "seed")


def split_fault_params(url: str) -> tuple[str, TransportUrl]:
    """Split ``url`` into the inner transport's URL and the fault parameters."""
    parsed = TransportUrl.parse(url)
    inner_params = {k: v for k, v in parsed.params.items() if k not in FAULT_KEYS}
    faults = {k: v for k, v in parsed.params.items() if k in FAULT_KEYS}
    parts = urlsplit(url)
    inner = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(inner_params), ""))
    return inner, TransportUrl(parsed.scheme, parsed.netloc, parsed.path, faults)


class FaultyTransport(Transport):
    def __init__(self, url: str, inner: Transport, parsed: TransportUrl) -> None:
        super().__init__(url)
        self.framing = inner.framing  # type: ignore[misc]  # per instance: same as the inner
        self.inner = inner
        self.flip = parsed.float_param("flip", 0.0)
        self.drop = parsed.float_param("drop", 0.0)
        self.dup = parsed.float_param("dup", 0.0)
        self.truncate = parsed.float_param("truncate", 0.0)
        self._rng = np.random.default_rng(parsed.int_param("seed", 0))
        self.injected = {"flipped_bytes": 0, "dropped": 0, "duplicated": 0, "truncated": 0}

    def _corrupt(self, data: bytes) -> bytes:
        if self.flip <= 0 or not data:
            return data
        hits = np.flatnonzero(self._rng.random(len(data)) < self.flip)
        if hits.size == 0:
            return data
        buf = bytearray(data)
        for i in hits:
            buf[i] ^= 1 << int(self._rng.integers(8))
        self.injected["flipped_bytes"] += int(hits.size)
        return bytes(buf)

    def _write_raw(self, data: bytes) -> None:
        if self.drop and self._rng.random() < self.drop:
            self.injected["dropped"] += 1
            return
        if self.truncate and self._rng.random() < self.truncate:
            self.injected["truncated"] += 1
            data = data[: int(self._rng.integers(len(data)))]
        data = self._corrupt(data)
        self.inner._write_raw(data)
        if self.dup and self._rng.random() < self.dup:
            self.injected["duplicated"] += 1
            self.inner._write_raw(data)

    def _read_raw(self, timeout_s: float) -> bytes | None:
        data = self.inner._read_raw(timeout_s)
        if data is None:
            return None
        if self.drop and self._rng.random() < self.drop:
            self.injected["dropped"] += 1
            return None
        return self._corrupt(data)

    def _close_raw(self) -> None:
        self.inner.close()
