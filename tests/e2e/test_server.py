"""The REST API over a real HTTP server, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agentmaestro.agents import load_agents_dir
from agentmaestro.cli._common import builtin_agents_dir
from agentmaestro.store.base import Store
from tests.fakes.server import LiveServer


def make_key(url: str, workspace: str, role: str) -> str:
    async def go() -> str:
        store = Store.open(url)
        try:
            await store.workspaces.ensure(workspace)
            _row, key = await store.keys.create(workspace, name=f"{workspace}-{role}", role=role)
            return key
        finally:
            await store.close()

    return asyncio.run(go())


@pytest.fixture
def server(db_url: str) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    keys = {role: make_key(db_url, "default", role) for role in ("viewer", "operator", "admin")}
    keys["other"] = make_key(db_url, "other", "admin")
    with LiveServer(db_url, load_agents_dir(builtin_agents_dir())) as srv:
        yield srv, keys


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wait_status(client: httpx.Client, run_id: str, key: str, statuses: set[str], timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/v1/runs/{run_id}", headers=auth(key)).json()
        if body["status"] in statuses:
            return body  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached {statuses}")


def test_run_lifecycle_over_http(server: tuple[LiveServer, dict[str, str]]) -> None:
    srv, keys = server
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        assert c.get("/healthz").json()["status"] == "ok"
        assert c.get("/readyz").json() == {"status": "ready"}
        r = c.post(
            "/v1/runs", json={"agent": "calculator", "input": "What is (2 + 3) * 4?"}, headers=auth(keys["operator"])
        )
        assert r.status_code == 201, r.text
        run_id = r.json()["run_id"]
        done = wait_status(c, run_id, keys["viewer"], {"COMPLETED"})
        assert "20" in done["output"] and [s["step"] for s in done["steps_detail"]] == [0, 1, 2, 3, 4]
        page = c.get(f"/v1/runs/{run_id}/events", params={"after": 0, "limit": 5}, headers=auth(keys["viewer"])).json()
        assert [e["seq"] for e in page["events"]] == [1, 2, 3, 4, 5] and page["next_after"] == 5
        rest = c.get(f"/v1/runs/{run_id}/events", params={"after": 5}, headers=auth(keys["viewer"])).json()
        assert rest["events"][-1]["type"] == "RUN_COMPLETED"
        listing = c.get("/v1/runs", params={"status": "COMPLETED", "limit": 1}, headers=auth(keys["viewer"])).json()
        assert listing["runs"][0]["run_id"] == run_id
        fork = c.post(f"/v1/runs/{run_id}/fork", json={"at_seq": 4}, headers=auth(keys["operator"]))
        assert fork.status_code == 201
        assert wait_status(c, fork.json()["run_id"], keys["viewer"], {"COMPLETED"})["output"] == done["output"]
        restart = c.post(f"/v1/runs/{run_id}/restart", headers=auth(keys["operator"]))
        assert restart.status_code == 201 and restart.json()["run_id"] != run_id
        agents = c.get("/v1/agents", headers=auth(keys["viewer"])).json()
        assert {"calculator", "janitor", "wordsmith"} <= {a["name"] for a in agents}
        tools = {t["name"]: t for t in c.get("/v1/tools", headers=auth(keys["viewer"])).json()}
        assert tools["purge_logs"]["risk"] == "DANGEROUS" and tools["add"]["agents"] == ["calculator"]
        assert (tools["purge_logs"]["reconciles"], tools["purge_logs"]["idempotency_key"]) == (False, False)


def test_approval_over_http(server: tuple[LiveServer, dict[str, str]]) -> None:
    srv, keys = server
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        run_id = c.post("/v1/runs", json={"agent": "janitor", "input": "tidy"}, headers=auth(keys["operator"])).json()[
            "run_id"
        ]
        wait_status(c, run_id, keys["viewer"], {"WAITING_FOR_APPROVAL"})
        [appr] = c.get("/v1/approvals", headers=auth(keys["viewer"])).json()["approvals"]
        assert appr["run_id"] == run_id and appr["risk"] == "DANGEROUS"
        denied = c.post(
            f"/v1/approvals/{appr['approval_id']}", json={"decision": "approve"}, headers=auth(keys["viewer"])
        )
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
        other = c.post(
            f"/v1/approvals/{appr['approval_id']}", json={"decision": "approve"}, headers=auth(keys["other"])
        )
        assert other.status_code == 404
        ok = c.post(
            f"/v1/approvals/{appr['approval_id']}",
            json={"decision": "approve", "reason": "fine", "arguments": {"older_than_days": 45}},
            headers=auth(keys["operator"]),
        )
        assert ok.status_code == 200 and ok.json()["status"] == "approved"
        assert ok.json()["decided_by"] == "key:default-operator"
        assert ok.json()["approved_arguments"] == {"older_than_days": 45}
        done = wait_status(c, run_id, keys["viewer"], {"COMPLETED"})
        assert "45 days" in done["output"]
        again = c.post(
            f"/v1/approvals/{appr['approval_id']}", json={"decision": "reject"}, headers=auth(keys["operator"])
        )
        assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"


def test_auth_roles_isolation_and_errors(server: tuple[LiveServer, dict[str, str]]) -> None:
    srv, keys = server
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        assert c.get("/v1/runs").status_code == 401
        bad = c.get("/v1/runs", headers=auth("am_nope_nope"))
        assert bad.status_code == 401 and bad.json() == {
            "error": {"code": "unauthenticated", "message": "invalid or revoked API key"}
        }
        assert c.get("/v1/runs", headers={"Authorization": "Basic abc"}).status_code == 401
        viewer_post = c.post("/v1/runs", json={"agent": "calculator", "input": "x"}, headers=auth(keys["viewer"]))
        assert viewer_post.status_code == 403
        run_id = c.post("/v1/runs", json={"agent": "calculator", "input": "x"}, headers=auth(keys["operator"])).json()[
            "run_id"
        ]
        # another workspace sees nothing of ours
        assert c.get(f"/v1/runs/{run_id}", headers=auth(keys["other"])).status_code == 404
        assert c.get(f"/v1/runs/{run_id}/events", headers=auth(keys["other"])).status_code == 404
        assert c.post(f"/v1/runs/{run_id}/cancel", headers=auth(keys["other"])).status_code == 404
        assert c.get("/v1/runs", headers=auth(keys["other"])).json()["runs"] == []
        # strict validation: no silent coercion, unknown fields rejected
        for body in (
            {"agent": "calculator", "input": "x", "policy": {"max_steps": False}},
            {"agent": "calculator", "input": "x", "policy": {"max_steps": "3"}},
            {"agent": "calculator", "input": 5},
            {"agent": "calculator", "input": "x", "surprise": 1},
            {"agent": "", "input": "x"},
        ):
            r = c.post("/v1/runs", json=body, headers=auth(keys["operator"]))
            assert r.status_code == 422, body
            assert set(r.json()["error"]) == {"code", "message"}
        nosuch = c.post("/v1/runs", json={"agent": "nosuch", "input": "x"}, headers=auth(keys["operator"]))
        assert nosuch.status_code == 404 and "known agents" in nosuch.json()["error"]["message"]
        garbage = c.post(
            "/v1/runs", content=b"{not json", headers={**auth(keys["operator"]), "content-type": "application/json"}
        )
        assert garbage.status_code == 422
        assert c.get("/v1/runs", params={"limit": 0}, headers=auth(keys["viewer"])).status_code == 422
        assert c.get("/v1/runs", params={"status": "NOPE"}, headers=auth(keys["viewer"])).status_code == 422
        assert c.get("/v1/nothing-here").json()["error"]["code"] == "not_found"
        wait_status(c, run_id, keys["viewer"], {"COMPLETED"})
        conflict = c.post(f"/v1/runs/{run_id}/cancel", headers=auth(keys["operator"]))
        assert conflict.status_code == 409
        bad_fork = c.post(f"/v1/runs/{run_id}/fork", json={"at_seq": 999}, headers=auth(keys["operator"]))
        assert bad_fork.status_code == 409
