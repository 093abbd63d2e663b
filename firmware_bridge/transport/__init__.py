"""Transports chosen by URL from a registry that is data; backends are imported lazily.

>>> with open_transport("sim://") as link: ...
"""

from __future__ import annotations

import importlib

from firmware_bridge.errors import TransportUrlError
from firmware_bridge.transport.base import Transport
from firmware_bridge.transport.url import TransportUrl

# scheme -> "module:class" of the host-side backend
BACKENDS: dict[str, str] = {
    "serial": "firmware_bridge.transport.serial_port:SerialTransport",
    "zmq+tcp": "firmware_bridge.transport.zmq_link:ZmqTransport",
    "zmq+ipc": "firmware_bridge.transport.zmq_link:ZmqTransport",
    "sim": "firmware_bridge.transport.sim:SimTransport",
}
FAULTY_PREFIX = "faulty+"


def _load(spec: str) -> type[Transport]:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def open_transport(url: str) -> Transport:
    """Open the host side of the transport ``url`` names.

    Raises TransportUrlError for an unknown scheme, LinkError if the device cannot be reached.
    """
    if url.startswith(FAULTY_PREFIX):
        from firmware_bridge.transport.faulty import FaultyTransport, split_fault_params

        inner_url, faults = split_fault_params(url[len(FAULTY_PREFIX):])
        inner = open_transport(inner_url)
        try:
            return FaultyTransport(url, inner, faults)
        except BaseException:
            inner.close()
            raise
    scheme = TransportUrl.parse(url).scheme
    spec = BACKENDS.get(scheme)
    if spec is None:
        known = ", ".join(sorted(BACKENDS))
        raise TransportUrlError(
            f"unknown transport {scheme!r} in {url!r} (known: {known}, faulty+<url>)"
        )
    return _load(spec)(url)


__all__ = ["BACKENDS", "Transport", "open_transport"]
