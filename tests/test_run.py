"""``ramp-edge run`` end to end, as systemd and a technician use it: a separate process driving
the emulated MuJoCo robot, reached through its control socket, signals and sd_notify."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("mujoco", reason="the sim extra (MuJoCo) is not installed")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")

EXE = Path(sys.executable).parent / "ramp-edge"
SUMMARY_KEYS = ("loop_rate_hz", "lateness_p99_ms", "overruns", "chunk_latency_p50_ms",
                "chunk_latency_p99_ms", "safety_clamps", "episodes")


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A robot home with the reference bundle already built (built once for this module)."""
    from models.reference import build_reference_bundle
    from ramp_edge.config import load_config

    home = tmp_path_factory.mktemp("home")
    config = load_config()
    build_reference_bundle(home / "bundles" / "reference", config.joint_names,
                           joint_limits=[(j.position_min, j.position_max) for j in config.joints],
                           camera_names=tuple(c.name for c in config.cameras))
    return home


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    return {**env, "RAMP_EDGE_HOME": str(home), "PYTHONUNBUFFERED": "1", **extra}


def _start(home: Path, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([str(EXE), "run", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            env=_env(home, **env))


def _wait_running(home: Path, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    from ramp_edge.control_socket import ControlSocketError, send_command, socket_path

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        assert proc.poll() is None, proc.stderr.read()
        try:
            if send_command(socket_path(home), {"cmd": "status"}).get("state") == "RUNNING":
                return
        except ControlSocketError:
            pass
        time.sleep(0.1)
    raise AssertionError("the controller never reached RUNNING")


def test_when_run_with_defaults_expect_an_episode_and_a_json_summary(home):
    out = subprocess.run([str(EXE), "run", "--duration", "3", "--json"], capture_output=True,
                         text=True, timeout=180, env=_env(home), stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    for key in SUMMARY_KEYS:
        assert key in summary
    assert summary["episodes"] == 1
    assert 90 <= summary["loop_rate_hz"] <= 110
    assert summary["chunk_latency_p50_ms"] is not None
    episode = summary["per_episode"][0]
    assert episode["final_state"] == "IDLE"
    assert episode["source_steps"].get("policy", 0) > 0
    assert summary["missed_replies"] < 0.05 * episode["steps"]
    assert "probe verified" in out.stderr  # the bundle was checked before anything moved


def test_when_estop_sent_over_the_control_socket_expect_latched_and_exit_1(home):
    proc = _start(home, "--duration", "60", "--json")
    try:
        _wait_running(home, proc)
        estop = subprocess.run([str(EXE), "estop", "--reason", "test"], capture_output=True,
                               text=True, timeout=30, env=_env(home))
        assert estop.returncode == 0, estop.stderr
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 1, stderr
    summary = json.loads(stdout)
    assert summary["outcomes"] == ["estop"]
    assert summary["per_episode"][0]["final_state"] == "ESTOP"


def test_when_sigterm_arrives_expect_controlled_stop_within_bounded_time(home):
    proc = _start(home, "--duration", "60", "--json")
    try:
        _wait_running(home, proc)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert elapsed < 10.0, f"took {elapsed:.1f} s to stop"
    episode = json.loads(stdout)["per_episode"][0]
    assert episode["final_state"] == "IDLE"
    assert ["RUNNING", "STOPPING", "SIGTERM received"] in episode["transitions"]


def test_when_run_under_systemd_expect_ready_watchdog_status_and_stopping(home, tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.5)
    proc = _start(home, "--duration", "4", NOTIFY_SOCKET=str(path), WATCHDOG_USEC="1000000")
    messages: list[str] = []
    try:
        end = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < end:
            with contextlib.suppress(TimeoutError):
                messages.append(sock.recv(4096).decode())
        proc.wait(timeout=10)
    finally:
        proc.kill()
        sock.close()
    assert proc.returncode == 0, proc.stderr.read()
    text = "\n".join(messages)
    assert "READY=1" in text
    assert text.count("WATCHDOG=1") >= 4  # every 0.5 s over a 4 s episode
    assert "STATUS=" in text
    assert "STOPPING=1" in text


def test_when_bundles_swapped_and_rolled_back_mid_run_expect_no_stop_and_bad_bundle_refused(
    home, tmp_path,
):
    from models.reference import build_reference_bundle
    from ramp_edge.config import load_config

    config = load_config()
    limits = [(j.position_min, j.position_max) for j in config.joints]
    other = build_reference_bundle(tmp_path / "seed1", config.joint_names, seed=1,
                                   joint_limits=limits, backends=("torch-eager",))
    tampered = build_reference_bundle(tmp_path / "tampered", config.joint_names, seed=2,
                                      joint_limits=limits, backends=("torch-eager",))
    weights = next(p for p in tampered.rglob("*") if p.is_file() and p.suffix in (".pt", ".pth"))
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))

    def model(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(EXE), "model", *args, "--json"], capture_output=True,
                              text=True, timeout=120, env=_env(home))

    proc = _start(home, "--duration", "60", "--json")
    try:
        _wait_running(home, proc)
        bad = model("swap", str(tampered))
        assert bad.returncode == 1 and "sha256" in json.loads(bad.stdout)["error"]
        good = model("swap", str(other))
        assert good.returncode == 0, good.stdout + good.stderr
        assert json.loads(good.stdout)["bundle"].startswith("reference-seed1@")
        time.sleep(1.5)  # a few chunks from the new engine
        back = model("rollback")
        assert json.loads(back.stdout)["bundle"].startswith("reference-seed0@")
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    episode = json.loads(stdout)["per_episode"][0]
    swaps = [s["bundle"].split("@")[0] for s in episode["bundle_swaps"]]
    assert swaps == ["reference-seed1", "reference-seed0"]
    from ramp_edge.episodes import EpisodeStore, open_episode

    with EpisodeStore(home) as store:  # the swaps are events of the recorded episode too
        path = store.path_of(episode["recording"]["episode_id"])
    with open_episode(path) as ep:
        recorded = [e.detail_json()["bundle"].split("@")[0] for e in ep.events()
                    if e.kind == "bundle_swap"]
    assert recorded == swaps
    assert episode["final_state"] == "IDLE"
    assert "first chunk: the policy drives" in [t[2] for t in episode["transitions"]]
    assert not any(t[1] == "STOPPING" and "chunk" in t[2] for t in episode["transitions"])


def test_when_the_expert_demonstrates_through_the_controller_expect_the_task_done(home):
    """Demonstrations flow through the real controller path: teleop -> safety filter -> bus."""
    out = subprocess.run([str(EXE), "run", "--no-policy", "--teleop", "expert", "--task",
                          "pack_box", "--duration", "40", "--json"], capture_output=True,
                         text=True, timeout=240, env=_env(home), stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    episode = json.loads(out.stdout)["per_episode"][0]
    assert episode["outcome"] == "success", episode["transitions"]
    assert ["ARMED", "TAKEOVER", "takeover by scripted+expert: demonstration"] in \
        episode["transitions"]
    assert episode["source_steps"]["human"] > 0.9 * episode["steps"]
    assert episode["chunks"] == 0  # no inference in a demonstration


def test_when_the_policy_stalls_expect_the_corrector_to_take_over_and_hand_back(home):
    out = subprocess.run([str(EXE), "run", "--teleop", "corrector", "--task", "pack_box",
                          "--duration", "20", "--json"], capture_output=True, text=True,
                         timeout=240, env=_env(home), stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    episode = json.loads(out.stdout)["per_episode"][0]
    reasons = [t[2] for t in episode["transitions"] if t[1] == "TAKEOVER"]
    assert reasons and all(r.startswith("takeover by scripted+corrector") for r in reasons)
    assert episode["source_steps"].get("human", 0) > 0
    assert episode["source_steps"].get("policy", 0) > 0
    assert episode["final_state"] == "IDLE"


def test_when_an_episode_is_recorded_expect_it_sealed_with_every_step(home):
    from ramp_edge.episodes import EpisodeStore, verify

    out = subprocess.run([str(EXE), "run", "--teleop", "corrector", "--duration", "12",
                          "--json"], capture_output=True, text=True, timeout=240,
                         env=_env(home), stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    episode = json.loads(out.stdout)["per_episode"][0]
    rec = episode["recording"]
    assert rec["steps_dropped"] == 0 and rec["steps_written"] == episode["steps"]
    assert rec["images_written"] > 0
    with EpisodeStore(home) as store:
        entry = store.get(rec["episode_id"])
        assert entry.status == "sealed" and entry.steps == episode["steps"]
        assert verify(store.path_of(entry.id), entry.sha256).ok
    import sqlite3

    with sqlite3.connect(home / "episodes" / f"{entry.id}.sqlite") as conn:
        kinds = {k for (k,) in conn.execute("select kind from events")}
        sources = {s for (s,) in conn.execute("select distinct source from steps")}
    if any(t[1] == "TAKEOVER" for t in episode["transitions"]):
        assert {"takeover_start"} <= kinds and "human" in sources


def test_when_the_controller_is_killed_mid_episode_expect_it_recovered_at_next_start(home):
    proc = _start(home, "--duration", "60", "--json")
    try:
        _wait_running(home, proc)
        time.sleep(1.0)
        proc.kill()  # SIGKILL: no sealing, as a crash or power cut
        proc.wait(timeout=10)
    finally:
        proc.kill()
    out = subprocess.run([str(EXE), "run", "--duration", "1", "--json"], capture_output=True,
                         text=True, timeout=240, env=_env(home), stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert "recovered 1 unfinished episode(s), sealed as aborted" in out.stderr
    from ramp_edge.episodes import EpisodeStore

    with EpisodeStore(home) as store:
        aborted = store.list(status="aborted")
        assert len(aborted) >= 1 and aborted[-1].steps > 50
