"""The ramp-edge command as a user runs it: a separate process, exit codes, stdout/stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# the console script installed beside this interpreter, as a user runs it
EXE = Path(sys.executable).parent / "ramp-edge"


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = [str(EXE), *args] if EXE.exists() else [sys.executable, "-c", "import cli; cli.main()",
                                                  *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_when_asked_for_help_expect_every_area_listed():
    out = run("--help")
    assert out.returncode == 0
    for area in ("bridge", "emulator", "config"):
        assert area in out.stdout


def test_when_asked_for_version_expect_it_on_stdout():
    out = run("--version")
    assert out.returncode == 0 and out.stdout.startswith("ramp-edge ")


def test_when_bench_runs_against_emulator_process_expect_json_with_link_figures():
    out = run("bridge", "bench", "--emulator", "pty://", "--seconds", "1", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for key in ("round_trips_per_s", "rtt_p99_ms", "crc_failures", "timeouts", "lost"):
        assert key in result
    assert result["round_trips_per_s"] > 100
    assert result["crc_failures"] == 0


def test_when_probe_runs_expect_joints_in_json():
    out = run("bridge", "probe", "sim://", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["joints"][-1]["name"] == "gripper"
    assert report["link"]["timeouts"] == 0


def test_when_probe_dials_a_dynamixel_chain_expect_its_servos_as_joints(tmp_path):
    pytest.importorskip("dynamixel_sdk", reason="the dynamixel extra is not installed")
    from firmware_bridge.emulator.process import EmulatorProcess

    with EmulatorProcess(f"pty://{tmp_path}/ttyDXL",
                         ("--protocol", "dynamixel", "--ids", "1-3", "--model", "xl330")) as emu:
        out = run("bridge", "probe", emu.host_url, "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert len(report["joints"]) == 3 and report["mode"] == "TORQUE_OFF"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("bridge", "probe", "nope://x"), "unknown transport 'nope'"),
        (("bridge", "probe", "serial:///dev/not-a-port"),
         "cannot open serial port /dev/not-a-port: No such file or directory"),
        (("config", "check", "/nonexistent/robot.toml"), "cannot read robot config"),
    ],
)
def test_when_input_is_bad_expect_one_line_error_and_exit_1(args, message):
    out = run(*args)
    assert out.returncode == 1
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_when_emulator_listens_on_a_bad_url_expect_clear_error():
    out = run("emulator", "serve", "--url", "tcp://nowhere")
    assert out.returncode == 1
    assert "cannot listen on" in out.stderr


def test_when_sim_tasks_listed_expect_three_multi_stage_tasks():
    pytest.importorskip("mujoco", reason="the sim extra (MuJoCo) is not installed")
    out = run("sim", "tasks", "--json")
    assert out.returncode == 0, out.stderr
    tasks = {t["name"]: t for t in json.loads(out.stdout)}
    assert len(tasks) >= 3
    assert all(t["subgoals"] >= 2 and t["example"] for t in tasks.values())


def test_when_sim_frame_rendered_expect_a_png_a_person_can_open(tmp_path):
    pytest.importorskip("mujoco", reason="the sim extra (MuJoCo) is not installed")
    import numpy as np
    from PIL import Image

    out = run("sim", "render", "--task", "pack_box", "--out", str(tmp_path / "f.png"))
    assert out.returncode == 0, out.stderr
    with Image.open(tmp_path / "f.png") as image:
        assert image.size == (96, 96) and image.mode == "RGB"
        pixels = np.asarray(image).reshape(-1, 3)
        assert len(np.unique(pixels, axis=0)) > 50  # a scene, not a flat colour
