"""A real HTTP server on 127.0.0.1 that speaks just enough of Anthropic's Messages API for tests.

Usage::

    with FakeAnthropicServer() as server:
        server.reply_text("hello", usage=(12, 3))
        server.reply_tool_calls([("add", {"a": 2, "b": 3})], text="Let me add.")
        server.reply_error(429, "slow down")
        model = AnthropicModel("claude-sonnet-4-5", base_url=server.base_url, api_key="k", max_retries=0)
        ...
        assert server.requests[0]["system"] == "be brief"

Replies are served in order, one per ``POST /v1/messages``; when none is left the server answers 500 with a
message saying so. A request with ``"stream": true`` gets the same reply as server-sent events (message_start,
content blocks in ``chunk_chars`` pieces, message_delta with the stop reason and usage, message_stop); errors are
always plain JSON answers. ``server.requests`` holds every decoded JSON body, ``server.headers`` the matching
request headers.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass(frozen=True, kw_only=True)
class ScriptedReply:
    """One scripted answer of the fake server."""

    status: int = 200
    """HTTP status code."""
    body: Any = None
    """JSON body (a Message for 200); a ``str`` is sent as is (``text/plain``)."""
    delay_s: float = 0.0
    """Seconds to wait before answering (to provoke client timeouts)."""
    headers: dict[str, str] = field(default_factory=dict)
    """Extra response headers."""


class FakeAnthropicServer:
    """An Anthropic-compatible Messages API server in a background thread; a context manager."""

    def __init__(self, *, model: str = "claude-fake", chunk_chars: int = 4) -> None:
        self.model = model
        self.chunk_chars = chunk_chars
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._replies: deque[ScriptedReply] = deque()
        self._lock = threading.Lock()
        self._counter = 0
        self._stop = threading.Event()
        self._generation = 0
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- scripting -------------------------------------------------------------------------------

    def enqueue(self, reply: ScriptedReply) -> None:
        """Queue a raw reply."""
        with self._lock:
            self._replies.append(reply)

    def reply_text(
        self,
        text: str,
        *,
        usage: tuple[int, int] = (10, 5),
        stop_reason: str = "end_turn",
        delay_s: float = 0.0,
        texts: list[str] | None = None,
    ) -> None:
        """Queue a plain answer; ``texts`` sends several text blocks instead of one."""
        blocks = [{"type": "text", "text": t} for t in (texts if texts is not None else [text])]
        self.enqueue(ScriptedReply(body=self._message(blocks, usage, stop_reason), delay_s=delay_s))

    def reply_tool_calls(
        self,
        calls: list[tuple[str, dict[str, Any]]],
        *,
        text: str | None = None,
        usage: tuple[int, int] = (10, 5),
        stop_reason: str = "tool_use",
        delay_s: float = 0.0,
    ) -> None:
        """Queue an answer calling tools (after an optional text block)."""
        blocks: list[dict[str, Any]] = []
        if text is not None:
            blocks.append({"type": "text", "text": text})
        for name, arguments in calls:
            self._counter += 1
            blocks.append({"type": "tool_use", "id": f"toolu_{self._counter:04d}", "name": name, "input": arguments})
        self.enqueue(ScriptedReply(body=self._message(blocks, usage, stop_reason), delay_s=delay_s))

    def reply_error(
        self, status: int, message: str = "scripted error", *, body: Any = None, delay_s: float = 0.0
    ) -> None:
        """Queue an error answer in Anthropic's error shape (or a custom ``body``)."""
        if body is None:
            kind = _ERROR_TYPES.get(status, "api_error")
            body = {"type": "error", "error": {"type": kind, "message": message}}
        self.enqueue(ScriptedReply(status=status, body=body, delay_s=delay_s))

    def reset(self) -> None:
        """Forget queued replies and recorded requests; delayed replies in flight answer at once."""
        with self._lock:
            self._replies.clear()
            self.requests.clear()
            self.headers.clear()
            self._generation += 1

    @property
    def pending(self) -> int:
        """Replies not served yet."""
        with self._lock:
            return len(self._replies)

    @property
    def base_url(self) -> str:
        """The URL to give an Anthropic client (the SDK appends ``/v1/messages``)."""
        return f"http://127.0.0.1:{self.port}"

    def _message(self, blocks: list[dict[str, Any]], usage: tuple[int, int], stop_reason: str) -> dict[str, Any]:
        self._counter += 1
        return {
            "id": f"msg_{self._counter:04d}",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": blocks,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
        }

    # -- serving ---------------------------------------------------------------------------------

    async def _messages(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            self.requests.append(body)
            self.headers.append(dict(request.headers))
            reply = self._replies.popleft() if self._replies else None
            generation = self._generation
        if reply is None:
            error = {"type": "api_error", "message": "fake server: no scripted reply left"}
            reply = ScriptedReply(status=500, body={"type": "error", "error": error})
        deadline = time.monotonic() + reply.delay_s
        while time.monotonic() < deadline and not self._stop.is_set() and generation == self._generation:
            await asyncio.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
        if isinstance(reply.body, str):
            return PlainTextResponse(reply.body, status_code=reply.status, headers=reply.headers)
        if body.get("stream") and reply.status == 200:
            return StreamingResponse(self._events(reply.body), media_type="text/event-stream", headers=reply.headers)
        return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)

    async def _events(self, message: dict[str, Any]) -> AsyncIterator[str]:
        def sse(kind: str, data: dict[str, Any]) -> str:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"

        start = {**message, "content": [], "stop_reason": None}
        start["usage"] = {"input_tokens": message["usage"]["input_tokens"], "output_tokens": 1}
        yield sse("message_start", {"message": start})
        yield sse("ping", {})
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                yield sse("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}})
                text = block["text"]
                for i in range(0, len(text), self.chunk_chars):
                    piece = text[i : i + self.chunk_chars]
                    yield sse("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": piece}})
                    await asyncio.sleep(0)
            else:
                head = {**block, "input": {}}
                yield sse("content_block_start", {"index": index, "content_block": head})
                raw = json.dumps(block["input"])
                for i in range(0, len(raw), self.chunk_chars):
                    piece = raw[i : i + self.chunk_chars]
                    delta = {"type": "input_json_delta", "partial_json": piece}
                    yield sse("content_block_delta", {"index": index, "delta": delta})
            yield sse("content_block_stop", {"index": index})
        yield sse(
            "message_delta",
            {
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": message["usage"]["output_tokens"]},
            },
        )
        yield sse("message_stop", {})

    def start(self) -> FakeAnthropicServer:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread until :meth:`stop`."""
        app = Starlette(routes=[Route("/v1/messages", self._messages, methods=["POST"])])
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._socket = sock
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", ws="none", timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="fake-anthropic", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("fake Anthropic server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._stop.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> FakeAnthropicServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
