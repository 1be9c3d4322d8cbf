"""Knowledge metadata: collections and documents of a workspace (the vectors themselves live in Qdrant)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from agentmaestro.errors import ConflictError, NotFoundError
from agentmaestro.store.schema import knowledge_collections as kc
from agentmaestro.store.schema import knowledge_documents as kd


def _collection_row(conn: Connection, workspace_id: str, name: str) -> dict[str, Any]:
    row = conn.execute(select(kc).where(kc.c.workspace_id == workspace_id, kc.c.name == name)).first()
    if row is None:
        raise NotFoundError(f"no knowledge collection {name!r}")
    return dict(row._mapping)


def _with_counts(conn: Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = [r["collection_id"] for r in rows]
    counts: dict[str, tuple[int, int]] = {}
    if ids:
        q = (
            select(kd.c.collection_id, func.count(), func.coalesce(func.sum(kd.c.chunk_count), 0))
            .where(kd.c.collection_id.in_(ids))
            .group_by(kd.c.collection_id)
        )
        counts = {cid: (int(n), int(chunks)) for cid, n, chunks in conn.execute(q)}
    for r in rows:
        r["documents"], r["chunks"] = counts.get(r["collection_id"], (0, 0))
    return rows


def create_collection(conn: Connection, values: dict[str, Any]) -> dict[str, Any]:
    """Insert a collection (ConflictError if the workspace already has one of that name)."""
    found = conn.execute(
        select(kc.c.collection_id).where(kc.c.workspace_id == values["workspace_id"], kc.c.name == values["name"])
    ).first()
    if found is not None:
        raise ConflictError(f"knowledge collection {values['name']!r} already exists")
    try:
        conn.execute(kc.insert().values(**values))
    except IntegrityError:  # created concurrently
        raise ConflictError(f"knowledge collection {values['name']!r} already exists") from None
    return get_collection(conn, values["workspace_id"], values["name"])


def get_collection(conn: Connection, workspace_id: str, name: str) -> dict[str, Any]:
    """One collection with its document and chunk counts (NotFoundError if absent)."""
    return _with_counts(conn, [_collection_row(conn, workspace_id, name)])[0]


def list_collections(conn: Connection, workspace_id: str) -> list[dict[str, Any]]:
    """The workspace's collections by name, with document and chunk counts."""
    rows = [
        dict(r._mapping) for r in conn.execute(select(kc).where(kc.c.workspace_id == workspace_id).order_by(kc.c.name))
    ]
    return _with_counts(conn, rows)


def delete_collection(conn: Connection, workspace_id: str, name: str) -> dict[str, Any]:
    """Delete a collection and its documents' rows; returns the deleted collection."""
    row = get_collection(conn, workspace_id, name)
    conn.execute(delete(kd).where(kd.c.collection_id == row["collection_id"]))
    conn.execute(delete(kc).where(kc.c.collection_id == row["collection_id"]))
    return row


def document_by_source(conn: Connection, workspace_id: str, collection_id: str, source: str) -> dict[str, Any] | None:
    """The document ingested from ``source`` into a collection, if any."""
    row = conn.execute(
        select(kd).where(kd.c.workspace_id == workspace_id, kd.c.collection_id == collection_id, kd.c.source == source)
    ).first()
    return dict(row._mapping) if row is not None else None


def put_document(conn: Connection, values: dict[str, Any]) -> dict[str, Any]:
    """Insert a document, or update the one with the same ``document_id`` (a changed file ingested again)."""
    found = conn.execute(select(kd.c.document_id).where(kd.c.document_id == values["document_id"])).first()
    if found is None:
        try:
            conn.execute(kd.insert().values(**values))
        except IntegrityError:  # the same source ingested concurrently
            raise ConflictError(f"{values['source']!r} is being ingested by another request; try again") from None
    else:
        changes = {k: v for k, v in values.items() if k not in ("document_id", "created_at")}
        conn.execute(update(kd).where(kd.c.document_id == values["document_id"]).values(**changes))
    conn.execute(
        update(kc).where(kc.c.collection_id == values["collection_id"]).values(updated_at=values["updated_at"])
    )
    row = conn.execute(select(kd).where(kd.c.document_id == values["document_id"])).one()
    return dict(row._mapping)


def list_documents(conn: Connection, workspace_id: str, collection_id: str) -> list[dict[str, Any]]:
    """Documents of a collection, by source."""
    q = select(kd).where(kd.c.workspace_id == workspace_id, kd.c.collection_id == collection_id).order_by(kd.c.source)
    return [dict(r._mapping) for r in conn.execute(q)]


def get_document(conn: Connection, workspace_id: str, collection_id: str, document_id: str) -> dict[str, Any]:
    """One document (NotFoundError if absent)."""
    row = conn.execute(
        select(kd).where(
            kd.c.workspace_id == workspace_id, kd.c.collection_id == collection_id, kd.c.document_id == document_id
        )
    ).first()
    if row is None:
        raise NotFoundError(f"no document {document_id!r} in this collection")
    return dict(row._mapping)


def delete_document(conn: Connection, workspace_id: str, collection_id: str, document_id: str) -> dict[str, Any]:
    """Delete a document's row; returns it."""
    row = get_document(conn, workspace_id, collection_id, document_id)
    conn.execute(delete(kd).where(kd.c.document_id == document_id))
    return row
