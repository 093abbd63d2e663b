"""``ramp-edge doctor``: each check against a fake /dev and /sys tree, a real emulator process,
real bundles and calibration files; the command's exit code and JSON.

Budget: about 15 s on 2 cores (building a small bundle takes ~4 s; each command run imports
torch).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from calibration.calibration_file import (
    CalibrationFile,
    JointCalibration,
    calibration_path,
    save_calibration,
)
from firmware_bridge.bus import MotorBus
from firmware_bridge.messages import Mode
from ramp_edge.config import load_config, parse_config
from ramp_edge.doctor import (
    FAIL,
    OK,
    WARN,
    DoctorContext,
    check_bundle,
    check_bus,
    check_calibration,
    check_clock,
    check_disk,
    check_engines,
    check_serial_ports,
    check_sync,
    check_usb_latency,
    run_checks,
)

ROBOT = "emulated-arm"


def robot_with_bus(url: str):
    text = resources.files("ramp_edge.robots").joinpath("emulated.toml").read_text()
    return parse_config(text.replace('url = "emulator+pty://"', f'url = "{url}"'), "test.toml")


def fake_tree(tmp_path: Path, latency: dict[str, int]) -> tuple[Path, Path]:
    dev, sysfs = tmp_path / "dev", tmp_path / "sys"
    dev.mkdir()
    for name, ms in latency.items():
        d = sysfs / "bus" / "usb-serial" / "devices" / name
        d.mkdir(parents=True)
        (d / "latency_timer").write_text(f"{ms}\n")
    return dev, sysfs


def fake_timedatectl(tmp_path: Path, answer: str) -> str:
    script = tmp_path / "timedatectl"
    script.write_text(f"#!/bin/sh\necho {answer}\n")
    script.chmod(0o755)
    return str(script)


def calibration_for(config, offset: float = 0.0) -> CalibrationFile:
    joints = [JointCalibration(j.name, j.unit, offset if j.unit == "rad" else 0.0, 1,
                               j.position_min, j.position_max) for j in config.joints]
    return CalibrationFile.create(config.robot_id, joints)


def by_name(results) -> dict[str, object]:
    return {r.name: r for r in results}


def test_when_fresh_emulated_robot_expect_no_failure_and_what_to_set_up(tmp_path):
    dev, sysfs = fake_tree(tmp_path, {"ttyUSB3": 16})
    ctx = DoctorContext(config=load_config(), home=tmp_path / "home", dev=dev, sysfs=sysfs,
                        timedatectl=fake_timedatectl(tmp_path, "no"))
    checks = (check_serial_ports, check_usb_latency, check_bus, check_calibration, check_disk,
              check_clock, check_sync)
    results = by_name(run_checks(ctx, checks))
    assert [r.status for r in results.values()].count(FAIL) == 0, results
    assert results["serial ports"].status == OK
    usb = results["USB latency timer"]  # not the bus's adapter: worth a look, not a failure
    assert usb.status == WARN and "ttyUSB3 latency timer is 16 ms, 1 ms recommended" in usb.message
    assert "echo 1 | sudo tee" in usb.fix
    bus = results["bus handshake"]
    assert bus.status == OK and "7 joints as configured" in bus.message
    assert bus.details["firmware_version"] == "emulator-1.0"
    assert results["calibration"].status == WARN  # emulated: missing is not fatal
    assert "calibrate run" in results["calibration"].fix
    assert results["clock"].status == WARN and "not NTP-synchronised" in results["clock"].message
    assert results["sync"].status == WARN and "not set up" in results["sync"].message
    assert results["disk space"].status == OK


def test_when_latency_timer_slow_on_the_bus_adapter_expect_failure(tmp_path):
    _dev, sysfs = fake_tree(tmp_path, {"ttyUSB0": 16, "ttyUSB1": 1})
    ctx = DoctorContext(config=robot_with_bus("serial:///dev/ttyUSB0?baud=1000000"),
                        home=tmp_path, sysfs=sysfs)
    result = check_usb_latency(ctx)
    assert result.status == FAIL and "the motor bus" in result.message
    assert result.details["latency_ms"] == {"ttyUSB0": 16, "ttyUSB1": 1}


def test_when_bus_port_present_or_missing_expect_ok_or_failure(tmp_path):
    dev, _sysfs = fake_tree(tmp_path, {})
    port = dev / "ttyACM0"
    port.write_text("")
    port.chmod(0o660)
    ok = check_serial_ports(DoctorContext(config=robot_with_bus(f"serial://{port}"),
                                          home=tmp_path, dev=dev))
    assert ok.status == OK and f"{port} (" in ok.message and ok.details["ports"][0]["rw"]
    missing = check_serial_ports(DoctorContext(config=robot_with_bus(f"serial://{dev}/ttyACM7"),
                                               home=tmp_path, dev=dev))
    assert missing.status == FAIL and "does not exist" in missing.message
    assert "/dev/serial/by-id" in missing.fix


def test_when_device_holds_other_calibration_expect_failure_naming_the_fix(emulator_factory,
                                                                          tmp_path):
    proc = emulator_factory("pty")
    config = robot_with_bus(proc.host_url)
    home = tmp_path / "home"
    path = save_calibration(calibration_for(config, 0.0).with_verification(by="t"),
                            calibration_path(home, ROBOT))
    with MotorBus(proc.host_url) as bus:
        bus.connect()
        bus.set_mode(Mode.TORQUE_OFF)
        bus.write_calibration(calibration_for(config, 0.0).to_message())
    ctx = DoctorContext(config=config, home=home)
    results = by_name(run_checks(ctx, (check_bus, check_calibration)))
    assert results["calibration"].status == OK, results["calibration"]
    assert "the motor controller holds it" in results["calibration"].message
    save_calibration(calibration_for(config, 0.3), path)
    results = by_name(run_checks(ctx, (check_bus, check_calibration)))
    cal = results["calibration"]
    assert cal.status == FAIL and "disagrees" in cal.message and "calibrate apply" in cal.fix


def test_when_bundle_verified_or_tampered_expect_ok_then_failure(tmp_path):
    from models.reference import build_reference_bundle

    config = load_config()
    active = tmp_path / "bundles" / "active"
    build_reference_bundle(active, config.joint_names, backends=["torch-eager"],
                           camera_names=tuple(c.name for c in config.cameras))
    ctx = DoctorContext(config=config, home=tmp_path)
    result = check_bundle(ctx)
    assert result.status == WARN and "untrained" in result.message  # the reference bundle
    assert "hashes OK, probe OK on torch-eager" in result.message
    artifact = next(p for p in active.rglob("*.pt") if p.is_file())
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    tampered = check_bundle(ctx)
    assert tampered.status == FAIL and "sha256 mismatch" in tampered.message


def test_when_sync_key_loose_then_set_up_expect_warning_then_ok(tmp_path):
    ctx = DoctorContext(config=load_config(), home=tmp_path)
    key = tmp_path / "keys" / "robot.key_secret"
    key.parent.mkdir()
    key.write_text("secret")
    key.chmod(0o644)
    loose = check_sync(ctx)
    assert loose.status == WARN and loose.fix == f"chmod 600 {key}"
    key.chmod(stat.S_IRUSR | stat.S_IWUSR)
    (tmp_path / "sync").mkdir()
    (tmp_path / "sync" / "last_sync.json").write_text('{"at": "2025-01-02T03:04:05Z"}')
    done = check_sync(ctx)
    assert done.status == OK and "last sync 2025-01-02T03:04:05Z" in done.message


def test_when_wall_clock_in_1970_or_a_check_breaks_expect_failures(tmp_path):
    ctx = DoctorContext(config=load_config(), home=tmp_path, timedatectl=None)
    clock = check_clock(ctx, wall=lambda: 3600.0)
    assert clock.status == FAIL and "1970-01-01" in clock.message and "timedatectl" in clock.fix

    def broken(_ctx):
        raise RuntimeError("boom")

    (result,) = run_checks(ctx, (broken,))
    assert result.status == FAIL and "RuntimeError: boom" in result.message


def test_when_engines_checked_expect_available_ones_and_why_tensorrt_is_missing(tmp_path):
    result = check_engines(DoctorContext(config=load_config(), home=tmp_path))
    assert "torch-eager" in result.details["available"]
    if "tensorrt-fp16" not in result.details["available"]:
        assert result.status == WARN and "TensorRT unavailable: " in result.message


def doctor_cmd(*args: str) -> list[str]:
    """``ramp-edge doctor ARGS`` through the installed console script."""
    return [str(Path(sys.executable).parent / "ramp-edge"), "doctor", *args]


@pytest.mark.parametrize("broken", [False, True])
def test_when_doctor_runs_expect_json_and_exit_code(tmp_path, broken):
    robot = tmp_path / "robot.toml"
    text = resources.files("ramp_edge.robots").joinpath("emulated.toml").read_text()
    url = f"serial://{tmp_path}/ttyACM9" if broken else "emulator+pty://"
    robot.write_text(text.replace('url = "emulator+pty://"', f'url = "{url}"'))
    args = ["--robot", str(robot), "--home", str(tmp_path / "home"), "--json"]
    out = subprocess.run(doctor_cmd(*args, *([] if broken else ["--no-bus"])),
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                         env=dict(os.environ, NO_COLOR="1"))
    report = json.loads(out.stdout)
    names = [c["name"] for c in report["checks"]]
    assert names == ["serial ports", "USB latency timer", "bus handshake", "calibration",
                     "model bundle", "engine backends", "disk space", "clock", "sync"]
    status = {c["name"]: c["status"] for c in report["checks"]}
    if broken:
        assert out.returncode == 1 and report["ok"] is False
        assert status["serial ports"] == status["bus handshake"] == FAIL
        assert status["calibration"] == FAIL  # a real robot needs its calibration
    else:
        assert out.returncode == 0 and report["ok"] is True, out.stdout
        assert status["bus handshake"] == WARN  # skipped with --no-bus
