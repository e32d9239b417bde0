"""Port picking of the local service manager, on real loopback sockets (so not a unit test)."""

from __future__ import annotations

import socket

from devstack.ports import free_port, port_in_use


def test_free_port_is_free_and_port_in_use_sees_a_listener() -> None:
    port = free_port()
    assert not port_in_use(port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert port_in_use(port)
