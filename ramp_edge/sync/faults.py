"""Failure knob for tests and drills: damage chosen outgoing chunks *after* their hash was
taken, as a faulty link or bad RAM would, so the receiver's per-chunk check must catch them."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class ChunkFaults:
    """Flip one byte of outgoing chunk number ``n`` (0-based, counted per sender) for each
    ``n`` in ``corrupt``, and of every chunk when ``always``. ``damaged`` counts what was hit."""

    corrupt: set[int] = field(default_factory=set)
    always: bool = False
    damaged: int = 0
    _count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def apply(self, data: bytes) -> bytes:
        with self._lock:
            n, self._count = self._count, self._count + 1
            if not data or not (self.always or n in self.corrupt):
                return data
            self.damaged += 1
        out = bytearray(data)
        out[len(out) // 2] ^= 0x5A
        return bytes(out)
