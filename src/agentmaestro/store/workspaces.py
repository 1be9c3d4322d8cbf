"""Workspaces: the tenants, and their settings (gate policy, quotas)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from agentmaestro.store import _audit, _ops
from agentmaestro.store import _interventions as _iv
from agentmaestro.store.records import AuditNote
from agentmaestro.store.schema import DEFAULT_WORKSPACE

if TYPE_CHECKING:
    from agentmaestro.store.base import Store


class WorkspaceRepository:
    """Workspaces and their settings; ``store.workspaces``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def ensure(
        self, workspace_id: str = DEFAULT_WORKSPACE, name: str | None = None, *, audit: AuditNote | None = None
    ) -> None:
        """Create the workspace if missing (``audit``: the entry recording it, written in the same transaction)."""
        if audit is None:
            await self._store._write(_ops.ensure_workspace, workspace_id, name, time.time())
            return

        def op(conn: Connection) -> None:
            now = time.time()
            _ops.ensure_workspace(conn, workspace_id, name, now)
            _audit.append_notes(conn, [audit], now)

        await self._store._write(op)

    async def all(self) -> list[dict[str, Any]]:
        """All workspaces."""
        return await self._store._read(_ops.list_workspaces)

    async def get(self, workspace_id: str) -> dict[str, Any]:
        """One workspace: id, name, created_at, settings (NotFoundError if missing)."""
        from agentmaestro.store import _usage

        return await self._store._read(_usage.workspace_row, workspace_id)

    async def settings(self, workspace_id: str = DEFAULT_WORKSPACE) -> dict[str, Any]:
        """A workspace's settings (gate policy, ...)."""
        return await self._store._read(_iv.get_workspace_settings, workspace_id)

    async def update_settings(self, workspace_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Merge ``changes`` into a workspace's settings."""
        return await self._store._write(_iv.update_workspace_settings, workspace_id, changes)

    async def update_settings_audited(
        self, workspace_id: str, changes: dict[str, Any], *, actor: str
    ) -> dict[str, Any]:
        """Change workspace settings (``gate``, ``quotas``) and audit each change, in one transaction."""
        from agentmaestro.store import _audit

        def op(conn: Connection) -> dict[str, Any]:
            now = time.time()
            before = _iv.get_workspace_settings(conn, workspace_id)
            after = _iv.update_workspace_settings(conn, workspace_id, changes)
            entries = [
                _audit.NewEntry(
                    at=now,
                    actor=actor,
                    action="gate.update" if name == "gate" else f"{name}.update",
                    target=workspace_id,
                    detail={"before": before.get(name), "after": after.get(name)},
                )
                for name in sorted(changes)
                if before.get(name) != after.get(name)
            ]
            _audit.append(conn, workspace_id, entries, now)
            return after

        return await self._store._write(op)
