"""Robot configs: the built-in default, and bad files that must be refused with one clear line."""

from __future__ import annotations

import pytest

from ramp_edge.config import load_config, parse_config
from ramp_edge.errors import ConfigError


def test_when_no_path_given_expect_the_emulated_robot():
    config = load_config()
    assert config.robot_id == "emulated-arm"
    assert config.joint_names[-1] == "gripper"
    assert config.rates.control_hz == 100 and config.rates.chunk_size == 50
    assert config.bus.url.startswith("emulator+")


def _default_text() -> str:
    from importlib import resources

    return resources.files("ramp_edge.robots").joinpath("emulated.toml").read_text()


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("control_hz = 100", "control_hz = 5000", "control_hz must be 50..500"),
        ("joint_margin = 0.05", "joint_margn = 0.05", "unknown key(s) joint_margn"),
        ("retries = 3", 'retries = "three"', "bus.retries: expected an integer"),
        ('unit = "m"', 'unit = "deg"', "unit must be 'rad' or 'm'"),
        ("position_max = 0.04", "position_max = -1.0", "position_min must be below"),
        ('robot_id = "emulated-arm"', "", "robot_id: missing"),
        ('name = "elbow"', 'name = "shoulder_pan"', "joint names repeat"),
        ("[rates]", "[rates", "not valid TOML"),
        ("stale_stop_ms = 1000", "stale_stop_ms = 10", "stale_stop_ms must be"),
    ],
)
def test_when_config_is_bad_expect_config_error_naming_the_key(old, new, message):
    text = _default_text()
    assert old in text
    with pytest.raises(ConfigError) as info:
        parse_config(text.replace(old, new), "robot.toml")
    assert message in str(info.value)
    assert str(info.value).startswith("robot.toml")


def test_when_file_is_not_utf8_expect_config_error(tmp_path):
    path = tmp_path / "robot.toml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)
