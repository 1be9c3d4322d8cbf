"""Recovering interrupted calls: steps finished by a person or outside a worker get their ``steps`` rows, and
reconcilable tools settle an uncertain call without a person. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from agentmaestro import Agent, RiskLevel, ScriptedModel, StrictPolicy, tool
from agentmaestro.agents import AgentRegistry
from agentmaestro.cli.runs import _steps_table_differences
from agentmaestro.core.events import fold
from agentmaestro.core.reconcile import Reconciled, idempotency_key
from agentmaestro.core.states import EventType, RunStatus
from agentmaestro.engine.worker import Worker, WorkerConfig
from agentmaestro.store.base import Store
from agentmaestro.store.records import new_run_id
from agentmaestro.store.runs import NewRun
from agentmaestro.tools.context import ToolContext

pytestmark = pytest.mark.anyio

CHARGES: list[int] = []


@tool(risk=RiskLevel.SAFE)
async def charge(amount: int) -> str:
    """Charge a card (not idempotent); takes long enough to be interrupted."""
    CHARGES.append(amount)
    await asyncio.sleep(30)
    return f"charged {amount}"


@pytest.fixture(autouse=True)
def _reset() -> None:
    CHARGES.clear()


async def start(store: Store, agent: Agent, task: str = "do it") -> str:
    await store.workspaces.ensure()
    [rec] = await store.runs.create(
        [
            NewRun(
                run_id=new_run_id(),
                workspace_id="default",
                agent_name=agent.name,
                input=task,
                spec=agent.spec(),
                policy=StrictPolicy().to_json(),
            )
        ]
    )
    return rec.run_id


async def settle(store: Store, agents: list[Agent], run_id: str, timeout: float = 15.0) -> RunStatus:
    """Run a worker until ``run_id`` is terminal or waits for a person (or an approval)."""
    worker = Worker(store, AgentRegistry(agents), config=WorkerConfig(poll_interval_s=0.05, lease_ttl_s=0.5))
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(timeout):
            while True:
                rec = await store.runs.get(run_id)
                if rec.status.terminal or (rec.status.waiting and rec.status is not RunStatus.WAITING_FOR_CHILDREN):
                    return rec.status
                await store.events.wait(run_id, 0.1)
    finally:
        worker.stop()
        await task


async def crash_mid_call(store: Store, agent: Agent, run_id: str, started: list[Any]) -> None:
    """A worker starts the run's non-idempotent call and dies before recording it; its lease runs out."""
    worker = Worker(
        store,
        AgentRegistry([agent]),
        owner="doomed",
        config=WorkerConfig(poll_interval_s=0.05, lease_ttl_s=0.5, shutdown_grace_s=0.1),
    )
    task = asyncio.create_task(worker.run())
    async with asyncio.timeout(10):
        while not started:
            await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.6)


async def assert_steps_agree(store: Store, *run_ids: str) -> None:
    """The steps tables, the snapshots, replays of the events and the usage report say the same."""
    states = []
    for run_id in run_ids:
        rec = await store.runs.get(run_id)
        assert fold(await store.events.read(run_id)) == rec.state
        rows = await store.steps.read(run_id)
        assert [r.step_index for r in rows] == list(range(rec.state.steps))
        assert _steps_table_differences(rec.state, [r.to_json() for r in rows]) == {}
        states.append(rec.state)
    _, totals = await store.usage.report("default", since=0, until=time.time() + 60, group_by="agent")
    assert totals["steps"] == sum(s.steps for s in states)
    assert totals["tool_calls"] == sum(s.tool_calls for s in states)
    assert totals["input_tokens"] == sum(s.input_tokens for s in states)


