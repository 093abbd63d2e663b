"""The systemd units: what they say, that systemd itself accepts them (``systemd-analyze
verify``, which must also be shown to catch a mistake), rendering inputs, atomic install, CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from firmware_bridge.errors import EdgeError
from ramp_edge import systemd_units as su
from ramp_edge.cli_systemd import systemd_app
from ramp_edge.sd_notify import Notifier

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze not installed (Debian/Ubuntu: apt-get install -y systemd)")


def existing_executable() -> Path:
    """An executable that exists here, for ExecStart= (verify checks it): the ramp-edge in use,
    else this interpreter."""
    try:
        return su.find_executable()
    except su.UnitError:
        return Path(sys.executable)


def settings(text: str) -> dict[str, list[tuple[str, str]]]:
    """A unit file's settings by section, in order, repeated keys kept (ExecStart=)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, _, value = line.partition("=")
        assert current is not None, f"setting outside a section: {raw!r}"
        current.append((key, value))
    return sections


def values(text: str, section: str, key: str) -> list[str]:
    return [v for k, v in settings(text).get(section, []) if k == key]


def one(text: str, section: str, key: str) -> str:
    found = values(text, section, key)
    assert len(found) == 1, f"{key}= in [{section}]: {found}"
    return found[0]


# -- systemd-analyze verify ------------------------------------------------------------------

# verify also loads the units ours refer to (multi-user.target, network-online.target,
# timers.target and what those pull in) from the host's /lib/systemd/system. In a container or a
# CI image those can carry warnings of their own (deprecated settings, missing binaries) that are
# not ours to fix: a line that starts by naming another unit or unit file, and does not mention
# ours, is ignored. Every other line fails the test, including one that names no unit at all.
_OTHER_UNIT = re.compile(
    r"^(?P<name>[^\s:]+\.(service|socket|target|timer|mount|automount|swap|path|slice|scope|"
    r"device))(:\d+)?: ")


def verify_problems(paths: list[Path]) -> list[str]:
    """The lines ``systemd-analyze verify`` prints about these unit files (it exits 0 on unknown
    keys and bad values, so its stderr is what tells)."""
    assert SYSTEMD_ANALYZE is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYSTEMD_")}
    env.update(LANG="C.UTF-8", SYSTEMD_LOG_COLOR="0", SYSTEMD_LOG_LEVEL="info")
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", "--generators=no", *map(str, paths)],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    ours = {p.name for p in paths}
    problems = []
    for line in (proc.stdout + proc.stderr).splitlines():
        if not line.strip():
            continue
        other = _OTHER_UNIT.match(line)
        if (other and Path(other.group("name")).name not in ours
                and not any(name in line for name in ours)):
            continue
        problems.append(line)
    if proc.returncode != 0 and not problems:
        problems.append(f"systemd-analyze verify exited {proc.returncode}")
    return problems


@pytest.fixture(scope="module")
def systemd_verify(tmp_path_factory):
    """``verify_problems``, once systemd-analyze is shown to run here: a known-good unit must
    verify clean, otherwise the tests are skipped with what it printed."""
    if SYSTEMD_ANALYZE is None:
        pytest.skip("systemd-analyze not installed (Debian/Ubuntu: apt-get install -y systemd)")
    probe = tmp_path_factory.mktemp("probe") / "ramp-edge-probe.service"
    probe.write_text(f"[Unit]\nDescription=probe\n\n[Service]\nType=oneshot\n"
                     f"ExecStart={existing_executable()} --version\n")
    problems = verify_problems([probe])
    if problems:
        pytest.skip("systemd-analyze cannot verify units here: " + " | ".join(problems))
    return verify_problems


def write_rendered(directory: Path, **kwargs) -> list[Path]:
    kwargs.setdefault("executable", existing_executable())
    written = su.write_units(su.render_units(**kwargs), directory)
    return [w.path for w in written]


