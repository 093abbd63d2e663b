"""The project's own tokenizer: task instructions -> fixed-length int64 token ids.

Hashed word-pieces, so nothing is downloaded and no vocabulary file ships: the text is NFKC
normalised and case-folded, split into words (runs of letters/digits) and single punctuation
marks; a word longer than ``piece_chars`` characters is cut into pieces of that many characters,
every piece after the first prefixed ``##`` (as WordPiece marks continuations). Each piece maps to
``FIRST_PIECE_ID + fnv1a64(piece) % (vocab_size - FIRST_PIECE_ID)``. FNV-1a is used, never
Python's ``hash()``, so ids are the same in every process, on every machine, in every version.

The sequence is ``[BOS, piece ids..., PAD, PAD, ...]``, cut to ``max_length``. Ids are the same
for the same text and settings, which a bundle records in its manifest (:meth:`Tokenizer.spec`):
the robot tokenizes its instruction with the bundle's settings, never its own defaults.

>>> tok = Tokenizer()
>>> ids = tok.encode("Pick up the red cube")
>>> ids.shape, ids.dtype, int(ids[0]) == BOS_ID
((32,), dtype('int64'), True)
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BOS_ID", "FIRST_PIECE_ID", "PAD_ID", "TOKENIZER_NAME", "Tokenizer"]

TOKENIZER_NAME = "hashed-wordpiece-v1"
PAD_ID = 0  # padding; the encoder's mean pool ignores it
BOS_ID = 1  # begins every sequence, so an empty instruction still has one token
FIRST_PIECE_ID = 2

_FNV64_OFFSET = 0xCBF29CE484222325
_FNV64_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1
_WORDS = re.compile(r"\w+|[^\w\s]")


def fnv1a64(data: bytes) -> int:
    """64-bit FNV-1a of ``data``: a stable, dependency-free hash for piece -> id."""
    h = _FNV64_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV64_PRIME) & _MASK64
    return h


@dataclass(frozen=True)
class Tokenizer:
    """Hashed word-piece tokenizer; see the module docstring.

    ``vocab_size`` is the number of ids (embedding rows), ``max_length`` the fixed output length
    (BOS included), ``piece_chars`` the longest piece. Raises ``ValueError`` for settings that
    cannot work.
    """

    vocab_size: int = 8192
    max_length: int = 32
    piece_chars: int = 6

    def __post_init__(self) -> None:
        if self.vocab_size <= FIRST_PIECE_ID:
            raise ValueError(f"vocab_size must be > {FIRST_PIECE_ID}, not {self.vocab_size}")
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, not {self.max_length}")
        if self.piece_chars < 1:
            raise ValueError(f"piece_chars must be >= 1, not {self.piece_chars}")

    def pieces(self, text: str) -> list[str]:
        """The word-pieces of ``text``, before hashing and before the length cut."""
        norm = unicodedata.normalize("NFKC", text).casefold()
        out: list[str] = []
        n = self.piece_chars
        for word in _WORDS.findall(norm):
            out.append(word[:n])
            out.extend("##" + word[i : i + n] for i in range(n, len(word), n))
        return out

    def piece_id(self, piece: str) -> int:
        """The id of one piece, in ``[FIRST_PIECE_ID, vocab_size)``."""
        span = self.vocab_size - FIRST_PIECE_ID
        return FIRST_PIECE_ID + fnv1a64(piece.encode("utf-8")) % span

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text``: int64, shape ``(max_length,)``, BOS first, PAD-filled, cut to
        ``max_length`` (pieces past it are dropped; :meth:`is_truncated` says so)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, not {type(text).__name__}")
        ids = np.full(self.max_length, PAD_ID, dtype=np.int64)
        ids[0] = BOS_ID
        for i, piece in enumerate(self.pieces(text)[: self.max_length - 1], start=1):
            ids[i] = self.piece_id(piece)
        return ids

    def is_truncated(self, text: str) -> bool:
        """Whether :meth:`encode` drops pieces of ``text`` (worth a warning for long tasks)."""
        return len(self.pieces(text)) > self.max_length - 1

    def spec(self) -> dict[str, Any]:
        """The settings a bundle records, so the robot tokenizes exactly as training did."""
        return {
            "name": TOKENIZER_NAME,
            "vocab_size": self.vocab_size,
            "max_length": self.max_length,
            "piece_chars": self.piece_chars,
            "pad_id": PAD_ID,
            "bos_id": BOS_ID,
        }

    @classmethod
    def from_spec(cls, spec: Any) -> Tokenizer:
        """The tokenizer a manifest's ``spec`` describes. Raises ``ValueError`` for another
        tokenizer's name, other special ids, or bad settings."""
        if not isinstance(spec, dict):
            raise ValueError("tokenizer spec must be an object")
        if spec.get("name") != TOKENIZER_NAME:
            raise ValueError(f"tokenizer {spec.get('name')!r} is unknown (this code has "
                             f"{TOKENIZER_NAME!r})")
        if spec.get("pad_id", PAD_ID) != PAD_ID or spec.get("bos_id", BOS_ID) != BOS_ID:
            raise ValueError("tokenizer special ids differ from this code's")
        fields = {}
        for key in ("vocab_size", "max_length", "piece_chars"):
            value = spec.get(key)
            if type(value) is not int:
                raise ValueError(f"tokenizer {key} must be an integer, not {value!r}")
            fields[key] = value
        return cls(**fields)
