"""SQL of outgoing webhooks: the webhooks, their delivery outbox and the producer's per-workspace cursors.

Everything is scoped to a workspace except what the dispatcher needs across workspaces (claiming due
deliveries, loading the webhook a delivery belongs to). Secrets arrive here already encrypted.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import Connection, and_, delete, func, or_, select, true, tuple_, update

from agentmaestro.errors import ConflictError, NotFoundError
from agentmaestro.store.dialects import insert_unless_duplicate, upsert
from agentmaestro.store.schema import run_events, runs, webhook_cursors, webhook_deliveries, webhooks

PUBLIC_WEBHOOK_COLUMNS = (
    "webhook_id",
    "workspace_id",
    "name",
    "format",
    "url_display",
    "events",
    "config",
    "enabled",
    "link_base_url",
    "link_ttl_s",
    "active_since",
    "created_at",
    "created_by",
    "updated_at",
)
"""What the API may show of a webhook: never ``url_enc`` or ``secret_enc``."""

_PUBLIC_DELIVERY = [c for c in webhook_deliveries.c if c.name not in ("claimed_by", "claimed_until")]


def _public(row: Any) -> dict[str, Any]:
    m = dict(row._mapping)
    return {k: m[k] for k in PUBLIC_WEBHOOK_COLUMNS}


# ------------------------------------------------------------------------------------ webhooks


def create_webhook(conn: Connection, row: dict[str, Any]) -> dict[str, Any]:
    """Insert a webhook (``row`` holds every column, secrets encrypted); its public row."""
    conn.execute(webhooks.insert().values(**row))
    return get_webhook(conn, row["workspace_id"], row["webhook_id"])


def get_webhook(conn: Connection, workspace_id: str, webhook_id: str) -> dict[str, Any]:
    """One webhook's public row (NotFoundError if missing or in another workspace)."""
    row = conn.execute(
        select(webhooks).where(webhooks.c.webhook_id == webhook_id, webhooks.c.workspace_id == workspace_id)
    ).first()
    if row is None:
        raise NotFoundError(f"webhook {webhook_id!r} not found")
    return _public(row)


def load_webhook(conn: Connection, webhook_id: str) -> dict[str, Any] | None:
    """A webhook's full row, encrypted secrets included (for the dispatcher only)."""
    row = conn.execute(select(webhooks).where(webhooks.c.webhook_id == webhook_id)).first()
    return None if row is None else dict(row._mapping)


def list_webhooks(conn: Connection, workspace_id: str) -> list[dict[str, Any]]:
    """A workspace's webhooks, oldest first."""
    q = select(webhooks).where(webhooks.c.workspace_id == workspace_id).order_by(webhooks.c.created_at)
    return [_public(r) for r in conn.execute(q)]


def update_webhook(
    conn: Connection, workspace_id: str, webhook_id: str, changes: dict[str, Any], now: float
) -> dict[str, Any]:
    """Change columns of a webhook (secrets already encrypted); its public row."""
    get_webhook(conn, workspace_id, webhook_id)
    if changes:
        conn.execute(
            update(webhooks)
            .where(webhooks.c.webhook_id == webhook_id, webhooks.c.workspace_id == workspace_id)
            .values(**changes, updated_at=now)
        )
    return get_webhook(conn, workspace_id, webhook_id)


def delete_webhook(conn: Connection, workspace_id: str, webhook_id: str) -> dict[str, Any]:
    """Delete a webhook and its deliveries; its last public row."""
    row = get_webhook(conn, workspace_id, webhook_id)
    conn.execute(delete(webhook_deliveries).where(webhook_deliveries.c.webhook_id == webhook_id))
    conn.execute(delete(webhooks).where(webhooks.c.webhook_id == webhook_id))
    return row


# ------------------------------------------------------------------------------ the producer


def producer_workspaces(conn: Connection) -> list[tuple[str, float, float | None]]:
    """Workspaces with webhooks: (workspace, oldest webhook's creation, cursor or None)."""
    q = (
        select(webhooks.c.workspace_id, func.min(webhooks.c.created_at), webhook_cursors.c.watermark)
        .select_from(webhooks.outerjoin(webhook_cursors, webhook_cursors.c.workspace_id == webhooks.c.workspace_id))
        .group_by(webhooks.c.workspace_id, webhook_cursors.c.watermark)
    )
    return [(r[0], float(r[1]), None if r[2] is None else float(r[2])) for r in conn.execute(q)]


