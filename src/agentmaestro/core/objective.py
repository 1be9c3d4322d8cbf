"""Objective moves as pure decisions: from an objective's state to what the engine does next. No I/O.

An objective run (``engine/objective.py``) loads an :class:`ObjectiveSnapshot`, calls
:func:`decide_move` and carries out what it returns. As a graph node's return type names the next
node, the return type names the next step:

- an :data:`End` (:class:`Cancel`, :class:`StopOnViolation`, :class:`Fail`): the run ends before any move;
- :class:`CheckChildren`: first look up these child runs (after a claim: children that ended while
  nobody waited), then decide again with :attr:`ObjectiveSnapshot.reconciled` set;
- :class:`MergeTask`: first merge this accepted attempt into the repository's main branch, then
  decide again with its :class:`MergeOutcome` in :attr:`ObjectiveSnapshot.merges`;
- :class:`ObjectiveMove`: the task graph changes to record (typed, :mod:`agentmaestro.core.task_changes`),
  the actions to take in order (child runs to start, a worktree to remove), and the ending, if any.

New run ids come from :attr:`ObjectiveSnapshot.new_run_id`, injected like the clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from agentmaestro.core.events import RunState
from agentmaestro.core.policy import Violation
from agentmaestro.core.states import RunStatus
from agentmaestro.core.task_changes import (
    AddTasks,
    Change,
    ChangeDeps,
    HelperDone,
    HelperStarted,
    PlanAttempts,
    Processed,
    ReplanRequested,
    ReplanStarted,
    SetStatus,
)
from agentmaestro.core.tasks import Graph, Task, TaskStatus, apply_change, ready_tasks, validate_plan

__all__ = [
    "GUARDS",
    "Action",
    "CheckChildren",
    "ChildResult",
    "Complete",
    "End",
    "Fail",
    "Guard",
    "MergeOutcome",
    "MergeTask",
    "ObjectiveMove",
    "ObjectiveSettings",
    "ObjectiveSnapshot",
    "RemoveWorktree",
    "StartEscalation",
    "StartPlanner",
    "StartReview",
    "StartWorker",
    "StopOnViolation",
    "decide_move",
    "parse_json",
    "parse_verdict",
]

# ------------------------------------------------------------------------------------- the input


@dataclass(frozen=True, kw_only=True)
class ObjectiveSettings:
    """An objective's settings, read from its run's spec."""

    goal: str
    """What the objective must achieve."""
    planner: str = "planner"
    """The agent that plans (and re-plans)."""
    strategist: str = "strategist"
    """The agent that reviews each attempt."""
    max_workers: int = 5
    """Worker runs in flight at most."""
    max_attempts: int = 4
    """Attempts per task before a person is asked."""
    max_plan_attempts: int = 3
    """Planner runs per (re)plan before the objective fails."""
    has_repo: bool = False
    """Tasks work in git worktrees of a repository, and accepted work is merged."""

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], *, task: str) -> ObjectiveSettings:
        """The settings in an objective run's spec (``task`` is the run's input, the default goal)."""
        return cls(
            goal=str(spec.get("goal") or task),
            planner=str(spec.get("planner", "planner")),
            strategist=str(spec.get("strategist", "strategist")),
            max_workers=int(spec.get("max_concurrent_workers", 5)),
            max_attempts=int(spec.get("max_attempts", 4)),
            max_plan_attempts=int(spec.get("max_plan_attempts", 3)),
            has_repo=bool(spec.get("repo")),
        )


@dataclass(frozen=True, kw_only=True)
class ChildResult:
    """How a child run of the objective ended."""

    call_id: str
    """The call id it was started under."""
    run_id: str
    """The child run."""
    status: RunStatus
    """Its terminal status."""
    output: str | None = None
    """Its output."""
    error: str | None = None
    """Its error."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChildResult:
        """From a CHILDREN_FINISHED result."""
        return cls(
            call_id=str(data.get("call_id", "")),
            run_id=str(data["run_id"]),
            status=RunStatus(data["status"]),
            output=data.get("output"),
            error=data.get("error"),
        )

    @property
    def ok(self) -> bool:
        """True when the child completed."""
        return self.status is RunStatus.COMPLETED


