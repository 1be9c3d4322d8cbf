"""Hard budgets: reserve the worst case before a model call, settle after; a run tree shares one budget."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentmaestro import Agent, RiskLevel, ScriptedModel, StrictPolicy, tool
from agentmaestro.agents import AgentRegistry
from agentmaestro.core.states import EventType, RunStatus
from agentmaestro.engine.worker import Worker, WorkerConfig
from agentmaestro.models.openai import OpenAIModel
from agentmaestro.store.base import Store
from agentmaestro.store.records import NewRun, new_run_id
from tests.fakes.openai_server import FakeOpenAIServer

pytestmark = pytest.mark.anyio


@tool(risk=RiskLevel.SAFE, idempotent=True)
def noop(i: int) -> int:
    """Do nothing."""
    return i


def hungry_script(n: int) -> dict[str, Any]:
    """n tool round trips; every model call reports 200 tokens."""
    turns: list[dict[str, Any]] = [{"tool_calls": [{"name": "noop", "arguments": {"i": i}}]} for i in range(n)]
    turns.append({"content": "done"})
    return {"usage": {"input_tokens": 150, "output_tokens": 50}, "turns": turns}


async def start(store: Store, agent: Agent, policy: StrictPolicy, workspace: str = "default") -> str:
    await store.workspaces.ensure(workspace)
    [rec] = await store.runs.create(
        [
            NewRun(
                run_id=new_run_id(),
                workspace_id=workspace,
                agent_name=agent.name,
                input="go",
                spec=agent.spec(),
                policy=policy.to_json(),
            )
        ]
    )
    return rec.run_id


async def drive(store: Store, agents: list[Agent], run_id: str) -> None:
    worker = Worker(store, AgentRegistry(agents), config=WorkerConfig(poll_interval_s=0.05))
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(30):
            while not (await store.runs.get(run_id)).status.terminal:
                await store.events.wait(None, 0.1)
    finally:
        worker.stop()
        await task


async def test_token_budget_stops_before_the_call_that_could_exceed_it(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        agent = Agent(name="hungry", model=ScriptedModel(hungry_script(10)), tools=[noop], max_output_tokens=100)
        run_id = await start(store, agent, StrictPolicy(max_tokens=1000))
        await drive(store, [agent], run_id)
        rec = await store.runs.get(run_id)
        assert rec.status is RunStatus.FAILED
        violation = (await store.events.read(run_id))[-1]
        assert violation.type is EventType.POLICY_VIOLATION and violation.payload["limit"] == "budget_tokens"
        assert "of run tree" in violation.payload["reason"] and "the call was not made" in violation.payload["reason"]
        # never over: what was spent plus the refused call's worst case is above the limit
        assert rec.state.tokens <= 1000
        assert rec.state.tokens + violation.payload["requested"] > 1000
        ledger = await store.budgets.ledger(f"run:{run_id}")
        assert ledger is not None and ledger["spent_tokens"] == rec.state.tokens and ledger["reserved_tokens"] == 0
    finally:
        await store.close()


async def test_sub_runs_share_the_root_budget(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        child = Agent(name="child", model=ScriptedModel(hungry_script(10)), tools=[noop], max_output_tokens=100)
        root_script = {
            "usage": {"input_tokens": 150, "output_tokens": 50},
            "turns": [
                {"tool_calls": [{"name": "delegate", "arguments": {"agent": "child", "task": "eat"}}]},
                {"content": "root done: {{last_tool_result}}"},
            ],
        }
        root = Agent(name="root", model=ScriptedModel(root_script), delegates=[child], max_output_tokens=100)
        run_id = await start(store, root, StrictPolicy(max_tokens=1200))
        await drive(store, [root], run_id)
        [child_run] = await store.runs.page(parent_run_id=run_id)
        assert child_run.status is RunStatus.FAILED
        assert child_run.state.error is not None and f"of run tree {run_id}" in child_run.state.error
        ledger = await store.budgets.ledger(f"run:{run_id}")
        root_rec = await store.runs.get(run_id)
        assert ledger is not None
        assert ledger["spent_tokens"] == root_rec.state.tokens + child_run.state.tokens <= 1200
        assert ledger["reserved_tokens"] == 0
    finally:
        await store.close()


async def test_usd_budgets_of_the_run_and_the_workspace(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        with FakeOpenAIServer(model="gpt-4.1-mini") as fake:
            for _ in range(6):
                fake.reply_tool_calls([("noop", {"i": 1})], usage=(2000, 500))
            fake.reply_text("done", usage=(2000, 500))
            model = OpenAIModel("gpt-4.1-mini", base_url=fake.base_url, api_key="sk-test", max_retries=0)
            agent = Agent(name="spender", model=model, tools=[noop], max_output_tokens=500)
            # gpt-4.1-mini: 0.40 / 1.60 USD per million tokens: a call costs 0.0016
            run_id = await start(store, agent, StrictPolicy(max_cost_usd=0.005))
            await drive(store, [agent], run_id)
            rec = await store.runs.get(run_id)
            assert rec.status is RunStatus.FAILED and rec.state.cost_usd <= 0.005
            last = (await store.events.read(run_id))[-1].payload
            assert last["limit"] == "budget_usd" and last["budget"] == f"of run tree {run_id}"

            # the workspace's monthly budget applies to every run, budgeted or not
            fake.reset()
            for _ in range(6):
                fake.reply_tool_calls([("noop", {"i": 1})], usage=(2000, 500))
            fake.reply_text("done", usage=(2000, 500))
            await store.workspaces.ensure("team")
            await store.workspaces.update_settings("team", {"quotas": {"monthly_budget_usd": 0.004}})
            run2 = await start(store, agent, StrictPolicy(), workspace="team")
            await drive(store, [agent], run2)
            rec2 = await store.runs.get(run2)
            assert rec2.status is RunStatus.FAILED and rec2.state.cost_usd <= 0.004
            assert "of workspace team" in (rec2.state.error or "")
    finally:
        await store.close()


async def test_the_server_maximum_caps_a_workspace_with_no_budget(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """MAESTRO_MAX_MONTHLY_BUDGET_USD stops spending in a workspace whose admin cleared its quotas."""
    monkeypatch.setenv("MAESTRO_MAX_MONTHLY_BUDGET_USD", "0.004")
    store = Store.open(db_url)
    try:
        with FakeOpenAIServer(model="gpt-4.1-mini") as fake:
            for _ in range(6):
                fake.reply_tool_calls([("noop", {"i": 1})], usage=(2000, 500))
            fake.reply_text("done", usage=(2000, 500))
            model = OpenAIModel("gpt-4.1-mini", base_url=fake.base_url, api_key="sk-test", max_retries=0)
            agent = Agent(name="spender", model=model, tools=[noop], max_output_tokens=500)
            await store.workspaces.ensure("team")
            await store.workspaces.update_settings("team", {"quotas": None})
            run_id = await start(store, agent, StrictPolicy(), workspace="team")
            await drive(store, [agent], run_id)
            rec = await store.runs.get(run_id)
            assert rec.status is RunStatus.FAILED and rec.state.cost_usd <= 0.004
            assert "of workspace team" in (rec.state.error or "")
    finally:
        await store.close()
