"""The control socket over a real Unix socket on disk."""

from __future__ import annotations

import socket

import pytest

from ramp_edge.control_socket import (
    ControlSocketError,
    ControlSocketServer,
    send_command,
    socket_path,
)


@pytest.fixture
def server(tmp_path):
    calls = []

    def estop(req):
        calls.append(req)
        return {"state": "estop"}

    with ControlSocketServer(socket_path(tmp_path), {"estop": estop,
                                                     "status": lambda r: {"rate": 100}}) as srv:
        srv.calls = calls
        yield srv


def test_when_estop_sent_expect_handler_called_and_reply(server):
    reply = send_command(server.path, {"cmd": "estop", "reason": "test"})
    assert reply == {"ok": True, "state": "estop"}
    assert server.calls == [{"cmd": "estop", "reason": "test"}]


@pytest.mark.parametrize("raw", [b"not json\n", b"[1,2]\n", b'{"cmd": "dance"}\n', b'{"x": 1}\n'])
def test_when_request_is_malformed_expect_error_reply_and_server_alive(server, raw):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(server.path))
        s.sendall(raw)
        reply = s.recv(4096)
    assert b'"ok": false' in reply
    assert send_command(server.path, {"cmd": "status"}) == {"ok": True, "rate": 100}


def test_when_no_controller_runs_expect_clear_error(tmp_path):
    with pytest.raises(ControlSocketError, match="no controller is running"):
        send_command(socket_path(tmp_path), {"cmd": "status"})


def test_when_a_controller_already_serves_expect_second_refused(server):
    with pytest.raises(ControlSocketError, match="already running"):
        ControlSocketServer(server.path, {})


def test_when_socket_is_left_over_from_a_crash_expect_it_replaced(tmp_path):
    path = socket_path(tmp_path)
    path.parent.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # bound but nobody listens: what a killed controller leaves
    with ControlSocketServer(path, {"status": lambda r: {}}) as srv:
        assert send_command(srv.path, {"cmd": "status"}) == {"ok": True}
