"""Stored workflows: YAML workflows saved per workspace, versioned and audited (docs/workflows.md)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from agentmaestro.store import _workflows

if TYPE_CHECKING:
    from agentmaestro.store.base import Store


class WorkflowRepository:
    """A workspace's stored workflows; ``store.workflows``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def save(self, workspace_id: str, name: str, yaml_text: str, *, actor: str) -> dict[str, Any]:
        """Insert or replace a workspace's workflow ``name`` (audited); the stored row with its version."""
        return await self._store._write(_workflows.save, workspace_id, name, yaml_text, actor, time.time())

    async def get(self, workspace_id: str, name: str) -> dict[str, Any]:
        """One stored workflow of a workspace (NotFoundError if absent)."""
        return await self._store._read(_workflows.get, workspace_id, name)

    async def all(self, workspace_id: str) -> list[dict[str, Any]]:
        """A workspace's stored workflows, by name."""
        return await self._store._read(_workflows.list_rows, workspace_id)

    async def delete(self, workspace_id: str, name: str, *, actor: str) -> dict[str, Any]:
        """Delete a stored workflow (audited); the deleted row (NotFoundError if absent)."""
        return await self._store._write(_workflows.remove, workspace_id, name, actor, time.time())

    async def names(self) -> list[str]:
        """Names of stored workflows across workspaces (the worker claims their runs)."""
        return await self._store._read(_workflows.names)