@pytest.mark.parametrize("kwargs", [
    {},
    {"home": "/srv/ramp-edge", "user": "robot", "groups": ["dialout"]},
    {"home": "/home/robot/ramp", "run_args": ["--config", "/etc/ramp edge/robot.toml", "50%",
                                              "$HOME", 'say "hi"', "back\\slash", ";"]},
], ids=["defaults", "home-outside-var-lib", "home-under-home-odd-args"])
def test_when_units_rendered_expect_systemd_analyze_verify_prints_nothing(
        kwargs, tmp_path, systemd_verify):
    paths = write_rendered(tmp_path, **kwargs)
    assert systemd_verify(paths) == []


@pytest.mark.parametrize(("unit", "old", "new", "expected"), [
    ("ramp-edge.service", "WatchdogSec=", "WatchdogSecs=", "Unknown key 'WatchdogSecs'"),
    ("ramp-edge.service", "Restart=on-failure", "Restart=sometimes", "sometimes"),
    ("ramp-edge-sync.service", "IOSchedulingClass=idle", "IOSchedulingClas=idle",
     "IOSchedulingClas"),
    ("ramp-edge-sync.timer", "OnBootSec=", "OnBotSec=", "OnBotSec"),
])
def test_when_a_unit_has_a_mistake_expect_verify_reports_it(unit, old, new, expected, tmp_path,
                                                            systemd_verify):
    # The check above can fail: a misspelt key or a bad value is reported, with the unit named.
    paths = write_rendered(tmp_path)
    target = tmp_path / unit
    text = target.read_text()
    assert old in text
    target.write_text(text.replace(old, new, 1))
    problems = systemd_verify(paths)
    assert problems and all(unit in p for p in problems), problems
    assert any(expected in p for p in problems), problems


def test_when_executable_is_missing_expect_verify_reports_it(tmp_path, systemd_verify):
    paths = write_rendered(tmp_path, executable="/nonexistent/bin/ramp-edge")
    problems = systemd_verify(paths)
    assert any("/nonexistent/bin/ramp-edge" in p and "executable" in p for p in problems), \
        problems


# -- what the units say ----------------------------------------------------------------------

EXE = "/opt/ramp-edge/bin/ramp-edge"


@pytest.fixture
def units() -> dict[str, str]:
    return su.render_units("/opt/ramp-edge")


def test_controller_is_a_notify_service_with_watchdog_restart_and_time_to_seal(units):
    text = units[su.CONTROLLER_UNIT]
    assert one(text, "Service", "Type") == "notify"
    assert one(text, "Service", "NotifyAccess") == "main"
    assert one(text, "Service", "ExecStart") == f"{EXE} run --home /var/lib/ramp-edge"
    assert one(text, "Service", "WatchdogSec") == "2s"
    assert one(text, "Service", "Restart") == "on-failure"
    assert one(text, "Service", "RestartSec") == "2s"
    assert one(text, "Service", "KillSignal") == "SIGTERM"
    assert one(text, "Service", "TimeoutStopSec") == "30s"
    assert one(text, "Unit", "StartLimitBurst") == "5"
    assert one(text, "Install", "WantedBy") == "multi-user.target"


def test_controller_watchdog_is_pinged_well_inside_its_period(units):
    period_s = float(one(units[su.CONTROLLER_UNIT], "Service", "WatchdogSec").removesuffix("s"))
    with Notifier("@unused", watchdog_period_s=period_s) as notifier:
        assert notifier.watchdog_interval_s == period_s / 2


def test_controller_runs_as_its_user_with_device_groups_and_state_directory(units):
    text = units[su.CONTROLLER_UNIT]
    assert one(text, "Service", "User") == "ramp-edge"
    assert one(text, "Service", "SupplementaryGroups").split() == ["dialout", "video", "input"]
    assert one(text, "Service", "StateDirectory") == "ramp-edge"
    assert "RAMP_EDGE_HOME=/var/lib/ramp-edge" in values(text, "Service", "Environment")
    assert one(text, "Service", "WorkingDirectory") == "/var/lib/ramp-edge"
    assert one(text, "Service", "LimitRTPRIO") == "50"
    assert one(text, "Service", "LimitMEMLOCK") == "infinity"


