"""Sub-agent runs through the built-in delegate tool, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentmaestro import Agent, RiskLevel, ScriptedModel, tool
from agentmaestro.agents import AgentRegistry
from agentmaestro.core.events import fold
from agentmaestro.core.states import EventType, RunStatus
from agentmaestro.engine.worker import Worker, WorkerConfig
from agentmaestro.store.base import Store
from agentmaestro.store.records import NewRun, new_run_id

pytestmark = pytest.mark.anyio


@tool(risk=RiskLevel.SAFE, idempotent=True)
async def slow_echo(text: str) -> str:
    """Echo slowly."""
    await asyncio.sleep(0.3)
    return text


def delegating(name: str, target: str, task: str, final: str) -> Agent:
    script = [
        {"tool_calls": [{"name": "delegate", "arguments": {"agent": target, "task": task}}]},
        {"content": final},
    ]
    return Agent(name=name, model=ScriptedModel(script), delegates=[target])


async def start(store: Store, agent: Agent, task: str) -> str:
    await store.workspaces.ensure()
    [rec] = await store.runs.create(
        [
            NewRun(
                run_id=new_run_id(),
                workspace_id="default",
                agent_name=agent.name,
                input=task,
                spec=agent.spec(),
                policy={},
            )
        ]
    )
    return rec.run_id


async def settle(store: Store, run_id: str, timeout: float = 20) -> RunStatus:
    async with asyncio.timeout(timeout):
        while True:
            rec = await store.runs.get(run_id)
            if rec.status.terminal or rec.status in (RunStatus.WAITING_FOR_APPROVAL, RunStatus.WAITING_FOR_HUMAN):
                return rec.status
            await store.events.wait(None, 0.1)


async def with_worker(store: Store, agents: list[Agent], body: Any) -> Any:
    worker = Worker(store, AgentRegistry(agents), config=WorkerConfig(poll_interval_s=0.05))
    task = asyncio.create_task(worker.run())
    try:
        return await body()
    finally:
        worker.stop()
        await task


async def test_three_level_tree_completes(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        leaf = Agent(name="leaf", model=ScriptedModel([{"content": "leaf did {{input}}"}]))
        mid = delegating("mid", "leaf", "the detail", "mid got [{{last_tool_result}}]")
        root = delegating("root", "mid", "the middle", "root got [{{last_tool_result}}]")
        root_id = await start(store, root, "the whole")

        async def body() -> None:
            assert await settle(store, root_id) is RunStatus.COMPLETED

        await with_worker(store, [root, mid, leaf], body)
        rec = await store.runs.get(root_id)
        assert rec.state.output == "root got [mid got [leaf did the detail]]"
        [mid_run] = await store.runs.page(parent_run_id=root_id)
        [leaf_run] = await store.runs.page(parent_run_id=mid_run.run_id)
        assert mid_run.agent_name == "mid" and leaf_run.agent_name == "leaf" and leaf_run.input == "the detail"
        assert mid_run.status is RunStatus.COMPLETED and leaf_run.status is RunStatus.COMPLETED
        events = await store.events.read(root_id)
        types = [e.type for e in events]
        assert EventType.CHILDREN_SPAWNED in types and EventType.CHILDREN_FINISHED in types
        assert fold(events) == rec.state
        tool_result = next(e for e in events if e.type is EventType.STEP_COMPLETED and e.payload.get("child_run_id"))
        assert tool_result.payload["child_run_id"] == mid_run.run_id
    finally:
        await store.close()


async def test_parallel_children_and_failures_come_back_as_observations(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        ok = Agent(name="ok", model=ScriptedModel([{"content": "fine: {{input}}"}]))
        bad = Agent(name="bad", model=ScriptedModel([{"error": "boom"}]), max_attempts=1, retry_backoff_s=0)
        script = [
            {
                "tool_calls": [
                    {"name": "delegate", "arguments": {"agent": "ok", "task": "one"}},
                    {"name": "delegate", "arguments": {"agent": "ok", "task": "two"}},
                    {"name": "delegate", "arguments": {"agent": "nobody", "task": "three"}},
                ]
            },
            {"content": "done"},
        ]
        root = Agent(name="root", model=ScriptedModel(script), delegates=[ok, bad])
        root_id = await start(store, root, "fan out")

        async def body() -> None:
            assert await settle(store, root_id) is RunStatus.COMPLETED

        await with_worker(store, [root], body)  # sub-agents given as objects are registered with the root
        events = await store.events.read(root_id)
        results = [
            e.payload for e in events if e.type is EventType.STEP_COMPLETED and e.payload.get("kind") == "TOOL_CALL"
        ]
        assert [r["result"] for r in results[:2]] == ["fine: one", "fine: two"]
        assert results[2]["is_error"] and "not one this agent may delegate to" in results[2]["result"]
        spawned = [e for e in events if e.type is EventType.CHILDREN_SPAWNED]
        assert len(spawned) == 1 and len(spawned[0].payload["children"]) == 2
    finally:
        await store.close()


async def test_cancel_at_the_root_cancels_the_whole_tree(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        leaf = Agent(
            name="leaf",
            model=ScriptedModel([{"tool_calls": [{"name": "slow_echo", "arguments": {"text": "x"}}]}] * 50),
            tools=[slow_echo],
        )
        mid = delegating("mid", "leaf", "work", "mid")
        root = delegating("root", "mid", "work", "root")
        root_id = await start(store, root, "go")

        async def body() -> None:
            async with asyncio.timeout(20):
                while True:
                    leaves = [r for r in await store.runs.page(agent="leaf") if r.state.steps >= 2]
                    if leaves:
                        break
                    await asyncio.sleep(0.05)
            await store.runs.cancel(root_id, reason="stop everything")
            async with asyncio.timeout(20):
                while True:
                    all_runs = await store.runs.page()
                    if all(r.status.terminal for r in all_runs):
                        break
                    await asyncio.sleep(0.05)

        await with_worker(store, [root, mid, leaf], body)
        all_runs = await store.runs.page()
        assert len(all_runs) == 3
        assert {r.status for r in all_runs} == {RunStatus.CANCELLED}
        for r in all_runs:
            assert fold(await store.events.read(r.run_id)) == r.state
    finally:
        await store.close()
