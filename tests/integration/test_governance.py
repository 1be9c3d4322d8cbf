"""Risk gate, approvals, retries and human escalation, end to end on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentmaestro import Agent, RiskLevel, ScriptedModel, StrictPolicy, tool
from agentmaestro.agents import AgentRegistry
from agentmaestro.core.events import fold
from agentmaestro.core.gate import GatePolicy
from agentmaestro.core.messages import ModelRequest, ModelResponse
from agentmaestro.core.states import EventType, RunStatus
from agentmaestro.engine.worker import Worker, WorkerConfig
from agentmaestro.errors import ConflictError, NotFoundError, ValidationError
from agentmaestro.store.base import Store
from agentmaestro.store.records import new_run_id
from agentmaestro.store.runs import NewRun

pytestmark = pytest.mark.anyio

CALLS: list[tuple[str, dict[str, Any]]] = []


@tool(risk=RiskLevel.DANGEROUS)
def wipe(target: str) -> str:
    """Delete everything in a target (dangerous)."""
    CALLS.append(("wipe", {"target": target}))
    return f"wiped {target}"


@tool(risk=RiskLevel.ELEVATED, idempotent=True)
def deploy(env: str) -> str:
    """Deploy to an environment."""
    CALLS.append(("deploy", {"env": env}))
    return f"deployed {env}"


@tool(risk=RiskLevel.SAFE, idempotent=True)
def flaky(n: int) -> str:
    """Always fails."""
    CALLS.append(("flaky", {"n": n}))
    raise RuntimeError("backend unavailable")


class RecordingModel(ScriptedModel):
    """A scripted model that keeps every request it saw."""

    def __init__(self, turns: list[dict[str, Any]]) -> None:
        super().__init__(turns)
        self.requests: list[ModelRequest] = []

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        return await super().complete(request)


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


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


class Running:
    """A worker running in the background for the duration of a test."""

    def __init__(self, store: Store, agents: list[Agent], **cfg: Any) -> None:
        self.store = store
        self.worker = Worker(store, AgentRegistry(agents), config=WorkerConfig(poll_interval_s=0.05, **cfg))
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.worker.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.worker.stop()
        assert self.task is not None
        await self.task

    async def settle(self, run_id: str, timeout: float = 15.0) -> RunStatus:
        async with asyncio.timeout(timeout):
            while True:
                rec = await self.store.runs.get(run_id)
                if rec.status.terminal or rec.status.waiting:
                    return rec.status
                await self.store.events.wait(run_id, 0.1)


def wipe_script(final: str = "done: {{last_tool_result}}") -> list[dict[str, Any]]:
    return [{"tool_calls": [{"name": "wipe", "arguments": {"target": "staging"}}]}, {"content": final}]


async def test_dangerous_call_waits_then_runs_once_after_approval(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        agent = Agent(name="ops", model=ScriptedModel(wipe_script()), tools=[wipe])
        run_id = await start(store, agent)
        async with Running(store, [agent]) as w:
            assert await w.settle(run_id) is RunStatus.WAITING_FOR_APPROVAL
            rec = await store.runs.get(run_id)
            assert rec.lease_owner is None and CALLS == []
            [appr] = await store.approvals.page()
            assert appr["tool"] == "wipe" and appr["risk"] == "DANGEROUS" and appr["arguments"] == {"target": "staging"}
            await store.approvals.resolve(appr["approval_id"], approve=True, by="ann", reason="planned")
            assert await w.settle(run_id) is RunStatus.COMPLETED
        assert CALLS == [("wipe", {"target": "staging"})]
        events = await store.events.read(run_id)
        granted = next(e for e in events if e.type is EventType.APPROVAL_GRANTED)
        assert granted.payload["by"] == "ann" and granted.payload["reason"] == "planned"
        assert fold(events) == (await store.runs.get(run_id)).state
        assert (await store.approvals.get(appr["approval_id"]))["status"] == "approved"
        with pytest.raises(ConflictError, match="already approved"):
            await store.approvals.resolve(appr["approval_id"], approve=False, by="bob")
    finally:
        await store.close()


async def test_rejection_reason_goes_back_to_the_model(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        model = RecordingModel(wipe_script("ok, not wiping"))
        agent = Agent(name="ops", model=model, tools=[wipe])
        run_id = await start(store, agent)
        async with Running(store, [agent]) as w:
            assert await w.settle(run_id) is RunStatus.WAITING_FOR_APPROVAL
            [appr] = await store.approvals.page()
            await store.approvals.resolve(appr["approval_id"], approve=False, by="ann", reason="not on a Friday")
            assert await w.settle(run_id) is RunStatus.COMPLETED
        assert CALLS == []
        last = model.requests[-1].messages[-1]
        assert last.role == "tool" and "rejected by ann: not on a Friday" in (last.content or "")
        rejected = next(e for e in await store.events.read(run_id) if e.type is EventType.APPROVAL_REJECTED)
        assert rejected.payload["by"] == "ann"
    finally:
        await store.close()


async def test_edited_arguments_run_as_edited(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        agent = Agent(name="ops", model=ScriptedModel(wipe_script()), tools=[wipe])
        run_id = await start(store, agent)
        async with Running(store, [agent]) as w:
            assert await w.settle(run_id) is RunStatus.WAITING_FOR_APPROVAL
            [appr] = await store.approvals.page()
            with pytest.raises(ValidationError):
                await store.approvals.resolve(appr["approval_id"], approve=True, by="ann", arguments=["nope"])  # type: ignore[arg-type]
            await store.approvals.resolve(
                appr["approval_id"], approve=True, by="ann", reason="use the sandbox", arguments={"target": "sandbox"}
            )
            assert await w.settle(run_id) is RunStatus.COMPLETED
        assert CALLS == [("wipe", {"target": "sandbox"})]
        rec = await store.runs.get(run_id)
        assert rec.state.output == "done: wiped sandbox"
        granted = next(e for e in await store.events.read(run_id) if e.type is EventType.APPROVAL_GRANTED)
        assert granted.payload["edited"] is True
    finally:
        await store.close()


async def test_expired_approval_is_denied_automatically(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        agent = Agent(
            name="ops",
            model=ScriptedModel(wipe_script("gave up")),
            tools=[wipe],
            gate=GatePolicy.from_json({"approval_ttl_s": 0.3}),
        )
        run_id = await start(store, agent)
        async with Running(store, [agent], sweep_interval_s=0.1) as w:
            assert await w.settle(run_id) is RunStatus.WAITING_FOR_APPROVAL
            [appr] = await store.approvals.page()
            assert await w.settle(run_id) is RunStatus.WAITING_FOR_APPROVAL
            async with asyncio.timeout(10):
                while (await store.runs.get(run_id)).status is not RunStatus.COMPLETED:
                    await asyncio.sleep(0.05)
        assert CALLS == []
        assert (await store.approvals.get(appr["approval_id"]))["status"] == "expired"
        with pytest.raises(ConflictError):
            await store.approvals.resolve(appr["approval_id"], approve=True, by="late")
        rejected = next(e for e in await store.events.read(run_id) if e.type is EventType.APPROVAL_REJECTED)
        assert rejected.payload["expired"] is True and rejected.payload["by"] == "system"
    finally:
        await store.close()


async def test_late_approval_after_expiry_never_executes(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        agent = Agent(
            name="ops",
            model=ScriptedModel(wipe_script("gave up")),
            tools=[wipe],
            gate=GatePolicy.from_json({"approval_ttl_s": 0.2}),
        )
        run_id = await start(store, agent)
        async with Running(store, [agent], sweep_interval_s=60) as w:  # no sweeper: the approval call itself expires it
            assert await w.settle(run_id) is RunStatus.WAITING_FOR_APPROVAL
            [appr] = await store.approvals.page()
            await asyncio.sleep(0.3)
            with pytest.raises(ConflictError, match="expired"):
                await store.approvals.resolve(appr["approval_id"], approve=True, by="late")
            assert await w.settle(run_id) is RunStatus.COMPLETED
        assert CALLS == []
    finally:
        await store.close()


async def test_deny_list_and_workspace_rules(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        await store.workspaces.ensure()
        await store.workspaces.update_settings("default", {"gate": {"deny_tools": ["wipe"]}})
        model = RecordingModel(wipe_script("blocked"))
        # The agent tries to loosen the rules: it cannot.
        agent = Agent(
            name="ops",
            model=model,
            tools=[wipe],
            gate=GatePolicy.from_json({"levels": {"DANGEROUS": "allow"}}),
        )
        run_id = await start(store, agent)
        async with Running(store, [agent]) as w:
            assert await w.settle(run_id) is RunStatus.COMPLETED
        assert CALLS == []
        assert "denied by policy" in (model.requests[-1].messages[-1].content or "")
        # ELEVATED needs approval once the workspace says so.
        await store.workspaces.update_settings("default", {"gate": {"levels": {"ELEVATED": "require_approval"}}})
        deployer = Agent(
            name="deployer",
            model=ScriptedModel(
                [{"tool_calls": [{"name": "deploy", "arguments": {"env": "prod"}}]}, {"content": "ok"}]
            ),
            tools=[deploy],
        )
        run2 = await start(store, deployer)
        async with Running(store, [deployer]) as w:
            assert await w.settle(run2) is RunStatus.WAITING_FOR_APPROVAL
        assert CALLS == []
    finally:
        await store.close()


async def test_failures_retry_then_escalate_then_human_answer_completes(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        turns = [{"tool_calls": [{"name": "flaky", "arguments": {"n": i}}]} for i in range(3)]
        turns += [{"content": "final: {{last_tool_result}}"}]
        model = RecordingModel(turns)
        agent = Agent(name="tries", model=model, tools=[flaky], max_attempts=3, retry_backoff_s=0.01)
        run_id = await start(store, agent)
        async with Running(store, [agent]) as w:
            assert await w.settle(run_id) is RunStatus.WAITING_FOR_HUMAN
            assert [c[1]["n"] for c in CALLS] == [0, 1, 2]
            # the model saw every earlier error (accumulated context)
            tool_msgs = [m for m in model.requests[-1].messages if m.role == "tool"]
            assert len(tool_msgs) == 2 and all("backend unavailable" in (m.content or "") for m in tool_msgs)
            [req] = await store.escalations.page()
            assert req["kind"] == "step_failed" and req["options"] == ["retry", "answer", "abandon"]
            with pytest.raises(ValidationError):
                await store.escalations.resolve(req["request_id"], action="explode", by="ann")
            await store.escalations.resolve(req["request_id"], action="answer", answer="use cached data", by="ann")
            assert await w.settle(run_id) is RunStatus.COMPLETED
        rec = await store.runs.get(run_id)
        assert rec.state.output is not None and rec.state.output.startswith("final:")
        assert "[Operator answer in place of the failed step] use cached data" in [
            m.content for m in model.requests[-1].messages
        ]
        assert fold(await store.events.read(run_id)) == rec.state
        with pytest.raises(ConflictError):
            await store.escalations.resolve(req["request_id"], action="retry", by="bob")
    finally:
        await store.close()


async def test_model_failures_escalate_and_abandon_fails_the_run(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        agent = Agent(name="broken", model=ScriptedModel([{"error": "bad request"}]), max_attempts=2, retry_backoff_s=0)
        run_id = await start(store, agent)
        async with Running(store, [agent]) as w:
            assert await w.settle(run_id) is RunStatus.WAITING_FOR_HUMAN
            [req] = await store.escalations.page()
            assert req["detail"]["step_kind"] == "MODEL_CALL"
            await store.escalations.resolve(req["request_id"], action="abandon", by="ann", instructions="wrong model")
            assert await w.settle(run_id) is RunStatus.FAILED
        rec = await store.runs.get(run_id)
        assert (rec.state.error or "").startswith("abandoned by ann: wrong model (last error: ")
        assert "bad request" in (rec.state.error or "")
        failed = [e for e in await store.events.read(run_id) if e.type is EventType.STEP_FAILED]
        assert len(failed) == 2
    finally:
        await store.close()


async def test_retry_with_instructions_and_answer_for_model_step(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        agent = Agent(name="broken", model=ScriptedModel([{"error": "bad request"}]), max_attempts=1, retry_backoff_s=0)
        run_id = await start(store, agent)
        async with Running(store, [agent]) as w:
            assert await w.settle(run_id) is RunStatus.WAITING_FOR_HUMAN
            [req] = await store.escalations.page()
            await store.escalations.resolve(req["request_id"], action="retry", by="ann", instructions="be brief")
            assert await w.settle(run_id) is RunStatus.WAITING_FOR_HUMAN
            [req2] = await store.escalations.page()
            assert req2["request_id"] != req["request_id"]
            await store.escalations.resolve(req2["request_id"], action="answer", answer="42", by="ann")
            assert await w.settle(run_id) is RunStatus.COMPLETED
        assert (await store.runs.get(run_id)).state.output == "42"
    finally:
        await store.close()


async def test_other_workspace_cannot_see_or_resolve(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        agent = Agent(name="ops", model=ScriptedModel(wipe_script()), tools=[wipe])
        run_id = await start(store, agent)
        await store.workspaces.ensure("other")
        async with Running(store, [agent]) as w:
            assert await w.settle(run_id) is RunStatus.WAITING_FOR_APPROVAL
            [appr] = await store.approvals.page()
            assert await store.approvals.page(workspace_id="other") == []
            with pytest.raises(NotFoundError):
                await store.approvals.resolve(appr["approval_id"], approve=True, by="eve", workspace_id="other")
        assert CALLS == []
    finally:
        await store.close()


async def test_one_decision_one_execution_across_forks(db_url: str) -> None:
    """A fork copies the grant into its history, but the grant authorises nothing there: the fork asks again.

    Red-team finding: forking at APPROVAL_GRANTED (or later) re-ran the approved DANGEROUS call with no new
    decision; two forks gave three executions. Every fork point of a completed run is tried.
    """
    store = Store.open(db_url)
    try:
        agent = Agent(name="ops", model=ScriptedModel(wipe_script()), tools=[wipe])
        run_id = await start(store, agent)
        async with Running(store, [agent]) as w:
            assert await w.settle(run_id) is RunStatus.WAITING_FOR_APPROVAL
            [appr] = await store.approvals.page()
            await store.approvals.resolve(appr["approval_id"], approve=True, by="ann")
            assert await w.settle(run_id) is RunStatus.COMPLETED
            assert len(CALLS) == 1
            events = await store.events.read(run_id)
            granted = next(e.seq for e in events if e.type is EventType.APPROVAL_GRANTED)
            forks = [await store.runs.fork(run_id, at_seq=granted) for _ in range(2)]
            for fork in forks:
                assert await w.settle(fork.run_id) is RunStatus.WAITING_FOR_APPROVAL
            assert len(CALLS) == 1
            pending = await store.approvals.page(statuses=["pending"])
            assert sorted(a["run_id"] for a in pending) == sorted(f.run_id for f in forks)
            assert appr["approval_id"] not in {a["approval_id"] for a in pending}
            # every other fork point: none executes the call without a decision of its own
            for e in events:
                if e.seq <= granted or e.type is EventType.RUN_COMPLETED:
                    continue
                fork = await store.runs.fork(run_id, at_seq=e.seq)
                assert await w.settle(fork.run_id) in (RunStatus.WAITING_FOR_APPROVAL, RunStatus.COMPLETED)
            assert len(CALLS) == 1
            # a fork's own approval authorises that fork's call, once
            mine = next(a for a in pending if a["run_id"] == forks[0].run_id)
            await store.approvals.resolve(mine["approval_id"], approve=True, by="ann")
            assert await w.settle(forks[0].run_id) is RunStatus.COMPLETED
            assert len(CALLS) == 2
            for fork in forks:
                assert fold(await store.events.read(fork.run_id)) == (await store.runs.get(fork.run_id)).state
    finally:
        await store.close()


async def test_resume_does_not_repeat_an_approved_call(db_url: str) -> None:
    """A run that failed after its approved call ran resumes without running it again."""
    store = Store.open(db_url)
    try:
        script = [
            {"tool_calls": [{"name": "wipe", "arguments": {"target": "staging"}}]},
            {"tool_calls": [{"name": "wipe", "arguments": {"target": "prod"}}]},
            {"content": "done"},
        ]
        agent = Agent(name="ops", model=ScriptedModel(script), tools=[wipe])
        await store.workspaces.ensure()
        [rec] = await store.runs.create(
            [
                NewRun(
                    run_id=new_run_id(),
                    workspace_id="default",
                    agent_name=agent.name,
                    input="do it",
                    spec=agent.spec(),
                    policy=StrictPolicy(max_tool_calls=1).to_json(),
                )
            ]
        )
        async with Running(store, [agent]) as w:
            assert await w.settle(rec.run_id) is RunStatus.WAITING_FOR_APPROVAL
            [appr] = await store.approvals.page()
            await store.approvals.resolve(appr["approval_id"], approve=True, by="ann")
            assert await w.settle(rec.run_id) is RunStatus.FAILED  # the second call breaks max_tool_calls
            assert CALLS == [("wipe", {"target": "staging"})]
            await store.runs.resume(rec.run_id, policy={"max_tool_calls": 5})
            assert await w.settle(rec.run_id) is RunStatus.WAITING_FOR_APPROVAL
            assert CALLS == [("wipe", {"target": "staging"})]
            [again] = await store.approvals.page(statuses=["pending"])
            assert again["arguments"] == {"target": "prod"}
    finally:
        await store.close()
