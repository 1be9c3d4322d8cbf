"""Webhooks: subscriptions per workspace, the delivery queue the producer fills, and its dispatchers' claims.

The producer and the dispatcher are in ``notify/webhooks.py`` (docs/notifications.md); this repository
holds every query they and the API run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection

from agentmaestro.store import _audit, _webhooks
from agentmaestro.store.records import AuditFor

if TYPE_CHECKING:
    from agentmaestro.store.base import Store


T = TypeVar("T")


class WebhookRepository:
    """Webhooks and their deliveries; ``store.webhooks``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # ------------------------------------------------------------------------------ webhooks

    async def _change(self, fn: Callable[..., T], *args: Any, audit: AuditFor[T] | None) -> T:
        """``fn(conn, *args)`` in a write transaction, with the audit entry recording it (if any)."""
        if audit is None:
            return await self._store._write(fn, *args)

        def op(conn: Connection) -> T:
            out = fn(conn, *args)
            _audit.append_notes(conn, [audit(out)], time.time())
            return out

        return await self._store._write(op)

    async def create(self, row: dict[str, Any], *, audit: AuditFor[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Insert a webhook (``row`` holds every column, secrets encrypted); its public row.

        ``audit`` (here and below): the audit entry recording the change, written in the same transaction.
        """
        return await self._change(_webhooks.create_webhook, row, audit=audit)

    async def get(self, workspace_id: str, webhook_id: str) -> dict[str, Any]:
        """One webhook's public row (NotFoundError if missing or in another workspace)."""
        return await self._store._read(_webhooks.get_webhook, workspace_id, webhook_id)

    async def load(self, webhook_id: str) -> dict[str, Any] | None:
        """A webhook's full row, encrypted secrets included (for the dispatcher only), in any workspace."""
        return await self._store._read(_webhooks.load_webhook, webhook_id)

    async def all(self, workspace_id: str) -> list[dict[str, Any]]:
        """A workspace's webhooks, oldest first."""
        return await self._store._read(_webhooks.list_webhooks, workspace_id)

    async def update(
        self,
        workspace_id: str,
        webhook_id: str,
        changes: dict[str, Any],
        *,
        now: float | None = None,
        audit: AuditFor[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Change columns of a webhook (secrets already encrypted) as of ``now``; its public row."""
        when = time.time() if now is None else now
        return await self._change(_webhooks.update_webhook, workspace_id, webhook_id, changes, when, audit=audit)

    async def delete(
        self, workspace_id: str, webhook_id: str, *, audit: AuditFor[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """Delete a webhook and its deliveries; its last public row."""
        return await self._change(_webhooks.delete_webhook, workspace_id, webhook_id, audit=audit)

    # ------------------------------------------------------------------------------ the producer

    async def producer_workspaces(self) -> list[tuple[str, float, float | None]]:
        """Workspaces with webhooks: (workspace, oldest webhook's creation, cursor or None)."""
        return await self._store._read(_webhooks.producer_workspaces)

    async def enabled(self, workspace_id: str) -> list[dict[str, Any]]:
        """A workspace's enabled webhooks (public rows)."""
        return await self._store._read(_webhooks.enabled_webhooks, workspace_id)

    async def scan_events(
        self,
        workspace_id: str,
        since: float,
        types: Collection[str],
        limit: int,
        after: tuple[float, str, int] | None = None,
    ) -> list[dict[str, Any]]:
        """Events of ``types`` created after ``since`` in the workspace, oldest first, with their run's columns.

        ``after`` is the ``(created_at, run_id, seq)`` of the previous page's last event.
        """
        return await self._store._read(_webhooks.scan_events, workspace_id, since, types, limit, after)

    async def existing_keys(self, webhook_ids: Collection[str], keys: Collection[str]) -> set[tuple[str, str]]:
        """Which (webhook, dedupe key) pairs are already in the outbox."""
        return await self._store._read(_webhooks.existing_keys, webhook_ids, keys)

    async def enqueue(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert deliveries, skipping (webhook, dedupe key) pairs already enqueued; how many were new."""
        return await self._store._write(_webhooks.enqueue, rows)

    async def advance_cursor(self, workspace_id: str, watermark: float, *, now: float) -> None:
        """Record that the producer has scanned the workspace's events up to ``watermark``."""
        await self._store._write(_webhooks.advance_cursor, workspace_id, watermark, now)

    # ------------------------------------------------------------------------------ dispatchers

    async def has_due(self) -> bool:
        """Whether any delivery is due (a cheap read before taking the write lock to claim)."""
        return await self._store._read(_webhooks.has_due, time.time())

    async def claim(self, *, owner: str, limit: int, claim_ttl: float) -> list[dict[str, Any]]:
        """Claim due webhook deliveries for ``owner`` (guarded: never two dispatchers on one delivery)."""
        store = self._store

        def op(conn: Connection) -> list[dict[str, Any]]:
            return _webhooks.claim(
                conn,
                owner=owner,
                now=time.time(),
                limit=limit,
                claim_ttl=claim_ttl,
                skip_locked=store.dialect != "sqlite",
            )

        return await store._write(op)

    async def finish(
        self,
        delivery_id: str,
        *,
        owner: str,
        status: str,
        status_code: int | None,
        error: str | None,
        next_attempt_at: float | None,
    ) -> bool:
        """Record an attempt's outcome if ``owner`` still holds the delivery's claim; whether it did."""

        def op(conn: Connection) -> bool:
            return _webhooks.finish(
                conn,
                delivery_id,
                owner=owner,
                status=status,
                status_code=status_code,
                error=error,
                next_attempt_at=next_attempt_at,
                now=time.time(),
            )

        return await self._store._write(op)

    # ------------------------------------------------------------------------------ deliveries

    async def deliveries(
        self, workspace_id: str, webhook_id: str, statuses: Collection[str] | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """A webhook's deliveries (optionally only these statuses), newest first."""
        return await self._store._read(_webhooks.list_deliveries, workspace_id, webhook_id, statuses, limit)

    async def delivery(self, workspace_id: str, webhook_id: str, delivery_id: str) -> dict[str, Any]:
        """One delivery (NotFoundError if absent)."""
        return await self._store._read(_webhooks.get_delivery, workspace_id, webhook_id, delivery_id)

    async def redeliver(
        self,
        workspace_id: str,
        webhook_id: str,
        delivery_id: str,
        *,
        now: float | None = None,
        audit: AuditFor[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Queue a finished delivery again (same id, attempts from zero); ConflictError while it is in flight."""
        when = time.time() if now is None else now
        return await self._change(_webhooks.redeliver, workspace_id, webhook_id, delivery_id, when, audit=audit)
