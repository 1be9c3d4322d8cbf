"""/v1/approvals and /v1/human-requests: the decisions only people make."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from agentmaestro.server import schemas
from agentmaestro.server.auth import Operator, Viewer, get_store
from agentmaestro.service import approvals
from agentmaestro.store.base import Store

router = APIRouter(prefix="/v1", tags=["approvals and human requests"])
StoreDep = Annotated[Store, Depends(get_store)]
ApprovalStatus = Literal["pending", "approved", "rejected", "expired"]


Cursor = Annotated[str | None, Query(max_length=40, description="next_cursor of the previous page")]
PageSize = Annotated[int, Query(ge=1, le=500)]
RunFilter = Annotated[str | None, Query(max_length=40, description="Only this run's.")]


@router.get("/approvals", response_model=schemas.ApprovalPage, summary="List approvals")
async def list_approvals(
    principal: Viewer,
    store: StoreDep,
    status: Annotated[list[ApprovalStatus] | None, Query(description="Default: pending.")] = None,
    run_id: RunFilter = None,
    cursor: Cursor = None,
    limit: PageSize = 100,
) -> dict[str, Any]:
    """Tool calls held for a decision in the caller's workspace, newest first, with cursor pagination."""
    rows = await store.approvals.page(
        workspace_id=principal.workspace_id,
        statuses=status or ["pending"],
        run_ids=None if run_id is None else [run_id],
        before=cursor,
        limit=limit,
    )
    return {"approvals": rows, "next_cursor": rows[-1]["approval_id"] if len(rows) == limit else None}


@router.get("/approvals/{approval_id}", response_model=schemas.Approval, summary="Get an approval")
async def get_approval(approval_id: str, principal: Viewer, store: StoreDep) -> dict[str, Any]:
    """One approval."""
    return await store.approvals.get(approval_id, workspace_id=principal.workspace_id)


@router.post("/approvals/{approval_id}", response_model=schemas.Approval, summary="Approve or reject")
async def decide(
    approval_id: str, body: schemas.ApprovalDecision, principal: Operator, store: StoreDep
) -> dict[str, Any]:
    """Approve (optionally with edited arguments: the approval binds to them) or reject with a reason."""
    cmd = approvals.DecideApproval(
        approval_id=approval_id, approve=body.decision == "approve", reason=body.reason, arguments=body.arguments
    )
    return await approvals.decide_approval(store, cmd, principal.as_actor())


@router.get("/human-requests", response_model=schemas.HumanRequestPage, summary="List human requests")
async def list_requests(
    principal: Viewer,
    store: StoreDep,
    status: Annotated[list[Literal["pending", "resolved"]] | None, Query(description="Default: pending.")] = None,
    run_id: RunFilter = None,
    cursor: Cursor = None,
    limit: PageSize = 100,
) -> dict[str, Any]:
    """Runs waiting for a person in the caller's workspace, newest first, with cursor pagination."""
    rows = await store.escalations.page(
        workspace_id=principal.workspace_id,
        statuses=status or ["pending"],
        run_ids=None if run_id is None else [run_id],
        before=cursor,
        limit=limit,
    )
    return {"human_requests": rows, "next_cursor": rows[-1]["request_id"] if len(rows) == limit else None}


@router.post("/human-requests/{request_id}", response_model=schemas.HumanRequest, summary="Resolve a human request")
async def resolve(
    request_id: str, body: schemas.HumanResolution, principal: Operator, store: StoreDep
) -> dict[str, Any]:
    """Retry (with optional new instructions), answer in place of the step, or abandon the run."""
    cmd = approvals.ResolveHumanRequest(
        request_id=request_id, action=body.action, instructions=body.instructions, answer=body.answer
    )
    return await approvals.resolve_human_request(store, cmd, principal.as_actor())
