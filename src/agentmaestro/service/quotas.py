"""Per-workspace quotas, checked when an API key's run is created (see :mod:`agentmaestro.server.quotas`).

Quotas live in the workspace's settings under ``quotas``: ``max_concurrent_runs`` (runs not yet
COMPLETED, FAILED or CANCELLED), ``runs_per_hour`` and ``monthly_budget_usd`` (the cost of the
workspace's steps this calendar month, UTC). A missing or null limit is unlimited, up to the
server-wide maximums of :mod:`agentmaestro.ceilings`, which cap every workspace. Over quota, run
creation raises :class:`QuotaExceededError` (429 over HTTP) with a message that says which limit and,
where a wait helps, ``retry_after``. The checks read the database just before the insert, so two
simultaneous requests can overshoot a limit by one; they are guards against runaway use, not billing.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentmaestro.ceilings import quota_ceiling
from agentmaestro.errors import RateLimitedError
from agentmaestro.store.base import Store
from agentmaestro.store.usage import next_month_start

__all__ = ["QuotaExceededError", "Quotas", "check_run_quota", "effective_quotas", "quotas_of"]


class QuotaExceededError(RateLimitedError):
    """Starting one more run would exceed a quota of the workspace (or a server-wide ceiling)."""

    code = "quota_exceeded"


class Quotas(BaseModel):
    """A workspace's limits; null means unlimited."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_concurrent_runs: int | None = Field(default=None, ge=0, le=1_000_000, description="Runs not yet finished.")
    runs_per_hour: int | None = Field(default=None, ge=0, le=100_000_000, description="Runs created per rolling hour.")
    monthly_budget_usd: float | None = Field(
        default=None, ge=0, le=1e12, description="USD spent by the workspace's steps this calendar month (UTC)."
    )


def quotas_of(settings: dict[str, Any]) -> Quotas:
    """The quotas stored in a workspace's settings (lenient: unknown or bad values are ignored)."""
    raw = settings.get("quotas") or {}
    if not isinstance(raw, dict):
        return Quotas()
    try:
        return Quotas.model_validate({k: v for k, v in raw.items() if k in Quotas.model_fields})
    except ValueError:
        return Quotas()


def effective_quotas(settings: dict[str, Any]) -> Quotas:
    """The workspace's quotas capped by the server-wide maximums (:mod:`agentmaestro.ceilings`)."""
    return Quotas.model_validate(quota_ceiling().cap(quotas_of(settings).model_dump()))


async def check_run_quota(store: Store, workspace_id: str) -> None:
    """Raise QuotaExceededError if creating one more run in the workspace would exceed a quota (or the ceiling)."""
    q = effective_quotas(await store.workspaces.settings(workspace_id))
    if q.max_concurrent_runs is None and q.runs_per_hour is None and q.monthly_budget_usd is None:
        return
    use = await store.usage.quotas(workspace_id, with_cost=q.monthly_budget_usd is not None)
    now = time.time()
    if q.max_concurrent_runs is not None and use["active_runs"] >= q.max_concurrent_runs:
        raise QuotaExceededError(
            f"quota exceeded: workspace {workspace_id!r} has {use['active_runs']} unfinished runs "
            f"(max_concurrent_runs={q.max_concurrent_runs}); wait for one to finish or cancel one"
        )
    if q.runs_per_hour is not None and use["runs_last_hour"] >= q.runs_per_hour:
        oldest = use["oldest_in_hour"] or now
        wait = max(1, math.ceil(oldest + 3600 - now))
        raise QuotaExceededError(
            f"quota exceeded: workspace {workspace_id!r} created {use['runs_last_hour']} runs in the last hour "
            f"(runs_per_hour={q.runs_per_hour}); retry in {wait}s",
            retry_after=wait,
        )
    if q.monthly_budget_usd is not None and use["month_cost_usd"] >= q.monthly_budget_usd:
        reset = next_month_start(now)
        when = dt.datetime.fromtimestamp(reset, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        raise QuotaExceededError(
            f"quota exceeded: workspace {workspace_id!r} spent ${use['month_cost_usd']:.4f} this month "
            f"(monthly_budget_usd={q.monthly_budget_usd:g}); the budget resets at {when}",
            retry_after=max(1, math.ceil(reset - now)),
        )
