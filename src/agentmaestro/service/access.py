"""What an actor may do: the role check every use case makes first."""

from __future__ import annotations

from agentmaestro.actor import Actor, Role
from agentmaestro.errors import ForbiddenError

__all__ = ["require"]


def require(actor: Actor, role: Role, action: str) -> None:
    """Refuse ``action`` (ForbiddenError, 403 over HTTP) to an actor below ``role``."""
    if actor.role < role:
        raise ForbiddenError(f"{action} needs the {role.name} role; this API key is a {actor.role.name}")
