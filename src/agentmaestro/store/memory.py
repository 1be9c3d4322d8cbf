"""Memory: small named entries agents remember across runs (scope ``workspace`` or ``agent:<name>``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from agentmaestro.store import _memory

if TYPE_CHECKING:
    from agentmaestro.store.base import Store


class MemoryRepository:
    """Memory entries with their provenance; ``store.memory``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def put(
        self,
        workspace_id: str,
        scope: str,
        key: str,
        value: str,
        *,
        run_id: str | None = None,
        agent: str | None = None,
    ) -> dict[str, Any]:
        """Store a memory entry (scope ``workspace`` or ``agent:<name>``) with its provenance."""
        return await self._store._write(_memory.put, workspace_id, scope, key, value, run_id, agent, time.time())

    async def get(self, workspace_id: str, scope: str, key: str) -> dict[str, Any]:
        """One memory entry (NotFoundError if absent)."""
        return await self._store._read(_memory.get, workspace_id, scope, key)

    async def page(
        self, workspace_id: str, scope: str | None = None, prefix: str = "", limit: int = 100
    ) -> list[dict[str, Any]]:
        """Memory entries of a workspace."""
        return await self._store._read(_memory.list_entries, workspace_id, scope, prefix, limit)

    async def delete(self, workspace_id: str, scope: str, key: str) -> bool:
        """Delete a memory entry."""
        return await self._store._write(_memory.remove, workspace_id, scope, key)
