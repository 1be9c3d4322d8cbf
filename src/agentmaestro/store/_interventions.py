"""Human decisions on waiting runs: approvals, escalations, and the workspace's gate settings.

Each resolution is applied to the run through the reducer with a version-guarded update (a
waiting run holds no lease), and recorded on its own row with who decided and why.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Column, Connection, Row, Table, select, update

from agentmaestro.core.events import Event
from agentmaestro.core.gate import args_hash
from agentmaestro.core.states import EventType, RunStatus, StepKind
from agentmaestro.errors import ConflictError, NotFoundError, ValidationError
from agentmaestro.store._rows import append_guarded, get_run
from agentmaestro.store.records import RunRecord
from agentmaestro.store.schema import approvals, human_requests, workspaces


def _as_dict(r: Row[Any]) -> dict[str, Any]:
    return dict(r._mapping)


def _rows(
    conn: Connection,
    table: Table,
    key: Column[Any],
    workspace_id: str | None,
    statuses: Collection[str] | None,
    *,
    run_ids: Collection[str] | None,
    before: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Rows of ``table`` newest first, in the workspace (any for None), with one of ``statuses`` (any if empty).

    ``key`` is the table's sortable id (``apr_``/``hum_`` + creation time): the order, and ``before`` the cursor (the
    last id of the previous page). ``run_ids`` keeps the rows of those runs only.
    """
    q = select(table)
    if workspace_id is not None:
        q = q.where(table.c.workspace_id == workspace_id)
    if statuses:
        q = q.where(table.c.status.in_(list(statuses)))
    if run_ids is not None:
        q = q.where(table.c.run_id.in_(list(run_ids)))
    if before:
        q = q.where(key < before)
    q = q.order_by(key.desc()).limit(limit)
    return [_as_dict(r) for r in conn.execute(q)]


def _row(
    conn: Connection, table: Table, key: Column[Any], value: str, workspace_id: str | None, what: str
) -> dict[str, Any]:
    """The row of ``table`` whose ``key`` is ``value``, in the workspace; NotFoundError naming ``what`` if none."""
    q = select(table).where(key == value)
    if workspace_id is not None:
        q = q.where(table.c.workspace_id == workspace_id)
    row = conn.execute(q).first()
    if row is None:
        raise NotFoundError(f"{what} {value!r} not found")
    return _as_dict(row)


def list_approvals(
    conn: Connection,
    workspace_id: str | None,
    statuses: Collection[str] | None = ("pending",),
    limit: int = 100,
    *,
    run_ids: Collection[str] | None = None,
    before: str | None = None,
) -> list[dict[str, Any]]:
    """Approvals, newest first; ``before`` is the last approval id of the previous page."""
    return _rows(
        conn, approvals, approvals.c.approval_id, workspace_id, statuses, run_ids=run_ids, before=before, limit=limit
    )


def get_approval(conn: Connection, approval_id: str, workspace_id: str | None) -> dict[str, Any]:
    """One approval (NotFoundError if missing or in another workspace)."""
    return _row(conn, approvals, approvals.c.approval_id, approval_id, workspace_id, "approval")


def _add_event(
    events: list[Event],
    rec: RunRecord,
    event_type: EventType,
    now: float,
    payload: dict[str, Any],
    step: int | None = None,
) -> None:
    """Append to ``events`` the run's next event (its seq follows the run's last and those already in ``events``)."""
    seq = rec.state.last_seq + len(events) + 1
    events.append(Event(run_id=rec.run_id, seq=seq, type=event_type, step=step, created_at=now, payload=payload))


def _rejection_events(
    rec: RunRecord, approval: dict[str, Any], by: str, reason: str, now: float, *, expired: bool
) -> list[Event]:
    events: list[Event] = []
    rejected = {"approval_id": approval["approval_id"], "by": by, "reason": reason, "expired": expired}
    _add_event(events, rec, EventType.APPROVAL_REJECTED, now, rejected)
    verb = "expired without a decision" if expired else f"was rejected by {by}"
    result = {
        "kind": StepKind.TOOL_CALL.value,
        "name": approval["tool"],
        "call_id": approval["call_id"],
        "arguments": approval["arguments"],
        "result": f"The call to {approval['tool']!r} {verb}: {reason}. It was not executed.",
        "is_error": True,
        "counts_as_failure": False,
        "rejected": True,
    }
    _add_event(events, rec, EventType.STEP_COMPLETED, now, result, step=rec.state.steps)
    return events


