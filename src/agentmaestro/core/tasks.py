"""Objective task graphs: task statuses, the task transition table, plan validation and the reducer.

An objective run records every change to its task graph as a *change* inside the ``objective``
section of its own events' payloads (STEP_COMPLETED of kind MESSAGE written by the objective
driver, CHILDREN_SPAWNED, and CHILDREN_FINISHED appended by an operator command). The graph is a
fold of those changes: :func:`fold_graph` rebuilds it from a run's events, and
:func:`apply_change` is the one reducer. Pure: no I/O.

Task status: ``planned -> ready -> active -> awaiting_qa -> complete | failed -> (retry) ready |
waiting_human | abandoned``. Every status change goes through :data:`TASK_TRANSITIONS`; any other
pair raises :class:`~agentmaestro.errors.InvalidTransitionError`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from agentmaestro.errors import InvalidTransitionError

__all__ = [
    "TASK_TRANSITIONS",
    "Graph",
    "Task",
    "TaskStatus",
    "apply_change",
    "apply_changes",
    "find_cycle",
    "fold_graph",
    "next_task_status",
    "ready_tasks",
    "validate_dependency_change",
    "validate_plan",
]


class TaskStatus(StrEnum):
    """Where a task of an objective is."""

    PLANNED = "planned"
    READY = "ready"
    ACTIVE = "active"
    AWAITING_QA = "awaiting_qa"
    COMPLETE = "complete"
    FAILED = "failed"
    WAITING_HUMAN = "waiting_human"
    ABANDONED = "abandoned"

    @property
    def terminal(self) -> bool:
        """True for complete and abandoned."""
        return self in (TaskStatus.COMPLETE, TaskStatus.ABANDONED)

    @property
    def started(self) -> bool:
        """True once the task left planned/ready (its dependencies can no longer change)."""
        return self not in (TaskStatus.PLANNED, TaskStatus.READY)


_PL, _RD, _AC, _QA = TaskStatus.PLANNED, TaskStatus.READY, TaskStatus.ACTIVE, TaskStatus.AWAITING_QA
_CO, _FA, _WH, _AB = TaskStatus.COMPLETE, TaskStatus.FAILED, TaskStatus.WAITING_HUMAN, TaskStatus.ABANDONED

TASK_TRANSITIONS: Final[Mapping[TaskStatus, frozenset[TaskStatus]]] = MappingProxyType(
    {
        # Dependencies settled -> ready; an added dependency sends a ready task back to planned.
        _PL: frozenset({_RD, _AB}),
        _RD: frozenset({_AC, _PL, _AB}),
        # A worker run finished (QA next) or failed.
        _AC: frozenset({_QA, _FA, _AB}),
        # QA accepted (and the work merged), rejected, or the merge conflicted (a person decides).
        _QA: frozenset({_CO, _FA, _WH, _AB}),
        # A failed attempt is retried, or escalated after the last attempt.
        _FA: frozenset({_RD, _WH, _AB}),
        # A person retries (with modifications) or abandons (or replaces it with a new task).
        _WH: frozenset({_RD, _AB}),
        # complete and abandoned are final.
        _CO: frozenset(),
        _AB: frozenset(),
    }
)
"""The task status table: status -> statuses it may move to. Terminal statuses have none."""


def next_task_status(current: TaskStatus, new: TaskStatus) -> TaskStatus:
    """Return ``new`` if ``current -> new`` is in the table; raise InvalidTransitionError otherwise."""
    if new not in TASK_TRANSITIONS[current]:
        raise InvalidTransitionError(f"task status {current.value!r} -> {new.value!r} is not allowed")
    return new


@dataclass(frozen=True, kw_only=True)
class Task:
    """One task of an objective's plan, with its progress."""

    task_id: str
    """Unique id inside the objective (letters, digits, ``_``, ``-``)."""
    title: str
    """Short title."""
    instructions: str
    """What the worker must do."""
    worker: str
    """The agent that does it (the worker type)."""
    depends_on: tuple[str, ...] = ()
    """Tasks that must be complete first."""
    acceptance: tuple[str, ...] = ()
    """Acceptance criteria the strategist checks."""
    status: TaskStatus = TaskStatus.PLANNED
    """Current status."""
    attempts: tuple[dict[str, Any], ...] = ()
    """Earlier and current attempts: ``{attempt, run_id, status, output, error, feedback, qa_run_id}``."""
    notes: tuple[str, ...] = ()
    """Modifications from people (retry with modifications), given to later attempts."""
    run_id: str | None = None
    """The child run currently working for the task (worker, QA or escalation)."""
    escalation: dict[str, Any] | None = None
    """While waiting_human: ``{kind, run_id, reason}``."""
    reason: str | None = None
    """Why it was abandoned or last failed."""
    order: int = 0
    """Position in plan order (dispatch order among ready tasks)."""
    attempt_base: int = 0
    """Attempts made before the last decision of a person (retries count from here)."""

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (served by the API)."""
        return {
            "task_id": self.task_id,
            "title": self.title,
            "instructions": self.instructions,
            "worker": self.worker,
            "depends_on": list(self.depends_on),
            "acceptance": list(self.acceptance),
            "status": self.status.value,
            "attempts": [dict(a) for a in self.attempts],
            "notes": list(self.notes),
            "run_id": self.run_id,
            "escalation": self.escalation,
            "reason": self.reason,
            "order": self.order,
            "attempt_base": self.attempt_base,
        }


@dataclass(frozen=True, kw_only=True)
class Graph:
    """The folded state of an objective's tasks."""

    tasks: Mapping[str, Task] = field(default_factory=dict)
    """Tasks by id."""
    inbox: tuple[dict[str, Any], ...] = ()
    """Child results delivered (CHILDREN_FINISHED) and not yet processed by the driver."""
    helpers: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    """Non-task child runs in flight (planner and replans), by call id: ``{run_id, kind, ...}``."""
    plan_attempts: int = 0
    """Planner runs started for the current (re)plan."""
    replan: tuple[dict[str, Any], ...] = ()
    """Re-plans requested and not yet started: ``{reason, tasks}``."""
    done: frozenset[str] = frozenset()
    """Child run ids whose results were processed."""
    next_order: int = 0
    """Order given to the next task added."""

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "tasks": [t.to_json() for t in sorted(self.tasks.values(), key=lambda t: t.order)],
            "helpers": dict(self.helpers),
            "plan_attempts": self.plan_attempts,
            "replan": [dict(r) for r in self.replan],
        }

    def active_children(self) -> list[tuple[str, str]]:
        """(call id, run id) of every child run in flight (tasks' runs and helpers)."""
        out = [(call_id, h["run_id"]) for call_id, h in self.helpers.items()]
        for t in sorted(self.tasks.values(), key=lambda t: t.order):
            if t.run_id is not None and t.run_id not in self.done:
                out.append((f"{t.status.value}:{t.task_id}:{len(t.attempts)}", t.run_id))
        return [(c, r) for c, r in out if r not in self.done]

    def counts(self) -> dict[str, int]:
        """Tasks per status."""
        out: dict[str, int] = {}
        for t in self.tasks.values():
            out[t.status.value] = out.get(t.status.value, 0) + 1
        return out


