"""Credentials: store (create or replace), delete and re-encrypt them; each audited in its transaction.

The secret fields are encrypted with the keyring before they are written; answers never hold them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentmaestro.actor import Actor, Role
from agentmaestro.service.access import require
from agentmaestro.store.base import Store

__all__ = [
    "DeleteCredential",
    "PutCredential",
    "RotateCredentials",
    "delete_credential",
    "put_credential",
    "rotate_credentials",
]


@dataclass(frozen=True, kw_only=True)
class PutCredential:
    """Create a credential, or replace the one of that name."""

    name: str
    """Its name in the workspace (what tools ask for)."""
    kind: str
    """``api_key``, ``basic``, ``oauth2``, ..."""
    secret: Mapping[str, Any]
    """The secret fields (encrypted before they are stored)."""
    provider: str | None = None
    """The OAuth provider that issued it, if any."""
    scopes: Sequence[str] = ()
    """Granted scopes."""
    expires_at: float | None = None
    """When an access token expires (Unix time)."""


@dataclass(frozen=True, kw_only=True)
class DeleteCredential:
    """Delete a credential."""

    name: str
    """Its name."""


@dataclass(frozen=True, kw_only=True)
class RotateCredentials:
    """Re-encrypt credentials with the newest key of the keyring."""

    every_workspace: bool = False
    """Every workspace of the database (a person at the database), not only the actor's."""


async def put_credential(store: Store, cmd: PutCredential, actor: Actor) -> tuple[dict[str, Any], bool]:
    """Store it, recorded as ``credential.create`` or ``credential.update``; (public row, created?)."""
    require(actor, Role.admin, "put_credential")
    await store.workspaces.ensure(actor.workspace_id)
    return await store.credentials.put(
        actor.workspace_id,
        name=cmd.name,
        kind=cmd.kind,
        secret=dict(cmd.secret),
        provider=cmd.provider,
        scopes=list(cmd.scopes),
        expires_at=cmd.expires_at,
        actor=actor.name,
    )


async def delete_credential(store: Store, cmd: DeleteCredential, actor: Actor) -> dict[str, Any]:
    """Delete it, recorded as ``credential.delete``; its last metadata."""
    require(actor, Role.admin, "delete_credential")
    return await store.credentials.delete(actor.workspace_id, cmd.name, actor=actor.name)


async def rotate_credentials(store: Store, cmd: RotateCredentials, actor: Actor) -> dict[str, int]:
    """Re-encrypt, recorded as ``credential.rotate`` per workspace; the count re-encrypted per workspace."""
    require(actor, Role.admin, "rotate_credentials")
    return await store.credentials.rotate(None if cmd.every_workspace else actor.workspace_id, actor=actor.name)
