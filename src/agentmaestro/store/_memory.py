"""Key-value memory with provenance, scoped to a workspace (and optionally one agent)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, select, update

from agentmaestro.errors import NotFoundError, ValidationError
from agentmaestro.store.schema import memories

MAX_VALUE_CHARS = 100_000


def _check(scope: str, key: str, value: str | None = None) -> None:
    if not key or len(key) > 200:
        raise ValidationError("memory key must be 1-200 characters")
    if not (scope == "workspace" or (scope.startswith("agent:") and len(scope) > 6)):
        raise ValidationError(f"memory scope must be 'workspace' or 'agent:<name>', got {scope!r}")
    if value is not None and len(value) > MAX_VALUE_CHARS:
        raise ValidationError(f"memory value is {len(value)} characters; the limit is {MAX_VALUE_CHARS}")


def put(
    conn: Connection,
    workspace_id: str,
    scope: str,
    key: str,
    value: str,
    run_id: str | None,
    agent: str | None,
    now: float,
) -> dict[str, Any]:
    """Store (or overwrite) an entry, recording which run and agent wrote it."""
    _check(scope, key, value)
    where = (memories.c.workspace_id == workspace_id, memories.c.scope == scope, memories.c.key == key)
    found = conn.execute(select(memories.c.key).where(*where)).first()
    if found is None:
        conn.execute(
            memories.insert().values(
                workspace_id=workspace_id,
                scope=scope,
                key=key,
                value=value,
                run_id=run_id,
                agent=agent,
                created_at=now,
                updated_at=now,
            )
        )
    else:
        conn.execute(update(memories).where(*where).values(value=value, run_id=run_id, agent=agent, updated_at=now))
    return get(conn, workspace_id, scope, key)


def get(conn: Connection, workspace_id: str, scope: str, key: str) -> dict[str, Any]:
    """One entry (NotFoundError if absent)."""
    _check(scope, key)
    row = conn.execute(
        select(memories).where(
            memories.c.workspace_id == workspace_id, memories.c.scope == scope, memories.c.key == key
        )
    ).first()
    if row is None:
        raise NotFoundError(f"no memory {key!r} in scope {scope!r}")
    return dict(row._mapping)


def list_entries(
    conn: Connection, workspace_id: str, scope: str | None, prefix: str = "", limit: int = 100
) -> list[dict[str, Any]]:
    """Entries of a workspace (one scope, or all), by key."""
    q = select(memories).where(memories.c.workspace_id == workspace_id)
    if scope is not None:
        q = q.where(memories.c.scope == scope)
    if prefix:
        q = q.where(memories.c.key.startswith(prefix, autoescape=True))
    return [dict(r._mapping) for r in conn.execute(q.order_by(memories.c.scope, memories.c.key).limit(limit))]


def remove(conn: Connection, workspace_id: str, scope: str, key: str) -> bool:
    """Delete an entry; False if there was none."""
    _check(scope, key)
    res = conn.execute(
        delete(memories).where(
            memories.c.workspace_id == workspace_id, memories.c.scope == scope, memories.c.key == key
        )
    )
    return bool(res.rowcount)
