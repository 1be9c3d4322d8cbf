"""API keys and roles. Every request is scoped to the workspace of the key that made it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated

from fastapi import Depends, Request

from agentmaestro.server.errors import APIError
from agentmaestro.store.base import Store


class Role(IntEnum):
    """What a key may do. Each role includes the ones below it."""

    viewer = 0
    operator = 1
    admin = 2


@dataclass(frozen=True, kw_only=True)
class Principal:
    """The caller, as identified by its API key."""

    workspace_id: str
    """The workspace every query is scoped to."""
    key_id: str
    """The key's id (not secret)."""
    key_name: str
    """The key's name."""
    role: Role
    """The key's role."""

    @property
    def actor(self) -> str:
        """How this caller is named in events and the audit log."""
        return f"key:{self.key_name}"


def get_store(request: Request) -> Store:
    """The app's store."""
    store: Store = request.app.state.store
    return store


async def authenticate(request: Request) -> Principal:
    """Resolve the ``Authorization: Bearer <key>`` header (or ``X-API-Key``) to a Principal."""
    header = request.headers.get("authorization", "")
    token = ""
    if header.lower().startswith("bearer "):
        token = header[7:].strip()
    elif request.headers.get("x-api-key"):
        token = request.headers["x-api-key"].strip()
    if not token:
        raise APIError(
            401,
            "unauthenticated",
            "missing API key (Authorization: Bearer <key>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    row = await get_store(request).verify_key(token)
    if row is None:
        raise APIError(401, "unauthenticated", "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    principal = Principal(
        workspace_id=row["workspace_id"], key_id=row["key_id"], key_name=row["name"], role=Role[row["role"]]
    )
    request.state.principal = principal
    return principal


def require(role: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that authenticates and checks the caller has at least ``role``."""

    async def dependency(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if principal.role < role:
            raise APIError(
                403, "forbidden", f"this action needs the {role.name} role; the key is {principal.role.name}"
            )
        return principal

    return dependency


Viewer = Annotated[Principal, Depends(require(Role.viewer))]
Operator = Annotated[Principal, Depends(require(Role.operator))]
Admin = Annotated[Principal, Depends(require(Role.admin))]