@dataclass(frozen=True, kw_only=True)
class MergeOutcome:
    """The outcome of merging an accepted attempt (the answer to :class:`MergeTask`)."""

    merged: bool
    """True when the attempt's branch is now part of the main branch."""
    conflicts: tuple[str, ...] = ()
    """On a conflict: the conflicting paths."""
    diff: str = ""
    """On a conflict: the conflicting diff."""


@dataclass(frozen=True, kw_only=True)
class ObjectiveSnapshot:
    """What :func:`decide_move` looks at: the objective's state plus facts from outside its event log."""

    run_id: str
    """The objective run."""
    state: RunState
    """The folded run state (its policy limits the objective's wall time and moves)."""
    now: float
    """Current time (injected, never read from a clock here)."""
    graph: Graph
    """The folded task graph."""
    settings: ObjectiveSettings
    """The objective's settings."""
    agents: frozenset[str]
    """Agents available on this worker."""
    workers: Mapping[str, str]
    """Worker types the planner may use: name -> description."""
    depth: int
    """The objective run's depth (its children run one deeper)."""
    max_depth: int
    """The deepest a run may be."""
    new_run_id: Callable[[], str]
    """Mints the id of a child run to start."""
    cancel_requested: bool = False
    """An operator asked to cancel the run."""
    reconcile: bool = False
    """First move after a claim: children in flight may have ended while nobody waited."""
    reconciled: tuple[ChildResult, ...] | None = None
    """The answer to :class:`CheckChildren`: the children found ended (None: not looked up yet)."""
    merges: Mapping[tuple[str, int], MergeOutcome] = field(default_factory=dict[tuple[str, int], MergeOutcome])
    """Answers to :class:`MergeTask`, by (task id, attempt)."""


# ------------------------------------------------------------------------------------ the output


@dataclass(frozen=True, kw_only=True)
class Cancel:
    """End the run as cancelled (the engine reads the reason) and clean up its worktrees."""


@dataclass(frozen=True, kw_only=True)
class StopOnViolation:
    """End the run on the objective's own limits (wall time, moves) and clean up its worktrees."""

    violation: Violation
    """The limit broken."""


@dataclass(frozen=True, kw_only=True)
class Fail:
    """End the run as failed."""

    error: str
    """Why."""
    cleanup: bool = True
    """Remove the objective's worktrees and branches first."""


@dataclass(frozen=True, kw_only=True)
class Complete:
    """End the run as completed and clean up its worktrees."""

    output: str
    """The objective's report: each task's status and accepted output."""


End = Cancel | StopOnViolation | Fail | Complete
"""How an objective run ends."""


@dataclass(frozen=True, kw_only=True)
class CheckChildren:
    """Look up these children in flight, then decide again with the ended ones in ``reconciled``."""

    children: tuple[tuple[str, str], ...]
    """(call id, run id) of each."""


@dataclass(frozen=True, kw_only=True)
class MergeTask:
    """Merge an accepted attempt's branch into the main branch, then decide again with the outcome."""

    task_id: str
    """The task."""
    attempt: int
    """The attempt (its branch and worktree)."""
    message: str
    """The merge commit's message."""


@dataclass(frozen=True, kw_only=True)
class StartPlanner:
    """Start a planner run: a first plan (``replan`` None) or a re-plan."""

    run_id: str
    """The run to start."""
    errors: tuple[str, ...] = ()
    """Why the previous answer was not a valid plan."""
    previous: str | None = None
    """The previous answer, when it was not valid."""
    replan: tuple[Mapping[str, Any], ...] | None = None
    """A re-plan's requests (``{reason, tasks}``)."""
    graph: Graph | None = None
    """A re-plan: the task graph the planner is shown."""


@dataclass(frozen=True, kw_only=True)
class StartWorker:
    """Start a worker run on a task (in a fresh worktree when the objective has a repository)."""

    run_id: str
    """The run to start."""
    task: Task
    """The task, before it becomes active."""
    attempt: int
    """The attempt's number (its worktree and branch)."""
    graph: Graph
    """The task graph the worker is shown (its dependencies' results)."""


@dataclass(frozen=True, kw_only=True)
class StartReview:
    """Start the strategist's review of an attempt (committing its worktree first, for the diff)."""

    run_id: str
    """The run to start."""
    task: Task
    """The task, as the worker saw it."""
    attempt: int
    """The attempt reviewed."""
    output: str | None
    """The worker's output."""


