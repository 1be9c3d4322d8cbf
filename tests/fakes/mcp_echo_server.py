"""A tiny MCP server of our own, for tests, built with the installed SDK's ``MCPServer``.

Tools: ``echo(text)``, ``add(a, b)``, ``fail()`` (raises), ``sleep(seconds)`` (for timeouts), ``show_env(name)``
(what the server process sees in its environment, to check that no secrets leak into it), ``pid()``, ``crash()``
(exits during the call) and ``exit_soon()`` (exits just after answering).

Usage::

    python tests/fakes/mcp_echo_server.py                 # stdio
    python tests/fakes/mcp_echo_server.py --http          # streamable HTTP on 127.0.0.1, a free port

With ``--http`` the server binds the socket itself and prints ``PORT <n>`` on stdout once it listens, so a test
can start it as a subprocess without racing for a port.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading

import anyio
from mcp.server.mcpserver import MCPServer

# CRITICAL: the SDK logs a traceback (with Rich) for every failing call, which only clutters test output.
server = MCPServer("echo", version="1.0", log_level="CRITICAL")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def fail() -> str:
    """Always fail."""
    raise RuntimeError("this tool always fails")


@server.tool()
async def sleep(seconds: float) -> str:
    """Sleep, then say how long."""
    await anyio.sleep(seconds)
    return f"slept {seconds}"


@server.tool()
def pid() -> int:
    """The server's process id (to tell whether two calls reached the same server process)."""
    return os.getpid()


@server.tool()
def crash() -> str:
    """Exit the server process in the middle of the call."""
    os._exit(3)


@server.tool()
def exit_soon() -> str:
    """Answer, then exit the server process a moment later (as if it crashed while idle)."""
    threading.Timer(0.2, os._exit, [0]).start()
    return "bye"


@server.tool()
def show_env(name: str) -> str:
    """The value of an environment variable in the server process, or '<unset>'."""
    return os.environ.get(name, "<unset>")


def _serve_http() -> None:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    app = server.streamable_http_app()
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    http = uvicorn.Server(config)

    async def main() -> None:
        async def announce() -> None:
            while not http.started:
                await anyio.sleep(0.02)
            print(f"PORT {port}", flush=True)

        async with anyio.create_task_group() as tg:
            tg.start_soon(announce)
            await http.serve(sockets=[sock])

    anyio.run(main)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    if parser.parse_args().http:
        _serve_http()
    else:
        server.run("stdio")
    sys.exit(0)
