"""Carries out objective runs: plan -> dispatch tasks as child runs -> QA -> retry or escalate -> merge.

An objective run (spec kind ``objective``) never holds a worker while its tasks run. What each move
does is decided purely by :func:`agentmaestro.core.objective.decide_move` from the run's state: which
child results (CHILDREN_FINISHED, appended by the store in the finishing child's own transaction as
soon as *any* of its children ends) change the task graph how, and what starts (planner runs, worker
runs up to ``max_concurrent_workers``, strategist reviews, escalations). This module does the I/O
around it: it loads the state, answers the decision's questions (which children ended while nobody
waited, how a merge went), starts the child runs (prompts, worktrees, budgets) and commits one
STEP_COMPLETED (kind MESSAGE, the changes in its ``objective`` section) plus CHILDREN_SPAWNED listing
every child still in flight; the run then waits in WAITING_FOR_CHILDREN. The task graph is a fold of
those changes (:mod:`agentmaestro.core.tasks`).

Escalations are child runs too (spec kind ``objective_escalation``): one waits for a person in the
human queue (``maestro escalations``) while the objective's other tasks go on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentmaestro.agents import AgentRegistry
from agentmaestro.core.events import Event, RunState
from agentmaestro.core.objective import (
    Action,
    Cancel,
    CheckChildren,
    ChildResult,
    Complete,
    End,
    Fail,
    MergeOutcome,
    MergeTask,
    ObjectiveMove,
    ObjectiveSettings,
    ObjectiveSnapshot,
    RemoveWorktree,
    StartEscalation,
    StartPlanner,
    StartReview,
    StartWorker,
    StopOnViolation,
    decide_move,
)
from agentmaestro.core.policy import StrictPolicy
from agentmaestro.core.states import EventType, Phase, StepKind
from agentmaestro.core.tasks import Graph, fold_event, fold_graph
from agentmaestro.engine.driver import MAX_DEPTH, EventListener
from agentmaestro.engine.leased import LeasedDriver, Move
from agentmaestro.errors import MaestroError
from agentmaestro.objectives import prompts
from agentmaestro.objectives.git import GitError, Repo
from agentmaestro.store.base import Store
from agentmaestro.store.records import Claim, NewRun, StepRow, new_id, new_run_id

log = logging.getLogger("agentmaestro.engine")

OBJECTIVE_AGENT = "objective"
"""The ``agent_name`` of objective runs."""
ESCALATION_AGENT = "objective.escalation"
"""The ``agent_name`` of an objective's escalation runs (a task waiting for a person)."""
HUMAN_OPTIONS = ["retry", "answer", "abandon"]


def is_objective_spec(spec: dict[str, Any]) -> bool:
    """True for the spec of an objective run or of one of its escalations."""
    return spec.get("kind") in ("objective", "objective_escalation")


class EscalationDriver(LeasedDriver):
    """A task waiting for a person: asks (human request), then ends with the person's decision as output."""

    async def _move(self) -> Move:
        if self.cancel_requested:
            return [{"type": EventType.RUN_CANCELLED, "payload": {"reason": await self._cancel_reason()}}], [], [], None
        events = await self.store.events.read(self.run_id)
        if not any(e.type is EventType.HUMAN_INPUT_REQUESTED for e in events):
            return self._ask()
        answer = next((e.payload for e in reversed(events) if e.type is EventType.HUMAN_INPUT_RECEIVED), None)
        decision = {
            "action": (answer or {}).get("action", "retry"),
            "instructions": (answer or {}).get("instructions"),
            "answer": (answer or {}).get("answer"),
            "by": (answer or {}).get("by"),
        }
        return [{"type": EventType.RUN_COMPLETED, "payload": {"output": json.dumps(decision)}}], [], [], None

    def _ask(self) -> Move:
        request_id = new_id("hum")
        kind = str(self.spec.get("escalation_kind", "task_rejected"))
        question = str(self.spec.get("question", self.task))
        detail = dict(self.spec.get("detail") or {})
        payload = {"request_id": request_id, "kind": kind, "question": question, "options": HUMAN_OPTIONS, **detail}
        row = {
            "request_id": request_id,
            "workspace_id": self.workspace_id,
            "run_id": self.run_id,
            "kind": kind,
            "question": question,
            "detail": detail,
            "options": HUMAN_OPTIONS,
            "status": "pending",
            "created_at": time.time(),
        }
        return [{"type": EventType.HUMAN_INPUT_REQUESTED, "payload": payload}], [], [], row


