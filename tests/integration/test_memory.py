"""Memory tools: facts persist across runs per agent or workspace, with provenance; never across workspaces."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from agentmaestro import Agent, ScriptedModel
from agentmaestro.agents import AgentRegistry
from agentmaestro.core.states import RunStatus
from agentmaestro.engine.worker import Worker, WorkerConfig
from agentmaestro.errors import ValidationError
from agentmaestro.store.base import Store
from agentmaestro.store.records import NewRun, new_run_id
from agentmaestro.tools.memory import memory_tools

pytestmark = pytest.mark.anyio


def agent(name: str, turns: list[dict[str, Any]]) -> Agent:
    return Agent(name=name, model=ScriptedModel(turns), tools=memory_tools())


async def run(store: Store, a: Agent, workspace: str = "default") -> Any:
    await store.workspaces.ensure(workspace)
    [rec] = await store.runs.create(
        [NewRun(run_id=new_run_id(), workspace_id=workspace, agent_name=a.name, input="x", spec=a.spec(), policy={})]
    )
    worker = Worker(store, AgentRegistry([a]), config=WorkerConfig(poll_interval_s=0.05))
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(20):
            while not (await store.runs.get(rec.run_id)).status.terminal:
                await store.events.wait(None, 0.1)
    finally:
        worker.stop()
        await task
    return await store.runs.get(rec.run_id)


def call(name: str, **args: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": args}]}


async def test_memory_across_runs_scopes_and_workspaces(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        writer = agent(
            "writer",
            [
                call("remember", key="city", value="Lyon"),
                call("remember", key="team", value="blue", scope="workspace"),
                {"content": "ok"},
            ],
        )
        first = await run(store, writer)
        assert first.status is RunStatus.COMPLETED
        reader = agent(
            "writer",
            [call("recall", key="city"), {"content": "{{last_tool_result}}"}],
        )
        second = await run(store, reader)
        got = json.loads(second.state.output)
        assert got["value"] == "Lyon" and got["written_by_run"] == first.run_id
        # another agent shares the workspace scope, not the agent scope
        other = agent(
            "other",
            [
                call("recall", key="city"),
                call("recall", key="team", scope="workspace"),
                {"content": "{{last_tool_result}}"},
            ],
        )
        third = await run(store, other)
        assert json.loads(third.state.output)["value"] == "blue"
        events = await store.events.read(third.run_id)
        assert any("nothing remembered under 'city'" in str(e.payload.get("result")) for e in events)
        # another workspace sees nothing
        stranger = agent("writer", [call("recall", key="city"), {"content": "{{last_tool_result}}"}])
        fourth = await run(store, stranger, workspace="elsewhere")
        assert "nothing remembered" in (fourth.state.output or "")
        assert await store.memory.page("elsewhere") == []
        entries = await store.memory.page("default")
        assert {(e["scope"], e["key"], e["agent"]) for e in entries} == {
            ("agent:writer", "city", "writer"),
            ("workspace", "team", "writer"),
        }
        with pytest.raises(ValidationError):
            await store.memory.put("default", "bogus", "k", "v")
    finally:
        await store.close()
