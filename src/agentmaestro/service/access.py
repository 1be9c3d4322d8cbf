"""What an actor may do: the role check every use case makes first."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentmaestro.actor import Actor, Role
from agentmaestro.errors import ForbiddenError
from agentmaestro.store.records import AuditNote

__all__ = ["audit_note", "require"]


def require(actor: Actor, role: Role, action: str) -> None:
    """Refuse ``action`` (ForbiddenError, 403 over HTTP) to an actor below ``role``."""
    if actor.role < role:
        raise ForbiddenError(f"{action} needs the {role.name} role; this API key is a {actor.role.name}")


def audit_note(actor: Actor, action: str, target: str | None, detail: Mapping[str, Any] | None = None) -> AuditNote:
    """The audit entry of ``action`` on ``target`` by ``actor``, in the actor's workspace."""
    return AuditNote(
        workspace_id=actor.workspace_id, actor=actor.name, action=action, target=target, detail=detail or {}
    )