async def test_a_step_answered_by_a_person_gets_its_steps_row(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        script = [{"tool_calls": [{"name": "charge", "arguments": {"amount": 42}}]}, {"content": "paid"}]
        agent = Agent(name="payer", model=ScriptedModel(script), tools=[charge])
        run_id = await start(store, agent)
        await crash_mid_call(store, agent, run_id, CHARGES)
        assert await settle(store, [agent], run_id) is RunStatus.WAITING_FOR_HUMAN
        rows = await store.steps.read(run_id)
        assert len(rows) == 1  # the model call; the charge is uncertain
        [req] = await store.escalations.page()
        await store.escalations.resolve(req["request_id"], action="answer", answer="charged 42", by="ops")
        assert await settle(store, [agent], run_id) is RunStatus.COMPLETED
        assert CHARGES == [42]
        rows = await store.steps.read(run_id)
        answered = rows[1]
        assert (answered.kind.value, answered.name, answered.status) == ("TOOL_CALL", "charge", "completed")
        completed = next(
            e for e in await store.events.read(run_id) if e.type is EventType.STEP_COMPLETED and e.step == 1
        )
        assert answered.seq == completed.seq and completed.payload["answered_by"] == "ops"
        await assert_steps_agree(store, run_id)
    finally:
        await store.close()


@tool(risk=RiskLevel.DANGEROUS)
def wipe(target: str) -> str:
    """Delete everything in a target."""
    return f"wiped {target}"


async def test_a_rejected_call_gets_its_steps_row(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        script = [{"tool_calls": [{"name": "wipe", "arguments": {"target": "prod"}}]}, {"content": "ok"}]
        agent = Agent(name="ops", model=ScriptedModel(script), tools=[wipe])
        run_id = await start(store, agent)
        assert await settle(store, [agent], run_id) is RunStatus.WAITING_FOR_APPROVAL
        [appr] = await store.approvals.page()
        await store.approvals.resolve(appr["approval_id"], approve=False, by="ann", reason="not prod")
        assert await settle(store, [agent], run_id) is RunStatus.COMPLETED
        rows = await store.steps.read(run_id)
        assert [(r.kind.value, r.status) for r in rows] == [
            ("MODEL_CALL", "completed"),
            ("TOOL_CALL", "rejected"),
            ("MODEL_CALL", "completed"),
        ]
        await assert_steps_agree(store, run_id)
    finally:
        await store.close()


async def test_a_delegated_call_gets_its_steps_row(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        helper = Agent(name="helper", model=ScriptedModel([{"content": "42"}]))
        boss = Agent(
            name="boss",
            model=ScriptedModel(
                [
                    {"tool_calls": [{"name": "delegate", "arguments": {"agent": "helper", "task": "answer"}}]},
                    {"content": "the helper said {{last_tool_result}}"},
                ]
            ),
            delegates=["helper"],
        )
        run_id = await start(store, boss)
        assert await settle(store, [boss, helper], run_id) is RunStatus.COMPLETED
        rows = await store.steps.read(run_id)
        assert [(r.name, r.status) for r in rows][1] == ("delegate", "completed")
        [child] = await store.runs.page(workspace_id="default", parent_run_id=run_id)
        await assert_steps_agree(store, run_id, child.run_id)
    finally:
        await store.close()


def test_replay_reports_a_step_missing_from_the_steps_table() -> None:
    from agentmaestro.core.events import RunState

    state = RunState(status=RunStatus.COMPLETED, steps=3, input_tokens=10, output_tokens=2, cost_usd=0.5)
    rows = [
        {"step": 0, "input_tokens": 10, "output_tokens": 2, "cost_usd": 0.5},
        {"step": 2, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0},
    ]
    diffs = _steps_table_differences(state, rows)
    assert diffs == {"steps table: rows": (2, 3), "steps table: step indexes": ([0, 2], [0, 1, 2])}


# ------------------------------------------------------------------------------ reconcilable tools

LEDGER: dict[str, int] = {}
"""A payment service's record of charges by idempotency key."""
KEYS: list[str] = []
SLOW = {"first": True}


async def _pay(amount: int, ctx: ToolContext) -> str:
    KEYS.append(ctx.idempotency_key)
    LEDGER.setdefault(ctx.idempotency_key, amount)  # the service charges a key once
    if SLOW["first"]:
        SLOW["first"] = False
        await asyncio.sleep(30)  # the worker dies here, after the charge went through
    return f"charged {amount} ({ctx.idempotency_key})"


def ledger_reconcile(arguments: dict[str, Any], key: str) -> Reconciled:
    if key in LEDGER:
        return Reconciled.happened(f"charged {LEDGER[key]} ({key})", reason="the ledger has the key")
    return Reconciled.did_not_happen("the ledger has no charge with this key")


@tool(reconcile=ledger_reconcile)
async def pay(amount: int, ctx: ToolContext) -> str:
    """Charge a card; the payment service records each idempotency key."""
    return await _pay(amount, ctx)


def broken_reconcile(arguments: dict[str, Any], key: str) -> Reconciled:
    raise ConnectionError("ledger unreachable")


@tool(reconcile=broken_reconcile)
async def pay_unsure(amount: int, ctx: ToolContext) -> str:
    """Charge a card; its reconcile cannot reach the ledger."""
    return await _pay(amount, ctx)


@tool(idempotency_key=True)
async def pay_keyed(amount: int, ctx: ToolContext) -> str:
    """Charge a card, passing the idempotency key to the payment service."""
    return await _pay(amount, ctx)


@pytest.fixture(autouse=True)
def _reset_ledger() -> None:
    LEDGER.clear()
    KEYS.clear()
    SLOW["first"] = True


def pay_agent(tool_: Any) -> Agent:
    script = [{"tool_calls": [{"name": tool_.name, "arguments": {"amount": 7}}]}, {"content": "{{last_tool_result}}"}]
    return Agent(name="payer", model=ScriptedModel(script), tools=[tool_])


def reconciled_events(events: list[Any]) -> list[dict[str, Any]]:
    return [e.payload for e in events if e.type is EventType.STEP_RECONCILED]


async def test_a_call_the_tool_reports_as_done_is_recorded_without_a_person(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        agent = pay_agent(pay)
        run_id = await start(store, agent)
        await crash_mid_call(store, agent, run_id, KEYS)
        assert await settle(store, [agent], run_id) is RunStatus.COMPLETED
        key = idempotency_key(run_id, 1)
        assert KEYS == [key] and LEDGER == {key: 7}  # called once
        assert (await store.runs.get(run_id)).state.output == f"charged 7 ({key})"
        assert await store.escalations.page(statuses=None) == []
        events = await store.events.read(run_id)
        [decided] = reconciled_events(events)
        assert decided["outcome"] == "happened" and decided["decision"] == "record"
        assert decided["idempotency_key"] == key and decided["reason"] == "the ledger has the key"
        rows = await store.steps.read(run_id)
        assert (rows[1].name, rows[1].status) == ("pay", "completed")
        [completed] = [e for e in events if e.type is EventType.STEP_COMPLETED and e.step == 1]
        assert rows[1].seq == completed.seq and completed.payload["reconciled"] is True
        await assert_steps_agree(store, run_id)
    finally:
        await store.close()


async def test_a_call_the_tool_reports_as_not_done_is_made(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        agent = pay_agent(pay)
        run_id = await start(store, agent)
        await crash_mid_call(store, agent, run_id, KEYS)
        LEDGER.clear()  # the charge never reached the service
        assert await settle(store, [agent], run_id) is RunStatus.COMPLETED
        key = idempotency_key(run_id, 1)
        assert KEYS == [key, key] and LEDGER == {key: 7}
        events = await store.events.read(run_id)
        [decided] = reconciled_events(events)
        assert decided["outcome"] == "did_not_happen" and decided["decision"] == "run"
        assert [e.type for e in events].count(EventType.STEP_STARTED) == 2
        await assert_steps_agree(store, run_id)
    finally:
        await store.close()


async def test_a_reconcile_that_fails_asks_a_person_and_says_why(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        agent = pay_agent(pay_unsure)
        run_id = await start(store, agent)
        await crash_mid_call(store, agent, run_id, KEYS)
        assert await settle(store, [agent], run_id) is RunStatus.WAITING_FOR_HUMAN
        assert len(KEYS) == 1
        [req] = await store.escalations.page()
        assert req["kind"] == "uncertain_tool_call" and "ConnectionError: ledger unreachable" in req["question"]
        [decided] = reconciled_events(await store.events.read(run_id))
        assert decided["outcome"] == "cannot_tell" and decided["decision"] == "ask"
        await store.escalations.resolve(req["request_id"], action="answer", answer="charged 7", by="ops")
        assert await settle(store, [agent], run_id) is RunStatus.COMPLETED
        await assert_steps_agree(store, run_id)
    finally:
        await store.close()


async def test_a_keyed_tool_is_called_again_with_the_same_key(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        agent = pay_agent(pay_keyed)
        run_id = await start(store, agent)
        await crash_mid_call(store, agent, run_id, KEYS)
        assert await settle(store, [agent], run_id) is RunStatus.COMPLETED
        key = idempotency_key(run_id, 1)
        assert KEYS == [key, key] and LEDGER == {key: 7}  # two calls, one charge
        [decided] = reconciled_events(await store.events.read(run_id))
        assert decided["outcome"] == "cannot_tell" and decided["decision"] == "run"
        assert await store.escalations.page(statuses=None) == []
    finally:
        await store.close()


async def test_migration_0016_rebuilds_the_missing_steps_rows(db_url: str) -> None:
    """A database written before 0016 (a person's answer left no steps row): upgrading adds the row."""
    from alembic import command
    from sqlalchemy import create_engine, delete

    from agentmaestro.store import migrate
    from agentmaestro.store.dialects import normalize_url
    from agentmaestro.store.schema import steps

    store = Store.open(db_url)
    try:
        script = [{"tool_calls": [{"name": "wipe", "arguments": {"target": "prod"}}]}, {"content": "ok"}]
        agent = Agent(name="ops", model=ScriptedModel(script), tools=[wipe])
        run_id = await start(store, agent)
        assert await settle(store, [agent], run_id) is RunStatus.WAITING_FOR_APPROVAL
        [appr] = await store.approvals.page()
        await store.approvals.resolve(appr["approval_id"], approve=False, by="ann", reason="not prod")
        assert await settle(store, [agent], run_id) is RunStatus.COMPLETED
        before = [r.to_json() for r in await store.steps.read(run_id)]
    finally:
        await store.close()
    engine = create_engine(normalize_url(db_url))
    try:
        cfg = migrate._config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0015")
            conn.execute(delete(steps).where(steps.c.run_id == run_id, steps.c.step_index == 1))  # as 0015 left it
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    store = Store.open(db_url)
    try:
        after = [r.to_json() for r in await store.steps.read(run_id)]
        assert after == before and after[1]["status"] == "rejected"
        await assert_steps_agree(store, run_id)
    finally:
        await store.close()