@dataclass(frozen=True, kw_only=True)
class StartEscalation:
    """Start an escalation run: a person decides about a task (retry, answer with a new task, abandon)."""

    run_id: str
    """The run to start."""
    task_id: str
    """The task."""
    kind: str
    """``task_rejected`` or ``merge_conflict``."""
    question: str
    """What the person is asked."""
    detail: Mapping[str, Any]
    """Shown with the question: the objective, the task, the reason, attempts or the conflict."""


@dataclass(frozen=True, kw_only=True)
class RemoveWorktree:
    """Remove a merged attempt's worktree and branch."""

    task_id: str
    """The task."""
    attempt: int
    """The attempt."""


Action = StartPlanner | StartWorker | StartReview | StartEscalation | RemoveWorktree
"""Something the engine does for a move, in order."""


@dataclass(frozen=True, kw_only=True)
class ObjectiveMove:
    """One move: what to record, what to do, and how the run ends (if it does)."""

    changes: tuple[Change, ...] = ()
    """Task graph changes, in order (recorded in one STEP_COMPLETED)."""
    actions: tuple[Action, ...] = ()
    """Child runs to start and worktrees to remove, in order (none when the run ends: its clean-up removes all)."""
    end: Fail | Complete | None = None
    """The run ends after this move."""
    notes: tuple[str, ...] = ()
    """What happened, for people (the step's content)."""
    graph: Graph = field(default_factory=Graph)
    """The task graph after the changes."""


# ------------------------------------------------------------------------------------ the guards


@dataclass(frozen=True, kw_only=True)
class Guard:
    """One row of the guard table, checked before any move."""

    name: str
    """Human-readable condition."""
    when: Callable[[ObjectiveSnapshot], bool]
    """The condition."""
    build: Callable[[ObjectiveSnapshot], End]
    """How the run ends."""


def _violation(s: ObjectiveSnapshot) -> Violation | None:
    return s.state.policy.check(s.state.usage(s.now))


def _missing(s: ObjectiveSnapshot) -> list[str]:
    return [a for a in (s.settings.planner, s.settings.strategist) if a not in s.agents]


def _stop(s: ObjectiveSnapshot) -> End:
    violation = _violation(s)
    assert violation is not None
    return StopOnViolation(violation=violation)


GUARDS: Final[tuple[Guard, ...]] = (
    Guard(name="cancel requested", when=lambda s: s.cancel_requested, build=lambda s: Cancel()),
    Guard(
        name="the objective's own limits (wall time, moves) are broken",
        when=lambda s: _violation(s) is not None,
        build=_stop,
    ),
    Guard(
        name="the planner or the strategist is not available on this worker",
        when=lambda s: bool(_missing(s)),
        build=lambda s: Fail(error=f"agent(s) {', '.join(_missing(s))} not available on this worker", cleanup=False),
    ),
    Guard(
        name="its children would be deeper than the depth limit",
        when=lambda s: s.depth + 1 > s.max_depth,
        build=lambda s: Fail(error=f"depth limit {s.max_depth} reached", cleanup=False),
    ),
)
"""Ordered guards; the first that holds ends the run, otherwise the objective makes a move."""


def decide_move(snapshot: ObjectiveSnapshot) -> End | CheckChildren | MergeTask | ObjectiveMove:
    """The objective's next step (see the module docstring)."""
    for guard in GUARDS:
        if guard.when(snapshot):
            return guard.build(snapshot)
    results = [ChildResult.from_json(r) for r in snapshot.graph.inbox]
    if snapshot.reconcile:
        if snapshot.reconciled is None:
            seen = {r.run_id for r in results}
            unseen = tuple((c, r) for c, r in snapshot.graph.active_children() if r not in seen)
            if unseen:
                return CheckChildren(children=unseen)
        else:
            results += snapshot.reconciled
    try:
        return _Mover(snapshot).move(results)
    except _MergeFirst as need:
        return need.request


# ------------------------------------------------------------------------------------- the move


class _MergeFirst(Exception):
    """Signal: the move needs a merge's outcome before it can go on."""

    def __init__(self, request: MergeTask) -> None:
        super().__init__(request.task_id)
        self.request = request


