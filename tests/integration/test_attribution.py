"""Runs started from Python record who started them (``sdk:<login>``, or the Orchestrator's ``actor``)."""

from __future__ import annotations

import asyncio
import getpass

from agentmaestro import Agent, Orchestrator, RunStatus
from agentmaestro.demo.tools import add, multiply
from agentmaestro.engine.worker import WorkerConfig
from agentmaestro.store.base import Store
from agentmaestro.workflows.spec import Workflow


def calc() -> Agent:
    return Agent(name="calc", model="scripted:calculator", tools=[add, multiply])


async def starters(db_url: str) -> dict[str, str | None]:
    store = Store.open(db_url)
    try:
        return {r.run_id: r.created_by for r in await store.runs.page(workspace_id="default", limit=100)}
    finally:
        await store.close()


def test_sdk_runs_and_workflows_record_their_starter(db_url: str) -> None:
    with Orchestrator(database_url=db_url, config=WorkerConfig(poll_interval_s=0.05)) as orch:
        run = orch.run(calc(), "What is (2 + 3) * 4?", timeout=30)
        wf = Workflow.model_validate({"name": "one", "nodes": [{"id": "a", "agent": "calc"}]})
        flow = orch.run_workflow(wf, "What is (2 + 3) * 4?", timeout=30)
        assert run.status is RunStatus.COMPLETED and flow.status is RunStatus.COMPLETED, (run.error, flow.error)
    with Orchestrator(database_url=db_url, worker=False, actor="service:nightly") as queue:
        queued = queue.start(calc(), "x")
    found = asyncio.run(starters(db_url))
    me = f"sdk:{getpass.getuser()}"
    assert found[run.run_id] == me and found[flow.run_id] == me
    assert found[queued] == "service:nightly"
    assert len(found) == 4 and set(found.values()) == {me, "service:nightly"}  # the node's run inherits it