_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def find_cycle(deps: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A dependency cycle as a path ``[a, b, ..., a]``, or None. Unknown dependencies are ignored."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in deps.get(node, ()):
            if dep not in deps:
                continue
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in deps:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def validate_plan(
    raw: Any, workers: Collection[str], *, existing: Mapping[str, Task] | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Check a planner's output (a list of tasks, or ``{"tasks": [...]}``); return (tasks, problems).

    Each task needs ``id``, ``title``, ``instructions``, ``worker`` (a known worker type); optional
    ``depends_on`` (ids of this plan or of ``existing`` tasks) and ``acceptance`` (list of
    criteria). Ids are unique (also against ``existing``), and dependencies have no cycles.
    """
    problems: list[str] = []
    if isinstance(raw, dict) and "tasks" in raw:
        raw = raw["tasks"]
    if not isinstance(raw, list) or not raw:
        return [], ['the plan must be a non-empty JSON list of tasks (or {"tasks": [...]})']
    existing = existing or {}
    tasks: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        where = f"tasks[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: must be an object")
            continue
        unknown = set(item) - {"id", "title", "instructions", "worker", "depends_on", "acceptance"}
        if unknown:
            problems.append(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        tid = item.get("id")
        if not isinstance(tid, str) or not _ID_RE.match(tid):
            problems.append(f"{where}.id: must be letters, digits, '_' or '-' (at most 64), got {tid!r}")
            continue
        where = f"task {tid!r}"
        if tid in seen or tid in existing:
            problems.append(f"{where}: duplicate id")
        seen.add(tid)
        for key in ("title", "instructions"):
            if not isinstance(item.get(key), str) or not item[key].strip():
                problems.append(f"{where}.{key}: must be a non-empty string")
        worker = item.get("worker")
        if worker not in workers:
            problems.append(f"{where}.worker: unknown worker type {worker!r}; known: {', '.join(sorted(workers))}")
        deps = item.get("depends_on", [])
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            problems.append(f"{where}.depends_on: must be a list of task ids")
            deps = []
        acc = item.get("acceptance", [])
        if isinstance(acc, str):
            acc = [acc]
        if not isinstance(acc, list) or not all(isinstance(a, str) for a in acc):
            problems.append(f"{where}.acceptance: must be a list of strings")
            acc = []
        tasks.append(
            {
                "id": tid,
                "title": str(item.get("title", "")),
                "instructions": str(item.get("instructions", "")),
                "worker": worker,
                "depends_on": list(dict.fromkeys(deps)),
                "acceptance": list(acc),
            }
        )
    ids = {t["id"] for t in tasks}
    for t in tasks:
        for d in t["depends_on"]:
            if d == t["id"]:
                problems.append(f"task {t['id']!r}.depends_on: a task cannot depend on itself")
            elif d not in ids and d not in existing:
                problems.append(f"task {t['id']!r}.depends_on: unknown task {d!r}")
            elif d in existing and existing[d].status is TaskStatus.ABANDONED:
                problems.append(f"task {t['id']!r}.depends_on: task {d!r} is abandoned")
    graph = {k: list(v.depends_on) for k, v in existing.items()}
    graph.update({t["id"]: t["depends_on"] for t in tasks})
    cycle = find_cycle(graph)
    if cycle:
        problems.append(f"dependency cycle: {' -> '.join(cycle)}")
    return tasks, problems


def validate_dependency_change(graph: Graph, task_id: str, add: Sequence[str], remove: Sequence[str]) -> list[str]:
    """Problems with changing ``task_id``'s dependencies (empty when the change is allowed)."""
    task = graph.tasks.get(task_id)
    if task is None:
        return [f"unknown task {task_id!r}"]
    problems: list[str] = []
    if task.status.started:
        problems.append(f"task {task_id!r} is {task.status.value}; only planned or ready tasks can change dependencies")
    for d in add:
        if d not in graph.tasks:
            problems.append(f"unknown task {d!r}")
        elif d == task_id:
            problems.append("a task cannot depend on itself")
        elif graph.tasks[d].status is TaskStatus.ABANDONED:
            problems.append(f"task {d!r} is abandoned")
    for d in remove:
        if d not in task.depends_on:
            problems.append(f"task {task_id!r} does not depend on {d!r}")
    if problems:
        return problems
    deps = {k: list(v.depends_on) for k, v in graph.tasks.items()}
    deps[task_id] = [d for d in [*task.depends_on, *add] if d not in remove]
    cycle = find_cycle(deps)
    if cycle:
        return [f"dependency cycle: {' -> '.join(cycle)}"]
    return []


def ready_tasks(graph: Graph) -> list[Task]:
    """Planned tasks whose dependencies are all complete, in plan order."""
    out = []
    for t in sorted(graph.tasks.values(), key=lambda t: t.order):
        if t.status is TaskStatus.PLANNED and all(
            graph.tasks[d].status is TaskStatus.COMPLETE for d in t.depends_on if d in graph.tasks
        ):
            out.append(t)
    return out


# ------------------------------------------------------------------------------------ the reducer


def apply_change(graph: Graph, change: Mapping[str, Any]) -> Graph:
    """The graph after one change. Raises InvalidTransitionError for an illegal change.

    Changes (``op``): ``add`` (tasks, planned), ``status`` (task, to, + attempt/feedback/...),
    ``deps`` (task, add, remove), ``helper`` (call_id, run_id, kind: a planner run started),
    ``helper_done`` (call_id), ``replan`` (reason, tasks: request), ``replan_started``,
    ``processed`` (run ids whose results were handled), ``plan_attempts`` (n).
    """
    op = change.get("op")
    tasks = dict(graph.tasks)
    if op == "add":
        order = graph.next_order
        for t in change["tasks"]:
            if t["id"] in tasks:
                raise InvalidTransitionError(f"task {t['id']!r} already exists")
            tasks[t["id"]] = Task(
                task_id=t["id"],
                title=t.get("title", ""),
                instructions=t.get("instructions", ""),
                worker=t["worker"],
                depends_on=tuple(t.get("depends_on") or ()),
                acceptance=tuple(t.get("acceptance") or ()),
                order=order,
            )
            order += 1
        return dataclasses.replace(graph, tasks=tasks, next_order=order)
    if op == "status":
        task = _task(graph, change["task"])
        new = next_task_status(task.status, TaskStatus(change["to"]))
        upd: dict[str, Any] = {"status": new}
        attempts = list(task.attempts)
        if new is TaskStatus.ACTIVE:
            attempts.append({"attempt": len(attempts) + 1, "run_id": change["run_id"], "status": "running"})
            upd["run_id"] = change["run_id"]
            upd["escalation"] = None
        elif new is TaskStatus.AWAITING_QA:
            attempts[-1] = {**attempts[-1], "status": "awaiting_qa", "output": change.get("output")}
            upd["run_id"] = change.get("run_id")
        elif new is TaskStatus.FAILED:
            attempts[-1] = {
                **attempts[-1],
                "status": "rejected" if change.get("feedback") is not None else "failed",
                "feedback": change.get("feedback"),
                "error": change.get("error"),
            }
            upd["run_id"] = None
            upd["reason"] = change.get("feedback") or change.get("error")
        elif new is TaskStatus.COMPLETE:
            attempts[-1] = {**attempts[-1], "status": "accepted", "feedback": change.get("feedback")}
            upd["run_id"] = None
        elif new is TaskStatus.WAITING_HUMAN:
            upd["run_id"] = change.get("run_id")
            upd["escalation"] = {
                "kind": change.get("kind", "rejected"),
                "run_id": change.get("run_id"),
                "reason": change.get("reason"),
            }
            if task.status is TaskStatus.AWAITING_QA and attempts:
                attempts[-1] = {**attempts[-1], "status": "conflict", "feedback": change.get("reason")}
        elif new is TaskStatus.READY:
            upd["run_id"] = None
            if task.status is TaskStatus.WAITING_HUMAN:
                upd["attempt_base"] = len(attempts)
                upd["escalation"] = None
            if change.get("note"):
                upd["notes"] = (*task.notes, str(change["note"]))
            if change.get("instructions"):
                upd["instructions"] = str(change["instructions"])
        elif new is TaskStatus.ABANDONED:
            upd["run_id"] = None
            upd["reason"] = change.get("reason")
            upd["escalation"] = None
            if attempts and attempts[-1].get("status") in ("running", "awaiting_qa"):
                attempts[-1] = {**attempts[-1], "status": "abandoned"}
        upd["attempts"] = tuple(attempts)
        tasks[task.task_id] = dataclasses.replace(task, **upd)
        return dataclasses.replace(graph, tasks=tasks)
    if op == "deps":
        task = _task(graph, change["task"])
        add, remove = list(change.get("add") or ()), list(change.get("remove") or ())
        deps = tuple(d for d in dict.fromkeys([*task.depends_on, *add]) if d not in remove)
        if change.get("validate", True):
            problems = validate_dependency_change(graph, task.task_id, add, remove)
            if problems:
                raise InvalidTransitionError("; ".join(problems))
        tasks[task.task_id] = dataclasses.replace(task, depends_on=deps)
        return dataclasses.replace(graph, tasks=tasks)
    if op == "helper":
        helper = {"run_id": change["run_id"], "kind": change.get("kind")}
        if change.get("context"):
            helper["context"] = list(change["context"])
        helpers = {**graph.helpers, change["call_id"]: helper}
        return dataclasses.replace(graph, helpers=helpers)
    if op == "helper_done":
        helpers = {k: v for k, v in graph.helpers.items() if k != change["call_id"]}
        return dataclasses.replace(graph, helpers=helpers)
    if op == "replan":
        req = {"reason": change.get("reason", ""), "tasks": list(change.get("tasks") or ())}
        return dataclasses.replace(graph, replan=(*graph.replan, req))
    if op == "replan_started":
        return dataclasses.replace(graph, replan=())
    if op == "processed":
        return dataclasses.replace(graph, done=graph.done | frozenset(change.get("run_ids") or ()), inbox=())
    if op == "plan_attempts":
        return dataclasses.replace(graph, plan_attempts=int(change["n"]))
    raise InvalidTransitionError(f"unknown task graph change {op!r}")


def apply_changes(graph: Graph, changes: Iterable[Mapping[str, Any]]) -> Graph:
    """Apply changes in order."""
    for c in changes:
        graph = apply_change(graph, c)
    return graph


def _task(graph: Graph, task_id: str) -> Task:
    try:
        return graph.tasks[task_id]
    except KeyError:
        raise InvalidTransitionError(f"unknown task {task_id!r}") from None


def fold_event(graph: Graph, event_type: str, payload: Mapping[str, Any]) -> Graph:
    """Apply one run event (its type's value and payload) to the graph."""
    section = payload.get("objective")
    if isinstance(section, dict):
        graph = apply_changes(graph, section.get("changes") or ())
    if event_type == "CHILDREN_FINISHED":
        results = [r for r in payload.get("results") or () if r.get("run_id") not in graph.done]
        if results:
            graph = dataclasses.replace(graph, inbox=(*graph.inbox, *results))
    return graph


def fold_graph(events: Iterable[Any]) -> Graph:
    """Rebuild an objective's task graph from its run's events (objects with ``type`` and ``payload``)."""
    graph = Graph()
    for e in events:
        t = e.type.value if hasattr(e.type, "value") else str(e.type)
        graph = fold_event(graph, t, e.payload)
    return graph