def test_controller_hardening_keeps_devices_and_real_time_reachable(units):
    text = units[su.CONTROLLER_UNIT]
    keys = {k for k, _ in settings(text)["Service"]}
    assert one(text, "Service", "NoNewPrivileges") == "yes"
    assert one(text, "Service", "ProtectSystem") == "strict"
    assert one(text, "Service", "ProtectHome") == "yes"
    # Each of these would hide /dev/ttyACM*, cameras or GPU nodes, or forbid SCHED_FIFO, or make
    # every thread real time.
    for forbidden in ("PrivateDevices", "DeviceAllow", "DevicePolicy", "ProtectClock",
                      "RestrictRealtime", "MemoryDenyWriteExecute", "CPUSchedulingPolicy",
                      "DynamicUser", "ProtectKernelTunables"):
        assert forbidden not in keys, forbidden


def test_sync_pushes_then_pulls_at_idle_priority(units):
    text = units[su.SYNC_UNIT]
    assert one(text, "Service", "Type") == "oneshot"
    assert values(text, "Service", "ExecStart") == [f"{EXE} sync push", f"{EXE} sync pull"]
    assert one(text, "Service", "Nice") == "10"
    assert one(text, "Service", "IOSchedulingClass") == "idle"
    assert one(text, "Service", "User") == "ramp-edge"
    assert "RAMP_EDGE_HOME=/var/lib/ramp-edge" in values(text, "Service", "Environment")
    # The controller's RuntimeDirectory= is removed when a unit declaring it stops: sharing it
    # would pull /run/ramp-edge from under the running controller.
    assert values(text, "Service", "RuntimeDirectory") == []
    assert "Install" not in settings(text)  # started by the timer only


def test_sync_timer_fires_after_boot_and_after_each_run(units):
    text = units[su.SYNC_TIMER]
    assert one(text, "Timer", "Unit") == su.SYNC_UNIT
    assert one(text, "Timer", "OnBootSec") == "5min"
    # OnUnitActiveSec= does not re-arm reliably for Type=oneshot (never "active").
    assert one(text, "Timer", "OnUnitInactiveSec") == "15min"
    assert one(text, "Timer", "RandomizedDelaySec") == "2min"
    assert one(text, "Install", "WantedBy") == "timers.target"


def test_when_rendered_expect_no_placeholder_left(units):
    for name, text in units.items():
        assert not re.search(r"@[A-Z_]+@", text), name


def test_when_home_is_elsewhere_under_var_lib_expect_state_directory_follows():
    text = su.render_units("/opt/x", home="/var/lib/robots/r1")[su.CONTROLLER_UNIT]
    assert one(text, "Service", "StateDirectory") == "robots/r1"
    assert values(text, "Service", "ReadWritePaths") == []


def test_when_home_is_outside_var_lib_expect_read_write_paths_instead():
    for name, text in su.render_units("/opt/x", home="/srv/ramp-edge").items():
        if name == su.SYNC_TIMER:
            continue
        assert one(text, "Service", "ReadWritePaths") == "/srv/ramp-edge"
        assert values(text, "Service", "StateDirectory") == []
        assert one(text, "Service", "ProtectHome") == "yes"


def test_when_home_is_under_home_expect_protect_home_read_only():
    text = su.render_units("/opt/x", home="/home/robot/ramp")[su.CONTROLLER_UNIT]
    assert one(text, "Service", "ProtectHome") == "read-only"
    assert one(text, "Service", "ReadWritePaths") == "/home/robot/ramp"


def test_when_the_interpreter_lives_under_root_expect_protect_home_read_only(tmp_path):
    script = tmp_path / "bin" / "ramp-edge"
    script.parent.mkdir()
    script.write_text("#!/root/.pyenv/versions/3.10/bin/python3\nimport cli\n")
    assert su.paths_under_home(script) == ["/root/.pyenv/versions/3.10/bin/python3"]
    text = su.render_units(executable=script)[su.CONTROLLER_UNIT]
    assert one(text, "Service", "ProtectHome") == "read-only"


