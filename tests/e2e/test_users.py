"""Users: API keys that belong to a person, identified only by the SHA-256 of their email.

Runs started with such a key (and their sub-runs) are attributed to ``user:<hash>``; the audit log
names the user; usage and cost can be grouped by user (API and CLI); the email is stored nowhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from agentmaestro.agents import load_agents_dir
from agentmaestro.cli._common import builtin_agents_dir
from agentmaestro.store.base import Store
from agentmaestro.store.dialects import normalize_url
from agentmaestro.store.records import new_run_id
from agentmaestro.store.runs import NewRun
from tests.e2e.test_cli import Maestro, ok
from tests.e2e.test_server import auth, make_key, wait_status
from tests.fakes.server import LiveServer

EMAIL = "  Alice.Smith@Example.COM "
ALICE = hashlib.sha256(b"alice.smith@example.com").hexdigest()


@pytest.fixture
def server(db_url: str) -> Iterator[tuple[LiveServer, str]]:
    admin = make_key(db_url, "default", "admin")
    with LiveServer(db_url, load_agents_dir(builtin_agents_dir())) as srv:
        yield srv, admin


def _dump(db_url: str) -> str:
    """Every row of every table, as text (to look for the email)."""
    engine = create_engine(normalize_url(db_url))
    try:
        with engine.connect() as conn:
            tables = ["api_keys", "audit_log", "runs", "run_events", "steps", "workspaces"]
            return "\n".join(str(list(conn.execute(text(f"SELECT * FROM {t}")))) for t in tables)
    finally:
        engine.dispose()


def test_user_key_attributes_runs_audit_and_usage(server: tuple[LiveServer, str], db_url: str) -> None:
    srv, admin = server
    with httpx.Client(base_url=srv.url, timeout=15) as c:
        r = c.post("/v1/keys", json={"name": "alice-laptop", "role": "operator", "user": EMAIL}, headers=auth(admin))
        assert r.status_code == 201, r.text
        assert r.json()["user_hash"] == ALICE
        alice = r.json()["key"]

        run = c.post("/v1/runs", json={"agent": "calculator", "input": "What is 2+3?"}, headers=auth(alice)).json()
        assert run["created_by"] == f"user:{ALICE}"
        wait_status(c, run["run_id"], alice, {"COMPLETED"})
        other = c.post("/v1/runs", json={"agent": "calculator", "input": "1+1"}, headers=auth(admin)).json()
        assert other["created_by"] == "key:default-admin"
        wait_status(c, other["run_id"], admin, {"COMPLETED"})
        assert c.post(f"/v1/runs/{run['run_id']}/cancel", json={}, headers=auth(alice)).status_code in (200, 409)

        keys = c.get("/v1/keys", headers=auth(admin)).json()
        assert {k["name"]: k["user_hash"] for k in keys}["alice-laptop"] == ALICE

        audit = c.get("/v1/audit", params={"limit": 1000}, headers=auth(admin)).json()["entries"]
        created = [e for e in audit if e["action"] == "key.create" and e["detail"].get("name") == "alice-laptop"]
        assert created and created[0]["detail"]["user_hash"] == ALICE
        assert any(e["actor"] == f"user:{ALICE}" and e["action"] == "auth.login" for e in audit)

        usage = c.get("/v1/usage", params={"group_by": "user"}, headers=auth(alice)).json()
        by_user = {g["key"]: g for g in usage["groups"]}
        assert by_user[f"user:{ALICE}"]["runs"] == 1
        assert by_user["key:default-admin"]["runs"] == 1
        assert usage["total"]["runs"] == 2

        bad = c.post("/v1/keys", json={"name": "x", "user": "not an email"}, headers=auth(admin))
        assert bad.status_code == 422 and "not an email address" in bad.json()["error"]["message"]

    dump = _dump(db_url).lower()
    assert "alice.smith" not in dump and "example.com" not in dump


ONE_NODE = "name: one-node\nnodes:\n  - {id: calc, agent: calculator}\n"


def test_workflow_and_chat_runs_record_who_started_them(server: tuple[LiveServer, str]) -> None:
    srv, admin = server
    with httpx.Client(base_url=srv.url, timeout=15) as c:
        saved = c.post("/v1/workflows", json={"yaml": ONE_NODE}, headers=auth(admin))
        assert saved.status_code in (200, 201), saved.text
        flow = c.post("/v1/workflows/one-node/runs", json={"input": "What is 2+3?"}, headers=auth(admin))
        assert flow.status_code == 201, flow.text
        assert flow.json()["created_by"] == "key:default-admin"
        chat = c.post(
            "/v1/chat/completions",
            json={"model": "agent:calculator", "messages": [{"role": "user", "content": "What is (2 + 3) * 4?"}]},
            headers=auth(admin),
        )
        assert chat.status_code == 200, chat.text
        run_id = chat.json()["maestro"]["run_id"]
        assert c.get(f"/v1/runs/{run_id}", headers=auth(admin)).json()["created_by"] == "key:default-admin"


def test_sub_runs_inherit_who_started_the_tree(db_url: str) -> None:
    async def go() -> tuple[str | None, str | None, str | None]:
        store = Store.open(db_url)
        try:
            await store.workspaces.ensure()

            def new(parent: str | None, by: str | None) -> NewRun:
                return NewRun(
                    run_id=new_run_id(),
                    workspace_id="default",
                    agent_name="a",
                    input="x",
                    spec={},
                    policy={},
                    parent_run_id=parent,
                    created_by=by,
                )

            [root] = await store.runs.create([new(None, f"user:{ALICE}")])
            [child] = await store.runs.create([new(root.run_id, None)])
            [grandchild, own] = await store.runs.create([new(child.run_id, None), new(child.run_id, "key:bot")])
            got = await store.runs.get(grandchild.run_id)
            return got.created_by, (await store.runs.get(child.run_id)).created_by, own.created_by
        finally:
            await store.close()

    assert asyncio.run(go()) == (f"user:{ALICE}", f"user:{ALICE}", "key:bot")


def test_cli_user_keys_and_usage_by_user(tmp_path: Path, db_url: str) -> None:
    m = Maestro(tmp_path, db_url)
    key = ok(m("--json", "keys", "create", "--name", "bob", "--user", "bob@example.org")).json()
    assert key["user_hash"] == hashlib.sha256(b"bob@example.org").hexdigest()
    table = ok(m("keys", "list")).out
    assert key["user_hash"][:12] in table and "bob@example.org" not in table
    bad = m("keys", "create", "--name", "x", "--user", "bob at example")
    assert bad.code != 0 and bad.err.startswith("error: not an email address") and "Traceback" not in bad.err
    ok(m("run", "calculator", "What is 2+3?", "--wait"))
    report = json.loads(ok(m("--json", "usage", "--by", "user")).out)
    assert [g["key"] for g in report["groups"]] == [report["groups"][0]["key"]]
    assert report["groups"][0]["key"].startswith("cli:") and report["total"]["runs"] == 1
    assert "total" in ok(m("usage", "--by", "user", "--since", "2020-01-01")).out
    wrong = m("usage", "--by", "colour")
    assert wrong.code == 2 and "agent, model, day or user" in wrong.err