class _Mover:
    """Builds one move: a working copy of the graph, the changes made, the actions decided."""

    def __init__(self, s: ObjectiveSnapshot) -> None:
        self.s = s
        self.cfg = s.settings
        self.g = s.graph
        self.changes: list[Change] = []
        self.actions: list[Action] = []
        self.notes: list[str] = []
        self.end: Fail | Complete | None = None

    def emit(self, change: Change) -> None:
        self.g = apply_change(self.g, change.to_json())
        self.changes.append(change)

    def move(self, results: list[ChildResult]) -> ObjectiveMove:
        if results:
            self.emit(Processed(run_ids=tuple(r.run_id for r in results)))
        for r in results:
            self.handle(r)
        if self.end is None:
            self.dispatch()
        return ObjectiveMove(
            changes=tuple(self.changes),
            actions=() if self.end is not None else tuple(self.actions),
            end=self.end,
            notes=tuple(self.notes),
            graph=self.g,
        )

    def dispatch(self) -> None:
        if not self.g.tasks and not self.g.helpers:
            # The first move, or a restart after the planner gave up: plan (again) from scratch.
            if self.g.plan_attempts:
                self.emit(PlanAttempts(n=0))
            self.start_planner(errors=(), previous=None)
        if self.g.replan and not self.g.helpers:
            self.start_replan()
        for t in ready_tasks(self.g):
            self.emit(SetStatus(task_id=t.task_id, to=TaskStatus.READY))
        active = sum(1 for t in self.g.tasks.values() if t.status is TaskStatus.ACTIVE)
        for t in sorted(self.g.tasks.values(), key=lambda t: t.order):
            if active >= self.cfg.max_workers:
                break
            if t.status is TaskStatus.READY:
                self.start_worker(t)
                active += 1
        if not self.g.active_children():
            self.finish()

    def finish(self) -> None:
        tasks = sorted(self.g.tasks.values(), key=lambda t: t.order)
        if tasks and all(t.status.terminal for t in tasks) and not self.g.replan:
            done = [t for t in tasks if t.status is TaskStatus.COMPLETE]
            lines = [f"Objective: {self.cfg.goal}", f"{len(done)} of {len(tasks)} task(s) complete."]
            for t in tasks:
                out = (t.attempts[-1].get("output") or "") if t.attempts and t.status is TaskStatus.COMPLETE else ""
                lines.append(f"- {t.task_id} [{t.status.value}] {t.title}: {out[:500]}")
            self.end = Complete(output="\n".join(lines))
            return
        stuck = [t.task_id for t in tasks if not t.status.terminal]
        self.end = Fail(error=f"objective cannot progress: task(s) {', '.join(stuck) or '(none planned)'} blocked")

    # ------------------------------------------------------------------------------ results

    def handle(self, r: ChildResult) -> None:
        helper = next(((c, h) for c, h in self.g.helpers.items() if h["run_id"] == r.run_id), None)
        if helper is not None:
            self.emit(HelperDone(call_id=helper[0]))
            context = helper[1].get("context")
            self.plan_result(r, replan=helper[1].get("kind") == "replan", context=context)
            return
        task = next((t for t in self.g.tasks.values() if t.run_id == r.run_id), None)
        if task is None:
            return  # an abandoned task's run, or a result already handled
        if task.status is TaskStatus.ACTIVE:
            self.worker_result(task, r)
        elif task.status is TaskStatus.AWAITING_QA:
            self.qa_result(task, r)
        elif task.status is TaskStatus.WAITING_HUMAN:
            self.human_result(task, r)

    def plan_result(self, r: ChildResult, *, replan: bool, context: list[dict[str, Any]] | None) -> None:
        errors: list[str]
        tasks: list[dict[str, Any]] = []
        if not r.ok:
            errors = [f"the planner run {r.status.value}: {r.error or 'no output'}"]
        else:
            try:
                raw = parse_json(r.output)
            except ValueError as exc:
                errors = [str(exc)]
            else:
                tasks, errors = validate_plan(raw, set(self.s.workers), existing=self.g.tasks if replan else None)
        if not errors:
            self.emit(AddTasks(tasks=tuple(tasks)))
            self.emit(PlanAttempts(n=0 if replan else self.g.plan_attempts))
            self.notes.append(f"{'re-plan' if replan else 'plan'}: {len(tasks)} task(s)")
            return
        if self.g.plan_attempts >= self.cfg.max_plan_attempts:
            what = "re-plan" if replan else "plan"
            self.end = Fail(
                error=f"the planner gave no valid {what} after {self.g.plan_attempts} attempt(s): " + "; ".join(errors)
            )
            return
        self.notes.append(f"plan rejected: {'; '.join(errors)[:300]}")
        if replan:
            self.start_replan(errors=tuple(errors), previous=r.output, context=context)
        else:
            self.start_planner(errors=tuple(errors), previous=r.output)

    def worker_result(self, task: Task, r: ChildResult) -> None:
        if not r.ok:
            self.emit(SetStatus(task_id=task.task_id, to=TaskStatus.FAILED, error=r.error or r.status.value))
            self.retry_or_escalate(task.task_id)
            return
        qa_id = self.s.new_run_id()
        self.actions.append(StartReview(run_id=qa_id, task=task, attempt=len(task.attempts), output=r.output))
        self.emit(SetStatus(task_id=task.task_id, to=TaskStatus.AWAITING_QA, output=r.output, run_id=qa_id))

    def qa_result(self, task: Task, r: ChildResult) -> None:
        if r.ok:
            try:
                accept, feedback = parse_verdict(r.output)
            except ValueError as exc:
                accept, feedback = False, f"the strategist gave no usable verdict ({exc})"
        else:
            accept, feedback = False, f"the review run {r.status.value}: {r.error or 'no output'}"
        if not accept:
            self.emit(SetStatus(task_id=task.task_id, to=TaskStatus.FAILED, feedback=feedback))
            self.retry_or_escalate(task.task_id)
            return
        attempt = len(task.attempts)
        if self.cfg.has_repo:
            merge = self.s.merges.get((task.task_id, attempt))
            if merge is None:
                message = f"Merge task {task.task_id}: {task.title}"
                raise _MergeFirst(MergeTask(task_id=task.task_id, attempt=attempt, message=message))
            if not merge.merged:
                reason = f"merging task {task.task_id} conflicts in {', '.join(merge.conflicts)}"
                detail = {"diff": merge.diff, "conflicts": list(merge.conflicts)}
                self.escalate(task.task_id, "merge_conflict", reason, detail)
                return
            self.actions.append(RemoveWorktree(task_id=task.task_id, attempt=attempt))
        self.emit(SetStatus(task_id=task.task_id, to=TaskStatus.COMPLETE, feedback=feedback))
        self.notes.append(f"{task.task_id} complete")

    def human_result(self, task: Task, r: ChildResult) -> None:
        if r.status is RunStatus.CANCELLED:
            # The question was withdrawn (the objective was cancelled, then restarted): try the task again.
            self.emit(SetStatus(task_id=task.task_id, to=TaskStatus.READY))
            return
        decision: dict[str, Any] = {"action": "abandon"}
        if r.ok:
            try:
                decision = json.loads(r.output or "{}")
            except ValueError:
                decision = {"action": "retry"}
        action = decision.get("action")
        by = decision.get("by") or "a person"
        if action == "retry":
            self.emit(SetStatus(task_id=task.task_id, to=TaskStatus.READY, note=decision.get("instructions")))
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
            reason = f"replaced by {new} ({by})"
            self.emit(SetStatus(task_id=task.task_id, to=TaskStatus.ABANDONED, reason=reason))
            self.emit(AddTasks(tasks=(spec,)))
            for t in list(self.g.tasks.values()):
                if task.task_id in t.depends_on and not t.status.started:
                    self.emit(ChangeDeps(task_id=t.task_id, add=(new,), remove=(task.task_id,)))
            self.notes.append(f"{task.task_id} replaced by new task {new}")
        else:
            reason = f"abandoned by {by}" if r.ok else (r.error or "abandoned")
            self.abandon(task.task_id, reason)

    def _fresh_id(self, prefix: str) -> str:
        n = 1
        while f"{prefix}{n}" in self.g.tasks:
            n += 1
        return f"{prefix}{n}"

    # ---------------------------------------------------------------------------- decisions

    def abandon(self, task_id: str, reason: str) -> None:
        self.emit(SetStatus(task_id=task_id, to=TaskStatus.ABANDONED, reason=reason))
        self.emit(ReplanRequested(reason=reason, tasks=(task_id,)))
        self.notes.append(f"{task_id} abandoned")

    def retry_or_escalate(self, task_id: str) -> None:
        task = self.g.tasks[task_id]
        used = len(task.attempts) - task.attempt_base
        if used < self.cfg.max_attempts:
            self.emit(SetStatus(task_id=task_id, to=TaskStatus.READY))
            return
        last = task.attempts[-1] if task.attempts else {}
        reason = f"task {task_id} failed {used} attempt(s); last: {last.get('feedback') or last.get('error')}"
        self.escalate(task_id, "task_rejected", reason, {"attempts": [dict(a) for a in task.attempts]})

    def escalate(self, task_id: str, kind: str, reason: str, detail: dict[str, Any]) -> None:
        task = self.g.tasks[task_id]
        run_id = self.s.new_run_id()
        question = (
            f"Objective {self.s.run_id}, task {task_id} ({task.title}): {reason}. Retry with modifications "
            "(instructions), answer with the instructions of a new task to spawn in its place, or abandon it."
        )
        detail = {"objective_run_id": self.s.run_id, "task_id": task_id, "reason": reason, **detail}
        self.actions.append(
            StartEscalation(run_id=run_id, task_id=task_id, kind=kind, question=question, detail=detail)
        )
        self.emit(SetStatus(task_id=task_id, to=TaskStatus.WAITING_HUMAN, run_id=run_id, kind=kind, reason=reason))
        self.notes.append(f"{task_id} waits for a person ({kind})")

    # ------------------------------------------------------------------------------ starting

    def start_planner(self, *, errors: tuple[str, ...], previous: str | None) -> None:
        run_id = self.s.new_run_id()
        self.actions.append(StartPlanner(run_id=run_id, errors=errors, previous=previous))
        self.emit(PlanAttempts(n=self.g.plan_attempts + 1))
        self.emit(HelperStarted(call_id=f"plan:{self.g.plan_attempts}", run_id=run_id, kind="plan"))

    def start_replan(
        self,
        *,
        errors: tuple[str, ...] = (),
        previous: str | None = None,
        context: list[dict[str, Any]] | None = None,
    ) -> None:
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
                if not self.g.tasks[tid].status.started:
                    self.emit(SetStatus(task_id=tid, to=TaskStatus.ABANDONED, reason="re-planned"))
            self.emit(ReplanStarted())
            context = requests
            if not affected and all(req.get("tasks") for req in requests):
                return  # nothing depended on the abandoned task(s): nothing to re-plan
            self.emit(PlanAttempts(n=0))
        run_id = self.s.new_run_id()
        replan = tuple(context or [{"reason": "re-plan", "tasks": []}])
        self.actions.append(StartPlanner(run_id=run_id, errors=errors, previous=previous, replan=replan, graph=self.g))
        self.emit(PlanAttempts(n=self.g.plan_attempts + 1))
        call_id = f"replan:{self.g.plan_attempts}"
        self.emit(HelperStarted(call_id=call_id, run_id=run_id, kind="replan", context=tuple(context or ())))

    def start_worker(self, task: Task) -> None:
        if task.worker not in self.s.agents:
            self.abandon(task.task_id, f"worker type {task.worker!r} is not available on this worker")
            return
        run_id = self.s.new_run_id()
        self.actions.append(StartWorker(run_id=run_id, task=task, attempt=len(task.attempts) + 1, graph=self.g))
        self.emit(SetStatus(task_id=task.task_id, to=TaskStatus.ACTIVE, run_id=run_id))


# ---------------------------------------------------------------------------- reading the answers

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def parse_json(text: str | None) -> Any:
    """The first JSON value in ``text`` (a code fence's content first). Raises ValueError if none."""
    text = (text or "").strip()
    candidates = [m.group(1).strip() for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for cand in candidates:
        for i, ch in enumerate(cand):
            if ch in "[{":
                try:
                    value, _end = decoder.raw_decode(cand, i)
                except json.JSONDecodeError:
                    continue
                return value
    raise ValueError("the answer contains no JSON object or list")


def parse_verdict(text: str | None) -> tuple[bool, str]:
    """(accepted, feedback) from a strategist's answer. Raises ValueError for an unreadable verdict."""
    value = parse_json(text)
    if not isinstance(value, dict) or not isinstance(value.get("accept"), bool):
        raise ValueError('the verdict must be a JSON object with a boolean "accept"')
    return bool(value["accept"]), str(value.get("feedback") or "")
