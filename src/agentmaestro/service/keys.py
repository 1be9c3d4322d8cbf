"""API keys: create and revoke, each with its audit entry in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from agentmaestro.actor import Actor, Role
from agentmaestro.service.access import require
from agentmaestro.store.base import Store

__all__ = ["CreateKey", "RevokeKey", "create_key", "revoke_key"]

KeyRole = Literal["viewer", "operator", "admin"]


@dataclass(frozen=True, kw_only=True)
class CreateKey:
    """A new API key in the actor's workspace."""

    name: str
    """What the key is for."""
    role: str = "operator"
    """``viewer``, ``operator`` or ``admin``."""
    user: str | None = None
    """Email of the person the key belongs to (only its SHA-256 is stored)."""


@dataclass(frozen=True, kw_only=True)
class RevokeKey:
    """Revoke one of the workspace's keys."""

    key_id: str
    """The key."""


async def create_key(store: Store, cmd: CreateKey, actor: Actor) -> tuple[dict[str, Any], str]:
    """Create the key, recorded as ``key.create``; its public row and the key (shown once, stored hashed)."""
    require(actor, Role.admin, "create_key")
    return await store.keys.create_audited(
        actor.workspace_id, name=cmd.name, role=cmd.role, actor=actor.name, user_email=cmd.user
    )


async def revoke_key(store: Store, cmd: RevokeKey, actor: Actor) -> dict[str, Any]:
    """Revoke the key, recorded as ``key.revoke``; its public row."""
    require(actor, Role.admin, "revoke_key")
    return await store.keys.revoke_audited(actor.workspace_id, cmd.key_id, actor=actor.name)