def resolve_approval(
    conn: Connection,
    approval_id: str,
    workspace_id: str | None,
    *,
    approve: bool,
    by: str,
    reason: str,
    arguments: dict[str, Any] | None,
    now: float,
) -> tuple[RunRecord, dict[str, Any]]:
    """Approve (optionally with edited arguments) or reject a pending approval.

    Returns the run and the approval row; the row has an ``error`` key when the approval had
    expired (the expiry is recorded and committed; the caller reports the error).

    Raises:
        NotFoundError: no such approval in the workspace.
        ConflictError: it was already decided.
    """
    appr = get_approval(conn, approval_id, workspace_id)
    if appr["status"] != "pending":
        raise ConflictError(f"approval {approval_id!r} is already {appr['status']}")
    rec = get_run(conn, appr["run_id"])
    if rec.status is not RunStatus.WAITING_FOR_APPROVAL or rec.state.approval is None:
        raise ConflictError(f"run {rec.run_id!r} is {rec.status.value}, not waiting for this approval")
    if rec.state.approval.approval_id != approval_id:
        raise ConflictError(f"approval {approval_id!r} is not the run's current approval")
    if appr["expires_at"] is not None and now >= appr["expires_at"]:
        # Record the expiry (committed), and tell the caller it came too late.
        out = _expire_one(conn, appr, rec, now)
        return out, {**appr, "status": "expired", "error": f"approval {approval_id!r} expired; the call was denied"}
    if approve:
        final_args = appr["arguments"] if arguments is None else arguments
        if not isinstance(final_args, dict):
            raise ValidationError("edited arguments must be a JSON object")
        payload: dict[str, Any] = {
            "approval_id": approval_id,
            "by": by,
            "reason": reason,
            "args_hash": args_hash(appr["tool"], final_args),
            "edited": arguments is not None and arguments != appr["arguments"],
        }
        if arguments is not None:
            payload["arguments"] = final_args
        events: list[Event] = []
        _add_event(events, rec, EventType.APPROVAL_GRANTED, now, payload)
        status = "approved"
    else:
        events = _rejection_events(rec, appr, by, reason, now, expired=False)
        final_args = None
        status = "rejected"
    out = append_guarded(conn, rec, events, now, lease_owner=None, lease_expires_at=None)
    conn.execute(
        update(approvals)
        .where(approvals.c.approval_id == approval_id, approvals.c.status == "pending")
        .values(status=status, decided_at=now, decided_by=by, decision_reason=reason, approved_arguments=final_args)
    )
    decided = {"status": status, "decided_by": by, "decision_reason": reason, "decided_at": now}
    return out, {**appr, **decided, "approved_arguments": final_args}


def _expire_one(conn: Connection, appr: dict[str, Any], rec: RunRecord, now: float) -> RunRecord:
    events = _rejection_events(rec, appr, "system", "approval expired", now, expired=True)
    out = append_guarded(conn, rec, events, now, lease_owner=None, lease_expires_at=None)
    conn.execute(
        update(approvals)
        .where(approvals.c.approval_id == appr["approval_id"], approvals.c.status == "pending")
        .values(status="expired", decided_at=now, decided_by="system", decision_reason="approval expired")
    )
    return out


def expire_approvals(conn: Connection, now: float, limit: int = 100) -> list[str]:
    """Deny pending approvals past their expiry; returns the affected run ids."""
    rows = conn.execute(
        select(approvals)
        .where(approvals.c.status == "pending", approvals.c.expires_at.is_not(None), approvals.c.expires_at <= now)
        .limit(limit)
    ).all()
    touched: list[str] = []
    for r in rows:
        appr = _as_dict(r)
        rec = get_run(conn, appr["run_id"])
        if rec.status is not RunStatus.WAITING_FOR_APPROVAL or rec.state.approval is None:
            conn.execute(
                update(approvals).where(approvals.c.approval_id == appr["approval_id"]).values(status="expired")
            )
            continue
        _expire_one(conn, appr, rec, now)
        touched.append(rec.run_id)
    return touched


# ------------------------------------------------------------------------------ human requests


