"""Sub-agent runs: resuming a parent when its children finish, and cancelling down the tree.

Both happen inside the transaction that made a child terminal (or cancelled the parent), so a
parent can never miss its children's completion, whichever process finished them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, select

from agentmaestro.core.events import Event
from agentmaestro.core.states import EventType, RunStatus, StepKind
from agentmaestro.store._rows import append_guarded, get_run
from agentmaestro.store.schema import runs

TERMINAL = [s.value for s in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)]


def _child_result(row: Any) -> dict[str, Any]:
    return {
        "run_id": row.run_id,
        "status": row.status,
        "output": row.output,
        "error": row.error,
    }


def resume_parents(conn: Connection, parent_ids: Iterable[str], now: float) -> list[str]:
    """For each parent waiting for children, resume it if all of them are terminal.

    Appends CHILDREN_FINISHED plus one STEP_COMPLETED per delegate call (the child's output, or its
    error) and leaves the parent RUNNING without a lease, ready for any worker. A workflow parent
    (spec kind ``workflow``) gets CHILDREN_FINISHED only: its reducer records the node results.
    Returns the resumed ids.
    """
    resumed: list[str] = []
    for parent_id in dict.fromkeys(parent_ids):
        # Lock the parent row first (PostgreSQL; SQLite has one writer): a child finishing while its
        # objective parent commits a new wait cannot be missed by both transactions.
        conn.execute(select(runs.c.run_id).where(runs.c.run_id == parent_id).with_for_update())
        parent = get_run(conn, parent_id)
        if parent.status is not RunStatus.WAITING_FOR_CHILDREN or not parent.state.children:
            continue
        child_ids = [c for _, c in parent.state.children]
        rows = {r.run_id: r for r in conn.execute(select(runs).where(runs.c.run_id.in_(child_ids)))}
        done = [
            (call_id, c)
            for call_id, c in parent.state.children
            if rows.get(c) is not None and rows[c].status in TERMINAL
        ]
        # An objective (spec kind "objective") resumes as soon as any child ends, so its dispatcher
        # can fill the freed slot; other parents wait for all of them.
        if not done or (parent.spec.get("kind") != "objective" and len(done) < len(child_ids)):
            continue
        results = [{"call_id": call_id, **_child_result(rows[c])} for call_id, c in done]
        events: list[Event] = [
            Event(
                run_id=parent_id,
                seq=parent.state.last_seq + 1,
                type=EventType.CHILDREN_FINISHED,
                created_at=now,
                payload={"results": results},
            )
        ]
        calls = {c.call_id: c for c in parent.state.pending_tool_calls}
        delegate_results = [] if parent.spec.get("kind") in ("workflow", "objective") else results
        for i, r in enumerate(delegate_results):
            call = calls.get(r["call_id"])
            ok = r["status"] == RunStatus.COMPLETED.value
            events.append(
                Event(
                    run_id=parent_id,
                    seq=parent.state.last_seq + 2 + i,
                    type=EventType.STEP_COMPLETED,
                    step=parent.state.steps + i,
                    created_at=now,
                    payload={
                        "kind": StepKind.TOOL_CALL.value,
                        "name": call.name if call else "delegate",
                        "call_id": r["call_id"],
                        "arguments": call.arguments if call else {},
                        "result": (r["output"] or "")
                        if ok
                        else f"sub-agent run {r['run_id']} {r['status']}: {r['error'] or 'no output'}",
                        "is_error": not ok,
                        "child_run_id": r["run_id"],
                    },
                )
            )
        append_guarded(conn, parent, events, now, lease_owner=None, lease_expires_at=None)
        resumed.append(parent_id)
    return resumed


def descendants(conn: Connection, run_id: str) -> list[str]:
    """Every run below ``run_id`` in the sub-agent tree (breadth first)."""
    out: list[str] = []
    frontier = [run_id]
    while frontier:
        rows = conn.execute(select(runs.c.run_id).where(runs.c.parent_run_id.in_(frontier))).all()
        frontier = [r.run_id for r in rows]
        out.extend(frontier)
    return out


def active_descendants(conn: Connection, run_id: str) -> list[str]:
    """Descendants that are not yet terminal."""
    ids = descendants(conn, run_id)
    if not ids:
        return []
    rows = conn.execute(select(runs.c.run_id, runs.c.status).where(runs.c.run_id.in_(ids))).all()
    return [r.run_id for r in rows if r.status not in TERMINAL]
