"""/v1/usage: tokens, calls and cost of the caller's workspace, grouped by agent, model or day."""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from agentmaestro.server.auth import Viewer, get_store
from agentmaestro.server.errors import APIError
from agentmaestro.store.base import Store
from agentmaestro.store.usage import month_start

router = APIRouter(prefix="/v1", tags=["usage"])
StoreDep = Annotated[Store, Depends(get_store)]


class UsageTotals(BaseModel):
    """Sums over the steps of the period."""

    runs: int
    steps: int
    model_calls: int
    tool_calls: int
    input_tokens: int
    output_tokens: int
    tokens: int
    cost_usd: float


class UsageGroup(UsageTotals):
    """One agent, model or UTC day (``YYYY-MM-DD``)."""

    key: str


class UsageReport(BaseModel):
    """Usage of the workspace's steps in [since, until)."""

    workspace_id: str
    since: float
    until: float
    group_by: Literal["agent", "model", "day", "user"]
    groups: list[UsageGroup]
    total: UsageTotals


def _ts(value: dt.datetime | None, default: float, label: str) -> float:
    if value is None:
        return default
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    try:
        return value.timestamp()
    except (OverflowError, ValueError, OSError):
        raise APIError(422, "invalid_request", f"{label}: time out of range") from None


@router.get("/usage", response_model=UsageReport, summary="Usage and cost")
async def get_usage(
    principal: Viewer,
    store: StoreDep,
    since: Annotated[
        dt.datetime | None,
        Query(description="ISO 8601 time or date (UTC if no offset), or Unix seconds. Default: start of this month."),
    ] = None,
    until: Annotated[dt.datetime | None, Query(description="End (exclusive). Default: now.")] = None,
    group_by: Annotated[Literal["agent", "model", "day", "user"], Query()] = "agent",
) -> dict[str, Any]:
    """Tokens, model and tool calls, and cost from the workspace's steps, grouped by agent, model, day or user.

    By user, the key is who started the run tree: ``user:<SHA-256 of the email>`` for keys that belong to
    a user, ``key:<name>`` for other keys, ``cli:<login>`` from the local CLI, ``""`` when unknown.

    Grouped by model, only model calls count (tool calls have no model); the totals count every step.
    Steps a fork copied from its source run count once, in the source.
    """
    now = time.time()
    start = _ts(since, month_start(now), "since")
    end = _ts(until, now, "until")
    if end < start:
        raise APIError(422, "invalid_request", "until must not be before since")
    groups, total = await store.usage.report(principal.workspace_id, since=start, until=end, group_by=group_by)
    return {
        "workspace_id": principal.workspace_id,
        "since": start,
        "until": end,
        "group_by": group_by,
        "groups": groups,
        "total": total,
    }
