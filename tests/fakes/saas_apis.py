"""Fake Slack, Notion and a generic REST API on 127.0.0.1, recording every request (headers included).

Usage::

    with FakeSaaS(slack_token="xoxb-...", notion_token="secret_...", rest_token="...") as saas:
        tool = slack_post_message_tool(credential="slack", base_url=saas.slack_url)
        ...
        assert saas.requests[0].headers["authorization"] == "Bearer xoxb-..."

``/slack/api/chat.postMessage`` answers like the Slack Web API (``{"ok": false, "error": "invalid_auth"}`` for a
wrong token), ``/notion/v1/pages`` like the Notion API (401 for a wrong token or a missing ``Notion-Version``), and
``/rest/...`` echoes the request back (method, path, query, JSON body and, on purpose, the Authorization header, so
tests can check that a tool redacts it).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.ports import listening_socket


class ThreadedApp:
    """Serve an ASGI app with uvicorn on 127.0.0.1 in a background thread (a context manager)."""

    def __init__(self, app: Any) -> None:
        self._socket = listening_socket()  # held from here on: no other process can take the port
        self.port = int(self._socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[self._socket])), daemon=True
        )

    def __enter__(self) -> ThreadedApp:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=20)
        self._socket.close()


@dataclass(frozen=True)
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    body: Any


@dataclass
class FakeSaaS:
    """Slack, Notion and a REST API in one fake server."""

    slack_token: str = "xoxb-fake-slack-bot-token-0001"
    notion_token: str = "secret_fake-notion-integration-token"
    rest_token: str = "rest-fake-api-token-000000001"
    rest_header: str = "authorization"
    rest_scheme: str = "Bearer"
    requests: list[Recorded] = field(default_factory=list)
    _server: ThreadedApp | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return self._server.url

    @property
    def slack_url(self) -> str:
        """Base URL for ``slack_post_message`` (instead of https://slack.com/api)."""
        return f"{self.url}/slack/api"

    @property
    def notion_url(self) -> str:
        """Base URL for ``notion_create_page`` (instead of https://api.notion.com)."""
        return f"{self.url}/notion"

    @property
    def rest_url(self) -> str:
        """Base URL for ``rest_call``."""
        return f"{self.url}/rest"

    async def _record(self, request: Request) -> Recorded:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        rec = Recorded(
            method=request.method,
            path=request.url.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            query=dict(request.query_params),
            body=body,
        )
        self.requests.append(rec)
        return rec

    async def _slack(self, request: Request) -> Response:
        rec = await self._record(request)
        if rec.headers.get("authorization") != f"Bearer {self.slack_token}":
            return JSONResponse({"ok": False, "error": "invalid_auth"})
        if not isinstance(rec.body, dict) or not rec.body.get("channel") or not rec.body.get("text"):
            return JSONResponse({"ok": False, "error": "no_text"})
        return JSONResponse({"ok": True, "channel": rec.body["channel"], "ts": f"{time.time():.6f}"})

    async def _notion(self, request: Request) -> Response:
        rec = await self._record(request)
        if rec.headers.get("authorization") != f"Bearer {self.notion_token}":
            return JSONResponse({"object": "error", "status": 401, "message": "API token is invalid."}, 401)
        if not rec.headers.get("notion-version"):
            return JSONResponse({"object": "error", "status": 400, "message": "Notion-Version header missing"}, 400)
        page_id = f"page-{len(self.requests)}"
        return JSONResponse({"object": "page", "id": page_id, "url": f"https://www.notion.so/{page_id}"})

    async def _rest(self, request: Request) -> Response:
        rec = await self._record(request)
        expected = f"{self.rest_scheme} {self.rest_token}" if self.rest_scheme else self.rest_token
        got = rec.headers.get(self.rest_header.lower())
        if got != expected:
            return JSONResponse({"error": "unauthorized"}, 401)
        echo = {
            "method": rec.method,
            "path": rec.path,
            "query": rec.query,
            "json": rec.body,
            "echoed_credential": got,  # a careless API echoing the credential: the tool must redact it
        }
        return JSONResponse(echo, 201 if rec.method == "POST" else 200)

    def __enter__(self) -> FakeSaaS:
        methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        app = Starlette(
            routes=[
                Route("/slack/api/chat.postMessage", self._slack, methods=["POST"]),
                Route("/notion/v1/pages", self._notion, methods=["POST"]),
                Route("/rest/{path:path}", self._rest, methods=methods),
            ]
        )
        self._server = ThreadedApp(app).__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.__exit__()
