"""Knowledge (RAG) metadata: collections and documents per workspace; the vectors live in Qdrant (docs/knowledge.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentmaestro.store import _knowledge

if TYPE_CHECKING:
    from agentmaestro.store.base import Store


class KnowledgeRepository:
    """Knowledge collections and documents; ``store.knowledge``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def create_collection(self, values: dict[str, Any]) -> dict[str, Any]:
        """Insert a knowledge collection row (ConflictError if its name is taken in the workspace)."""
        return await self._store._write(_knowledge.create_collection, values)

    async def collection(self, workspace_id: str, name: str) -> dict[str, Any]:
        """One knowledge collection with document and chunk counts (NotFoundError if absent)."""
        return await self._store._read(_knowledge.get_collection, workspace_id, name)

    async def collections(self, workspace_id: str) -> list[dict[str, Any]]:
        """The workspace's knowledge collections, by name."""
        return await self._store._read(_knowledge.list_collections, workspace_id)

    async def delete_collection(self, workspace_id: str, name: str) -> dict[str, Any]:
        """Delete a knowledge collection's rows; the deleted collection (NotFoundError if absent)."""
        return await self._store._write(_knowledge.delete_collection, workspace_id, name)

    async def document_by_source(self, workspace_id: str, collection_id: str, source: str) -> dict[str, Any] | None:
        """The document ingested from ``source`` into a collection, if any."""
        return await self._store._read(_knowledge.document_by_source, workspace_id, collection_id, source)

    async def put_document(self, values: dict[str, Any]) -> dict[str, Any]:
        """Insert or update a document row."""
        return await self._store._write(_knowledge.put_document, values)

    async def documents(self, workspace_id: str, collection_id: str) -> list[dict[str, Any]]:
        """Documents of a collection, by source."""
        return await self._store._read(_knowledge.list_documents, workspace_id, collection_id)

    async def delete_document(self, workspace_id: str, collection_id: str, document_id: str) -> dict[str, Any]:
        """Delete a document row; the deleted row (NotFoundError if absent)."""
        return await self._store._write(_knowledge.delete_document, workspace_id, collection_id, document_id)
