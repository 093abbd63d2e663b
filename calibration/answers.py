"""Answers files for headless calibration (``ramp-edge calibrate run --answers FILE``).

TOML (or JSON, by the ``.json`` suffix). Every key is optional::

    technician = "ana"

    [prompts]                 # every prompt by its key: "yes"/"no" for questions,
    identity = "yes"          # "ready" (or "quit") for steps
    write = "yes"
    "verify.start" = "yes"
    "verify.result" = "yes"

    [range]
    duration_s = 8.0          # record the range of motion for this long

    [reference_pose]          # each joint's value in the marked reference pose (default 0)
    shoulder_lift = -1.2

    [drive_sign]              # known drive signs: no direction check for these joints
    wrist_roll = -1

    [ranges]                  # known ranges, calibrated units: no recording for these joints
    wrist_roll = [-2.5, 2.5]

    [verification]
    move = true               # false: skip the verification move (the file stays unverified)
    amplitude_rad = 0.1       # how far each joint moves in the verification move
    amplitude_m = 0.01

Joint names and prompt keys are checked against the robot before anything moves.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calibration.errors import AnswersError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6)
    import tomli as tomllib

_SECTIONS = ("technician", "prompts", "range", "reference_pose", "drive_sign", "ranges",
             "verification")


@dataclass(frozen=True)
class Answers:
    """What an answers file says; empty fields mean "ask" or "use the default"."""

    source: str = "answers"
    technician: str | None = None
    prompts: Mapping[str, Any] = field(default_factory=dict)
    range_duration_s: float | None = None
    reference_pose: Mapping[str, float] = field(default_factory=dict)
    drive_signs: Mapping[str, int] = field(default_factory=dict)
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    verify_move: bool | None = None
    verify_amplitude: Mapping[str, float] = field(default_factory=dict)

    def prompt_answers(self) -> dict[str, Any]:
        """Prompt key -> answer for :class:`~calibration.prompter.ScriptedPrompter` (the range
        duration included)."""
        out = dict(self.prompts)
        if self.range_duration_s is not None:
            out["range"] = {"duration_s": self.range_duration_s}
        return out

    def joint_names(self) -> set[str]:
        return set(self.reference_pose) | set(self.drive_signs) | set(self.ranges)


def _num(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AnswersError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise AnswersError(f"{where}: expected a table")
    return value


def parse_answers(data: Any, source: str) -> Answers:
    """Check an answers mapping. Raises AnswersError naming ``source`` and the key."""
    top = _table(data, source)
    unknown = sorted(set(top) - set(_SECTIONS))
    if unknown:
        raise AnswersError(f"{source}: unknown key {unknown[0]!r} (known: "
                           f"{', '.join(_SECTIONS)})")
    technician = top.get("technician")
    if technician is not None and not isinstance(technician, str):
        raise AnswersError(f"{source}: technician: expected a string")
    prompts = _table(top.get("prompts", {}), f"{source}: prompts")
    for key, value in prompts.items():
        if not isinstance(value, bool | str):
            raise AnswersError(f"{source}: prompts.{key}: expected a string or true/false")
    rng = _table(top.get("range", {}), f"{source}: range")
    for key in rng:
        if key != "duration_s":
            raise AnswersError(f"{source}: range.{key}: unknown key (known: duration_s)")
    duration = None
    if "duration_s" in rng:
        duration = _num(rng["duration_s"], f"{source}: range.duration_s")
        if duration < 0:
            raise AnswersError(f"{source}: range.duration_s: must be >= 0")
    reference = {k: _num(v, f"{source}: reference_pose.{k}")
                 for k, v in _table(top.get("reference_pose", {}),
                                    f"{source}: reference_pose").items()}
    signs: dict[str, int] = {}
    for k, v in _table(top.get("drive_sign", {}), f"{source}: drive_sign").items():
        if isinstance(v, bool) or v not in (1, -1) or not isinstance(v, int):
            raise AnswersError(f"{source}: drive_sign.{k}: expected 1 or -1, got {v!r}")
        signs[k] = v
    ranges: dict[str, tuple[float, float]] = {}
    for k, v in _table(top.get("ranges", {}), f"{source}: ranges").items():
        if not isinstance(v, list) or len(v) != 2:
            raise AnswersError(f"{source}: ranges.{k}: expected [min, max]")
        lo, hi = _num(v[0], f"{source}: ranges.{k}[0]"), _num(v[1], f"{source}: ranges.{k}[1]")
        if not lo < hi:
            raise AnswersError(f"{source}: ranges.{k}: min {lo:g} is not below max {hi:g}")
        ranges[k] = (lo, hi)
    ver = _table(top.get("verification", {}), f"{source}: verification")
    known_ver = ("move", "amplitude_rad", "amplitude_m")
    for key in ver:
        if key not in known_ver:
            raise AnswersError(f"{source}: verification.{key}: unknown key (known: "
                               f"{', '.join(known_ver)})")
    move = ver.get("move")
    if move is not None and not isinstance(move, bool):
        raise AnswersError(f"{source}: verification.move: expected true or false")
    amplitude: dict[str, float] = {}
    for unit in ("rad", "m"):
        if f"amplitude_{unit}" in ver:
            a = _num(ver[f"amplitude_{unit}"], f"{source}: verification.amplitude_{unit}")
            if not a > 0:
                raise AnswersError(f"{source}: verification.amplitude_{unit}: must be > 0")
            amplitude[unit] = a
    return Answers(source=source, technician=technician, prompts=prompts,
                   range_duration_s=duration, reference_pose=reference, drive_signs=signs,
                   ranges=ranges, verify_move=move, verify_amplitude=amplitude)


def load_answers(path: str | Path) -> Answers:
    """Read an answers file (TOML, or JSON for a ``.json`` name). Raises AnswersError."""
    p = Path(path)
    try:
        text = p.read_text("utf-8")
    except OSError as err:
        raise AnswersError(f"cannot read answers file {p}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise AnswersError(f"answers file {p}: not UTF-8 text") from err
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        kind = "JSON" if p.suffix.lower() == ".json" else "TOML"
        raise AnswersError(f"answers file {p}: not valid {kind}: {err}") from err
    return parse_answers(data, f"answers file {p}")