def enabled_webhooks(conn: Connection, workspace_id: str) -> list[dict[str, Any]]:
    """A workspace's enabled webhooks (public rows)."""
    q = select(webhooks).where(webhooks.c.workspace_id == workspace_id, webhooks.c.enabled.is_(True))
    return [_public(r) for r in conn.execute(q)]


def scan_events(
    conn: Connection,
    workspace_id: str,
    since: float,
    types: Collection[str],
    limit: int,
    after: tuple[float, str, int] | None = None,
) -> list[dict[str, Any]]:
    """Events of ``types`` created after ``since`` in the workspace, oldest first, with their run's columns.

    Runs are found by ``runs.updated_at`` (a run's snapshot is written with each of its events), as the
    workspace firehose does; the caller rescans a lag window, so late commits are not missed. ``after`` is the
    ``(created_at, run_id, seq)`` of the previous page's last event (one commit gives many events one time).
    """
    q = (
        select(
            run_events.c.run_id,
            run_events.c.seq,
            run_events.c.type,
            run_events.c.payload,
            run_events.c.created_at,
            runs.c.agent_name,
            runs.c.parent_run_id,
            runs.c.status,
            runs.c.steps,
            runs.c.tool_calls,
            runs.c.tokens,
            runs.c.cost_usd,
            runs.c.output,
            runs.c.error,
        )
        .select_from(run_events.join(runs, runs.c.run_id == run_events.c.run_id))
        .where(
            runs.c.workspace_id == workspace_id,
            runs.c.updated_at > since,
            run_events.c.created_at > since,
            run_events.c.type.in_(list(types)),
        )
        .where(
            true()
            if after is None
            else tuple_(run_events.c.created_at, run_events.c.run_id, run_events.c.seq) > tuple_(*after)
        )
        .order_by(run_events.c.created_at, run_events.c.run_id, run_events.c.seq)
        .limit(limit)
    )
    return [dict(r._mapping) for r in conn.execute(q)]


def existing_keys(conn: Connection, webhook_ids: Collection[str], keys: Collection[str]) -> set[tuple[str, str]]:
    """Which (webhook, dedupe key) pairs are already in the outbox."""
    if not webhook_ids or not keys:
        return set()
    found: set[tuple[str, str]] = set()
    key_list = list(keys)
    for i in range(0, len(key_list), 500):
        q = select(webhook_deliveries.c.webhook_id, webhook_deliveries.c.dedupe_key).where(
            webhook_deliveries.c.webhook_id.in_(list(webhook_ids)),
            webhook_deliveries.c.dedupe_key.in_(key_list[i : i + 500]),
        )
        found.update((r[0], r[1]) for r in conn.execute(q))
    return found


