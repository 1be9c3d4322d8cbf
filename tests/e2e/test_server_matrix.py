"""Two workspaces x every route of the app: no cross-workspace reads or writes.

Routes are enumerated from ``app.routes``, so a new route without an entry here fails the test.
For each direction (attacker, victim): every route is called with the attacker's admin key and the
victim's ids; routes naming a resource answer 404, lists and other answers hold no victim data, and
the victim's rows are byte-for-byte unchanged afterwards. Then the victim's own key on the same
routes gets past the scoping (no 404), so the 404s are not vacuous.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute
from sqlalchemy import create_engine, insert, text
from starlette.routing import Mount
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from agentmaestro.agents import load_agents_dir
from agentmaestro.cli._common import builtin_agents_dir
from agentmaestro.credentials.oauth import Provider
from agentmaestro.store.dialects import normalize_url
from agentmaestro.store.schema import human_requests
from tests.e2e.test_server import auth, make_key, wait_status
from tests.fakes.server import LiveServer

WORKSPACES = ("default", "other")
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/runs"): {"agent": "calculator", "input": "1+1"},
    ("POST", "/v1/runs/{run_id}/cancel"): {"reason": "matrix"},
    ("POST", "/v1/runs/{run_id}/resume"): {},
    ("POST", "/v1/runs/{run_id}/restart"): None,
    ("POST", "/v1/runs/{run_id}/fork"): {"at_seq": 2},
    ("POST", "/v1/approvals/{approval_id}"): {"decision": "approve"},
    ("POST", "/v1/human-requests/{request_id}"): {"action": "abandon"},
    ("POST", "/v1/webhooks"): {"name": "matrix", "url": "http://127.0.0.1:9/matrix", "events": ["budget.reached"]},
    ("PATCH", "/v1/webhooks/{webhook_id}"): {"name": "matrix renamed", "events": ["budget.reached"]},
    ("POST", "/v1/webhooks/{webhook_id}/test"): None,
    ("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): None,
    ("POST", "/v1/approvals/{approval_id}/link"): None,
    ("PATCH", "/v1/workspace/settings"): {"quotas": {"runs_per_hour": 1000}, "gate": {"deny_tools": ["add"]}},
    ("POST", "/v1/keys"): {"name": "matrix", "role": "viewer"},
    ("POST", "/v1/audit/verify"): None,  # the caller's own signed checkpoint, fetched in _call
    ("POST", "/v1/credentials"): {"name": "matrix", "kind": "token", "value": "matrix-token-value"},
    ("POST", "/v1/credentials/rotate"): None,
    ("POST", "/v1/integrations/oauth/start"): {"provider": "matrix", "name": "matrix"},
    ("DELETE", "/v1/keys/{key_id}"): None,
    ("POST", "/v1/workflows/validate"): {"yaml": "name: matrix"},
    ("POST", "/v1/objectives"): {
        "goal": "matrix",
        "planner": "wordsmith",
        "strategist": "calculator",
        "policy": {"max_steps": 0},  # ends at once (POLICY_VIOLATION): nothing keeps running
    },
    ("POST", "/v1/objectives/{objective_id}/tasks/{task_id}/dependencies"): {"add": ["t0"]},
    ("POST", "/v1/objectives/{objective_id}/tasks/{task_id}/abandon"): {"reason": "matrix"},
    ("POST", "/v1/objectives/{objective_id}/replan"): {},
    ("POST", "/v1/objectives/{objective_id}/restart"): None,
    ("POST", "/v1/workflows/{name}/runs"): {"input": "matrix"},
    ("DELETE", "/v1/workflows/{name}"): None,
    ("POST", "/v1/workflows"): {"yaml": "name: matrix-wf\nnodes:\n  - {id: a, agent: calculator}\n"},
    ("POST", "/v1/workflows/generate"): {"goal": "matrix", "save": True},
    ("POST", "/v1/chat/completions"): {"model": "calculator", "messages": [{"role": "user", "content": "1+1"}]},
    ("POST", "/v1/knowledge/collections"): {"name": "matrix-kb", "embedder": "lexical"},
    ("POST", "/v1/knowledge/collections/{collection}/documents"): {"source": "matrix.md", "text": "matrix probe"},
    ("POST", "/v1/knowledge/collections/{collection}/search"): {"query": "handbook secret"},
}
SHARED_CATALOG = {"/v1/agents/{name}", "/v1/models/{name}"}
"""Agents are the server's, not a workspace's: ``{name}`` names no workspace's row. Workflows may be stored per
workspace: each stores ``wf-<workspace>``, the ``name`` id, so ``/v1/workflows/{name}`` is scoped."""
PLANNER_SCRIPT = "turns:\n  - content: 'name: generated-wf\n\n      nodes: [{id: a, agent: calculator}]'\n"
"""A scripted planner for POST /v1/workflows/generate (one valid answer)."""
NON_TENANT_PATHS = {"/", "/ui/{path:path}", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc"}
NON_TENANT_PREFIXES = ("/docs/",)
TOKEN_ROUTES = {"/v1/approvals/{approval_id}/link"}
"""Approval links take a signed token instead of a key: the matrix signs one for the caller's workspace naming
the other workspace's approval (404), and for its own (past the scoping)."""
_KEY_WS: dict[str, str] = {}
_KEY_HOOK: dict[str, str] = {}
"""Admin key -> its workspace's webhook (a link is only good while the webhook that carried it is)."""
STATE_BOUND = {"/v1/integrations/oauth/callback"}
"""Authorized by a single-use OAuth state, not a key: without one it answers 4xx and touches nothing."""
AUTHENTICATED_NON_REST = {"/mcp"}
"""MCP (streamable HTTP): API keys and workspace scoping as for /v1; tests/e2e/test_mcp_server.py calls its tools
with another workspace's ids."""


