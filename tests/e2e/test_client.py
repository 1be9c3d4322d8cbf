"""``agentmaestro.client`` (sync and async) against a real HTTP server, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from agentmaestro.agents import load_agents_dir
from agentmaestro.cli._common import builtin_agents_dir
from agentmaestro.client import AsyncClient, Client
from agentmaestro.errors import (
    AuthError,
    ConflictError,
    MaestroError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    ValidationError,
)
from agentmaestro.store.base import Store
from tests.fakes.server import LiveServer, free_port


def make_keys(url: str) -> dict[str, str]:
    async def go() -> dict[str, str]:
        store = Store.open(url)
        try:
            out = {}
            for ws, role in (("default", "viewer"), ("default", "operator"), ("default", "admin"), ("other", "admin")):
                await store.workspaces.ensure(ws)
                _row, out[role if ws == "default" else "other"] = await store.keys.create(
                    ws, name=f"{ws}-{role}", role=role
                )
            return out
        finally:
            await store.close()

    return asyncio.run(go())


@pytest.fixture
def server(db_url: str) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    keys = make_keys(db_url)
    with LiveServer(db_url, load_agents_dir(builtin_agents_dir())) as srv:
        yield srv, keys


def test_sync_client_runs_events_approvals_and_catalog(server: tuple[LiveServer, dict[str, str]]) -> None:
    srv, keys = server
    with Client(srv.url, keys["operator"], timeout=20) as api:
        assert api.health()["status"] == "ok" and api.ready() == {"status": "ready"}
        assert "# TYPE" in api.metrics()
        assert {"calculator", "janitor", "wordsmith"} <= {a["name"] for a in api.list_agents()}
        assert api.get_agent("calculator")["model"] == "scripted:calculator"
        assert "purge_logs" in {t["name"] for t in api.list_tools()}

        run = api.create_run("calculator", "What is (2 + 3) * 4?", policy={"max_steps": 20})
        assert run["status"] == "PENDING" and run["policy"]["max_steps"] == 20
        streamed = list(api.stream_events(run["run_id"]))
        assert [e["seq"] for e in streamed] == list(range(1, len(streamed) + 1))
        assert streamed[-1]["type"] == "RUN_COMPLETED"
        done = api.wait(run["run_id"])
        assert done["status"] == "COMPLETED" and "20" in done["output"] and len(done["steps_detail"]) == 5
        assert api.all_events(run["run_id"]) == streamed
        page = api.events(run["run_id"], after=2, limit=3)
        assert [e["seq"] for e in page["events"]] == [3, 4, 5] and page["next_after"] == 5
        # leaving a stream early closes it cleanly; the client stays usable
        for i, _event in enumerate(api.stream_events(run["run_id"], after=1)):
            if i == 2:
                break
        listing = api.list_runs(status=["COMPLETED"], agent="calculator", limit=1)
        assert listing["runs"][0]["run_id"] == run["run_id"] and listing["next_cursor"] == run["run_id"]
        top = api.list_runs(top_level=True, kind="agent", limit=500)["runs"]
        assert run["run_id"] in {r["run_id"] for r in top}
        assert all(r["parent_run_id"] is None and r["kind"] == "agent" for r in top)
        assert api.list_runs(kind="workflow")["runs"] == []
        fork = api.fork_run(run["run_id"], 4)
        assert api.wait(fork["run_id"])["output"] == done["output"]
        restart = api.restart_run(run["run_id"])
        assert restart["run_id"] not in (run["run_id"], fork["run_id"])

        # approvals: wait until the run needs a person, approve with edited arguments
        held = api.create_run("janitor", "tidy")
        waiting = api.wait(held["run_id"], until="waiting")
        assert waiting["status"] == "WAITING_FOR_APPROVAL"
        [appr] = api.list_approvals()["approvals"]
        assert api.get_approval(appr["approval_id"])["tool"] == "purge_logs"
        decided = api.decide_approval(appr["approval_id"], "approve", reason="ok", arguments={"older_than_days": 45})
        assert decided["status"] == "approved" and decided["decided_by"] == "key:default-operator"
        assert "45 days" in api.wait(held["run_id"])["output"]
        assert api.list_approvals(status=["approved"])["approvals"][0]["approval_id"] == appr["approval_id"]
        assert api.list_human_requests() == {"human_requests": [], "next_cursor": None}

        # cancel and resume
        again = api.create_run("janitor", "tidy again")
        api.wait(again["run_id"], until="waiting")
        assert api.cancel_run(again["run_id"], reason="not now")["status"] == "CANCELLED"
        assert api.resume_run(again["run_id"], policy={"max_steps": 30})["status"] == "PENDING"
        assert api.wait(again["run_id"], until="waiting")["status"] == "WAITING_FOR_APPROVAL"

        # errors map to agentmaestro.errors
        with pytest.raises(NotFoundError, match="not found"):
            api.get_run("run_nope")
        with pytest.raises(ConflictError):
            api.cancel_run(run["run_id"])
        with pytest.raises(ValidationError):
            api.create_run("calculator", "x", policy={"max_steps": False})
        with pytest.raises(NotFoundError):
            api.resolve_human_request("hum_nope", "retry")
        with pytest.raises(AuthError, match="admin"):
            api.list_keys()
        with pytest.raises(NotFoundError):
            list(api.stream_events("run_nope"))

    with Client(srv.url, keys["viewer"]) as viewer:
        with pytest.raises(AuthError, match="operator"):
            viewer.decide_approval("apr_x", "reject")
        assert viewer.get_run(run["run_id"])["status"] == "COMPLETED"
    with Client(srv.url, keys["other"]) as other, pytest.raises(NotFoundError):
        other.get_run(run["run_id"])
    with Client(srv.url, "am_wrong_key") as wrong, pytest.raises(AuthError, match="invalid or revoked"):
        wrong.list_runs()
    with Client(f"http://127.0.0.1:{free_port()}", keys["viewer"], timeout=2) as nowhere:
        with pytest.raises(ServerError, match="cannot reach"):
            nowhere.health()


def test_sync_client_admin_routes(server: tuple[LiveServer, dict[str, str]]) -> None:
    srv, keys = server
    with Client(srv.url, keys["admin"]) as api:
        ws = api.get_workspace()
        assert ws["workspace_id"] == "default" and ws["caller"]["role"] == "admin"
        changed = api.update_workspace_settings(gate={"deny_tools": ["purge_logs"]})
        assert changed["gate"]["deny_tools"] == ["purge_logs"]
        created = api.create_key("ci", role="viewer")
        assert created["key"].startswith("am_") and created["role"] == "viewer"
        assert created["key_id"] in {k["key_id"] for k in api.list_keys()}
        with Client(srv.url, created["key"]) as ci:
            assert ci.get_workspace()["caller"]["key_name"] == "ci"
        assert api.revoke_key(created["key_id"])["revoked_at"] is not None
        with Client(srv.url, created["key"]) as ci, pytest.raises(AuthError):
            ci.get_workspace()
        log = api.audit_log(limit=1000)
        assert {"key.create", "key.revoke"} <= {e["action"] for e in log["entries"]}
        assert api.audit_log(action="key.revoke")["entries"][0]["target"] == created["key_id"]
        assert api.verify_audit()["ok"] is True
        usage = api.usage(group_by="day")
        assert usage["workspace_id"] == "default" and usage["group_by"] == "day"
        with pytest.raises(ValidationError):
            api.usage(since="not a time")
        with pytest.raises(ValidationError):
            api.create_key("")


def test_rate_limit_maps_to_rate_limited_error(db_url: str) -> None:
    keys = make_keys(db_url)
    with LiveServer(db_url, load_agents_dir(builtin_agents_dir()), rate_limit_per_min=3) as srv:
        with Client(srv.url, keys["viewer"]) as api, pytest.raises(RateLimitedError) as info:
            for _ in range(10):
                api.list_runs()
        assert info.value.retry_after is not None and info.value.retry_after > 0


def test_async_client_and_firehose(server: tuple[LiveServer, dict[str, str]]) -> None:
    srv, keys = server

    async def scenario() -> None:
        async with AsyncClient(srv.url, keys["operator"], timeout=20) as api:
            feed = api.firehose()
            first, cursor = await anext(feed)
            assert first is None and cursor.startswith("c1.")
            runs = [await api.create_run("calculator", f"task {i}") for i in range(2)]
            ids = {r["run_id"] for r in runs}
            seen: list[dict[str, Any]] = []
            finished: set[str] = set()
            while finished != ids:
                event, cursor = await asyncio.wait_for(anext(feed), 20)
                assert event is not None
                seen.append(event)
                if event["type"] == "RUN_COMPLETED":
                    finished.add(event["run_id"])
                if len(seen) == 5:  # reconnect from the last cursor half-way
                    await feed.aclose()
                    feed = api.firehose(after=cursor)
                    assert (await anext(feed))[0] is None
            await feed.aclose()
            for r in ids:
                assert [e["seq"] for e in seen if e["run_id"] == r] == [e["seq"] for e in await api.all_events(r)]
            streamed = [e async for e in api.stream_events(runs[0]["run_id"], after=3)]
            assert streamed[0]["seq"] == 4 and streamed[-1]["type"] == "RUN_COMPLETED"
            with pytest.raises(ValidationError):
                await anext(api.firehose(after="c1.garbage"))
        async with AsyncClient(srv.url, "am_wrong") as wrong:
            with pytest.raises(AuthError):
                await anext(wrong.firehose())

    asyncio.run(scenario())


def test_client_lifecycle_closed_and_never_closed() -> None:
    api = Client(f"http://127.0.0.1:{free_port()}", "am_x")
    api.close()
    api.close()  # idempotent
    with pytest.raises(MaestroError, match="closed"):
        api.health()
    # a client that is never closed does not keep the interpreter from exiting
    script = "from agentmaestro.client import Client\napi = Client('http://127.0.0.1:9', 'am_x')\nprint('made')\n"
    proc = subprocess.run([sys.executable, "-W", "error", "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == "made\n", proc.stderr
