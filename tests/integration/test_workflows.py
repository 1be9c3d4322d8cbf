"""Declarative workflows end to end on SQLite and PostgreSQL: the examples, a 50-node DAG under a
concurrency cap, stop and restart mid-workflow, failures, and replay of workflow runs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from agentmaestro import Agent, ScriptedModel
from agentmaestro.agents import AgentRegistry
from agentmaestro.core.events import Event, fold
from agentmaestro.core.states import EventType, RunStatus
from agentmaestro.engine.worker import Worker, WorkerConfig
from agentmaestro.store.base import Store
from agentmaestro.store.records import NewRun, new_run_id
from agentmaestro.workflows.spec import Workflow, WorkflowRegistry, load_workflows_dir

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"
TERMINAL = (EventType.RUN_COMPLETED, EventType.RUN_FAILED, EventType.RUN_CANCELLED)


async def start(store: Store, wf: Workflow, task: str, policy: dict[str, Any] | None = None) -> str:
    await store.workspaces.ensure()
    [rec] = await store.runs.create(
        [
            NewRun(
                run_id=new_run_id(),
                workspace_id="default",
                agent_name=wf.name,
                input=task,
                spec=wf.to_spec(),
                policy=policy or {},
            )
        ]
    )
    return rec.run_id


def worker(store: Store, agents: AgentRegistry, workflows: WorkflowRegistry) -> Worker:
    return Worker(store, agents, workflows=workflows, config=WorkerConfig(poll_interval_s=0.05))


async def until(store: Store, check: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await store.events.wait(None, 0.05)


async def finished(store: Store, run_id: str) -> bool:
    return (await store.runs.get(run_id)).status.terminal


async def assert_replays(store: Store, run_id: str) -> list[Event]:
    rec = await store.runs.get(run_id)
    events = await store.events.read(run_id)
    assert fold(events).to_json() == rec.state.to_json()
    return events


def spawned(events: list[Event]) -> list[list[str]]:
    return [[c["call_id"] for c in e.payload["children"]] for e in events if e.type is EventType.CHILDREN_SPAWNED]


@pytest.mark.anyio
async def test_examples_run_end_to_end(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        agents = AgentRegistry()
        workflows = load_workflows_dir(EXAMPLES, agents)
        cases = {
            "research-summary": "durable agents",
            "design-review": "the job queue",
            "support-routing": "I was charged twice on my invoice",
            "refine-paragraph": "durable agents",
        }
        ids = {name: await start(store, workflows.get(name), task) for name, task in cases.items()}
        w = worker(store, agents, workflows)
        task = asyncio.create_task(w.run())
        try:

            async def all_done() -> bool:
                return all([await finished(store, i) for i in ids.values()])

            await until(store, all_done)
        finally:
            w.stop()
            await task
        runs = {name: await store.runs.get(i) for name, i in ids.items()}
        assert {n: r.status for n, r in runs.items()} == dict.fromkeys(cases, RunStatus.COMPLETED)
        logs = {name: await assert_replays(store, i) for name, i in ids.items()}

        assert spawned(logs["research-summary"]) == [["research"], ["summary"]]
        assert runs["research-summary"].state.output == (
            "SUMMARY of [Summarise these notes: NOTES on [Research this topic: durable agents]: durable runs "
            "survive crashes; every step is an event. (replayed by the scripted model)] "
            "(replayed by the scripted model)"
        )
        assert spawned(logs["design-review"]) == [["plan"], ["security", "performance", "cost"], ["merge"]]
        merged = str(runs["design-review"].state.output)
        assert "ANALYSIS of [Cost review of the job queue for platform engineers]" in merged

        route = runs["support-routing"].state
        assert spawned(logs["support-routing"]) == [["classify"], ["billing"], ["reply"]]
        assert route.workflow is not None and route.workflow["nodes"]["technical"]["status"] == "skipped"
        assert route.output == "billing: SUMMARY of [ANSWER to [billing team: I was charged twice on my invoice]] " + (
            "(replayed by the scripted model)"
        )

        refine = runs["refine-paragraph"].state
        assert spawned(logs["refine-paragraph"]) == [["draft"], ["review"], ["draft"], ["review"], ["publish"]]
        assert refine.workflow is not None and refine.workflow["iteration"] == 2
        assert "(iteration 2). Reviewer feedback: add a concrete example" in str(refine.output)
        # Each node is an ordinary child run of the workflow run.
        children = await store.runs.page(parent_run_id=ids["refine-paragraph"], workspace_id="default")
        assert sorted(c.agent_name for c in children) == ["reviewer", "reviewer", "summarizer", "writer", "writer"]
        assert all(c.status is RunStatus.COMPLETED for c in children)
    finally:
        await store.close()


def quick(name: str, latency: float = 0.0) -> Agent:
    return Agent(name=name, model=ScriptedModel([{"content": "done: {{input}}", "latency_s": latency}]))


@pytest.mark.anyio
async def test_fifty_node_dag_respects_dependencies_and_the_concurrency_cap(db_url: str) -> None:
    # A binary tree of 49 nodes (wide levels) plus one node that joins all the leaves.
    nodes: list[dict[str, Any]] = [{"id": "n0", "agent": "step", "input": "n0"}]
    for i in range(1, 49):
        nodes.append({"id": f"n{i}", "agent": "step", "input": f"n{i}", "depends_on": [f"n{(i - 1) // 2}"]})
    nodes.append({"id": "join", "agent": "step", "input": "join", "depends_on": [f"n{i}" for i in range(24, 49)]})
    wf = Workflow.model_validate({"name": "fifty", "nodes": nodes})
    assert wf.max_concurrent_nodes == 5
    store = Store.open(db_url)
    try:
        agents = AgentRegistry([quick("step")])
        run_id = await start(store, wf, "go")
        w = worker(store, agents, WorkflowRegistry([wf]))
        task = asyncio.create_task(w.run())
        try:
            await until(store, lambda: finished(store, run_id), timeout=60)
        finally:
            w.stop()
            await task
        assert (await store.runs.get(run_id)).status is RunStatus.COMPLETED
        events = await assert_replays(store, run_id)
        waves = spawned(events)
        assert sorted(n for wave in waves for n in wave) == sorted(n["id"] for n in nodes)  # each node once
        assert max(len(wave) for wave in waves) == 5
        # From the children's own logs: no more than 5 node runs are ever alive at once, and every node
        # was created only after all its dependencies had finished.
        children = {c.spec["workflow_node"]: c for c in await store.runs.page(parent_run_id=run_id, limit=100)}
        assert len(children) == 50
        spans: dict[str, tuple[float, float]] = {}
        for node_id, child in children.items():
            log = await store.events.read(child.run_id)
            end = next(e for e in log if e.type in TERMINAL)
            assert end.type is EventType.RUN_COMPLETED
            spans[node_id] = (log[0].created_at, end.created_at)
        for n in nodes:
            for dep in n.get("depends_on", []):
                assert spans[n["id"]][0] >= spans[dep][1], f"{n['id']} started before {dep} finished"
        points = [(s, 1) for s, _ in spans.values()] + [(e, -1) for _, e in spans.values()]
        alive = peak = 0
        for _, delta in sorted(points):  # at equal times an end (-1) sorts before a start
            alive += delta
            peak = max(peak, alive)
        assert peak <= 5
    finally:
        await store.close()


@pytest.mark.anyio
async def test_stopping_and_restarting_the_worker_resumes_without_rerunning_nodes(db_url: str) -> None:
    chain = [{"id": f"s{i}", "agent": "slow", "input": f"s{i}"} for i in range(6)]
    for i in range(1, 6):
        chain[i]["depends_on"] = [f"s{i - 1}"]
    wf = Workflow.model_validate({"name": "chain", "nodes": chain})
    store = Store.open(db_url)
    try:
        agents = AgentRegistry([quick("slow", latency=0.15)])
        workflows = WorkflowRegistry([wf])
        run_id = await start(store, wf, "go")

        async def two_done() -> bool:
            st = (await store.runs.get(run_id)).state.workflow or {"nodes": {}}
            return sum(1 for n in st["nodes"].values() if n["status"] == "completed") >= 2

        first = worker(store, agents, workflows)
        task = asyncio.create_task(first.run())
        await until(store, two_done)
        first.stop()
        await task
        mid = await store.runs.get(run_id)
        assert not mid.status.terminal
        done_before = {
            k: v["run_id"] for k, v in (mid.state.workflow or {})["nodes"].items() if v["status"] == "completed"
        }
        assert len(done_before) >= 2

        second = worker(store, agents, workflows)
        task = asyncio.create_task(second.run())
        try:
            await until(store, lambda: finished(store, run_id))
        finally:
            second.stop()
            await task
        rec = await store.runs.get(run_id)
        assert rec.status is RunStatus.COMPLETED
        assert rec.state.output == "done: s5"
        events = await assert_replays(store, run_id)
        assert spawned(events) == [[f"s{i}"] for i in range(6)]  # no node started twice
        after = (rec.state.workflow or {})["nodes"]
        assert all(after[k]["run_id"] == v and after[k]["runs"] == 1 for k, v in done_before.items())
        assert len(await store.runs.page(parent_run_id=run_id)) == 6
    finally:
        await store.close()


@pytest.mark.anyio
async def test_failures_and_skips(db_url: str) -> None:
    broken = Agent(name="broken", model=ScriptedModel([{"error": "boom"}]), max_attempts=1)
    ok = quick("ok")
    fails = Workflow.model_validate(
        {
            "name": "fails",
            "nodes": [
                {"id": "a", "agent": "broken", "retry": {"max_attempts": 1}},
                {"id": "b", "agent": "ok", "depends_on": ["a"]},
            ],
        }
    )
    tolerant = Workflow.model_validate(
        {
            "name": "tolerant",
            "nodes": [
                {"id": "a", "agent": "broken", "on_failure": "continue", "retry": {"max_attempts": 1}},
                {"id": "b", "agent": "ok", "depends_on": ["a"], "input": "after {{ nodes.a.status }}"},
                {"id": "c", "agent": "ok", "when": "false"},
                {"id": "d", "agent": "ok", "depends_on": ["c"]},
            ],
        }
    )
    store = Store.open(db_url)
    try:
        agents = AgentRegistry([broken, ok])
        ids = [await start(store, wf, "x") for wf in (fails, tolerant)]
        w = worker(store, agents, WorkflowRegistry([fails, tolerant]))
        task = asyncio.create_task(w.run())

        async def both_escalated() -> bool:
            return len(await store.escalations.page()) == 2

        try:
            await until(store, both_escalated)
            # The failing node escalates to a human (governance applies to nodes); abandon it.
            for req in await store.escalations.page():
                await store.escalations.resolve(req["request_id"], action="abandon", by="test", workspace_id="default")
            await until(store, lambda: finished(store, ids[0]))
            await until(store, lambda: finished(store, ids[1]))
        finally:
            w.stop()
            await task
        failed, tolerated = [await store.runs.get(i) for i in ids]
        assert failed.status is RunStatus.FAILED and "node 'a' (broken) failed" in str(failed.state.error)
        assert spawned(await assert_replays(store, ids[0])) == [["a"]]
        assert tolerated.status is RunStatus.COMPLETED
        assert tolerated.state.output == "done: after failed"
        nodes = (tolerated.state.workflow or {})["nodes"]
        assert nodes["c"]["status"] == nodes["d"]["status"] == "skipped"
        await assert_replays(store, ids[1])
    finally:
        await store.close()


def test_sdk_run_workflow(db_url: str) -> None:
    from agentmaestro import Orchestrator

    with Orchestrator(db_url) as orch:
        report = orch.run_workflow(EXAMPLES / "routing.yaml", "Please refund the double charge", timeout=30)
    assert str(report.status) == "COMPLETED"
    assert str(report.output).startswith("billing: SUMMARY of [ANSWER to [billing team: Please refund")
