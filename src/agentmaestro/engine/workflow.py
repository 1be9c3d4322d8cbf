"""Drives one leased workflow run: plan from the folded state -> start nodes as child runs -> commit.

A workflow run never holds a worker while its nodes run: starting a wave of nodes commits
CHILDREN_SPAWNED (and the child runs, in the same transaction) and the run moves to
WAITING_FOR_CHILDREN. When the last node of the wave ends, the store appends CHILDREN_FINISHED with
the results in the child's own transaction, the run is RUNNING again, and any worker that knows the
workflow plans the next move. Every node is a normal run: approvals, budgets, retries and
escalation apply to it.
"""

from __future__ import annotations

import logging
from typing import Any

from agentmaestro.agents import AgentRegistry
from agentmaestro.core.policy import StrictPolicy
from agentmaestro.core.states import EventType, Phase, StepKind
from agentmaestro.engine.driver import MAX_DEPTH, EventListener
from agentmaestro.engine.leased import LeasedDriver, Move
from agentmaestro.errors import ConfigError
from agentmaestro.store.base import Store
from agentmaestro.store.records import Claim, NewRun, StepRow, new_run_id
from agentmaestro.workflows import dag
from agentmaestro.workflows.expr import ExpressionError
from agentmaestro.workflows.spec import Workflow, from_spec

log = logging.getLogger("agentmaestro.engine")


def is_workflow_spec(spec: dict[str, Any]) -> bool:
    """True for the spec of a workflow run."""
    return spec.get("kind") == "workflow"


class WorkflowDriver(LeasedDriver):
    """Executes the moves of one workflow run while its worker holds the lease."""

    kind = "workflow"

    def __init__(
        self,
        *,
        store: Store,
        claim: Claim,
        agents: AgentRegistry,
        owner: str,
        listeners: list[EventListener],
    ) -> None:
        super().__init__(store=store, claim=claim, owner=owner, listeners=listeners)
        self.agents = agents

    # ------------------------------------------------------------------------------- moves

    async def _move(self) -> Move:
        events, children, rows = await self._plan_move()
        return events, children, rows, None

    async def _plan_move(self) -> tuple[list[dict[str, Any]], list[NewRun], list[StepRow]]:
        if self.cancel_requested:
            reason = await self._cancel_reason()
            return [{"type": EventType.RUN_CANCELLED, "payload": {"reason": reason}}], [], []
        try:
            wf = from_spec(self.spec)
            p = dag.plan(wf, self.state.workflow, self.task)
        except (ExpressionError, ConfigError, ValueError) as exc:
            return [{"type": EventType.RUN_FAILED, "payload": {"error": f"workflow error: {exc}"}}], [], []
        if p.error is not None:
            return [{"type": EventType.RUN_FAILED, "payload": {"error": p.error, "workflow": p.section()}}], [], []
        if p.output is not None:
            step = self.state.steps
            payload = {"kind": StepKind.MESSAGE.value, "content": p.output, "workflow": p.section()}
            row = StepRow(step_index=step, kind=StepKind.MESSAGE, name="workflow output", status="completed", seq=0)
            events: list[dict[str, Any]] = [
                {"type": EventType.STEP_COMPLETED, "payload": payload, "step": step},
                {"type": EventType.RUN_COMPLETED, "payload": {"output": p.output}},
            ]
            return events, [], [row]
        return self._start(wf, p)

    def _start(self, wf: Workflow, p: dag.Plan) -> tuple[list[dict[str, Any]], list[NewRun], list[StepRow]]:
        if self.depth + 1 > MAX_DEPTH:
            return [{"type": EventType.RUN_FAILED, "payload": {"error": f"depth limit {MAX_DEPTH} reached"}}], [], []
        missing = sorted({n.agent for n, _ in p.start if n.agent not in self.agents})
        if missing:
            error = f"agent(s) {', '.join(missing)} not available on this worker"
            return [{"type": EventType.RUN_FAILED, "payload": {"error": error}}], [], []
        budget = self._budget(wf)
        children: list[NewRun] = []
        entries: list[dict[str, Any]] = []
        for node, task in p.start:
            agent = self.agents.get(node.agent)
            spec: dict[str, Any] = {**agent.spec(), "depth": self.depth + 1, "workflow_node": node.id}
            if budget is not None:
                spec["budget"] = budget
            policy = agent.policy or StrictPolicy()
            if node.policy is not None:
                policy = policy.merged(node.policy.to_overrides())
            child_id = new_run_id()
            children.append(
                NewRun(
                    run_id=child_id,
                    workspace_id=self.workspace_id,
                    agent_name=agent.name,
                    input=task,
                    spec=spec,
                    policy=policy.to_json(),
                    parent_run_id=self.run_id,
                    max_attempts=node.retry.max_attempts if node.retry else None,
                )
            )
            entries.append({"call_id": node.id, "run_id": child_id, "agent": agent.name, "input": task})
        events: list[dict[str, Any]] = []
        if self.state.phase is not Phase.EXECUTE:
            events.append(
                {"type": EventType.PHASE_CHANGED, "payload": {"from": self.state.phase.value, "to": "EXECUTE"}}
            )
        events.append({"type": EventType.CHILDREN_SPAWNED, "payload": {"children": entries, "workflow": p.section()}})
        return events, children, []

    def _budget(self, wf: Workflow) -> dict[str, Any] | None:
        """Nodes draw on the workflow's run-tree budget (the workflow's own, or the one it inherited)."""
        inherited = self.spec.get("budget")
        if inherited:
            return dict(inherited)
        pol = self.state.policy
        if pol.max_cost_usd is None and pol.max_tokens is None:
            return None
        return {
            "ledger_id": f"run:{self.run_id}",
            "label": f"of run tree {self.run_id}",
            "limit_usd": pol.max_cost_usd,
            "limit_tokens": pol.max_tokens,
        }
