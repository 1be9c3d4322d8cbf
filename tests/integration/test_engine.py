"""The engine end to end on a real database (SQLite file and PostgreSQL)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from agentmaestro import Agent, RiskLevel, ScriptedModel, StrictPolicy, tool
from agentmaestro.agents import AgentRegistry
from agentmaestro.core.events import fold
from agentmaestro.core.states import EventType, RunStatus
from agentmaestro.engine.worker import Worker, WorkerConfig
from agentmaestro.store.base import Store
from agentmaestro.store.records import new_run_id
from agentmaestro.store.runs import NewRun

pytestmark = pytest.mark.anyio


@tool(risk=RiskLevel.SAFE, idempotent=True)
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def counting_script(k: int) -> list[dict[str, Any]]:
    """k-1 tool round trips then a final answer: 2k-1 steps."""
    turns: list[dict[str, Any]] = [
        {"tool_calls": [{"name": "add", "arguments": {"a": i, "b": 1}}]} for i in range(k - 1)
    ]
    turns.append({"content": "{{input}} -> {{last_tool_result}}"})
    return turns


async def start_runs(store: Store, agent: Agent, inputs: list[str], policy: StrictPolicy | None = None) -> list[str]:
    await store.workspaces.ensure()
    recs = await store.runs.create(
        [
            NewRun(
                run_id=new_run_id(),
                workspace_id="default",
                agent_name=agent.name,
                input=text,
                spec=agent.spec(),
                policy=(policy or StrictPolicy()).to_json(),
            )
            for text in inputs
        ]
    )
    return [r.run_id for r in recs]


async def run_to_end(store: Store, agents: list[Agent], run_ids: list[str], timeout: float = 60.0, **cfg: Any) -> None:
    worker = Worker(store, AgentRegistry(agents), config=WorkerConfig(poll_interval_s=0.05, **cfg))
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(timeout):
            while True:
                recs = [await store.runs.get(r) for r in run_ids]
                if all(r.status.terminal or r.status.waiting for r in recs):
                    break
                await store.events.wait(None, 0.2)
    finally:
        worker.stop()
        await task


async def test_200_runs_of_10_steps_complete_and_replay(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        agent = Agent(name="counter", model=ScriptedModel(counting_script(5)), tools=[add])
        ids = await start_runs(store, agent, [f"run {i}" for i in range(200)])
        await run_to_end(store, [agent], ids, concurrency=50)
        for i, run_id in enumerate(ids):
            rec = await store.runs.get(run_id)
            assert rec.status is RunStatus.COMPLETED, (rec.status, rec.state.error)
            assert rec.state.output == f"run {i} -> 4"
            assert rec.state.steps == 9
            events = await store.events.read(run_id)
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert fold(events) == rec.state
            steps = await store.steps.read(run_id)
            assert [s.step_index for s in steps] == list(range(9))
    finally:
        await store.close()


async def test_policy_violation_fails_the_run_with_reason(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        agent = Agent(name="looper", model=ScriptedModel(counting_script(20)), tools=[add])
        [run_id] = await start_runs(store, agent, ["x"], StrictPolicy(max_steps=4))
        await run_to_end(store, [agent], [run_id])
        rec = await store.runs.get(run_id)
        assert rec.status is RunStatus.FAILED
        assert rec.state.steps == 4
        assert "max_steps=4" in (rec.state.error or "")
        events = await store.events.read(run_id)
        assert events[-1].type is EventType.POLICY_VIOLATION
        assert events[-1].payload["limit"] == "max_steps"
    finally:
        await store.close()


async def test_invalid_tool_arguments_go_back_to_the_model(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        script = [
            {"tool_calls": [{"name": "add", "arguments": {"a": "two", "b": 1}}]},
            {"tool_calls": [{"name": "nope", "arguments": {}}]},
            {"content": "recovered: {{last_tool_result}}"},
        ]
        agent = Agent(name="clumsy", model=ScriptedModel(script), tools=[add])
        [run_id] = await start_runs(store, agent, ["x"])
        await run_to_end(store, [agent], [run_id])
        rec = await store.runs.get(run_id)
        assert rec.status is RunStatus.COMPLETED
        tool_events = [e for e in await store.events.read(run_id) if e.payload.get("kind") == "TOOL_CALL"]
        assert all(e.payload["is_error"] for e in tool_events)
        assert "invalid arguments" in tool_events[0].payload["result"]
        assert "unknown tool" in tool_events[1].payload["result"]
    finally:
        await store.close()


async def test_exhausted_script_is_retried_then_escalated_with_a_clear_error(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        agent = Agent(
            name="short",
            model=ScriptedModel([{"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]}]),
            tools=[add],
            max_attempts=2,
            retry_backoff_s=0,
        )
        [run_id] = await start_runs(store, agent, ["x"])
        await run_to_end(store, [agent], [run_id])
        rec = await store.runs.get(run_id)
        assert rec.status is RunStatus.WAITING_FOR_HUMAN
        failed = [e for e in await store.events.read(run_id) if e.type is EventType.STEP_FAILED]
        assert len(failed) == 2
        assert "has 1 turn(s); turn 2 was requested" in failed[0].payload["error"]
        [req] = await store.escalations.page()
        assert "has 1 turn(s); turn 2 was requested" in req["question"]
    finally:
        await store.close()


async def test_cancel_pending_and_running(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        slow = Agent(name="slow", model=ScriptedModel({"latency_s": 0.2, "turns": counting_script(30)}), tools=[add])
        [pending_id, running_id] = await start_runs(store, slow, ["p", "r"])
        rec = await store.runs.cancel(pending_id, reason="not needed")
        assert rec.status is RunStatus.CANCELLED
        worker = Worker(store, AgentRegistry([slow]), config=WorkerConfig(poll_interval_s=0.05, lease_ttl_s=0.6))
        task = asyncio.create_task(worker.run())
        try:
            async with asyncio.timeout(20):
                while (await store.runs.get(running_id)).state.steps < 2:
                    await asyncio.sleep(0.05)
                await store.runs.cancel(running_id, reason="stop now")
                while not (await store.runs.get(running_id)).status.terminal:
                    await asyncio.sleep(0.05)
        finally:
            worker.stop()
            await task
        rec = await store.runs.get(running_id)
        assert rec.status is RunStatus.CANCELLED
        assert "stop now" in (rec.state.error or "")
        assert fold(await store.events.read(running_id)) == rec.state
    finally:
        await store.close()


async def test_resume_failed_run_with_higher_limit_and_fork(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        agent = Agent(name="counter", model=ScriptedModel(counting_script(5)), tools=[add])
        [run_id] = await start_runs(store, agent, ["job"], StrictPolicy(max_steps=3))
        await run_to_end(store, [agent], [run_id])
        assert (await store.runs.get(run_id)).status is RunStatus.FAILED
        await store.runs.resume(run_id, policy={"max_steps": 50})
        await run_to_end(store, [agent], [run_id])
        rec = await store.runs.get(run_id)
        assert rec.status is RunStatus.COMPLETED and rec.state.output == "job -> 4"
        assert rec.state.steps == 9
        events = await store.events.read(run_id)
        assert fold(events) == rec.state
        # fork right after the third step completed: the fork redoes the remaining steps only
        third = next(e for e in events if e.type is EventType.STEP_COMPLETED and e.step == 2)
        fork = await store.runs.fork(run_id, at_seq=third.seq, policy={"max_steps": 50})
        assert fork.status is RunStatus.PENDING and fork.state.steps == 3
        await run_to_end(store, [agent], [fork.run_id])
        forked = await store.runs.get(fork.run_id)
        assert forked.status is RunStatus.COMPLETED and forked.state.output == "job -> 4"
        fevents = await store.events.read(fork.run_id)
        assert fold(fevents) == forked.state
        assert [e.type for e in fevents[: third.seq]] == [e.type for e in events[: third.seq]]
        assert any(e.type is EventType.RUN_FORKED for e in fevents)
        assert len(await store.steps.read(fork.run_id)) == 9
    finally:
        await store.close()


async def test_stale_worker_commit_is_rejected(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        agent = Agent(name="counter", model=ScriptedModel(counting_script(3)), tools=[add])
        [run_id] = await start_runs(store, agent, ["x"])
        [first] = await store.leases.claim(owner="w1", limit=1, lease_ttl=0.01)
        await asyncio.sleep(0.05)
        [second] = await store.leases.claim(owner="w2", limit=1, lease_ttl=30)
        assert second.recovered_from == "w1" and second.record.lease_epoch == first.record.lease_epoch + 1
        from agentmaestro.errors import LeaseLostError
        from agentmaestro.store.records import Commit

        stale = Commit(
            run_id=run_id,
            workspace_id="default",
            owner="w1",
            epoch=first.record.lease_epoch,
            version=first.record.version,
            state=first.record.state,
            events=(),
        )
        with pytest.raises(LeaseLostError):
            await store.steps.commit(stale)
        rec = await store.runs.get(run_id)
        assert rec.lease_owner == "w2"
        hb = await store.leases.heartbeat(owner="w1", leases=[(run_id, first.record.lease_epoch)], lease_ttl=30)
        assert run_id in hb.lost
        events = await store.events.read(run_id)
        assert [e.type for e in events][-1] is EventType.LEASE_RECOVERED
    finally:
        await store.close()


async def test_non_idempotent_tool_interrupted_is_escalated_not_rerun(db_url: str) -> None:
    store = Store.open(db_url)
    calls: list[int] = []

    @tool(risk=RiskLevel.ELEVATED)
    async def charge(amount: int) -> str:
        """Charge a card (not idempotent)."""
        calls.append(amount)
        await asyncio.sleep(30)
        return "charged"

    try:
        script = [{"tool_calls": [{"name": "charge", "arguments": {"amount": 5}}]}, {"content": "done"}]
        agent = Agent(name="payer", model=ScriptedModel(script), tools=[charge])
        [run_id] = await start_runs(store, agent, ["pay"])
        w1 = Worker(
            store,
            AgentRegistry([agent]),
            owner="w1",
            config=WorkerConfig(poll_interval_s=0.05, lease_ttl_s=0.5, shutdown_grace_s=0.1),
        )
        t1 = asyncio.create_task(w1.run())
        async with asyncio.timeout(10):
            while not calls:
                await asyncio.sleep(0.02)
        t1.cancel()  # the worker dies mid-call without recording the result
        with pytest.raises(asyncio.CancelledError):
            await t1
        await asyncio.sleep(0.6)
        await run_to_end(store, [agent], [run_id], lease_ttl_s=0.5)
        rec = await store.runs.get(run_id)
        assert rec.status is RunStatus.WAITING_FOR_HUMAN
        assert calls == [5]
        events = await store.events.read(run_id)
        assert events[-1].type is EventType.HUMAN_INPUT_REQUESTED
        assert events[-1].payload["kind"] == "uncertain_tool_call"
    finally:
        await store.close()


async def test_timeout_interrupts_a_long_step(db_url: str) -> None:
    store = Store.open(db_url)

    @tool(idempotent=True)
    async def sleepy() -> str:
        """Sleep for a long time."""
        await asyncio.sleep(30)
        return "late"

    try:
        agent = Agent(name="sleeper", model=ScriptedModel([{"tool_calls": [{"name": "sleepy"}]}]), tools=[sleepy])
        [run_id] = await start_runs(store, agent, ["x"], StrictPolicy(timeout_s=0.5))
        await run_to_end(store, [agent], [run_id], timeout=10)
        rec = await store.runs.get(run_id)
        assert rec.status is RunStatus.FAILED and "timeout_s" in (rec.state.error or "")
    finally:
        await store.close()


def test_dataclass_replace_sanity() -> None:
    assert dataclasses.is_dataclass(StrictPolicy())


async def test_engine_emits_genai_spans(tmp_path: Any) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from agentmaestro import telemetry

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.set_tracer_provider_for_tests(provider)
    store = Store.open(f"sqlite:///{tmp_path / 'otel.db'}")
    try:
        agent = Agent(name="counter", model=ScriptedModel(counting_script(2)), tools=[add])
        [run_id] = await start_runs(store, agent, ["x"])
        await run_to_end(store, [agent], [run_id])
    finally:
        telemetry.set_tracer_provider_for_tests(None)
        await store.close()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert {"invoke_agent counter", "chat inline", "execute_tool add"} <= set(spans)
    chat = spans["chat inline"].attributes or {}
    assert chat["gen_ai.operation.name"] == "chat" and chat["gen_ai.provider.name"] == "scripted"
    assert chat["gen_ai.usage.input_tokens"] == 10
    tool_span = spans["execute_tool add"].attributes or {}
    assert tool_span["gen_ai.tool.name"] == "add" and tool_span["maestro.run_id"] == run_id
    assert spans["execute_tool add"].parent is not None


async def test_postgres_notify_wakes_a_worker_in_another_process(db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL only; SQLite workers poll")
    listener, creator = Store.open(db_url), Store.open(db_url)
    try:
        await listener.leases.wait_runnable(0.3)  # starts the LISTEN thread
        agent = Agent(name="counter", model=ScriptedModel(counting_script(2)), tools=[add])
        loop = asyncio.get_running_loop()
        started = loop.time()
        waiter = asyncio.create_task(listener.leases.wait_runnable(10.0))
        await asyncio.sleep(0.2)
        await start_runs(creator, agent, ["x"])
        assert await waiter is True
        assert loop.time() - started < 3.0
    finally:
        await listener.close()
        await creator.close()
