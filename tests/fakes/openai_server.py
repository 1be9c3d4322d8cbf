"""A real HTTP server on 127.0.0.1 that speaks just enough of the OpenAI chat-completions API for tests.

Usage::

    with FakeOpenAIServer() as server:
        server.reply_text("hello", usage=(12, 3))
        server.reply_tool_calls([("add", {"a": 2, "b": 3})])
        server.reply_error(429, "slow down")
        model = OpenAIModel("gpt-test", base_url=server.base_url, api_key="k", max_retries=0)
        ...
        assert server.requests[0]["messages"][0]["role"] == "system"

Replies are served in order, one per ``POST /v1/chat/completions``; when none is left the server answers
500 with a message saying so. ``server.requests`` holds every decoded JSON body, ``server.headers`` the
matching request headers. A request with ``"stream": true`` gets a successful reply as server-sent
``chat.completion.chunk`` events (text in ``chunk_chars`` pieces, tool-call arguments likewise, usage in a last
chunk when ``stream_options.include_usage`` is set, then ``[DONE]``).

``POST /v1/embeddings`` answers deterministic vectors (a hashed bag of words of ``embedding_dim`` buckets,
L2-normalised, so texts sharing words are close); ``embedding_requests`` records the bodies.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
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


@dataclass(frozen=True, kw_only=True)
class ScriptedReply:
    """One scripted answer of the fake server."""

    status: int = 200
    """HTTP status code."""
    body: Any = None
    """JSON body; a ``str`` is sent as is (``text/plain``)."""
    delay_s: float = 0.0
    """Seconds to wait before answering (to provoke client timeouts)."""
    headers: dict[str, str] = field(default_factory=dict)
    """Extra response headers."""


class FakeOpenAIServer:
    """An OpenAI-compatible chat-completions server in a background thread; a context manager."""

    def __init__(self, *, model: str = "fake-model", chunk_chars: int = 4, chunk_delay_s: float = 0.0) -> None:
        self.model = model
        self.chunk_chars = chunk_chars
        self.chunk_delay_s = chunk_delay_s  # pause between streamed text chunks (a model generating tokens)
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
        self.embedding_dim = 64
        """Length of the vectors ``POST /v1/embeddings`` answers (change it to provoke a dimension mismatch)."""
        self.embedding_requests: list[dict[str, Any]] = []

    # -- scripting -------------------------------------------------------------------------------

    def enqueue(self, reply: ScriptedReply) -> None:
        """Queue a raw reply."""
        with self._lock:
            self._replies.append(reply)

    def reply_text(
        self,
        content: str | None,
        *,
        usage: tuple[int, int] | None = (10, 5),
        finish_reason: str = "stop",
        delay_s: float = 0.0,
    ) -> None:
        """Queue a plain assistant answer; ``usage`` is (prompt_tokens, completion_tokens) or None to omit it."""
        self.enqueue(ScriptedReply(body=self._completion({"content": content}, usage, finish_reason), delay_s=delay_s))

    def reply_tool_calls(
        self,
        calls: list[tuple[str, dict[str, Any] | str]],
        *,
        content: str | None = None,
        usage: tuple[int, int] | None = (10, 5),
        finish_reason: str = "tool_calls",
        delay_s: float = 0.0,
    ) -> None:
        """Queue an answer calling tools; arguments given as ``str`` are sent verbatim (e.g. broken JSON)."""
        tool_calls = []
        for name, arguments in calls:
            self._counter += 1
            raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
            tool_calls.append(
                {"id": f"call_{self._counter}", "type": "function", "function": {"name": name, "arguments": raw}}
            )
        message = {"content": content, "tool_calls": tool_calls}
        self.enqueue(ScriptedReply(body=self._completion(message, usage, finish_reason), delay_s=delay_s))

    def reply_error(
        self, status: int, message: str = "scripted error", *, body: Any = None, delay_s: float = 0.0
    ) -> None:
        """Queue an error answer in OpenAI's error shape (or a custom ``body``)."""
        if body is None:
            body = {"error": {"message": message, "type": "fake_error", "param": None, "code": str(status)}}
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
        """The ``/v1`` URL to give an OpenAI client."""
        return f"http://127.0.0.1:{self.port}/v1"

    def _completion(self, message: dict[str, Any], usage: tuple[int, int] | None, finish_reason: str) -> dict[str, Any]:
        self._counter += 1
        body: dict[str, Any] = {
            "id": f"chatcmpl-{self._counter}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish_reason}],
        }
        if usage is not None:
            body["usage"] = {
                "prompt_tokens": usage[0],
                "completion_tokens": usage[1],
                "total_tokens": usage[0] + usage[1],
            }
        return body

    # -- serving ---------------------------------------------------------------------------------

    async def _chat_completions(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            self.requests.append(body)
            self.headers.append(dict(request.headers))
            reply = self._replies.popleft() if self._replies else None
            generation = self._generation
        if reply is None:
            reply = ScriptedReply(
                status=500, body={"error": {"message": "fake server: no scripted reply left", "type": "fake_error"}}
            )
        deadline = time.monotonic() + reply.delay_s
        while time.monotonic() < deadline and not self._stop.is_set() and generation == self._generation:
            await asyncio.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
        if isinstance(reply.body, str):
            return PlainTextResponse(reply.body, status_code=reply.status, headers=reply.headers)
        if body.get("stream") and reply.status == 200:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                self._chunks(reply.body, include_usage), media_type="text/event-stream", headers=reply.headers
            )
        return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)

    def embed(self, text: str) -> list[float]:
        """Deterministic embedding: hashed bag of lower-cased words, L2-normalised (shared words -> close vectors)."""
        vec = [0.0] * self.embedding_dim
        for word in re.findall(r"[a-z0-9]+", text.lower()):
            vec[int(hashlib.sha256(word.encode()).hexdigest(), 16) % self.embedding_dim] += 1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]

    async def _embeddings(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            self.embedding_requests.append(body)
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        data = [{"object": "embedding", "index": i, "embedding": self.embed(t)} for i, t in enumerate(texts)]
        tokens = sum(len(t.split()) for t in texts)
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", self.model),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _chunks(self, completion: dict[str, Any], include_usage: bool) -> AsyncIterator[str]:
        base = {k: completion[k] for k in ("id", "created", "model")}
        base["object"] = "chat.completion.chunk"

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            return f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"

        n = self.chunk_chars
        message = completion["choices"][0]["message"]
        yield chunk({"role": "assistant", "content": ""})
        text = message.get("content") or ""
        for i in range(0, len(text), n):
            yield chunk({"content": text[i : i + n]})
            await asyncio.sleep(self.chunk_delay_s)
        for index, call in enumerate(message.get("tool_calls") or []):
            head = {"index": index, "id": call["id"], "type": "function"}
            yield chunk({"tool_calls": [{**head, "function": {"name": call["function"]["name"], "arguments": ""}}]})
            raw = call["function"]["arguments"]
            for i in range(0, len(raw), n):
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": raw[i : i + n]}}]})
        yield chunk({}, completion["choices"][0]["finish_reason"])
        if include_usage and completion.get("usage"):
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': completion['usage']})}\n\n"
        yield "data: [DONE]\n\n"

    async def _models(self, request: Request) -> Response:
        """``GET /v1/models``: the one model this server serves (Ollama names it ``NAME:latest``)."""
        return JSONResponse({"object": "list", "data": [{"id": f"{self.model}:latest", "object": "model"}]})

    def start(self) -> FakeOpenAIServer:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread until :meth:`stop`."""
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat_completions, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )
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
            target=self._server.run, kwargs={"sockets": [sock]}, name="fake-openai", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("fake OpenAI server did not start")
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

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