def test_when_the_script_uses_env_expect_no_interpreter_guess(tmp_path):
    script = tmp_path / "ramp-edge"
    script.write_text("#!/usr/bin/env python3\n")
    assert su.interpreter_of(script) is None
    assert su.interpreter_of(tmp_path / "missing") is None


def test_when_run_args_need_quoting_expect_systemd_quoting_and_no_expansion():
    text = su.render_units("/opt/x", run_args=["--config", "/etc/ramp edge/r.toml", "50%",
                                               "$HOME", 'a"b'])[su.CONTROLLER_UNIT]
    assert one(text, "Service", "ExecStart") == (
        '/opt/x/bin/ramp-edge run --home /var/lib/ramp-edge --config "/etc/ramp edge/r.toml" '
        '50%% "$$HOME" "a\\"b"')


def test_when_paths_hold_percent_expect_it_escaped_everywhere():
    text = su.render_units("/opt/v%1", home="/srv/h%2")[su.CONTROLLER_UNIT]
    assert one(text, "Service", "ExecStart").startswith("/opt/v%%1/bin/ramp-edge run --home "
                                                         "/srv/h%%2")
    assert one(text, "Service", "ReadWritePaths") == "/srv/h%%2"


@pytest.mark.parametrize("kwargs", [
    {"prefix": "opt/ramp-edge"},
    {"prefix": "/opt/ramp edge"},
    {"prefix": "/opt/x", "home": "var/lib/ramp-edge"},
    {"prefix": "/opt/x", "home": "/var/lib/ramp\nedge"},
    {"prefix": "/opt/x", "home": "/"},
    {"prefix": "/opt/x", "home": "/var/lib"},
    {"prefix": "/opt/x", "user": "Robot User"},
    {"prefix": "/opt/x", "user": "0robot"},
    {"prefix": "/opt/x", "groups": ["dial out"]},
    {"prefix": "/opt/x", "run_args": ["bell\x07"]},
])
def test_when_an_input_would_be_misread_by_systemd_expect_unit_error(kwargs):
    with pytest.raises(su.UnitError) as info:
        su.render_units(**kwargs)
    assert isinstance(info.value, EdgeError) and isinstance(info.value, ValueError)


def test_when_prefix_is_not_given_expect_the_real_path_of_ramp_edge_in_use(tmp_path,
                                                                            monkeypatch):
    real = tmp_path / "venv" / "bin" / "ramp-edge"
    real.parent.mkdir(parents=True)
    real.write_text("#!/usr/bin/python3\n")
    real.chmod(0o755)
    link = tmp_path / "ramp-edge"
    link.symlink_to(real)
    monkeypatch.setattr(sys, "argv", [str(link), "systemd", "render"])
    assert su.find_executable() == real
    text = su.render_units()[su.CONTROLLER_UNIT]
    assert one(text, "Service", "ExecStart").startswith(f"{real} run ")


def test_when_no_ramp_edge_anywhere_expect_unit_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest"])
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(su.UnitError, match="--prefix"):
        su.find_executable()


def test_next_steps_create_the_user_when_missing_then_enable():
    steps = su.next_steps("ramp-edge", "/var/lib/ramp-edge", user_exists=False)
    assert steps[0].startswith("useradd --system")
    assert steps[0].endswith(" ramp-edge")
    assert steps[1] == "systemctl daemon-reload && systemctl enable --now ramp-edge.service"
    assert steps[2].startswith("systemctl enable --now ramp-edge-sync.timer")
    assert not su.next_steps(user_exists=True)[0].startswith("useradd")


# -- writing -----------------------------------------------------------------------------------


