"""Stored workflows on SQLite and PostgreSQL: CRUD, per-workspace visibility and shadowing, runs executed by a
worker that only knows agents, and a running workflow unaffected by a later edit or delete."""

from __future__ import annotations

import asyncio

import pytest

from agentmaestro import Agent, ScriptedModel
from agentmaestro.actor import Actor
from agentmaestro.agents import AgentRegistry
from agentmaestro.core.states import RunStatus
from agentmaestro.engine.worker import Worker, WorkerConfig
from agentmaestro.errors import NotFoundError
from agentmaestro.service.workflows import StartWorkflow, start_workflow
from agentmaestro.store.base import Store
from agentmaestro.workflows import stored
from agentmaestro.workflows.spec import WorkflowError, WorkflowRegistry, validate_text
from tests.integration.test_workflows import until

V1 = """\
name: pipeline
description: first version
nodes:
  - id: first
    agent: echo
    input: "v1 {{ input }}"
  - id: second
    agent: slow
    depends_on: [first]
    input: "{{ nodes.first.output }}"
"""
V2 = V1.replace("first version", "second version").replace('"v1 {{ input }}"', '"v2 {{ input }}"')

KEY_X = Actor(name="key:x", workspace_id="team-a")


def agents() -> AgentRegistry:
    return AgentRegistry(
        [
            Agent(name="echo", model=ScriptedModel([{"content": "echo[{{input}}]"}])),
            Agent(name="slow", model=ScriptedModel([{"content": "slow[{{input}}]", "latency_s": 0.6}])),
        ]
    )


def folder() -> WorkflowRegistry:
    wf, problems = validate_text(V1.replace("name: pipeline", "name: shared").replace("v1", "folder"))
    assert wf is not None, problems
    registry = WorkflowRegistry()
    registry.register(wf, "/srv/workflows/shared.yaml")
    return registry


@pytest.mark.anyio
async def test_crud_versions_and_workspace_visibility(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        reg = agents()
        first = await stored.save(store, "team-a", V1, agents=reg, actor="cli:tester")
        assert (first.name, first.version, first.source, first.location) == (
            "pipeline",
            1,
            "stored",
            "stored:pipeline@v1",
        )
        second = await stored.save(store, "team-a", V2, agents=reg, actor="key:ops")
        assert second.version == 2 and second.created_by == "cli:tester" and second.updated_by == "key:ops"
        assert (await stored.find(store, "team-a", "pipeline", folder())).workflow.description == "second version"

        with pytest.raises(WorkflowError) as bad:
            await stored.save(store, "team-a", V1.replace("agent: echo", "agent: ghost"), agents=reg, actor="x")
        assert bad.value.problems[0].line == 5 and "unknown agent 'ghost'" in bad.value.problems[0].message

        # a stored workflow shadows the folder's one of the same name, in its own workspace only
        shadow = V1.replace("name: pipeline", "name: shared")
        await stored.save(store, "team-a", shadow, agents=reg, actor="x")
        seen_a = {e.name: e.source for e in await stored.visible(store, "team-a", folder())}
        seen_b = {e.name: e.source for e in await stored.visible(store, "team-b", folder())}
        assert seen_a == {"pipeline": "stored", "shared": "stored"}
        assert seen_b == {"shared": "folder"}
        with pytest.raises(NotFoundError):
            await stored.find(store, "team-b", "pipeline", folder())
        with pytest.raises(NotFoundError):
            await store.workflows.delete("team-b", "pipeline", actor="intruder")

        deleted = await store.workflows.delete("team-a", "pipeline", actor="x")
        assert deleted["version"] == 2
        with pytest.raises(NotFoundError):
            await stored.find(store, "team-a", "pipeline", folder())
        assert (await stored.save(store, "team-a", V1, agents=reg, actor="x")).version == 3  # versions keep counting
        actions = [e["action"] for e in await store.audit.page("team-a")]
        assert actions.count("workflow.save") == 4 and actions.count("workflow.delete") == 1
    finally:
        await store.close()


@pytest.mark.anyio
async def test_a_running_workflow_keeps_its_definition_through_an_edit_and_a_delete(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        reg = agents()
        await stored.save(store, "team-a", V1, agents=reg, actor="x")
        entry = await stored.find(store, "team-a", "pipeline", WorkflowRegistry())
        run = await start_workflow(store, StartWorkflow(entry=entry, input="go"), KEY_X)
        # the worker knows the agents only: stored workflows of any workspace are claimed by name
        w = Worker(store, reg, config=WorkerConfig(poll_interval_s=0.05))
        task = asyncio.create_task(w.run())
        try:

            async def second_node_started() -> bool:
                children = await store.runs.page(workspace_id="team-a", parent_run_id=run.run_id)
                return any(c.agent_name == "slow" for c in children)

            await until(store, second_node_started)
            await stored.save(store, "team-a", V2, agents=reg, actor="x")  # an edit while the run is going
            await store.workflows.delete("team-a", "pipeline", actor="x")  # and then a delete

            async def done() -> bool:
                return (await store.runs.get(run.run_id)).status.terminal

            await until(store, done)
            saved = await stored.save(store, "team-a", V2, agents=reg, actor="x")
            after = await start_workflow(store, StartWorkflow(entry=saved, input="again"), KEY_X)

            async def done_again() -> bool:
                return (await store.runs.get(after.run_id)).status.terminal

            await until(store, done_again)
        finally:
            w.stop()
            await task
        rec = await store.runs.get(run.run_id)
        assert rec.status is RunStatus.COMPLETED, rec.state.error
        assert rec.state.output == "slow[echo[v1 go]]"
        assert rec.spec["source"] == "stored:pipeline@v1" and rec.workspace_id == "team-a"
        assert (await store.runs.get(after.run_id)).state.output == "slow[echo[v2 again]]"
    finally:
        await store.close()
