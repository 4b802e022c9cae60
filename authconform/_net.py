"""Small socket helpers shared by the server-backed backends."""

from __future__ import annotations

import socket

__all__ = ["free_loopback_port"]


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago.

    Used to build "store down" settings (connection refused). The port is released
    before returning, so it is free only until someone else binds it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