def list_human_requests(
    conn: Connection,
    workspace_id: str | None,
    statuses: Collection[str] | None = ("pending",),
    limit: int = 100,
    *,
    run_ids: Collection[str] | None = None,
    before: str | None = None,
) -> list[dict[str, Any]]:
    """Escalations, newest first; ``before`` is the last request id of the previous page."""
    key = human_requests.c.request_id
    return _rows(conn, human_requests, key, workspace_id, statuses, run_ids=run_ids, before=before, limit=limit)


def get_human_request(conn: Connection, request_id: str, workspace_id: str | None) -> dict[str, Any]:
    """One escalation (NotFoundError if missing or in another workspace)."""
    return _row(conn, human_requests, human_requests.c.request_id, request_id, workspace_id, "human request")


HUMAN_ACTIONS = ("retry", "answer", "abandon")


def resolve_human_request(
    conn: Connection,
    request_id: str,
    workspace_id: str | None,
    *,
    action: str,
    by: str,
    instructions: str | None,
    answer: str | None,
    now: float,
) -> tuple[RunRecord, dict[str, Any]]:
    """Answer an escalation: retry (optionally with new instructions), answer in place of the step, or abandon."""
    if action not in HUMAN_ACTIONS:
        raise ValidationError(f"action must be one of {', '.join(HUMAN_ACTIONS)}, got {action!r}")
    if action == "answer" and not answer:
        raise ValidationError("action 'answer' needs an answer")
    req = get_human_request(conn, request_id, workspace_id)
    if req["status"] != "pending":
        raise ConflictError(f"human request {request_id!r} is already {req['status']}")
    rec = get_run(conn, req["run_id"])
    hr = rec.state.human_request
    if rec.status is not RunStatus.WAITING_FOR_HUMAN or hr is None or hr.request_id != request_id:
        raise ConflictError(f"run {rec.run_id!r} is {rec.status.value}, not waiting for this request")
    payload: dict[str, Any] = {"request_id": request_id, "action": action, "by": by}
    if instructions:
        payload["instructions"] = instructions
    events: list[Event] = []
    extra: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}
    if action == "answer":
        payload["answer"] = answer
        if hr.kind == "step_failed" and hr.step_kind == StepKind.TOOL_CALL.value:
            payload["note_for_model"] = True
    _add_event(events, rec, EventType.HUMAN_INPUT_RECEIVED, now, payload)
    if action == "answer" and hr.kind == "uncertain_tool_call" and rec.state.in_flight is not None:
        call = rec.state.in_flight.call
        result = {
            "kind": StepKind.TOOL_CALL.value,
            "name": call.name,
            "call_id": call.call_id,
            "arguments": call.arguments,
            "result": str(answer),
            "is_error": False,
            "answered_by": by,
        }
        _add_event(events, rec, EventType.STEP_COMPLETED, now, result, step=rec.state.steps)
    if action == "abandon":
        error = (
            f"abandoned by {by}"
            + (f": {instructions}" if instructions else "")
            + (f" (last error: {rec.state.last_failure['error']})" if rec.state.last_failure else "")
        )
        _add_event(events, rec, EventType.RUN_FAILED, now, {"error": error})
        extra["finished_at"] = now
    out = append_guarded(conn, rec, events, now, **extra)
    if action == "abandon" and rec.parent_run_id:
        from agentmaestro.store._children import resume_parents

        resume_parents(conn, [rec.parent_run_id], now)
    resolution = {"action": action, "instructions": instructions, "answer": answer}
    conn.execute(
        update(human_requests)
        .where(human_requests.c.request_id == request_id, human_requests.c.status == "pending")
        .values(status="resolved", resolved_at=now, resolved_by=by, resolution=resolution)
    )
    return out, {**req, "status": "resolved", "resolved_by": by, "resolved_at": now, "resolution": resolution}


# ------------------------------------------------------------------------------ workspace settings


def get_workspace_settings(conn: Connection, workspace_id: str) -> dict[str, Any]:
    """The workspace's settings (NotFoundError if it does not exist)."""
    row = conn.execute(select(workspaces.c.settings).where(workspaces.c.workspace_id == workspace_id)).first()
    if row is None:
        raise NotFoundError(f"workspace {workspace_id!r} not found")
    return dict(row.settings or {})


def update_workspace_settings(conn: Connection, workspace_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Merge ``changes`` into the workspace's settings; returns the new settings."""
    current = get_workspace_settings(conn, workspace_id)
    current.update(changes)
    conn.execute(update(workspaces).where(workspaces.c.workspace_id == workspace_id).values(settings=current))
    return current
