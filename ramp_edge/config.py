"""Robot configuration: TOML files loaded into frozen dataclasses, validated up front.

Unknown keys are errors (a misspelt safety limit must not fall back to a default silently);
every error names the file and the key. Per-joint limits are in the joint's own ``unit``
(rad for revolute joints, m for prismatic ones such as the gripper).
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ramp_edge.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6)
    import tomli as tomllib

DEFAULT_ROBOT = "emulated.toml"


@dataclass(frozen=True)
class BusConfig:
    url: str
    cycle_timeout_ms: float = 5.0
    request_timeout_ms: float = 50.0
    retries: int = 3

    def validate(self) -> None:
        _positive(self, "cycle_timeout_ms", "request_timeout_ms")
        if not 0 <= self.retries <= 10:
            raise ValueError("retries must be 0..10")


@dataclass(frozen=True)
class RatesConfig:
    control_hz: float = 100.0
    policy_hz: float = 50.0
    chunk_size: int = 50
    replan_at_remaining: int = 25
    camera_hz: float = 30.0
    # SCHED_FIFO priority of the control thread while an episode runs (0: normal priority).
    realtime_priority: int = 50

    def validate(self) -> None:
        if not 0 <= self.realtime_priority <= 99:
            raise ValueError("realtime_priority must be 0..99 (0: off)")
        if not 50 <= self.control_hz <= 500:
            raise ValueError("control_hz must be 50..500")
        _positive(self, "policy_hz", "camera_hz", "chunk_size")
        if self.policy_hz > self.control_hz:
            raise ValueError("policy_hz cannot exceed control_hz")
        if not 0 < self.replan_at_remaining < self.chunk_size:
            raise ValueError("replan_at_remaining must be between 0 and chunk_size")


@dataclass(frozen=True)
class SafetyConfig:
    joint_margin: float = 0.05
    startup_ramp_s: float = 2.0
    stale_hold_ms: float = 200.0
    stale_stop_ms: float = 1000.0
    watchdog_timeout_ms: float = 100.0
    # After an episode and on SIGTERM: "hold" keeps torque on at the last pose (an arm that goes
    # limp falls); "off" switches torque off once stopped (an arm resting on its stops).
    exit_torque: str = "hold"

    def validate(self) -> None:
        _positive(self, "startup_ramp_s", "stale_hold_ms", "stale_stop_ms", "watchdog_timeout_ms")
        if self.exit_torque not in ("hold", "off"):
            raise ValueError(f"exit_torque must be 'hold' or 'off', not {self.exit_torque!r}")
        if self.joint_margin < 0:
            raise ValueError("joint_margin must be >= 0")
        if self.stale_stop_ms < self.stale_hold_ms:
            raise ValueError("stale_stop_ms must be >= stale_hold_ms")


@dataclass(frozen=True)
class JointConfig:
    name: str
    unit: str
    position_min: float
    position_max: float
    max_velocity_per_s: float
    max_acceleration_per_s2: float
    # Kept inside the limits, in the joint's unit; negative means [safety] joint_margin.
    margin: float = -1.0
    # Largest distance from the joint's axis to the tool (m); bounds the tool's speed in the
    # calibration's verification move (sum |qdot| * reach_m <= 0.25 m/s). 0 for gripper fingers.
    reach_m: float = 0.0

    def validate(self) -> None:
        if self.unit not in ("rad", "m"):
            raise ValueError(f"unit must be 'rad' or 'm', not {self.unit!r}")
        if not self.position_min < self.position_max:
            raise ValueError("position_min must be below position_max")
        if self.margin * 2 >= self.position_max - self.position_min:
            raise ValueError("margin must be less than half the joint's range")
        _positive(self, "max_velocity_per_s", "max_acceleration_per_s2")
        if not self.reach_m >= 0:
            raise ValueError("reach_m must be >= 0")


@dataclass(frozen=True)
class CameraConfig:
    name: str
    url: str
    width: int = 96
    height: int = 96

    def validate(self) -> None:
        _positive(self, "width", "height")


@dataclass(frozen=True)
class TeleopConfig:
    """``[teleop]``: the takeover device's URL (empty: none unless the run names one; schemes
    in :mod:`ramp_edge.teleop`, e.g. ``leader+serial:///dev/ttyACM1?auto=0.15``), how long a
    handover blends between policy and person, both ways (s), and how old a device's sample
    may be before the controller treats it as disengaged (ms)."""

    url: str = ""
    handover_s: float = 0.5
    max_sample_age_ms: float = 200.0

    def validate(self) -> None:
        _positive(self, "max_sample_age_ms")
        if not self.handover_s >= 0:
            raise ValueError("handover_s must be >= 0")


@dataclass(frozen=True)
class RobotConfig:
    robot_id: str
    bus: BusConfig
    joints: tuple[JointConfig, ...]
    rates: RatesConfig = field(default_factory=RatesConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    cameras: tuple[CameraConfig, ...] = ()
    teleop: TeleopConfig = field(default_factory=TeleopConfig)
    source: str = "<built-in>"

    def validate(self) -> None:
        if not self.robot_id:
            raise ValueError("robot_id must not be empty")
        if not self.joints:
            raise ValueError("at least one [[joints]] entry is needed")
        names = [j.name for j in self.joints]
        if len(set(names)) != len(names):
            raise ValueError(f"joint names repeat: {names}")
        cams = [c.name for c in self.cameras]
        if len(set(cams)) != len(cams):
            raise ValueError(f"camera names repeat: {cams}")

    @property
    def joint_names(self) -> tuple[str, ...]:
        """The one joint order every joint vector on the control path uses."""
        return tuple(j.name for j in self.joints)


def _positive(obj: object, *names: str) -> None:
    for name in names:
        if not getattr(obj, name) > 0:
            raise ValueError(f"{name} must be > 0")


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name == "source":
            continue
        key = f"{where}.{f.name}" if where else f.name
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{key}: missing")
            continue
        kwargs[f.name] = _convert(hints[f.name], data[f.name], key)
    obj = cls(**kwargs)
    try:
        obj.validate()
    except ValueError as err:
        raise ConfigError(f"{where or 'top level'}: {err}") from err
    return obj


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is tuple:
        item = typing.get_args(tp)[0]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected an array of tables")
        return tuple(_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")


def parse_config(text: str, source: str) -> RobotConfig:
    """Parse and validate TOML text. Raises ConfigError naming ``source`` and the key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: not valid TOML: {err}") from err
    try:
        config = _build(RobotConfig, data, "")
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from err
    return dataclasses.replace(config, source=source)


def load_config(path: str | Path | None = None) -> RobotConfig:
    """Load the robot config at ``path``, or the built-in emulated robot when None."""
    if path is None:
        text = resources.files("ramp_edge.robots").joinpath(DEFAULT_ROBOT).read_text("utf-8")
        return parse_config(text, f"<built-in {DEFAULT_ROBOT}>")
    p = Path(path)
    try:
        text = p.read_text("utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read robot config {p}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{p}: not UTF-8 text") from err
    return parse_config(text, str(p))