def test_when_written_expect_mode_0644_and_changes_reported_and_no_temp_files(tmp_path, units):
    out = tmp_path / "units"
    first = su.write_units(units, out)
    assert [w.change for w in first] == ["new"] * 3
    for w in first:
        assert w.path.read_text() == units[w.name]
        assert w.path.stat().st_mode & 0o777 == 0o644
    assert [w.change for w in su.write_units(units, out)] == ["unchanged"] * 3
    changed = dict(units)
    changed[su.SYNC_TIMER] += "# local note\n"
    assert [w.change for w in su.write_units(changed, out)] == ["unchanged", "unchanged",
                                                                 "updated"]
    assert sorted(p.name for p in out.iterdir()) == sorted(su.UNIT_NAMES)


def test_when_dry_run_expect_nothing_written(tmp_path, units):
    written = su.write_units(units, tmp_path / "units", dry_run=True)
    assert [w.change for w in written] == ["new"] * 3
    assert not (tmp_path / "units").exists()


def test_when_rename_fails_expect_old_file_intact_and_temp_removed(tmp_path, monkeypatch):
    target = tmp_path / "ramp-edge.service"
    target.write_text("old\n")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(su.UnitInstallError, match="No space left"):
        su.write_text_atomic(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["ramp-edge.service"]


def test_when_unit_dir_cannot_be_made_expect_unit_install_error(tmp_path, units):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(su.UnitInstallError) as info:
        su.write_units(units, blocker / "units")
    assert isinstance(info.value, EdgeError) and isinstance(info.value, OSError)


# -- the CLI, mounted as cli.py mounts it -----------------------------------------------------


@pytest.fixture
def cli():
    app = typer.Typer()
    app.add_typer(systemd_app, name="systemd")
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, ["systemd", *args])

    return invoke


def test_cli_render_writes_units_and_reports_json(cli, tmp_path):
    out = tmp_path / "out"
    result = cli("render", "--out", str(out), "--prefix", "/opt/ramp-edge", "--user", "robot",
                 "--group", "dialout", "--run-arg=--config", "--run-arg=/etc/r.toml", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [u["name"] for u in report["units"]] == list(su.UNIT_NAMES)
    assert report["executable"] == "/opt/ramp-edge/bin/ramp-edge"
    text = (out / su.CONTROLLER_UNIT).read_text()
    assert one(text, "Service", "User") == "robot"
    assert one(text, "Service", "SupplementaryGroups") == "dialout"
    assert one(text, "Service", "ExecStart").endswith("--config /etc/r.toml")


def test_cli_install_dry_run_prints_units_and_next_steps_and_writes_nothing(cli, tmp_path):
    unit_dir = tmp_path / "system"
    result = cli("install", "--prefix", "/opt/ramp-edge", "--unit-dir", str(unit_dir),
                 "--dry-run")
    assert result.exit_code == 0, result.output
    assert not unit_dir.exists()
    assert "# ---- ramp-edge.service ----" in result.stdout
    assert "ExecStart=/opt/ramp-edge/bin/ramp-edge run --home /var/lib/ramp-edge" in result.stdout
    assert "systemctl daemon-reload && systemctl enable --now ramp-edge.service" in result.stderr
    assert "does not exist on this machine" in result.stderr


def test_cli_install_writes_units_for_the_ramp_edge_in_use(cli, tmp_path, monkeypatch):
    exe = existing_executable()
    monkeypatch.setattr(sys, "argv", [str(exe)])
    unit_dir = tmp_path / "system"
    result = cli("install", "--unit-dir", str(unit_dir), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {u["change"] for u in report["units"]} == {"new"}
    assert "systemctl daemon-reload && systemctl enable --now ramp-edge.service" in \
        report["next_steps"]
    text = (unit_dir / su.CONTROLLER_UNIT).read_text()
    assert one(text, "Service", "ExecStart").startswith(f"{os.path.realpath(exe)} run --home ")


def test_cli_install_refuses_an_executable_that_is_not_there(cli, tmp_path):
    result = cli("install", "--prefix", "/nonexistent", "--unit-dir", str(tmp_path))
    assert isinstance(result.exception, su.UnitError)
    assert "does not exist" in str(result.exception)
    assert list(tmp_path.iterdir()) == []
