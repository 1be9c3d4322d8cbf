"""Ports on 127.0.0.1 for test servers, safe when pytest-xdist workers and other test runs start servers at once."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_PORT_RNG = random.Random()  # seeded from the OS: xdist workers and concurrent test runs pick different ports
_PORTS_FROM = 20_000


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def listening_socket() -> socket.socket:
    """A socket bound to a free port on 127.0.0.1, for an in-process server (``uvicorn.Server.serve(sockets=...)``).

    The port is never released between choosing and serving it, so nothing else can take it meanwhile.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    """A port nobody listens on now: for a server started in another process, or an address that refuses connections.

    Chosen at random below the kernel's ephemeral range, so no outgoing connection (of this process, of another
    pytest-xdist worker, of a database client) can be handed it before the server binds it, and checked to be free.
    """
    high = _ephemeral_low() - 1
    for _ in range(200):
        if high <= _PORTS_FROM:
            break
        port = _PORT_RNG.randint(_PORTS_FROM, high)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
