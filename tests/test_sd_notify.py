"""The sd_notify client against a real unix datagram socket standing in for systemd's."""

from __future__ import annotations

import os
import socket
import struct
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ramp_edge.sd_notify import (
    MAX_STATUS_BYTES,
    Notifier,
    notify_address,
    watchdog_period_s,
)

_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid


@dataclass
class FakeManager:
    """The receiving end, bound where NOTIFY_SOCKET points, with SO_PASSCRED on as systemd has
    it, so the sender's PID arrives with each datagram as systemd sees it."""

    address: str  # the NOTIFY_SOCKET value
    sock: socket.socket

    def receive(self, timeout_s: float = 2.0) -> tuple[str, int]:
        """The next datagram's text and the sender's PID from its credentials."""
        self.sock.settimeout(timeout_s)
        data, ancdata, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(_UCRED.size))
        pid = -1
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid, _uid, _gid = _UCRED.unpack(payload[:_UCRED.size])
        return data.decode(), pid

    def pending(self) -> list[str]:
        """Everything queued, without waiting."""
        self.sock.setblocking(False)
        out = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return out


@pytest.fixture(params=["path", "abstract"])
def manager(request) -> Iterator[FakeManager]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    # A short directory of our own: AF_UNIX paths are limited to 107 bytes and pytest's
    # tmp_path can be longer than that.
    with tempfile.TemporaryDirectory(prefix="sdn-") as short_dir:
        if request.param == "path":
            address = os.path.join(short_dir, "notify")
            sock.bind(address)
        else:
            name = f"ramp-edge-test-{uuid.uuid4().hex}"
            sock.bind(b"\0" + name.encode())
            address = "@" + name
        try:
            yield FakeManager(address, sock)
        finally:
            sock.close()


def test_when_socket_is_path_or_abstract_expect_each_message_received_exactly(manager):
    with Notifier(manager.address) as notifier:
        assert notifier.enabled
        assert notifier.ready()
        assert manager.receive()[0] == "READY=1"
        assert notifier.ready(status="running policy")
        assert manager.receive()[0] == "READY=1\nSTATUS=running policy"
        assert notifier.status("sealing episode 42")
        assert manager.receive()[0] == "STATUS=sealing episode 42"
        assert notifier.watchdog()
        assert manager.receive()[0] == "WATCHDOG=1"
        assert notifier.stopping()
        assert manager.receive()[0] == "STOPPING=1"
        assert notifier.extend_timeout(20_000_000)
        assert manager.receive()[0] == "EXTEND_TIMEOUT_USEC=20000000"
        assert notifier.extend_timeout(5_000_000, status="sealing: 3/7 chunks")
        assert manager.receive()[0] == "EXTEND_TIMEOUT_USEC=5000000\nSTATUS=sealing: 3/7 chunks"
        assert notifier.notify("ERRNO=5", "STATUS=x")
        assert manager.receive()[0] == "ERRNO=5\nSTATUS=x"
        assert (notifier.sent, notifier.failures) == (8, 0)


def test_when_reloading_expect_monotonic_usec_of_now(manager):
    with Notifier(manager.address) as notifier:
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert notifier.reloading()
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        first, second = manager.receive()[0].split("\n")
        assert first == "RELOADING=1"
        key, value = second.split("=")
        assert key == "MONOTONIC_USEC" and before <= int(value) <= after


def test_when_sent_from_another_thread_expect_the_main_pid_in_credentials(manager):
    # NotifyAccess=main accepts messages whose credentials carry the main PID; every thread of
    # the controller shares it.
    import threading

    with Notifier(manager.address) as notifier:
        thread = threading.Thread(target=notifier.watchdog)
        thread.start()
        thread.join()
        text, pid = manager.receive()
    assert (text, pid) == ("WATCHDOG=1", os.getpid())


def test_when_status_has_newlines_expect_one_line_and_no_forged_assignment(manager):
    with Notifier(manager.address) as notifier:
        notifier.status("bus lost\nREADY=1\r\nretrying")
        text, _ = manager.receive()
    assert text == "STATUS=bus lost READY=1 retrying"
    assert "\n" not in text


