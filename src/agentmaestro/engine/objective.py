"""Drives objective runs: plan -> dispatch tasks as child runs -> QA -> retry or escalate -> merge.

An objective run (spec kind ``objective``) never holds a worker while its tasks run. Each move
folds the child results that arrived (CHILDREN_FINISHED, appended by the store in the finishing
child's own transaction as soon as *any* of its children ends) into task graph changes, starts
what can start (planner runs, worker runs up to ``max_concurrent_workers``, strategist reviews,
escalations), and commits one STEP_COMPLETED (kind MESSAGE, the changes in its ``objective``
section) plus CHILDREN_SPAWNED listing every child still in flight; the run then waits in
WAITING_FOR_CHILDREN. The task graph is a fold of those changes (:mod:`agentmaestro.core.tasks`).

Escalations are child runs too (spec kind ``objective_escalation``): one waits for a person in the
human queue (``maestro escalations``) while the objective's other tasks go on.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from agentmaestro.agents import AgentRegistry
from agentmaestro.core.events import Event, RunState
from agentmaestro.core.policy import StrictPolicy
from agentmaestro.core.states import EventType, Phase, RunStatus, StepKind
from agentmaestro.core.tasks import Graph, Task, TaskStatus, apply_change, fold_graph, ready_tasks, validate_plan
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
    """Executes the moves of one objective run while its worker holds the lease."""

    def __init__(
        self, *, store: Store, claim: Claim, agents: AgentRegistry, owner: str, listeners: list[EventListener]
    ) -> None:
        super().__init__(store=store, claim=claim, owner=owner, listeners=listeners)
        self.agents = agents
        self.graph = Graph()
        self.goal = str(self.spec.get("goal") or self.task)
        self.planner = str(self.spec.get("planner", "planner"))
        self.strategist = str(self.spec.get("strategist", "strategist"))
        self.max_workers = int(self.spec.get("max_concurrent_workers", 5))
        self.max_attempts = int(self.spec.get("max_attempts", 4))
        self.max_plan_attempts = int(self.spec.get("max_plan_attempts", 3))
        self._reconcile = True
        self._repo: Repo | None = None

    # ------------------------------------------------------------------------------ set-up

    async def _setup(self) -> None:
        self.graph = fold_graph(await self.store.events.read(self.run_id))

    def _applied(self, state: RunState, ev: Event) -> None:
        from agentmaestro.core.tasks import fold_event

        self.graph = fold_event(self.graph, ev.type.value, ev.payload)

    def workers(self) -> dict[str, str]:
        """Worker types the planner may use: name -> description."""
        names = self.spec.get("workers") or [n for n in self.agents.names() if n not in (self.planner, self.strategist)]
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
        if self.cancel_requested:
            self._cleanup()
            return [{"type": EventType.RUN_CANCELLED, "payload": {"reason": await self._cancel_reason()}}], [], [], None
        violation = self.state.policy.check(self.state.usage(time.time()))
        if violation is not None:  # the objective's own limits: wall time and moves (steps)
            self._cleanup()
            return [{"type": EventType.POLICY_VIOLATION, "payload": violation.to_json()}], [], [], None
        missing = [a for a in (self.planner, self.strategist) if a not in self.agents]
        if missing:
            return self._fail(f"agent(s) {', '.join(missing)} not available on this worker")
        if self.depth + 1 > MAX_DEPTH:
            return self._fail(f"depth limit {MAX_DEPTH} reached")
        try:
            move = _Move_(self)
            await move.run()
        except GitError as exc:
            self._cleanup()
            return self._fail(f"git: {exc}")
        return move.result()

    def _fail(self, error: str) -> Move:
        return [{"type": EventType.RUN_FAILED, "payload": {"error": error}}], [], [], None

    def _cleanup(self) -> None:
        try:
            repo = self.repo()
            if repo is not None:
                repo.cleanup()
        except MaestroError:
            log.exception("objective run %s: cleaning up worktrees failed", self.run_id)


class _Move_:
    """One move of an objective: a working copy of the graph, the changes made, the runs started."""

    def __init__(self, d: ObjectiveDriver) -> None:
        self.d = d
        self.g = d.graph
        self.changes: list[dict[str, Any]] = []
        self.children: list[NewRun] = []
        self.ending: dict[str, Any] | None = None
        self.notes: list[str] = []

    def emit(self, change: dict[str, Any]) -> None:
        self.g = apply_change(self.g, change)
        self.changes.append(change)

    # ------------------------------------------------------------------------------ the move

    async def run(self) -> None:
        d = self.d
        results = list(self.g.inbox)
        if d._reconcile:
            # After a claim (first move, recovery, restart): children that ended while nobody waited.
            d._reconcile = False
            seen = {r.get("run_id") for r in results}
            for call_id, run_id in self.g.active_children():
                if run_id in seen:
                    continue
                rec = await d.store.runs.get(run_id)
                if rec.status.terminal:
                    results.append(
                        {
                            "call_id": call_id,
                            "run_id": run_id,
                            "status": rec.status.value,
                            "output": rec.state.output,
                            "error": rec.state.error,
                        }
                    )
        if results:
            self.emit({"op": "processed", "run_ids": [r["run_id"] for r in results]})
        for r in results:
            await self.handle(r)
        if self.ending is not None:
            return
        if not self.g.tasks and not self.g.helpers:
            # The first move, or a restart after the planner gave up: plan (again) from scratch.
            if self.g.plan_attempts:
                self.emit({"op": "plan_attempts", "n": 0})
            self.start_planner(errors=[], previous=None)
        if self.g.replan and not self.g.helpers:
            self.start_replan()
        for t in ready_tasks(self.g):
            self.emit({"op": "status", "task": t.task_id, "to": "ready"})
        active = sum(1 for t in self.g.tasks.values() if t.status is TaskStatus.ACTIVE)
        for t in sorted(self.g.tasks.values(), key=lambda t: t.order):
            if active >= d.max_workers:
                break
            if t.status is TaskStatus.READY:
                self.start_worker(t)
                active += 1
        if not self.g.active_children():
            self.finish()

    def result(self) -> Move:
        d = self.d
        events: list[dict[str, Any]] = []
        rows: list[StepRow] = []
        if self.changes or self.ending is not None:
            step = d.state.steps
            counts = self.g.counts()
            content = "; ".join(self.notes) or ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "planning"
            payload = {"kind": StepKind.MESSAGE.value, "content": content, "objective": {"changes": self.changes}}
            events.append({"type": EventType.STEP_COMPLETED, "payload": payload, "step": step})
            rows.append(StepRow(step_index=step, kind=StepKind.MESSAGE, name="objective", status="completed", seq=0))
        if self.ending is not None:
            events.append(self.ending)
            return events, [], rows, None
        active = self.g.active_children()
        if d.state.phase is not Phase.EXECUTE:
            events.insert(
                0, {"type": EventType.PHASE_CHANGED, "payload": {"from": d.state.phase.value, "to": "EXECUTE"}}
            )
        agents = {c.run_id: c.agent_name for c in self.children}
        entries = [{"call_id": c, "run_id": r, "agent": agents.get(r)} for c, r in active]
        events.append(
            {
                "type": EventType.CHILDREN_SPAWNED,
                "payload": {"children": entries, "started": [c.run_id for c in self.children]},
            }
        )
        return events, self.children, rows, None

    def finish(self) -> None:
        d = self.d
        tasks = sorted(self.g.tasks.values(), key=lambda t: t.order)
        if tasks and all(t.status.terminal for t in tasks) and not self.g.replan:
            done = [t for t in tasks if t.status is TaskStatus.COMPLETE]
            lines = [f"Objective: {d.goal}", f"{len(done)} of {len(tasks)} task(s) complete."]
            for t in tasks:
                out = (t.attempts[-1].get("output") or "") if t.attempts and t.status is TaskStatus.COMPLETE else ""
                lines.append(f"- {t.task_id} [{t.status.value}] {t.title}: {out[:500]}")
            d._cleanup()
            self.ending = {"type": EventType.RUN_COMPLETED, "payload": {"output": "\n".join(lines)}}
            return
        stuck = [t.task_id for t in tasks if not t.status.terminal]
        d._cleanup()
        self.ending = {
            "type": EventType.RUN_FAILED,
            "payload": {"error": f"objective cannot progress: task(s) {', '.join(stuck) or '(none planned)'} blocked"},
        }

    # ------------------------------------------------------------------------------ results

    async def handle(self, r: dict[str, Any]) -> None:
        run_id = r["run_id"]
        helper = next(((c, h) for c, h in self.g.helpers.items() if h["run_id"] == run_id), None)
        if helper is not None:
            self.emit({"op": "helper_done", "call_id": helper[0]})
            self.plan_result(r, replan=helper[1].get("kind") == "replan", context=helper[1].get("context"))
            return
        task = next((t for t in self.g.tasks.values() if t.run_id == run_id), None)
        if task is None:
            return  # an abandoned task's run, or a result already handled
        ok = r["status"] == RunStatus.COMPLETED.value
        if task.status is TaskStatus.ACTIVE:
            await self.worker_result(task, r, ok)
        elif task.status is TaskStatus.AWAITING_QA:
            self.qa_result(task, r, ok)
        elif task.status is TaskStatus.WAITING_HUMAN:
            self.human_result(task, r, ok)

    def plan_result(self, r: dict[str, Any], *, replan: bool, context: list[dict[str, Any]] | None = None) -> None:
        d = self.d
        errors: list[str]
        tasks: list[dict[str, Any]] = []
        if r["status"] != RunStatus.COMPLETED.value:
            errors = [f"the planner run {r['status']}: {r.get('error') or 'no output'}"]
        else:
            try:
                raw = prompts.parse_json(r.get("output"))
            except ValueError as exc:
                raw, errors = None, [str(exc)]
            else:
                tasks, errors = validate_plan(raw, set(d.workers()), existing=self.g.tasks if replan else None)
        if not errors:
            self.emit({"op": "add", "tasks": tasks})
            self.emit({"op": "plan_attempts", "n": 0 if replan else self.g.plan_attempts})
            self.notes.append(f"{'re-plan' if replan else 'plan'}: {len(tasks)} task(s)")
            return
        if self.g.plan_attempts >= d.max_plan_attempts:
            what = "re-plan" if replan else "plan"
            self.ending = {
                "type": EventType.RUN_FAILED,
                "payload": {
                    "error": f"the planner gave no valid {what} after {self.g.plan_attempts} attempt(s): "
                    + "; ".join(errors)
                },
            }
            d._cleanup()
            return
        self.notes.append(f"plan rejected: {'; '.join(errors)[:300]}")
        if replan:
            self.start_replan(errors=errors, previous=r.get("output"), context=context)
        else:
            self.start_planner(errors=errors, previous=r.get("output"))

    async def worker_result(self, task: Task, r: dict[str, Any], ok: bool) -> None:
        d = self.d
        attempt = len(task.attempts)
        if not ok:
            self.emit({"op": "status", "task": task.task_id, "to": "failed", "error": r.get("error") or r["status"]})
            self.retry_or_escalate(task.task_id)
            return
        diff = None
        repo = d.repo()
        if repo is not None:
            wt = repo.worktrees_root / f"{task.task_id}-{attempt}"
            if wt.exists():
                repo.commit_all(wt, f"{task.task_id}: {task.title} (attempt {attempt})")
                diff = repo.diff(wt)
        qa = d.agents.get(d.strategist)
        qa_id = new_run_id()
        self.children.append(self._child(qa_id, qa.name, prompts.qa_input(task, r.get("output"), diff), qa))
        self.emit(
            {"op": "status", "task": task.task_id, "to": "awaiting_qa", "output": r.get("output"), "run_id": qa_id}
        )

    def qa_result(self, task: Task, r: dict[str, Any], ok: bool) -> None:
        d = self.d
        if ok:
            try:
                accept, feedback = prompts.parse_verdict(r.get("output"))
            except ValueError as exc:
                accept, feedback = False, f"the strategist gave no usable verdict ({exc})"
        else:
            accept, feedback = False, f"the review run {r['status']}: {r.get('error') or 'no output'}"
        if not accept:
            self.emit({"op": "status", "task": task.task_id, "to": "failed", "feedback": feedback})
            self.retry_or_escalate(task.task_id)
            return
        repo = d.repo()
        attempt = len(task.attempts)
        if repo is not None:
            merge = repo.merge(task.task_id, attempt, f"Merge task {task.task_id}: {task.title}")
            if not merge.merged:
                reason = f"merging task {task.task_id} conflicts in {', '.join(merge.conflicts)}"
                self.escalate(
                    task.task_id, "merge_conflict", reason, {"diff": merge.diff, "conflicts": list(merge.conflicts)}
                )
                return
            repo.remove_worktree(task.task_id, attempt)
        self.emit({"op": "status", "task": task.task_id, "to": "complete", "feedback": feedback})
        self.notes.append(f"{task.task_id} complete")

    def human_result(self, task: Task, r: dict[str, Any], ok: bool) -> None:
        if r["status"] == RunStatus.CANCELLED.value:
            # The question was withdrawn (the objective was cancelled, then restarted): try the task again.
            self.emit({"op": "status", "task": task.task_id, "to": "ready"})
            return
        decision: dict[str, Any] = {"action": "abandon"}
        if ok:
            try:
                decision = json.loads(r.get("output") or "{}")
            except ValueError:
                decision = {"action": "retry"}
        action = decision.get("action")
        by = decision.get("by") or "a person"
        if action == "retry":
            self.emit({"op": "status", "task": task.task_id, "to": "ready", "note": decision.get("instructions")})
            self.notes.append(f"{task.task_id}: retry by {by}")
        elif action == "answer" and decision.get("answer"):
            new = self._fresh_id(f"{task.task_id}-h")
            spec = {
                "id": new,
                "title": f"{task.title} (new task from {by})",
                "instructions": str(decision["answer"]),
                "worker": task.worker,
                "depends_on": [x for x in task.depends_on if self.g.tasks[x].status is not TaskStatus.ABANDONED],
                "acceptance": list(task.acceptance),
            }
            self.emit({"op": "status", "task": task.task_id, "to": "abandoned", "reason": f"replaced by {new} ({by})"})
            self.emit({"op": "add", "tasks": [spec]})
            for t in list(self.g.tasks.values()):
                if task.task_id in t.depends_on and not t.status.started:
                    self.emit({"op": "deps", "task": t.task_id, "add": [new], "remove": [task.task_id]})
            self.notes.append(f"{task.task_id} replaced by new task {new}")
        else:
            reason = f"abandoned by {by}" if ok else (r.get("error") or "abandoned")
            self.abandon(task.task_id, reason)

    def _fresh_id(self, prefix: str) -> str:
        n = 1
        while f"{prefix}{n}" in self.g.tasks:
            n += 1
        return f"{prefix}{n}"

    # ---------------------------------------------------------------------------- decisions

    def abandon(self, task_id: str, reason: str) -> None:
        self.emit({"op": "status", "task": task_id, "to": "abandoned", "reason": reason})
        self.emit({"op": "replan", "reason": reason, "tasks": [task_id]})
        self.notes.append(f"{task_id} abandoned")

    def retry_or_escalate(self, task_id: str) -> None:
        task = self.g.tasks[task_id]
        used = len(task.attempts) - task.attempt_base
        if used < self.d.max_attempts:
            self.emit({"op": "status", "task": task_id, "to": "ready"})
            return
        last = task.attempts[-1] if task.attempts else {}
        reason = f"task {task_id} failed {used} attempt(s); last: {last.get('feedback') or last.get('error')}"
        self.escalate(task_id, "task_rejected", reason, {"attempts": [dict(a) for a in task.attempts]})

    def escalate(self, task_id: str, kind: str, reason: str, detail: dict[str, Any]) -> None:
        d = self.d
        task = self.g.tasks[task_id]
        run_id = new_run_id()
        question = (
            f"Objective {d.run_id}, task {task_id} ({task.title}): {reason}. Retry with modifications "
            "(instructions), answer with the instructions of a new task to spawn in its place, or abandon it."
        )
        spec = {
            "kind": "objective_escalation",
            "depth": d.depth + 1,
            "escalation_kind": kind,
            "question": question,
            "detail": {"objective_run_id": d.run_id, "task_id": task_id, "reason": reason, **detail},
        }
        self.children.append(
            NewRun(
                run_id=run_id,
                workspace_id=d.workspace_id,
                agent_name=ESCALATION_AGENT,
                input=question,
                spec=spec,
                policy=StrictPolicy().to_json(),
                parent_run_id=d.run_id,
            )
        )
        self.emit(
            {"op": "status", "task": task_id, "to": "waiting_human", "run_id": run_id, "kind": kind, "reason": reason}
        )
        self.notes.append(f"{task_id} waits for a person ({kind})")

    # ------------------------------------------------------------------------------ starting

    def _child(self, run_id: str, agent_name: str, text: str, agent: Any, workdir: Path | None = None) -> NewRun:
        d = self.d
        spec: dict[str, Any] = {**agent.spec(), "depth": d.depth + 1, "objective_run_id": d.run_id}
        if workdir is not None:
            spec["workdir"] = str(workdir)
        budget = self._budget()
        if budget is not None:
            spec["budget"] = budget
        return NewRun(
            run_id=run_id,
            workspace_id=d.workspace_id,
            agent_name=agent_name,
            input=text,
            spec=spec,
            policy=(agent.policy or StrictPolicy()).to_json(),
            parent_run_id=d.run_id,
        )

    def _budget(self) -> dict[str, Any] | None:
        d = self.d
        inherited = d.spec.get("budget")
        if inherited:
            return dict(inherited)
        pol = d.state.policy
        if pol.max_cost_usd is None and pol.max_tokens is None:
            return None
        return {
            "ledger_id": f"run:{d.run_id}",
            "label": f"of run tree {d.run_id}",
            "limit_usd": pol.max_cost_usd,
            "limit_tokens": pol.max_tokens,
        }

    def start_planner(self, *, errors: list[str], previous: str | None) -> None:
        d = self.d
        planner = d.agents.get(d.planner)
        run_id = new_run_id()
        text = prompts.planner_input(d.goal, d.workers(), errors=errors, previous=previous)
        self.children.append(self._child(run_id, planner.name, text, planner))
        self.emit({"op": "plan_attempts", "n": self.g.plan_attempts + 1})
        self.emit({"op": "helper", "call_id": f"plan:{self.g.plan_attempts}", "run_id": run_id, "kind": "plan"})

    def start_replan(
        self,
        *,
        errors: list[str] | None = None,
        previous: str | None = None,
        context: list[dict[str, Any]] | None = None,
    ) -> None:
        d = self.d
        requests = list(self.g.replan)
        if requests:
            # Abandon what is re-planned: the named tasks' not-started dependants (or, for a general
            # re-plan, every task not started yet).
            affected: set[str] = set()
            for req in requests:
                if req.get("tasks"):
                    frontier = set(req["tasks"])
                    while frontier:
                        nxt = {
                            t.task_id
                            for t in self.g.tasks.values()
                            if frontier & set(t.depends_on) and t.task_id not in affected
                        }
                        affected |= nxt
                        frontier = nxt
                else:
                    affected |= {t.task_id for t in self.g.tasks.values() if not t.status.started}
            for tid in sorted(affected, key=lambda x: self.g.tasks[x].order):
                t = self.g.tasks[tid]
                if not t.status.started:
                    self.emit({"op": "status", "task": tid, "to": "abandoned", "reason": "re-planned"})
            self.emit({"op": "replan_started"})
            context = requests
            if not affected and all(req.get("tasks") for req in requests):
                return  # nothing depended on the abandoned task(s): nothing to re-plan
            self.emit({"op": "plan_attempts", "n": 0})
        planner = d.agents.get(d.planner)
        run_id = new_run_id()
        text = prompts.planner_input(
            d.goal,
            d.workers(),
            graph=self.g,
            replan=context or [{"reason": "re-plan", "tasks": []}],
            errors=errors or [],
            previous=previous,
        )
        self.children.append(self._child(run_id, planner.name, text, planner))
        self.emit({"op": "plan_attempts", "n": self.g.plan_attempts + 1})
        call_id = f"replan:{self.g.plan_attempts}"
        self.emit({"op": "helper", "call_id": call_id, "run_id": run_id, "kind": "replan", "context": context or []})

    def start_worker(self, task: Task) -> None:
        d = self.d
        if task.worker not in d.agents:
            self.abandon(task.task_id, f"worker type {task.worker!r} is not available on this worker")
            return
        agent = d.agents.get(task.worker)
        attempt = len(task.attempts) + 1
        repo = d.repo()
        workdir = repo.add_worktree(task.task_id, attempt) if repo is not None else None
        run_id = new_run_id()
        text = prompts.worker_input(task, self.g, prompts.task_outputs(self.g))
        self.children.append(self._child(run_id, agent.name, text, agent, workdir))
        self.emit({"op": "status", "task": task.task_id, "to": "active", "run_id": run_id})