class ObjectiveDriver(LeasedDriver):
    """Carries out the moves of one objective run while its worker holds the lease."""

    def __init__(
        self, *, store: Store, claim: Claim, agents: AgentRegistry, owner: str, listeners: list[EventListener]
    ) -> None:
        super().__init__(store=store, claim=claim, owner=owner, listeners=listeners)
        self.agents = agents
        self.graph = Graph()
        self.settings = ObjectiveSettings.from_spec(self.spec, task=self.task)
        self._reconcile = True
        self._repo: Repo | None = None

    # ------------------------------------------------------------------------------ set-up

    async def _setup(self) -> None:
        self.graph = fold_graph(await self.store.events.read(self.run_id))

    def _applied(self, state: RunState, ev: Event) -> None:
        self.graph = fold_event(self.graph, ev.type.value, ev.payload)

    def workers(self) -> dict[str, str]:
        """Worker types the planner may use: name -> description."""
        cfg = self.settings
        names = self.spec.get("workers") or [n for n in self.agents.names() if n not in (cfg.planner, cfg.strategist)]
        out: dict[str, str] = {}
        for n in names:
            if n in self.agents:
                a = self.agents.get(n)
                out[n] = str(getattr(a, "description", "") or a.instructions or "")[:300]
        return out

    def repo(self) -> Repo | None:
        """The objective's repository, when it has one."""
        if self._repo is None and self.spec.get("repo"):
            self._repo = Repo(self.spec["repo"], run_id=self.run_id, base_branch=self.spec.get("base_branch"))
        return self._repo

    # ------------------------------------------------------------------------------- moves

    async def _move(self) -> Move:
        snapshot = ObjectiveSnapshot(
            run_id=self.run_id,
            state=self.state,
            now=time.time(),
            graph=self.graph,
            settings=self.settings,
            agents=frozenset(self.agents.names()),
            workers=self.workers(),
            depth=self.depth,
            max_depth=MAX_DEPTH,
            new_run_id=new_run_id,
            cancel_requested=self.cancel_requested,
            reconcile=self._reconcile,
        )
        try:
            decision = decide_move(snapshot)
            while isinstance(decision, CheckChildren | MergeTask):
                if isinstance(decision, CheckChildren):
                    snapshot = dataclasses.replace(snapshot, reconciled=await self._ended(decision))
                else:
                    key = (decision.task_id, decision.attempt)
                    snapshot = dataclasses.replace(snapshot, merges={**snapshot.merges, key: self._merge(decision)})
                decision = decide_move(snapshot)
            if not isinstance(decision, ObjectiveMove):
                return await self._end(decision)
            self._reconcile = False
            return self._carry_out(decision, snapshot.workers)
        except GitError as exc:
            self._cleanup()
            return self._fail(f"git: {exc}")

    async def _ended(self, check: CheckChildren) -> tuple[ChildResult, ...]:
        """Children that ended while nobody waited (after a claim: first move, recovery, restart)."""
        out: list[ChildResult] = []
        for call_id, run_id in check.children:
            rec = await self.store.runs.get(run_id)
            if rec.status.terminal:
                out.append(
                    ChildResult(
                        call_id=call_id,
                        run_id=run_id,
                        status=rec.status,
                        output=rec.state.output,
                        error=rec.state.error,
                    )
                )
        return tuple(out)

    def _merge(self, merge: MergeTask) -> MergeOutcome:
        repo = self.repo()
        assert repo is not None, "a merge is asked for only when the objective has a repository"
        result = repo.merge(merge.task_id, merge.attempt, merge.message)
        return MergeOutcome(merged=result.merged, conflicts=result.conflicts, diff=result.diff)

    async def _end(self, end: End) -> Move:
        if isinstance(end, Cancel):
            self._cleanup()
            return [{"type": EventType.RUN_CANCELLED, "payload": {"reason": await self._cancel_reason()}}], [], [], None
        if isinstance(end, StopOnViolation):
            self._cleanup()
            return [{"type": EventType.POLICY_VIOLATION, "payload": end.violation.to_json()}], [], [], None
        assert isinstance(end, Fail), end
        if end.cleanup:
            self._cleanup()
        return self._fail(end.error)

    def _carry_out(self, move: ObjectiveMove, workers: Mapping[str, str]) -> Move:
        children = [child for a in move.actions if (child := self._act(a, workers)) is not None]
        events: list[dict[str, Any]] = []
        rows: list[StepRow] = []
        if move.changes or move.end is not None:
            step = self.state.steps
            counts = move.graph.counts()
            content = "; ".join(move.notes) or ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "planning"
            changes = [c.to_json() for c in move.changes]
            payload = {"kind": StepKind.MESSAGE.value, "content": content, "objective": {"changes": changes}}
            events.append({"type": EventType.STEP_COMPLETED, "payload": payload, "step": step})
            rows.append(StepRow(step_index=step, kind=StepKind.MESSAGE, name="objective", status="completed", seq=0))
        if isinstance(move.end, Complete):
            self._cleanup()
            events.append({"type": EventType.RUN_COMPLETED, "payload": {"output": move.end.output}})
            return events, [], rows, None
        if isinstance(move.end, Fail):
            self._cleanup()
            events.append({"type": EventType.RUN_FAILED, "payload": {"error": move.end.error}})
            return events, [], rows, None
        if self.state.phase is not Phase.EXECUTE:
            events.insert(
                0, {"type": EventType.PHASE_CHANGED, "payload": {"from": self.state.phase.value, "to": "EXECUTE"}}
            )
        agents = {c.run_id: c.agent_name for c in children}
        entries = [{"call_id": c, "run_id": r, "agent": agents.get(r)} for c, r in move.graph.active_children()]
        events.append(
            {
                "type": EventType.CHILDREN_SPAWNED,
                "payload": {"children": entries, "started": [c.run_id for c in children]},
            }
        )
        return events, children, rows, None

    def _fail(self, error: str) -> Move:
        return [{"type": EventType.RUN_FAILED, "payload": {"error": error}}], [], [], None

    def _cleanup(self) -> None:
        try:
            repo = self.repo()
            if repo is not None:
                repo.cleanup()
        except MaestroError:
            log.exception("objective run %s: cleaning up worktrees failed", self.run_id)

    # ------------------------------------------------------------------------------ actions

    def _act(self, action: Action, workers: Mapping[str, str]) -> NewRun | None:
        """Carry out one action; the child run to start, if it starts one."""
        cfg = self.settings
        if isinstance(action, StartPlanner):
            planner = self.agents.get(cfg.planner)
            text = prompts.planner_input(
                cfg.goal,
                workers,
                graph=action.graph,
                replan=action.replan or (),
                errors=action.errors,
                previous=action.previous,
            )
            return self._child(action.run_id, planner.name, text, planner)
        if isinstance(action, StartWorker):
            task, agent = action.task, self.agents.get(action.task.worker)
            repo = self.repo()
            workdir = repo.add_worktree(task.task_id, action.attempt) if repo is not None else None
            text = prompts.worker_input(task, action.graph, prompts.task_outputs(action.graph))
            return self._child(action.run_id, agent.name, text, agent, workdir)
        if isinstance(action, StartReview):
            task, diff = action.task, None
            repo = self.repo()
            if repo is not None:
                wt = repo.worktrees_root / f"{task.task_id}-{action.attempt}"
                if wt.exists():
                    repo.commit_all(wt, f"{task.task_id}: {task.title} (attempt {action.attempt})")
                    diff = repo.diff(wt)
            qa = self.agents.get(cfg.strategist)
            return self._child(action.run_id, qa.name, prompts.qa_input(task, action.output, diff), qa)
        if isinstance(action, StartEscalation):
            return self._escalation(action)
        assert isinstance(action, RemoveWorktree), action
        repo = self.repo()
        if repo is not None:
            repo.remove_worktree(action.task_id, action.attempt)
        return None

    def _escalation(self, action: StartEscalation) -> NewRun:
        spec = {
            "kind": "objective_escalation",
            "depth": self.depth + 1,
            "escalation_kind": action.kind,
            "question": action.question,
            "detail": dict(action.detail),
        }
        return NewRun(
            run_id=action.run_id,
            workspace_id=self.workspace_id,
            agent_name=ESCALATION_AGENT,
            input=action.question,
            spec=spec,
            policy=StrictPolicy().to_json(),
            parent_run_id=self.run_id,
        )

    def _child(self, run_id: str, agent_name: str, text: str, agent: Any, workdir: Path | None = None) -> NewRun:
        spec: dict[str, Any] = {**agent.spec(), "depth": self.depth + 1, "objective_run_id": self.run_id}
        if workdir is not None:
            spec["workdir"] = str(workdir)
        budget = self._budget()
        if budget is not None:
            spec["budget"] = budget
        return NewRun(
            run_id=run_id,
            workspace_id=self.workspace_id,
            agent_name=agent_name,
            input=text,
            spec=spec,
            policy=(agent.policy or StrictPolicy()).to_json(),
            parent_run_id=self.run_id,
        )

    def _budget(self) -> dict[str, Any] | None:
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