def enqueue(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    """Insert deliveries, skipping (webhook, dedupe key) pairs already enqueued; how many were new."""
    key = ["webhook_id", "dedupe_key"]
    return sum(insert_unless_duplicate(conn, webhook_deliveries, row, key=key) for row in rows)


def advance_cursor(conn: Connection, workspace_id: str, watermark: float, now: float) -> None:
    """Move the workspace's cursor forward to ``watermark`` (never backwards)."""
    values = {"workspace_id": workspace_id, "watermark": watermark, "updated_at": now}
    conn.execute(upsert(conn, webhook_cursors, values, key=["workspace_id"]))  # (MySQL has no ON CONFLICT ... WHERE)
    conn.execute(
        update(webhook_cursors)
        .where(webhook_cursors.c.workspace_id == workspace_id, webhook_cursors.c.watermark < watermark)
        .values(watermark=watermark, updated_at=now)
    )


# ------------------------------------------------------------------------------ deliveries


def _claimable(now: float) -> Any:
    return or_(
        and_(webhook_deliveries.c.status == "pending", webhook_deliveries.c.next_attempt_at <= now),
        and_(webhook_deliveries.c.status == "sending", webhook_deliveries.c.claimed_until < now),
    )


def has_due(conn: Connection, now: float) -> bool:
    """Whether any delivery is due (a cheap read before taking the write lock to claim)."""
    enabled = select(webhooks.c.webhook_id).where(webhooks.c.enabled.is_(True))
    q = select(webhook_deliveries.c.delivery_id).where(_claimable(now), webhook_deliveries.c.webhook_id.in_(enabled))
    q = q.limit(1)
    return conn.execute(q).first() is not None


def claim(
    conn: Connection, *, owner: str, now: float, limit: int, claim_ttl: float, skip_locked: bool
) -> list[dict[str, Any]]:
    """Claim due deliveries of enabled webhooks for ``owner``.

    Each claim is a guarded UPDATE, so a delivery is never claimed by two dispatchers at once; an expired
    claim (its dispatcher died mid-send) is taken over.
    """
    enabled = select(webhooks.c.webhook_id).where(webhooks.c.enabled.is_(True))
    q = (
        select(webhook_deliveries.c.delivery_id)
        .where(_claimable(now), webhook_deliveries.c.webhook_id.in_(enabled))
        .order_by(webhook_deliveries.c.next_attempt_at)
        .limit(limit)
    )
    if skip_locked:
        q = q.with_for_update(skip_locked=True)
    ids = [r[0] for r in conn.execute(q)]
    claimed = []
    for delivery_id in ids:
        res = conn.execute(
            update(webhook_deliveries)
            .where(webhook_deliveries.c.delivery_id == delivery_id, _claimable(now))
            .values(
                status="sending",
                claimed_by=owner,
                claimed_until=now + claim_ttl,
                attempts=webhook_deliveries.c.attempts + 1,
                updated_at=now,
            )
        )
        if res.rowcount == 1:
            claimed.append(delivery_id)
    if not claimed:
        return []
    rows = conn.execute(select(webhook_deliveries).where(webhook_deliveries.c.delivery_id.in_(claimed)))
    return sorted((dict(r._mapping) for r in rows), key=lambda r: r["next_attempt_at"])


def finish(
    conn: Connection,
    delivery_id: str,
    *,
    owner: str,
    status: str,
    status_code: int | None,
    error: str | None,
    next_attempt_at: float | None,
    now: float,
) -> bool:
    """Record an attempt's outcome (``delivered``, ``pending`` to retry, or ``failed``); False if the claim was lost."""
    values: dict[str, Any] = {
        "status": status,
        "last_status_code": status_code,
        "last_error": error,
        "claimed_by": None,
        "claimed_until": None,
        "updated_at": now,
    }
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    if status == "delivered":
        values["delivered_at"] = now
    res = conn.execute(
        update(webhook_deliveries)
        .where(
            webhook_deliveries.c.delivery_id == delivery_id,
            webhook_deliveries.c.claimed_by == owner,
            webhook_deliveries.c.status == "sending",
        )
        .values(**values)
    )
    return res.rowcount == 1


def list_deliveries(
    conn: Connection,
    workspace_id: str,
    webhook_id: str,
    statuses: Collection[str] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """A webhook's deliveries, newest first."""
    get_webhook(conn, workspace_id, webhook_id)
    q = select(*_PUBLIC_DELIVERY).where(
        webhook_deliveries.c.workspace_id == workspace_id, webhook_deliveries.c.webhook_id == webhook_id
    )
    if statuses:
        q = q.where(webhook_deliveries.c.status.in_(list(statuses)))
    q = q.order_by(webhook_deliveries.c.created_at.desc(), webhook_deliveries.c.delivery_id.desc()).limit(limit)
    return [dict(r._mapping) for r in conn.execute(q)]


def get_delivery(conn: Connection, workspace_id: str, webhook_id: str, delivery_id: str) -> dict[str, Any]:
    """One delivery (NotFoundError if missing, of another webhook, or in another workspace)."""
    row = conn.execute(
        select(*_PUBLIC_DELIVERY).where(
            webhook_deliveries.c.delivery_id == delivery_id,
            webhook_deliveries.c.webhook_id == webhook_id,
            webhook_deliveries.c.workspace_id == workspace_id,
        )
    ).first()
    if row is None:
        raise NotFoundError(f"delivery {delivery_id!r} not found")
    return dict(row._mapping)


def redeliver(conn: Connection, workspace_id: str, webhook_id: str, delivery_id: str, now: float) -> dict[str, Any]:
    """Queue a finished delivery again (same id, attempts from zero); ConflictError while it is in flight."""
    row = get_delivery(conn, workspace_id, webhook_id, delivery_id)
    if row["status"] not in ("delivered", "failed"):
        raise ConflictError(
            f"delivery {delivery_id!r} is {row['status']}; only delivered or failed ones are redelivered"
        )
    conn.execute(
        update(webhook_deliveries)
        .where(
            webhook_deliveries.c.delivery_id == delivery_id,
            webhook_deliveries.c.status.in_(["delivered", "failed"]),
        )
        .values(status="pending", attempts=0, next_attempt_at=now, updated_at=now, delivered_at=None)
    )
    return get_delivery(conn, workspace_id, webhook_id, delivery_id)
