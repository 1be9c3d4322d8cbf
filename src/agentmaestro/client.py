"""A Python client for the AgentMaestro REST API: :class:`AsyncClient` and its blocking twin :class:`Client`.

Example::

    from agentmaestro.client import Client

    with Client("http://127.0.0.1:8000", api_key="am_...") as api:
        run = api.create_run("calculator", "What is (2 + 3) * 4?")
        for event in api.stream_events(run["run_id"]):  # Server-Sent Events, resumed if the connection drops
            print(event["seq"], event["type"])
        print(api.get_run(run["run_id"])["output"])

Responses are the API's JSON objects (see ``/docs``). Errors raise :mod:`agentmaestro.errors`
exceptions mapped from the API's ``{"error": {"code", "message"}}`` body: 404 NotFoundError, 409
ConflictError, 400/422 ValidationError, 401/403 AuthError, 429 RateLimitedError, 5xx and
unreachable servers ServerError.

:class:`Client` runs an :class:`AsyncClient` on an event loop in a background thread (one blocking
portal, as starlette's ``TestClient`` does), so the two share every method body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

import httpx

from agentmaestro._version import __version__
from agentmaestro.errors import (
    AuthError,
    ConflictError,
    MaestroError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    ValidationError,
)

__all__ = ["AsyncClient", "Client", "error_from_response"]

P = ParamSpec("P")
R = TypeVar("R")
Y = TypeVar("Y")

JSON = dict[str, Any]
Follow = Literal["terminal", "waiting", "always"]

STREAM_READ_TIMEOUT_S = 60.0
"""Longest silence tolerated on an event stream (the server sends a keep-alive every 15 s)."""
STREAM_RETRIES = 5
"""Reconnections in a row (resuming with ``Last-Event-ID``) before a broken stream raises ServerError."""


def error_from_response(response: httpx.Response) -> MaestroError:
    """The :mod:`agentmaestro.errors` exception for an error response."""
    status = response.status_code
    message = ""
    try:
        body = response.json()
        message = str(body["error"]["message"])
    except Exception:
        message = " ".join(response.text.split())[:300]
    message = message or response.reason_phrase or f"HTTP {status}"
    if status == 404:
        return NotFoundError(message)
    if status == 409:
        return ConflictError(message)
    if status in (400, 422):
        return ValidationError(message)
    if status in (401, 403):
        return AuthError(message)
    if status == 429:
        retry = response.headers.get("retry-after")
        try:
            return RateLimitedError(message, retry_after=float(retry) if retry else None)
        except ValueError:
            return RateLimitedError(message)
    if status >= 500:
        return ServerError(f"server error {status}: {message}")
    return MaestroError(f"HTTP {status}: {message}")


def _clean(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


class AsyncClient:
    """Async client of one AgentMaestro server.

    Args:
        base_url: The server, e.g. ``http://127.0.0.1:8000``.
        api_key: An API key (``am_...``); its workspace scopes every call.
        timeout: Seconds per request (event streams tolerate longer silences).
        transport: An httpx transport (e.g. ``httpx.ASGITransport(app)`` in tests).
        verify: TLS verification: True, False, a CA bundle path or an ``ssl.SSLContext``.
        cert: A client certificate (path, or (cert, key) paths) for mutual TLS.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: Any = True,
        cert: Any = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        headers = {"User-Agent": f"agentmaestro-client/{__version__}"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        kwargs: dict[str, Any] = {"verify": verify}
        if cert is not None:
            kwargs["cert"] = cert
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport, **kwargs
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def request(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json_body: Any = None
    ) -> Any:
        """Call any route; the decoded JSON body (None for an empty one), or a mapped error."""
        try:
            response = await self._http.request(
                method, path, params=_clean(params or {}), json=json_body if json_body is not None else None
            )
        except httpx.TransportError as exc:
            raise ServerError(f"cannot reach {self.base_url}: {exc or type(exc).__name__}") from None
        if response.is_error:
            raise error_from_response(response)
        if not response.content:
            return None
        if not response.headers.get("content-type", "").startswith("application/json"):
            return response.text
        return response.json()

    async def _object(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json_body: Any = None
    ) -> JSON:
        """:meth:`request` for a route that answers with one JSON object."""
        out: JSON = await self.request(method, path, params=params, json_body=json_body)
        return out

    async def _objects(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json_body: Any = None
    ) -> list[JSON]:
        """:meth:`request` for a route that answers with a JSON list of objects."""
        out: list[JSON] = await self.request(method, path, params=params, json_body=json_body)
        return out

    # --------------------------------------------------------------------------------- ops

    async def health(self) -> JSON:
        """``GET /healthz``: the server is up."""
        return await self._object("GET", "/healthz")

    async def ready(self) -> JSON:
        """``GET /readyz``: the database answers and its schema is current (ServerError if not)."""
        return await self._object("GET", "/readyz")

    async def metrics(self) -> str:
        """``GET /metrics``: the Prometheus exposition text."""
        return str(await self.request("GET", "/metrics"))

    # -------------------------------------------------------------------------------- runs

    async def create_run(self, agent: str, input: str, *, policy: dict[str, Any] | None = None) -> JSON:
        """Start a run of one of the server's agents; policy limits override the agent's."""
        body: JSON = {"agent": agent, "input": input}
        if policy:
            body["policy"] = policy
        return await self._object("POST", "/v1/runs", json_body=body)

    async def list_runs(
        self,
        *,
        status: Sequence[str] | None = None,
        agent: str | None = None,
        parent_run_id: str | None = None,
        top_level: bool = False,
        kind: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> JSON:
        """A page of runs, newest first: ``{"runs": [...], "next_cursor": ...}``.

        ``top_level`` keeps runs without a parent; ``kind`` is ``agent``, ``workflow``, ``objective`` or
        ``escalation``. Each run has its ``kind`` and ``children`` (``{"total", "finished"}`` or None).
        """
        params = {
            "status": list(status) if status else None,
            "agent": agent,
            "parent_run_id": parent_run_id,
            "top_level": "true" if top_level else None,
            "kind": kind,
            "cursor": cursor,
            "limit": limit,
        }
        return await self._object("GET", "/v1/runs", params=params)

    async def get_run(self, run_id: str) -> JSON:
        """A run's snapshot with its steps (``steps_detail``)."""
        return await self._object("GET", f"/v1/runs/{run_id}")

    async def cancel_run(self, run_id: str, *, reason: str | None = None) -> JSON:
        """Cancel a run (at once if not running; at its next step if running)."""
        body = {"reason": reason} if reason is not None else None
        return await self._object("POST", f"/v1/runs/{run_id}/cancel", json_body=body)

    async def resume_run(self, run_id: str, *, policy: dict[str, Any] | None = None) -> JSON:
        """Resume a FAILED or CANCELLED run from its last completed step (optionally with new limits)."""
        body = {"policy": policy} if policy else None
        return await self._object("POST", f"/v1/runs/{run_id}/resume", json_body=body)

    async def restart_run(self, run_id: str) -> JSON:
        """A new run of the same agent on the same input and limits."""
        return await self._object("POST", f"/v1/runs/{run_id}/restart")

    async def fork_run(self, run_id: str, at_seq: int, *, policy: dict[str, Any] | None = None) -> JSON:
        """A new run whose history is this run's events up to ``at_seq``."""
        body: JSON = {"at_seq": at_seq}
        if policy:
            body["policy"] = policy
        return await self._object("POST", f"/v1/runs/{run_id}/fork", json_body=body)

    async def events(self, run_id: str, *, after: int = 0, limit: int = 200) -> JSON:
        """A page of a run's events: ``{"events": [...], "next_after": seq}``."""
        return await self._object("GET", f"/v1/runs/{run_id}/events", params={"after": after, "limit": limit})

    async def all_events(self, run_id: str, *, after: int = 0) -> list[JSON]:
        """Every event of a run after ``after`` (paging through)."""
        out: list[JSON] = []
        while True:
            page = await self.events(run_id, after=after, limit=1000)
            out += page["events"]
            if not page["events"]:
                return out
            after = page["next_after"]

    async def stream_events(self, run_id: str, *, after: int = 0, follow: Follow = "terminal") -> AsyncGenerator[JSON]:
        """A run's events as they happen (Server-Sent Events), ending as ``follow`` says.

        ``follow``: ``terminal`` ends when the run finishes; ``waiting`` also when it waits for an
        approval or a person; ``always`` never ends. A dropped connection is resumed with
        ``Last-Event-ID``, so every event arrives exactly once, in order.
        """
        last = after
        failures = 0
        timeout = httpx.Timeout(self.timeout, read=max(self.timeout, STREAM_READ_TIMEOUT_S))
        while True:
            headers = {"Accept": "text/event-stream", "Last-Event-ID": str(last)}
            try:
                async with self._http.stream(
                    "GET",
                    f"/v1/runs/{run_id}/events",
                    params={"after": after, "follow": follow},
                    headers=headers,
                    timeout=timeout,
                ) as response:
                    if response.is_error:
                        await response.aread()
                        raise error_from_response(response)
                    async for kind, data in _sse(response):
                        if kind == "end":
                            return
                        if kind == "error":
                            raise ServerError(f"event stream failed: {data.get('message', data)}")
                        failures = 0
                        last = int(data["seq"])
                        yield data
            except httpx.TransportError as exc:
                failures += 1
                if failures > STREAM_RETRIES:
                    raise ServerError(f"event stream from {self.base_url} broke: {exc or type(exc).__name__}") from None
                await asyncio.sleep(min(2.0, 0.1 * 2**failures))
                continue
            # the server closed the stream without an end message (e.g. it is shutting down): resume
            failures += 1
            if failures > STREAM_RETRIES:
                raise ServerError(f"event stream from {self.base_url} keeps closing early")
            await asyncio.sleep(min(2.0, 0.1 * 2**failures))

    async def wait(self, run_id: str, *, until: Literal["terminal", "waiting"] = "terminal") -> JSON:
        """Block until the run finishes (or, with ``until="waiting"``, also waits for a person); the run."""
        async for _event in self.stream_events(run_id, after=0, follow=until):
            pass
        return await self.get_run(run_id)

    async def firehose(self, *, after: str | None = None) -> AsyncGenerator[tuple[JSON | None, str]]:
        """Every event of the workspace as it happens (WebSocket ``/v1/ws``), each with its resume cursor.

        The first item is ``(None, cursor)`` as soon as the subscription stands; then ``(event, cursor)``
        per event. Pass the last cursor as ``after`` to continue after a disconnection: every event
        arrives exactly once. Never ends by itself.
        """
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

        url = self.base_url.replace("http", "ws", 1) + "/v1/ws" + (f"?after={after}" if after else "")
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            async with connect(url, additional_headers=headers, open_timeout=self.timeout) as ws:
                try:
                    while True:
                        msg = json.loads(await ws.recv())
                        if msg.get("kind") == "hello":
                            yield None, msg["cursor"]
                        elif msg.get("kind") == "event":
                            yield msg["event"], msg["cursor"]
                finally:
                    await _close_draining(ws)
        except ConnectionClosed as exc:
            code, reason = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (1006, "connection lost")
            if code == 1008:
                raise AuthError(reason or "the server refused the API key") from None
            if code == 4400:
                raise ValidationError(reason or "invalid firehose cursor") from None
            raise ServerError(f"firehose closed by the server ({code}: {reason or 'no reason'})") from None
        except (OSError, InvalidStatus, InvalidURI) as exc:
            raise ServerError(f"cannot reach {self.base_url}: {exc}") from None

    # ----------------------------------------------------------------- approvals and people

    async def list_approvals(
        self,
        *,
        status: Sequence[str] | None = None,
        run_id: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> JSON:
        """A page of tool calls held for a decision (pending unless ``status`` says otherwise), newest first.

        Answers ``{"approvals": [...], "next_cursor": ...}``; pass ``next_cursor`` as ``cursor`` for the next page.
        """
        params = {"status": list(status) if status else None, "run_id": run_id, "cursor": cursor, "limit": limit}
        return await self._object("GET", "/v1/approvals", params=params)

    async def get_approval(self, approval_id: str) -> JSON:
        """One approval."""
        return await self._object("GET", f"/v1/approvals/{approval_id}")

    async def decide_approval(
        self,
        approval_id: str,
        decision: Literal["approve", "reject"],
        *,
        reason: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> JSON:
        """Approve (optionally with edited arguments, which the approval then binds to) or reject."""
        body: JSON = {"decision": decision, "reason": reason}
        if arguments is not None:
            body["arguments"] = arguments
        return await self._object("POST", f"/v1/approvals/{approval_id}", json_body=body)

    async def list_human_requests(
        self,
        *,
        status: Sequence[str] | None = None,
        run_id: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> JSON:
        """A page of runs waiting for a person (pending unless ``status`` says otherwise), newest first.

        Answers ``{"human_requests": [...], "next_cursor": ...}``; pass ``next_cursor`` as ``cursor`` for the next
        page.
        """
        params = {"status": list(status) if status else None, "run_id": run_id, "cursor": cursor, "limit": limit}
        return await self._object("GET", "/v1/human-requests", params=params)

    async def resolve_human_request(
        self,
        request_id: str,
        action: Literal["retry", "answer", "abandon"],
        *,
        instructions: str | None = None,
        answer: str | None = None,
    ) -> JSON:
        """Retry the step (with optional new instructions), answer in its place, or abandon the run."""
        body = _clean({"action": action, "instructions": instructions, "answer": answer})
        return await self._object("POST", f"/v1/human-requests/{request_id}", json_body=body)

    # ---------------------------------------------------------------------- agents and tools

    async def list_agents(self) -> list[JSON]:
        """Agents the server's workers can run."""
        return await self._objects("GET", "/v1/agents")

    async def get_agent(self, name: str) -> JSON:
        """One agent's definition."""
        return await self._object("GET", f"/v1/agents/{name}")

    async def list_workers(self) -> list[JSON]:
        """Worker processes heard of recently (operator key): owner, host, pid, concurrency, last_seen, ..."""
        return await self._objects("GET", "/v1/workers")

    async def list_tools(self) -> list[JSON]:
        """Every tool some agent can call, with its risk level and schema."""
        return await self._objects("GET", "/v1/tools")

    # ------------------------------------------------------------ workspace, keys, audit, usage

    async def get_workspace(self) -> JSON:
        """The key's workspace: gate rules, quotas, current use, and the calling key."""
        return await self._object("GET", "/v1/workspace")

    async def update_workspace_settings(
        self, *, gate: dict[str, Any] | None = None, quotas: dict[str, Any] | None = None
    ) -> JSON:
        """Replace the gate rules and/or merge quota changes (admin)."""
        body = _clean({"gate": gate, "quotas": quotas})
        return await self._object("PATCH", "/v1/workspace/settings", json_body=body)

    async def list_keys(self) -> list[JSON]:
        """The workspace's API keys, without secrets (admin)."""
        return await self._objects("GET", "/v1/keys")

    async def create_key(
        self, name: str, *, role: Literal["viewer", "operator", "admin"] = "operator", user: str | None = None
    ) -> JSON:
        """Create an API key (admin), optionally owned by the user with email ``user`` (stored as its SHA-256).

        ``key`` in the answer is the secret, shown only now.
        """
        body: JSON = {"name": name, "role": role, **({"user": user} if user else {})}
        return await self._object("POST", "/v1/keys", json_body=body)

    async def revoke_key(self, key_id: str) -> JSON:
        """Revoke a key of the workspace (admin)."""
        return await self._object("DELETE", f"/v1/keys/{key_id}")

    async def audit_log(self, *, after: int = 0, limit: int = 100, action: str | None = None) -> JSON:
        """A page of the workspace's audit log, oldest first (admin): ``{"entries": [...], "next_after": seq}``."""
        params = {"after": after, "limit": limit, "action": action}
        return await self._object("GET", "/v1/audit", params=params)

    async def verify_audit(self, *, checkpoint: JSON | None = None) -> JSON:
        """Walk the workspace's audit chain (admin): ``ok``, and where it breaks if it does.

        With a ``checkpoint`` (from :meth:`audit_checkpoint`), the chain must also reach its head.
        """
        if checkpoint is not None:
            return await self._object("POST", "/v1/audit/verify", json_body={"checkpoint": checkpoint})
        return await self._object("GET", "/v1/audit/verify")

    async def audit_checkpoint(self) -> JSON:
        """A checkpoint of the workspace's audit chain head, signed by the server's keyring (admin)."""
        return await self._object("GET", "/v1/audit/checkpoint")

    async def usage(
        self,
        *,
        since: str | float | None = None,
        until: str | float | None = None,
        group_by: Literal["agent", "model", "day", "user"] = "agent",
    ) -> JSON:
        """Tokens, calls and cost of the workspace, grouped by agent, model or day."""
        return await self._object("GET", "/v1/usage", params={"since": since, "until": until, "group_by": group_by})

    # ---------------------------------------------------------------------------- workflows

    async def list_workflows(self) -> list[JSON]:
        """Workflows the workspace can run: the server's folder ones and the workspace's stored ones (``source``)."""
        return await self._objects("GET", "/v1/workflows")

    async def get_workflow(self, name: str) -> JSON:
        """One workflow: definition, source and, when stored, its YAML and version."""
        return await self._object("GET", f"/v1/workflows/{name}")

    async def validate_workflow(self, yaml_text: str) -> JSON:
        """Check a workflow document: ``valid`` and every problem with its line."""
        return await self._object("POST", "/v1/workflows/validate", json_body={"yaml": yaml_text})

    async def save_workflow(self, yaml_text: str) -> JSON:
        """Store a workflow in the workspace (operator); a new version when the name exists. 422 if invalid."""
        return await self._object("POST", "/v1/workflows", json_body={"yaml": yaml_text})

    async def delete_workflow(self, name: str) -> JSON:
        """Delete a stored workflow of the workspace (operator)."""
        return await self._object("DELETE", f"/v1/workflows/{name}")

    async def run_workflow(self, name: str, input: str) -> JSON:
        """Start a run of a workflow (operator); follow it like any run."""
        path = f"/v1/workflows/{name}/runs"
        return await self._object("POST", path, json_body={"input": input})

    async def generate_workflow(
        self, goal: str, *, model: str | None = None, save: bool = False, max_repairs: int | None = None
    ) -> JSON:
        """Have a model write a workflow for ``goal`` (operator): YAML, validation report and attempts.

        Stored only with ``save=True``; still invalid after the repairs raises the 422 as a ValidationError.
        """
        body = _clean({"goal": goal, "model": model, "save": save, "max_repairs": max_repairs})
        return await self._object("POST", "/v1/workflows/generate", json_body=body)

    # ------------------------------------------------------------------ webhooks and notifications

    async def list_webhooks(self) -> list[JSON]:
        """The workspace's outgoing webhooks, without their secrets."""
        return await self._objects("GET", "/v1/webhooks")

    async def get_webhook(self, webhook_id: str) -> JSON:
        """One webhook."""
        return await self._object("GET", f"/v1/webhooks/{webhook_id}")

    async def create_webhook(
        self,
        name: str,
        *,
        events: Sequence[str],
        format: Literal["json", "slack", "telegram"] = "json",
        url: str | None = None,
        telegram: dict[str, Any] | None = None,
        enabled: bool = True,
        link_ttl_s: float | None = None,
    ) -> JSON:
        """Create a webhook (admin); a ``json`` webhook's ``signing_secret`` is in this answer only.

        ``events``: some of ``approval.requested``, ``human.requested``, ``run.failed``, ``run.completed``,
        ``budget.reached``. ``telegram``: ``{"bot_token": ..., "chat_id": ..., "api_base": ...}`` for format
        ``telegram``. A target that is not a public address is refused (400 ``target_refused``) unless the
        server allows it (docs/notifications.md).
        """
        body = _clean(
            {
                "name": name,
                "format": format,
                "url": url,
                "telegram": telegram,
                "events": list(events),
                "enabled": enabled,
                "link_ttl_s": link_ttl_s,
            }
        )
        return await self._object("POST", "/v1/webhooks", json_body=body)

    async def update_webhook(self, /, webhook_id: str, **changes: Any) -> JSON:
        """Change a webhook (admin): ``name``, ``url``, ``telegram``, ``events``, ``enabled``, ``link_ttl_s``."""
        return await self._object("PATCH", f"/v1/webhooks/{webhook_id}", json_body=changes)

    async def delete_webhook(self, webhook_id: str) -> JSON:
        """Delete a webhook and its delivery log (admin)."""
        return await self._object("DELETE", f"/v1/webhooks/{webhook_id}")

    async def test_webhook(self, webhook_id: str) -> JSON:
        """Queue a ``webhook.test`` delivery (admin); returns the delivery to follow."""
        return await self._object("POST", f"/v1/webhooks/{webhook_id}/test")

    async def list_webhook_deliveries(
        self, webhook_id: str, *, status: Sequence[str] | None = None, limit: int = 100
    ) -> list[JSON]:
        """A webhook's delivery log, newest first."""
        params = {"status": list(status) if status else None, "limit": limit}
        return await self._objects("GET", f"/v1/webhooks/{webhook_id}/deliveries", params=params)

    async def get_webhook_delivery(self, webhook_id: str, delivery_id: str) -> JSON:
        """One delivery: status, attempts, last response code or error."""
        return await self._object("GET", f"/v1/webhooks/{webhook_id}/deliveries/{delivery_id}")

    async def redeliver_webhook_delivery(self, webhook_id: str, delivery_id: str) -> JSON:
        """Queue a delivered or failed delivery again, with the same id (admin)."""
        path = f"/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"
        return await self._object("POST", path)

    # ---------------------------------------------------------------------------- knowledge

    async def list_knowledge_collections(self) -> list[JSON]:
        """The workspace's knowledge collections (docs/knowledge.md)."""
        return await self._objects("GET", "/v1/knowledge/collections")

    async def create_knowledge_collection(
        self, name: str, *, embedder: str | None = None, description: str = ""
    ) -> JSON:
        """Create a knowledge collection (operator); ``embedder`` defaults to the server's."""
        body = _clean({"name": name, "embedder": embedder, "description": description})
        return await self._object("POST", "/v1/knowledge/collections", json_body=body)

    async def get_knowledge_collection(self, name: str) -> JSON:
        """One knowledge collection, with document and chunk counts."""
        return await self._object("GET", f"/v1/knowledge/collections/{name}")

    async def delete_knowledge_collection(self, name: str) -> JSON:
        """Delete a knowledge collection with its documents and vectors (operator)."""
        return await self._object("DELETE", f"/v1/knowledge/collections/{name}")

    async def ingest_knowledge(
        self, collection: str, source: str, *, text: str | None = None, content: bytes | None = None
    ) -> JSON:
        """Ingest a text, or a text file's bytes (``content``), under ``source`` (operator).

        ``status`` in the answer is ``ingested``, ``updated`` or ``unchanged`` (same content: skipped).
        """
        import base64

        if (text is None) == (content is None):
            raise ValidationError("give exactly one of text and content")
        body: JSON = {"source": source}
        if text is not None:
            body["text"] = text
        else:
            body["content_base64"] = base64.b64encode(content or b"").decode("ascii")
        return await self._object("POST", f"/v1/knowledge/collections/{collection}/documents", json_body=body)

    async def list_knowledge_documents(self, collection: str) -> list[JSON]:
        """Documents of a knowledge collection."""
        return await self._objects("GET", f"/v1/knowledge/collections/{collection}/documents")

    async def delete_knowledge_document(self, collection: str, document_id: str) -> JSON:
        """Delete a document and its vectors (operator)."""
        return await self._object("DELETE", f"/v1/knowledge/collections/{collection}/documents/{document_id}")

    async def search_knowledge(self, collection: str, query: str, *, k: int = 5) -> JSON:
        """Passages closest to ``query``, best first, each with a ``citation`` like ``[1] guide.md, lines 3-9``."""
        body = {"query": query, "k": k}
        return await self._object("POST", f"/v1/knowledge/collections/{collection}/search", json_body=body)

    # credentials and OAuth (docs/credentials.md)

    async def list_credentials(self) -> list[JSON]:
        """The workspace's credentials: metadata and masked hints, never secrets (viewer)."""
        return await self._objects("GET", "/v1/credentials")

    async def get_credential(self, name: str) -> JSON:
        """One credential's metadata (viewer)."""
        return await self._object("GET", f"/v1/credentials/{name}")

    async def set_credential(self, /, name: str, kind: str, **fields: Any) -> JSON:
        """Create or replace a credential (admin); the answer holds a masked hint, never the secret.

        ``fields``: ``value`` for api_key/token, ``username`` and ``password`` for basic, ``access_token``
        (``refresh_token``, ``expires_at``) for oauth2; ``provider`` and ``scopes`` for any kind.
        """
        body: JSON = {"name": name, "kind": kind, **{k: v for k, v in fields.items() if v is not None}}
        return await self._object("POST", "/v1/credentials", json_body=body)

    async def delete_credential(self, name: str) -> JSON:
        """Delete a credential (admin)."""
        return await self._object("DELETE", f"/v1/credentials/{name}")

    async def rotate_credentials(self) -> JSON:
        """Re-encrypt the workspace's credentials with the server's newest key (admin): ``{"rotated", "key_id"}``."""
        return await self._object("POST", "/v1/credentials/rotate")

    async def oauth_start(self, provider: str, name: str, *, scopes: Sequence[str] | None = None) -> JSON:
        """Start an OAuth authorization (operator): open ``authorization_url`` to approve.

        The tokens become credential ``name``: the callback stores them encrypted in the workspace's credential store.
        """
        body: JSON = {"provider": provider, "name": name, **({"scopes": list(scopes)} if scopes else {})}
        return await self._object("POST", "/v1/integrations/oauth/start", json_body=body)

    # --------------------------------------------------------------------------- objectives

    async def create_objective(
        self,
        goal: str,
        *,
        planner: str | None = None,
        strategist: str | None = None,
        workers: Sequence[str] | None = None,
        max_concurrent_workers: int | None = None,
        max_attempts: int | None = None,
        repo: str | None = None,
        policy: dict[str, Any] | None = None,
    ) -> JSON:
        """Start an objective (operator): a planner turns ``goal`` into tasks run as child runs."""
        body = _clean(
            {
                "goal": goal,
                "planner": planner,
                "strategist": strategist,
                "workers": list(workers) if workers is not None else None,
                "max_concurrent_workers": max_concurrent_workers,
                "max_attempts": max_attempts,
                "repo": repo,
                "policy": policy,
            }
        )
        return await self._object("POST", "/v1/objectives", json_body=body)

    async def list_objectives(self, *, limit: int = 50) -> list[JSON]:
        """The workspace's objectives with their tasks, newest first."""
        return await self._objects("GET", "/v1/objectives", params={"limit": limit})

    async def get_objective(self, objective_id: str) -> JSON:
        """One objective and its task graph."""
        return await self._object("GET", f"/v1/objectives/{objective_id}")

    async def change_task_dependencies(
        self, objective_id: str, task_id: str, *, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> JSON:
        """Add or remove dependencies of a task not started yet (a cycle is refused with a 400)."""
        path = f"/v1/objectives/{objective_id}/tasks/{task_id}/dependencies"
        return await self._object("POST", path, json_body={"add": list(add), "remove": list(remove)})

    async def abandon_task(self, objective_id: str, task_id: str, *, reason: str | None = None) -> JSON:
        """Abandon a task; the planner re-plans the tasks that depended on it."""
        path = f"/v1/objectives/{objective_id}/tasks/{task_id}/abandon"
        return await self._object("POST", path, json_body=_clean({"reason": reason}))

    async def replan_objective(self, objective_id: str, *, reason: str | None = None) -> JSON:
        """Ask the planner to re-plan every task not started yet."""
        path = f"/v1/objectives/{objective_id}/replan"
        return await self._object("POST", path, json_body=_clean({"reason": reason}))

    async def restart_objective(self, objective_id: str) -> JSON:
        """Continue a FAILED or CANCELLED objective from its last checkpoint (its event log)."""
        return await self._object("POST", f"/v1/objectives/{objective_id}/restart")


async def _close_draining(ws: Any) -> None:
    """Close a WebSocket while dropping the messages still queued for it.

    With a full receive queue the client stops reading from the socket, so it would never see the
    server's answer to its close frame and would wait for the close timeout (10 s).
    """

    async def drain() -> None:
        with contextlib.suppress(Exception):
            async for _message in ws:
                pass

    task = asyncio.ensure_future(drain())
    try:
        await ws.close()
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


async def _sse(response: httpx.Response) -> AsyncGenerator[tuple[str, JSON]]:
    """Parse a ``text/event-stream`` body into (event name, decoded data) pairs."""
    event = "message"
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)


# ------------------------------------------------------------------------------ the sync twin


F = TypeVar("F", bound=Callable[..., Any])


def _named(method: F, fn: Callable[..., Any]) -> F:
    """Give the blocking twin the async method's name and docstring."""
    method.__name__ = fn.__name__
    method.__qualname__ = f"Client.{fn.__name__}"
    method.__doc__ = fn.__doc__
    return method


def _blocking(fn: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, R]]) -> Callable[Concatenate[Client, P], R]:
    """The blocking form of an AsyncClient method: run it on the client's portal."""

    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._portal.call(fn(self._async, *args, **kwargs))

    return _named(method, fn)


def _blocking_iter(
    fn: Callable[Concatenate[AsyncClient, P], AsyncGenerator[Y]],
) -> Callable[Concatenate[Client, P], Iterator[Y]]:
    """The blocking form of an AsyncClient async-generator method: a plain iterator."""

    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[Y]:
        agen = fn(self._async, *args, **kwargs)
        try:
            while True:
                try:
                    yield self._portal.call(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            with contextlib.suppress(Exception):
                self._portal.call(agen.aclose())

    return _named(method, fn)


class _Portal:
    """An event loop on a daemon thread, and a way to run coroutines on it and wait for the result.

    Like anyio's blocking portal (starlette's ``TestClient`` uses one), except that the thread is a
    daemon and is stopped when the owner is garbage collected, so a client that was never closed
    cannot keep the interpreter from exiting.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="agentmaestro-client", daemon=True)
        self.thread.start()

    def call(self, coro: Awaitable[R]) -> R:
        """Run ``coro`` on the loop and block until it finishes (Ctrl-C cancels it)."""
        wrapper = _await(coro)
        try:
            future = asyncio.run_coroutine_threadsafe(wrapper, self.loop)
        except RuntimeError:  # the loop is closed
            wrapper.close()
            if isinstance(coro, Coroutine):
                coro.close()
            raise MaestroError("the client is closed") from None
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    @staticmethod
    def stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        """Stop the loop and its thread (idempotent)."""
        if not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
            if thread is not threading.current_thread():
                thread.join(timeout=5)
            if not loop.is_running():
                loop.close()


async def _await(aw: Awaitable[R]) -> R:
    return await aw


class Client:
    """Blocking client: the same methods as :class:`AsyncClient`, run on a private event loop thread.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: Any = True,
        cert: Any = None,
    ) -> None:
        self._portal = _Portal()
        self._finalizer = weakref.finalize(self, _Portal.stop, self._portal.loop, self._portal.thread)
        try:
            self._async = self._portal.call(_make_async(base_url, api_key, timeout, transport, verify, cert))
        except BaseException:
            self._finalizer()
            raise
        self.base_url = self._async.base_url

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections and stop the loop thread."""
        if not self._finalizer.alive:
            return
        try:
            self._portal.call(self._async.aclose())
        finally:
            self._finalizer()

    request = _blocking(AsyncClient.request)
    health = _blocking(AsyncClient.health)
    ready = _blocking(AsyncClient.ready)
    metrics = _blocking(AsyncClient.metrics)
    create_run = _blocking(AsyncClient.create_run)
    list_runs = _blocking(AsyncClient.list_runs)
    get_run = _blocking(AsyncClient.get_run)
    cancel_run = _blocking(AsyncClient.cancel_run)
    resume_run = _blocking(AsyncClient.resume_run)
    restart_run = _blocking(AsyncClient.restart_run)
    fork_run = _blocking(AsyncClient.fork_run)
    events = _blocking(AsyncClient.events)
    all_events = _blocking(AsyncClient.all_events)
    stream_events = _blocking_iter(AsyncClient.stream_events)
    wait = _blocking(AsyncClient.wait)
    firehose = _blocking_iter(AsyncClient.firehose)
    list_approvals = _blocking(AsyncClient.list_approvals)
    get_approval = _blocking(AsyncClient.get_approval)
    decide_approval = _blocking(AsyncClient.decide_approval)
    list_human_requests = _blocking(AsyncClient.list_human_requests)
    resolve_human_request = _blocking(AsyncClient.resolve_human_request)
    list_agents = _blocking(AsyncClient.list_agents)
    get_agent = _blocking(AsyncClient.get_agent)
    list_tools = _blocking(AsyncClient.list_tools)
    list_workers = _blocking(AsyncClient.list_workers)
    get_workspace = _blocking(AsyncClient.get_workspace)
    update_workspace_settings = _blocking(AsyncClient.update_workspace_settings)
    list_keys = _blocking(AsyncClient.list_keys)
    create_key = _blocking(AsyncClient.create_key)
    revoke_key = _blocking(AsyncClient.revoke_key)
    audit_log = _blocking(AsyncClient.audit_log)
    verify_audit = _blocking(AsyncClient.verify_audit)
    audit_checkpoint = _blocking(AsyncClient.audit_checkpoint)
    list_credentials = _blocking(AsyncClient.list_credentials)
    get_credential = _blocking(AsyncClient.get_credential)
    set_credential = _blocking(AsyncClient.set_credential)
    delete_credential = _blocking(AsyncClient.delete_credential)
    rotate_credentials = _blocking(AsyncClient.rotate_credentials)
    oauth_start = _blocking(AsyncClient.oauth_start)
    usage = _blocking(AsyncClient.usage)
    list_workflows = _blocking(AsyncClient.list_workflows)
    get_workflow = _blocking(AsyncClient.get_workflow)
    validate_workflow = _blocking(AsyncClient.validate_workflow)
    save_workflow = _blocking(AsyncClient.save_workflow)
    delete_workflow = _blocking(AsyncClient.delete_workflow)
    run_workflow = _blocking(AsyncClient.run_workflow)
    generate_workflow = _blocking(AsyncClient.generate_workflow)
    list_webhooks = _blocking(AsyncClient.list_webhooks)
    get_webhook = _blocking(AsyncClient.get_webhook)
    create_webhook = _blocking(AsyncClient.create_webhook)
    update_webhook = _blocking(AsyncClient.update_webhook)
    delete_webhook = _blocking(AsyncClient.delete_webhook)
    test_webhook = _blocking(AsyncClient.test_webhook)
    list_webhook_deliveries = _blocking(AsyncClient.list_webhook_deliveries)
    get_webhook_delivery = _blocking(AsyncClient.get_webhook_delivery)
    redeliver_webhook_delivery = _blocking(AsyncClient.redeliver_webhook_delivery)
    list_knowledge_collections = _blocking(AsyncClient.list_knowledge_collections)
    create_knowledge_collection = _blocking(AsyncClient.create_knowledge_collection)
    get_knowledge_collection = _blocking(AsyncClient.get_knowledge_collection)
    delete_knowledge_collection = _blocking(AsyncClient.delete_knowledge_collection)
    ingest_knowledge = _blocking(AsyncClient.ingest_knowledge)
    list_knowledge_documents = _blocking(AsyncClient.list_knowledge_documents)
    delete_knowledge_document = _blocking(AsyncClient.delete_knowledge_document)
    search_knowledge = _blocking(AsyncClient.search_knowledge)
    create_objective = _blocking(AsyncClient.create_objective)
    list_objectives = _blocking(AsyncClient.list_objectives)
    get_objective = _blocking(AsyncClient.get_objective)
    change_task_dependencies = _blocking(AsyncClient.change_task_dependencies)
    abandon_task = _blocking(AsyncClient.abandon_task)
    replan_objective = _blocking(AsyncClient.replan_objective)
    restart_objective = _blocking(AsyncClient.restart_objective)


async def _make_async(
    base_url: str,
    api_key: str | None,
    timeout: float,
    transport: httpx.AsyncBaseTransport | None,
    verify: Any,
    cert: Any,
) -> AsyncClient:
    return AsyncClient(base_url, api_key, timeout=timeout, transport=transport, verify=verify, cert=cert)
