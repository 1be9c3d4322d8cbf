"""Objective runs: operator commands on the task graph (dependencies, abandon, re-plan).

A command is a list of task graph changes appended to a *waiting* objective run (it holds no lease)
as CHILDREN_FINISHED with no results and the changes in its ``objective`` section, guarded by the
run's version. The run is RUNNING again (without a lease) and any worker's objective driver picks
it up: it dispatches what the change made ready, starts the re-plan, and waits again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, update

from agentmaestro.core.events import Event
from agentmaestro.core.states import EventType, RunStatus
from agentmaestro.core.tasks import Graph, apply_changes, fold_graph
from agentmaestro.errors import ConflictError, InvalidTransitionError, NotFoundError, ValidationError
from agentmaestro.store._ops import list_events
from agentmaestro.store._rows import append_guarded, get_run
from agentmaestro.store.records import RunRecord
from agentmaestro.store.schema import human_requests

Planner = Callable[[Graph], Sequence[dict[str, Any]]]
"""Given the current graph: the changes to make (raise ValidationError to refuse)."""


def get_objective(conn: Connection, run_id: str, workspace_id: str | None) -> tuple[RunRecord, Graph]:
    """An objective run and its folded task graph (NotFoundError for other runs or workspaces)."""
    rec = get_run(conn, run_id, workspace_id)
    if rec.spec.get("kind") != "objective":
        raise NotFoundError(f"objective {run_id!r} not found")
    return rec, fold_graph(list_events(conn, run_id))


def command(
    conn: Connection, run_id: str, workspace_id: str | None, plan: Planner, by: str, now: float
) -> tuple[RunRecord, Graph, list[str]]:
    """Apply an operator's changes to a waiting objective; returns (record, new graph, child runs to cancel)."""
    rec, graph = get_objective(conn, run_id, workspace_id)
    if rec.status.terminal:
        raise ConflictError(f"objective {run_id!r} is {rec.status.value}")
    if rec.status is not RunStatus.WAITING_FOR_CHILDREN:
        raise ConflictError(f"objective {run_id!r} is {rec.status.value} (busy deciding); try again in a moment")
    changes = list(plan(graph))
    try:
        new_graph = apply_changes(graph, changes)
    except InvalidTransitionError as exc:
        raise ValidationError(str(exc)) from None
    before = {r for _, r in graph.active_children()}
    after = {r for _, r in new_graph.active_children()}
    ev = Event(
        run_id=run_id,
        seq=rec.state.last_seq + 1,
        type=EventType.CHILDREN_FINISHED,
        created_at=now,
        payload={"results": [], "objective": {"changes": changes, "by": by}},
    )
    out = append_guarded(conn, rec, [ev], now, lease_owner=None, lease_expires_at=None)
    gone = sorted(before - after)
    if gone:  # a task waiting for a person was abandoned: its question is answered
        conn.execute(
            update(human_requests)
            .where(human_requests.c.run_id.in_(gone), human_requests.c.status == "pending")
            .values(
                status="resolved",
                resolved_at=now,
                resolved_by=by,
                resolution={"action": "abandon", "instructions": "the task was abandoned", "answer": None},
            )
        )
    return out, new_graph, gone
