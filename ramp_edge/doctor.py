"""``ramp-edge doctor``: the checks a technician would otherwise do by hand.

Each check returns a :class:`CheckResult`: ``ok``, ``warn`` (works, but worth a look) or
``fail`` (the robot will not run properly), with one line saying what was found and, unless
ok, one line saying what to do. :data:`CHECKS` is the registry (data, in order); a check that
raises is reported as a failure of that check, never as a crash of the doctor.

Checks: serial ports and permissions, USB-serial latency timers, the bus handshake with the
configured robot (the emulator is started for an emulated robot, as ``ramp-edge run`` does),
the calibration file (and, on a real robot, against the motor controller), the model bundle
(hashes and probe), engine backends (and why TensorRT is missing), disk space for episodes,
the clock, the sync key and the last sync.
"""

from __future__ import annotations

import datetime as dt
import glob
import grp
import json
import os
import pwd
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from calibration.calibration_file import calibration_path, load_calibration
from calibration.errors import CalibrationError, CalibrationMissingError
from firmware_bridge.errors import (
    DeviceTimeoutError,
    EdgeError,
    IncompatibleFirmwareError,
    LinkError,
)
from firmware_bridge.messages import Calibration, Info, Mode
from ramp_edge.config import RobotConfig
from ramp_edge.control_socket import ControlSocketError, send_command, socket_path
from ramp_edge.robot_link import EMULATOR_PREFIX

