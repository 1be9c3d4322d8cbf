"""Who acts: the person or key behind a use case, as runs, events and the audit log record it.

Every door hands the service layer an :class:`Actor`: the REST API and MCP over HTTP the caller's API
key (its workspace, its role, held to the workspace's quotas), the CLI and the SDK the person at this
machine (``cli:alice``, ``sdk:alice``; an admin of the database they opened, not held to quotas).
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from enum import IntEnum

__all__ = ["Actor", "Role", "local_actor"]


class Role(IntEnum):
    """What an actor may do. Each role includes the ones below it."""

    viewer = 0
    operator = 1
    admin = 2


def local_actor(door: str) -> str:
    """A person using a door on this machine: ``<door>:<login>`` (``cli:alice``, ``sdk:alice``)."""
    try:
        return f"{door}:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"{door}:unknown"


@dataclass(frozen=True, kw_only=True)
class Actor:
    """Who takes an action, in which workspace, with what rights."""

    name: str
    """How the actor is named in runs, events and the audit log (``key:ci``, ``user:<hash>``, ``cli:alice``)."""
    workspace_id: str
    """The workspace the action is scoped to (another workspace's run or approval is "not found")."""
    role: Role = Role.admin
    """What the actor may do: viewers read, operators also start, cancel and decide, admins manage keys."""
    quotas: bool = False
    """Held to the workspace's quotas when starting runs (API keys); a person at the database is not."""

    @classmethod
    def local(cls, door: str, workspace_id: str, name: str | None = None) -> Actor:
        """The person at this machine using ``door`` (``cli``, ``sdk``): an admin, not held to quotas."""
        return cls(name=name or local_actor(door), workspace_id=workspace_id)
