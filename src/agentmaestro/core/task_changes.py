"""Typed task graph changes: what an objective's move records. Pure, no I/O.

Each change is a frozen dataclass; :meth:`to_json` gives the form recorded in the ``objective``
section of the run's events (``{"op": ..., ...}``), which :func:`agentmaestro.core.tasks.apply_change`
folds. Optional fields left at None are not written (the reducer reads a missing key and None alike),
so the recorded form is what the objective driver always wrote.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from agentmaestro.core.tasks import Graph, TaskStatus, apply_change

__all__ = [
    "AddTasks",
    "Change",
    "ChangeDeps",
    "HelperDone",
    "HelperStarted",
    "PlanAttempts",
    "Processed",
    "ReplanRequested",
    "ReplanStarted",
    "SetStatus",
    "apply",
]


@dataclass(frozen=True, kw_only=True)
class Processed:
    """Child results were handled: their runs count as done and the inbox empties."""

    op: ClassVar[str] = "processed"
    run_ids: tuple[str, ...]
    """The child runs whose results were handled."""

    def to_json(self) -> dict[str, Any]:
        """The recorded form."""
        return {"op": self.op, "run_ids": list(self.run_ids)}


@dataclass(frozen=True, kw_only=True)
class PlanAttempts:
    """Set the number of planner runs started for the current (re)plan."""

    op: ClassVar[str] = "plan_attempts"
    n: int
    """The new count."""

    def to_json(self) -> dict[str, Any]:
        """The recorded form."""
        return {"op": self.op, "n": self.n}


@dataclass(frozen=True, kw_only=True)
class AddTasks:
    """Add planned tasks (as :func:`~agentmaestro.core.tasks.validate_plan` returns them)."""

    op: ClassVar[str] = "add"
    tasks: tuple[Mapping[str, Any], ...]
    """``{id, title, instructions, worker, depends_on, acceptance}`` each, in plan order."""

    def to_json(self) -> dict[str, Any]:
        """The recorded form."""
        return {"op": self.op, "tasks": [dict(t) for t in self.tasks]}


@dataclass(frozen=True, kw_only=True)
class SetStatus:
    """Move a task to another status (checked against the task status table when applied)."""

    op: ClassVar[str] = "status"
    task_id: str
    """The task."""
    to: TaskStatus
    """Its new status."""
    run_id: str | None = None
    """active: the worker run; awaiting_qa: the review run; waiting_human: the escalation run."""
    output: str | None = None
    """awaiting_qa: the worker's output."""
    error: str | None = None
    """failed: why the worker run failed."""
    feedback: str | None = None
    """failed (rejected) and complete: the reviewer's feedback."""
    kind: str | None = None
    """waiting_human: what the person is asked about (``task_rejected``, ``merge_conflict``)."""
    reason: str | None = None
    """waiting_human and abandoned: why."""
    note: str | None = None
    """ready: a person's modifications, given to later attempts."""

    def to_json(self) -> dict[str, Any]:
        """The recorded form."""
        out: dict[str, Any] = {"op": self.op, "task": self.task_id, "to": self.to.value}
        optional = {
            "run_id": self.run_id,
            "output": self.output,
            "error": self.error,
            "feedback": self.feedback,
            "kind": self.kind,
            "reason": self.reason,
            "note": self.note,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        return out


@dataclass(frozen=True, kw_only=True)
class ChangeDeps:
    """Change a not-yet-started task's dependencies."""

    op: ClassVar[str] = "deps"
    task_id: str
    """The task."""
    add: tuple[str, ...] = ()
    """Tasks it now depends on."""
    remove: tuple[str, ...] = ()
    """Tasks it no longer depends on."""

    def to_json(self) -> dict[str, Any]:
        """The recorded form."""
        return {"op": self.op, "task": self.task_id, "add": list(self.add), "remove": list(self.remove)}


@dataclass(frozen=True, kw_only=True)
class HelperStarted:
    """A planner run (first plan or re-plan) was started."""

    op: ClassVar[str] = "helper"
    call_id: str
    """``plan:N`` or ``replan:N``."""
    run_id: str
    """The planner run."""
    kind: Literal["plan", "replan"]
    """A first plan or a re-plan."""
    context: tuple[Mapping[str, Any], ...] | None = None
    """A re-plan's requests (``{reason, tasks}``), kept to ask again if its answer is not valid."""

    def to_json(self) -> dict[str, Any]:
        """The recorded form."""
        out: dict[str, Any] = {"op": self.op, "call_id": self.call_id, "run_id": self.run_id, "kind": self.kind}
        if self.context is not None:
            out["context"] = [dict(c) for c in self.context]
        return out


@dataclass(frozen=True, kw_only=True)
class HelperDone:
    """A planner run's result was handled."""

    op: ClassVar[str] = "helper_done"
    call_id: str
    """The planner run's call id."""

    def to_json(self) -> dict[str, Any]:
        """The recorded form."""
        return {"op": self.op, "call_id": self.call_id}


@dataclass(frozen=True, kw_only=True)
class ReplanRequested:
    """Ask for a re-plan: of the named tasks' dependants, or (no tasks) of everything not started."""

    op: ClassVar[str] = "replan"
    reason: str
    """Why."""
    tasks: tuple[str, ...] = ()
    """The tasks taken out (abandoned)."""

    def to_json(self) -> dict[str, Any]:
        """The recorded form."""
        return {"op": self.op, "reason": self.reason, "tasks": list(self.tasks)}


@dataclass(frozen=True, kw_only=True)
class ReplanStarted:
    """The pending re-plan requests were taken up."""

    op: ClassVar[str] = "replan_started"

    def to_json(self) -> dict[str, Any]:
        """The recorded form."""
        return {"op": self.op}


Change = (
    Processed
    | PlanAttempts
    | AddTasks
    | SetStatus
    | ChangeDeps
    | HelperStarted
    | HelperDone
    | ReplanRequested
    | ReplanStarted
)
"""One change to an objective's task graph."""


def apply(graph: Graph, changes: Iterable[Change]) -> Graph:
    """The graph after typed changes, through the one reducer (their recorded form)."""
    for change in changes:
        graph = apply_change(graph, change.to_json())
    return graph
