"""Escalations (human requests): a run asks a person to retry a step, answer in its place, or abandon the run."""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from agentmaestro.store import _audit
from agentmaestro.store import _interventions as _iv
from agentmaestro.store.records import AuditFor, RunRecord
from agentmaestro.store.schema import DEFAULT_WORKSPACE

if TYPE_CHECKING:
    from agentmaestro.store.base import Store


class EscalationRepository:
    """Human requests; ``store.escalations``."""

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
        """Escalations (pending by default), newest first, at most ``limit``.

        ``before`` is a cursor: the last ``request_id`` of the previous page. ``run_ids`` keeps those runs' only.
        """
        return await self._store._read(
            _iv.list_human_requests, workspace_id, statuses, limit, run_ids=run_ids, before=before
        )

    async def get(self, request_id: str, *, workspace_id: str | None = None) -> dict[str, Any]:
        """One escalation."""
        return await self._store._read(_iv.get_human_request, request_id, workspace_id)

    async def resolve(
        self,
        request_id: str,
        *,
        action: str,
        by: str,
        instructions: str | None = None,
        answer: str | None = None,
        workspace_id: str | None = None,
        audit: AuditFor[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Retry (optionally with instructions), answer in place of the step, or abandon the run.

        ``audit``: the audit entry recording the resolution (given the request's row), in the same transaction.
        """

        def op(conn: Connection) -> tuple[RunRecord, dict[str, Any]]:
            now = time.time()
            out = _iv.resolve_human_request(
                conn,
                request_id,
                workspace_id,
                action=action,
                by=by,
                instructions=instructions,
                answer=answer,
                now=now,
            )
            if audit is not None:
                _audit.append_notes(conn, [audit(out[1])], now)
            self._store._pg_notify(conn)
            return out

        rec, row = await self._store._write(op)
        self._store._notify_runs([rec.run_id], runnable=True)
        return row
