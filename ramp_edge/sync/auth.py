"""ZAP authentication for the sync server: CURVE alone admits any client that knows the
server's public key, so a ZAP handler checks each client key against the allow-list and hands
the robot id to the server as the message property ``User-Id``."""

from __future__ import annotations

import logging

import zmq
from zmq.auth.thread import ThreadAuthenticator

from ramp_edge.sync.keys import AllowList

log = logging.getLogger(__name__)


class _Provider:
    def __init__(self, allow: AllowList) -> None:
        self.allow = allow

    def callback(self, domain: str, key: bytes) -> bool:
        robot = self.allow.robot_for(key)
        if robot is None:
            log.warning("refused a client key not on the allow-list %s: %s",
                        self.allow.directory, key.decode("ascii", "replace"))
        return robot is not None


class AllowListAuthenticator(ThreadAuthenticator):
    """A running ZAP handler (start it before the server socket binds): admits CURVE clients
    whose key is in ``allow`` and sets their ``User-Id`` to the robot id."""

    def __init__(self, context: zmq.Context, allow: AllowList) -> None:
        super().__init__(context)
        self.allow = allow
        self.start()
        self.configure_curve_callback("*", credentials_provider=_Provider(allow))

    def curve_user_id(self, client_public_key: bytes) -> str:
        key = zmq.utils.z85.encode(client_public_key)
        return self.allow.robot_for(key) or ""
