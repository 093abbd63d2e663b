"""Atomic, durable file replacement: the old content or the new, never a mix, and no
temporary file left behind."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from firmware_bridge.durable_files import atomic_writer, sha256_file, write_atomically


def test_when_written_expect_content_mode_and_no_temporary_left(tmp_path):
    path = tmp_path / "sub" / "key_secret"
    write_atomically(path, "secret\n", 0o600)
    assert path.read_text() == "secret\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    write_atomically(path, b"\x00\x01", 0o644)
    assert path.read_bytes() == b"\x00\x01" and os.listdir(path.parent) == ["key_secret"]
    big = tmp_path / "big"
    big.write_bytes(b"x" * (3 << 20) + b"tail")  # read in several blocks
    assert sha256_file(big) == hashlib.sha256(big.read_bytes()).hexdigest()


def test_when_the_writer_fails_midway_expect_the_old_file_untouched(tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_writer(path, text=True) as f:
        f.write("half of the new")
        raise RuntimeError("crash while writing")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["calibration.json"]
