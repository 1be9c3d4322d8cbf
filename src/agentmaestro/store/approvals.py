"""Approvals: pending decisions on gated tool calls (approve, optionally with edited arguments, or reject)."""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from agentmaestro.errors import ConflictError
from agentmaestro.store import _audit
from agentmaestro.store import _interventions as _iv
from agentmaestro.store.records import AuditFor, RunRecord
from agentmaestro.store.schema import DEFAULT_WORKSPACE

if TYPE_CHECKING:
    from agentmaestro.store.base import Store


class ApprovalRepository:
    """Tool-call approvals; ``store.approvals``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def page(
        self,
        *,
        workspace_id: str | None = DEFAULT_WORKSPACE,
        statuses: Collection[str] | None = ("pending",),
        run_ids: Collection[str] | None = None,
        before: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Approvals (pending by default), newest first, at most ``limit``.

        ``before`` is a cursor: the last ``approval_id`` of the previous page. ``run_ids`` keeps those runs' only.
        """
        return await self._store._read(
            _iv.list_approvals, workspace_id, statuses, limit, run_ids=run_ids, before=before
        )

    async def get(self, approval_id: str, *, workspace_id: str | None = None) -> dict[str, Any]:
        """One approval."""
        return await self._store._read(_iv.get_approval, approval_id, workspace_id)

    async def resolve(
        self,
        approval_id: str,
        *,
        approve: bool,
        by: str,
        reason: str = "",
        arguments: dict[str, Any] | None = None,
        workspace_id: str | None = None,
        audit: AuditFor[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Approve (optionally with edited arguments) or reject a pending tool call.

        ``audit``: the audit entry recording the decision (given the approval's row), in the same transaction.

        Raises:
            NotFoundError: unknown approval (or another workspace's).
            ConflictError: already decided, or expired (the expiry is recorded and the call denied).
        """

        def op(conn: Connection) -> tuple[RunRecord, dict[str, Any]]:
            now = time.time()
            out = _iv.resolve_approval(
                conn,
                approval_id,
                workspace_id,
                approve=approve,
                by=by,
                reason=reason,
                arguments=arguments,
                now=now,
            )
            if audit is not None and not out[1].get("error"):
                _audit.append_notes(conn, [audit(out[1])], now)
            self._store._pg_notify(conn)
            return out

        rec, row = await self._store._write(op)
        self._store._notify_runs([rec.run_id], runnable=True)
        if row.get("error"):
            raise ConflictError(row["error"])
        return row

    async def expire(self) -> list[str]:
        """Deny every pending approval past its expiry; returns the affected run ids."""

        def op(conn: Connection) -> list[str]:
            out = _iv.expire_approvals(conn, time.time())
            if out:
                self._store._pg_notify(conn)
            return out

        touched = await self._store._write(op)
        if touched:
            self._store._notify_runs(touched, runnable=True)
        return touched
