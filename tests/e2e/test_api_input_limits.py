"""Red-team findings on the API's inputs: deeply nested bodies, a broken embeddings endpoint, loopback providers.

Every route answers a bad body with 4xx JSON (never 500); a tenant cannot make the server call a provider on the
server's own machine or network unless the operator allows it. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import http.server
import re
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agentmaestro.agents import load_agents_dir
from agentmaestro.cli._common import builtin_agents_dir
from agentmaestro.errors import ModelAPIError
from agentmaestro.knowledge.base import knowledge_for
from agentmaestro.server.limits import MAX_JSON_DEPTH
from agentmaestro.store.base import Store
from tests.e2e.test_server import auth, make_key
from tests.fakes.server import LiveServer

BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")


class HTMLServer:
    """An HTTP server on 127.0.0.1 that answers every request with an HTML page, counting the requests."""

    def __init__(self) -> None:
        hits: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                hits.append(f"{self.command} {self.path}")
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                page = b"<html><body>Welcome to nginx!</body></html>"
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.hits = hits
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> HTMLServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def served(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    for name in ("MAESTRO_ALLOWED_PROVIDERS", "MAESTRO_API_LOOPBACK_PROVIDERS", "OPENAI_BASE_URL", "OLLAMA_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    keys = {role: make_key(db_url, "default", role) for role in ("operator", "admin")}
    with LiveServer(db_url, load_agents_dir(builtin_agents_dir()), rate_limit_per_min=0) as srv:
        yield srv, keys


@pytest.fixture
def fake_endpoint() -> Iterator[HTMLServer]:
    with HTMLServer() as fake:
        yield fake


def _deep_arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _deep_objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def _routes(srv: LiveServer) -> list[tuple[str, str]]:
    """Every documented operation that may carry a body, path parameters filled in."""
    out = []
    for path, operations in srv.app.openapi()["paths"].items():
        for method in operations:
            if method.upper() in BODY_METHODS:
                out.append((method.upper(), re.sub(r"\{[^}]+\}", "x", path)))
    return out


def test_deeply_nested_json_is_a_4xx_on_every_route(served: tuple[LiveServer, dict[str, str]]) -> None:
    srv, keys = served
    routes = _routes(srv)
    assert ("POST", "/v1/webhooks") in routes and ("POST", "/v1/runs") in routes and len(routes) > 20
    bodies = [_deep_arrays(1000), _deep_objects(MAX_JSON_DEPTH + 1)]
    failures = []
    with httpx.Client(base_url=srv.url, timeout=30, headers={"content-type": "application/json"}) as c:
        for method, path in [*routes, ("POST", "/mcp")]:
            for body in bodies:
                r = c.request(method, path, content=body, headers=auth(keys["admin"]))
                if not 400 <= r.status_code < 500 or "error" not in r.json():
                    failures.append(f"{method} {path} ({len(body)} bytes): {r.status_code} {r.text[:120]}")
        assert failures == []

        # The red team's request, exactly: a 422 saying why, on a route that decodes its body itself and on one
        # FastAPI decodes; without a key, the key is what the caller learns about first.
        for path in ("/v1/webhooks", "/v1/runs"):
            r = c.post(path, content=_deep_arrays(1000), headers=auth(keys["admin"]))
            assert r.status_code == 422, r.text
            assert r.json()["error"] == {
                "code": "invalid_request",
                "message": f"body: JSON nested more than {MAX_JSON_DEPTH} levels deep",
            }
            assert c.post(path, content=_deep_arrays(1000)).status_code == 401
            assert c.post(path, content=_deep_arrays(100_000), headers=auth(keys["admin"])).status_code == 422
        # Nesting within the limit is decoded and validated as usual.
        ok = c.post("/v1/webhooks/x", content=_deep_arrays(MAX_JSON_DEPTH), headers=auth(keys["admin"]))
        assert ok.status_code in (404, 405, 422) and "nested" not in ok.text


def test_a_workflow_document_nested_too_deeply_is_refused_at_once(served: tuple[LiveServer, dict[str, str]]) -> None:
    srv, keys = served
    deep_yaml = "name: deep\nnodes: " + "[" * 5000 + "]" * 5000
    problem = "nested more than 64 levels deep"
    with httpx.Client(base_url=srv.url, timeout=30, headers=auth(keys["operator"])) as c:
        checked = c.post("/v1/workflows/validate", json={"yaml": deep_yaml})
        assert checked.status_code == 200 and checked.json()["valid"] is False
        assert [p["message"] for p in checked.json()["problems"]] == [problem]
        saved = c.post("/v1/workflows", json={"yaml": deep_yaml})
        assert saved.status_code == 422 and problem in saved.json()["error"]["message"]


def test_an_embedder_answering_html_is_a_4xx_and_creates_nothing(
    served: tuple[LiveServer, dict[str, str]], fake_endpoint: HTMLServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, keys = served
    monkeypatch.setenv("OPENAI_BASE_URL", fake_endpoint.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("MAESTRO_API_LOOPBACK_PROVIDERS", "1")  # the operator's own (fake) endpoint, on 127.0.0.1
    with httpx.Client(base_url=srv.url, timeout=30, headers=auth(keys["operator"])) as c:
        r = c.post("/v1/knowledge/collections", json={"name": "notes", "embedder": "openai:emb-1"})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "model_error"
        assert "not an embeddings response" in r.json()["error"]["message"]
        assert fake_endpoint.hits  # the endpoint was asked
        assert c.get("/v1/knowledge/collections/notes").status_code == 404


def test_a_tenant_cannot_make_the_server_call_a_loopback_provider(
    served: tuple[LiveServer, dict[str, str]], fake_endpoint: HTMLServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, keys = served
    monkeypatch.setenv("OLLAMA_BASE_URL", fake_endpoint.base_url)  # an Ollama on this machine
    with httpx.Client(base_url=srv.url, timeout=30, headers=auth(keys["operator"])) as c:
        generate = {"goal": "summarise my secrets", "model": "ollama:x"}
        collection = {"name": "notes", "embedder": "ollama:x"}
        for path, body in (("/v1/workflows/generate", generate), ("/v1/knowledge/collections", collection)):
            r = c.post(path, json=body)
            assert r.status_code == 400, r.text
            error = r.json()["error"]
            assert error["code"] == "provider_not_allowed"
            assert "MAESTRO_API_LOOPBACK_PROVIDERS=1" in error["message"]
            assert fake_endpoint.base_url not in error["message"]  # the endpoint is not disclosed
        # The default provider's endpoint, moved onto the server's machine, is a loopback provider too.
        monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:9/v1")
        r = c.post("/v1/knowledge/collections", json={"name": "notes", "embedder": "openai:emb"})
        assert r.json()["error"]["code"] == "provider_not_allowed"
        assert fake_endpoint.hits == []

        # The operator's allow-list: only the named providers.
        monkeypatch.setenv("MAESTRO_ALLOWED_PROVIDERS", "anthropic, lexical")
        r = c.post("/v1/workflows/generate", json={"goal": "g", "model": "openrouter:meta/llama"})
        assert r.status_code == 400 and "allowed: anthropic, lexical" in r.json()["error"]["message"]
        assert c.post("/v1/knowledge/collections", json={"name": "lex", "embedder": "lexical"}).status_code == 201

        # The operator opens loopback providers: the request reaches the (broken) local endpoint.
        monkeypatch.setenv("MAESTRO_ALLOWED_PROVIDERS", "ollama")
        monkeypatch.setenv("MAESTRO_API_LOOPBACK_PROVIDERS", "1")
        r = c.post("/v1/knowledge/collections", json=collection)
        assert r.status_code == 400 and r.json()["error"]["code"] == "model_error"
        assert fake_endpoint.hits


def test_the_operator_itself_is_not_restricted(
    db_url: str, fake_endpoint: HTMLServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAESTRO_API_LOOPBACK_PROVIDERS", raising=False)
    monkeypatch.setenv("MAESTRO_ALLOWED_PROVIDERS", "anthropic")
    monkeypatch.setenv("OLLAMA_BASE_URL", fake_endpoint.base_url)

    async def create() -> None:
        store = Store.open(db_url)
        try:
            await store.workspaces.ensure("default")
            await knowledge_for(store).create_collection("default", "local-notes", embedder="ollama:nomic")
        finally:
            await store.close()

    with pytest.raises(ModelAPIError, match="not an embeddings response"):
        asyncio.run(create())  # the SDK went to the operator's Ollama (which answered garbage)
    assert fake_endpoint.hits
