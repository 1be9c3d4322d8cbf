"""Stored workflows: YAML definitions saved per workspace (one row per name, ``version`` counts saves).

Saving and deleting append an audit entry in the same transaction. Every query is scoped to one
workspace except :func:`names`, which the worker uses to claim workflow runs of any workspace.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select, update

from agentmaestro.errors import NotFoundError, ValidationError
from agentmaestro.store import _audit
from agentmaestro.store._ops import ensure_workspace
from agentmaestro.store.schema import stored_workflows

MAX_YAML_CHARS = 1_000_000
"""Largest workflow document accepted."""

_COLUMNS = (
    stored_workflows.c.workspace_id,
    stored_workflows.c.name,
    stored_workflows.c.yaml,
    stored_workflows.c.version,
    stored_workflows.c.created_at,
    stored_workflows.c.created_by,
    stored_workflows.c.updated_at,
    stored_workflows.c.updated_by,
)


def _where(workspace_id: str, name: str) -> tuple[Any, Any]:
    return stored_workflows.c.workspace_id == workspace_id, stored_workflows.c.name == name


_LIVE = stored_workflows.c.deleted_at.is_(None)


def save(conn: Connection, workspace_id: str, name: str, text: str, actor: str, now: float) -> dict[str, Any]:
    """Insert or replace the workflow ``name`` of a workspace; returns the stored row (with its new version)."""
    if len(text) > MAX_YAML_CHARS:
        raise ValidationError(f"workflow document is {len(text)} characters; the limit is {MAX_YAML_CHARS}")
    ensure_workspace(conn, workspace_id, None, now)
    found = conn.execute(select(stored_workflows.c.version).where(*_where(workspace_id, name))).first()
    if found is None:
        version = 1
        conn.execute(
            stored_workflows.insert().values(
                workspace_id=workspace_id,
                name=name,
                yaml=text,
                version=version,
                created_at=now,
                created_by=actor,
                updated_at=now,
                updated_by=actor,
            )
        )
    else:
        version = int(found.version) + 1
        conn.execute(
            update(stored_workflows)
            .where(*_where(workspace_id, name))
            .values(yaml=text, version=version, updated_at=now, updated_by=actor, deleted_at=None)
        )
    entry = _audit.NewEntry(at=now, actor=actor, action="workflow.save", target=name, detail={"version": version})
    _audit.append(conn, workspace_id, [entry], now)
    return get(conn, workspace_id, name)


def get(conn: Connection, workspace_id: str, name: str) -> dict[str, Any]:
    """One stored workflow (NotFoundError if the workspace has none of that name)."""
    row = conn.execute(select(*_COLUMNS).where(*_where(workspace_id, name), _LIVE)).first()
    if row is None:
        raise NotFoundError(f"workflow {name!r} not found")
    return dict(row._mapping)


def list_rows(conn: Connection, workspace_id: str) -> list[dict[str, Any]]:
    """A workspace's stored workflows, by name."""
    q = (
        select(*_COLUMNS)
        .where(stored_workflows.c.workspace_id == workspace_id, _LIVE)
        .order_by(stored_workflows.c.name)
    )
    return [dict(r._mapping) for r in conn.execute(q)]


def remove(conn: Connection, workspace_id: str, name: str, actor: str, now: float) -> dict[str, Any]:
    """Delete a stored workflow (it stops being listed or runnable); the row as it was (NotFoundError if absent)."""
    row = get(conn, workspace_id, name)
    conn.execute(update(stored_workflows).where(*_where(workspace_id, name)).values(deleted_at=now))
    entry = _audit.NewEntry(
        at=now, actor=actor, action="workflow.delete", target=name, detail={"version": row["version"]}
    )
    _audit.append(conn, workspace_id, [entry], now)
    return row


def names(conn: Connection) -> list[str]:
    """Names of the stored workflows of every workspace, deleted ones included.

    A run started before a delete still needs a worker that claims it.
    """
    q = select(stored_workflows.c.name).distinct().order_by(stored_workflows.c.name)
    return [str(r.name) for r in conn.execute(q)]