def test_when_status_is_long_expect_it_cut_to_the_limit_on_a_character_boundary(manager):
    with Notifier(manager.address) as notifier:
        notifier.status("é" * MAX_STATUS_BYTES)  # two bytes each
        text, _ = manager.receive()
    value = text.removeprefix("STATUS=")
    assert value == "é" * (MAX_STATUS_BYTES // 2)


def test_when_from_environ_expect_socket_and_watchdog_period_read(manager):
    env = {"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "2000000",
           "WATCHDOG_PID": str(os.getpid())}
    with Notifier.from_environ(env) as notifier:
        assert notifier.watchdog_period_s == 2.0
        assert notifier.watchdog_interval_s == 1.0
        assert notifier.ready()
        assert manager.receive()[0] == "READY=1"
    assert "NOTIFY_SOCKET" in env


def test_when_unset_environment_expect_variables_removed_for_children(manager):
    env = {"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "2000000",
           "WATCHDOG_PID": str(os.getpid()), "PATH": "/usr/bin"}
    with Notifier.from_environ(env, unset_environment=True) as notifier:
        assert notifier.enabled and notifier.watchdog_period_s == 2.0
    assert env == {"PATH": "/usr/bin"}


def test_when_watchdog_if_due_called_every_step_expect_pings_at_half_the_period(manager):
    with Notifier(manager.address, watchdog_period_s=2.0) as notifier:
        sent_at = [t / 100 for t in range(0, 500) if notifier.watchdog_if_due(t / 100)]
        assert sent_at == [0.0, 1.0, 2.0, 3.0, 4.0]
        assert manager.pending() == ["WATCHDOG=1"] * 5


@pytest.mark.parametrize(("env", "expected"), [
    ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "{pid}"}, 2.0),
    ({"WATCHDOG_USEC": "500000"}, 0.5),  # no WATCHDOG_PID: accepted, as sd_watchdog_enabled
    ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "{other}"}, None),  # inherited from a parent
    ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "x"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "2s"}, None),
    ({"WATCHDOG_USEC": ""}, None),
    ({}, None),
])
def test_watchdog_period_parsing(env, expected):
    pid = os.getpid()
    env = {k: v.format(pid=pid, other=pid + 1) for k, v in env.items()}
    assert watchdog_period_s(env) == expected


def test_when_watchdog_pid_is_another_process_expect_no_watchdog_pings(manager):
    env = {"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "1000000",
           "WATCHDOG_PID": str(os.getpid() + 1)}
    with Notifier.from_environ(env) as notifier:
        assert notifier.watchdog_period_s is None
        assert not notifier.watchdog_if_due(100.0)
        assert notifier.ready()  # notifications still go to the manager
    assert manager.pending() == ["READY=1"]


def test_when_notify_socket_unset_expect_every_call_a_silent_no_op():
    with Notifier.from_environ({}) as notifier:
        assert not notifier.enabled
        assert notifier.watchdog_period_s is None
        results = [notifier.ready("x"), notifier.status("x"), notifier.watchdog(),
                   notifier.watchdog_if_due(), notifier.stopping(), notifier.reloading(),
                   notifier.extend_timeout(1)]
        assert results == [False] * len(results)
        assert (notifier.sent, notifier.failures) == (0, 0)


def test_when_address_form_is_unsupported_expect_disabled_and_the_reason_kept():
    assert notify_address("vsock:2:1234") is None
    assert notify_address("@") is None
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@abc") == b"\0abc"
    with Notifier("vsock:2:1234") as notifier:
        assert not notifier.enabled and not notifier.ready()
        assert notifier.failures == 1 and "unsupported" in (notifier.last_error or "")


def test_when_nobody_listens_expect_failures_counted_never_raised(tmp_path):
    with Notifier(str(tmp_path / "gone")) as notifier:
        assert not notifier.watchdog()
        assert not notifier.ready()
        assert notifier.failures == 2 and notifier.sent == 0
        assert "notify send failed" in (notifier.last_error or "")


def test_when_manager_stops_reading_expect_watchdog_never_blocks(manager):
    # systemd busy: its queue fills. The control thread's ping must fail fast, not wait.
    with Notifier(manager.address) as notifier:
        start = time.monotonic()
        for _ in range(5000):
            notifier.watchdog()
        elapsed = time.monotonic() - start
        assert notifier.failures > 0
        assert notifier.sent + notifier.failures == 5000
        assert "busy" in (notifier.last_error or "")
        # budget: 5000 non-blocking attempts in well under a second on any machine we run on
        assert elapsed < 2.0
        # once the manager drains its queue, notifications flow again
        manager.pending()
        assert notifier.ready()
        assert manager.receive()[0] == "READY=1"


def test_when_closed_expect_idempotent_and_later_sends_refused(manager):
    notifier = Notifier(manager.address)
    assert notifier.ready()
    notifier.close()
    notifier.close()
    assert not notifier.enabled
    assert not notifier.watchdog()
    assert notifier.failures == 0


def test_when_not_closed_expect_resource_warning(manager):
    notifier = Notifier(manager.address)
    notifier.ready()
    with pytest.warns(ResourceWarning):
        notifier.__del__()


@pytest.mark.parametrize("usec", [0, -1, 1.5, True, "100"])
def test_when_extend_timeout_given_a_bad_value_expect_value_error(usec, manager):
    with Notifier(manager.address) as notifier, pytest.raises(ValueError):
        notifier.extend_timeout(usec)
