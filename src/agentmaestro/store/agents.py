"""Stored agent definitions (per workspace)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from agentmaestro.store import _ops

if TYPE_CHECKING:
    from agentmaestro.store.base import Store


class AgentRepository:
    """Agent definitions stored by name; ``store.agents``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def put(self, workspace_id: str, name: str, spec: dict[str, Any]) -> None:
        """Store (insert or replace) an agent definition."""
        await self._store._write(_ops.upsert_agent, workspace_id, name, spec, time.time())

    async def all(self, workspace_id: str) -> list[tuple[str, dict[str, Any], float]]:
        """Stored agent definitions: (name, spec, updated_at)."""
        return await self._store._read(_ops.list_agents, workspace_id)
