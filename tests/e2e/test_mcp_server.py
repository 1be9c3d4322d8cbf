"""AgentMaestro as an MCP server, driven by the official MCP client SDK.

Over stdio (``maestro mcp`` as a subprocess, on an SQLite file and through a live server) and over
streamable HTTP (``/mcp`` of a live server, on SQLite and PostgreSQL): start the demo ``janitor``,
whose DANGEROUS ``purge_logs`` call waits for approval, find the approval, approve it with edited
arguments, wait for the run and read its result and events. Over HTTP also: a wrong key is refused,
a viewer key reads but cannot start runs, and another workspace's runs and approvals are not found.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import httpx2
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from agentmaestro.agents import load_agents_dir
from agentmaestro.cli._common import builtin_agents_dir
from agentmaestro.cli.workflows import builtin_workflows_dir
from agentmaestro.store.base import Store
from agentmaestro.workflows.spec import load_workflows_dir
from tests.e2e.test_server import make_key
from tests.fakes.server import LiveServer

pytestmark = pytest.mark.anyio

MAESTRO = Path(sys.executable).parent / "maestro"
TOOLS = {
    "list_agents",
    "list_workflows",
    "start_run",
    "get_run",
    "get_run_events",
    "wait_run",
    "cancel_run",
    "list_approvals",
    "resolve_approval",
}
_PYCACHE = Path(tempfile.gettempdir()) / "agentmaestro-test-pycache"


def live_server(db_url: str) -> LiveServer:
    """The API with the built-in agents and workflows, as ``maestro serve`` has them."""
    agents = load_agents_dir(builtin_agents_dir())
    return LiveServer(db_url, agents, workflow_registry=load_workflows_dir(builtin_workflows_dir(), agents))


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_")}
    env["MAESTRO_HOME"] = str(home / ".maestro-home")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # start-up dominates: share compiled bytecode outside the repository
    env["PYTHONPYCACHEPREFIX"] = str(_PYCACHE)
    return env


def stdio_params(tmp_path: Path, *args: str) -> StdioServerParameters:
    """``maestro ARGS mcp`` in ``tmp_path``."""
    return StdioServerParameters(command=str(MAESTRO), args=[*args, "mcp"], env=_env(tmp_path), cwd=str(tmp_path))


def stdio(tmp_path: Path, *args: str) -> Client:
    """An MCP client of ``maestro ARGS mcp`` started as a subprocess."""
    return Client(stdio_params(tmp_path, *args), read_timeout_seconds=120, cache=None)


@contextlib.asynccontextmanager
async def http(url: str, key: str, mode: Literal["auto", "legacy"] = "auto") -> AsyncIterator[Client]:
    """An MCP client of ``url`` (streamable HTTP) that sends ``key`` as its bearer token.

    ``auto`` speaks the SDK's newest protocol (2026-07-28, no handshake); ``legacy`` the 2025 handshake.
    """
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120)) as client:
        async with Client(streamable_http_client(url, http_client=client), mode=mode, cache=None) as mcp:
            yield mcp


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    """A tool's structured result; fails on a tool error."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, (tool, result.content)
    assert result.structured_content is not None
    return result.structured_content


