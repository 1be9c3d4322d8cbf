"""Usage and cost: what a workspace's steps spent, and the figures quotas are checked against."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from agentmaestro.store import _usage
from agentmaestro.store._usage import month_start, next_month_start

if TYPE_CHECKING:
    from agentmaestro.store.base import Store

__all__ = ["UsageRepository", "month_start", "next_month_start"]


class UsageRepository:
    """Usage reports and quota figures; ``store.usage``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def report(
        self, workspace_id: str, *, since: float, until: float, group_by: str
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Tokens, calls and cost of the workspace's steps in [since, until) by agent, model or day; and totals."""
        return await self._store._read(_usage.usage, workspace_id, since=since, until=until, group_by=group_by)

    async def quotas(self, workspace_id: str, *, with_cost: bool = True) -> dict[str, Any]:
        """Active runs, runs in the last hour and this month's cost: what quotas are checked against."""
        return await self._store._read(_usage.quota_usage, workspace_id, time.time(), with_cost=with_cost)
