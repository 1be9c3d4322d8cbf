"""A run's rows: records and events from rows, the rows of events and steps, one run read, events appended.

The pieces every write path shares (the step commit in ``_ops.py``, sub-run completion in ``_children.py``,
human decisions in ``_interventions.py``, objective commands in ``_objectives.py``), kept below all of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from agentmaestro.core.events import Event, RunState, apply_event
from agentmaestro.core.states import EventType, StepKind
from agentmaestro.errors import ConflictError, NotFoundError
from agentmaestro.store.records import RunRecord, StepRow
from agentmaestro.store.schema import run_events, runs, steps


def record_from_row(row: Row[Any]) -> RunRecord:
    """Build a RunRecord from a ``runs`` row."""
    m = row._mapping
    return RunRecord(
        run_id=m["run_id"],
        workspace_id=m["workspace_id"],
        agent_name=m["agent_name"],
        parent_run_id=m["parent_run_id"],
        input=m["input"],
        spec=m["spec"],
        state=RunState.from_json(m["state"]),
        version=m["version"],
        lease_owner=m["lease_owner"],
        lease_epoch=m["lease_epoch"],
        lease_expires_at=m["lease_expires_at"],
        cancel_requested=bool(m["cancel_requested"]),
        cancel_reason=m["cancel_reason"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        finished_at=m["finished_at"],
        created_by=m.get("created_by"),
    )


def event_from_row(row: Row[Any]) -> Event:
    """Build an Event from a ``run_events`` row."""
    m = row._mapping
    return Event(
        run_id=m["run_id"],
        seq=m["seq"],
        type=EventType(m["type"]),
        payload=m["payload"],
        created_at=m["created_at"],
        step=m["step_index"],
    )


def event_rows(workspace_id: str, events: Iterable[Event]) -> list[dict[str, Any]]:
    return [
        {
            "run_id": e.run_id,
            "seq": e.seq,
            "workspace_id": workspace_id,
            "type": e.type.value,
            "step_index": e.step,
            "payload": e.payload,
            "created_at": e.created_at,
        }
        for e in events
    ]


def step_rows(run_id: str, workspace_id: str, rows: Iterable[StepRow]) -> list[dict[str, Any]]:
    return [
        {
            "run_id": run_id,
            "step_index": s.step_index,
            "workspace_id": workspace_id,
            "kind": s.kind.value,
            "name": s.name,
            "status": s.status,
            "input_tokens": s.input_tokens,
            "output_tokens": s.output_tokens,
            "cost_usd": s.cost_usd,
            "duration_ms": s.duration_ms,
            "seq": s.seq,
            "created_at": s.created_at,
        }
        for s in rows
    ]


def snapshot_columns(state: RunState) -> dict[str, Any]:
    assert state.status is not None
    return {
        "state": state.to_snapshot(),
        "status": state.status.value,
        "phase": state.phase.value,
        "steps": state.steps,
        "tool_calls": state.tool_calls,
        "tokens": state.tokens,
        "cost_usd": state.cost_usd,
        "output": state.output,
        "error": state.error,
        "last_seq": state.last_seq,
    }


def get_run(conn: Connection, run_id: str, workspace_id: str | None = None) -> RunRecord:
    """Fetch one run; NotFoundError if absent or in another workspace."""
    q = select(runs).where(runs.c.run_id == run_id)
    if workspace_id is not None:
        q = q.where(runs.c.workspace_id == workspace_id)
    row = conn.execute(q).first()
    if row is None:
        raise NotFoundError(f"run {run_id!r} not found")
    return record_from_row(row)


def step_row_of(event: Event) -> StepRow | None:
    """The ``steps`` row of a step recorded outside a worker's commit (a person's answer, a rejection, a sub-run).

    Tokens, cost and duration come from the payload where it has them (else 0). None for an event
    that finishes no step.
    """
    if event.type not in (EventType.STEP_COMPLETED, EventType.STEP_FAILED) or event.step is None:
        return None
    p = event.payload
    kind = StepKind(p["kind"])
    if event.type is EventType.STEP_FAILED:
        status = "failed"
    elif p.get("rejected"):
        status = "rejected"
    elif p.get("denied"):
        status = "denied"
    else:
        status = "error" if p.get("is_error") else "completed"
    usage = p.get("usage") or {}
    name = p.get("model") if kind is StepKind.MODEL_CALL else p.get("name")
    return StepRow(
        step_index=event.step,
        kind=kind,
        name=None if name is None else str(name)[:200],
        status=status,
        seq=event.seq,
        input_tokens=int(usage.get("input_tokens", 0)),
        output_tokens=int(usage.get("output_tokens", 0)),
        cost_usd=float(p.get("cost_usd", 0.0)),
        duration_ms=float(p.get("duration_ms", 0.0)),
        created_at=event.created_at,
    )


def append_guarded(conn: Connection, rec: RunRecord, events: Sequence[Event], now: float, **extra: Any) -> RunRecord:
    """Apply events to a run that no worker holds, guarded by its version; steps they finish get their rows."""
    state = rec.state
    for ev in events:
        state = apply_event(state, ev)
    values: dict[str, Any] = {"version": rec.version + 1, "updated_at": now, **snapshot_columns(state), **extra}
    res = conn.execute(update(runs).where(runs.c.run_id == rec.run_id, runs.c.version == rec.version).values(values))
    if res.rowcount != 1:
        raise ConflictError(f"run {rec.run_id!r} changed concurrently; try again")
    conn.execute(insert(run_events), event_rows(rec.workspace_id, events))
    rows = [row for row in map(step_row_of, events) if row is not None]
    if rows:
        conn.execute(insert(steps), step_rows(rec.run_id, rec.workspace_id, rows))
    return dataclasses.replace(rec, state=state, version=rec.version + 1, updated_at=now)
