"""Approvals and escalations through the Python SDK."""

from __future__ import annotations

from pathlib import Path

from agentmaestro import Agent, Orchestrator, RiskLevel, RunStatus, ScriptedModel, tool
from agentmaestro.engine.worker import WorkerConfig

DONE: list[int] = []


@tool(risk=RiskLevel.DANGEROUS)
def purge(days: int) -> str:
    """Purge old data."""
    DONE.append(days)
    return f"purged {days}"


def test_approve_with_edited_arguments_and_escalation_answer(db_url: str, tmp_path: Path) -> None:
    DONE.clear()
    script = [{"tool_calls": [{"name": "purge", "arguments": {"days": 1}}]}, {"content": "{{last_tool_result}}"}]
    agent = Agent(name="purger", model=ScriptedModel(script), tools=[purge])
    with Orchestrator(database_url=db_url, config=WorkerConfig(poll_interval_s=0.05)) as orch:
        report = orch.run(agent, "clean up", timeout=30)
        assert report.status is RunStatus.WAITING_FOR_APPROVAL and DONE == []
        [appr] = orch.approvals()
        assert appr["risk"] == "DANGEROUS" and appr["run_id"] == report.run_id
        orch.approve(appr["approval_id"], arguments={"days": 30}, reason="keep a month", by="ann")
        final = orch.wait(report.run_id, timeout=30)
        assert final.status is RunStatus.COMPLETED and final.output == "purged 30" and DONE == [30]
        assert orch.approvals() == [] and orch.approvals(include_decided=True)[0]["decided_by"] == "ann"

        broken = Agent(name="broken", model=ScriptedModel([{"error": "bad"}]), max_attempts=1, retry_backoff_s=0)
        r2 = orch.run(broken, "x", timeout=30)
        assert r2.status is RunStatus.WAITING_FOR_HUMAN
        [req] = orch.human_requests()
        orch.resolve(req["request_id"], "answer", answer="by hand", by="ann")
        assert orch.wait(r2.run_id, timeout=30).output == "by hand"

        orch.set_gate({"deny_tools": ["purge"]})
        r3 = orch.run(agent, "again", timeout=30)
        assert r3.status is RunStatus.COMPLETED and "denied by policy" in (r3.output or "")
        assert DONE == [30]


def test_cancelling_a_waiting_run_empties_its_queue_entries(db_url: str) -> None:
    DONE.clear()
    script = [{"tool_calls": [{"name": "purge", "arguments": {"days": 1}}]}, {"content": "{{last_tool_result}}"}]
    agent = Agent(name="purger", model=ScriptedModel(script), tools=[purge])
    broken = Agent(name="broken", model=ScriptedModel([{"error": "bad"}]), max_attempts=1, retry_backoff_s=0)
    with Orchestrator(database_url=db_url, config=WorkerConfig(poll_interval_s=0.05)) as orch:
        held = orch.run(agent, "clean up", timeout=30)
        stuck = orch.run(broken, "x", timeout=30)
        assert held.status is RunStatus.WAITING_FOR_APPROVAL and stuck.status is RunStatus.WAITING_FOR_HUMAN
        orch.cancel(held.run_id, reason="not today")
        orch.cancel(stuck.run_id, reason="not today")
        assert orch.approvals() == [] and orch.human_requests() == []
        [appr] = orch.approvals(include_decided=True)
        assert appr["status"] == "expired" and "run cancelled: not today" in appr["decision_reason"]
        [req] = orch.human_requests(include_resolved=True)
        assert req["status"] == "resolved" and req["resolution"]["action"] == "cancelled"
        assert DONE == []
