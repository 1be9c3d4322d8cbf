"""API keys and roles. Every request is scoped to the workspace of the key that made it.

A key is sent as ``Authorization: Bearer <key>`` (or ``X-API-Key: <key>``). Successful logins are
audited at most once per key per minute; failed ones at most once per client and key per minute.
Each key is rate limited (a token bucket per process, see :mod:`agentmaestro.server.quotas`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPBearer

from agentmaestro.actor import Actor, Role
from agentmaestro.server.errors import APIError
from agentmaestro.server.quotas import RateLimiter
from agentmaestro.store.base import Store

log = logging.getLogger("agentmaestro.server")

# Declared for the OpenAPI document (and /docs "Authorize"); the header is parsed below.
_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer am_...`")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key, as an alternative header.")


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
    user_hash: str | None = None
    """SHA-256 of the email of the person the key belongs to, if it has one."""

    @property
    def actor(self) -> str:
        """How this caller is named in events, runs and the audit log: ``user:<user_hash>`` or ``key:<name>``."""
        return f"user:{self.user_hash}" if self.user_hash else f"key:{self.key_name}"

    def as_actor(self) -> Actor:
        """This caller as the service layer takes it: its workspace and role, held to the workspace's quotas."""
        return Actor(name=self.actor, workspace_id=self.workspace_id, role=self.role, quotas=True)

    @classmethod
    def from_key(cls, row: dict[str, Any]) -> Principal:
        """The caller a verified key row stands for."""
        return cls(
            workspace_id=row["workspace_id"],
            key_id=row["key_id"],
            key_name=row["name"],
            role=Role[row["role"]],
            user_hash=row.get("user_hash"),
        )


def get_store(request: Request) -> Store:
    """The app's store."""
    store: Store = request.app.state.store
    return store


class FailureThrottle:
    """Decides which failed logins to audit, so that a flood of them cannot flood the audit log.

    A (client, key id) pair is recorded at most once per ``interval_s``, and one client at most
    ``per_client`` times per ``interval_s`` whatever key ids it makes up.
    """

    def __init__(self, interval_s: float = 60.0, per_client: int = 10, max_entries: int = 10_000) -> None:
        self.interval_s = interval_s
        self.per_client = per_client
        self.max_entries = max_entries
        self._last: dict[tuple[str, str], float] = {}
        self._clients: dict[str, tuple[float, int]] = {}

    def allow(self, client: str, key_id: str, now: float | None = None) -> bool:
        """True if this (client, key) failure should be recorded now."""
        now = time.monotonic() if now is None else now
        if len(self._last) >= self.max_entries or len(self._clients) >= self.max_entries:
            self._last = {k: t for k, t in self._last.items() if now - t < self.interval_s}
            self._clients = {c: w for c, w in self._clients.items() if now - w[0] < self.interval_s}
            if len(self._last) >= self.max_entries or len(self._clients) >= self.max_entries:
                return False
        last = self._last.get((client, key_id))
        if last is not None and now - last < self.interval_s:
            return False
        start, count = self._clients.get(client, (now, 0))
        if now - start >= self.interval_s:
            start, count = now, 0
        if count >= self.per_client:
            return False
        self._clients[client] = (start, count + 1)
        self._last[(client, key_id)] = now
        return True


def _token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-api-key", "").strip()


async def _audit_failure(request: Request, token: str, reason: str) -> None:
    throttle: FailureThrottle | None = getattr(request.app.state, "auth_failures", None)
    client = request.client.host if request.client else "unknown"
    parts = token.split("_", 2)
    key_id = parts[1][:64] if len(parts) == 3 else "?"
    if throttle is None or not throttle.allow(client, key_id):
        return
    try:
        await get_store(request).keys.record_auth_failure(token, client=client, reason=reason)
    except Exception:  # auditing a failure must not turn a 401 into a 500
        log.exception("could not audit a failed authentication")


async def authenticate(
    request: Request,
    _b: Annotated[object, Depends(_bearer)] = None,
    _k: Annotated[object, Depends(_api_key)] = None,
) -> Principal:
    """Resolve the ``Authorization: Bearer <key>`` header (or ``X-API-Key``) to a Principal."""
    token = _token(request)
    if not token:
        raise APIError(
            401,
            "unauthenticated",
            "missing API key (Authorization: Bearer <key>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    row = await get_store(request).keys.authenticate(token)
    if row is None:
        await _audit_failure(request, token, "invalid or revoked API key")
        raise APIError(401, "unauthenticated", "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    principal = Principal.from_key(row)
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        retry_after = limiter.take(principal.key_id)
        if retry_after is not None:
            raise APIError(
                429,
                "rate_limited",
                f"rate limit of {limiter.per_minute} requests per minute for this API key exceeded; "
                f"retry in {math.ceil(retry_after)}s",
                headers={"Retry-After": str(math.ceil(retry_after))},
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
