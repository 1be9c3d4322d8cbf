"""A webhook receiver on 127.0.0.1 for tests: records every request, can fail on purpose.

``with WebhookReceiver() as rx:`` serves in a background thread; ``rx.url + "/hook"`` is an endpoint.
``rx.fail_next(2, status=503)`` answers the next two requests with 503. Telegram's Bot API is faked at
``rx.url`` as an ``api_base``: ``POST /bot<token>/sendMessage`` answers ``{"ok": true, ...}``.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float = field(default_factory=time.time)

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """A threaded HTTP server that records POSTs and answers 200 unless told to fail."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._cond:
                    status = receiver._failures.pop(0) if receiver._failures else 200
                    receiver.requests.append(
                        Received(
                            path=self.path,
                            headers={k.lower(): v for k, v in self.headers.items()},
                            body=body,
                            status=status,
                        )
                    )
                    receiver._cond.notify_all()
                answer = {"ok": status == 200, "result": {"message_id": len(receiver.requests)}}
                data = json.dumps(answer).encode()
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def fail_next(self, n: int, *, status: int = 503) -> None:
        """Answer the next ``n`` requests with ``status``."""
        with self._lock:
            self._failures.extend([status] * n)

    def wait_for(self, n: int, timeout: float = 20.0, path: str | None = None) -> list[Received]:
        """Block until at least ``n`` requests (to ``path`` if given) arrived; returns them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [r for r in self.requests if path is None or r.path == path]
                if len(got) >= n:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {n} requests, got {len(got)}: {[r.path for r in self.requests]}")
                self._cond.wait(left)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
