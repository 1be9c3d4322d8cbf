"""The decisions only people make: approve or reject a held tool call, resolve an escalation.

Each decision and its audit entry are written in one transaction; the run continues at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from agentmaestro.actor import Actor, Role
from agentmaestro.service.access import audit_note, require
from agentmaestro.store.base import Store
from agentmaestro.store.records import AuditNote

__all__ = ["DecideApproval", "HumanAction", "ResolveHumanRequest", "decide_approval", "resolve_human_request"]

HumanAction = Literal["retry", "answer", "abandon"]


@dataclass(frozen=True, kw_only=True)
class DecideApproval:
    """Approve (optionally with edited arguments: the approval binds to them) or reject a held tool call."""

    approval_id: str
    """The approval."""
    approve: bool
    """Approve (True) or reject (False)."""
    reason: str = ""
    """Why; a rejection's reason goes back to the model as the call's result."""
    arguments: Mapping[str, Any] | None = None
    """Edited arguments to run the tool with instead (approvals only)."""
    by: str | None = None
    """Who decided, when the actor decides on someone's behalf (``maestro approvals approve --by``)."""
    via: Mapping[str, Any] = field(default_factory=lambda: {})
    """How the decision came, for the audit entry (``{"via": "link", "webhook_id": ...}``)."""


@dataclass(frozen=True, kw_only=True)
class ResolveHumanRequest:
    """Retry (with optional new instructions), answer in place of the step, or abandon an escalated run."""

    request_id: str
    """The escalation."""
    action: HumanAction
    """What to do."""
    instructions: str | None = None
    """New instructions for a retry (or why, for an abandon)."""
    answer: str | None = None
    """The step's result, for an answer."""
    by: str | None = None
    """Who resolved it, when the actor acts on someone's behalf."""


async def decide_approval(store: Store, cmd: DecideApproval, actor: Actor) -> dict[str, Any]:
    """Decide, recorded as ``approval.approve`` or ``approval.reject``; the approval's row.

    Raises:
        NotFoundError: unknown approval (or another workspace's).
        ConflictError: already decided, or expired (the expiry is recorded and the call denied).
    """
    require(actor, Role.operator, "resolve_approval")
    by = cmd.by or actor.name

    def note(row: Mapping[str, Any]) -> AuditNote:
        detail: dict[str, Any] = {
            "run_id": row["run_id"],
            "tool": row["tool"],
            "reason": cmd.reason,
            "edited": cmd.arguments is not None,
        }
        if by != actor.name:
            detail["by"] = by
        return audit_note(
            actor, "approval.approve" if cmd.approve else "approval.reject", cmd.approval_id, {**detail, **cmd.via}
        )

    return await store.approvals.resolve(
        cmd.approval_id,
        approve=cmd.approve,
        by=by,
        reason=cmd.reason,
        arguments=dict(cmd.arguments) if cmd.arguments is not None else None,
        workspace_id=actor.workspace_id,
        audit=note,
    )


async def resolve_human_request(store: Store, cmd: ResolveHumanRequest, actor: Actor) -> dict[str, Any]:
    """Resolve, recorded as ``human_request.resolve``; the request's row."""
    require(actor, Role.operator, "resolve_human_request")
    by = cmd.by or actor.name

    def note(row: Mapping[str, Any]) -> AuditNote:
        detail: dict[str, Any] = {"run_id": row["run_id"], "action": cmd.action}
        if by != actor.name:
            detail["by"] = by
        return audit_note(actor, "human_request.resolve", cmd.request_id, detail)

    return await store.escalations.resolve(
        cmd.request_id,
        action=cmd.action,
        by=by,
        instructions=cmd.instructions,
        answer=cmd.answer,
        workspace_id=actor.workspace_id,
        audit=note,
    )
