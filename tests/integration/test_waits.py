"""Waiting for a run costs no read per step: the commit that changes a run tells its waiters the new status.

Another process's change is still seen: by NOTIFY on PostgreSQL, by the shared status poll on SQLite.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentmaestro import Agent, Orchestrator, RiskLevel, ScriptedModel, StrictPolicy, tool
from agentmaestro.agents import AgentRegistry
from agentmaestro.core.states import RunStatus
from agentmaestro.engine.worker import Worker, WorkerConfig
from agentmaestro.store.base import Store
from agentmaestro.store.records import NewRun, new_run_id

pytestmark = pytest.mark.anyio


@tool(risk=RiskLevel.SAFE, idempotent=True)
def inc(i: int) -> int:
    """Add one."""
    return i + 1


def counting_agent(name: str, calls: int) -> Agent:
    turns: list[dict[str, Any]] = [{"tool_calls": [{"name": "inc", "arguments": {"i": i}}]} for i in range(calls)]
    turns.append({"content": "done {{last_tool_result}}"})
    return Agent(name=name, model=ScriptedModel({"turns": turns}), tools=[inc])


def test_waiting_for_a_run_reads_it_a_few_times_not_once_per_step(db_url: str) -> None:
    agent = counting_agent("counter", 12)  # 25 durable steps
    with Orchestrator(database_url=db_url) as orch:
        reads: list[str] = []
        real_get_run = orch.store.runs.get

        async def counting_get_run(run_id: str, workspace_id: str | None = None) -> Any:
            reads.append(run_id)
            return await real_get_run(run_id, workspace_id)

        orch.store.runs.get = counting_get_run  # type: ignore[method-assign]
        report = orch.run(agent, "go", policy=StrictPolicy(max_steps=40, max_cost_usd=10))
        assert report.status is RunStatus.COMPLETED and report.steps == 25
        # the first read, and one when the commit said COMPLETED (a poll may add one on a slow machine)
        assert reads.count(report.run_id) <= 4, reads


async def test_a_change_made_by_another_process_wakes_the_waiter(db_url: str) -> None:
    waiter_store, worker_store = Store.open(db_url), Store.open(db_url)  # two stores: as two processes
    agent = counting_agent("remote", 2)
    try:
        await waiter_store.workspaces.ensure()
        [rec] = await waiter_store.runs.create(
            [
                NewRun(
                    run_id=new_run_id(),
                    workspace_id="default",
                    agent_name=agent.name,
                    input="go",
                    spec=agent.spec(),
                    policy=StrictPolicy().to_json(),
                )
            ]
        )
        wait = asyncio.ensure_future(
            waiter_store.runs.wait_for_status(rec.run_id, lambda s: s.terminal, timeout=30, workspace_id="default")
        )
        await asyncio.sleep(0.1)
        assert not wait.done()
        worker = Worker(worker_store, AgentRegistry([agent]), config=WorkerConfig(poll_interval_s=0.05))
        task = asyncio.create_task(worker.run())
        try:
            done = await asyncio.wait_for(wait, 20)
        finally:
            worker.stop()
            await task
        assert done.status is RunStatus.COMPLETED and done.state.output == "done 2"
    finally:
        await waiter_store.close()
        await worker_store.close()


async def test_many_concurrent_creations_share_a_transaction_and_keep_their_own_runs(db_url: str) -> None:
    store = Store.open(db_url)
    agent = counting_agent("many", 0)
    try:
        await store.workspaces.ensure()

        def new(i: int, workspace: str = "default") -> NewRun:
            return NewRun(
                run_id=new_run_id(),
                workspace_id=workspace,
                agent_name=agent.name,
                input=f"task {i}",
                spec=agent.spec(),
                policy=StrictPolicy().to_json(),
            )

        batches = [[new(i)] for i in range(50)] + [[new(100), new(101)]]
        records = await asyncio.gather(*(store.runs.create(b) for b in batches))
        for batch, recs in zip(batches, records, strict=True):
            assert [r.run_id for r in recs] == [n.run_id for n in batch]
            assert all(r.status is RunStatus.PENDING for r in recs)
        # one bad call (its workspace does not exist) fails alone; the others that waited with it are created
        good = [new(200 + i) for i in range(5)]
        bad = new(300, workspace="no-such-workspace")
        results = await asyncio.gather(
            *(store.runs.create([n]) for n in good), store.runs.create([bad]), return_exceptions=True
        )
        assert all(not isinstance(r, BaseException) for r in results[:-1]), results
        assert isinstance(results[-1], Exception)
        for n in good:
            assert (await store.runs.get(n.run_id)).status is RunStatus.PENDING
    finally:
        await store.close()