OK, WARN, FAIL = "ok", "warn", "fail"
RECOMMENDED_LATENCY_MS = 1
SERIAL_GLOBS = ("ttyACM*", "ttyUSB*", "ttyTHS*")
EARLIEST_PLAUSIBLE_YEAR = 2024


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str  # ok | warn | fail
    message: str  # what was found
    fix: str = ""  # what to do (empty when ok)
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DoctorContext:
    """What the checks look at; the paths and tools are parameters so tests can point them at
    a fake tree."""

    config: RobotConfig
    home: Path
    calibration_file: Path | None = None
    bundle: Path | None = None  # default: HOME/bundles/active, else HOME/bundles/reference
    handshake: bool = True
    dev: Path = Path("/dev")
    sysfs: Path = Path("/sys")
    timedatectl: str | None = field(default_factory=lambda: shutil.which("timedatectl"))
    fail_free_gib: float = 2.0
    warn_free_gib: float = 10.0
    # filled in by the bus check for the calibration check
    device_info: Info | None = None
    device_calibration: Calibration | None = None

    def __post_init__(self) -> None:
        if self.calibration_file is None:
            self.calibration_file = calibration_path(self.home, self.config.robot_id)

    @property
    def emulated(self) -> bool:
        return self.config.bus.url.startswith(EMULATOR_PREFIX)


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _serial_path(url: str) -> str | None:
    """The device path of a serial bus URL (``serial://`` possibly inside a wrapper)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+")[-1] != "serial":
        return None
    return "/" + rest.split("?", 1)[0].lstrip("/")


# -- serial ports ---------------------------------------------------------------------------
def check_serial_ports(ctx: DoctorContext) -> CheckResult:
    name = "serial ports"
    bus_port = _serial_path(ctx.config.bus.url)
    found = sorted({p for pattern in SERIAL_GLOBS for p in glob.glob(str(ctx.dev / pattern))})
    user = _user()
    groups = {g.gr_name for g in grp.getgrall() if user in g.gr_mem}
    groups |= {grp.getgrgid(g).gr_name for g in os.getgroups() if _gid_exists(g)}
    session_groups = {grp.getgrgid(g).gr_name for g in os.getgroups() if _gid_exists(g)}
    in_dialout = "dialout" in session_groups
    ports = ([bus_port] if bus_port else []) + [p for p in found if p != bus_port]
    details: dict[str, Any] = {"bus_port": bus_port, "user": user, "in_dialout": in_dialout,
                               "ports": []}
    problems: list[tuple[str, str, bool]] = []  # (what, fix, fatal)
    for port in ports:
        is_bus = port == bus_port
        if not os.path.exists(port):
            problems.append((f"the bus port {port} does not exist",
                             "check the USB cable and the motor controller's power; list ports "
                             "with `ls -l /dev/serial/by-id/`", True))
            continue
        st = os.stat(port)
        group = _group_name(st.st_gid)
        access = os.access(port, os.R_OK | os.W_OK)
        details["ports"].append({"path": port, "group": group, "rw": access, "bus": is_bus,
                                 "mode": stat.filemode(st.st_mode)})
        if not access:
            if group in groups and group not in session_groups:
                fix = (f"{user} was added to group {group} but this login predates it: log out "
                       "and in again (or reboot)")
            else:
                fix = f"sudo usermod -aG {group} {user}, then log out and in again"
            problems.append((f"no read/write access to {port} (group {group})", fix, is_bus))
    if not ports:
        msg = f"no serial port in use (bus {ctx.config.bus.url}), none found"
        return CheckResult(name, OK, msg, details=details)
    fatal = [p for p in problems if p[2]]
    if problems:
        worst = fatal[0] if fatal else problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return CheckResult(name, FAIL if fatal else WARN, worst[0] + more, worst[1], details)
    listed = ", ".join(f"{p['path']} ({p['group']}, rw)" for p in details["ports"])
    note = "" if in_dialout else f"; {user} is not in dialout (not needed so far)"
    return CheckResult(name, OK, f"{listed}{note}", details=details)


def _gid_exists(gid: int) -> bool:
    try:
        grp.getgrgid(gid)
    except KeyError:
        return False
    return True


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


# -- USB latency ----------------------------------------------------------------------------
def check_usb_latency(ctx: DoctorContext) -> CheckResult:
    name = "USB latency timer"
    timers = sorted(glob.glob(str(ctx.sysfs / "bus" / "usb-serial" / "devices" / "*" /
                                  "latency_timer")))
    if not timers:
        return CheckResult(name, OK, "no USB-serial adapter with a latency timer (nothing to "
                           "tune)")
    bus_port = _serial_path(ctx.config.bus.url)
    bus_dev = os.path.basename(os.path.realpath(bus_port)) if bus_port else None
    slow, readings = [], {}
    for timer in timers:
        dev = Path(timer).parent.name
        try:
            ms = int(Path(timer).read_text().strip())
        except (OSError, ValueError):
            continue
        readings[dev] = ms
        if ms > RECOMMENDED_LATENCY_MS:
            slow.append((dev, ms, timer))
    if not slow:
        listed = ", ".join(f"{d} {ms} ms" for d, ms in readings.items())
        return CheckResult(name, OK, listed, details={"latency_ms": readings})
    dev, ms, timer = next(((d, m, t) for d, m, t in slow if d == bus_dev), slow[0])
    status = FAIL if dev == bus_dev else WARN
    why = " (the motor bus: replies arrive late and the control loop misses them)" \
        if dev == bus_dev else ""
    return CheckResult(
        name, status, f"{dev} latency timer is {ms} ms, {RECOMMENDED_LATENCY_MS} ms "
        f"recommended{why}",
        f"echo {RECOMMENDED_LATENCY_MS} | sudo tee {timer} (until unplugged); for good, a udev "
        'rule: ACTION=="add", SUBSYSTEM=="usb-serial", DRIVER=="ftdi_sio", '
        f'ATTR{{latency_timer}}="{RECOMMENDED_LATENCY_MS}"', {"latency_ms": readings})


# -- bus handshake --------------------------------------------------------------------------
def _controller_state(home: Path) -> str | None:
    try:
        reply = send_command(socket_path(home), {"cmd": "status"}, timeout_s=1.0)
    except ControlSocketError:
        return None
    return str(reply.get("state", "?"))


def check_bus(ctx: DoctorContext) -> CheckResult:
    from calibration.hardware import check_joint_names, explain_handshake_failure, read_state
    from ramp_edge.robot_link import open_robot_bus

    name = "bus handshake"
    url = ctx.config.bus.url
    if not ctx.handshake:
        return CheckResult(name, WARN, "skipped (--no-bus)", "run without --no-bus to check it")
    running = _controller_state(ctx.home)
    if running is not None:
        return CheckResult(name, OK, f"the controller is running ({running}) and owns the bus: "
                           "handshake skipped")
    try:
        with open_robot_bus(ctx.config) as (bus, _emulator):
            info = bus.info
            assert info is not None
            check_joint_names(ctx.config.joint_names, info, bus.url)
            state = read_state(bus)
            ctx.device_info = info
            ctx.device_calibration = bus.read_calibration()
            rtt = bus.health()["rtt_p50_ms"]
    except IncompatibleFirmwareError as err:
        return CheckResult(name, FAIL, str(err), "update the firmware or ramp-edge so they "
                           "share a protocol version")
    except DeviceTimeoutError as err:
        clear = explain_handshake_failure(url, err)  # duplicate motor ids look like silence
        if clear is not err:
            return CheckResult(name, FAIL, str(clear), "give each motor its own id")
        return CheckResult(name, FAIL, str(err), "is the motor controller powered? is the baud "
                           f"rate in the bus URL ({url}) right?")
    except LinkError as err:
        return CheckResult(name, FAIL, str(err), "check the cable, the motor controller's power "
                           "and [bus] url in the robot config")
    except CalibrationError as err:  # missing motors, duplicate ids, wrong order
        return CheckResult(name, FAIL, str(err), "fix the motors or the robot config's joints")
    except EdgeError as err:
        err = explain_handshake_failure(url, err)
        return CheckResult(name, FAIL, str(err), "check the motor controller and the robot "
                           "config")
    details = {"url": url, "device_id": info.device_id,
               "firmware_version": info.firmware_version,
               "protocol_version": info.protocol_version, "joints": len(info.joint_names),
               "mode": state.mode.name, "fault": state.fault.name, "rtt_p50_ms": rtt}
    msg = (f"{info.device_id}, firmware {info.firmware_version}, protocol "
           f"{info.protocol_version}, {len(info.joint_names)} joints as configured, rtt "
           f"{rtt:.2f} ms" + (" (emulator started for this check)" if ctx.emulated else ""))
    if state.mode in (Mode.FAULT, Mode.ESTOP):
        return CheckResult(name, WARN, f"{msg}; latched {state.mode.name} ({state.fault.name})",
                           "check the robot, then clear it: `ramp-edge run --clear-latched`",
                           details)
    return CheckResult(name, OK, msg, details=details)


# -- calibration ----------------------------------------------------------------------------
def check_calibration(ctx: DoctorContext) -> CheckResult:
    from calibration.verify import device_differences

    name = "calibration"
    path = ctx.calibration_file
    assert path is not None
    try:
        cal = load_calibration(path, ctx.config.robot_id)
    except CalibrationMissingError:
        return CheckResult(name, WARN if ctx.emulated else FAIL, f"no calibration file at {path}",
                           "calibrate the robot: `ramp-edge calibrate run`")
    except CalibrationError as err:
        return CheckResult(name, FAIL, str(err), "re-run `ramp-edge calibrate run`, or restore "
                           "the previous file (ROBOT_ID.prev.json)")
    details = {"file": str(path), "sha256": cal.sha256, "verified": bool(cal.verified)}
    if cal.joint_names != ctx.config.joint_names:
        return CheckResult(name, FAIL, f"{path} has joints {list(cal.joint_names)}, the robot "
                           f"config {list(ctx.config.joint_names)}", "calibrate this robot: "
                           "`ramp-edge calibrate run`", details)
    msg = f"{path} valid (sha256 {cal.sha256[:12]}...)"
    if ctx.emulated:
        msg += "; not compared with the device (the emulator starts uncalibrated each run)"
    elif ctx.device_calibration is not None and ctx.device_info is not None:
        diffs = device_differences(cal, ctx.device_calibration, ctx.device_info.joint_names)
        if diffs:
            return CheckResult(name, FAIL, f"the motor controller disagrees with {path}: "
                               f"{diffs[0]}", "if the file is right: `ramp-edge calibrate "
                               "apply`; if the robot changed: `ramp-edge calibrate run`",
                               {**details, "differences": diffs})
        msg += "; the motor controller holds it"
    else:
        msg += "; not compared with the device (no handshake)"
    if not cal.verified:
        return CheckResult(name, WARN, f"{msg}; not verified", "`ramp-edge calibrate verify`",
                           details)
    return CheckResult(name, OK, msg, details=details)


# -- model bundle -----------------------------------------------------------------------------
def _bundle_path(ctx: DoctorContext) -> Path | None:
    if ctx.bundle is not None:
        return ctx.bundle
    for candidate in ("active", "reference"):
        p = ctx.home / "bundles" / candidate
        if p.exists():
            return p
    return None


def check_bundle(ctx: DoctorContext) -> CheckResult:
    from ramp_edge.bundle import BundleError, load_bundle
    from ramp_edge.engines import EngineError, select_engine

    name = "model bundle"
    path = _bundle_path(ctx)
    if path is None:
        return CheckResult(name, WARN, f"no model bundle under {ctx.home / 'bundles'}",
                           "deploy one to HOME/bundles/active (`ramp-edge run` builds an "
                           "untrained reference bundle on first use)")
    try:
        bundle = load_bundle(path)
    except BundleError as err:
        return CheckResult(name, FAIL, str(err), "deploy the bundle again (it was changed, "
                           "truncated or damaged)")
    details = {"path": str(path), "name": bundle.name, "sha256": bundle.sha256,
               "trained": bundle.trained}
    if bundle.joint_names != ctx.config.joint_names:
        return CheckResult(name, FAIL, f"bundle {bundle.name!r} drives joints "
                           f"{list(bundle.joint_names)}, the robot has "
                           f"{list(ctx.config.joint_names)}", "deploy a bundle built for this "
                           "robot", details)
    try:
        engine, why = select_engine(bundle)
    except (EngineError, BundleError) as err:
        return CheckResult(name, FAIL, str(err), "deploy a bundle this machine can run, or "
                           "install its backend", details)
    try:
        backend = engine.backend
    finally:
        engine.close()
    details["backend"] = backend
    msg = f"{bundle.name} (sha256 {bundle.sha256[:12]}...) hashes OK, probe OK on {backend}"
    if not bundle.trained:
        return CheckResult(name, WARN, f"{msg}; untrained (random weights)", "deploy a trained "
                           "bundle: with this one the arm moves but does not do the task",
                           details)
    return CheckResult(name, OK, msg, details={**details, "engine": why})


# -- engine backends --------------------------------------------------------------------------
def check_engines(ctx: DoctorContext) -> CheckResult:
    from ramp_edge.engines import BACKENDS, backend_status

    name = "engine backends"
    status = {b: backend_status(b) for b in BACKENDS}
    available = [b for b, why in status.items() if why is None]
    details = {"available": available,
               "unavailable": {b: why for b, why in status.items() if why is not None}}
    if not available:
        return CheckResult(name, FAIL, "no engine backend can run here: "
                           + "; ".join(f"{b}: {w}" for b, w in status.items()),
                           "install torch (see README)", details)
    trt = [b for b in status if b.startswith("tensorrt")]
    msg = f"available: {', '.join(available)}"
    missing_trt = [b for b in trt if status[b] is not None]
    if missing_trt:
        why = status[missing_trt[0]]
        return CheckResult(name, WARN, f"{msg}; TensorRT unavailable: {why}",
                           "on a Jetson/NVIDIA GPU: install TensorRT (JetPack) and "
                           "`pip install 'ramp-edge[tensorrt]'`; the other backends run "
                           "meanwhile", details)
    return CheckResult(name, OK, msg, details=details)


# -- disk ---------------------------------------------------------------------------------------
def check_disk(ctx: DoctorContext) -> CheckResult:
    name = "disk space"
    where = ctx.home
    while not where.exists() and where != where.parent:
        where = where.parent
    usage = shutil.disk_usage(where)
    free_gib = usage.free / 2**30
    details = {"path": str(ctx.home), "free_gib": round(free_gib, 2),
               "total_gib": round(usage.total / 2**30, 2)}
    if ctx.home.exists() and not os.access(ctx.home, os.W_OK | os.X_OK):
        return CheckResult(name, FAIL, f"{ctx.home} is not writable by {_user()}",
                           f"sudo chown -R {_user()} {ctx.home}", details)
    msg = f"{free_gib:.1f} GiB free for episodes under {ctx.home}"
    if free_gib < ctx.fail_free_gib:
        return CheckResult(name, FAIL, msg, "free space: sync episodes to the training host "
                           "(synced ones can be deleted) or remove old files", details)
    if free_gib < ctx.warn_free_gib:
        return CheckResult(name, WARN, msg, "sync episodes soon; space is getting low", details)
    return CheckResult(name, OK, msg, details=details)


# -- clock ----------------------------------------------------------------------------------------
def check_clock(ctx: DoctorContext, wall: Callable[[], float] = time.time,
                mono: Callable[[], float] = time.monotonic) -> CheckResult:
    name = "clock"
    w0, m0 = wall(), mono()
    time.sleep(0.2)
    w1, m1 = wall(), mono()
    now = dt.datetime.fromtimestamp(w1, dt.timezone.utc)
    drift = (w1 - w0) - (m1 - m0)
    details: dict[str, Any] = {"wall_utc": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                               "wall_minus_monotonic_step_s": round(drift, 4)}
    if m1 <= m0:
        return CheckResult(name, FAIL, "the monotonic clock does not advance",
                           "reboot; report the kernel and board", details)
    if now.year < EARLIEST_PLAUSIBLE_YEAR:
        return CheckResult(name, FAIL, f"the wall clock says {details['wall_utc']} (no RTC "
                           "battery, no NTP?): episodes are stamped with it",
                           "set the time: `sudo timedatectl set-time 'YYYY-MM-DD HH:MM:SS'` or "
                           "connect to a network with NTP", details)
    ntp = None
    if ctx.timedatectl:
        try:
            out = subprocess.run([ctx.timedatectl, "show", "-p", "NTPSynchronized", "--value"],
                                 capture_output=True, text=True, timeout=3)
            ntp = out.stdout.strip() if out.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired):
            ntp = None
    details["ntp_synchronized"] = ntp
    msg = f"wall {details['wall_utc']}, monotonic advancing"
    if abs(drift) > 0.05:
        return CheckResult(name, WARN, f"{msg}; the wall clock stepped by {drift:+.3f} s "
                           "during the check", "let NTP settle; the controller times everything "
                           "with the monotonic clock", details)
    if ntp == "no":
        return CheckResult(name, WARN, f"{msg}; not NTP-synchronised",
                           "fine offline; sync the clock when the robot is on a network "
                           "(`timedatectl`), so episode times line up with the training host",
                           details)
    note = "NTP-synchronised" if ntp == "yes" else "NTP status unknown (no timedatectl)"
    return CheckResult(name, OK, f"{msg}, {note}", details=details)


# -- sync -----------------------------------------------------------------------------------------
def check_sync(ctx: DoctorContext) -> CheckResult:
    name = "sync"
    keys_dir, sync_dir = ctx.home / "keys", ctx.home / "sync"
    secrets = sorted(keys_dir.glob("*.key_secret")) if keys_dir.is_dir() else []
    details: dict[str, Any] = {"keys_dir": str(keys_dir), "secret_keys":
                               [str(p) for p in secrets]}
    if not secrets:
        return CheckResult(name, WARN, f"not set up (no robot key under {keys_dir})",
                           "set up sync to the training host when the robot needs it", details)
    loose = [p for p in secrets if p.stat().st_mode & 0o077]
    if loose:
        return CheckResult(name, WARN, f"secret key {loose[0]} is readable by others "
                           f"({stat.filemode(loose[0].stat().st_mode)})",
                           f"chmod 600 {loose[0]}", details)
    last = _last_sync(sync_dir)
    details["last_sync"] = last
    if last is None:
        return CheckResult(name, WARN, f"key {secrets[0].name} present; no sync yet",
                           "run a sync when the training host is reachable", details)
    return CheckResult(name, OK, f"key {secrets[0].name} present; last sync {last}",
                       details=details)


def _last_sync(sync_dir: Path) -> str | None:
    """HOME/sync/last_sync.json's ``at`` (or, failing that, the newest file's time there)."""
    if not sync_dir.is_dir():
        return None
    marker = sync_dir / "last_sync.json"
    try:
        at = json.loads(marker.read_text("utf-8")).get("at")
        if isinstance(at, str):
            return at
    except (OSError, ValueError, AttributeError):
        pass
    files = [p for p in sync_dir.iterdir() if p.is_file()]
    if not files:
        return None
    newest = max(p.stat().st_mtime for p in files)
    return dt.datetime.fromtimestamp(newest, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# The checks, in the order they are shown (the bus check runs before calibration: it fills
# in what the device holds).
CHECKS: tuple[Callable[[DoctorContext], CheckResult], ...] = (
    check_serial_ports,
    check_usb_latency,
    check_bus,
    check_calibration,
    check_bundle,
    check_engines,
    check_disk,
    check_clock,
    check_sync,
)

_NAMES = {check_serial_ports: "serial ports", check_usb_latency: "USB latency timer",
          check_bus: "bus handshake", check_calibration: "calibration",
          check_bundle: "model bundle", check_engines: "engine backends",
          check_disk: "disk space", check_clock: "clock", check_sync: "sync"}


def run_checks(ctx: DoctorContext,
               checks: tuple[Callable[[DoctorContext], CheckResult], ...] = CHECKS
               ) -> list[CheckResult]:
    """Run ``checks`` in order. A check that raises becomes a failure naming the error."""
    results = []
    for check in checks:
        try:
            results.append(check(ctx))
        except Exception as err:  # one broken check must not hide the others
            name = _NAMES.get(check, check.__name__)
            results.append(CheckResult(name, FAIL, f"the check itself failed: "
                                       f"{type(err).__name__}: {err}",
                                       "report this with the doctor's --json output"))
    return results
