"""Worker presence: each worker process that claims any run keeps a row alive while it runs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, select, update

from agentmaestro.store.schema import workers


def beat(conn: Connection, *, owner: str, host: str, pid: int, concurrency: int, now: float, ttl: float) -> None:
    """Record that ``owner`` is alive until ``now + ttl`` (insert its row on the first beat)."""
    changed = conn.execute(
        update(workers).where(workers.c.owner == owner).values(last_seen=now, expires_at=now + ttl)
    ).rowcount
    if not changed:
        conn.execute(
            workers.insert().values(
                owner=owner,
                host=host,
                pid=pid,
                concurrency=concurrency,
                started_at=now,
                last_seen=now,
                expires_at=now + ttl,
            )
        )


def gone(conn: Connection, owner: str) -> None:
    """Forget ``owner`` (it stopped cleanly)."""
    conn.execute(delete(workers).where(workers.c.owner == owner))


def alive(conn: Connection, now: float) -> list[dict[str, Any]]:
    """Workers heard of recently enough, oldest first."""
    q = select(workers).where(workers.c.expires_at > now).order_by(workers.c.started_at)
    return [dict(r._mapping) for r in conn.execute(q)]
