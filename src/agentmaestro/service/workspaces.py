"""Workspaces: create one (recorded in its own audit chain, in the transaction that creates it)."""

from __future__ import annotations

from dataclasses import dataclass

from agentmaestro.actor import Actor, Role
from agentmaestro.errors import ConfigError
from agentmaestro.service.access import require
from agentmaestro.store.base import Store
from agentmaestro.store.records import AuditNote

__all__ = ["CreateWorkspace", "create_workspace"]


@dataclass(frozen=True, kw_only=True)
class CreateWorkspace:
    """A new workspace of the database."""

    workspace_id: str
    """Its id."""
    name: str | None = None
    """A display name (default: the id)."""


async def create_workspace(store: Store, cmd: CreateWorkspace, actor: Actor) -> None:
    """Create it, recorded as ``workspace.create`` in the new workspace's chain; ConfigError if it exists."""
    require(actor, Role.admin, "create_workspace")
    if any(w["workspace_id"] == cmd.workspace_id for w in await store.workspaces.all()):
        raise ConfigError(f"workspace {cmd.workspace_id!r} already exists")
    note = AuditNote(
        workspace_id=cmd.workspace_id,
        actor=actor.name,
        action="workspace.create",
        target=cmd.workspace_id,
        detail={"name": cmd.name},
    )
    await store.workspaces.ensure(cmd.workspace_id, cmd.name, audit=note)
