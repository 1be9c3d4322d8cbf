"""The ``/mcp`` endpoint of ``maestro serve``: the MCP tools over streamable HTTP, behind the API keys.

Every HTTP request is authenticated like a REST request (``Authorization: Bearer <key>``, rate limited,
failures audited) and answers ``{"error": {"code", "message"}}`` with 401/429 when refused. The tools
then act for that key: its workspace scopes every query and its role decides what it may change. The
endpoint is stateless (no MCP session is kept between requests), so any number of API servers can
serve it behind a load balancer. Its session manager runs inside the app's lifespan (:meth:`running`).
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from agentmaestro.agents import AgentRegistry
from agentmaestro.server.auth import authenticate
from agentmaestro.server.errors import APIError, error_body
from agentmaestro.store.base import Store
from agentmaestro.workflows.spec import WorkflowRegistry

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    from agentmaestro.actor import Actor

__all__ = ["MCP_PATH", "MCPEndpoint", "mount_mcp"]

MCP_PATH = "/mcp"

_request: ContextVar[tuple[Actor, Request] | None] = ContextVar("agentmaestro_mcp_request", default=None)


def _current() -> tuple[Actor, Request]:
    current = _request.get()
    if current is None:  # pragma: no cover - the endpoint always sets it
        raise RuntimeError("MCP tool called outside an authenticated request")
    return current


class MCPEndpoint:
    """An ASGI app: authenticate, then hand the request to the MCP SDK's streamable HTTP session manager.

    Without the ``mcp`` extra installed, the endpoint answers 501 and the app runs as usual.
    """

    def __init__(self, app: FastAPI) -> None:
        self._app = app
        self.server: MCPServer | None = None
        self._manager: StreamableHTTPSessionManager | None = None
        if importlib.util.find_spec("mcp") is not None:
            from agentmaestro.server.mcp.server import build_server
            from agentmaestro.service.plane.local import LocalPlane

            plane = LocalPlane(
                self._store, lambda: _current()[0], self._agents, self._workflows, where="the server", owns_store=False
            )
            self.server = build_server(plane)

    def _store(self) -> Store:
        store: Store = self._app.state.store
        return store

    def _agents(self) -> AgentRegistry:
        registry: AgentRegistry = self._app.state.agents
        return registry

    def _workflows(self) -> WorkflowRegistry:
        from agentmaestro.server.routes.workflows import _workflows  # the same discovery as /v1/workflows

        return _workflows(_current()[1])

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Serve MCP requests while inside this context (enter it in the app's lifespan)."""
        if self.server is None:
            yield
            return
        self.server.streamable_http_app(stateless_http=True)  # a fresh session manager for each start of the app
        manager = self.server.session_manager
        async with manager.run():
            self._manager = manager
            try:
                yield
            finally:
                self._manager = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one HTTP request of the MCP streamable HTTP transport, for its API key."""
        request = Request(scope, receive)
        try:
            principal = await authenticate(request)
        except APIError as exc:
            await JSONResponse(error_body(exc.code, exc.message), exc.status, headers=exc.headers)(scope, receive, send)
            return
        if self.server is None:
            body = error_body("not_implemented", "MCP needs the official SDK: pip install 'agentmaestro[mcp]'")
            await JSONResponse(body, 501)(scope, receive, send)
            return
        if self._manager is None:
            body = error_body("not_ready", "the MCP endpoint is not running (the server is starting or stopping)")
            await JSONResponse(body, 503)(scope, receive, send)
            return
        token = _request.set((principal.as_actor(), request))
        try:
            await self._manager.handle_request(scope, receive, send)
        finally:
            _request.reset(token)


def mount_mcp(app: FastAPI) -> MCPEndpoint:
    """Serve MCP at ``/mcp`` on ``app``; the endpoint is also ``app.state.mcp`` (run it with ``running()``)."""
    endpoint = MCPEndpoint(app)
    app.router.routes.append(Route(MCP_PATH, endpoint, methods=["GET", "POST", "DELETE"], include_in_schema=False))
    app.state.mcp = endpoint
    return endpoint