async def refused(client: Client, tool: str, **arguments: Any) -> str:
    """A tool error's message, checked to be one line without a traceback."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, (tool, result.structured_content)
    [content] = result.content
    text = getattr(content, "text", "")
    assert text and "\n" not in text and "Traceback" not in text, text
    return str(text)


async def approval_flow(client: Client) -> dict[str, Any]:
    """Start the janitor, approve its held call with edited arguments, see it complete; the finished run."""
    assert {t.name for t in (await client.list_tools()).tools} == TOOLS
    agents = {a["name"]: a for a in (await call(client, "list_agents"))["agents"]}
    assert "purge_logs (DANGEROUS)" in agents["janitor"]["tools"]
    assert "tidy-and-report" in {w["name"] for w in (await call(client, "list_workflows"))["workflows"]}

    run = await call(client, "start_run", target="janitor", input="Free some disk space")
    run_id = run["run_id"]
    assert run["status"] == "PENDING" and run["agent"] == "janitor"
    held = await call(client, "wait_run", run_id=run_id, timeout_s=60)
    assert held["status"] == "WAITING_FOR_APPROVAL" and held["timed_out"] is False, held
    [pending] = held["pending_approvals"]
    assert pending["tool"] == "purge_logs" and pending["arguments"] == {"older_than_days": 30}
    listed = (await call(client, "list_approvals", run_id=run_id))["approvals"]
    assert [a["approval_id"] for a in listed] == [pending["approval_id"]]

    decided = await call(
        client,
        "resolve_approval",
        approval_id=pending["approval_id"],
        decision="approve",
        reason="only the oldest logs",
        arguments={"older_than_days": 90},
    )
    assert decided["status"] == "approved" and decided["decision_reason"] == "only the oldest logs"
    [stored] = (await call(client, "list_approvals", status="approved", run_id=run_id))["approvals"]
    assert stored["approved_arguments"] == {"older_than_days": 90}
    again = await refused(client, "resolve_approval", approval_id=pending["approval_id"], decision="reject")
    assert again.endswith(f"approval {pending['approval_id']!r} is already approved"), again

    done = await call(client, "wait_run", run_id=run_id, timeout_s=60)
    assert done["status"] == "COMPLETED" and done["timed_out"] is False, done
    assert "older than 90 days" in done["output"], done  # the edited arguments ran
    assert done["usage"]["tool_calls"] == 1 and done["usage"]["tokens"] > 0 and done["error"] is None
    assert done["pending_approvals"] == []
    assert (await call(client, "get_run", run_id=run_id))["output"] == done["output"]

    page = await call(client, "get_run_events", run_id=run_id, limit=1000)
    types = [e["type"] for e in page["events"]]
    assert "APPROVAL_REQUESTED" in types and "APPROVAL_GRANTED" in types and types[-1] == "RUN_COMPLETED", types
    assert page["next_after"] == page["events"][-1]["seq"] == done["last_seq"]
    tail = await call(client, "get_run_events", run_id=run_id, after=page["next_after"])
    assert tail == {"events": [], "next_after": page["next_after"]}
    first = await call(client, "get_run_events", run_id=run_id, limit=2)
    assert [e["seq"] for e in first["events"]] == [1, 2]

    resource = await client.read_resource(f"maestro://runs/{run_id}")
    assert json.loads(getattr(resource.contents[0], "text", ""))["status"] == "COMPLETED"

    # bad input: one line each, nothing changed
    assert "not found" in await refused(client, "get_run", run_id="run_000000000000000000000000")
    assert "known: " in await refused(client, "start_run", target="no-such-agent", input="x")
    assert "invalid arguments for wait_run" in await refused(client, "wait_run", run_id=run_id, timeout_s=-1)
    assert "invalid arguments" in await refused(client, "get_run", run_id="../v1/keys")
    assert "already COMPLETED" in await refused(client, "cancel_run", run_id=run_id)
    return dict(done)


# --------------------------------------------------------------------------------------------------- stdio


async def test_stdio_on_a_database(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'maestro.db'}"
    async with stdio(tmp_path, "--database-url", db) as client:
        assert client.server_info is not None and client.server_info.name == "agentmaestro"
        done = await approval_flow(client)
        # a workflow: it settles when its janitor node waits; the node's approval is listed with it
        wf = await call(client, "start_run", target="tidy-and-report", input="Durable agents", kind="workflow")
        assert wf["agent"] == "tidy-and-report"
        settled = await call(client, "wait_run", run_id=wf["run_id"], timeout_s=60)
        assert settled["status"] == "WAITING_FOR_CHILDREN" and settled["timed_out"] is False, settled
        [node_approval] = settled["pending_approvals"]
        assert node_approval["tool"] == "purge_logs" and node_approval["run_id"] != wf["run_id"]
        cancelled = await call(client, "cancel_run", run_id=wf["run_id"], reason="enough")
        assert cancelled["status"] == "CANCELLED", cancelled
        policy = await refused(client, "start_run", target="tidy-and-report", input="x", policy={"max_steps": 1})
        assert "workflow" in policy
    # the run is in the database, its decision audited under the local user
    store = Store.open(db)
    try:
        assert (await store.runs.get(done["run_id"], "default")).status.value == "COMPLETED"
        entries = await store.audit.page("default", limit=100)
        assert {e["action"] for e in entries} >= {"approval.approve", "workflow.run"}, entries
        assert all(e["actor"].startswith("cli:") for e in entries if e["action"] == "approval.approve"), entries
        started = {r.run_id: r.created_by for r in await store.runs.page(workspace_id="default", limit=100)}
        assert all(str(by).startswith("cli:") for by in started.values()), started  # who started each run
    finally:
        await store.close()


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[tuple[LiveServer, str]]:
    db = f"sqlite:///{tmp_path / 'maestro.db'}"
    operator = make_key(db, "default", "operator")
    with live_server(db) as srv:
        yield srv, operator


async def test_stdio_through_a_server(tmp_path: Path, remote: tuple[LiveServer, str]) -> None:
    srv, operator = remote
    async with stdio(tmp_path, "--server", srv.url, "--api-key", operator) as client:
        done = await approval_flow(client)
    async with httpx.AsyncClient(base_url=srv.url, timeout=10) as c:  # the server ran it, for this key
        run = await c.get(f"/v1/runs/{done['run_id']}", headers={"Authorization": f"Bearer {operator}"})
        assert run.json()["status"] == "COMPLETED"
        decided = await c.get(
            "/v1/approvals", params={"status": "approved"}, headers={"Authorization": f"Bearer {operator}"}
        )
        assert [a["decided_by"] for a in decided.json()["approvals"]] == ["key:default-operator"]
    # a wrong key: `maestro mcp` says so in one line on stderr and exits before serving
    params = stdio_params(tmp_path, "--server", srv.url, "--api-key", "am_wrong_key")
    with open(tmp_path / "stderr.txt", "w") as errlog, pytest.raises(BaseExceptionGroup) as refusal:
        async with Client(stdio_client(params, errlog=errlog), cache=None) as client:
            await client.list_tools()
    assert [str(e) for e in leaves(refusal.value)] == ["Connection closed"]
    assert (tmp_path / "stderr.txt").read_text() == "error: invalid or revoked API key\n"


# ---------------------------------------------------------------------------------------------------- HTTP


@pytest.fixture
def served(db_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    keys = {role: make_key(db_url, "default", role) for role in ("viewer", "operator")}
    keys["other"] = make_key(db_url, "other", "admin")
    with live_server(db_url) as srv:
        yield srv.url, keys


async def test_streamable_http(served: tuple[str, dict[str, str]]) -> None:
    url, keys = served
    stored = {"yaml": "name: other-only\nnodes:\n  - {id: a, agent: calculator, input: '1+1'}\n"}
    async with httpx.AsyncClient(timeout=10) as c:  # a workflow stored in the other workspace only
        r = await c.post(f"{url}/v1/workflows", json=stored, headers={"Authorization": f"Bearer {keys['other']}"})
        assert r.status_code == 200, r.text
    async with http(f"{url}/mcp", keys["operator"]) as client:
        done = await approval_flow(client)
        waiting = await call(client, "start_run", target="janitor", input="tidy again")
        held = await call(client, "wait_run", run_id=waiting["run_id"], timeout_s=60)
        [approval] = held["pending_approvals"]

    # a viewer reads but cannot start, cancel or decide (and the 2025 protocol works the same)
    async with http(f"{url}/mcp", keys["viewer"], mode="legacy") as client:
        assert client.protocol_version.startswith("2025")
        assert (await call(client, "get_run", run_id=done["run_id"]))["status"] == "COMPLETED"
        assert "operator role" in await refused(client, "start_run", target="janitor", input="x")
        assert "operator role" in await refused(client, "cancel_run", run_id=waiting["run_id"])
        denied = await refused(client, "resolve_approval", approval_id=approval["approval_id"], decision="reject")
        assert "operator role" in denied

    # another workspace's runs and approvals do not exist for its key
    async with http(f"{url}/mcp", keys["other"]) as client:
        for tool, args in [
            ("get_run", {"run_id": done["run_id"]}),
            ("get_run_events", {"run_id": done["run_id"]}),
            ("wait_run", {"run_id": waiting["run_id"], "timeout_s": 0}),
            ("cancel_run", {"run_id": waiting["run_id"]}),
            ("resolve_approval", {"approval_id": approval["approval_id"], "decision": "approve"}),
        ]:
            assert "not found" in await refused(client, tool, **args), tool
        assert (await call(client, "list_approvals", status="all"))["approvals"] == []
        assert "other-only" in {w["name"] for w in (await call(client, "list_workflows"))["workflows"]}
        own = await call(client, "start_run", target="other-only", input="its own", kind="workflow")
        assert (await call(client, "wait_run", run_id=own["run_id"], timeout_s=60))["status"] == "COMPLETED"
        with pytest.raises(MCPError):
            await client.read_resource(f"maestro://runs/{done['run_id']}")

    # nothing of that changed the waiting run; its own operator still can, and sees no other workspace's workflow
    async with http(f"{url}/mcp", keys["operator"]) as client:
        assert "other-only" not in {w["name"] for w in (await call(client, "list_workflows"))["workflows"]}
        assert "not found" in await refused(client, "start_run", target="other-only", input="x")
        assert "not found" in await refused(client, "get_run", run_id=own["run_id"])
        still = await call(client, "get_run", run_id=waiting["run_id"])
        assert still["status"] == "WAITING_FOR_APPROVAL" and len(still["pending_approvals"]) == 1
        cancelled = await call(client, "cancel_run", run_id=waiting["run_id"], reason="not today")
        assert cancelled["status"] == "CANCELLED"

    # no key, a wrong key: refused before MCP, with the API's error shape
    with httpx.Client(timeout=10) as c:
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        for headers in ({}, {"Authorization": "Bearer am_nope_nope"}):
            r = c.post(f"{url}/mcp", json=body, headers={**headers, "Accept": "application/json, text/event-stream"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated", r.text
    with pytest.raises(BaseExceptionGroup) as refusal:
        async with http(f"{url}/mcp", "am_wrong_wrong") as client:
            await client.list_tools()
    [error] = leaves(refusal.value)
    assert isinstance(error, MCPError), error


# ------------------------------------------------------------------------------------------ in process


async def test_wait_run_reports_progress_and_times_out(tmp_path: Path) -> None:
    """No worker: the run stays PENDING, so wait_run reports its progress and then says it timed out."""
    from agentmaestro.actor import Actor, Role
    from agentmaestro.server.mcp.server import build_server
    from agentmaestro.service.plane.local import LocalPlane

    store = Store.open(f"sqlite:///{tmp_path / 'maestro.db'}")
    agents = load_agents_dir(builtin_agents_dir())
    workflows = load_workflows_dir(builtin_workflows_dir(), agents)
    actor = Actor(name="key:test", workspace_id="default", role=Role.operator, quotas=True)
    server = build_server(LocalPlane(lambda: store, actor, lambda: agents, lambda: workflows, owns_store=False))
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    try:
        await store.workspaces.ensure("default")
        async with Client(server, cache=None) as client:
            run = await call(client, "start_run", target="calculator", input="1+1", policy={"max_steps": 3})
            result = await client.call_tool(
                "wait_run", {"run_id": run["run_id"], "timeout_s": 0.3}, progress_callback=on_progress
            )
            assert not result.is_error and result.structured_content is not None
            assert result.structured_content["status"] == "PENDING" and result.structured_content["timed_out"] is True
            assert seen and seen[0][1] == 0.3 and seen[0][2] == "PENDING after 1 events", seen
            stored = await store.runs.get(run["run_id"], "default")
            assert stored.state.policy.max_steps == 3  # the policy override was applied
    finally:
        await store.close()
