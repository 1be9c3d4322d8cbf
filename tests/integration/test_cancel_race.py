"""A cancel that arrives while the step that parks a run is being committed still cancels the run.

The commit that moves a run to WAITING_FOR_APPROVAL (or WAITING_FOR_HUMAN, WAITING_FOR_CHILDREN) reads a cancel
requested during the step, but no next step will act on it; the worker cancels the parked run at once, so no
approval of a cancelled run sits in the human queue.
"""

from __future__ import annotations

import time
from typing import Any

from agentmaestro import Agent, Orchestrator, RiskLevel, ScriptedModel, tool
from agentmaestro.core.states import EventType, RunStatus


@tool(risk=RiskLevel.DANGEROUS)
def wipe(target: str) -> str:
    """Delete everything in a target."""
    return f"wiped {target}"


def test_a_cancel_during_the_approval_request_commit_cancels_the_run(db_url: str) -> None:
    agent = Agent(
        name="ops",
        model=ScriptedModel([{"tool_calls": [{"name": "wipe", "arguments": {"target": "prod"}}]}, {"content": "ok"}]),
        tools=[wipe],
    )
    with Orchestrator(database_url=db_url) as orch:
        steps = orch.store.steps
        original = steps.commit
        cancelled: list[str] = []

        async def commit_after_a_cancel(commit: Any) -> Any:
            if commit.approval is not None and not cancelled:  # the cancel lands between decision and commit
                cancelled.append(commit.run_id)
                await orch.store.runs.cancel(commit.run_id, reason="changed my mind", by="ann")
            return await original(commit)

        steps.commit = commit_after_a_cancel  # type: ignore[method-assign]
        report = orch.run(agent, "clean up", timeout=30)  # returns once the run waits or ends
        assert cancelled == [report.run_id]
        deadline = time.monotonic() + 10
        while (rec := orch.get_run(report.run_id)).status is not RunStatus.CANCELLED:
            assert time.monotonic() < deadline, f"run left {rec.status.value} after a cancel"
            time.sleep(0.05)
        types = [e.type for e in orch.events(report.run_id)]
        assert types[-2:] == [EventType.APPROVAL_REQUESTED, EventType.RUN_CANCELLED]
        assert "changed my mind" in str(orch.events(report.run_id)[-1].payload["reason"])
        assert orch.approvals() == []  # nothing left to decide in the queue