@dataclass
class Tenant:
    """One workspace's keys and resources."""

    workspace: str
    admin: str
    operator: str
    ids: dict[str, str] = field(default_factory=dict)
    """Path parameter name -> one of this workspace's ids."""
    markers: set[str] = field(default_factory=set)
    """Strings that only this workspace's data contains."""


def _sql(url: str, statement: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = create_engine(normalize_url(url))
    try:
        with engine.begin() as conn:
            return [tuple(r) for r in conn.execute(text(statement), params)]
    finally:
        engine.dispose()


def snapshot(url: str, ws: str) -> dict[str, Any]:
    """Everything of a workspace that another one could try to change."""
    q = {
        "runs": "SELECT run_id, status, version, cancel_requested, cancel_reason FROM runs WHERE workspace_id = :w",
        "events": "SELECT run_id, count(*) FROM run_events WHERE workspace_id = :w GROUP BY run_id",
        "approvals": "SELECT approval_id, status, decided_by FROM approvals WHERE workspace_id = :w",
        "human": "SELECT request_id, status, resolved_by FROM human_requests WHERE workspace_id = :w",
        "keys": "SELECT key_id, name, role, revoked_at FROM api_keys WHERE workspace_id = :w",
        "settings": "SELECT settings FROM workspaces WHERE workspace_id = :w",
        "webhooks": "SELECT webhook_id, name, events, enabled, updated_at FROM webhooks WHERE workspace_id = :w",
        "deliveries": "SELECT delivery_id FROM webhook_deliveries WHERE workspace_id = :w AND event = 'webhook.test'",
        "credentials": "SELECT name, kind, secret, key_id, version FROM credentials WHERE workspace_id = :w",
        "audit": "SELECT seq, action, actor FROM audit_log WHERE workspace_id = :w AND action NOT LIKE 'auth.%'",
        "workflows": "SELECT name, version, yaml, deleted_at FROM stored_workflows WHERE workspace_id = :w",
        "knowledge": "SELECT name, embedder, dimension, updated_at FROM knowledge_collections WHERE workspace_id = :w",
        "knowledge_docs": "SELECT document_id, content_hash FROM knowledge_documents WHERE workspace_id = :w",
    }
    return {name: sorted(map(str, _sql(url, sql, w=ws))) for name, sql in q.items()}


def seed(url: str, srv: LiveServer, c: httpx.Client, ws: str) -> Tenant:
    t = Tenant(workspace=ws, admin=make_key(url, ws, "admin"), operator=make_key(url, ws, "operator"))
    throwaway = make_key(url, ws, "viewer")
    op = auth(t.operator)
    done = c.post("/v1/runs", json={"agent": "calculator", "input": f"{ws}: 2+3"}, headers=op).json()["run_id"]
    waiting = c.post("/v1/runs", json={"agent": "janitor", "input": f"{ws}: tidy"}, headers=op).json()["run_id"]
    wait_status(c, done, t.operator, {"COMPLETED"})
    wait_status(c, waiting, t.operator, {"WAITING_FOR_APPROVAL"})
    [approval] = c.get("/v1/approvals", headers=op).json()["approvals"]
    request_id = f"hum_{uuid.uuid4().hex[:12]}"
    engine = create_engine(normalize_url(url))
    with engine.begin() as conn:
        conn.execute(
            insert(human_requests).values(
                request_id=request_id,
                workspace_id=ws,
                run_id=done,
                kind="step_failed",
                question="retry?",
                detail={},
                options=["retry", "answer", "abandon"],
                status="pending",
                created_at=time.time(),
            )
        )
    engine.dispose()
    c.post(f"/v1/runs/{done}/cancel", headers=op)  # an audit entry (409: already finished; not audited)
    # an objective whose planner (wordsmith) never gives a valid plan: it ends FAILED, and stays so
    objective = c.post(
        "/v1/objectives", json={"goal": f"{ws}: plan", "planner": "wordsmith", "strategist": "calculator"}, headers=op
    ).json()["run_id"]
    wait_status(c, objective, t.operator, {"FAILED"})
    wf_yaml = f"name: wf-{ws}\ndescription: wf-of-{ws}\nnodes:\n  - {{id: a, agent: calculator, input: '1+1'}}\n"
    assert c.post("/v1/workflows", json={"yaml": wf_yaml}, headers=op).status_code == 200
    kb = {"name": f"kb-{ws}", "embedder": "lexical"}
    assert c.post("/v1/knowledge/collections", json=kb, headers=op).status_code == 201
    doc = {"source": "handbook.md", "text": f"kb-secret-{ws}: the handbook secret of {ws}"}
    # the first ingest of a process imports qdrant-client (seconds on a busy machine)
    ingested = c.post(f"/v1/knowledge/collections/kb-{ws}/documents", json=doc, headers=op, timeout=120)
    document_id = ingested.json()["document_id"]
    credential = f"cred-{ws}"  # a credential of this workspace (its name and value are markers)
    body = {"name": credential, "kind": "token", "value": f"secret-of-{ws}-0000"}
    assert c.post("/v1/credentials", json=body, headers=auth(t.admin)).status_code == 201
    key_ids = {k["key_id"] for k in c.get("/v1/keys", headers=auth(t.admin)).json()}
    t.ids = {
        "objective_id": objective,
        "task_id": "t1",
        "run_id": waiting,
        "approval_id": approval["approval_id"],
        "request_id": request_id,
        "key_id": throwaway.split("_")[1],
        "credential": credential,
        "name": f"wf-{ws}",
        "collection": f"kb-{ws}",
        "document_id": document_id,
    }
    t.markers = {done, waiting, approval["approval_id"], request_id, *key_ids, f'"workspace_id":"{ws}"', f"wf-of-{ws}"}
    t.markers |= {f"kb-{ws}", f"kb-secret-{ws}", document_id}
    t.markers |= {credential, f"secret-of-{ws}"}
    t.markers.add(objective)
    # a webhook (its target refuses connections: the delivery stays in the log) and a test delivery
    hook = c.post(
        "/v1/webhooks",
        json={"name": f"{ws} hook", "url": "http://127.0.0.1:9/hook", "events": ["budget.reached"]},
        headers=auth(t.admin),
    ).json()
    delivery = c.post(f"/v1/webhooks/{hook['webhook_id']}/test", headers=auth(t.admin)).json()
    t.ids.update(webhook_id=hook["webhook_id"], delivery_id=delivery["delivery_id"])
    t.markers |= {hook["webhook_id"], delivery["delivery_id"]}
    _KEY_WS[t.admin] = ws
    _KEY_HOOK[t.admin] = hook["webhook_id"]
    return t


@pytest.fixture
def tenants(
    db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[LiveServer, str, dict[str, Tenant]]]:
    (tmp_path / "planner.yaml").write_text(PLANNER_SCRIPT, encoding="utf-8")
    monkeypatch.setenv("MAESTRO_MODEL_PLANNER", f"scripted:{tmp_path / 'planner.yaml'}")
    monkeypatch.setenv("MAESTRO_QDRANT_URL", ":memory:")  # the knowledge index (docs/knowledge.md)
    monkeypatch.setenv("MAESTRO_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1")  # the seeded webhook posts to 127.0.0.1:9
    with (
        LiveServer(db_url, load_agents_dir(builtin_agents_dir()), rate_limit_per_min=0) as srv,
        httpx.Client(base_url=srv.url, timeout=10) as c,
    ):
        srv.app.state.oauth_providers = {  # for POST /v1/integrations/oauth/start (no request leaves the host)
            "matrix": Provider(
                name="matrix",
                client_id="matrix",
                authorize_url="https://auth.invalid/authorize",
                token_url="https://auth.invalid/token",
                redirect_url=f"{srv.url}/v1/integrations/oauth/callback",
            )
        }
        yield srv, db_url, {ws: seed(db_url, srv, c, ws) for ws in WORKSPACES}


def _flat(routes: list[Any]) -> Iterator[tuple[str, Any]]:
    """(path, route) for every route, looking inside included routers (FastAPI >= 0.16x wraps them)."""
    for route in routes:
        if hasattr(route, "effective_route_contexts"):
            for ctx in route.effective_route_contexts():
                yield ctx.path or getattr(ctx.original_route, "path", ""), ctx.original_route
        else:
            yield getattr(route, "path", ""), route


def _routes(srv: LiveServer) -> list[tuple[str, str, bool]]:
    """(method, path, is_websocket) for every /v1 route; asserts nothing else serves tenant data."""
    out = []
    for path, route in _flat(srv.app.routes):
        if isinstance(route, Mount) or not path.startswith("/v1"):
            known = NON_TENANT_PATHS | AUTHENTICATED_NON_REST
            assert path in known or path.startswith(NON_TENANT_PREFIXES), f"unclassified route {path}"
            continue
        if isinstance(route, APIWebSocketRoute):
            out.append(("WS", path, True))
        else:
            assert isinstance(route, APIRoute), route
            out.extend((m, path, False) for m in sorted(route.methods or ()) if m != "HEAD")
    return out


def _url(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)


def _call(c: httpx.Client, method: str, path: str, ids: dict[str, str], key: str, **kw: Any) -> httpx.Response:
    body = BODIES.get((method, path))
    if method in ("POST", "PATCH", "PUT") and (method, path) not in BODIES:
        raise AssertionError(f"no matrix body for {method} {path}: add one to BODIES")
    if (method, path) == ("POST", "/v1/audit/verify"):
        body = {"checkpoint": c.get("/v1/audit/checkpoint", headers=auth(key)).json()}
    if path in TOKEN_ROUTES:
        from agentmaestro.notify.signing import link_token

        token = link_token(ids["approval_id"], "approve", _KEY_WS[key], channel=_KEY_HOOK[key], ttl_s=600)
        kw["params"] = {"token": token}
    return c.request(method, _url(path, ids), json=body, headers={**auth(key), **kw.pop("headers", {})}, **kw)


def _workspace_ids(value: Any) -> set[str]:
    if isinstance(value, dict):
        found = {str(value["workspace_id"])} if "workspace_id" in value else set()
        return found.union(*(_workspace_ids(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_workspace_ids(v) for v in value))
    return set()


def _ws_messages(srv: LiveServer, path: str, key: str, seconds: float) -> tuple[list[dict[str, Any]], int | None]:
    url = srv.url.replace("http://", "ws://") + path
    messages: list[dict[str, Any]] = []
    code = None
    with connect(url, additional_headers=auth(key), open_timeout=10) as ws:
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                try:
                    messages.append(json.loads(ws.recv(timeout=max(0.05, deadline - time.monotonic()))))
                except TimeoutError:
                    break
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
    return messages, code


def test_no_cross_workspace_reads_or_writes(tenants: tuple[LiveServer, str, dict[str, Tenant]]) -> None:
    srv, url, by_ws = tenants
    routes = _routes(srv)
    assert len(routes) >= 25, routes
    for path in AUTHENTICATED_NON_REST:  # no key, no answer
        assert httpx.post(srv.url + path, json={}, timeout=10).json()["error"]["code"] == "unauthenticated"
    checked: set[tuple[str, str]] = set()
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        for attacker_ws, victim_ws in (("default", "other"), ("other", "default")):
            attacker, victim = by_ws[attacker_ws], by_ws[victim_ws]
            before = snapshot(url, victim_ws)
            for method, path, is_ws in routes:
                label = f"{attacker_ws}->{victim_ws} {method} {path}"
                names = re.findall(r"\{(\w+)\}", path)
                if is_ws:
                    # a victim's event stream ends at once; the firehose shows only the attacker's events
                    if names:
                        msgs, code = _ws_messages(srv, _url(path, victim.ids), attacker.admin, 3)
                        assert msgs == [] and code == 4404, (label, msgs, code)
                    else:
                        with httpx.Client(base_url=srv.url, timeout=10) as victim_client:
                            victim_client.post(
                                "/v1/runs", json={"agent": "wordsmith", "input": "a b c"}, headers=auth(victim.operator)
                            )
                        msgs, _ = _ws_messages(srv, path + "?after=", attacker.admin, 1.5)
                        assert msgs and msgs[0]["workspace_id"] == attacker_ws, (label, msgs[:1])
                        text_ = json.dumps(msgs)
                        assert not [m for m in victim.markers if m in text_], label
                    checked.add((method, path))
                    continue
                r = _call(c, method, path, victim.ids, attacker.admin)
                if names and path not in SHARED_CATALOG:
                    assert r.status_code == 404, (label, r.status_code, r.text)
                    assert r.json()["error"]["code"] == "not_found", label
                    if path == "/v1/runs/{run_id}/events":
                        sse = _call(
                            c, method, path, victim.ids, attacker.admin, headers={"Accept": "text/event-stream"}
                        )
                        assert sse.status_code == 404, (label, "SSE", sse.status_code)
                else:
                    limit = 500 if path in SHARED_CATALOG or path in STATE_BOUND else 300
                    assert r.status_code < limit, (label, r.status_code, r.text)
                    leaked = [m for m in victim.markers if m in r.text]
                    assert not leaked, (label, leaked)
                    if r.headers.get("content-type", "").startswith("application/json"):
                        assert _workspace_ids(r.json()) <= {attacker_ws}, label
                checked.add((method, path))
            after = snapshot(url, victim_ws)
            # the firehose probe above (a run and its run.start entry) is the victim's own write; everything else
            # must be unchanged
            after["runs"] = [r for r in after["runs"] if r in before["runs"] or "wordsmith" in r]
            after["audit"] = [a for a in after["audit"] if a in before["audit"] or "'run.start'" not in a]
            assert {k: v for k, v in after.items() if k not in ("runs", "events")} == {
                k: v for k, v in before.items() if k not in ("runs", "events")
            }, f"{attacker_ws} changed {victim_ws}'s data"
            old_runs = {r.split(",")[0] for r in before["runs"]}
            assert [r for r in after["runs"] if r.split(",")[0] in old_runs] == before["runs"]
            assert [e for e in after["events"] if e.split(",")[0] in old_runs] == [
                e for e in before["events"] if e.split(",")[0] in old_runs
            ]

        # positive control: each workspace's own key gets past the scoping on the same ids
        for ws, t in by_ws.items():
            for method, path, is_ws in sorted(routes, key=lambda r: r[0] == "DELETE"):  # deletions last
                if is_ws or not re.search(r"\{\w+\}", path) or path in SHARED_CATALOG:
                    continue
                r = _call(c, method, path, t.ids, t.admin)
                assert r.status_code != 404, (f"{ws} own {method} {path}", r.status_code, r.text)
    assert checked == {(m, p) for m, p, _ in routes}
